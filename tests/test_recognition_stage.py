"""The daemon's recognition stage (edge.recognize.stage) on real faces: the chips of
faces-identity/johns placed into frames, the real detector and the real descriptor network.
Identity over several views, enrolling the face in view (and the refusals: no face, two faces,
a name that is not allowed), forgetting, and the gallery file replaced by garbage, deleted or
changed behind the daemon's back; and the [recognition] config section."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge.config import ConfigError, parse_config
from edge.recognize.describe import FaceDescriber
from edge.recognize.gallery import Gallery, load_gallery, save_gallery
from edge.recognize.settings import RecognitionOptions
from edge.recognize.stage import NOT_DESCRIBED, RecognitionStage

GREY = (96, 104, 112)


def frame_with(chips: list[Path], width: int = 640, height: int = 480) -> np.ndarray:
    """(H, W, 3) uint8 RGB: each chip (its face about 100 px) pasted side by side on grey."""
    frame = Image.new("RGB", (width, height), GREY)
    for index, chip in enumerate(chips):
        frame.paste(Image.open(chip).convert("RGB"), (60 + 300 * index, 160))
    return np.asarray(frame)


@pytest.fixture(scope="module")
def describer() -> FaceDescriber:
    return FaceDescriber(num_threads=1)


@pytest.fixture(scope="module")
def people(identity_dir) -> dict[str, list[Path]]:
    return {folder.name: sorted(folder.glob("*.jpg")) for folder in sorted((identity_dir / "johns").iterdir())}


class Scene:
    """Feeds the stage frames the way the daemon does: the detector's boxes, a track id per
    face (given by the test: the tracker is tested on its own), every face a view."""

    def __init__(self, stage: RecognitionStage, detector) -> None:
        self.stage, self.detector = stage, detector

    def show(self, pixels: np.ndarray, track_ids: list[int], ended: tuple[int, ...] = (), color_order: str = "RGB"):
        rgb = pixels if color_order == "RGB" else pixels[..., ::-1]
        detections = self.detector.detect(rgb)
        boxes = detections.pixel_boxes(pixels.shape[1], pixels.shape[0])
        order = np.argsort(boxes[:, 0])  # left to right, as the chips were pasted
        boxes = boxes[order]
        assert len(boxes) == len(track_ids), f"{len(boxes)} faces found, {len(track_ids)} expected"
        return self.stage.observe(pixels, color_order, boxes, track_ids, tuple(range(len(track_ids))), ended)


def make_stage(tmp_path: Path, describer: FaceDescriber, **options) -> RecognitionStage:
    return RecognitionStage(
        RecognitionOptions(enabled=True, **options), tmp_path / "gallery.json", logging.getLogger("test.rec"), describer
    )


@pytest.mark.integration
def test_a_track_is_decided_over_its_views_enrolled_from_the_face_in_view_and_named_at_once(
    tmp_path, describer, detector, people, caplog
):
    stage = make_stage(tmp_path, describer)
    scene = Scene(stage, detector)
    salley, savage = people["John_Salley"], people["John_Savage"]
    assert stage.people() == () and stage.usable
    (first,) = scene.show(frame_with([salley[0]]), [1])
    assert (first.status, first.person, first.distance, first.decided) == ("pending", None, None, False)
    scene.show(frame_with([salley[1]]), [1])
    (third,) = scene.show(frame_with([salley[2]]), [1])
    # Nobody enrolled: after 3 views the track is decided "not enrolled", with no distance.
    assert (third.status, third.person, third.distance, third.decided) == ("unknown", None, None, True)

    caplog.set_level(logging.INFO, "test.rec")
    outcome = stage.enrol_current("John Salley")
    assert outcome.done, outcome.message
    assert outcome.message == "enrolled 'John Salley': 3 view(s) of track 1 added, 3 in all"
    gallery_file = tmp_path / "gallery.json"
    assert stat.S_IMODE(gallery_file.stat().st_mode) == 0o600
    stored = load_gallery(gallery_file, describer.model_id, describer.dimensions)
    assert {name: len(rows) for name, rows in stored.people.items()} == {"John Salley": 3}
    assert stage.people() == ("John Salley",)
    assert stage.identity_of(1).person == "John Salley"  # the live track is named at once
    # Nothing of a descriptor is logged: names and counts only.
    assert all("[" not in record.getMessage() for record in caplog.records)

    # An unseen photo of the same man, seen as BGR by the camera, on a new track: named after 3 views;
    # a stranger beside him is "not enrolled", with his distance to the nearest enrolled person.
    for view in range(3):
        pixels = frame_with([salley[5 + view], savage[view]])
        known, stranger = scene.show(np.ascontiguousarray(pixels[..., ::-1]), [2, 3], ended=(1,), color_order="BGR")
    threshold = describer.match_threshold
    assert (known.status, known.person) == ("known", "John Salley") and 0 < known.distance < threshold
    assert (stranger.status, stranger.person, stranger.decided) == ("unknown", None, True)
    assert threshold <= stranger.distance <= 2
    assert stage.identity_of(1) is NOT_DESCRIBED  # ended tracks are dropped


@pytest.mark.integration
def test_enrolling_is_refused_without_exactly_one_described_face_or_with_a_bad_name(
    tmp_path, describer, detector, people, caplog
):
    stage = make_stage(tmp_path, describer, min_face_size=40)
    scene = Scene(stage, detector)
    caplog.set_level(logging.WARNING, "test.rec")
    assert stage.enrol_current("Ada").message == "no face is in view; enrolling takes exactly one"
    scene.show(frame_with([people["John_Simm"][0], people["John_Savage"][0]]), [1, 2])
    refused = stage.enrol_current("Ada")
    assert (refused.done, refused.message) == (False, "2 faces are in view; enrolling takes exactly one")
    scene.show(frame_with([people["John_Simm"][1]]), [1], ended=(2,))
    for name in ("../etc/passwd", "", " Ada", "a" * 65, "Ada\nEve", "_x"):
        outcome = stage.enrol_current(name)
        assert not outcome.done and "is not allowed" in outcome.message, name
    # A face too small to recognize is tracked but never described: nothing to enrol.
    stage.observe(frame_with([people["John_Simm"][2]]), "RGB", np.array([[60.0, 185.0, 90.0, 215.0]]), [9], (), (1,))
    too_small = stage.enrol_current("Ada")
    assert not too_small.done and too_small.message.startswith("the face in view has not been recognized yet")
    assert stage.recognizable(np.array([39.0, 40.0])).tolist() == [False, True]
    assert not (tmp_path / "gallery.json").exists()  # nothing was written by any refusal
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings[:2] == [
        "enrol refused: no face is in view; enrolling takes exactly one",
        "enrol refused: 2 faces are in view; enrolling takes exactly one",
    ]


@pytest.mark.integration
def test_forgetting_unnames_the_live_track_and_deletes_the_descriptors(tmp_path, describer, detector, people):
    stage = make_stage(tmp_path, describer, views=1)
    scene = Scene(stage, detector)
    scene.show(frame_with([people["John_Shimkus"][0]]), [1])
    assert stage.enrol_current("Shimkus").done
    (named,) = scene.show(frame_with([people["John_Shimkus"][4]]), [2], ended=(1,))
    assert named.person == "Shimkus"
    outcome = stage.forget("Shimkus")
    assert outcome.done and outcome.message == "forgot 'Shimkus': 0 enrolled now"
    assert stage.identity_of(2).person is None and stage.identity_of(2).decided
    assert json.loads((tmp_path / "gallery.json").read_text())["people"] == {}
    again = stage.forget("Shimkus")
    assert not again.done and "'Shimkus' is not in the gallery" in again.message


@pytest.mark.integration
def test_a_gallery_replaced_by_garbage_suspends_recognition_until_it_is_fixed_or_deleted(
    tmp_path, describer, detector, people, caplog
):
    stage = make_stage(tmp_path, describer, views=1)
    scene = Scene(stage, detector)
    scene.show(frame_with([people["John_Schneider"][0]]), [1])
    assert stage.enrol_current("Schneider").done
    gallery_file = tmp_path / "gallery.json"
    gallery_file.write_bytes(b"\x00garbage{")
    caplog.set_level(logging.INFO, "test.rec")
    outcome = stage.reload_gallery()
    assert not outcome.done and outcome.message.startswith(f"gallery '{gallery_file}': unreadable JSON")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0] and "recognition suspended" in errors[0]
    # Fail-closed: the stale gallery is not kept; nobody is named, nobody is called a stranger.
    assert not stage.usable and stage.people() == ()
    (face,) = scene.show(frame_with([people["John_Schneider"][1]]), [1])
    assert (face.person, face.distance, face.decided) == (None, None, False)
    refused = stage.enrol_current("Schneider")
    assert not refused.done and "fix or delete the file first" in refused.message
    assert gallery_file.read_bytes() == b"\x00garbage{"  # never written over
    assert not stage.forget("Schneider").done

    gallery_file.unlink()  # deleted: an empty gallery, recognition resumes
    assert stage.reload_gallery().done and stage.usable and stage.people() == ()
    (face,) = scene.show(frame_with([people["John_Schneider"][2]]), [1])
    assert (face.person, face.decided) == (None, True)


@pytest.mark.integration
def test_a_gallery_changed_on_disk_is_read_again_without_a_signal(tmp_path, describer, detector, people):
    stage = make_stage(tmp_path, describer, views=1)
    scene = Scene(stage, detector)
    (face,) = scene.show(frame_with([people["John_Savage"][3]]), [1])
    assert face.person is None
    assert not stage.check_gallery_file(now=100.0)  # unchanged (still missing)
    gallery = Gallery(describer.model_id, describer.dimensions)
    chip = np.asarray(Image.open(people["John_Savage"][0]).convert("RGB"))
    gallery.add("Savage", describer.embedder.descriptor(chip))
    save_gallery(tmp_path / "gallery.json", gallery)  # as `edge-face enroll` would
    assert not stage.check_gallery_file(now=101.0)  # checked at most every 2 s
    assert stage.check_gallery_file(now=102.5)
    assert stage.people() == ("Savage",) and stage.identity_of(1).person == "Savage"


# --- [recognition] ---------------------------------------------------------------------------


@pytest.mark.unit
def test_the_recognition_section_defaults_to_off_and_to_the_state_directorys_gallery(tmp_path):
    config = parse_config({"device": {"id": "door", "state_dir": str(tmp_path / "state")}}, tmp_path)
    assert config.recognition == RecognitionOptions()
    assert config.recognition.enabled is False
    assert config.recognition.gallery_path(config.device.state_dir) == tmp_path / "state" / "gallery.json"
    written = parse_config(
        {"recognition": {"enabled": True, "gallery": "people/g.json", "threshold": 1, "views": 5}}, tmp_path
    )
    assert written.recognition.gallery == tmp_path / "people" / "g.json"
    assert written.recognition.threshold == 1.0 and isinstance(written.recognition.threshold, float)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"enabled": "yes"}, "config key 'recognition.enabled': \"yes\" is not allowed (true or false)"),
        ({"threshold": 2}, "config key 'recognition.threshold': 2 is not allowed (a number > 0 and < 2"),
        ({"threshold": 0}, "config key 'recognition.threshold': 0 is not allowed"),
        ({"views": 0}, "config key 'recognition.views': 0 is not allowed (an integer 1-10)"),
        ({"views": True}, "config key 'recognition.views': true is not allowed"),
        ({"min_face_size": -1}, "config key 'recognition.min_face_size': -1 is not allowed"),
        ({"gallery": ""}, "config key 'recognition.gallery': \"\" is not allowed (a non-empty path string)"),
        ({"galery": "x"}, "config key 'recognition.galery': \"galery\" is not allowed (a key of [recognition]"),
    ],
)
def test_a_bad_recognition_key_is_one_line_naming_it(tmp_path, table, message):
    with pytest.raises(ConfigError) as caught:
        parse_config({"recognition": table}, tmp_path)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


@pytest.mark.unit
def test_the_example_config_documents_the_recognition_defaults_and_valid_examples(project_root, tmp_path):
    import re
    import tomllib

    from edge.recognize.settings import recognition_options_from_toml

    text = (project_root / "examples" / "edge-face.toml").read_text(encoding="utf-8")
    section = text[text.index("[recognition]\n") :]
    assert recognition_options_from_toml(tomllib.loads(section)["recognition"]) == RecognitionOptions()
    for field in ("enabled", "gallery", "threshold", "views", "min_face_size"):
        assert re.search(rf"^#? ?{field} = ", section, re.MULTILINE), field
    uncommented = tomllib.loads(re.sub(r"^# (?=(gallery|threshold) = )", "", section, flags=re.MULTILINE))
    options = recognition_options_from_toml(uncommented["recognition"], base_dir=tmp_path)
    assert options.gallery == Path("/var/lib/edge-face/gallery.json") and options.threshold == 0.6


@pytest.mark.unit
def test_a_track_led_by_a_person_without_the_margin_waits_for_its_early_views_before_it_is_a_stranger():
    from edge.recognize.identity import IdentityOptions, ViewMatch, decide_identity
    from edge.recognize.stage import settled

    options = IdentityOptions(max_distance=0.6, min_views=3)
    early = 6  # the tracker's initial views for views = 3

    def status(distances: list[float | None]) -> str:
        matches = [ViewMatch(None, 0.0) if d is None else ViewMatch("alice", d) for d in distances]
        return settled(decide_identity(matches, options), early).status

    assert status([0.4, 0.7, 0.45]) == "pending"  # one poor view among good ones: not a stranger yet
    assert status([0.4, 0.7, 0.45, 0.42]) == "known"  # the next view settles it
    assert status([0.4, 0.7, 0.8, 0.75, 0.9, 0.7]) == "unknown"  # early views spent: a stranger
    assert status([0.8, 0.9, 0.7]) == "unknown"  # nobody within the threshold: at once
    assert status([None, None, None]) == "unknown"  # nobody enrolled
