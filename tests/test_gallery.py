"""The gallery (edge.recognize.gallery) and `edge-face enroll` / `edge-face people`: descriptors
only, written whole with mode 0600, a broken or foreign gallery refused with one line, and
enrolling from real photos of faces-identity/johns (each chip placed into a larger frame)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest
from cli_support import run_cli
from PIL import Image

from edge.recognize.gallery import (
    GALLERY_FORMAT,
    Gallery,
    GalleryError,
    check_name,
    encode_gallery,
    load_gallery,
    save_gallery,
)

pytestmark = pytest.mark.unit

MODEL = "dlib-resnet-v1-float16"


def _gallery(people: dict[str, int], seed: int = 0) -> Gallery:
    rng = np.random.default_rng(seed)
    gallery = Gallery(MODEL, 128)
    for name, count in people.items():
        gallery.add(name, rng.normal(size=(count, 128)))
    return gallery


def test_round_trip_keeps_every_descriptor_bit_for_bit(tmp_path):
    gallery = _gallery({"Ada": 3, "Émile Zola": 1})
    path = tmp_path / "state" / "gallery.json"
    save_gallery(path, gallery)
    loaded = load_gallery(path, MODEL, 128)
    assert sorted(loaded.people) == ["Ada", "Émile Zola"]
    for name, values in gallery.people.items():
        np.testing.assert_array_equal(loaded.people[name], values)
        np.testing.assert_allclose(np.linalg.norm(values, axis=1), 1, rtol=1e-6)
    assert encode_gallery(loaded) == path.read_bytes()


def test_gallery_file_is_0600_and_written_whole(tmp_path):
    path = tmp_path / "gallery.json"
    path.write_text("old")
    path.chmod(0o644)
    save_gallery(path, _gallery({"Ada": 1}))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["gallery.json"]  # no temp file left


def test_a_missing_gallery_is_empty(tmp_path):
    assert load_gallery(tmp_path / "none.json", MODEL, 128).people == {}


def _write(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return path


def _valid() -> dict:
    return json.loads(encode_gallery(_gallery({"Ada": 2})))


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ('{"format": "edge-face-gallery/1", "people": {', "unreadable JSON"),
        ("[1, 2]", "must be a JSON object"),
        ({**_valid(), "format": "other/1"}, f"format is \"other/1\", expected '{GALLERY_FORMAT}'"),
        ({**_valid(), "model_id": "another-net"}, r'made with descriptor model "another-net" \(128 numbers\)'),
        ({**_valid(), "people": []}, "people must be a JSON object"),
        ({**_valid(), "people": {"Ada": []}}, "people.Ada must be a non-empty list"),
        ({**_valid(), "people": {"Ada": [[0.1] * 127]}}, r"people.Ada\[0\] must be a list of 128 numbers"),
        ({**_valid(), "people": {"Ada": [[True] * 128]}}, "not a finite number"),
        ({**_valid(), "people": {"Ada": [[0.5] * 128]}}, "not unit length"),
        ({**_valid(), "people": {"\n": _valid()["people"]["Ada"]}}, "is not a valid name"),
    ],
)
def test_a_broken_gallery_is_one_line_naming_the_file(tmp_path, document, problem):
    path = _write(tmp_path / "gallery.json", document)
    with pytest.raises(GalleryError, match=rf"^gallery '{path}': .*{problem}") as error:
        load_gallery(path, MODEL, 128)
    assert "\n" not in str(error.value)


def test_nan_in_a_gallery_is_refused(tmp_path):
    text = encode_gallery(_gallery({"Ada": 1})).decode().replace("[[", "[[NaN, ", 1)
    path = _write(tmp_path / "gallery.json", text)
    with pytest.raises(GalleryError, match=r"unreadable JSON .*NaN is not valid JSON"):
        load_gallery(path, MODEL, 128)


@pytest.mark.parametrize("name", ["", " Ada", "Ada ", "-x", "a/b", "a\nb", "x" * 65, "_x"])
def test_names_are_checked(name):
    with pytest.raises(GalleryError, match="is not allowed"):
        check_name(name)


def test_closest_ranks_people_by_their_nearest_descriptor():
    gallery = _gallery({"Ada": 3, "Bob": 2}, seed=4)
    query = gallery.people["Bob"][1] * 3.0
    ranked = gallery.closest(query)
    assert [name for name, _ in ranked] == ["Bob", "Ada"] and ranked[0][1] == pytest.approx(0, abs=1e-6)
    gallery.remove("Bob")
    with pytest.raises(GalleryError, match="'Bob' is not in the gallery \\(known: Ada\\)"):
        gallery.remove("Bob")


# --- the commands, on real photos -------------------------------------------------------------


def _frame_file(chip_path: Path, out: Path) -> Path:
    """The chip (its face about 100 px) in a grey 640x480 frame, saved as PNG."""
    frame = Image.new("RGB", (640, 480), (96, 104, 112))
    frame.paste(Image.open(chip_path).convert("RGB"), (250, 160))
    frame.save(out)
    return out


@pytest.mark.integration
def test_enroll_then_people_then_a_match(tmp_path, identity_dir):
    from edge.imageio import load_image
    from edge.recognize.describe import FaceDescriber
    from edge.recognize.gallery import load_gallery

    folders = sorted((identity_dir / "johns").iterdir())
    gallery_path = tmp_path / "state" / "gallery.json"
    for folder in folders[:2]:
        photos = [_frame_file(p, tmp_path / f"{folder.name}-{p.stem}.png") for p in sorted(folder.glob("*.jpg"))[:3]]
        result = run_cli("enroll", "--gallery", str(gallery_path), folder.name, *map(str, photos))
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"{folder.name}: 3 added, 3 in all")
    assert stat.S_IMODE(gallery_path.stat().st_mode) == 0o600
    listed = run_cli("people", "--gallery", str(gallery_path), "--json")
    assert json.loads(listed.stdout) == {folders[0].name: 3, folders[1].name: 3}

    describer = FaceDescriber()
    gallery = load_gallery(gallery_path, describer.model_id, describer.dimensions)
    for folder in folders[:2]:
        unseen = load_image(_frame_file(sorted(folder.glob("*.jpg"))[-1], tmp_path / "unseen.png"))
        described = describer.describe(unseen, (250 + 25, 160 + 25, 250 + 125, 160 + 125))
        name, distance = gallery.closest(described.descriptor)[0]
        assert name == folder.name and distance < describer.match_threshold

    removed = run_cli("people", "--gallery", str(gallery_path), "--remove", folders[0].name)
    assert removed.returncode == 0 and removed.stdout.strip() == f"{folders[1].name}: 3 descriptors"


@pytest.mark.integration
def test_enroll_writes_nothing_when_a_photo_has_no_face(tmp_path, identity_dir, blank):
    gallery_path = tmp_path / "gallery.json"
    chip = sorted((identity_dir / "johns").glob("*/*.jpg"))[0]
    result = run_cli(
        "enroll", "--gallery", str(gallery_path), "Ada", str(_frame_file(chip, tmp_path / "a.png")), str(blank)
    )
    assert result.returncode == 1
    assert f"{blank}: 0 faces found, enrolling needs exactly one" in result.stderr
    assert "Ada: nothing enrolled (1 of 2 photos unusable)" in result.stderr
    assert not gallery_path.exists()


@pytest.mark.integration
def test_a_corrupt_gallery_stops_the_commands_with_one_line(tmp_path):
    gallery_path = tmp_path / "gallery.json"
    gallery_path.write_text('{"format": "edge-face-gallery/1", "model_id": ')
    for args in (["people"], ["people", "--remove", "Ada"]):
        result = run_cli(*args, "--gallery", str(gallery_path))
        assert result.returncode == 2
        assert result.stderr.startswith(f"edge-face: gallery '{gallery_path}': unreadable JSON")
        assert len(result.stderr.strip().splitlines()) == 1
    assert gallery_path.read_text() == '{"format": "edge-face-gallery/1", "model_id": '
