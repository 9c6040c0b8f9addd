"""The daemon end to end with the stdout sink: real int8 model, real photos replayed from a
folder, events read back from stdout (in-process and as `python -m edge.cli run`), exit
codes, SIGHUP reload, snapshots and stats. The MQTT side is tested in test_mqtt.py."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from cli_support import run_cli, start_run
from daemon_support import EVENT_FIELDS, RecordingSink, Scene, build_scene, parse_event_lines, write_config
from PIL import Image

from edge.config import load_config
from edge.daemon.loop import build_daemon, percentile_ms, run_main, status_line
from edge.daemon.sdnotify import SystemdNotifier
from edge.daemon.snapshot import encode_snapshot
from edge.detect.decode import Detections
from edge.detect.detector import FaceDetector
from edge.mqtt.sinks import EventSink, StdoutSink
from edge.scene.events import faces_from_detections
from edge.sources.grabber import SourceHealth
from edge.sources.imageio import load_image

pytestmark = pytest.mark.integration

FPS = 10.0
DEBOUNCE = 3
CLEAR_AFTER = 0.8  # seconds; the long face-free run below lasts 2 s, the short gap 0.2 s
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def picamera2_installed() -> bool:
    try:
        import picamera2  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def two_photos(photo_paths, detector) -> tuple[Path, int, Path, int]:
    """The photo with the fewest faces and one with a different count (counted by the model)."""
    counts = sorted((len(detector.detect(load_image(p))), p.name, p) for p in photo_paths)
    counts = [(n, p) for n, _, p in counts if n > 0]
    first_count, first = counts[0]
    second_count, second = next((n, p) for n, p in counts if n != first_count)
    return first, first_count, second, second_count


def presence_plan(two_photos, blank) -> list:
    first, _, second, _ = two_photos
    return [
        ("blank", 2),
        (first, 6),  # face_detected on its 3rd frame
        ("blank", 1),  # a one-frame miss: shorter than CLEAR_AFTER, no event
        (second, 6),  # count_changed on its 3rd frame
        ("blank", 20),  # 2 s without a face: face_cleared
        (first, 2),  # shorter than the debounce: no event
        ("blank", 2),
    ]


def expected_events(scene: Scene, detector: FaceDetector, two_photos) -> list[dict]:
    """What the presence rules say must come out of ``scene``, from the model's own counts."""
    first, first_count, second, second_count = two_photos

    def described(kind: str, photo: Path | None, count: int) -> dict:
        if photo is None:
            return {"type": kind, "face_count": 0, "faces": [], "frame_width": 640, "frame_height": 480}
        pixels = load_image(photo)
        detections = detector.detect(pixels)
        faces = [f.to_dict() for f in faces_from_detections(detections.boxes, detections.scores)]
        height, width = pixels.shape[:2]
        return {"type": kind, "face_count": count, "faces": faces, "frame_width": width, "frame_height": height}

    return [
        described("face_detected", first, first_count),
        described("count_changed", second, second_count),
        described("face_cleared", None, 0),
    ]


def daemon_config(tmp_path: Path, model: Path, camera: dict, **sections) -> Path:
    base = {
        "device": {"id": "test-hall"},
        "camera": camera,
        "detector": {"model": model},
        "events": {"debounce_frames": DEBOUNCE, "clear_after_seconds": CLEAR_AFTER},
        "stats": {"interval_seconds": 1.0},
    }
    for name, table in sections.items():
        base[name] = {**base.get(name, {}), **table}
    return write_config(tmp_path / "edge-face.toml", base)


def check_events(events: list[dict], expected: list[dict], detector: FaceDetector) -> None:
    assert [(e["type"], e["face_count"]) for e in events] == [(e["type"], e["face_count"]) for e in expected]
    assert [e["sequence"] for e in events] == [1, 2, 3]
    assert len({e["boot_id"] for e in events}) == 1 and re.fullmatch(r"[0-9a-f]{32}", events[0]["boot_id"])
    times = [e["time"] for e in events]
    assert all(ISO_UTC.match(t) for t in times) and times == sorted(times)
    for event, want in zip(events, expected, strict=True):
        assert set(event) == set(EVENT_FIELDS)
        assert event["device_id"] == "test-hall" and event["model_id"] == detector.model_id
        assert (event["frame_width"], event["frame_height"]) == (want["frame_width"], want["frame_height"])
        assert len(event["faces"]) == event["face_count"]
        for got, face in zip(event["faces"], want["faces"], strict=True):
            np.testing.assert_allclose(got["box"], face["box"], atol=1e-6)
            assert got["score"] == pytest.approx(face["score"], abs=1e-4)


# --- the event sequence -------------------------------------------------------------------------------


def test_replayed_scene_gives_the_exact_event_sequence(tmp_path, int8_model_path, detector, two_photos, blank, capsys):
    scene = build_scene(tmp_path / "frames", blank, presence_plan(two_photos, blank))
    config = daemon_config(tmp_path, int8_model_path, {"source": "replay", "path": scene.folder, "fps": FPS})
    assert run_main(str(config)) == 0
    out, err = capsys.readouterr()
    check_events(parse_event_lines(out), expected_events(scene, detector, two_photos), detector)
    assert "Traceback" not in err and "end of stream" in err


def test_the_cli_runs_the_daemon_as_a_process(tmp_path, int8_model_path, detector, two_photos, blank):
    scene = build_scene(tmp_path / "frames", blank, presence_plan(two_photos, blank))
    config = daemon_config(tmp_path, int8_model_path, {"source": "replay", "path": scene.folder, "fps": FPS})
    result = run_cli("run", "--config", str(config), timeout=120)
    assert result.returncode == 0, result.stderr
    check_events(parse_event_lines(result.stdout), expected_events(scene, detector, two_photos), detector)
    assert "Traceback" not in result.stderr


def test_max_frames_stops_a_looping_replay(tmp_path, int8_model_path, photo_paths, capsys):
    config = daemon_config(
        tmp_path,
        int8_model_path,
        {"source": "replay", "path": photo_paths[0], "loop": True},
        events={"debounce_frames": 1},
    )
    assert run_main(str(config), max_frames=5) == 0
    out, err = capsys.readouterr()
    assert [e["type"] for e in parse_event_lines(out)] == ["face_detected"]
    assert "stopped after 5 frames: 1 event(s) made, 1 delivered, 0 lost" in err.splitlines()[-1]


# --- exit codes and messages ----------------------------------------------------------------------------


def test_bad_config_exits_2_with_one_line(tmp_path, int8_model_path, capsys):
    config = daemon_config(tmp_path, int8_model_path, {"source": "replay", "path": tmp_path}, mqtt={"port": 70000})
    assert run_main(str(config)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "error: config key 'mqtt.port': 70000 is not allowed (an integer 1-65535)\n"


def test_missing_camera_is_waited_for_and_sigterm_stops_cleanly(tmp_path, int8_model_path):
    if Path("/dev/video0").exists() or picamera2_installed():
        pytest.skip("this machine may have a camera")
    config = daemon_config(
        tmp_path, int8_model_path, {"source": "auto", "reopen_min_delay": 0.05, "reopen_max_delay": 0.2}
    )
    stderr = tmp_path / "stderr.txt"
    with open(stderr, "w") as err_file:
        process = start_run(config, stdout=subprocess.DEVNULL, stderr=err_file)
        try:
            deadline = time.monotonic() + 60
            # Several attempts, still running: the first reminder comes after two at the longest delay.
            while "INFO edge.sources: still waiting for camera (" not in stderr.read_text():
                assert process.poll() is None and time.monotonic() < deadline, stderr.read_text()
                time.sleep(0.1)
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
    err = stderr.read_text()
    assert code == 0, err
    assert "Traceback" not in err and " ERROR " not in err
    waiting = [line for line in err.splitlines() if "edge.sources: waiting for camera: no camera found" in line]
    assert len(waiting) == 1 and "/dev/video0 does not exist" in waiting[0]
    # Told once as a warning; the retries that fail the same way are no warnings of their own.
    assert [line for line in err.splitlines() if " WARNING edge.sources: " in line] == waiting
    stats_lines = [line for line in err.splitlines() if "stats: " in line]
    assert any("source waiting (waiting for camera: no camera found" in line for line in stats_lines)
    # Before any frame there is no timing to tell, and it is said in words.
    assert all(", no frame timed, " in line and "None" not in line for line in stats_lines), stats_lines
    assert err.splitlines()[-1].endswith(
        "stopped after 0 frames: 0 event(s) made, 0 delivered, 0 lost "
        "(0 dropped from a full outbox, 0 rejected by the broker, 0 undelivered at stop)"
    )


def test_model_that_is_not_a_model_exits_4(tmp_path, int8_model_path, capsys):
    fake = tmp_path / "broken.tflite"
    fake.write_bytes(int8_model_path.read_bytes()[:1000])
    config = daemon_config(tmp_path, fake, {"source": "replay", "path": tmp_path})
    assert run_main(str(config)) == 4
    err = capsys.readouterr().err
    assert "broken.tflite" in err and "Traceback" not in err


def test_a_corrupt_replay_image_is_skipped_with_one_line(tmp_path, int8_model_path, photo_paths, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "0.jpg").symlink_to(photo_paths[0])
    (folder / "1.jpg").write_bytes(b"\xff\xd8 truncated")
    (folder / "2.jpg").symlink_to(photo_paths[0])
    config = daemon_config(tmp_path, int8_model_path, {"source": "replay", "path": folder})
    assert run_main(str(config)) == 0
    err = capsys.readouterr().err
    skipped = [line for line in err.splitlines() if "1.jpg" in line]
    assert len(skipped) == 1 and re.search(r"WARNING edge\.sources: replay: skipping image '.*1\.jpg'", skipped[0])
    assert "stopped after 2 frames" in err and "Traceback" not in err


def test_a_replay_of_only_bad_images_exits_3_naming_the_folder(tmp_path, int8_model_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "0.jpg").write_bytes(b"\xff\xd8 truncated")
    (folder / "1.png").write_bytes(b"")
    config = daemon_config(tmp_path, int8_model_path, {"source": "replay", "path": folder, "loop": True})
    assert run_main(str(config)) == 3
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "none of its 2 image file(s) can be read" in errors[0] and str(folder) in errors[0]


# --- SIGHUP reload ----------------------------------------------------------------------------------------


def _read_events_until(process, lines: list[dict], predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate(lines):
        assert time.monotonic() < deadline, f"timed out; events so far: {[(e['type'], e['device_id']) for e in lines]}"
        line = process.stdout.readline()
        assert line, "the daemon closed stdout"
        lines.extend(parse_event_lines(line))


def test_sighup_reloads_and_a_bad_reload_keeps_the_running_config(tmp_path, int8_model_path, photo_paths, blank):
    scene = build_scene(tmp_path / "frames", blank, [(photo_paths[0], 2), ("blank", 4)])
    camera = {"source": "replay", "path": scene.folder, "fps": 20.0, "loop": True}
    fast = {"debounce_frames": 1, "clear_after_seconds": 0.1}
    config = daemon_config(tmp_path, int8_model_path, camera, events=fast)
    process = start_run(config)
    events: list[dict] = []
    try:
        _read_events_until(process, events, lambda e: len(e) >= 2, timeout=60)
        daemon_config(tmp_path, int8_model_path, camera, events=fast, device={"id": "renamed"})
        process.send_signal(signal.SIGHUP)
        _read_events_until(process, events, lambda e: e[-1]["device_id"] == "renamed", timeout=30)
        renamed_at = len(events)
        daemon_config(tmp_path, int8_model_path, camera, events={"debounce_frames": 0})
        process.send_signal(signal.SIGHUP)
        _read_events_until(process, events, lambda e: len(e) >= renamed_at + 4, timeout=30)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    events += parse_event_lines(out)
    assert process.returncode == 0
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert len({e["boot_id"] for e in events}) == 1
    assert all(e["device_id"] == "renamed" for e in events[renamed_at - 1 :])
    assert "configuration reloaded (changed: device, mqtt)" in err, err  # the topic prefix holds the id
    assert (
        "reload failed, keeping the running configuration: "
        "config key 'events.debounce_frames': 0 is not allowed (an integer 1-1000)" in err
    )
    assert "Traceback" not in err


# --- snapshots and stats ----------------------------------------------------------------------------------


def test_snapshots_state_and_stats_reach_the_sink(tmp_path, int8_model_path, two_photos, blank):
    first, first_count, _, _ = two_photos
    scene = build_scene(tmp_path / "frames", blank, [("blank", 1), (first, 3), ("blank", 14)])
    config = load_config(
        daemon_config(
            tmp_path,
            int8_model_path,
            {"source": "replay", "path": scene.folder, "fps": FPS},
            snapshot={"enabled": True, "max_bytes": 20_000, "quality": 90},
        )
    )
    sink: EventSink = RecordingSink()
    daemon = build_daemon(config, sink=sink, notifier=SystemdNotifier(environ={}))
    assert daemon.run() == 0
    kinds = [kind for kind, _ in sink.calls]
    # Initial state and placeholder picture, then per event: the event, the new state, and the
    # snapshot only while faces are in view (it is the *last face*); a clean stop says "nobody".
    assert kinds[:1] == ["state"]
    flow = [k for k in kinds if k != "stats"]
    assert flow == ["state", "placeholder", "event", "state", "snapshot", "event", "state", "state"]
    snapshots = [payload for kind, payload in sink.calls if kind in ("placeholder", "snapshot")]
    for jpeg in snapshots:
        assert len(jpeg) <= 20_000 and jpeg[:2] == b"\xff\xd8"
    placeholder = np.asarray(Image.open(io.BytesIO(snapshots[0])))
    assert placeholder.std() < 2  # a plain frame, no camera image before the first face
    assert Image.open(io.BytesIO(snapshots[1])).size[0] <= load_image(first).shape[1]
    states = [payload for kind, payload in sink.calls if kind == "state"]
    assert (states[1].present, states[1].count) == (True, first_count)
    assert (states[-2].present, states[-2].count) == (False, 0)
    assert (states[-1].present, states[-1].count, states[-1].last_seen) == (False, 0, states[1].last_seen)
    stats = [payload for kind, payload in sink.calls if kind == "stats"]
    assert stats, "a 1.8 s run with a 1 s interval publishes stats"
    figures = stats[0]
    assert figures["fps"] > 0 and figures["frames"] > 0
    assert 0 < figures["invoke_ms_p50"] <= figures["invoke_ms_p95"]
    assert figures["invoke_ms_p50"] <= figures["detect_ms_p50"]
    assert figures["dropped_frames"] == 0 and figures["source_state"] == "ok" and figures["source_reopens"] == 0
    assert figures["queue_depth"] == 0 and figures["mqtt_state"] is None  # delivered at once, no MQTT
    assert sink.closed_with == config.mqtt.flush_timeout


def test_the_status_line_before_any_frame_says_so_in_words(tmp_path, int8_model_path):
    config = load_config(daemon_config(tmp_path, int8_model_path, {"source": "replay", "path": tmp_path}))
    daemon = build_daemon(config, sink=RecordingSink(), notifier=SystemdNotifier(environ={}))
    waiting = SourceHealth("waiting", 0, 0, 0, "no camera found: /dev/video0 does not exist")
    stats = daemon.stats(time.monotonic(), waiting)
    assert stats["invoke_ms_p50"] is None  # the message keeps its null (Home Assistant: unknown)
    # A broker being connected to, with no error to tell yet.
    line = status_line({**stats, "mqtt_state": "connecting", "mqtt_error": None}, waiting)
    assert "None" not in line
    assert line.startswith("0.0 fps, 0 face(s), no frame timed, dropped 0, source waiting (waiting for camera: no ")
    assert line.endswith(", mqtt connecting, 0 event(s) waiting")


def test_snapshot_is_capped_by_quality_then_size(photo_paths, detector):
    pixels = load_image(photo_paths[1])
    detections = detector.detect(pixels)
    roomy = encode_snapshot(pixels, "RGB", detections, max_bytes=5_000_000, quality=95)
    tight = encode_snapshot(pixels, "RGB", detections, max_bytes=15_000, quality=95)
    assert Image.open(io.BytesIO(roomy)).size == (pixels.shape[1], pixels.shape[0])
    assert len(tight) <= 15_000 < len(roomy)
    assert Image.open(io.BytesIO(tight)).size[0] < pixels.shape[1]  # had to be scaled down
    assert encode_snapshot(pixels, "RGB", detections, max_bytes=300, quality=95) is None
    # BGR in, the same picture out.
    same = encode_snapshot(np.ascontiguousarray(pixels[:, :, ::-1]), "BGR", detections, max_bytes=5_000_000, quality=95)
    assert same == roomy


def test_snapshot_draws_the_boxes():
    pixels = np.full((240, 320, 3), 40, np.uint8)
    box = Detections(np.array([[0.25, 0.25, 0.75, 0.75]], np.float32), np.array([0.9], np.float32))
    drawn = np.asarray(Image.open(io.BytesIO(encode_snapshot(pixels, "RGB", box, 100_000, 95))))
    green = (drawn[:, :, 1] > 180) & (drawn[:, :, 0] < 100)
    assert green[60:180, 77:84].any(axis=1).mean() > 0.9  # the left edge of the box, x = 80
    assert not green[100:140, 120:200].any()  # inside stays untouched


def test_percentiles_in_milliseconds():
    assert percentile_ms([], 50) is None
    assert percentile_ms([0.001, 0.002, 0.003, 0.004, 0.100], 50) == 3.0
    assert percentile_ms([0.010] * 19 + [0.200], 95) == pytest.approx(19.5, abs=0.01)


@pytest.mark.skipif(picamera2_installed(), reason="needs a machine where picamera2 cannot open a camera")
def test_reload_switches_the_camera_or_keeps_the_old_one(tmp_path, int8_model_path, photo_paths, blank, caplog):
    faces_folder = build_scene(tmp_path / "faces", blank, [(photo_paths[0], 1)]).folder
    empty_folder = build_scene(tmp_path / "empty", blank, [("blank", 1)]).folder
    events_config = {"debounce_frames": 1, "clear_after_seconds": 0.3}
    replay = {"source": "replay", "fps": 20.0, "loop": True}
    path = daemon_config(tmp_path, int8_model_path, {**replay, "path": faces_folder}, events=events_config)
    events = io.StringIO()
    daemon = build_daemon(
        load_config(path), config_path=path, sink=StdoutSink(events), notifier=SystemdNotifier(environ={})
    )
    caplog.set_level("INFO", logger="edge")
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(daemon.run()))
    runner.start()

    def wait_for(predicate, timeout=20.0):
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline and runner.is_alive()
            time.sleep(0.02)

    try:
        wait_for(lambda: '"face_detected"' in events.getvalue())
        # A camera that cannot be opened: logged, and the replay goes on.
        daemon_config(tmp_path, int8_model_path, {"source": "picamera2"}, events=events_config)
        daemon.request_reload()
        wait_for(lambda: "reload failed" in caplog.text)
        processed = daemon.frames_processed
        wait_for(lambda: daemon.frames_processed > processed + 5)
        assert '"face_cleared"' not in events.getvalue()
        # A camera that works: the face-free replay takes over and the face is cleared.
        daemon_config(tmp_path, int8_model_path, {**replay, "path": empty_folder}, events=events_config)
        daemon.request_reload()
        wait_for(lambda: '"face_cleared"' in events.getvalue())
    finally:
        daemon.request_stop()
        runner.join(timeout=30)
    assert codes == [0]
    assert "reload failed, keeping the running configuration: picamera2 is not installed" in caplog.text
    assert "configuration reloaded (changed: camera)" in caplog.text
    assert [e["type"] for e in parse_event_lines(events.getvalue())] == ["face_detected", "face_cleared"]


def test_a_reader_closing_stdout_stops_the_daemon_cleanly(tmp_path, int8_model_path, photo_paths, blank):
    """`edge-face run ... | head -1`: the daemon stops with 0 and no traceback."""
    scene = build_scene(tmp_path / "frames", blank, [(photo_paths[0], 2), ("blank", 4)])
    config = daemon_config(
        tmp_path,
        int8_model_path,
        {"source": "replay", "path": scene.folder, "fps": 20.0, "loop": True},
        events={"debounce_frames": 1, "clear_after_seconds": 0.1},
    )
    process = start_run(config)
    try:
        first = process.stdout.readline()
        process.stdout.close()
        err = process.stderr.read()
        process.wait(timeout=30)
    finally:
        process.kill()
    assert parse_event_lines(first)[0]["type"] == "face_detected"
    assert process.returncode == 0
    assert "stdout was closed by its reader; stopping" in err and "Traceback" not in err


def test_the_daemon_never_imports_heavy_frameworks(project_root):
    """Memory: TensorFlow alone is hundreds of MB; the daemon needs only a TFLite interpreter."""
    probe = (
        "import sys, edge, edge.cli, edge.daemon.loop, edge.mqtt.sink, edge.mqtt.outbox, edge.sources.auto\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'torch', 'cv2', 'jax'}))"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=project_root, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


class UndeliveringSink(RecordingSink):
    """A transport whose broker never acknowledges: every event stays in the outbox."""

    def publish_event(self, event) -> None:
        self.calls.append(("event", event))


def test_the_ha_outbox_entity_reads_the_outbox_depth_from_the_stats(tmp_path, int8_model_path, two_photos, blank):
    import json

    import jinja2

    from edge.mqtt.discovery import DeviceTopics, build_discovery_payload
    from edge.mqtt.sink import encode_json

    first, _, _, _ = two_photos
    scene = build_scene(tmp_path / "frames", blank, [(first, 3), ("blank", 12)])
    config = load_config(
        daemon_config(tmp_path, int8_model_path, {"source": "replay", "path": scene.folder, "fps": FPS})
    )
    sink = UndeliveringSink()
    daemon = build_daemon(config, sink=sink, notifier=SystemdNotifier(environ={}))
    assert daemon.run() == 0
    waiting = len(daemon.outbox)
    assert waiting == len([kind for kind, _ in sink.calls if kind == "event"]) == 2  # detected, cleared
    stats = daemon.stats(time.monotonic(), daemon.grabber.health)
    topics = DeviceTopics.under("edge-face/x")
    component = build_discovery_payload("x", topics, sw_version="0", model_id="m")["cmps"]["outbox_depth"]
    assert component["state_topic"] == topics.stats
    rendered = (
        jinja2.Environment().from_string(component["value_template"]).render(value_json=json.loads(encode_json(stats)))
    )  # as published on the stats topic
    assert rendered == str(waiting)


@pytest.mark.parametrize("profile", ["160x120", "256x192"])
def test_the_input_profile_chooses_the_model_the_events_name(tmp_path, project_root, blank, profile):
    """[detector] input = "160x120" (or "256x192") without a model: the daemon runs the packaged
    model of that size, and its events (and Home Assistant's device, which shows the same model
    id) say so."""
    import os

    from edge.detect.sidecar import read_sidecar
    from edge.models import PACKAGED_MODELS, packaged_model_path

    chips = Path(os.environ.get("EDGE_FACE_FACES_IDENTITY") or project_root.parent / "shared" / "faces-identity")
    chip = sorted((chips / "johns").glob("*/*.jpg"))[0]
    door = np.full((480, 640, 3), 128, np.uint8)
    door[140:340, 220:420] = np.asarray(Image.open(chip).convert("RGB").resize((200, 200)))
    Image.fromarray(door).save(tmp_path / "door.png")
    scene = build_scene(tmp_path / "frames", blank, [("blank", 1), (tmp_path / "door.png", 4)])
    config = load_config(
        write_config(
            tmp_path / "edge-face.toml",
            {
                "device": {"id": "door"},
                "camera": {"source": "replay", "path": scene.folder, "fps": FPS},
                "detector": {"input": profile},
                "events": {"debounce_frames": 2},
            },
        )
    )
    sink = RecordingSink()
    daemon = build_daemon(config, sink=sink, notifier=SystemdNotifier(environ={}))
    small = read_sidecar(packaged_model_path(PACKAGED_MODELS[profile]))
    width, height = (int(side) for side in profile.split("x"))
    assert daemon.detector.input_size == (width, height) and daemon.detector.model_id == small.model_id
    assert daemon.run() == 0
    events = [payload for kind, payload in sink.calls if kind == "event"]
    assert [(e.type, e.face_count, e.model_id) for e in events[:1]] == [("face_detected", 1, small.model_id)]
