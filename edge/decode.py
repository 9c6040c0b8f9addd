"""Decode SSD outputs into face boxes and suppress duplicates: pure numpy.

Two entry points:

* :func:`select_faces` takes already-decoded boxes and face scores (the float reference path,
  e.g. the upstream ONNX graph that decodes in-graph).
* :class:`Int8Postprocessor` takes the raw int8 heads of an edge-face model (class logits and
  SSD regressions). It thresholds on the integer logits first, so only the few candidate
  anchors are ever dequantized, soft-maxed or decoded.

Both produce the same :class:`Detections` as upstream's numpy post-processing (dequantize and
decode all anchors, then greedy hard NMS) on the same inputs, to the bit: the per-anchor
arithmetic is shared (:func:`dequantize`, :func:`face_scores`, :func:`decode_boxes`) and the
NMS keeps upstream's order and tie rules. ``tests/test_decode.py`` checks that on real frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edge.priors import PriorConfig, generate_priors

# Upstream's hard_nms only ever looks at the 200 best-scoring candidates.
DEFAULT_CANDIDATE_SIZE = 200


@dataclass(frozen=True)
class QuantParams:
    """Affine int8 quantization: ``real = scale * (q - zero_point)``."""

    scale: float
    zero_point: int


@dataclass(frozen=True)
class Detections:
    """Faces found in one frame, best first.

    ``boxes``: (N, 4) float32, normalized [x1, y1, x2, y2] (0..1 of the frame; a box may
    reach slightly past the border, as the model predicts it). ``scores``: (N,) float32 face
    probabilities, in descending order.
    """

    boxes: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        if self.boxes.ndim != 2 or self.boxes.shape[1] != 4:
            raise ValueError(f"Detections.boxes must be (N, 4), got {self.boxes.shape}")
        if self.scores.shape != (self.boxes.shape[0],):
            raise ValueError(
                f"Detections.scores must be ({self.boxes.shape[0]},), got {self.scores.shape}"
            )

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))

    def pixel_boxes(self, width: int, height: int) -> np.ndarray:
        """(N, 4) float32 boxes in pixels of a ``width`` x ``height`` frame, clipped to it."""
        scale = np.array([width, height, width, height], dtype=np.float32)
        boxes = self.boxes * scale
        np.clip(boxes, 0.0, scale, out=boxes)
        return boxes


def dequantize(values: np.ndarray, params: QuantParams) -> np.ndarray:
    """int8 array of any shape -> float32 array of the same shape."""
    return (values.astype(np.float32) - np.float32(params.zero_point)) * np.float32(params.scale)


def face_scores(logits: np.ndarray) -> np.ndarray:
    """Softmax over (K, 2) [background, face] float32 logits -> (K,) float32 face probability.

    Written as upstream's softmax (subtract the row max, exp, normalize) so it rounds alike.
    """
    shifted = logits - logits.max(axis=1, keepdims=True)
    exps = np.exp(shifted)
    return exps[:, 1] / exps.sum(axis=1)


def decode_boxes(
    regressions: np.ndarray,
    priors: np.ndarray,
    center_variance: float,
    size_variance: float,
) -> np.ndarray:
    """SSD regressions -> corner boxes.

    ``regressions``: (K, 4) float32 [dx, dy, dw, dh]; ``priors``: (K, 4) float32
    [cx, cy, w, h], normalized. Returns (K, 4) float32 normalized [x1, y1, x2, y2], the same
    arithmetic as upstream's convert_locations_to_boxes + center_form_to_corner_form.
    """
    centers = regressions[:, :2] * np.float32(center_variance) * priors[:, 2:] + priors[:, :2]
    half_sizes = np.exp(regressions[:, 2:] * np.float32(size_variance)) * priors[:, 2:] / np.float32(2)
    return np.concatenate([centers - half_sizes, centers + half_sizes], axis=1)


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """(K, 4) xyxy -> (K,) areas; inverted boxes count as empty, as upstream's area_of."""
    wh = np.clip(boxes[:, 2:] - boxes[:, :2], 0.0, None)
    return wh[:, 0] * wh[:, 1]


def hard_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    top_k: int = -1,
    candidate_size: int = DEFAULT_CANDIDATE_SIZE,
) -> np.ndarray:
    """Greedy hard NMS with upstream's rules; returns (M,) int64 indices into ``boxes``, best first.

    ``boxes``: (K, 4) float32 xyxy; ``scores``: (K,). Only the ``candidate_size`` best
    candidates are considered; a box is suppressed when its IoU with a kept box is above
    ``iou_threshold``. Equal scores are taken highest index first, which is what upstream's
    ``argsort`` ... ``[-1]`` does with a stable sort. IoU uses upstream's 1e-5 epsilon.
    """
    order = np.argsort(scores, kind="stable")[::-1][:candidate_size]
    if order.size <= 1:
        return order.astype(np.int64)
    candidates = boxes[order]
    areas = box_areas(candidates)
    kept: list[int] = []
    # Positions into `candidates`; each pass keeps the best remaining box and drops its overlaps.
    remaining = np.arange(order.size)
    while remaining.size:
        best = remaining[0]
        kept.append(best)
        if len(kept) == top_k or remaining.size == 1:
            break
        rest = remaining[1:]
        top_left = np.maximum(candidates[rest, :2], candidates[best, :2])
        bottom_right = np.minimum(candidates[rest, 2:], candidates[best, 2:])
        overlap_wh = np.clip(bottom_right - top_left, 0.0, None)
        overlap = overlap_wh[:, 0] * overlap_wh[:, 1]
        iou = overlap / (areas[rest] + areas[best] - overlap + np.float32(1e-5))
        remaining = rest[iou <= iou_threshold]
    return order[np.asarray(kept)].astype(np.int64)


def select_faces(
    boxes: np.ndarray,
    scores: np.ndarray,
    score_threshold: float,
    iou_threshold: float,
    top_k: int = -1,
    candidate_size: int = DEFAULT_CANDIDATE_SIZE,
) -> Detections:
    """Threshold + hard NMS over decoded boxes.

    ``boxes``: (N, 4) float32 normalized xyxy; ``scores``: (N,) float32 face probabilities.
    A box is a candidate when its score is strictly above ``score_threshold`` (upstream's rule).
    """
    candidates = np.flatnonzero(scores > score_threshold)
    if candidates.size == 0:
        return Detections.empty()
    kept = candidates[hard_nms(boxes[candidates], scores[candidates], iou_threshold, top_k, candidate_size)]
    return Detections(
        np.ascontiguousarray(boxes[kept], dtype=np.float32),
        np.ascontiguousarray(scores[kept], dtype=np.float32),
    )


def logit_margin_threshold(score_threshold: float, logits_scale: float) -> int:
    """The integer logit margin (face - background, in quantized units) below which no
    anchor can score above ``score_threshold``.

    softmax([l0, l1])[1] > t  <=>  l1 - l0 > ln(t / (1 - t)), and with one shared quantization
    l1 - l0 = scale * (q1 - q0). The integer bound is lowered by one step so float rounding at
    the boundary can never drop an anchor the float test would keep; the exact float test on
    the survivors then decides.
    """
    if not 0.0 < score_threshold < 1.0:
        raise ValueError(f"score_threshold must be in (0, 1), got {score_threshold}")
    margin = math.log(score_threshold / (1.0 - score_threshold)) / logits_scale
    return math.floor(margin) - 1


class Int8Postprocessor:
    """Raw int8 heads of one model -> :class:`Detections`, touching only candidate anchors.

    Holds what is fixed per model (priors, quantization, integer threshold) so the per-frame
    call does no set-up work. Thread-compatible: calling it mutates nothing.
    """

    def __init__(
        self,
        prior_config: PriorConfig,
        logits_quant: QuantParams,
        regressions_quant: QuantParams,
        score_threshold: float = 0.7,
        iou_threshold: float = 0.3,
        top_k: int = -1,
        candidate_size: int = DEFAULT_CANDIDATE_SIZE,
    ) -> None:
        if not 0.0 <= iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
        self.prior_config = prior_config
        self.priors = generate_priors(prior_config)
        self.logits_quant = logits_quant
        self.regressions_quant = regressions_quant
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)
        self.top_k = top_k
        self.candidate_size = candidate_size
        self._margin_threshold = logit_margin_threshold(score_threshold, logits_quant.scale)

    def __call__(self, logits: np.ndarray, regressions: np.ndarray) -> Detections:
        """``logits``: (N, 2) int8 [background, face]; ``regressions``: (N, 4) int8."""
        margins = np.subtract(logits[:, 1], logits[:, 0], dtype=np.int16)
        candidates = np.flatnonzero(margins > self._margin_threshold)
        if candidates.size == 0:
            return Detections.empty()
        scores = face_scores(dequantize(logits[candidates], self.logits_quant))
        passing = scores > self.score_threshold
        candidates, scores = candidates[passing], scores[passing]
        if candidates.size == 0:
            return Detections.empty()
        boxes = decode_boxes(
            dequantize(regressions[candidates], self.regressions_quant),
            self.priors[candidates],
            self.prior_config.center_variance,
            self.prior_config.size_variance,
        )
        kept = hard_nms(boxes, scores, self.iou_threshold, self.top_k, self.candidate_size)
        return Detections(boxes[kept], scores[kept])
