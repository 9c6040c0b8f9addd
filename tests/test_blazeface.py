"""MediaPipe's BlazeFace baselines (tools/blazeface.py): the pinned model files, the anchors
and decode MediaPipe's graphs put around them, and whole frames on real faces.

The models come out of the pinned mediapipe wheel through pip (the package index), once, into
models/cache/blazeface."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.detect.preprocess import resize_bilinear
from edge.sources.imageio import load_image
from tools import blazeface
from tools.metrics import match_boxes

pytestmark = pytest.mark.integration


def test_anchor_layout_of_both_models():
    short = blazeface.anchors(blazeface.SHORT_RANGE)
    # 16x16 cells with 2 anchors (stride 8), then 8x8 cells with 3 layers x 2 anchors (stride 16).
    assert short.shape == (16 * 16 * 2 + 8 * 8 * 6, 2) == (896, 2)
    assert np.allclose(short[:2], [[1 / 32, 1 / 32]] * 2) and np.allclose(short[2], [3 / 32, 1 / 32])
    assert np.allclose(short[512:518], [[1 / 16, 1 / 16]] * 6) and np.allclose(short[518], [3 / 16, 1 / 16])
    full = blazeface.anchors(blazeface.FULL_RANGE)
    assert full.shape == (48 * 48, 2) and np.allclose(full[48], [1 / 96, 3 / 96])


def _outputs(model: blazeface.BlazeFaceModel, boxes: dict[int, tuple[list[float], float]]) -> tuple[np.ndarray, ...]:
    """Raw model outputs with the given anchors set: anchor -> ([dx, dy, w, h] in input pixels, logit)."""
    count = len(blazeface.anchors(model))
    regressors = np.zeros((1, count, 16), np.float32)
    classificators = np.full((1, count, 1), -10.0, np.float32)
    for anchor, (offsets, logit) in boxes.items():
        regressors[0, anchor, :4] = offsets
        classificators[0, anchor, 0] = logit
    return regressors, classificators


def test_decode_keeps_scores_over_the_threshold_and_merges_overlaps_by_weight():
    model = blazeface.SHORT_RANGE
    centres = blazeface.anchors(model)
    # Anchors 0 and 1 share a centre: two overlapping boxes (logits 2 and 1); anchor 300 far
    # away, under the 0.5 score (logit -0.1); a square frame, so no letterbox.
    regressors, classificators = _outputs(
        model, {0: ([0, 0, 16, 16], 2.0), 1: ([2, 0, 16, 16], 1.0), 300: ([0, 0, 16, 16], -0.1)}
    )
    faces = blazeface.decode(model, centres, regressors, classificators, 128, 128)
    assert len(faces.scores) == 1
    weights = 1 / (1 + np.exp([-2.0, -1.0]))
    assert faces.scores[0] == pytest.approx(weights[0])
    x_shift = (weights[1] * 2 / 128) / weights.sum()
    expected = [1 / 32 - 1 / 16 + x_shift, 1 / 32 - 1 / 16, 1 / 32 + 1 / 16 + x_shift, 1 / 32 + 1 / 16]
    assert faces.boxes[0] == pytest.approx(expected, abs=1e-6)


def test_decode_removes_the_letterbox():
    """A 128x96 frame fills rows 16-111 of the input: a box centred on the input is centred on
    the frame, and its height grows by 128/96."""
    model = blazeface.SHORT_RANGE
    centres = blazeface.anchors(model)
    centre = int(np.argmin(np.abs(centres - 0.5 - 1 / 32).sum(axis=1)))  # the cell right of and below the middle
    regressors, classificators = _outputs(model, {centre: ([-4, -4, 32, 24], 3.0)})
    (box,) = blazeface.decode(model, centres, regressors, classificators, 128, 96).boxes
    assert box[[0, 2]] == pytest.approx([0.375, 0.625], abs=1e-6)
    assert box[[1, 3]] == pytest.approx([(64 - 12 - 16) / 96, (64 + 12 - 16) / 96], abs=1e-6)
    assert np.isclose(centres[centre], [0.53125, 0.53125]).all()


def test_preprocess_letterboxes_black_and_scales_to_minus_one_one():
    model = blazeface.SHORT_RANGE
    frame = np.zeros((96, 128, 3), np.uint8)
    frame[0] = 255
    tensor = np.full((1, 128, 128, 3), 7.0, np.float32)
    blazeface.preprocess(model, frame, tensor)
    assert (tensor[0, :16] == -1).all() and (tensor[0, 112:] == -1).all()
    assert (tensor[0, 16] == 1).all() and (tensor[0, 17:112] == -1).all()


@pytest.fixture(scope="module")
def models() -> dict[str, Path]:
    return blazeface.fetch_models()


def test_fetched_models_are_the_pinned_files_and_a_damaged_one_is_fetched_again(models, tmp_path):
    import hashlib

    for model in blazeface.MODELS:
        assert hashlib.sha256(models[model.name].read_bytes()).hexdigest() == model.sha256
    copy = {m.name: tmp_path / m.file_name for m in blazeface.MODELS}
    for name, path in copy.items():
        path.write_bytes(models[name].read_bytes())
    damaged = copy[blazeface.SHORT_RANGE.name]
    damaged.write_bytes(damaged.read_bytes()[:-1])
    assert blazeface.fetch_models(tmp_path) == copy
    assert damaged.read_bytes() == models[blazeface.SHORT_RANGE.name].read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(m.file_name for m in blazeface.MODELS)  # wheel gone


def _run(model: blazeface.BlazeFaceModel, path: Path, photo: np.ndarray) -> blazeface.Faces:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    width, height = model.input_size, model.input_size * 3 // 4
    blazeface.preprocess(model, resize_bilinear(photo, width, height), interpreter.tensor(0)())
    interpreter.invoke()
    outputs = sorted(interpreter.get_output_details(), key=lambda d: -d["shape"][-1])
    regressors, classificators = (interpreter.get_tensor(d["index"]) for d in outputs)
    return blazeface.decode(model, blazeface.anchors(model), regressors, classificators, width, height)


def test_both_models_find_the_faces_edge_face_finds_on_a_real_photo(models, upstream_dir, detector):
    """Upstream's photo 13 (two people near the camera): each BlazeFace model finds the two
    faces edge-face finds, at the same places."""
    photo = load_image(upstream_dir / "images" / "13.jpg")
    ours = detector.detect(photo)
    assert len(ours) == 2
    for model in blazeface.MODELS:
        theirs = _run(model, models[model.name], photo)
        assert len(theirs) == 2, model.name
        assert len(match_boxes(ours.boxes, theirs.boxes, 0.5)) == 2, model.name


def test_no_face_on_a_blank_frame(models):
    blank = np.full((480, 640, 3), 128, np.uint8)
    for model in blazeface.MODELS:
        assert len(_run(model, models[model.name], blank)) == 0
