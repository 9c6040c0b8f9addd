"""tools/metrics.py on small hand-built cases whose AP is worked out by hand in the comments.

Card protocol = Open Model Zoo ``map`` as the model card configures it (IoU >= 0.5, no +1
boundary, faces under 100 px tall ignored, VOC "max" integral); WIDER = the official easy /
medium / hard evaluation (1000 thresholds on dataset-normalized scores, +1 px IoU).
"""

from __future__ import annotations

import numpy as np
import pytest

from tools import metrics

pytestmark = pytest.mark.unit

# Faces tall enough to count under the card protocol (200 px), a small ignored one (50 px) and
# a box that overlaps nothing.
TALL_A = [0.0, 0.0, 100.0, 200.0]
TALL_B = [300.0, 0.0, 400.0, 200.0]
SMALL = [600.0, 0.0, 625.0, 50.0]
NOWHERE = [900.0, 900.0, 1000.0, 1100.0]


def predictions(boxes: list[list[float]], scores: list[float]) -> metrics.ImagePredictions:
    return metrics.ImagePredictions(
        np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(scores, dtype=np.float64)
    )


def card_truth(boxes: list[list[float]]) -> metrics.CardGroundTruth:
    array = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    return metrics.CardGroundTruth(array, metrics.card_ignored_mask(array))


def card_ap(pred: metrics.ImagePredictions, truth: metrics.CardGroundTruth, **options) -> float:
    return metrics.card_average_precision([pred], [truth], **options)


# --------------------------------------------------------------------------------------------
# Card protocol (OMZ map)
# --------------------------------------------------------------------------------------------


def test_perfect_detections_score_one():
    # Two counted faces, each found once: precision 1 at recall 0.5 and 1 -> area 1.
    assert card_ap(predictions([TALL_A, TALL_B], [0.9, 0.8]), card_truth([TALL_A, TALL_B])) == 1.0


def test_false_positive_ranked_first():
    # Ranking FP, TP, TP over 2 faces: precision 0, 1/2, 2/3 at recall 0, 1/2, 1. The envelope
    # is 2/3 at every recall, so AP = 1/2 * 2/3 + 1/2 * 2/3 = 2/3.
    pred = predictions([NOWHERE, TALL_A, TALL_B], [0.9, 0.8, 0.7])
    assert card_ap(pred, card_truth([TALL_A, TALL_B])) == pytest.approx(2 / 3)


def test_false_positive_ranked_between_hits():
    # TP, FP, TP: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1. Envelope: 1 up to recall 1/2,
    # then 2/3: AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    pred = predictions([TALL_A, NOWHERE, TALL_B], [0.9, 0.8, 0.7])
    assert card_ap(pred, card_truth([TALL_A, TALL_B])) == pytest.approx(5 / 6)


def test_eleven_point_integral():
    # One face, ranking FP then TP: precision 1/2 at recall 1, so every one of the 11 recall
    # points sees best precision 1/2 -> 0.5; the "max" integral gives 1 * 1/2 as well.
    pred = predictions([NOWHERE, TALL_A], [0.9, 0.8])
    assert card_ap(pred, card_truth([TALL_A]), integral="11point") == pytest.approx(0.5)
    assert card_ap(pred, card_truth([TALL_A])) == pytest.approx(0.5)
    # TP then FP over two faces: precision 1 at recall 1/2 (0.5 included), nothing reaches 0.6+:
    # 6 of the 11 points score 1 -> 6/11.
    pred = predictions([TALL_A, NOWHERE], [0.9, 0.8])
    assert card_ap(pred, card_truth([TALL_A, TALL_B]), integral="11point") == pytest.approx(6 / 11)


def test_faces_under_100_px_are_ignored_and_empty_boxes_too():
    boxes = np.array([[0, 0, 50, 100.0], [0, 0, 50, 99.9], [0, 0, 0, 150.0], [10, 10, 60, 250.0]], dtype=np.float64)
    # 100 px tall counts (100 <= h), 99.9 does not; a zero-width box is "empty".
    assert metrics.card_ignored_mask(boxes).tolist() == [False, True, True, False]


def test_detection_of_an_ignored_face_is_neither_tp_nor_fp():
    # The first detection sits on the 50 px face: it must not count as a false positive, so the
    # one counted face is found at precision 1 -> AP 1.
    pred = predictions([SMALL, TALL_A], [0.9, 0.8])
    truth = card_truth([TALL_A, SMALL])
    tp, fp = metrics.omz_match_image(pred, truth)
    assert tp.tolist() == [0, 1] and fp.tolist() == [0, 0]
    assert card_ap(pred, truth) == 1.0


def test_second_detection_of_an_ignored_face_is_fp_unless_multiple_matches_allowed():
    pred = predictions([SMALL, SMALL, TALL_A], [0.9, 0.8, 0.7])
    truth = card_truth([TALL_A, SMALL])
    # Default (the card's config): one free match per ignored face; the duplicate is FP.
    tp, fp = metrics.omz_match_image(pred, truth)
    assert tp.tolist() == [0, 0, 1] and fp.tolist() == [0, 1, 0]
    # Ranking neutral, FP, TP over 1 face: precision 0 at recall 0, then 1/2 at recall 1 -> 1/2.
    assert card_ap(pred, truth) == pytest.approx(0.5)
    tp, fp = metrics.omz_match_image(pred, truth, allow_multiple_matches_per_ignored=True)
    assert tp.tolist() == [0, 0, 1] and fp.tolist() == [0, 0, 0]


def test_duplicate_detection_of_a_counted_face_is_fp():
    # TP then a duplicate of the same face: precision 1 then 1/2, recall 1 both -> AP 1 (the
    # envelope at recall 1 is 1); the duplicate is still labelled FP.
    pred = predictions([TALL_A, [0.0, 0.0, 100.0, 190.0]], [0.9, 0.8])
    tp, fp = metrics.omz_match_image(pred, card_truth([TALL_A]))
    assert tp.tolist() == [1, 0] and fp.tolist() == [0, 1]
    assert card_ap(pred, card_truth([TALL_A])) == 1.0


def test_boundary_plus_one_changes_a_borderline_match():
    # Face 100 x 200, detection 100 x 99.5 at its top. Without the +1 boundary IoU =
    # 9950 / 20000 = 0.4975 < 0.5 -> FP, AP 0. With it: 101 * 100.5 / (101 * 201) = exactly 0.5,
    # and a match needs IoU >= 0.5 -> TP, AP 1.
    pred = predictions([[0.0, 0.0, 100.0, 99.5]], [0.9])
    truth = card_truth([TALL_A])
    assert card_ap(pred, truth) == 0.0
    assert card_ap(pred, truth, include_boundaries=True) == 1.0


def test_omz_overlaps():
    a = np.array([[0.0, 0.0, 3.0, 3.0]])
    b = np.array([[1.0, 1.0, 4.0, 4.0], [5.0, 5.0, 6.0, 6.0]])
    # Overlap 2 x 2 = 4 of a union 9 + 9 - 4 = 14; disjoint -> 0.
    np.testing.assert_allclose(metrics.omz_iou(a, b), [[4 / 14, 0.0]])
    # +1 boundary: 3 x 3 = 9 of 16 + 16 - 9 = 23; OMZ's clamped corner gives the disjoint pair a
    # 1 x 1 intersection there, of areas 4 x 4 and 2 x 2: 1 / (16 + 4 - 1).
    np.testing.assert_allclose(metrics.omz_iou(a, b, include_boundaries=True), [[9 / 23, 1 / 19]])
    # Intersection over the detection's own area: 4 / 9.
    np.testing.assert_allclose(metrics.omz_ioa(a, b), [[4 / 9, 0.0]])


def test_ranking_is_over_the_whole_dataset():
    # Image 1: a FP at 0.95; image 2: its face at 0.9. Pooled ranking FP, TP over 1 face ->
    # precision 1/2 at recall 1 -> AP 1/2 (per-image AP would have said 1 for image 2).
    pooled = metrics.card_average_precision(
        [predictions([NOWHERE], [0.95]), predictions([TALL_A], [0.9])],
        [card_truth([]), card_truth([TALL_A])],
    )
    assert pooled == pytest.approx(0.5)


def test_no_detection_at_all_scores_zero_and_no_counted_face_is_an_error():
    assert card_ap(predictions([], []), card_truth([TALL_A])) == 0.0
    with pytest.raises(ValueError, match="ignored"):
        card_ap(predictions([SMALL], [0.9]), card_truth([SMALL]))


def test_predictions_must_be_best_first():
    with pytest.raises(ValueError, match="descending"):
        predictions([TALL_A, TALL_B], [0.5, 0.9])


# --------------------------------------------------------------------------------------------
# Official WIDER protocol
# --------------------------------------------------------------------------------------------


def wider_truth(boxes: list[list[float]], kept: list[bool]) -> metrics.WiderGroundTruth:
    array = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    mask = np.array(kept, dtype=bool)
    return metrics.WiderGroundTruth(array, {level: mask for level in metrics.WIDER_LEVELS})


def wider_ap(preds: list[metrics.ImagePredictions], truths: list[metrics.WiderGroundTruth]) -> float:
    return metrics.wider_average_precision(preds, truths, "hard")


def test_wider_perfect_detections_score_one():
    # Scores normalize to 1 and 0: at every threshold the detections taken are all hits.
    pred = predictions([TALL_A, TALL_B], [0.9, 0.8])
    assert wider_ap([pred], [wider_truth([TALL_A, TALL_B], [True, True])]) == 1.0


def test_wider_false_positive_first():
    # Normalized scores FP = 1, hit = 0. Thresholds 0.999 .. 0.001 take only the FP: precision 0
    # at recall 0. Threshold 0 takes both: precision 1/2 at recall 1 -> AP = 1/2.
    pred = predictions([NOWHERE, TALL_A], [0.9, 0.5])
    assert wider_ap([pred], [wider_truth([TALL_A], [True])]) == pytest.approx(0.5)


def test_wider_detection_of_an_ignored_face_is_not_a_proposal():
    # The best-scored detection hits a face outside the level's keep list: it is not counted
    # (precision 0/0 at recall 0, which adds no area); then the kept face at precision 1 -> 1.
    pred = predictions([SMALL, TALL_A], [0.9, 0.5])
    truth = wider_truth([TALL_A, SMALL], [True, False])
    recalled, is_proposal = metrics.wider_image_eval(pred.boxes, truth.boxes, truth.keep["hard"])
    assert recalled.tolist() == [0, 1] and is_proposal.tolist() == [False, True]
    assert wider_ap([pred], [truth]) == 1.0


def test_wider_counts_faces_of_images_without_detections():
    # Image 1: its face found (score 0.9 -> 1 after normalization); image 2: a kept face nobody
    # detected, and a stray box (0.1 -> 0). Thresholds above 0: precision 1 at recall 1/2;
    # threshold 0 adds the stray box: precision 1/2, still recall 1/2. AP = 1/2 * 1.
    truths = [wider_truth([TALL_A], [True]), wider_truth([TALL_B], [True])]
    preds = [predictions([TALL_A], [0.9]), predictions([NOWHERE], [0.1])]
    assert wider_ap(preds, truths) == pytest.approx(0.5)


def test_wider_iou_has_the_plus_one_boundary():
    # Face x, y, w, h = 0, 0, 10, 10 -> corners [0, 0, 10, 10]; detection [0, 0, 10, 4.5].
    # Plain IoU 45 / 100 = 0.45; with +1: 11 * 5.5 / (11 * 11) = exactly 0.5 -> a hit.
    face = np.array([[0.0, 0.0, 10.0, 10.0]])
    detection = np.array([[0.0, 0.0, 10.0, 4.5]])
    assert metrics.wider_iou(detection, face)[0, 0] == 0.5
    recalled, _ = metrics.wider_image_eval(detection, face, np.array([True]))
    assert recalled.tolist() == [1]


def test_wider_levels_use_their_own_keep_lists():
    # Two faces, only the first is in the easy list; the detector finds only the second.
    boxes = np.array([TALL_A, TALL_B])
    truth = metrics.WiderGroundTruth(
        boxes, {"easy": np.array([True, False]), "medium": np.array([True, True]), "hard": np.array([True, True])}
    )
    aps = metrics.wider_average_precisions([predictions([TALL_B, NOWHERE], [0.9, 0.1])], [truth])
    # easy: its only face is missed (the hit lands on a face easy ignores, the stray box is a
    # FP) -> recall 0 -> AP 0; medium/hard: 1 of 2 faces at precision 1 (above threshold 0,
    # where the stray box only lowers precision at the same recall) -> 1/2.
    assert aps == pytest.approx({"easy": 0.0, "medium": 0.5, "hard": 0.5})


def test_wider_submission_rounding_is_upstreams_file_format():
    boxes, scores = metrics.wider_submission_rounding(np.array([[1.2, 2.7, 5.1, 7.0]]), np.array([1.0004]))
    # floor(x1), floor(y1), ceil(w = 3.9), ceil(h = 4.3) -> x, y, w, h = 1, 2, 4, 5.
    assert boxes.tolist() == [[1.0, 2.0, 5.0, 7.0]]
    assert scores.tolist() == [1.0]
    _, scores = metrics.wider_submission_rounding(np.zeros((1, 4)), np.array([0.12345]))
    assert scores.tolist() == [0.123]


def test_wider_score_normalization_spans_the_dataset():
    # Over both images min 0.3, max 0.9: 0.6 -> 0.5.
    first, second = metrics.wider_normalized_scores(
        [predictions([TALL_A], [0.6]), predictions([TALL_A, TALL_B], [0.9, 0.3])]
    )
    np.testing.assert_allclose(first, [0.5])
    np.testing.assert_allclose(second, [1.0, 0.0])


def test_face_height_share_bins_keep_low_and_drop_high():
    # Image 200 px tall: a 20 px face is 10% of it, a 40 px face 20%.
    boxes = np.array([[0, 0, 10, 20.0], [0, 0, 10, 39.9], [0, 0, 10, 40.0], [0, 0, 0, 30.0]], dtype=np.float64)
    ignored = metrics.height_share_ignored_mask(boxes, 200.0, 0.1, 0.2)
    assert ignored.tolist() == [False, False, True, True]  # [10%, 20%): 20 and 39.9 px; empty box never counts
