"""The first convolution (3 -> 16 channels, 3x3 stride 2 over 320x240) done other ways, to
count what each costs on the Pi CPUs (``python -m tools.arm_cost --stems``).

On the A72, XNNPACK's int8 kernel pads the 3 input channels to 8 and the layer costs 1.8x its
float version. Each option is a copy of the shipped int8 model with only that layer (and the
input it takes) rewritten in the flatbuffer, so the rest of the graph is byte for byte the same:

* ``per-tensor``: the layer's weights quantized per tensor instead of per channel;
* ``4-channel``: an RGBX input (a zero fourth channel, zero weights for it): what picamera2's
  XRGB8888 frames are without dropping the padding byte;
* ``space-to-depth``: the padded frame shuffled into 2x2 blocks (121x161x12) and the layer a
  2x2 stride-1 convolution over them (the 3x3 kernel placed in a 4x4 window): same sums;
* ``float-stem``: a float32 input (p - 127) / 128, the layer in float with the int8 weights
  dequantized, then QUANTIZE into the int8 graph (the model no longer takes pixel XOR 0x80).

Each option also needs its own pre-process from a 320x240 RGB frame; :func:`prepare` writes
each into its input tensor (numpy only: the guest runs it under emulation).

    python -m tools.arm64.stem_options build OUT_DIR [--model M]    # host, TensorFlow
    python -m tools.arm64.stem_options compare OUT_DIR IMAGE...     # host: outputs vs the shipped model
    python -m tools.arm64.stem_options ap OUT_DIR [--model M]       # host: AP on the WIDER subset
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

import numpy as np

OPTIONS = ("baseline", "per-tensor", "4-channel", "space-to-depth", "float-stem")
INPUT_WIDTH, INPUT_HEIGHT = 320, 240


def model_file(out_dir: Path, option: str) -> Path:
    return out_dir / f"stem-{option}.tflite"


# ---- the pre-process of each option (numpy; runs in the guest) ---------------------------------


def prepare(option: str, frame: np.ndarray, tensor: np.ndarray) -> None:
    """(240, 320, 3) uint8 RGB ``frame`` -> the option's input ``tensor`` (batch 1), in place."""
    pixels = tensor[0]
    if option in ("baseline", "per-tensor"):
        np.bitwise_xor(frame, 0x80, out=pixels.view(np.uint8))
    elif option == "4-channel":  # from an RGB frame; a camera's XRGB frame would skip the copy
        out = pixels.view(np.uint8)
        np.bitwise_xor(frame, 0x80, out=out[..., :3])
        out[..., 3] = 0x80
    elif option == "space-to-depth":
        # Padded by one pixel of value 127 (-1 after XOR: PyTorch's zero padding), then each
        # 2x2 block's pixels side by side: channel (dy * 2 + dx) * 3 + c.
        out = pixels.view(np.uint8).reshape(121, 161, 2, 2, 3)
        out[...] = 0x7F ^ 0x80
        padded_rows = np.full((242, 322, 3), 0x7F, np.uint8)
        padded_rows[1:241, 1:321] = frame
        for dy in (0, 1):
            for dx in (0, 1):
                np.bitwise_xor(padded_rows[dy::2, dx::2], 0x80, out=out[:, :, dy, dx])
    elif option == "float-stem":
        np.subtract(frame, np.float32(127.0), out=pixels, dtype=np.float32)
        pixels *= np.float32(1.0 / 128.0)
    else:
        raise ValueError(f"unknown stem option {option!r} (known: {', '.join(OPTIONS)})")


# ---- the rewritten models (host; TensorFlow's flatbuffer helpers) -------------------------------


def _first_conv(model):
    """(PAD operator, CONV operator) at the start of the int8 graph, checked."""
    from tensorflow.lite.python import schema_py_generated as schema

    graph = model.subgraphs[0]
    codes = [model.operatorCodes[op.opcodeIndex] for op in graph.operators[:2]]
    kinds = [max(code.builtinCode, code.deprecatedBuiltinCode) for code in codes]
    if kinds != [schema.BuiltinOperator.PAD, schema.BuiltinOperator.CONV_2D]:
        raise ValueError(f"expected PAD then CONV_2D at the start of the graph, found builtin codes {kinds}")
    return graph.operators[0], graph.operators[1]


def _weights(model, tensor_index: int) -> np.ndarray:
    tensor = model.subgraphs[0].tensors[tensor_index]
    dtype = {9: np.int8, 2: np.int32, 0: np.float32}[tensor.type]
    return np.frombuffer(bytes(model.buffers[tensor.buffer].data), dtype=dtype).reshape(tensor.shape).copy()


def _set_data(model, tensor_index: int, values: np.ndarray, tensor_type: int) -> None:
    tensor = model.subgraphs[0].tensors[tensor_index]
    tensor.shape = np.array(values.shape, dtype=np.int32)
    tensor.shapeSignature = None
    tensor.type = tensor_type
    model.buffers[tensor.buffer].data = np.frombuffer(values.tobytes(), dtype=np.uint8)


def _reshape(model, tensor_index: int, shape: tuple[int, ...]) -> None:
    tensor = model.subgraphs[0].tensors[tensor_index]
    tensor.shape = np.array(shape, dtype=np.int32)
    tensor.shapeSignature = None


def rewrite(model, option: str):
    """A copy of the int8 ``model`` (flatbuffer object API) with its first layer done as ``option``."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = copy.deepcopy(model)
    model.signatureDefs = []
    graph = model.subgraphs[0]
    pad, conv = _first_conv(model)
    image, padded, weights_index, bias_index = pad.inputs[0], pad.outputs[0], conv.inputs[1], conv.inputs[2]
    weights, bias = _weights(model, weights_index), _weights(model, bias_index)
    weight_quant, bias_quant = graph.tensors[weights_index].quantization, graph.tensors[bias_index].quantization
    input_scale = float(graph.tensors[image].quantization.scale[0])
    int8, int32, float32 = schema.TensorType.INT8, schema.TensorType.INT32, schema.TensorType.FLOAT32
    if option == "baseline":
        return model
    if option == "per-tensor":
        real = weights * weight_quant.scale.reshape(-1, 1, 1, 1)
        scale = float(np.abs(real).max() / 127.0)
        _set_data(model, weights_index, np.clip(np.round(real / scale), -127, 127).astype(np.int8), int8)
        real_bias = bias * bias_quant.scale
        _set_data(model, bias_index, np.round(real_bias / (input_scale * scale)).astype(np.int32), int32)
        weight_quant.scale, weight_quant.zeroPoint = np.array([scale], np.float32), np.array([0], np.int64)
        bias_quant.scale, bias_quant.zeroPoint = np.array([input_scale * scale], np.float32), np.array([0], np.int64)
        return model
    if option == "4-channel":
        _reshape(model, image, (1, INPUT_HEIGHT, INPUT_WIDTH, 4))
        _reshape(model, padded, (1, INPUT_HEIGHT + 2, INPUT_WIDTH + 2, 4))
        _set_data(model, weights_index, np.concatenate([weights, np.zeros_like(weights[..., :1])], axis=-1), int8)
        return model
    if option == "space-to-depth":
        # Output (y, x) sums padded rows 2y..2y+2: block rows y and y + 1, row dy of each;
        # kernel row ky = 2 * block_row + dy (ky = 3 gets zero weights), columns alike.
        blocks = np.zeros((weights.shape[0], 2, 2, 2, 2, 3), np.int8)  # out, by, bx, dy, dx, c
        for ky in range(3):
            for kx in range(3):
                blocks[:, ky // 2, kx // 2, ky % 2, kx % 2] = weights[:, ky, kx]
        _set_data(model, weights_index, blocks.reshape(weights.shape[0], 2, 2, 12), int8)
        graph.operators.remove(pad)
        _reshape(model, padded, (1, (INPUT_HEIGHT + 2) // 2, (INPUT_WIDTH + 2) // 2, 12))
        graph.inputs = np.array([padded], dtype=np.int32)
        conv.builtinOptions.strideH = conv.builtinOptions.strideW = 1
        conv.builtinOptions.padding = schema.Padding.VALID
        return model
    if option == "float-stem":
        for index in (image, padded):
            graph.tensors[index].type = float32
            graph.tensors[index].quantization = None
        _set_data(model, weights_index, (weights * weight_quant.scale.reshape(-1, 1, 1, 1)).astype(np.float32), float32)
        _set_data(model, bias_index, (bias * bias_quant.scale).astype(np.float32), float32)
        graph.tensors[weights_index].quantization = graph.tensors[bias_index].quantization = None
        # The float conv writes a new float tensor; QUANTIZE turns it into the int8 one the graph reads.
        quantized = conv.outputs[0]
        float_out = copy.deepcopy(graph.tensors[quantized])
        float_out.type, float_out.quantization, float_out.buffer = float32, None, 0
        float_out.name = (graph.tensors[quantized].name or b"") + b"/float"
        graph.tensors.append(float_out)
        conv.outputs = np.array([len(graph.tensors) - 1], dtype=np.int32)
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.QUANTIZE
        code.version = 1
        model.operatorCodes.append(code)
        quantize = schema.OperatorT()
        quantize.opcodeIndex = len(model.operatorCodes) - 1
        quantize.inputs = np.array([len(graph.tensors) - 1], dtype=np.int32)
        quantize.outputs = np.array([quantized], dtype=np.int32)
        graph.operators.insert(graph.operators.index(conv) + 1, quantize)
        return model
    raise ValueError(f"unknown stem option {option!r} (known: {', '.join(OPTIONS)})")


def build(model_path: Path, out_dir: Path) -> dict[str, Path]:
    """Write every option's model into ``out_dir``; option -> path."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from tensorflow.lite.tools import flatbuffer_utils

    original = flatbuffer_utils.read_model(str(model_path))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for option in OPTIONS:
        path = model_file(out_dir, option)
        flatbuffer_utils.write_model(rewrite(original, option), str(path))
        written[option] = path
    return written


def outputs(path: Path, option: str, frame: np.ndarray) -> list[np.ndarray]:
    """The option's model run on a (240, 320, 3) uint8 RGB ``frame``: its two int8 heads."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    prepare(option, frame, interpreter.tensor(interpreter.get_input_details()[0]["index"])())
    interpreter.invoke()
    return [
        interpreter.get_tensor(d["index"]) for d in sorted(interpreter.get_output_details(), key=lambda d: d["name"])
    ]


def compare(out_dir: Path, images: list[Path]) -> dict[str, int]:
    """Option -> the largest difference of its int8 heads from the baseline's, in int8 steps,
    over ``images`` resized to 320x240."""
    from edge.detect.preprocess import resize_bilinear
    from edge.sources.imageio import load_image

    worst = dict.fromkeys(OPTIONS, 0)
    for image in images:
        frame = resize_bilinear(load_image(image), INPUT_WIDTH, INPUT_HEIGHT)
        reference = outputs(model_file(out_dir, "baseline"), "baseline", frame)
        for option in OPTIONS:
            heads = outputs(model_file(out_dir, option), option, frame)
            diff = max(int(np.abs(a.astype(np.int32) - b).max()) for a, b in zip(heads, reference, strict=True))
            worst[option] = max(worst[option], diff)
    return worst


class StemDetector:
    """An option's model behind tools.evaluate's Detector interface: the device's resize, the
    option's pre-process, the shipped model's decode (the heads' quantization is unchanged)."""

    def __init__(self, path: Path, option: str, shipped_model: Path, settings) -> None:
        from ai_edge_litert.interpreter import Interpreter

        from edge.detect.decode import Int8Postprocessor
        from edge.detect.preprocess import BilinearResizer
        from edge.detect.sidecar import read_sidecar

        info = read_sidecar(shipped_model)
        self.name, self.option = option, option
        self._interpreter = Interpreter(model_path=str(path), num_threads=1)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        heads = {int(d["shape"][-1]): d["index"] for d in self._interpreter.get_output_details()}
        self._logits, self._regressions = heads[2], heads[4]
        self._resize = BilinearResizer(INPUT_WIDTH, INPUT_HEIGHT)
        self._postprocess = Int8Postprocessor(info.prior_config, info.logits_quant, info.regressions_quant, settings)

    def detect(self, image_rgb: np.ndarray):
        prepare(self.option, self._resize(image_rgb), self._interpreter.tensor(self._input)())
        self._interpreter.invoke()
        logits = self._interpreter.get_tensor(self._logits)[0]
        regressions = self._interpreter.get_tensor(self._regressions)[0]
        return self._postprocess(logits, regressions)


def accuracy(out_dir: Path, shipped_model: Path) -> dict[str, dict[str, float]]:
    """Option -> card AP50 (score > 0.7 and all scores) and WIDER easy/medium/hard AP on the
    WIDER val subset, every option on the same images in one run."""
    from tools import evaluate
    from tools.shared_data import wider_subset_dir

    dataset = evaluate.load_subset(wider_subset_dir())
    runs = {
        "card": evaluate.CARD_SETTINGS,
        "all": evaluate.CARD_ALL_SCORES_SETTINGS,
        "wider": evaluate.WIDER_SETTINGS,
    }
    detectors = {
        f"{run}/{option}": StemDetector(model_file(out_dir, option), option, shipped_model, settings)
        for option in OPTIONS
        for run, settings in runs.items()
    }
    found = evaluate.detect_images(detectors, [image.path for image in dataset.images])
    figures = {}
    for option in OPTIONS:
        wider = evaluate.wider_aps(dataset, found[f"wider/{option}"])
        figures[option] = {
            "card": evaluate.card_ap(dataset, found[f"card/{option}"]),
            "card_all_scores": evaluate.card_ap(dataset, found[f"all/{option}"]),
            **{f"wider_{level}": value for level, value in wider.items()},
        }
    return figures


def main(argv: list[str] | None = None) -> int:
    from tools.shared_data import DEFAULT_INT8_MODEL

    parser = argparse.ArgumentParser(prog="python -m tools.arm64.stem_options", description=__doc__.split("\n\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    build_mode = modes.add_parser("build")
    build_mode.add_argument("out_dir", type=Path)
    build_mode.add_argument("--model", type=Path, default=DEFAULT_INT8_MODEL)
    compare_mode = modes.add_parser("compare")
    compare_mode.add_argument("out_dir", type=Path)
    compare_mode.add_argument("images", type=Path, nargs="+")
    ap_mode = modes.add_parser("ap")
    ap_mode.add_argument("out_dir", type=Path)
    ap_mode.add_argument("--model", type=Path, default=DEFAULT_INT8_MODEL, help="the shipped model (its sidecar)")
    args = parser.parse_args(argv)
    if args.mode == "ap":
        figures = accuracy(args.out_dir, args.model)
        columns = list(next(iter(figures.values())))
        print("| option | " + " | ".join(columns) + " |")
        print("|" + " --- |" * (len(columns) + 1))
        for option, values in figures.items():
            print(f"| {option} | " + " | ".join(f"{values[c]:.4f}" for c in columns) + " |")
        return 0
    if args.mode == "build":
        for option, path in build(args.model, args.out_dir).items():
            print(f"{option}: {path}")
        return 0
    for option, steps in compare(args.out_dir, args.images).items():
        print(f"{option}: heads differ from the shipped model's by up to {steps} int8 steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
