"""FaceDetector and `edge-face detect` on the real int8 model and real photos.

Runs under both interpreter packages: `make test` runs this file a second time in
.venv-tflite with EDGE_FACE_INTERPRETER=tflite_runtime (numpy<2). Comparisons against the
float model need onnxruntime and are skipped where it is not installed (that environment).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_support import run_cli

from edge.detect.decode import Detections, PostprocessOptions, select_faces
from edge.detect.model import Int8Model, ModelError, load_interpreter_class
from edge.detect.preprocess import normalize_nchw, resize_bilinear
from edge.detect.sidecar import canonical_digest
from edge.sources.imageio import ImageError, load_image
from tools.metrics import match_boxes

pytestmark = pytest.mark.integration

INTERPRETER = os.environ.get("EDGE_FACE_INTERPRETER") or None


def test_interpreter_reported_and_pinnable(detector):
    assert detector.interpreter_name in ("ai_edge_litert", "tflite_runtime", "tensorflow")
    if INTERPRETER:
        assert detector.interpreter_name == INTERPRETER
    with pytest.raises(ModelError, match="'no_such_runtime' is unknown"):
        load_interpreter_class("no_such_runtime")


def test_finds_the_faces_the_float_model_finds_on_real_photos(detector, upstream_dir, photo_paths):
    """int8 vs the upstream float ONNX (the reference), same pre-processing and NMS rules:
    >= 97% of the float model's faces found (IoU >= 0.5), <= 3% extra."""
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        str(upstream_dir / "models" / "version-slim-320.onnx"), options, providers=["CPUExecutionProvider"]
    )
    float_faces = int8_faces = matched = 0
    for path in photo_paths:
        rgb = load_image(path)
        height, width = rgb.shape[:2]
        scores, boxes = session.run(None, {"input": normalize_nchw(resize_bilinear(rgb, 320, 240))})
        reference = select_faces(boxes[0], scores[0][:, 1], PostprocessOptions()).pixel_boxes(width, height)
        ours = detector.detect(rgb).pixel_boxes(width, height)
        float_faces += len(reference)
        int8_faces += len(ours)
        matched += len(match_boxes(reference, ours, min_iou=0.5))
    assert float_faces > 100  # the photos are crowds and groups: a real test, not a handful
    assert matched / float_faces >= 0.97
    assert (int8_faces - matched) / float_faces <= 0.03


def test_color_order_and_channel_layouts(detector, photo_paths):
    rgb = load_image(photo_paths[1])
    from_rgb = detector.detect(rgb)
    assert len(from_rgb) > 0
    from_bgr = detector.detect(np.ascontiguousarray(rgb[..., ::-1]), color_order="BGR")
    np.testing.assert_array_equal(from_rgb.boxes, from_bgr.boxes)
    rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(detector.detect(rgba).boxes, from_rgb.boxes)
    gray = rgb.mean(axis=2).astype(np.uint8)
    assert isinstance(detector.detect(gray), Detections)
    with pytest.raises(ValueError, match="color_order"):
        detector.detect(rgb, color_order="RGBX")


def test_timed_detection_reports_each_stage_and_finds_the_same_faces(detector, photo_paths):
    frame = load_image(photo_paths[2])
    result = detector.detect_timed(frame)
    plain = detector.detect(frame)
    np.testing.assert_array_equal(result.detections.boxes, plain.boxes)
    np.testing.assert_array_equal(result.detections.scores, plain.scores)
    times = result.times
    assert min(times.preprocess_s, times.invoke_s, times.decode_s) > 0
    assert times.total_s == pytest.approx(times.preprocess_s + times.invoke_s + times.decode_s)
    # The interpreter dominates a frame; decode touches only the few candidate anchors.
    assert times.invoke_s > times.decode_s


def test_post_processing_options_reach_the_detector(int8_model_path, photo_paths):
    from edge.detect.detector import DetectorOptions, FaceDetector

    frame = load_image(photo_paths[2])
    everyone = FaceDetector(int8_model_path, DetectorOptions(interpreter=INTERPRETER)).detect(frame)
    assert len(everyone) > 3
    best_only = FaceDetector(int8_model_path, DetectorOptions(candidate_size=1, interpreter=INTERPRETER))
    found = best_only.detect(frame)
    np.testing.assert_array_equal(found.boxes, everyone.boxes[:1])
    top_two = FaceDetector(int8_model_path, DetectorOptions(top_k=2, interpreter=INTERPRETER)).detect(frame)
    np.testing.assert_array_equal(top_two.boxes, everyone.boxes[:2])
    # A threshold at the third face's score keeps the two above it (the rule is "strictly above").
    strict = DetectorOptions(score_threshold=float(everyone.scores[2]), interpreter=INTERPRETER)
    np.testing.assert_array_equal(FaceDetector(int8_model_path, strict).detect(frame).boxes, everyone.boxes[:2])
    with pytest.raises(ValueError, match="candidate_size"):
        DetectorOptions(candidate_size=0)
    with pytest.raises(ValueError, match="score_threshold"):
        DetectorOptions(score_threshold=1.0)


def test_no_faces_in_a_blank_frame(detector):
    assert len(detector.detect(np.full((240, 320, 3), 128, np.uint8))) == 0


def test_boxes_are_normalized_to_the_frame_whatever_its_size(detector, photo_paths):
    rgb = load_image(photo_paths[4])
    small = resize_bilinear(rgb, 320, 240)
    np.testing.assert_allclose(detector.detect(rgb).boxes, detector.detect(small).boxes, atol=0.02)


# ---------------------------------------------------------------- bad models


def _sealed(sidecar: dict) -> dict:
    """A sidecar re-sealed after a change (tests/test_sidecar.py covers unsealed edits)."""
    return {**sidecar, "sidecar_sha256": canonical_digest(sidecar)}


def _copy_model(src: Path, dst_dir: Path) -> Path:
    dst = dst_dir / src.name
    shutil.copy(src, dst)
    shutil.copy(src.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def test_missing_model_and_missing_sidecar(int8_model_path, tmp_path):
    with pytest.raises(ModelError, match=r"model '.*nope\.tflite': no such file"):
        Int8Model(tmp_path / "nope.tflite")
    lone = tmp_path / "lone.tflite"
    shutil.copy(int8_model_path, lone)
    with pytest.raises(ModelError, match=r"sidecar '.*lone\.json' is missing"):
        Int8Model(lone)


def test_truncated_model_fails_its_checksum(int8_model_path, tmp_path):
    model = _copy_model(int8_model_path, tmp_path)
    model.write_bytes(model.read_bytes()[:1000])
    with pytest.raises(ModelError, match=r"sha256 .* does not match its sidecar"):
        Int8Model(model)


def test_corrupt_model_with_consistent_sidecar_is_refused(int8_model_path, tmp_path):
    model = _copy_model(int8_model_path, tmp_path)
    garbage = b"\x00not a flatbuffer" * 64
    model.write_bytes(garbage)
    sidecar = json.loads(model.with_suffix(".json").read_text())
    sidecar["tflite_sha256"] = hashlib.sha256(garbage).hexdigest()
    model.with_suffix(".json").write_text(json.dumps(_sealed(sidecar)))
    with pytest.raises(ModelError, match="not a loadable TFLite model"):
        Int8Model(model, interpreter=INTERPRETER)


def test_float_model_with_wrong_io_is_refused(int8_model_path, upstream_dir, tmp_path):
    # Upstream's float TFLite dressed up with our sidecar: the input check must catch it.
    model = tmp_path / "float.tflite"
    shutil.copy(upstream_dir / "models" / "version-slim-320_without_postprocessing.tflite", model)
    sidecar = json.loads(int8_model_path.with_suffix(".json").read_text())
    sidecar["tflite_sha256"] = hashlib.sha256(model.read_bytes()).hexdigest()
    model.with_suffix(".json").write_text(json.dumps(_sealed(sidecar)))
    with pytest.raises(ModelError, match=r"input .*dtype float32 \(expected int8\)"):
        Int8Model(model, interpreter=INTERPRETER)


def test_unreadable_images_raise_one_line_errors(tmp_path):
    with pytest.raises(ImageError, match=r"image '.*missing\.jpg': no such file"):
        load_image(tmp_path / "missing.jpg")
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    with pytest.raises(ImageError, match=r"image '.*notes\.jpg': not a readable image"):
        load_image(text)


# ---------------------------------------------------------------- CLI


def test_cli_json_reports_every_good_image_and_names_the_bad_one(int8_model_path, photo_paths, tmp_path):
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(photo_paths[2].read_bytes()[:5000])
    images = [str(photo_paths[1]), str(truncated), str(photo_paths[2])]
    done = run_cli("detect", "--json", "--model", str(int8_model_path), *images, cwd=tmp_path, timeout=120)
    assert done.returncode == 1
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["image"] for line in lines] == [images[0], images[2]]
    for line, path in zip(lines, (photo_paths[1], photo_paths[2]), strict=True):
        height, width = load_image(path).shape[:2]
        assert (line["width"], line["height"]) == (width, height)
        assert line["faces"], "group photos must have faces"
        for face in line["faces"]:
            x1, y1, x2, y2 = face["box"]
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
            assert 0.7 < face["score"] <= 1.0
    errors = [line for line in done.stderr.splitlines() if line.startswith("edge-face:")]
    assert len(errors) == 1 and "truncated.jpg" in errors[0]


def test_cli_detect_tells_its_model_and_interpreter_and_nothing_of_the_runtimes_own(
    int8_model_path, photo_paths, tmp_path
):
    done = run_cli("detect", "--model", str(int8_model_path), str(photo_paths[2]), cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    # Not the runtime's "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.".
    [line] = done.stderr.splitlines()
    assert line.startswith("model ") and line.endswith((" on ai_edge_litert", " on tflite_runtime", " on tensorflow"))


def test_cli_annotates_and_summarises(int8_model_path, photo_paths, tmp_path):
    out = tmp_path / "annotated"
    done = run_cli(
        "detect",
        "--model",
        str(int8_model_path),
        "--annotate",
        str(out),
        str(photo_paths[2]),
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{photo_paths[2]}: ")
    written = out / (photo_paths[2].stem + ".jpg")
    annotated, original = load_image(written), load_image(photo_paths[2])
    assert annotated.shape == original.shape
    assert not np.array_equal(annotated, original)  # boxes were drawn
    assert [p.name for p in out.iterdir()] == [written.name]  # no temp files left


def test_cli_model_errors_exit_4_with_one_line(photo_paths, tmp_path):
    done = run_cli("detect", "--model", str(tmp_path / "absent.tflite"), str(photo_paths[0]), cwd=tmp_path, timeout=120)
    assert done.returncode == 4
    assert done.stderr.strip().count("\n") == 0 and "absent.tflite" in done.stderr
    bad = run_cli("detect", "--score-threshold", "1.5", str(photo_paths[0]), cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and "1.5" in bad.stderr


def test_the_readme_example_runs_as_written(project_root, photo_paths, tmp_path, monkeypatch, capsys):
    """The "Use the detector" snippet of README.md, run on a real photo: an embedding
    example that no longer matches the API is the first thing a developer meets."""
    from edge.detect.detector import DetectorOptions, FaceDetector
    from edge.models import PACKAGED_MODEL_PATH

    readme = (project_root / "README.md").read_text()
    section = readme[readme.index("## Use the detector") :]
    start = section.index("```python\n") + len("```python\n")
    snippet = section[start : section.index("\n```", start)]
    assert '"photo.jpg"' in snippet
    shutil.copy(photo_paths[2], tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()

    expected = FaceDetector(PACKAGED_MODEL_PATH, DetectorOptions(interpreter=INTERPRETER)).detect(
        load_image(photo_paths[2])
    )
    assert len(printed) == len(expected) > 3
    assert [line.split()[0] for line in printed] == [f"{score:.2f}" for score in expected.scores]


# --- the input-size profiles --------------------------------------------------------------------


def _face_in_frame(chip_path: Path, frame_size: tuple[int, int], face_height: int) -> np.ndarray:
    """A (H, W, 3) uint8 frame of the given (width, height), mid-gray, with the face chip scaled
    to ``face_height`` rows pasted at its centre."""
    width, height = frame_size
    frame = np.full((height, width, 3), 128, np.uint8)
    chip = resize_bilinear(load_image(chip_path), face_height, face_height)
    top, left = (height - face_height) // 2, (width - face_height) // 2
    frame[top : top + face_height, left : left + face_height] = chip
    return frame


def test_each_packaged_profile_runs_at_its_own_size_with_its_own_priors():
    from edge.detect.detector import DetectorOptions, FaceDetector
    from edge.detect.priors import PriorConfig, generate_priors
    from edge.models import PACKAGED_MODELS, packaged_model_path

    for profile, name in PACKAGED_MODELS.items():
        width, height = (int(v) for v in profile.split("x"))
        detector = FaceDetector(packaged_model_path(name), DetectorOptions(interpreter=INTERPRETER))
        assert detector.input_size == (width, height)
        assert np.array_equal(detector.priors, generate_priors(PriorConfig(width, height)))
    assert PriorConfig(160, 120).num_priors == 1118
    # 256x192 is whole at every stride (8 to 64), so its cells sit on the pixel grid the
    # network's strided convolutions see: no level rounded up as 240 / 32 is.
    middle = PriorConfig(256, 192)
    assert middle.feature_map_sizes == tuple((256 // s, 192 // s) for s in middle.strides)
    assert middle.num_priors == 32 * 24 * 3 + 16 * 12 * 2 + 8 * 6 * 2 + 4 * 3 * 3 == 2820


def test_the_smaller_profiles_find_a_large_face_where_the_default_does(project_root):
    """A face a third of the frame tall (a door, a desk): every profile finds it, same box."""
    from edge.detect.detector import DetectorOptions, FaceDetector
    from edge.models import PACKAGED_MODELS, packaged_model_path

    chips_dir = Path(os.environ.get("EDGE_FACE_FACES_IDENTITY") or project_root.parent / "shared" / "faces-identity")
    chips = sorted((chips_dir / "johns").glob("*/*.jpg"))[::11]
    assert len(chips) == 5
    found = {}
    for profile, name in PACKAGED_MODELS.items():
        detector = FaceDetector(packaged_model_path(name), DetectorOptions(interpreter=INTERPRETER))
        found[profile] = [detector.detect(_face_in_frame(chip, (640, 480), 160)) for chip in chips]
    assert set(found) == {"160x120", "256x192", "320x240"}
    for profile in ("160x120", "256x192"):
        for small, default in zip(found[profile], found["320x240"], strict=True):
            assert len(small) == len(default) == 1, profile
            assert match_boxes(default.boxes, small.boxes, 0.7), profile
