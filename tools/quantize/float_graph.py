"""Steps 1 and 2: the float Keras graph rebuilt from upstream's weights, and its self-check
against upstream's ONNX graph run by onnxruntime on the calibration photos."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.detect.decode import face_scores
from edge.detect.preprocess import normalize, normalize_nchw
from tools.quantize.variants import BuildError, ModelVariant

REFERENCE_ONNX = "version-slim-320_without_postprocessing.onnx"
FLOAT_TOLERANCE = 1e-4


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


def load_float_model(weights_path: Path, variant: ModelVariant):
    """Step 1: (state dict {name: float32 array}, float Keras model) of the variant's weights."""
    from tools.pth_reader import CheckpointError, read_state_dict
    from tools.slim_keras import WeightsMismatchError, build_slim_model

    try:
        state_dict = read_state_dict(weights_path)
        return state_dict, build_slim_model(state_dict, variant.input_width, variant.input_height)
    except CheckpointError as error:
        raise BuildError(str(error)) from None
    except WeightsMismatchError as error:
        raise BuildError(f"{weights_path}: {error}") from None
    except ValueError as error:  # Keras rejects a kernel of the wrong shape
        raise BuildError(f"{weights_path}: weights do not fit version-slim ({error})") from None


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
        nchw = normalize_nchw(image)
        run_scores, run_regressions, run_logits = session.run(["scores", "boxes", logits_name], {input_name: nchw})
        logits.append(run_logits[0])
        scores.append(run_scores[0])
        regressions.append(run_regressions[0])
    return FloatOutputs(np.stack(logits), np.stack(regressions)), np.stack(scores), description


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
        max_scores_diff=float(np.abs(face_scores(ours.logits) - reference_scores[..., 1]).max()),
        max_regressions_diff=float(np.abs(ours.regressions - reference.regressions).max()),
    )
    if check.worst > FLOAT_TOLERANCE:
        raise BuildError(
            f"float graph differs from {description}: max abs diff {check.worst:.3g} > {FLOAT_TOLERANCE:g}"
        )
    return check
