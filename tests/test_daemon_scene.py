"""The scene stage in the running daemon, on real frames: the motion gate spares the
detector on a still scene, masks and size limits drop faces before the presence tracker,
and each zone has its own presence, events and state."""

from __future__ import annotations

from pathlib import Path

import pytest
from daemon_support import RecordingSink, build_scene, write_config

from edge.config import load_config
from edge.daemon.loop import build_daemon
from edge.daemon.sdnotify import SystemdNotifier
from edge.sources.imageio import load_image

pytestmark = pytest.mark.integration

FPS = 10.0


@pytest.fixture(scope="module")
def face_photo(photo_paths, detector) -> tuple[Path, int]:
    """A photo with 2-6 faces, counted by the model."""
    for path in photo_paths:
        count = len(detector.detect(load_image(path)))
        if 2 <= count <= 6:
            return path, count
    pytest.fail("no upstream photo with 2-6 faces")


def run_daemon(tmp_path: Path, model: Path, folder: Path, **sections) -> tuple[RecordingSink, int]:
    """Run the daemon over ``folder`` once; returns the sink and how often the detector ran."""
    base = {
        "device": {"id": "scene-test"},
        "camera": {"source": "replay", "path": folder, "fps": FPS},
        "detector": {"model": model},
        "events": {"debounce_frames": 2, "clear_after_seconds": 0.5},
        "stats": {"interval_seconds": 60.0},
    }
    for name, table in sections.items():
        base[name] = {**base.get(name, {}), **table}
    config = load_config(write_config(tmp_path / "edge-face.toml", base))
    sink = RecordingSink()
    daemon = build_daemon(config, sink=sink, notifier=SystemdNotifier(environ={}))
    calls = []
    real = daemon.detector.detect_timed

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    daemon.detector.detect_timed = counted  # the real detector, counted
    assert daemon.run() == 0
    return sink, len(calls)


def events_of(sink: RecordingSink) -> list:
    return [payload for kind, payload in sink.calls if kind == "event"]


def test_a_still_empty_scene_is_detected_once_per_idle_interval(tmp_path, int8_model_path, blank):
    scene = build_scene(tmp_path / "still", blank, [("blank", 40)])  # 4 s at 10 fps
    _, gated = run_daemon(tmp_path, int8_model_path, scene.folder, motion={"idle_interval": 1.0})
    _, ungated = run_daemon(tmp_path, int8_model_path, scene.folder, motion={"enabled": False})
    assert ungated == 40
    # The first frame, then one per idle second: 4-5 of 40 (the replay's pacing jitters).
    assert 3 <= gated <= 6, gated


def test_the_gate_changes_no_event_when_faces_come_and_go(tmp_path, int8_model_path, blank, face_photo):
    photo, count = face_photo
    plan = [("blank", 10), (photo, 6), ("blank", 15)]
    scene = build_scene(tmp_path / "visit", blank, plan)
    gated, gated_calls = run_daemon(tmp_path, int8_model_path, scene.folder)
    plain, _ = run_daemon(tmp_path, int8_model_path, scene.folder, motion={"enabled": False})
    as_seen = [(e.type, e.face_count, e.faces) for e in events_of(gated)]
    assert as_seen == [(e.type, e.face_count, e.faces) for e in events_of(plain)]
    assert [kind for kind, _, _ in as_seen] == ["face_detected", "face_cleared"] and as_seen[0][1] == count
    assert gated_calls < len(scene.frames)  # the empty stretch before the visit was skipped


def test_a_mask_over_the_faces_keeps_the_room_empty(tmp_path, int8_model_path, blank, face_photo):
    photo, _ = face_photo
    scene = build_scene(tmp_path / "masked", blank, [("blank", 2), (photo, 12), ("blank", 12)])
    whole_frame = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
    sink, _ = run_daemon(
        tmp_path, int8_model_path, scene.folder, scene={"masks": [whole_frame]}, stats={"interval_seconds": 1.0}
    )
    assert events_of(sink) == []
    stats = [payload for kind, payload in sink.calls if kind == "stats"]
    assert sum(figures["faces_masked"] for figures in stats) > 0


def test_a_minimum_face_size_above_every_face_keeps_the_room_empty(tmp_path, int8_model_path, blank, face_photo):
    photo, _ = face_photo
    scene = build_scene(tmp_path / "small", blank, [("blank", 2), (photo, 6), ("blank", 8)])
    sink, _ = run_daemon(tmp_path, int8_model_path, scene.folder, scene={"min_face_size": 8000})
    assert events_of(sink) == []


def test_each_zone_has_its_own_presence_events_and_state(tmp_path, int8_model_path, blank, face_photo):
    photo, count = face_photo
    scene = build_scene(tmp_path / "zones", blank, [("blank", 2), (photo, 6), ("blank", 8)])
    config_text_zones = (
        '\n[[scene.zones]]\nname = "everywhere"\npolygon = [[0, 0], [1, 0], [1, 1], [0, 1]]\n'
        '\n[[scene.zones]]\nname = "nowhere"\npolygon = [[0, 0], [0.02, 0], [0.02, 0.02], [0, 0.02]]\n'
    )
    base = {
        "device": {"id": "scene-test"},
        "camera": {"source": "replay", "path": scene.folder, "fps": FPS},
        "detector": {"model": int8_model_path},
        "events": {"debounce_frames": 2, "clear_after_seconds": 0.5},
    }
    path = write_config(tmp_path / "zones.toml", base)
    path.write_text(path.read_text() + config_text_zones)
    sink = RecordingSink()
    daemon = build_daemon(load_config(path), sink=sink, notifier=SystemdNotifier(environ={}))
    assert daemon.run() == 0
    events = events_of(sink)
    whole = [(e.type, e.face_count) for e in events if e.zone is None]
    zoned = [(e.type, e.face_count) for e in events if e.zone == "everywhere"]
    assert whole == zoned == [("face_detected", count), ("face_cleared", 0)]
    assert not [e for e in events if e.zone == "nowhere"]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))  # one numbering for all
    states = [payload for kind, payload in sink.calls if kind == "state"]
    busy = next(state for state in states if state.present)
    assert busy.zones["everywhere"].present and busy.zones["everywhere"].count == count
    assert not busy.zones["nowhere"].present
    assert busy.to_dict()["zones"]["nowhere"] == {
        "present": False,
        "count": 0,
        "last_seen": None,
        "zones": {},
        "detection": "active",
    }
