"""Step 5: the int8 model run in the real interpreter, compared with the float reference:
dequantized heads, and faces after decode + NMS."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.detect.decode import Int8Postprocessor, PostprocessOptions, decode_boxes, face_scores, select_faces
from edge.detect.priors import PriorConfig, generate_priors
from tools.metrics import match_boxes
from tools.quantize.float_graph import FloatOutputs
from tools.quantize.verify import Int8Layout, interpreter_for

# Face-level parity: upstream's default demo thresholds (PostprocessOptions' defaults), and
# the IoU at which a float face and an int8 face count as the same face.
PARITY_OPTIONS = PostprocessOptions()
PARITY_SCORE_THRESHOLD = PARITY_OPTIONS.score_threshold
PARITY_MATCH_IOU = 0.5
# Parity figures go into the sidecar; a fixed precision keeps its bytes stable.
SIDECAR_DECIMALS = 6


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
            "nms_iou_threshold": PARITY_OPTIONS.iou_threshold,
            "match_iou": PARITY_MATCH_IOU,
            "faces_float": self.faces_float,
            "faces_int8": self.faces_int8,
            "faces_matched": self.faces_matched,
            "mean_matched_iou": rounded(self.mean_matched_iou),
            "face_agreement": rounded(self.face_agreement),
        }


def int8_outputs(tflite_model: bytes, layout: Int8Layout, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run the int8 model on (n, H, W, 3) uint8 images fed as ``pixel XOR 0x80`` (as the
    device does). Returns logits (n, N, 2) int8 and regressions (n, N, 4) int8."""
    interpreter = interpreter_for(tflite_model)
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
    logits_error = np.abs(layout.logits.quant.dequantize(int8_logits) - reference.logits)
    regressions_error = np.abs(layout.regressions.quant.dequantize(int8_regressions) - reference.regressions)
    face_anchor_mask = face_scores(reference.logits) > PARITY_SCORE_THRESHOLD
    face_anchor_error = regressions_error[face_anchor_mask]
    if face_anchor_error.size == 0:
        face_anchor_error = np.zeros(1, np.float32)
    priors = generate_priors(prior_config)
    postprocess = Int8Postprocessor(prior_config, layout.logits.quant, layout.regressions.quant, PARITY_OPTIONS)
    faces_float = faces_int8 = 0
    matched_ious: list[float] = []
    for image_index in range(len(int8_logits)):
        float_faces = select_faces(
            decode_boxes(
                reference.regressions[image_index], priors, prior_config.center_variance, prior_config.size_variance
            ),
            face_scores(reference.logits[image_index]),
            PARITY_OPTIONS,
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
