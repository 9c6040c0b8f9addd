"""`edge-face preview`: one frame of the configured camera (here a replay of a real photo) with
the masks, zones and detected faces drawn where the config and the real detector put them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_support import run_cli
from PIL import Image

from edge.config import load_config
from edge.daemon.loop import build_detector
from edge.exitcodes import ExitCode
from edge.mqtt.controls import Overrides, save_overrides
from edge.scene.rules import DROPPED_COLOUR, KEPT_COLOUR, MASK_COLOUR, ZONE_COLOURS, apply_scene
from edge.sources.imageio import load_image

pytestmark = pytest.mark.integration

PHOTO = "3.jpg"  # a hallway: a door on the left, a notice on the wall, five faces
MASK = [[0.66, 0.03], [0.87, 0.03], [0.87, 0.56], [0.66, 0.56]]  # the notice and the face under it
ZONE = [[0.02, 0.08], [0.37, 0.08], [0.37, 0.97], [0.02, 0.97]]  # the door


def write_config(folder: Path, camera_path: Path, model: Path, extra: str = "") -> Path:
    config = folder / "edge-face.toml"
    config.write_text(
        f"""
[device]
id = "hall"
[camera]
source = "replay"
path = {json.dumps(str(camera_path))}
[detector]
model = {json.dumps(str(model))}
[scene]
masks = [{json.dumps(MASK)}]
min_face_size = 20
[[scene.zones]]
name = "door"
polygon = {json.dumps(ZONE)}
{extra}
"""
    )
    return config


@pytest.fixture
def photo(upstream_dir) -> Path:
    return upstream_dir / "images" / PHOTO


def outline_share(picture: np.ndarray, polygon: list[list[float]], colour: tuple[int, int, int], reach: int) -> float:
    """Share of 40 points along each edge of ``polygon`` (fractions of the picture) that have a
    pixel of exactly ``colour`` within ``reach`` pixels (labels and face boxes cover some)."""
    height, width = picture.shape[:2]
    corners = np.array(polygon) * [width, height]
    hits = total = 0
    for start, end in zip(corners, np.roll(corners, -1, axis=0), strict=True):
        for t in np.linspace(0.05, 0.95, 40):
            x, y = (start + t * (end - start)).round().astype(int)
            patch = picture[max(0, y - reach) : y + reach + 1, max(0, x - reach) : x + reach + 1]
            hits += bool((patch == colour).all(axis=2).any())
            total += 1
    return hits / total


def box_edge_share(picture: np.ndarray, box: np.ndarray, colour: tuple[int, int, int], reach: int) -> float:
    """Share of the rows of a face box's left edge with a pixel of exactly ``colour`` near it."""
    x1, y1, _, y2 = box.round().astype(int)
    rows = picture[y1 + reach : y2 - reach, max(0, x1 - reach) : x1 + 2 * reach + 1]
    return float((rows == colour).all(axis=2).any(axis=1).mean())


def test_the_picture_shows_mask_zone_and_faces_where_config_and_detector_put_them(tmp_path, photo, int8_model_path):
    config_path = write_config(tmp_path, photo, int8_model_path)
    out = tmp_path / "preview.png"  # lossless: the drawn colours are exact

    result = run_cli("preview", "--config", str(config_path), str(out))

    assert result.returncode == ExitCode.OK, result.stderr
    picture = np.asarray(Image.open(out).convert("RGB"))
    frame = load_image(photo)
    assert picture.shape == frame.shape
    # What the detector and the scene rules say about the same frame, computed here.
    config = load_config(config_path)
    detections = build_detector(config).detect(frame)
    kept = apply_scene(detections, frame.shape[0], config.scene)
    assert len(detections) == 5 and len(kept.detections) == 4 and kept.zone_counts == {"door": 2}
    assert result.stdout.strip().endswith("5 face(s), 4 kept by the scene rules, zone door: 2")

    reach = max(2, round(min(frame.shape[:2]) / 200))  # the outline width draw_scene uses
    assert outline_share(picture, ZONE, ZONE_COLOURS[0], reach) >= 0.85
    assert outline_share(picture, MASK, MASK_COLOUR, reach) >= 0.85
    assert outline_share(frame, ZONE, ZONE_COLOURS[0], reach) == 0  # not in the photo itself
    assert outline_share(frame, MASK, MASK_COLOUR, reach) == 0
    kept_boxes = {tuple(box) for box in kept.detections.boxes.tolist()}
    height, width = frame.shape[:2]
    for box, pixel_box in zip(detections.boxes.tolist(), detections.pixel_boxes(width, height), strict=True):
        colour = KEPT_COLOUR if tuple(box) in kept_boxes else DROPPED_COLOUR
        assert box_edge_share(picture, pixel_box, colour, reach) >= 0.9, (box, colour)
        assert box_edge_share(frame, pixel_box, colour, reach) < 0.1
        # An outline, not a filled box: the face inside shows through.
        x1, y1, x2, y2 = (pixel_box.round().astype(int) + np.array([2, 2, -2, -2]) * reach).tolist()
        assert (picture[y1:y2, x1:x2] == colour).all(axis=2).mean() < 0.01


def test_a_jpeg_replaces_the_old_picture_whole(tmp_path, photo, int8_model_path):
    config_path = write_config(tmp_path, photo, int8_model_path)
    out = tmp_path / "preview.jpg"
    out.write_bytes(b"an older preview")

    result = run_cli("preview", "--config", str(config_path), str(out))

    assert result.returncode == ExitCode.OK, result.stderr
    with Image.open(out) as picture:
        assert picture.format == "JPEG" and picture.size == (1024, 768)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edge-face.toml", "preview.jpg"]  # no temp file left


def _refused(result, code: int, *words: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if not line.startswith("INFO: ")]  # the interpreter's banner
    assert len(lines) == 1 and lines[0].startswith("edge-face: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize(
    ("out_name", "code", "words"),
    [
        ("preview.gif", ExitCode.CONFIG, ("preview.gif", ".jpg")),
        ("missing-folder/preview.jpg", ExitCode.CONFIG, ("missing-folder", "does not exist")),
        ("folder.jpg", ExitCode.CONFIG, ("folder.jpg", "is a folder")),
    ],
)
def test_a_bad_output_is_refused_before_the_camera_opens(tmp_path, photo, int8_model_path, out_name, code, words):
    config_path = write_config(tmp_path, photo, int8_model_path)
    (tmp_path / "folder.jpg").mkdir()
    before = sorted(tmp_path.rglob("*"))
    _refused(run_cli("preview", "--config", str(config_path), str(tmp_path / out_name)), code, *words)
    assert sorted(tmp_path.rglob("*")) == before


def test_config_model_and_camera_errors_have_their_exit_codes(tmp_path, photo, int8_model_path):
    out = tmp_path / "preview.jpg"
    _refused(run_cli("preview", "--config", str(tmp_path / "absent.toml"), str(out)), ExitCode.CONFIG, "absent.toml")

    not_a_model = tmp_path / "model.tflite"
    not_a_model.write_bytes(b"not a model")
    config_path = write_config(tmp_path, photo, not_a_model)
    _refused(run_cli("preview", "--config", str(config_path), str(out)), ExitCode.MODEL, "model.tflite")

    empty = tmp_path / "camera"
    empty.mkdir()
    config_path = write_config(tmp_path, empty, int8_model_path)
    _refused(run_cli("preview", "--config", str(config_path), str(out)), ExitCode.SOURCE, "camera", "no images")
    assert not out.exists()


def test_no_frame_is_read_while_detection_is_switched_off_from_home_assistant(tmp_path, photo, int8_model_path):
    state_dir = tmp_path / "state"
    config_path = write_config(tmp_path, photo, int8_model_path, '[mqtt]\nhost = "127.0.0.1"\n')
    config_path.write_text(
        config_path.read_text().replace('id = "hall"', f'id = "hall"\nstate_dir = {json.dumps(str(state_dir))}')
    )
    out = tmp_path / "preview.jpg"
    save_overrides(state_dir, Overrides(detection=False))

    _refused(run_cli("preview", "--config", str(config_path), str(out)), ExitCode.FAILURE, "switched off")
    assert not out.exists()

    save_overrides(state_dir, Overrides(detection=True))  # switched on again: the camera is looked at
    result = run_cli("preview", "--config", str(config_path), str(out))
    assert result.returncode == ExitCode.OK, result.stderr
    assert out.is_file()
