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
from tools.shared_data import PROJECT_ROOT

pytestmark = pytest.mark.unit

MODEL = "dlib-resnet-v1-int8-float16"


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
    from edge.recognize.describe import FaceDescriber
    from edge.recognize.gallery import load_gallery
    from edge.sources.imageio import load_image

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


# ---- edge-face detect --gallery -------------------------------------------------------------


def _match_threshold() -> float:
    from edge.detect.sidecar import EMBEDDING_KIND, EmbeddingModelInfo, read_recognition_sidecar
    from edge.recognize.models import EMBEDDING_MODEL_PATH

    info = read_recognition_sidecar(EMBEDDING_MODEL_PATH, EMBEDDING_KIND)
    assert isinstance(info, EmbeddingModelInfo)
    return info.match_threshold


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory, identity_dir):
    """A gallery with one person enrolled from 3 of their chips in frames; (gallery, that
    person's folder, another person's folder, a folder of frames)."""
    folders = sorted((identity_dir / "johns").iterdir())
    work = tmp_path_factory.mktemp("detect-gallery")
    gallery_path = work / "gallery.json"
    person = folders[0]
    photos = [_frame_file(p, work / f"enroll-{p.stem}.png") for p in sorted(person.glob("*.jpg"))[:3]]
    result = run_cli("enroll", "--gallery", str(gallery_path), person.name, *map(str, photos))
    assert result.returncode == 0, result.stderr
    return gallery_path, person, folders[1], work


def _faces(result) -> list[list[dict]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line)["faces"] for line in result.stdout.splitlines()]


@pytest.mark.integration
def test_detect_with_a_gallery_names_the_enrolled_person_and_no_one_else(enrolled):
    gallery_path, person, other, work = enrolled
    same = _frame_file(sorted(person.glob("*.jpg"))[-1], work / "same.png")  # not one of the enrolled photos
    stranger = _frame_file(sorted(other.glob("*.jpg"))[-1], work / "stranger.png")
    [[known], [unknown]] = _faces(run_cli("detect", "--json", "--gallery", str(gallery_path), str(same), str(stranger)))
    threshold = _match_threshold()
    assert known["person"] == person.name and 0 < known["distance"] < threshold
    assert unknown["person"] is None and threshold <= unknown["distance"] <= 2
    # The same faces without a gallery: the documented line, unchanged.
    [[plain_known], [plain_unknown]] = _faces(run_cli("detect", "--json", str(same), str(stranger)))
    assert plain_known == {k: known[k] for k in ("box", "score")} and "person" not in plain_unknown

    text = run_cli("detect", "--gallery", str(gallery_path), str(same))
    assert f"  {person.name} (distance {known['distance']:.3f})" in text.stdout


@pytest.mark.integration
def test_detect_describes_a_jpeg_decoded_at_reduced_scale_from_its_decoded_pixels(enrolled):
    gallery_path, person, _other, work = enrolled
    same = Image.open(_frame_file(sorted(person.glob("*.jpg"))[-1], work / "same.png"))
    big = work / "big.jpg"
    same.resize((1280, 960), Image.Resampling.BICUBIC).save(big, quality=95)
    [[full]] = _faces(run_cli("detect", "--json", "--gallery", str(gallery_path), str(big)))
    reduced_run = run_cli("detect", "--json", "--max-pixels", str(640 * 480), "--gallery", str(gallery_path), str(big))
    assert json.loads(reduced_run.stdout)["decoded_size"] == [640, 480]
    [[reduced]] = _faces(reduced_run)
    assert full["person"] == reduced["person"] == person.name
    assert abs(full["distance"] - reduced["distance"]) < 0.05


@pytest.mark.integration
def test_detect_with_an_empty_gallery_gives_null_person_and_distance(enrolled, tmp_path):
    _gallery_path, person, _other, _work = enrolled
    empty = tmp_path / "empty.json"
    empty.write_bytes(encode_gallery(Gallery(MODEL, 128)))
    photo = _frame_file(sorted(person.glob("*.jpg"))[0], tmp_path / "a.png")
    [[face]] = _faces(run_cli("detect", "--json", "--gallery", str(empty), str(photo)))
    assert face["person"] is None and face["distance"] is None


@pytest.mark.integration
@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "no such file"), ('{"format": "edge-face-gallery/1", "model_id": ', "unreadable JSON")],
)
def test_detect_with_a_missing_or_corrupt_gallery_stops_with_one_line(tmp_path, photo_paths, content, problem):
    gallery_path = tmp_path / "gallery.json"
    if content is not None:
        gallery_path.write_text(content)
    result = run_cli("detect", "--json", "--gallery", str(gallery_path), str(photo_paths[0]))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"edge-face: gallery '{gallery_path}': {problem}")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.integration
def test_detect_without_a_gallery_loads_nothing_of_recognition(photo_paths):
    import subprocess
    import sys

    code = (
        "import sys, contextlib, io\n"
        "from edge.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main(['detect', '--json', {str(photo_paths[0])!r}]) == 0\n"
        # people (the commands) and settings (the [recognition] section) are stdlib only
        "light = ('edge.recognize.people', 'edge.recognize.settings')\n"
        "print(sorted(m for m in sys.modules if m.startswith('edge.recognize.') and m not in light))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
