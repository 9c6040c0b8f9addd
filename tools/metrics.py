"""Average precision for face detection, pure numpy: the two protocols the project reports.

1. The model card's protocol ("card"): Open Model Zoo's accuracy checker as configured for
   ultra-lightweight-face-detection-slim-320 (reference mAP 0.8332 on WIDER FACE val).
   Sources, repository openvinotoolkit/open_model_zoo:
   - models/public/ultra-lightweight-face-detection-slim-320/accuracy-check.yml: adapter
     ``ultra_lightweight_face_detection`` (score threshold 0.7), postprocessing ``nms``
     (overlap 0.5, include_boundaries False), ``resize_prediction_boxes``, ``filter``
     (apply_to annotation, height_range 100, is_empty True); metric ``map`` (ignore_difficult
     True, include_boundaries False; integral and allow_multiple_matches_per_ignored left at
     their defaults 'max' and False).
   - tools/accuracy_checker/openvino/tools/accuracy_checker/adapters/detection.py
     (UltraLightweightFaceDetectionAdapter: keeps anchors with face score > threshold,
     strictly greater).
   - .../postprocessor/nms.py (NMS.nms: suppress when IoU > overlap; no candidate limit).
   - .../postprocessor/filter.py + utils.py (FilterByHeightRange with convert_to_range(100)
     = [100] and in_interval: a box is kept iff 100 <= y_max - y_min; FilterEmpty: boxes
     with width or height <= 0). Filtered annotation boxes are not removed but marked
     ``difficult_boxes``, i.e. ignored by the metric.
   - .../annotation_converters/wider.py (x_max = x + w, y_max = y + h, in original pixels).
   - .../metrics/detection.py (bbox_match, _prepare_*_boxes, average_precision) and
     .../metrics/overlap.py (IOU, IOA with the optional +1 "boundary").
   Implemented here: :func:`card_ignored_mask`, :func:`omz_iou`, :func:`omz_ioa`,
   :func:`omz_match_image`, :func:`voc_average_precision`, :func:`card_average_precision`.

2. The official WIDER FACE easy / medium / hard protocol: a port of the python evaluation
   shipped by upstream (repository Linzaer/Ultra-Light-Fast-Generic-Face-Detector-1MB,
   widerface_evaluate/evaluation.py, itself wondervictor/WiderFace-Evaluation evaluation.py
   + box_overlaps.pyx, a port of the official MATLAB eval_tools). Scores are min-max
   normalized over the whole dataset, each image is matched at IoU >= 0.5 with a +1 pixel
   boundary, ground truth outside a level's keep list is ignored, the PR curve is sampled at
   1000 score thresholds and integrated VOC style. Implemented here: :func:`wider_iou`,
   :func:`wider_image_eval`, :func:`wider_image_pr_counts`, :func:`wider_average_precision`,
   and :func:`wider_submission_rounding` (upstream's result-file writer).

All boxes are (N, 4) float64 [x1, y1, x2, y2] in pixels of the ORIGINAL image; scores are
(N,) float64. Detections of one image are given best first (descending score).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CARD_IOU_THRESHOLD = 0.5
# height_range: 100 in accuracy-check.yml: faces under 100 px tall (original image) are ignored.
CARD_MIN_FACE_HEIGHT = 100.0
WIDER_IOU_THRESHOLD = 0.5
WIDER_THRESHOLD_COUNT = 1000
WIDER_LEVELS = ("easy", "medium", "hard")


@dataclass(frozen=True)
class ImagePredictions:
    """Detections of one image: ``boxes`` (N, 4) float64 pixel xyxy, ``scores`` (N,) float64,
    best first."""

    boxes: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        _check_boxes(self.boxes, "ImagePredictions.boxes")
        if self.scores.shape != (self.boxes.shape[0],):
            raise ValueError(f"ImagePredictions.scores must be ({self.boxes.shape[0]},), got {self.scores.shape}")
        if self.scores.size > 1 and np.any(np.diff(self.scores) > 0):
            raise ValueError("ImagePredictions.scores must be in descending order")


@dataclass(frozen=True)
class CardGroundTruth:
    """Card-protocol ground truth of one image: ``boxes`` (M, 4) float64 pixel xyxy and
    ``ignored`` (M,) bool (OMZ "difficult": matched detections neither score nor count)."""

    boxes: np.ndarray
    ignored: np.ndarray

    def __post_init__(self) -> None:
        _check_boxes(self.boxes, "CardGroundTruth.boxes")
        if self.ignored.shape != (self.boxes.shape[0],) or self.ignored.dtype != np.bool_:
            raise ValueError(f"CardGroundTruth.ignored must be ({self.boxes.shape[0]},) bool")


@dataclass(frozen=True)
class WiderGroundTruth:
    """WIDER ground truth of one image: ``boxes`` (M, 4) float64 pixel xyxy (x2 = x + w, as
    the official eval builds them) and ``keep`` level name -> (M,) bool, True for the
    boxes in that level's keep list (official ``gt_list`` of wider_<level>_val.mat)."""

    boxes: np.ndarray
    keep: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        _check_boxes(self.boxes, "WiderGroundTruth.boxes")
        for level, mask in self.keep.items():
            if mask.shape != (self.boxes.shape[0],) or mask.dtype != np.bool_:
                raise ValueError(f"WiderGroundTruth.keep[{level!r}] must be ({self.boxes.shape[0]},) bool")


def _check_boxes(boxes: np.ndarray, what: str) -> None:
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{what} must be (N, 4), got {boxes.shape}")


# ---------------------------------------------------------------------------------------------
# Card protocol (Open Model Zoo accuracy checker)
# ---------------------------------------------------------------------------------------------


def card_ignored_mask(gt_boxes: np.ndarray, min_height: float = CARD_MIN_FACE_HEIGHT) -> np.ndarray:
    """(M, 4) pixel xyxy ground truth in ORIGINAL image pixels -> (M,) bool, True = ignored.

    filter.py FilterByHeightRange keeps a box iff ``min_height <= y2 - y1`` (in_interval with
    a one-element range); FilterEmpty (is_empty: True) also drops boxes with width or height
    <= 0. The height is that of the original image: the filter runs on the annotation, which
    the WIDER converter keeps in original pixels.
    """
    widths = gt_boxes[:, 2] - gt_boxes[:, 0]
    heights = gt_boxes[:, 3] - gt_boxes[:, 1]
    return ~(min_height <= heights) | (widths <= 0) | (heights <= 0)


def height_share_ignored_mask(gt_boxes: np.ndarray, image_height: float, low: float, high: float) -> np.ndarray:
    """(M, 4) pixel xyxy ground truth of an image ``image_height`` pixels tall -> (M,) bool,
    True = ignored: faces whose height is not in [low, high) of the image height, and empty
    boxes. A share of the image height is what every resize keeps, so one bin holds the same
    faces whatever input size a model runs at (10% of the height is 24 px at 320x240 and 12 px
    at 160x120)."""
    widths = gt_boxes[:, 2] - gt_boxes[:, 0]
    heights = gt_boxes[:, 3] - gt_boxes[:, 1]
    share = heights / image_height
    return ~((low <= share) & (share < high)) | (widths <= 0) | (heights <= 0)


def _omz_area(boxes: np.ndarray, boundary: float) -> np.ndarray:
    return (boxes[..., 2] - boxes[..., 0] + boundary) * (boxes[..., 3] - boxes[..., 1] + boundary)


def _omz_intersection_areas(boxes: np.ndarray, others: np.ndarray, boundary: float) -> np.ndarray:
    """(N, 4) x (M, 4) -> (N, M) intersection areas, as overlap.py Overlap.intersections.

    The far corner is clamped to the near one, so disjoint boxes get a zero-size intersection,
    which still has area 1 when the +1 boundary is on: an OMZ quirk kept on purpose (the card
    protocol runs with the boundary off).
    """
    top_left = np.maximum(boxes[:, None, :2], others[None, :, :2])
    bottom_right = np.maximum(top_left, np.minimum(boxes[:, None, 2:], others[None, :, 2:]))
    return _omz_area(np.concatenate([top_left, bottom_right], axis=2), boundary)


def omz_iou(boxes: np.ndarray, others: np.ndarray, include_boundaries: bool = False) -> np.ndarray:
    """(N, 4) x (M, 4) xyxy -> (N, M) float64 IoU, as overlap.py IOU (0 where the union is 0;
    ``include_boundaries`` adds 1 to every width and height)."""
    boundary = 1.0 if include_boundaries else 0.0
    intersections = _omz_intersection_areas(boxes, others, boundary)
    unions = _omz_area(boxes, boundary)[:, None] + _omz_area(others, boundary)[None, :] - intersections
    return np.divide(intersections, unions, out=np.zeros_like(intersections, dtype=float), where=unions != 0)


def omz_ioa(boxes: np.ndarray, others: np.ndarray, include_boundaries: bool = False) -> np.ndarray:
    """(N, 4) x (M, 4) -> (N, M) intersection over the area of each of ``boxes`` (the
    detections), as overlap.py IOA."""
    boundary = 1.0 if include_boundaries else 0.0
    intersections = _omz_intersection_areas(boxes, others, boundary)
    areas = np.broadcast_to(_omz_area(boxes, boundary)[:, None], intersections.shape)
    return np.divide(intersections, areas, out=np.zeros_like(intersections, dtype=float), where=areas != 0)


def omz_match_image(
    predictions: ImagePredictions,
    ground_truth: CardGroundTruth,
    overlap_threshold: float = CARD_IOU_THRESHOLD,
    include_boundaries: bool = False,
    allow_multiple_matches_per_ignored: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Label one image's detections (best first) -> (tp, fp), each (N,) int64 of 0/1.

    A detection that is neither (tp = fp = 0) hit an ignored face: it stays in the ranking
    but does not move precision or recall. Port of metrics/detection.py bbox_match for one
    label with ignore_difficult=True and use_filtered_tp=False; the predictions carry no
    difficult flags of their own (the card's filter applies to the annotation only), so every
    unmatched detection is a false positive. Rules, per detection in score order:
    - IoU against every face; with ``allow_multiple_matches_per_ignored`` the ignored faces
      use intersection over the detection's area instead;
    - the best IoU among counted faces wins; only when it is below the threshold do the
      ignored faces get a say (their best overlap is used instead);
    - best overlap < threshold (strictly) -> FP;
    - the faces at exactly that overlap include no ignored one: TP if none of them is used
      yet (they become used), FP (a duplicate) otherwise;
    - else (an ignored face): without ``allow_multiple_matches_per_ignored`` the first
      detection on it is neither TP nor FP and marks it used, later ones are FP; with it,
      every detection on an ignored face is neither.
    """
    count = len(predictions.scores)
    tp = np.zeros(count, dtype=np.int64)
    fp = np.zeros(count, dtype=np.int64)
    gt_boxes, ignored = ground_truth.boxes, ground_truth.ignored
    used = np.zeros(len(gt_boxes), dtype=bool)
    all_overlaps = omz_iou(predictions.boxes, gt_boxes, include_boundaries)
    if allow_multiple_matches_per_ignored and ignored.any():
        all_overlaps[:, ignored] = omz_ioa(predictions.boxes, gt_boxes[ignored], include_boundaries)
    for index, overlaps in enumerate(all_overlaps):
        counted_overlaps = overlaps[~ignored]
        ignored_overlaps = overlaps[ignored]
        best = counted_overlaps.max() if counted_overlaps.size else -np.inf
        if best < overlap_threshold and ignored_overlaps.size:
            best = ignored_overlaps.max()
        if best < overlap_threshold:
            fp[index] = 1
            continue
        best_faces = overlaps == best
        if not ignored[best_faces].any():
            if not used[best_faces].any():
                tp[index] = 1
                used[best_faces] = True
            else:
                fp[index] = 1
        elif not allow_multiple_matches_per_ignored:
            if used[best_faces].any():
                fp[index] = 1
            used[best_faces] = True
    return tp, fp


def voc_average_precision(precision: np.ndarray, recall: np.ndarray, integral: str = "max") -> float:
    """Area under a PR curve, Pascal VOC style; ``precision``/``recall`` (K,) float64 in
    ranking order. Port of metrics/detection.py average_precision (identical to the WIDER
    eval's voc_ap for ``integral="max"``).

    "max": the precision envelope (each point takes the best precision at any higher recall),
    integrated over the recall steps, with sentinels (recall 0, precision 0) in front and
    (recall 1, precision 0) at the end. "11point": mean over recall 0, 0.1, ..., 1.0 of the
    best precision at recall >= that point.
    """
    if integral == "11point":
        total = 0.0
        for point in np.arange(0.0, 1.1, 0.1):
            reached = recall >= point
            total += (np.max(precision[reached]) if reached.any() else 0.0) / 11.0
        return float(total)
    if integral != "max":
        raise ValueError(f"integral must be 'max' or '11point', got {integral!r}")
    recall = np.concatenate(([0.0], recall, [1.0]))
    precision = np.concatenate(([0.0], precision, [0.0]))
    # Running max from the right == the VOC envelope loop. The WIDER eval has 0/0 precisions
    # (thresholds with no proposal yet); fmax skips them where np.maximum would carry the NaN
    # down. They all sit at recall 0, where no area is counted, so the AP is the same.
    precision = np.fmax.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def card_average_precision(
    predictions: Sequence[ImagePredictions],
    ground_truths: Sequence[CardGroundTruth],
    overlap_threshold: float = CARD_IOU_THRESHOLD,
    include_boundaries: bool = False,
    allow_multiple_matches_per_ignored: bool = False,
    integral: str = "max",
) -> float:
    """AP of the face class over a dataset with the card's (OMZ ``map``) rules.

    Detections of all images are ranked by score; precision = cumTP / max(cumTP + cumFP, eps),
    recall = cumTP / (faces not ignored). Returns 0.0 when there is no detection at all (OMZ
    warns "No detections to compute mAP" and reports 0).

    Ranking ties: OMZ sorts with numpy's default (unstable) quicksort, so the order of equal
    scores is unspecified there; here it is a stable sort (image order, then the detector's
    order), which makes int8 models, whose scores tie often, evaluate reproducibly.
    Matching only depends on the order within an image, so images are matched one by one.
    """
    if len(predictions) != len(ground_truths):
        raise ValueError(f"{len(predictions)} prediction sets for {len(ground_truths)} images")
    counted_faces = sum(int(np.count_nonzero(~gt.ignored)) for gt in ground_truths)
    if counted_faces == 0:
        raise ValueError("no ground-truth face counts under this protocol (all are ignored)")
    labels = [
        omz_match_image(pred, gt, overlap_threshold, include_boundaries, allow_multiple_matches_per_ignored)
        for pred, gt in zip(predictions, ground_truths, strict=True)
    ]
    scores = np.concatenate([pred.scores for pred in predictions] + [np.zeros(0)])
    if scores.size == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp = np.concatenate([tp for tp, _ in labels])[order]
    fp = np.concatenate([fp for _, fp in labels])[order]
    cumulative_tp, cumulative_fp = np.cumsum(tp), np.cumsum(fp)
    eps = np.finfo(np.float64).eps
    precision = cumulative_tp / np.maximum(cumulative_tp + cumulative_fp, eps)
    recall = cumulative_tp / counted_faces
    return voc_average_precision(precision, recall, integral)


# ---------------------------------------------------------------------------------------------
# Official WIDER FACE protocol
# ---------------------------------------------------------------------------------------------


def wider_submission_rounding(boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What upstream's result files hold: ``"%d %d %d %d %.03f" % (floor(x1), floor(y1),
    ceil(x2 - x1), ceil(y2 - y1), min(score, 1))`` (widerface_evaluate/
    evaluation_on_widerface.py). Returns (N, 4) float64 xyxy rebuilt as the eval reads them
    (x2 = x + w) and (N,) scores rounded to 3 decimals; order unchanged."""
    x1 = np.floor(boxes[:, 0])
    y1 = np.floor(boxes[:, 1])
    widths = np.ceil(boxes[:, 2] - boxes[:, 0])
    heights = np.ceil(boxes[:, 3] - boxes[:, 1])
    rounded = np.stack([x1, y1, x1 + widths, y1 + heights], axis=1).astype(np.float64)
    return rounded, np.round(np.minimum(scores, 1.0), 3).astype(np.float64)


def wider_iou(boxes: np.ndarray, query_boxes: np.ndarray) -> np.ndarray:
    """(N, 4) x (K, 4) xyxy -> (N, K) IoU with the +1 pixel boundary of box_overlaps.pyx
    (widths are x2 - x1 + 1); 0 when the boxes do not overlap."""
    boxes = boxes.astype(np.float32)
    query_boxes = query_boxes.astype(np.float32)
    top_left = np.maximum(boxes[:, None, :2], query_boxes[None, :, :2])
    bottom_right = np.minimum(boxes[:, None, 2:], query_boxes[None, :, 2:])
    inter_w = bottom_right[..., 0] - top_left[..., 0] + 1
    inter_h = bottom_right[..., 1] - top_left[..., 1] + 1
    box_areas = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    query_areas = (query_boxes[:, 2] - query_boxes[:, 0] + 1) * (query_boxes[:, 3] - query_boxes[:, 1] + 1)
    overlapping = (inter_w > 0) & (inter_h > 0)
    intersections = np.where(overlapping, inter_w * inter_h, 0.0)
    unions = box_areas[:, None] + query_areas[None, :] - intersections
    return np.where(overlapping, intersections / np.where(overlapping, unions, 1.0), 0.0).astype(np.float32)


def wider_image_eval(
    pred_boxes: np.ndarray, gt_boxes: np.ndarray, keep: np.ndarray, iou_threshold: float = WIDER_IOU_THRESHOLD
) -> tuple[np.ndarray, np.ndarray]:
    """One image, detections best first -> (recalled, is_proposal).

    ``recalled`` (N,) int64: kept faces found by detections 0..i. ``is_proposal`` (N,) bool:
    False for detections whose best face is an ignored one (they are not counted as
    proposals). Port of evaluation.py image_eval: each detection looks only at its best-IoU
    face (first index on ties); at IoU >= threshold, an ignored face swallows it, a kept face
    not yet found is recalled; a second detection of a found face stays a proposal (a FP).
    """
    overlaps = wider_iou(pred_boxes, gt_boxes)
    recalled = np.zeros(len(pred_boxes), dtype=np.int64)
    is_proposal = np.ones(len(pred_boxes), dtype=bool)
    found = np.zeros(len(gt_boxes), dtype=bool)
    for index, row in enumerate(overlaps):
        best = int(row.argmax())
        if row[best] >= iou_threshold:
            if not keep[best]:
                is_proposal[index] = False
            else:
                found[best] = True
        recalled[index] = np.count_nonzero(found)
    return recalled, is_proposal


def wider_image_pr_counts(
    scores: np.ndarray, recalled: np.ndarray, is_proposal: np.ndarray, thresholds: np.ndarray
) -> np.ndarray:
    """(T, 2) float64 [proposals, recalled faces] of one image at each score threshold: the
    detections with normalized score >= threshold (a prefix, scores being best first).
    Vectorized evaluation.py img_pr_info."""
    above = np.count_nonzero(scores[None, :] >= thresholds[:, None], axis=1)
    counts = np.zeros((len(thresholds), 2), dtype=np.float64)
    hit = above > 0
    last = above[hit] - 1
    counts[hit, 0] = np.cumsum(is_proposal)[last]
    counts[hit, 1] = recalled[last]
    return counts


def wider_thresholds(count: int = WIDER_THRESHOLD_COUNT) -> np.ndarray:
    """(count,) float64 thresholds 1 - (t + 1) / count, t = 0..count-1, as img_pr_info."""
    return 1.0 - (np.arange(count, dtype=np.float64) + 1.0) / count


def wider_normalized_scores(predictions: Sequence[ImagePredictions]) -> list[np.ndarray]:
    """evaluation.py norm_score: (s - min) / (max - min) over every detection of the dataset,
    with min starting at 1 and max at 0. A dataset whose scores are all equal maps to 1 (the
    reference divides by zero there, and every detection drops out of the curve)."""
    nonempty = [pred.scores for pred in predictions if pred.scores.size]
    if not nonempty:
        return [pred.scores.copy() for pred in predictions]
    low = min(1.0, float(min(s.min() for s in nonempty)))
    high = max(0.0, float(max(s.max() for s in nonempty)))
    spread = high - low
    if spread <= 0:
        return [np.ones_like(pred.scores) for pred in predictions]
    return [(pred.scores - low) / spread for pred in predictions]


def wider_average_precision(
    predictions: Sequence[ImagePredictions],
    ground_truths: Sequence[WiderGroundTruth],
    level: str,
    iou_threshold: float = WIDER_IOU_THRESHOLD,
    threshold_count: int = WIDER_THRESHOLD_COUNT,
) -> float:
    """AP at one WIDER level ("easy", "medium", "hard") over a dataset (evaluation.py
    ``evaluation`` for one setting). The denominator counts every kept face, including those
    of images without detections."""
    if len(predictions) != len(ground_truths):
        raise ValueError(f"{len(predictions)} prediction sets for {len(ground_truths)} images")
    thresholds = wider_thresholds(threshold_count)
    normalized = wider_normalized_scores(predictions)
    face_count = 0
    curve = np.zeros((threshold_count, 2), dtype=np.float64)
    for pred, scores, gt in zip(predictions, normalized, ground_truths, strict=True):
        keep = gt.keep[level]
        face_count += int(np.count_nonzero(keep))
        if len(gt.boxes) == 0 or len(pred.boxes) == 0:
            continue
        recalled, is_proposal = wider_image_eval(pred.boxes, gt.boxes, keep, iou_threshold)
        curve += wider_image_pr_counts(scores, recalled, is_proposal, thresholds)
    if face_count == 0:
        raise ValueError(f"no face is kept at WIDER level {level!r}")
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = curve[:, 1] / curve[:, 0]
    recall = curve[:, 1] / face_count
    return voc_average_precision(precision, recall, "max")


def wider_average_precisions(
    predictions: Sequence[ImagePredictions], ground_truths: Sequence[WiderGroundTruth]
) -> dict[str, float]:
    """{"easy": AP, "medium": AP, "hard": AP}."""
    return {level: wider_average_precision(predictions, ground_truths, level) for level in WIDER_LEVELS}


# ---------------------------------------------------------------- face agreement


def box_iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """(A, 4) x (B, 4) xyxy boxes (any unit) -> (A, B) float64 IoU; empty unions give 0."""
    top_left = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    overlap = np.clip(bottom_right - top_left, 0.0, None).prod(axis=2).astype(np.float64)
    area_a = np.clip(boxes_a[:, 2:] - boxes_a[:, :2], 0.0, None).prod(axis=1)
    area_b = np.clip(boxes_b[:, 2:] - boxes_b[:, :2], 0.0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - overlap
    return np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)


def match_boxes(reference: np.ndarray, candidate: np.ndarray, min_iou: float) -> list[float]:
    """Greedy one-to-one matching of (A, 4) reference and (B, 4) candidate boxes, best IoU
    first; returns the IoU of every matched pair (its length is the number of matches)."""
    if len(reference) == 0 or len(candidate) == 0:
        return []
    iou = box_iou_matrix(reference, candidate)
    matched: list[float] = []
    while True:
        row, col = np.unravel_index(np.argmax(iou), iou.shape)
        if iou[row, col] < min_iou:
            return matched
        matched.append(float(iou[row, col]))
        iou[row, :] = -1.0
        iou[:, col] = -1.0
