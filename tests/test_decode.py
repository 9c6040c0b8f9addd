"""Priors, decoding and NMS: the upstream contract, hand-checkable cases, and the int8 fast path
being identical to upstream-style post-processing."""

from __future__ import annotations

import numpy as np
import pytest

from edge.detect.decode import (
    Detections,
    Int8Postprocessor,
    PostprocessOptions,
    QuantParams,
    decode_boxes,
    face_scores,
    hard_nms,
    select_faces,
)
from edge.detect.preprocess import normalize_nchw, resize_bilinear
from edge.detect.priors import PriorConfig, generate_priors
from edge.sources.imageio import load_image
from tools.upstream_postprocess import upstream_postprocess

pytestmark = pytest.mark.integration

# ---------------------------------------------------------------- priors


def test_prior_counts_follow_the_feature_maps():
    # 40x30x3 + 20x15x2 + 10x8x2 + 5x4x3 and the same at twice the resolution.
    assert generate_priors(PriorConfig()).shape == (4420, 4)
    assert generate_priors(PriorConfig(640, 480)).shape == (17640, 4)
    assert PriorConfig(640, 480).num_priors == 17640


def test_prior_layout_is_level_row_major_sizes_innermost():
    priors = generate_priors(PriorConfig())
    # First cell of stride 8: centre (0.5/40, 0.5/30), sizes 10, 16, 24 px.
    np.testing.assert_allclose(priors[0], [0.5 / 40, 0.5 / 30, 10 / 320, 10 / 240], rtol=1e-6)
    np.testing.assert_allclose(priors[2, 2:], [24 / 320, 24 / 240], rtol=1e-6)
    # Next cell moves along x first.
    np.testing.assert_allclose(priors[3, :2], [1.5 / 40, 0.5 / 30], rtol=1e-6)
    # Level 2 (stride 16) starts after 3600 priors.
    np.testing.assert_allclose(priors[3600], [0.5 / 20, 0.5 / 15, 32 / 320, 32 / 240], rtol=1e-6)
    # Level 3 has ceil(240 / 32) = 8 rows spread over the image (centres at (j + 0.5) / 8).
    np.testing.assert_allclose(priors[4200, 1], 0.5 / 8, rtol=1e-6)
    # Largest prior of the last cell is clipped to the image: 256 px tall > 240.
    np.testing.assert_allclose(priors[-1], [4.5 / 5, 3.5 / 4, 256 / 320, 1.0], rtol=1e-6)


def test_prior_config_rejects_impossible_layouts():
    with pytest.raises(ValueError, match="one min-box list per stride"):
        PriorConfig(strides=(8, 16))
    with pytest.raises(ValueError, match="strides must be positive"):
        PriorConfig(strides=(8, 0, 32, 64))
    with pytest.raises(ValueError, match="min box sizes must be positive"):
        PriorConfig(min_boxes=((10, 16, 24), (32, -48), (64, 96), (128, 192, 256)))
    with pytest.raises(ValueError, match="center_variance must be finite and > 0"):
        PriorConfig(center_variance=float("nan"))
    with pytest.raises(ValueError, match="size_variance must be finite and > 0"):
        PriorConfig(size_variance=0.0)


# ---------------------------------------------------------------- upstream contract


@pytest.fixture(scope="module")
def onnx_heads(upstream_dir, photo_paths):
    """For 4 real photos: the float raw heads (logits before softmax, raw regressions) and
    the upstream ONNX graph's own decoded outputs (scores, boxes)."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    raw_model = onnx.load(str(upstream_dir / "models" / "version-slim-320_without_postprocessing.onnx"))
    # The concat feeding the final Softmax holds the logits; expose it as an extra output.
    softmax = next(node for node in raw_model.graph.node if node.op_type == "Softmax")
    raw_model.graph.output.append(onnx.helper.make_tensor_value_info(softmax.input[0], onnx.TensorProto.FLOAT, None))
    raw = ort.InferenceSession(raw_model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    full = ort.InferenceSession(
        str(upstream_dir / "models" / "version-slim-320.onnx"), options, providers=["CPUExecutionProvider"]
    )
    heads = []
    for path in photo_paths[:4]:
        x = normalize_nchw(resize_bilinear(load_image(path), 320, 240))
        _, regressions, logits = raw.run(None, {"input": x})
        scores, boxes = full.run(None, {"input": x})
        heads.append((logits[0], regressions[0], scores[0], boxes[0]))
    return heads


def test_decoder_reproduces_upstream_onnx_boxes_and_scores(onnx_heads):
    priors = generate_priors(PriorConfig())
    for logits, regressions, onnx_scores, onnx_boxes in onnx_heads:
        assert onnx_boxes.shape == (4420, 4)
        boxes = decode_boxes(regressions, priors, 0.1, 0.2)
        assert np.abs(boxes - onnx_boxes).max() <= 1e-5
        scores = face_scores(logits)
        assert np.abs(scores - onnx_scores[:, 1]).max() <= 1e-5
        assert np.abs((1.0 - scores) - onnx_scores[:, 0]).max() <= 1e-5


# ---------------------------------------------------------------- NMS by hand


def _boxes(*rows):
    return np.array(rows, dtype=np.float32)


def test_nms_drops_the_weaker_of_two_overlapping_boxes_and_keeps_disjoint_ones():
    boxes = _boxes([0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30])
    scores = np.array([0.8, 0.9, 0.75], np.float32)
    # IoU(0, 1) = 90 / 110 = 0.82 > 0.3: box 0 goes; box 2 does not touch box 1.
    assert hard_nms(boxes, scores, 0.3).tolist() == [1, 2]


def test_nms_keeps_overlap_exactly_at_the_threshold():
    # Two 10x10 boxes overlapping by 5x10: IoU = 50 / 150 = 1/3 (+ the 1e-5 epsilon).
    boxes = _boxes([0, 0, 10, 10], [5, 0, 15, 10])
    scores = np.array([0.9, 0.8], np.float32)
    assert hard_nms(boxes, scores, 0.34).tolist() == [0, 1]
    assert hard_nms(boxes, scores, 0.33).tolist() == [0]


def test_nms_top_k_and_candidate_size():
    boxes = _boxes(*[[i * 20, 0, i * 20 + 10, 10] for i in range(5)])
    scores = np.array([0.1, 0.5, 0.3, 0.9, 0.7], np.float32)
    assert hard_nms(boxes, scores, 0.3, top_k=2).tolist() == [3, 4]
    assert hard_nms(boxes, scores, 0.3, candidate_size=3).tolist() == [3, 4, 1]


def test_nms_breaks_score_ties_highest_index_first_like_upstream():
    boxes = _boxes([0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10])
    scores = np.full(3, 0.9, np.float32)
    assert hard_nms(boxes, scores, 0.3).tolist() == [2]


def test_select_faces_threshold_is_strict_and_results_are_best_first():
    boxes = _boxes([0, 0, 0.1, 0.1], [0.5, 0.5, 0.6, 0.6], [0.2, 0.2, 0.3, 0.3])
    scores = np.array([0.7, 0.71, 0.95], np.float32)
    found = select_faces(boxes, scores, PostprocessOptions(score_threshold=0.7, iou_threshold=0.3))
    assert found.scores.tolist() == pytest.approx([0.95, 0.71])
    np.testing.assert_array_equal(found.boxes, boxes[[2, 1]])
    assert len(select_faces(boxes, scores, PostprocessOptions(0.99, 0.3))) == 0


def test_detections_pixel_boxes_scale_and_clip():
    found = Detections(_boxes([-0.1, 0.25, 0.5, 1.2]), np.array([0.9], np.float32))
    np.testing.assert_allclose(found.pixel_boxes(640, 480), [[0, 120, 320, 480]])
    with pytest.raises(ValueError, match="scores"):
        Detections(_boxes([0, 0, 1, 1]), np.zeros(2, np.float32))


# ---------------------------------------------------------------- int8 fast path


def test_int8_score_table_covers_every_logit_pair_exactly():
    # All 65536 (background, face) pairs, scored the slow way, against the per-model table.
    fast, _ = _postprocessors(threshold=0.7)
    q = np.arange(-128, 128, dtype=np.int8)
    pairs = np.stack(np.meshgrid(q, q, indexing="ij"), axis=-1).reshape(-1, 2)
    slow = face_scores(fast.logits_quant.dequantize(pairs))
    codes = pairs.view("<u2").reshape(-1)
    np.testing.assert_array_equal(fast._pair_scores[codes], slow)
    np.testing.assert_array_equal(fast._pair_passes[codes], slow > 0.7)


def _postprocessors(threshold=0.7, iou=0.3):
    config = PriorConfig()
    logits_q, regressions_q = QuantParams(0.0717, 4), QuantParams(0.0339, -7)
    options = PostprocessOptions(threshold, iou)
    fast = Int8Postprocessor(config, logits_q, regressions_q, options)
    priors = generate_priors(config)

    def upstream(logits, regressions):
        return upstream_postprocess(logits, regressions, priors, config, logits_q, regressions_q, options)

    return fast, upstream


def test_int8_fast_path_is_identical_to_upstream_style_on_random_heads():
    # Random heads give hundreds of candidates with many exact score ties: the hard case.
    rng = np.random.default_rng(7)
    for threshold, iou in ((0.7, 0.3), (0.5, 0.5), (0.9, 0.1)):
        fast, upstream = _postprocessors(threshold, iou)
        for _ in range(20):
            logits = rng.integers(-128, 128, size=(4420, 2), dtype=np.int8)
            regressions = rng.integers(-128, 128, size=(4420, 4), dtype=np.int8)
            ours, theirs = fast(logits, regressions), upstream(logits, regressions)
            assert len(ours) > 0
            np.testing.assert_array_equal(ours.boxes, theirs.boxes)
            np.testing.assert_array_equal(ours.scores, theirs.scores)


def test_int8_fast_path_returns_empty_when_no_anchor_passes():
    fast, upstream = _postprocessors()
    logits = np.zeros((4420, 2), np.int8)
    logits[:, 0] = 100  # background wins everywhere
    regressions = np.zeros((4420, 4), np.int8)
    assert len(fast(logits, regressions)) == 0
    assert len(upstream(logits, regressions)) == 0
