"""Build the full-integer int8 TFLite face detector (and its sidecar JSON) from upstream weights.

Steps, each a function below:

1. read the PyTorch state dict (``tools.pth_reader``) and rebuild the float graph in Keras
   (``tools.slim_keras``);
2. self-check: the float Keras graph must match upstream's ONNX graph run by onnxruntime on
   real photos within ``FLOAT_TOLERANCE`` (for slim-640, the same ONNX graph re-targeted to
   640x480 and loaded with the 640 weights);
3. convert with post-training full-integer quantization, calibrated on real photos;
4. verify the result: input quantization exactly (1/128, -1) so ``pixel XOR 0x80`` is the
   model input, every tensor an op produces int8, no QUANTIZE/DEQUANTIZE;
5. run the int8 model in the real interpreter and measure its parity with the float
   reference (dequantized heads, and faces after decode + NMS);
6. write ``.tflite`` and sidecar ``.json`` atomically. Same inputs give the same bytes.

CLI::

    python -m tools.quantize [--model slim-320|slim-640] [--weights PATH] [--calibration DIR]
                             [--out DIR] [--check-onnx PATH] [--calibration-limit N]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.decode import (
    Int8Postprocessor,
    QuantParams,
    decode_boxes,
    dequantize,
    face_scores,
    select_faces,
)
from edge.imageio import IMAGE_SUFFIXES, ImageError, load_image
from edge.preprocess import resize_bilinear
from edge.priors import PriorConfig, generate_priors
from tools import weights as weights_store
from tools.metrics import match_boxes

SIDECAR_FORMAT = "edge-face-model/1"
DEFAULT_OUT_DIR = weights_store.PROJECT_ROOT / "models" / "build"
REFERENCE_ONNX = "version-slim-320_without_postprocessing.onnx"

# The int8 input contract: real = (q + 1) / 128 with q = pixel XOR 0x80 viewed as int8,
# i.e. (pixel - 127) / 128, upstream's normalization, with no arithmetic on the device.
INPUT_SCALE = 1.0 / 128.0
INPUT_ZERO_POINT = -1
PIXEL_OFFSET = 127.0
PIXEL_SCALE = 128.0

FLOAT_TOLERANCE = 1e-4
# Face-level parity: upstream's default demo thresholds, and the IoU at which a float face
# and an int8 face count as the same face.
PARITY_SCORE_THRESHOLD = 0.7
PARITY_NMS_IOU = 0.3
PARITY_MATCH_IOU = 0.5
# Parity figures go into the sidecar; a fixed precision keeps its bytes stable.
SIDECAR_DECIMALS = 6

# Ops the int8 graph may contain, and which of their inputs are legitimately not int8
# (int32 biases, int32 shape/padding operands). Anything else is a failed build.
INT32_OPERANDS: dict[str, frozenset[int]] = {
    "CONV_2D": frozenset({2}),
    "DEPTHWISE_CONV_2D": frozenset({2}),
    "PAD": frozenset({1}),
    "RESHAPE": frozenset({1}),
    "CONCATENATION": frozenset(),
}


class BuildError(Exception):
    """The build cannot proceed or its result failed a check; the message is one line."""


@dataclass(frozen=True)
class ModelVariant:
    """One buildable model: upstream weights file and input size."""

    name: str
    weights_file: str
    input_width: int
    input_height: int

    @property
    def model_id(self) -> str:
        return f"ulfd-{self.name}-int8"

    @property
    def file_stem(self) -> str:
        return f"version-{self.name}-int8"

    @property
    def prior_config(self) -> PriorConfig:
        return PriorConfig(input_width=self.input_width, input_height=self.input_height)


MODEL_VARIANTS: dict[str, ModelVariant] = {
    "slim-320": ModelVariant("slim-320", "version-slim-320.pth", 320, 240),
    "slim-640": ModelVariant("slim-640", "version-slim-640.pth", 640, 480),
}


@dataclass(frozen=True)
class CalibrationSet:
    """Photos resized to the model input. ``images``: (n, H, W, 3) uint8 RGB, in ``files`` order."""

    folder_name: str
    files: tuple[Path, ...]
    images: np.ndarray
    sha256: str


@dataclass(frozen=True)
class FloatOutputs:
    """Float heads for n images: ``logits`` (n, N, 2), ``regressions`` (n, N, 4) float32."""

    logits: np.ndarray
    regressions: np.ndarray


@dataclass(frozen=True)
class FloatCheck:
    """Keras float graph vs the onnxruntime reference, max abs differences over all images."""

    reference: str
    images: int
    max_logits_diff: float
    max_scores_diff: float
    max_regressions_diff: float

    @property
    def worst(self) -> float:
        return max(self.max_logits_diff, self.max_scores_diff, self.max_regressions_diff)


@dataclass(frozen=True)
class OutputTensor:
    """One int8 output head: interpreter output index, tensor name, shape, quantization."""

    index: int
    name: str
    shape: tuple[int, ...]
    quant: QuantParams


@dataclass(frozen=True)
class Int8Layout:
    """What the verified int8 model looks like from outside."""

    input_shape: tuple[int, ...]
    input_quant: QuantParams
    logits: OutputTensor
    regressions: OutputTensor
    op_types: tuple[str, ...]


@dataclass(frozen=True)
class Parity:
    """int8 model vs the float reference on the calibration photos."""

    images: int
    logits_max_abs_diff: float
    logits_mean_abs_diff: float
    regressions_max_abs_diff: float
    regressions_mean_abs_diff: float
    face_anchors: int
    face_anchor_regressions_max_abs_diff: float
    face_anchor_regressions_mean_abs_diff: float
    faces_float: int
    faces_int8: int
    faces_matched: int
    mean_matched_iou: float

    @property
    def face_agreement(self) -> float:
        """Dice agreement of the two face sets: 1.0 when every face is found by both."""
        total = self.faces_float + self.faces_int8
        return 1.0 if total == 0 else 2.0 * self.faces_matched / total

    def to_dict(self) -> dict:
        def rounded(value: float) -> float:
            return round(float(value), SIDECAR_DECIMALS)

        return {
            "reference": "onnxruntime float32",
            "images": self.images,
            "logits_max_abs_diff": rounded(self.logits_max_abs_diff),
            "logits_mean_abs_diff": rounded(self.logits_mean_abs_diff),
            "regressions_max_abs_diff": rounded(self.regressions_max_abs_diff),
            "regressions_mean_abs_diff": rounded(self.regressions_mean_abs_diff),
            "face_anchors": self.face_anchors,
            "face_anchor_regressions_max_abs_diff": rounded(self.face_anchor_regressions_max_abs_diff),
            "face_anchor_regressions_mean_abs_diff": rounded(self.face_anchor_regressions_mean_abs_diff),
            "score_threshold": PARITY_SCORE_THRESHOLD,
            "nms_iou_threshold": PARITY_NMS_IOU,
            "match_iou": PARITY_MATCH_IOU,
            "faces_float": self.faces_float,
            "faces_int8": self.faces_int8,
            "faces_matched": self.faces_matched,
            "mean_matched_iou": rounded(self.mean_matched_iou),
            "face_agreement": rounded(self.face_agreement),
        }


@dataclass(frozen=True)
class BuildReport:
    tflite_path: Path
    sidecar_path: Path
    variant: ModelVariant
    layout: Int8Layout
    float_check: FloatCheck
    parity: Parity
    calibration_images: int
    tflite_bytes: int
    seconds: float

    def summary(self) -> str:
        p, f, q = self.parity, self.float_check, self.layout
        return "\n".join(
            [
                f"{self.variant.model_id}: {self.tflite_path} ({self.tflite_bytes / 1024:.0f} KiB), "
                f"sidecar {self.sidecar_path.name}, built in {self.seconds:.1f} s",
                f"  float Keras vs {f.reference} on {f.images} photos: max abs diff logits {f.max_logits_diff:.2e}, "
                f"scores {f.max_scores_diff:.2e}, regressions {f.max_regressions_diff:.2e} (limit {FLOAT_TOLERANCE:g})",
                f"  int8: input scale {q.input_quant.scale:g} zero point {q.input_quant.zero_point}, "
                f"ops {', '.join(q.op_types)}; calibrated on {self.calibration_images} photos",
                f"  int8 vs float on {p.images} photos: logits max {p.logits_max_abs_diff:.4f} mean "
                f"{p.logits_mean_abs_diff:.4f}; regressions max {p.regressions_max_abs_diff:.4f} mean "
                f"{p.regressions_mean_abs_diff:.4f} (on {p.face_anchors} face anchors: max "
                f"{p.face_anchor_regressions_max_abs_diff:.4f} mean {p.face_anchor_regressions_mean_abs_diff:.4f})",
                f"  faces at score > {PARITY_SCORE_THRESHOLD}: float {p.faces_float}, int8 {p.faces_int8}, "
                f"matched {p.faces_matched} (IoU >= {PARITY_MATCH_IOU}, mean IoU {p.mean_matched_iou:.3f}), "
                f"agreement {p.face_agreement:.3f}",
            ]
        )


# --- calibration photos -------------------------------------------------------------------


def _resize_for_model(path: Path, width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8 RGB: the photo at ``path`` decoded and resized exactly as the
    device pipeline does it (``edge.imageio`` + ``edge.preprocess``), so calibration sees the
    same pixel statistics as the deployed model."""
    try:
        return resize_bilinear(load_image(path), width, height)
    except ImageError as error:
        raise BuildError(str(error)) from None


def calibration_files(folder: Path, limit: int | None = None) -> tuple[Path, ...]:
    """Image files of ``folder`` sorted by name (a fixed order keeps the build reproducible)."""
    if not folder.is_dir():
        raise BuildError(f"{folder}: calibration folder does not exist")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if limit is not None:
        files = files[:limit]
    if not files:
        raise BuildError(f"{folder}: no calibration images ({', '.join(IMAGE_SUFFIXES)})")
    return tuple(files)


def files_digest(files: Sequence[Path]) -> str:
    """sha256 over each file's name, a NUL byte and its bytes, in the given order."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode("utf-8") + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def load_calibration_set(folder: Path, width: int, height: int, limit: int | None = None) -> CalibrationSet:
    files = calibration_files(folder, limit)
    images = np.stack([_resize_for_model(path, width, height) for path in files])
    return CalibrationSet(folder.name, files, images, files_digest(files))


def normalize(images: np.ndarray) -> np.ndarray:
    """uint8 pixels of any shape -> float32 (pixel - 127) / 128, upstream's normalization."""
    return (images.astype(np.float32) - np.float32(PIXEL_OFFSET)) / np.float32(PIXEL_SCALE)


def with_full_input_range(images: np.ndarray) -> np.ndarray:
    """A copy of (n, H, W, 3) uint8 ``images`` whose pixels include both 0 and 255.

    The converter derives the input quantization from the calibrated input min/max; only the
    range [(0 - 127)/128, (255 - 127)/128] gives exactly scale 1/128 and zero point -1. When
    the photos lack a pure black or white pixel after resizing, one corner pixel of the first
    photo is set to it: a one-pixel change that barely moves any other tensor's range.
    """
    pinned = images.copy()
    if pinned.min() > 0:
        pinned[0, 0, 0, :] = 0
    if pinned.max() < 255:
        pinned[0, 0, 1, :] = 255
    return pinned


# --- float graph and its reference --------------------------------------------------------


def _onnx_session_options(onnxruntime):
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    # One thread: parity figures written to the sidecar must not depend on scheduling.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return options


def reference_outputs(
    onnx_path: Path, state_dict: dict[str, np.ndarray], variant: ModelVariant, images: np.ndarray
) -> tuple[FloatOutputs, np.ndarray, str]:
    """Run upstream's ONNX graph (no post-processing) on (n, H, W, 3) uint8 ``images``.

    Returns the float heads (pre-softmax logits are exposed as an extra graph output), the
    graph's own softmax scores (n, N, 2) float32, and a description of the reference. When
    the variant's input size differs from the graph's, the graph is re-targeted: its input
    is resized (its reshapes are shape-driven) and every initializer is replaced by the
    tensor of the same name from ``state_dict``, so the reference is upstream's graph
    running the variant's own weights.
    """
    import onnx
    import onnxruntime
    from google.protobuf.message import DecodeError
    from onnx import numpy_helper

    try:
        graph_model = onnx.load(str(onnx_path))
    except (OSError, DecodeError) as error:
        raise BuildError(f"{onnx_path}: cannot load ONNX model ({error})") from None
    graph = graph_model.graph
    dims = graph.input[0].type.tensor_type.shape.dim
    description = f"onnxruntime {onnx_path.name}"
    if (dims[2].dim_value, dims[3].dim_value) != (variant.input_height, variant.input_width):
        for initializer in graph.initializer:
            if initializer.name not in state_dict:
                raise BuildError(f"{onnx_path}: initializer {initializer.name} has no tensor in the weights")
            replacement = state_dict[initializer.name]
            if tuple(initializer.dims) != replacement.shape:
                raise BuildError(f"{onnx_path}: initializer {initializer.name} does not fit the weights' shape")
            initializer.CopyFrom(numpy_helper.from_array(replacement, initializer.name))
        dims[2].dim_value, dims[3].dim_value = variant.input_height, variant.input_width
        for output in graph.output:
            output.type.tensor_type.ClearField("shape")
        description += f" re-targeted to {variant.input_width}x{variant.input_height} with {variant.weights_file}"
    softmax = [node for node in graph.node if node.op_type == "Softmax"]
    if len(softmax) != 1:
        raise BuildError(f"{onnx_path}: expected one Softmax node, found {len(softmax)}")
    logits_name = softmax[0].input[0]
    graph.output.append(onnx.helper.make_tensor_value_info(logits_name, onnx.TensorProto.FLOAT, None))

    session = onnxruntime.InferenceSession(
        graph_model.SerializeToString(), _onnx_session_options(onnxruntime), providers=["CPUExecutionProvider"]
    )
    input_name = graph.input[0].name
    logits, scores, regressions = [], [], []
    for image in images:
        nchw = normalize(image).transpose(2, 0, 1)[None]
        run_scores, run_regressions, run_logits = session.run(["scores", "boxes", logits_name], {input_name: nchw})
        logits.append(run_logits[0])
        scores.append(run_scores[0])
        regressions.append(run_regressions[0])
    return FloatOutputs(np.stack(logits), np.stack(regressions)), np.stack(scores), description


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, float32."""
    exps = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exps / exps.sum(axis=-1, keepdims=True)


def keras_outputs(model, images: np.ndarray) -> FloatOutputs:
    """Run the float Keras graph on (n, H, W, 3) uint8 ``images``, one at a time (batch 1)."""
    logits, regressions = [], []
    for image in images:
        run_logits, run_regressions = model(normalize(image)[None], training=False)
        logits.append(np.asarray(run_logits)[0])
        regressions.append(np.asarray(run_regressions)[0])
    return FloatOutputs(np.stack(logits), np.stack(regressions))


def check_float_model(
    model, reference: FloatOutputs, reference_scores: np.ndarray, images: np.ndarray, description: str
) -> FloatCheck:
    """Compare the Keras graph with the reference; raises BuildError beyond FLOAT_TOLERANCE."""
    ours = keras_outputs(model, images)
    if ours.logits.shape != reference.logits.shape or ours.regressions.shape != reference.regressions.shape:
        raise BuildError(
            f"float graph outputs {ours.logits.shape}/{ours.regressions.shape} but the reference has "
            f"{reference.logits.shape}/{reference.regressions.shape}"
        )
    check = FloatCheck(
        reference=description,
        images=len(images),
        max_logits_diff=float(np.abs(ours.logits - reference.logits).max()),
        max_scores_diff=float(np.abs(softmax(ours.logits) - reference_scores).max()),
        max_regressions_diff=float(np.abs(ours.regressions - reference.regressions).max()),
    )
    if check.worst > FLOAT_TOLERANCE:
        raise BuildError(
            f"float graph differs from {description}: max abs diff {check.worst:.3g} > {FLOAT_TOLERANCE:g}"
        )
    return check


# --- int8 conversion and verification -----------------------------------------------------


def convert_int8(model, calibration_images: np.ndarray) -> bytes:
    """Full-integer int8 conversion (int8 in/out, per-channel weights) calibrated on
    (n, H, W, 3) uint8 images, fed in their given order."""
    import tensorflow as tf

    def representative_dataset() -> Iterator[list[np.ndarray]]:
        for image in calibration_images:
            yield [normalize(image)[None]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    # Keras prints its temporary SavedModel's signature; the converter warns about input
    # statistics that the representative dataset provides. Neither is for the user.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return converter.convert()


def _enum_names(enum_class) -> dict[int, str]:
    return {value: name for name, value in vars(enum_class).items() if not name.startswith("_")}


def graph_op_types(tflite_model: bytes) -> list[tuple[str, list[str], list[str]]]:
    """(op type, input tensor types, output tensor types) of every operator, in graph order,
    read from the flatbuffer itself (not from what an interpreter chooses to report)."""
    from ai_edge_litert import schema_py_generated as schema

    op_names = _enum_names(schema.BuiltinOperator)
    type_names = _enum_names(schema.TensorType)
    model = schema.Model.GetRootAs(tflite_model, 0)
    ops = []
    for subgraph_index in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(subgraph_index)

        def tensor_type(index: int) -> str:
            return "none" if index < 0 else type_names[subgraph.Tensors(index).Type()]

        for op_index in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(op_index)
            code = model.OperatorCodes(op.OpcodeIndex())
            # Builtin codes above 127 live only in BuiltinCode; old ones only in the deprecated field.
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            ops.append(
                (
                    op_names.get(builtin, f"CUSTOM_{builtin}"),
                    [tensor_type(op.Inputs(i)) for i in range(op.InputsLength())],
                    [tensor_type(op.Outputs(i)) for i in range(op.OutputsLength())],
                )
            )
    return ops


def _interpreter(model_content: bytes):
    from ai_edge_litert.interpreter import Interpreter

    # One thread: parity figures must not depend on scheduling.
    interpreter = Interpreter(model_content=model_content, num_threads=1)
    interpreter.allocate_tensors()
    return interpreter


def _quant(details: dict) -> QuantParams:
    scale, zero_point = details["quantization"]
    return QuantParams(float(scale), int(zero_point))


def inspect_int8_model(tflite_model: bytes, variant: ModelVariant) -> Int8Layout:
    """Check the converted model against the int8 contract and describe its interface.

    Raises BuildError when an op is not integer-only, an operand has an unexpected type,
    the input quantization is not exactly (1/128, -1), or the heads have the wrong shape.
    """
    op_types = []
    for op_type, input_types, output_types in graph_op_types(tflite_model):
        if op_type not in INT32_OPERANDS:
            raise BuildError(f"int8 model contains op {op_type}, expected only {', '.join(INT32_OPERANDS)}")
        int32_operands = INT32_OPERANDS[op_type]
        for position, dtype in enumerate(input_types):
            expected = "INT32" if position in int32_operands else "INT8"
            if dtype not in (expected, "none"):
                raise BuildError(f"int8 model: {op_type} input {position} is {dtype}, expected {expected}")
        if any(dtype != "INT8" for dtype in output_types):
            raise BuildError(f"int8 model: {op_type} produces {output_types}, expected INT8")
        op_types.append(op_type)

    interpreter = _interpreter(tflite_model)
    (input_details,) = interpreter.get_input_details()
    input_shape = tuple(int(d) for d in input_details["shape"])
    input_quant = _quant(input_details)
    if input_details["dtype"] != np.int8 or input_quant != QuantParams(INPUT_SCALE, INPUT_ZERO_POINT):
        raise BuildError(
            f"int8 model input is {np.dtype(input_details['dtype']).name} scale {input_quant.scale!r} zero point "
            f"{input_quant.zero_point}, expected int8 scale {INPUT_SCALE} zero point {INPUT_ZERO_POINT}"
        )
    if input_shape != (1, variant.input_height, variant.input_width, 3):
        raise BuildError(f"int8 model input shape {input_shape}, expected (1, {variant.input_height}, {variant.input_width}, 3)")

    num_priors = variant.prior_config.num_priors
    heads = {}
    for details in interpreter.get_output_details():
        shape = tuple(int(d) for d in details["shape"])
        if details["dtype"] != np.int8 or shape not in ((1, num_priors, 2), (1, num_priors, 4)):
            raise BuildError(f"int8 model output {details['name']} is {shape}, expected (1, {num_priors}, 2|4) int8")
        heads[shape[-1]] = OutputTensor(int(details["index"]), str(details["name"]), shape, _quant(details))
    if set(heads) != {2, 4}:
        raise BuildError("int8 model must have exactly one logits (..., 2) and one regressions (..., 4) output")
    return Int8Layout(input_shape, input_quant, heads[2], heads[4], tuple(sorted(set(op_types))))


def int8_outputs(tflite_model: bytes, layout: Int8Layout, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run the int8 model on (n, H, W, 3) uint8 images fed as ``pixel XOR 0x80`` (as the
    device does). Returns logits (n, N, 2) int8 and regressions (n, N, 4) int8."""
    interpreter = _interpreter(tflite_model)
    input_index = interpreter.get_input_details()[0]["index"]
    logits, regressions = [], []
    for image in images:
        interpreter.set_tensor(input_index, (image ^ np.uint8(0x80)).view(np.int8)[None])
        interpreter.invoke()
        logits.append(interpreter.get_tensor(layout.logits.index)[0])
        regressions.append(interpreter.get_tensor(layout.regressions.index)[0])
    return np.stack(logits), np.stack(regressions)


# --- parity -------------------------------------------------------------------------------


def measure_parity(
    reference: FloatOutputs,
    int8_logits: np.ndarray,
    int8_regressions: np.ndarray,
    layout: Int8Layout,
    prior_config: PriorConfig,
) -> Parity:
    """int8 heads (n, N, 2|4) int8 vs float reference heads: value error and face agreement.

    Regression error is also reported over the anchors the float model scores as faces
    (above PARITY_SCORE_THRESHOLD): background anchors carry the largest but harmless errors.
    """
    logits_error = np.abs(dequantize(int8_logits, layout.logits.quant) - reference.logits)
    regressions_error = np.abs(dequantize(int8_regressions, layout.regressions.quant) - reference.regressions)
    face_anchor_mask = softmax(reference.logits)[..., 1] > PARITY_SCORE_THRESHOLD
    face_anchor_error = regressions_error[face_anchor_mask]
    if face_anchor_error.size == 0:
        face_anchor_error = np.zeros(1, np.float32)
    priors = generate_priors(prior_config)
    postprocess = Int8Postprocessor(
        prior_config, layout.logits.quant, layout.regressions.quant, PARITY_SCORE_THRESHOLD, PARITY_NMS_IOU
    )
    faces_float = faces_int8 = 0
    matched_ious: list[float] = []
    for image_index in range(len(int8_logits)):
        float_faces = select_faces(
            decode_boxes(
                reference.regressions[image_index], priors, prior_config.center_variance, prior_config.size_variance
            ),
            face_scores(reference.logits[image_index]),
            PARITY_SCORE_THRESHOLD,
            PARITY_NMS_IOU,
        )
        int8_faces = postprocess(int8_logits[image_index], int8_regressions[image_index])
        faces_float += len(float_faces)
        faces_int8 += len(int8_faces)
        matched_ious += match_boxes(float_faces.boxes, int8_faces.boxes, PARITY_MATCH_IOU)
    return Parity(
        images=len(int8_logits),
        logits_max_abs_diff=float(logits_error.max()),
        logits_mean_abs_diff=float(logits_error.mean(dtype=np.float64)),
        regressions_max_abs_diff=float(regressions_error.max()),
        regressions_mean_abs_diff=float(regressions_error.mean(dtype=np.float64)),
        face_anchors=int(face_anchor_mask.sum()),
        face_anchor_regressions_max_abs_diff=float(face_anchor_error.max()),
        face_anchor_regressions_mean_abs_diff=float(face_anchor_error.mean(dtype=np.float64)),
        faces_float=faces_float,
        faces_int8=faces_int8,
        faces_matched=len(matched_ious),
        mean_matched_iou=float(np.mean(matched_ious)) if matched_ious else 0.0,
    )


# --- output files -------------------------------------------------------------------------


def sidecar_document(
    variant: ModelVariant,
    layout: Int8Layout,
    weights_path: Path,
    calibration: CalibrationSet,
    parity: Parity,
    tflite_model: bytes,
) -> dict:
    """The sidecar JSON (format ``edge-face-model/1``) describing the built model."""
    import tensorflow as tf

    def head(tensor: OutputTensor) -> dict:
        return {
            "shape": list(tensor.shape),
            "scale": tensor.quant.scale,
            "zero_point": tensor.quant.zero_point,
            "index": tensor.index,
            "name": tensor.name,
        }

    return {
        "format": SIDECAR_FORMAT,
        "model_id": variant.model_id,
        "model_file": f"{variant.file_stem}.tflite",
        "input": {
            "width": variant.input_width,
            "height": variant.input_height,
            "channels": 3,
            "channel_order": "RGB",
            "layout": "NHWC",
            "dtype": "int8",
            "scale": layout.input_quant.scale,
            "zero_point": layout.input_quant.zero_point,
        },
        "outputs": {"logits": head(layout.logits), "regressions": head(layout.regressions)},
        "priors": variant.prior_config.to_dict(),
        "source": {"file": weights_path.name, "sha256": weights_store.sha256_file(weights_path)},
        "calibration": {
            "folder": calibration.folder_name,
            "images": len(calibration.files),
            "sha256": calibration.sha256,
        },
        "parity": parity.to_dict(),
        "converter": {"tensorflow": tf.__version__, "ops": list(layout.op_types)},
        "tflite_sha256": hashlib.sha256(tflite_model).hexdigest(),
    }


def write_atomic(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(content)
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


# --- the build ----------------------------------------------------------------------------


def _default_path(name: str, explicit: Path | None) -> Path:
    if explicit is not None:
        if not explicit.is_file():
            raise BuildError(f"{explicit}: no such file")
        return explicit
    try:
        return weights_store.locate(name)
    except weights_store.WeightsError as error:
        raise BuildError(str(error)) from None


def default_calibration_dir() -> Path:
    """The local upstream photos when there is a local copy, else the pinned sample photos
    (fetched and hash-checked into models/cache/samples): a fresh machine can build too."""
    local = weights_store.default_upstream_dir() / "images"
    if local.is_dir():
        return local
    try:
        return weights_store.fetch_samples()
    except weights_store.WeightsError as error:
        raise BuildError(f"calibration photos: {error}") from None


def build(
    model_name: str = "slim-320",
    weights: Path | None = None,
    calibration_dir: Path | None = None,
    out_dir: Path | None = None,
    check_onnx: Path | None = None,
    calibration_limit: int | None = None,
) -> BuildReport:
    """Build, verify and write one int8 model; see the module docstring for the steps.

    Defaults: weights and the reference ONNX from ``tools.weights`` (local upstream copy or
    pinned download), calibration photos from ``<upstream>/images`` (else the pinned samples),
    output ``models/build``.
    Raises BuildError (one line) for bad input or a failed check; nothing is written then.
    """
    from tools.pth_reader import CheckpointError, read_state_dict
    from tools.slim_keras import WeightsMismatchError, build_slim_model

    started = time.perf_counter()
    if model_name not in MODEL_VARIANTS:
        raise BuildError(f"unknown model {model_name!r}, expected one of {', '.join(MODEL_VARIANTS)}")
    variant = MODEL_VARIANTS[model_name]
    weights_path = _default_path(variant.weights_file, Path(weights) if weights else None)
    onnx_path = _default_path(REFERENCE_ONNX, Path(check_onnx) if check_onnx else None)
    calibration_dir = Path(calibration_dir) if calibration_dir else default_calibration_dir()
    out_dir = Path(out_dir) if out_dir else DEFAULT_OUT_DIR
    if calibration_limit is not None and calibration_limit < 1:
        raise BuildError(f"calibration limit must be at least 1, got {calibration_limit}")

    calibration = load_calibration_set(calibration_dir, variant.input_width, variant.input_height, calibration_limit)
    try:
        state_dict = read_state_dict(weights_path)
        model = build_slim_model(state_dict, variant.input_width, variant.input_height)
    except CheckpointError as error:
        raise BuildError(str(error)) from None
    except WeightsMismatchError as error:
        raise BuildError(f"{weights_path}: {error}") from None
    except ValueError as error:  # Keras rejects a kernel of the wrong shape
        raise BuildError(f"{weights_path}: weights do not fit version-slim ({error})") from None

    reference, reference_scores, description = reference_outputs(onnx_path, state_dict, variant, calibration.images)
    float_check = check_float_model(model, reference, reference_scores, calibration.images, description)

    tflite_model = convert_int8(model, with_full_input_range(calibration.images))
    layout = inspect_int8_model(tflite_model, variant)
    int8_logits, int8_regressions = int8_outputs(tflite_model, layout, calibration.images)
    parity = measure_parity(reference, int8_logits, int8_regressions, layout, variant.prior_config)

    sidecar = sidecar_document(variant, layout, weights_path, calibration, parity, tflite_model)
    tflite_path = out_dir / f"{variant.file_stem}.tflite"
    sidecar_path = out_dir / f"{variant.file_stem}.json"
    # Model first: a sidecar on disk always describes the model next to it.
    write_atomic(tflite_path, tflite_model)
    write_atomic(sidecar_path, (json.dumps(sidecar, indent=2) + "\n").encode("utf-8"))
    return BuildReport(
        tflite_path=tflite_path,
        sidecar_path=sidecar_path,
        variant=variant,
        layout=layout,
        float_check=float_check,
        parity=parity,
        calibration_images=len(calibration.files),
        tflite_bytes=len(tflite_model),
        seconds=time.perf_counter() - started,
    )


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.quantize",
        description="Build the full-integer int8 TFLite face detector and its sidecar JSON.",
    )
    parser.add_argument("--model", choices=sorted(MODEL_VARIANTS), default="slim-320")
    parser.add_argument("--weights", type=Path, help="PyTorch .pth state dict (default: pinned upstream file)")
    parser.add_argument("--calibration", type=Path, help="folder of calibration photos (default: <upstream>/images)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="output folder (default: %(default)s)")
    parser.add_argument("--check-onnx", type=Path, help=f"reference ONNX graph (default: pinned {REFERENCE_ONNX})")
    parser.add_argument("--calibration-limit", type=int, help="use only the first N photos (sorted by name)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    # TensorFlow's C++ start-up chatter is noise for a CLI user; must be set before import.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        report = build(args.model, args.weights, args.calibration, args.out, args.check_onnx, args.calibration_limit)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
