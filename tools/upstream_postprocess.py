"""Upstream-style numpy post-processing: the baseline that edge/detect/decode.py is measured against.

A faithful port of upstream's ``vision/utils/box_utils_numpy.py`` (hard_nms, iou_of, area_of)
and the ``predict`` function of its ONNX demo, fed by an int8 model the straightforward way:
dequantize every head, softmax and decode all anchors, threshold, then greedy hard NMS that
recomputes areas at every step. Only change: ``argsort(kind="stable")``, so that equal int8
scores resolve the same way on every platform (upstream's default quicksort leaves ties to
the implementation).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edge.detect.decode import Detections, PostprocessOptions, QuantParams, decode_boxes, face_scores
from edge.detect.priors import PriorConfig

if TYPE_CHECKING:
    from edge.detect.detector import FaceDetector


def area_of(left_top: np.ndarray, right_bottom: np.ndarray) -> np.ndarray:
    hw = np.clip(right_bottom - left_top, 0.0, None)
    return hw[..., 0] * hw[..., 1]


def iou_of(boxes0: np.ndarray, boxes1: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    overlap_left_top = np.maximum(boxes0[..., :2], boxes1[..., :2])
    overlap_right_bottom = np.minimum(boxes0[..., 2:], boxes1[..., 2:])
    overlap_area = area_of(overlap_left_top, overlap_right_bottom)
    area0 = area_of(boxes0[..., :2], boxes0[..., 2:])
    area1 = area_of(boxes1[..., :2], boxes1[..., 2:])
    return overlap_area / (area0 + area1 - overlap_area + eps)


def hard_nms(box_scores: np.ndarray, iou_threshold: float, top_k: int = -1, candidate_size: int = 200) -> np.ndarray:
    """``box_scores``: (K, 5) [x1, y1, x2, y2, score] -> (M, 5) kept rows, best first."""
    scores = box_scores[:, -1]
    boxes = box_scores[:, :-1]
    picked = []
    indexes = np.argsort(scores, kind="stable")
    indexes = indexes[-candidate_size:]
    while len(indexes) > 0:
        current = indexes[-1]
        picked.append(current)
        if 0 < top_k == len(picked) or len(indexes) == 1:
            break
        current_box = boxes[current, :]
        indexes = indexes[:-1]
        rest_boxes = boxes[indexes, :]
        iou = iou_of(rest_boxes, np.expand_dims(current_box, axis=0))
        indexes = indexes[iou <= iou_threshold]
    return box_scores[picked, :]


def upstream_postprocess(
    logits: np.ndarray,
    regressions: np.ndarray,
    priors: np.ndarray,
    prior_config: PriorConfig,
    logits_quant: QuantParams,
    regressions_quant: QuantParams,
    options: PostprocessOptions | None = None,
) -> Detections:
    """(N, 2) int8 logits + (N, 4) int8 regressions -> Detections, the upstream way
    (``options`` None: upstream's default thresholds)."""
    options = options if options is not None else PostprocessOptions()
    confidences = face_scores(logits_quant.dequantize(logits))
    boxes = decode_boxes(
        regressions_quant.dequantize(regressions),
        priors,
        prior_config.center_variance,
        prior_config.size_variance,
    )
    mask = confidences > options.score_threshold
    probs = confidences[mask]
    if probs.shape[0] == 0:
        return Detections.empty()
    box_probs = np.concatenate([boxes[mask, :], probs.reshape(-1, 1)], axis=1)
    box_probs = hard_nms(box_probs, options.iou_threshold, options.top_k, options.candidate_size)
    return Detections(
        np.ascontiguousarray(box_probs[:, :4], dtype=np.float32),
        np.ascontiguousarray(box_probs[:, 4], dtype=np.float32),
    )


def upstream_postprocess_for(detector: FaceDetector, logits: np.ndarray, regressions: np.ndarray) -> Detections:
    """:func:`upstream_postprocess` of ``detector``'s raw heads with its priors and quantization
    (upstream's default thresholds): the baseline its own decode + NMS is compared with."""
    info = detector.info
    return upstream_postprocess(
        logits, regressions, detector.priors, info.prior_config, info.logits_quant, info.regressions_quant
    )
