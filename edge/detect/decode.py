"""Decode SSD outputs into face boxes and suppress duplicates: pure numpy.

Two entry points:

* :func:`select_faces` takes already-decoded boxes and face scores (the float reference path,
  e.g. the upstream ONNX graph that decodes in-graph).
* :class:`Int8Postprocessor` takes the raw int8 heads of an edge-face model (class logits and
  SSD regressions). It thresholds on the integer logits first (one table look-up per anchor),
  so only the few candidate anchors are ever decoded.

Both produce the same :class:`Detections` as upstream's numpy post-processing (dequantize and
decode all anchors, then greedy hard NMS) on the same inputs, to the bit: the per-anchor
arithmetic is shared (:meth:`QuantParams.dequantize`, :func:`face_scores`,
:func:`decode_boxes`) and the NMS keeps upstream's order and tie rules.
``tests/test_decode.py`` checks that on real frames. Which faces survive is set by
:class:`PostprocessOptions`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from edge.detect.priors import PriorConfig, generate_priors

# Upstream's hard_nms only ever looks at the 200 best-scoring candidates.
DEFAULT_CANDIDATE_SIZE = 200


@dataclass(frozen=True)
class QuantParams:
    """Affine int8 quantization: ``real = scale * (q - zero_point)``."""

    scale: float
    zero_point: int

    def dequantize(self, values: np.ndarray) -> np.ndarray:
        """int8 array of any shape -> float32 array of the same shape."""
        return (values.astype(np.float32) - np.float32(self.zero_point)) * np.float32(self.scale)


@dataclass(frozen=True)
class PostprocessOptions:
    """Which decoded anchors become faces.

    ``score_threshold``: keep anchors whose face probability is strictly above it, in (0, 1)
    (upstream's demo uses 0.7); ``iou_threshold``: hard NMS drops a box whose IoU with a kept
    one is above it, in [0, 1]; ``top_k``: keep at most this many faces (-1: all);
    ``candidate_size``: NMS considers only this many best candidates (upstream's hard_nms
    default). Raises ValueError naming the field that is out of range.
    """

    score_threshold: float = 0.7
    iou_threshold: float = 0.3
    top_k: int = -1
    candidate_size: int = DEFAULT_CANDIDATE_SIZE

    def __post_init__(self) -> None:
        if not 0.0 < self.score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in (0, 1), got {self.score_threshold}")
        if not 0.0 <= self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in [0, 1], got {self.iou_threshold}")
        if self.candidate_size < 1:
            raise ValueError(f"candidate_size must be >= 1, got {self.candidate_size}")


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
            raise ValueError(f"Detections.scores must be ({self.boxes.shape[0]},), got {self.scores.shape}")

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))

    def pixel_boxes(self, width: int, height: int) -> np.ndarray:
        """(N, 4) float32 boxes in pixels of a ``width`` x ``height`` frame, clipped to it."""
        scale = np.array([width, height, width, height], dtype=np.float32)
        boxes = self.boxes * scale
        np.clip(boxes, 0.0, scale, out=boxes)
        return boxes


def face_scores(logits: np.ndarray) -> np.ndarray:
    """Softmax over (..., 2) [background, face] float32 logits -> (...) float32 face probability.

    Written as upstream's softmax (subtract the row max, exp, normalize) so it rounds alike:
    the face column of the full softmax, to the bit.
    """
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exps = np.exp(shifted)
    scores: np.ndarray = exps[..., 1] / exps.sum(axis=-1)
    return scores


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
    """(K, 4) xyxy -> (K,) areas; inverted boxes count as empty, as upstream's area_of.

    ``np.maximum(x, 0)`` rather than ``np.clip``: the same values (up to the sign of a zero,
    which no comparison sees) at a fraction of the per-call cost on small arrays.
    """
    zero = np.float32(0)
    areas: np.ndarray = np.maximum(boxes[:, 2] - boxes[:, 0], zero) * np.maximum(boxes[:, 3] - boxes[:, 1], zero)
    return areas


def iou_matrix(boxes: np.ndarray) -> np.ndarray:
    """(K, 4) float32 xyxy -> (K, K) float32 pairwise IoU.

    Element (i, j) is computed with exactly upstream's ``iou_of`` arithmetic for box j against
    box i (areas from clipped extents, 1e-5 in the denominator), so decisions match it bit for
    bit. One coordinate at a time: 1-D columns broadcast far faster than (K, K, 2) views.
    """
    x1, y1, x2, y2 = (np.ascontiguousarray(boxes[:, c]) for c in range(4))
    zero = np.float32(0)
    areas = box_areas(boxes)
    overlap_w = np.maximum(np.minimum(x2[:, None], x2[None, :]) - np.maximum(x1[:, None], x1[None, :]), zero)
    overlap_h = np.maximum(np.minimum(y2[:, None], y2[None, :]) - np.maximum(y1[:, None], y1[None, :]), zero)
    overlap = overlap_w * overlap_h
    iou: np.ndarray = overlap / (areas[None, :] + areas[:, None] - overlap + np.float32(1e-5))
    return iou


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
    ``argsort`` ... ``[-1]`` does with a stable sort.

    Upstream recomputes IoU against the remaining boxes once per kept box; here all pairwise
    IoUs come from one vectorized call and the greedy pass only reads rows of the result, which
    is the same decision sequence at a fraction of the numpy calls.
    """
    order = np.argsort(scores, kind="stable")[::-1][:candidate_size]
    if order.size <= 1:
        return order.astype(np.int64)
    overlaps = iou_matrix(boxes[order]) > iou_threshold
    suppressed = np.zeros(order.size, dtype=bool)
    kept: list[int] = []
    for position in range(order.size):
        if suppressed[position]:
            continue
        kept.append(position)
        if len(kept) == top_k:
            break
        suppressed |= overlaps[position]
    return order[kept].astype(np.int64)


def select_faces(boxes: np.ndarray, scores: np.ndarray, options: PostprocessOptions) -> Detections:
    """Threshold + hard NMS over decoded boxes.

    ``boxes``: (N, 4) float32 normalized xyxy; ``scores``: (N,) float32 face probabilities.
    A box is a candidate when its score is strictly above the threshold (upstream's rule).
    """
    candidates = np.flatnonzero(scores > options.score_threshold)
    if candidates.size == 0:
        return Detections.empty()
    kept = candidates[
        hard_nms(boxes[candidates], scores[candidates], options.iou_threshold, options.top_k, options.candidate_size)
    ]
    return Detections(
        np.ascontiguousarray(boxes[kept], dtype=np.float32),
        np.ascontiguousarray(scores[kept], dtype=np.float32),
    )


class Int8Postprocessor:
    """Raw int8 heads of one model -> :class:`Detections`, touching only candidate anchors.

    An int8 value has 256 possible values and a (background, face) logit pair 65536, so every
    per-anchor function of them is tabulated once per model: the face score of each logit pair
    (and whether it passes the threshold), the dequantized and variance-scaled regressions, and
    their ``exp``. A frame then costs one table look-up over the anchors to find candidates and
    a handful of small array operations on those few. The tables are filled by the very
    functions the upstream-style path applies to every anchor (:meth:`QuantParams.dequantize`,
    :func:`face_scores`, the terms of :func:`decode_boxes`), so results are identical to it.

    Holds only per-model constants; calling it mutates nothing.
    """

    def __init__(
        self,
        prior_config: PriorConfig,
        logits_quant: QuantParams,
        regressions_quant: QuantParams,
        options: PostprocessOptions | None = None,
    ) -> None:
        self.options = options if options is not None else PostprocessOptions()
        self.prior_config = prior_config
        self.priors = generate_priors(prior_config)
        self.logits_quant = logits_quant
        self.regressions_quant = regressions_quant

        # A logit row's two bytes read as one little-endian uint16: low byte background, high face.
        pair_codes = np.arange(65536, dtype="<u2").view(np.uint8).view(np.int8).reshape(65536, 2)
        self._pair_scores = face_scores(logits_quant.dequantize(pair_codes))
        self._pair_passes = self._pair_scores > self.options.score_threshold

        # Regression tables indexed by the byte (uint8 view) of an int8 value.
        byte_values = np.arange(256, dtype=np.uint8).view(np.int8)
        deltas = regressions_quant.dequantize(byte_values)
        centre_terms = deltas * np.float32(prior_config.center_variance)
        size_terms = np.exp(deltas * np.float32(prior_config.size_variance))
        # Row per output column: dx and dy use the centre term, dw and dh the size term.
        self._regression_terms = np.stack([centre_terms, centre_terms, size_terms, size_terms])
        self._columns = np.arange(4)
        # Per anchor: the factors of those terms (w, h, w/2, h/2) and the prior centre.
        # Halving is exact in binary floating point, so x * (w / 2) == x * w / 2 bit for bit.
        half_wh = self.priors[:, 2:] / np.float32(2)
        self._prior_factors = np.concatenate([self.priors[:, 2:], half_wh], axis=1)
        self._prior_centres = np.ascontiguousarray(self.priors[:, :2])

    def with_options(self, options: PostprocessOptions) -> Int8Postprocessor:
        """The same model's post-processor with other ``options``: the tables are shared,
        only the score pass table (65536 comparisons) is made anew. No model is involved."""
        changed = copy.copy(self)
        changed.options = options
        changed._pair_passes = self._pair_scores > options.score_threshold
        return changed

    def __call__(self, logits: np.ndarray, regressions: np.ndarray) -> Detections:
        """``logits``: (N, 2) int8 [background, face]; ``regressions``: (N, 4) int8."""
        pair_codes = np.ascontiguousarray(logits).view("<u2").reshape(-1)
        candidates = np.flatnonzero(self._pair_passes.take(pair_codes))
        if candidates.size == 0:
            return Detections.empty()
        scores = self._pair_scores.take(pair_codes[candidates])
        terms = self._regression_terms[self._columns, regressions[candidates].view(np.uint8)]
        scaled = terms * self._prior_factors[candidates]
        centres = scaled[:, :2] + self._prior_centres[candidates]
        boxes = np.concatenate([centres - scaled[:, 2:], centres + scaled[:, 2:]], axis=1)
        options = self.options
        kept = hard_nms(boxes, scores, options.iou_threshold, options.top_k, options.candidate_size)
        return Detections(boxes[kept], scores[kept])
