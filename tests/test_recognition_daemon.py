"""Recognition in the daemon, end to end: the real daemon (`edge-face run`) on a replay of
real faces (the chips of faces-identity/johns placed into frames), the real models, a real
Mosquitto. An enrolled person arrives and leaves, a stranger arrives and leaves; the gallery is
replaced by garbage, or deleted, and the daemon told with SIGHUP; recognition off keeps one
schema. And `edge-face forget` deleting the gallery."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from broker import MosquittoBroker, Subscriber, free_port
from cli_support import run_cli
from daemon_support import write_config
from identity_support import Running
from PIL import Image

pytestmark = pytest.mark.integration

DEVICE = "door-rec"
PREFIX = f"edge-face/{DEVICE}"
GREY = (96, 104, 112)


def chip_frame(chip: Path | None, out: Path) -> Path:
    """A 640x480 grey frame with the chip (face about 100 px) in it, or none, as PNG."""
    frame = Image.new("RGB", (640, 480), GREY)
    if chip is not None:
        frame.paste(Image.open(chip).convert("RGB"), (250, 160))
    frame.save(out)
    return out


def replay(folder: Path, plan: list[tuple[list[Path] | None, int]]) -> Path:
    """``plan`` = [(chips shown in turn, or None for an empty frame; frames), ...] as numbered
    PNG files; a face's frames cycle through its chips (a new photo every frame, one place)."""
    folder.mkdir(parents=True)
    empty = chip_frame(None, folder.parent / "empty.png")
    index = 0
    for chips, frames in plan:
        for step in range(frames):
            name = folder / f"{index:04d}.png"
            if chips is None:
                name.symlink_to(empty)
            else:
                chip_frame(chips[step % len(chips)], name)
            index += 1
    return folder


@pytest.fixture(scope="module")
def johns(identity_dir) -> dict[str, list[Path]]:
    return {folder.name: sorted(folder.glob("*.jpg")) for folder in sorted((identity_dir / "johns").iterdir())}


@pytest.fixture
def broker(tmp_path):
    with MosquittoBroker(tmp_path / "broker") as running:
        yield running


def enrol(gallery: Path, name: str, chips: list[Path], work: Path) -> None:
    photos = [chip_frame(chip, work / f"enrol-{index}.png") for index, chip in enumerate(chips)]
    result = run_cli("enroll", "--gallery", str(gallery), name, *map(str, photos))
    assert result.returncode == 0, result.stderr


# --- edge-face forget ---------------------------------------------------------------------------


def test_forget_deletes_the_configured_gallery_and_the_state_directorys_even_with_the_broker_away(
    tmp_path, int8_model_path
):
    state = tmp_path / "state"
    state.mkdir()
    default, configured = state / "gallery.json", tmp_path / "people" / "faces.json"
    configured.parent.mkdir()
    for gallery in (default, configured):
        gallery.write_text('{"format": "edge-face-gallery/1"}')
    config = write_config(
        tmp_path / "edge-face.toml",
        {
            "device": {"id": DEVICE, "state_dir": state},
            "detector": {"model": int8_model_path},
            "mqtt": {"host": "127.0.0.1", "port": free_port()},  # nothing listens there
            "recognition": {"gallery": "people/faces.json"},  # recognition off: deleted all the same
        },
    )
    result = run_cli("forget", "--config", str(config))
    assert result.returncode == 1 and "unreachable" in result.stderr  # the broker part failed ...
    assert not default.exists() and not configured.exists()  # ... the biometric data is gone anyway
    for gallery in (configured, default):
        assert f"deleted the face gallery '{gallery}' (every enrolled person's descriptors)" in result.stderr
    again = run_cli("forget", "--config", str(config))
    assert "deleted the face gallery" not in again.stderr  # nothing left to delete, nothing claimed


# --- the daemon ---------------------------------------------------------------------------------

FPS = 10.0
FACE_FRAMES = 16  # 1.6 s: three views 0.5 s apart decide who it is
EMPTY_FRAMES = 15  # 1.5 s: longer than clear_after_seconds


def recognition_config(tmp_path: Path, broker: MosquittoBroker, model: Path, frames: Path, loop: bool, **recognition):
    return write_config(
        tmp_path / "edge-face.toml",
        {
            "device": {"id": DEVICE, "state_dir": tmp_path / "state"},
            "camera": {"source": "replay", "path": frames, "fps": FPS, "loop": loop},
            "detector": {"model": model},
            "events": {"debounce_frames": 2, "clear_after_seconds": 1.0},
            "stats": {"interval_seconds": 1.0},
            "mqtt": {"host": broker.host, "port": broker.port, "keepalive": 5, "reconnect_min_delay": 0.1},
            "recognition": {"enabled": True, **recognition},
        },
    )


def payloads(live: Subscriber, topic: str) -> list[dict]:
    return [json.loads(m.payload) for m in live.on(topic) if m.payload]


def numbers_in_lists(value) -> int:
    """The longest list of numbers anywhere in a JSON value (a descriptor would be 128)."""
    if isinstance(value, dict):
        return max((numbers_in_lists(v) for v in value.values()), default=0)
    if isinstance(value, list):
        own = len(value) if value and all(isinstance(v, (int, float)) for v in value) else 0
        return max([own, *(numbers_in_lists(v) for v in value)])
    return 0


def person_events(events: list[dict]) -> list[tuple[str, str | None]]:
    return [(e["type"], e["person"]) for e in events if e["type"].startswith("person_")]


def test_an_enrolled_person_and_a_stranger_arrive_and_leave_by_name_over_mqtt(tmp_path, broker, int8_model_path, johns):
    salley, savage = johns["John_Salley"], johns["John_Savage"]
    state_dir = tmp_path / "state"
    enrol(state_dir / "gallery.json", "John Salley", salley[:3], tmp_path)  # the default gallery
    frames = replay(
        tmp_path / "frames",
        [
            (None, 3),
            (salley[4:], FACE_FRAMES),  # photos not enrolled
            (None, EMPTY_FRAMES),
            (savage, FACE_FRAMES),
            (None, EMPTY_FRAMES),
        ],
    )
    config = recognition_config(tmp_path, broker, int8_model_path, frames, loop=False)
    with Subscriber(broker, [f"{PREFIX}/#"]) as live:
        daemon = Running(config, tmp_path / "daemon.log")
        code = daemon.process.wait(timeout=120)
        text = daemon.text()
        assert code == 0, text[-3000:]
        live.wait_for(f"{PREFIX}/status", 2)
        events = payloads(live, f"{PREFIX}/events")
        states = payloads(live, f"{PREFIX}/state")
        everything = [json.loads(m.payload) for m in live.messages if m.payload.startswith(b"{")]

    assert [(e["type"], e.get("person")) for e in events] == [
        ("face_detected", None),
        ("person_arrived", "John Salley"),
        ("face_cleared", None),
        ("person_left", "John Salley"),
        ("face_detected", None),
        ("person_arrived", None),  # not enrolled
        ("face_cleared", None),
        ("person_left", None),
    ], [(e["type"], e.get("person"), e["time"]) for e in events]
    assert [e["sequence"] for e in events] == list(range(1, 9))
    threshold = 0.6  # the descriptor model's own (its sidecar)
    arrived, left = events[1], events[3]
    (face,) = arrived["faces"]
    assert face["person"] == "John Salley" and 0 < face["distance"] < threshold
    assert arrived["track_id"] == face["track_id"] == left["track_id"] and isinstance(face["track_id"], int)
    (first_face,) = events[0]["faces"]  # before three views decide: no name yet, but a distance
    assert first_face["track_id"] == face["track_id"] and first_face["person"] is None
    assert isinstance(first_face["distance"], float)
    (stranger,) = events[5]["faces"]
    assert stranger["person"] is None and threshold <= stranger["distance"] <= 2
    assert stranger["track_id"] > face["track_id"]  # a new face, a new track
    assert (left["face_count"], left["faces"]) == (0, [])

    present = [s["people"]["John Salley"]["present"] for s in states]
    assert True in present and present[-1] is False
    final = states[-1]
    assert set(final["people"]) == {"John Salley"} and final["last_person"] == "John Salley"
    assert final["people"]["John Salley"]["last_seen"] is not None
    # Embeddings never leave the device: no message and no log line holds a descriptor.
    assert max(numbers_in_lists(message) for message in everything) <= 4  # boxes are the longest
    assert "recognition on: gallery" in text and "1 enrolled (John Salley)" in text
    assert not any(len(line) > 2000 for line in text.splitlines()) and "Traceback" not in text


def test_a_gallery_replaced_by_garbage_or_deleted_is_handled_on_sighup(tmp_path, broker, int8_model_path, johns):
    salley = johns["John_Salley"]
    gallery = tmp_path / "state" / "gallery.json"
    enrol(gallery, "John Salley", salley[:3], tmp_path)
    frames = replay(tmp_path / "frames", [(salley[4:8], 8)])
    config = recognition_config(tmp_path, broker, int8_model_path, frames, loop=True, views=2)
    with Subscriber(broker, [f"{PREFIX}/#"]) as live:
        daemon = Running(config, tmp_path / "daemon.log")
        try:
            live.wait_until(
                lambda: ("person_arrived", "John Salley") in person_events(payloads(live, f"{PREFIX}/events")),
                60,
                "John Salley named",
            )
            gallery.write_bytes(b"\x89PNG not a gallery at all")
            daemon.process.send_signal(signal.SIGHUP)
            daemon.wait_log("recognition suspended")
            live.wait_until(
                lambda: ("person_left", "John Salley") in person_events(payloads(live, f"{PREFIX}/events")),
                15,
                "John Salley gone with the gallery",
            )
            live.wait_until(lambda: payloads(live, f"{PREFIX}/state")[-1]["people"] == {}, 15, "no names in the state")
            time.sleep(2.0)  # faces keep coming: with the gallery unusable, nobody is named or called a stranger
            assert person_events(payloads(live, f"{PREFIX}/events")) == [
                ("person_arrived", "John Salley"),
                ("person_left", "John Salley"),
            ]
            assert gallery.read_bytes() == b"\x89PNG not a gallery at all"  # never written over

            gallery.unlink()
            daemon.process.send_signal(signal.SIGHUP)
            daemon.wait_log("recognition resumed")
            live.wait_until(
                lambda: ("person_arrived", None) in person_events(payloads(live, f"{PREFIX}/events")),
                15,
                "the face, now not enrolled, arrives as a stranger",
            )
        finally:
            code, text = daemon.stop()
    assert code == 0, text[-3000:]
    errors = [line for line in text.splitlines() if " ERROR " in line]
    assert errors and all(f"gallery '{gallery}': unreadable JSON" in line for line in errors), errors
    assert all("recognition suspended" in line for line in errors)
    assert "Traceback" not in text


def test_with_recognition_off_faces_and_state_keep_one_schema_and_no_model_is_loaded(
    tmp_path, broker, int8_model_path, johns
):
    frames = replay(tmp_path / "frames", [(johns["John_Simm"], 6), (None, EMPTY_FRAMES)])
    config = recognition_config(tmp_path, broker, int8_model_path, frames, loop=False, enabled=False)
    with Subscriber(broker, [f"{PREFIX}/#"]) as live:
        daemon = Running(config, tmp_path / "daemon.log")
        code = daemon.process.wait(timeout=60)
        live.wait_for(f"{PREFIX}/status", 2)
        events = payloads(live, f"{PREFIX}/events")
        states = payloads(live, f"{PREFIX}/state")
        stats = payloads(live, f"{PREFIX}/stats")
    assert code == 0, daemon.text()[-3000:]
    assert [e["type"] for e in events] == ["face_detected", "face_cleared"]
    (face,) = events[0]["faces"]
    assert isinstance(face["track_id"], int) and face["person"] is None and face["distance"] is None
    assert all(s["people"] == {} and s["last_person"] is None for s in states)
    assert stats and all(s["recognition"] == "off" and s["recognitions"] == 0 for s in stats)
    assert "recognition on" not in daemon.text() and "gallery" not in daemon.text()
