"""dlib's face-recognition ResNet as a TensorFlow graph, and its TFLite conversions.

The graph takes (1, S, S, 3) float32 RGB pixel values 0..255 (the aligned chip as it is) and
returns the (1, 128) descriptor, as dlib's ``net(chip)`` does. Folded at build time, in
float64, so the graph has fewer ops and no extra rounding steps of its own:

- the input layer's (pixel - mean) / 256 into the first convolution (it has no padding, so
  the mean is subtracted from every tap it reads and the fold is exact);
- every affine layer (dlib's batch norm at test time) into the convolution before it.

What needs care is dlib's ``add_prev`` of two tensors of different sizes: dlib sizes the sum
to the larger of each dimension and treats missing values as 0 (the 8x8 -> 3x3 stride-2 block
is added to a 4x4 average pool): here the smaller is zero-padded at the end before the add.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tools.recognize_build.dlib_files import Layer, ResNetFile

# Where the chip's pixels go in: dlib's input_rgb_image divides (pixel - mean) by this.
PIXEL_SCALE = 256.0


@dataclass(frozen=True)
class FoldedConv:
    """A convolution with the affine after it (and for the first, the input scaling) folded in:
    ``kernel`` (rows, cols, in, out) float32 (TensorFlow's HWIO), ``bias`` (out,) float32."""

    kernel: np.ndarray
    bias: np.ndarray
    stride: int
    padding: int


def fold(network: ResNetFile) -> list[tuple[str, Any]]:
    """The network as ops bottom-up: ("conv", FoldedConv), ("relu", None), ("max_pool", (size,
    stride)), ("avg_pool", (size, stride); size 0: global), ("tag", id), ("skip", id),
    ("add", id), ("fc", (inputs, outputs) float32)."""
    ops: list[tuple[str, Any]] = []
    layers: list[Layer] = network.layers
    mean = np.asarray(network.mean_rgb, dtype=np.float64)
    index = 0
    first = True
    while index < len(layers):
        layer = layers[index]
        if layer.kind == "con":
            following = layers[index + 1]
            if following.kind != "affine":
                raise ValueError(f"layer {index}: a convolution without an affine after it")
            weights = layer.params["weights"].astype(np.float64)  # (out, in, rows, cols)
            bias = layer.params["biases"].astype(np.float64)
            gamma = following.params["gamma"].astype(np.float64)
            beta = following.params["beta"].astype(np.float64)
            if first:
                if layer.params["padding"] != 0:
                    raise ValueError("the first convolution is padded: the input mean cannot be folded into it")
                bias = bias - np.einsum("oirc,i->o", weights, mean) / PIXEL_SCALE
                weights = weights / PIXEL_SCALE
                first = False
            kernel = (weights * gamma[:, None, None, None]).transpose(2, 3, 1, 0)
            ops.append(
                (
                    "conv",
                    FoldedConv(
                        kernel.astype(np.float32),
                        (bias * gamma + beta).astype(np.float32),
                        layer.params["stride"],
                        layer.params["padding"],
                    ),
                )
            )
            index += 2
            continue
        if layer.kind == "relu":
            ops.append(("relu", None))
        elif layer.kind in ("max_pool", "avg_pool"):
            ops.append((layer.kind, (layer.params["size"], layer.params["stride"])))
        elif layer.kind in ("tag", "skip"):
            ops.append((layer.kind, layer.tag))
        elif layer.kind == "add_prev":
            ops.append(("add", layer.tag))
        elif layer.kind == "fc":
            ops.append(("fc", layer.params["weights"].astype(np.float32)))
        else:
            raise ValueError(f"layer {index}: {layer.kind} cannot be placed here")
        index += 1
    return ops


def concrete_function(network: ResNetFile):
    """A tf.function (input (1, S, S, 3) float32 -> (1, 128) float32) of the folded network,
    with its weights as constants, ready for the TFLite converter."""
    import tensorflow as tf

    ops = fold(network)
    size = network.input_size

    def add_padded(a: Any, b: Any) -> Any:
        rows = max(a.shape[1], b.shape[1])
        cols = max(a.shape[2], b.shape[2])
        channels = max(a.shape[3], b.shape[3])

        def grow(x: Any) -> Any:
            missing = [[0, 0], [0, rows - x.shape[1]], [0, cols - x.shape[2]], [0, channels - x.shape[3]]]
            return x if not any(m[1] for m in missing) else tf.pad(x, missing)

        return grow(a) + grow(b)

    @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name="chip")])
    def descriptor(chip: Any) -> Any:
        x = chip
        tags: dict[int, Any] = {}
        for kind, value in ops:
            if kind == "conv":
                if value.padding:
                    p = value.padding
                    x = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
                x = tf.nn.conv2d(x, tf.constant(value.kernel), value.stride, "VALID")
                x = tf.nn.bias_add(x, tf.constant(value.bias))
            elif kind == "relu":
                x = tf.nn.relu(x)
            elif kind == "max_pool":
                x = tf.nn.max_pool2d(x, value[0], value[1], "VALID")
            elif kind == "avg_pool":
                x = (
                    tf.reduce_mean(x, axis=[1, 2])
                    if value[0] == 0
                    else tf.nn.avg_pool2d(x, value[0], value[1], "VALID")
                )
            elif kind == "tag":
                tags[value] = x
            elif kind == "skip":
                x = tags[value]
            elif kind == "add":
                x = add_padded(x, tags[value])
            elif kind == "fc":
                x = tf.matmul(x, tf.constant(value))
        return tf.identity(x, name="descriptor")

    return descriptor.get_concrete_function()


# How the float graph is stored in the .tflite (see convert()).
WEIGHT_FORMATS = ("float32", "float16", "int8-float16", "int8-weights", "int8")
# int8-float16: the layers whose weights stay float16, by output channels (conv) or outputs (fc).
# The 32- and 64-channel blocks (the first convolution included) and the final fully connected
# layer hold 7% of the weights but, int8, most of the descriptor error: measured one layer at a
# time on the upstream photos' chips, the fc layer alone gives 0.017 and the first convolution
# 0.010, each 128/256-channel convolution 0.001-0.004 (python -m tools.recognize_build.formats).
FLOAT16_MAX_CHANNELS = 64


def convert(network: ResNetFile, weight_format: str, calibration_chips: np.ndarray | None = None) -> bytes:
    """The TFLite flatbuffer of the network with its weights as ``weight_format``:

    - ``float32``: as trained (22 MB);
    - ``float16``: weights stored as float16, computed in float32 (half the size);
    - ``int8-float16``: the convolutions of more than :data:`FLOAT16_MAX_CHANNELS` output
      channels as ``int8-weights``, the other layers as ``float16`` (see :func:`mixed_weights`);
    - ``int8-weights``: weights int8 per output channel, activations float32 (dynamic range);
    - ``int8``: full integer, activations calibrated on ``calibration_chips`` (N, S, S, 3) uint8.
    """
    import tensorflow as tf

    if weight_format == "int8-float16":
        return mixed_weights(convert(network, "float16"), network, int8_layers(network, FLOAT16_MAX_CHANNELS))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete_function(network)])
    if weight_format == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif weight_format == "int8-weights":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif weight_format == "int8":
        if calibration_chips is None or not len(calibration_chips):
            raise ValueError("int8 needs calibration chips")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        chips = calibration_chips

        def samples():
            for chip in chips:
                yield [chip[None].astype(np.float32)]

        converter.representative_dataset = samples
    elif weight_format != "float32":
        raise ValueError(f"weight format {weight_format!r}, expected one of {', '.join(WEIGHT_FORMATS)}")
    return converter.convert()


def weighted_layers(model: Any) -> list[int]:
    """Indices (in ``model``'s operator list, a TFLite ``ModelT``) of its CONV_2D and
    FULLY_CONNECTED operators, in graph order."""
    from tensorflow.lite.python import schema_py_generated as schema

    kinds = (schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.FULLY_CONNECTED)
    return [index for index, op in enumerate(model.subgraphs[0].operators) if _builtin(model, op) in kinds]


def weighted_ops(network: ResNetFile) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(kernel as TFLite stores it: (out, rows, cols, in) or (out, in); bias (out,) or None)
    float32 of each convolution and fully connected layer of :func:`fold`, in graph order."""
    found: list[tuple[np.ndarray, np.ndarray | None]] = []
    for kind, value in fold(network):
        if kind == "conv":
            found.append((value.kernel.transpose(3, 0, 1, 2), value.bias))
        elif kind == "fc":
            found.append((value.T, None))
    return found


def int8_layers(network: ResNetFile, float16_max_channels: int) -> set[int]:
    """Indices into :func:`weighted_ops` of the convolutions of more than
    ``float16_max_channels`` output channels."""
    return {
        index
        for index, (kernel, _) in enumerate(weighted_ops(network))
        if kernel.ndim == 4 and kernel.shape[0] > float16_max_channels
    }


def mixed_weights(float16_model: bytes, network: ResNetFile, int8: set[int]) -> bytes:
    """``float16_model`` (the converter's float16 flatbuffer of ``network``) with the layers
    ``int8`` (indices into :func:`weighted_ops`) turned into what the converter writes for
    int8 weights (dynamic range): the kernel int8, symmetric per output channel (scale
    max|w| / 127, from the float32 values of :func:`fold`), the bias float32, both read by the
    layer directly instead of through a DEQUANTIZE of float16 constants. The runtime (XNNPACK) packs such a layer as int8 and quantizes its input on the
    fly; a float16 layer's weights are packed as float32.

    The converter has no per-layer choice of weight format, hence this edit of its output; it
    is plain arithmetic on the flatbuffer, so the bytes depend only on the inputs. Each folded
    layer is matched to the model's by its float16 values (they must be equal).
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(float16_model))
    graph = model.subgraphs[0]
    producer = {tensor: index for index, op in enumerate(graph.operators) for tensor in op.outputs}
    layers, ops = weighted_ops(network), weighted_layers(model)
    if len(layers) != len(ops):
        raise ValueError(f"{len(ops)} weighted layers in the float16 model, {len(layers)} in the network")
    dropped = set()
    for layer, (index, (kernel, bias)) in enumerate(zip(ops, layers, strict=True)):
        if layer not in int8:
            continue
        op = graph.operators[index]
        for slot, values in ((1, kernel), (2, bias)):
            if values is None:
                continue
            feeder = producer.get(op.inputs[slot])
            if feeder is None or _builtin(model, graph.operators[feeder]) != schema.BuiltinOperator.DEQUANTIZE:
                raise ValueError(f"operator {index}: input {slot} is not a dequantized float16 constant")
            constant = graph.tensors[graph.operators[feeder].inputs[0]]
            stored = np.frombuffer(bytes(model.buffers[constant.buffer].data), dtype="<f2")
            if stored.size != values.size or not np.array_equal(stored, values.astype("<f2").ravel()):
                raise ValueError(f"operator {index}: input {slot} is not the network's layer in that place")
            if slot == 1:
                rows = values.reshape(values.shape[0], -1).astype(np.float32)
                scale = (np.abs(rows).max(axis=1) / np.float32(127)).astype(np.float32)
                scale[scale == 0] = 1
                data = np.clip(np.round(rows / scale[:, None]), -127, 127).astype(np.int8).tobytes()
                quantization = schema.QuantizationParametersT()
                quantization.scale = [float(s) for s in scale]
                quantization.zeroPoint = [0] * len(scale)
                quantization.quantizedDimension = 0
                constant.type = schema.TensorType.INT8
                constant.quantization = quantization
            else:
                data = values.astype("<f4").tobytes()
                constant.type = schema.TensorType.FLOAT32
            model.buffers[constant.buffer].data = np.frombuffer(data, dtype=np.uint8)
            op.inputs[slot] = graph.operators[feeder].inputs[0]
            dropped.add(feeder)
    graph.operators = [op for index, op in enumerate(graph.operators) if index not in dropped]
    result: bytes = flatbuffer_utils.convert_object_to_bytearray(model)
    return result


def _builtin(model: Any, op: Any) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return int(max(code.builtinCode, code.deprecatedBuiltinCode))
