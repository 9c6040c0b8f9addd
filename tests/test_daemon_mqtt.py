"""The real daemon (`python -m edge.cli run --config`) publishing to a real Mosquitto.

Frames: a replay folder of real upstream photos and face-free frames in which faces appear,
change count and disappear; the expected events come from the presence rules applied to
what the int8 model finds in each photo (nothing copied from a run). A paho subscriber
checks the exact event sequence and schema, the retained state, status online -> stopped
on SIGTERM, offline after SIGKILL, Home Assistant discovery, no loss across a broker
restart, TLS with a password file, and the messages for an unusable or absent broker.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from broker import MosquittoBroker, Subscriber, make_test_pki
from cli_support import start_run
from daemon_support import EVENT_FIELDS, build_scene, write_config

from edge.scene.events import faces_from_detections
from edge.sources.imageio import load_image

pytestmark = pytest.mark.integration

DEVICE = "porch-e2e"
PREFIX = f"edge-face/{DEVICE}"
FPS = 10.0
DEBOUNCE = 3
CLEAR_AFTER = 0.8  # s: the 2 s face-free run clears, the one-frame gap does not
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
EVENT_KEYS = set(EVENT_FIELDS)
STATS_KEYS = {"fps", "invoke_ms_p50", "invoke_ms_p95", "dropped_frames", "queue_depth", "reconnects"}


@pytest.fixture(scope="module")
def photos(photo_paths, detector) -> list[tuple[Path, int]]:
    """Two photos with different, non-zero face counts as the model sees them."""
    counted = sorted((len(detector.detect(load_image(p))), p.name, p) for p in photo_paths)
    with_faces = [(p, n) for n, _, p in counted if n > 0]
    first = with_faces[0]
    second = next((p, n) for p, n in with_faces if n != first[1])
    return [first, second]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def scene_plan(photos, blank) -> list:
    (first, _), (second, _) = photos
    return [
        ("blank", 2),
        (first, 6),  # face_detected on its 3rd frame
        ("blank", 1),  # a one-frame miss: no event
        (second, 6),  # count_changed on its 3rd frame
        ("blank", 20),  # 2 s without a face: face_cleared
        (first, 2),  # shorter than the debounce: no event
        ("blank", 2),
    ]


def expected_events(photos, detector) -> list[dict]:
    (first, first_count), (second, second_count) = photos

    def described(kind: str, photo: Path | None, count: int) -> dict:
        if photo is None:
            return {"type": kind, "face_count": 0, "faces": [], "frame": (640, 480)}
        pixels = load_image(photo)
        detections = detector.detect(pixels)
        faces = [f.to_dict() for f in faces_from_detections(detections.boxes, detections.scores)]
        return {"type": kind, "face_count": count, "faces": faces, "frame": (pixels.shape[1], pixels.shape[0])}

    return [
        described("face_detected", first, first_count),
        described("count_changed", second, second_count),
        described("face_cleared", None, 0),
    ]


def daemon_config(tmp_path: Path, model: Path, camera: dict, mqtt: dict, **sections) -> Path:
    tables = {
        "device": {"id": DEVICE},
        "camera": camera,
        "detector": {"model": model},
        "events": {"debounce_frames": DEBOUNCE, "clear_after_seconds": CLEAR_AFTER},
        "stats": {"interval_seconds": 1.0},
        "mqtt": {"keepalive": 5, "reconnect_min_delay": 0.1, "reconnect_max_delay": 0.5, **mqtt},
    }
    tables.update(sections)
    return write_config(tmp_path / "edge-face.toml", tables)


def finish(process: subprocess.Popen, timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        process.kill()
    return process.returncode, out, err


def events_on(subscriber: Subscriber) -> list[dict]:
    return [json.loads(m.payload) for m in subscriber.on(f"{PREFIX}/events")]


def unique_sequences(events: list[dict]) -> list[int]:
    """Sequences in arrival order, QoS 1 re-deliveries (same boot and sequence) removed."""
    seen, order = set(), []
    for event in events:
        if (event["boot_id"], event["sequence"]) not in seen:
            seen.add((event["boot_id"], event["sequence"]))
            order.append(event["sequence"])
    return order


@pytest.fixture
def broker(tmp_path):
    with MosquittoBroker(tmp_path / "broker") as running:
        yield running


def test_replayed_scene_publishes_the_exact_events_state_and_discovery(
    tmp_path, broker, int8_model_path, detector, photos, blank
):
    scene = build_scene(tmp_path / "frames", blank, scene_plan(photos, blank))
    config = daemon_config(
        tmp_path,
        int8_model_path,
        {"source": "replay", "path": scene.folder, "fps": FPS},
        {"host": broker.host, "port": broker.port},
    )
    with Subscriber(broker, [f"{PREFIX}/#", "homeassistant/#"]) as live:
        code, out, err = finish(start_run(config))  # a finite replay ends by itself
        assert code == 0, err
        assert out == "" and "Traceback" not in err  # with [mqtt] nothing goes to stdout

        messages = live.wait_for(f"{PREFIX}/events", 3)
        assert all(m.qos == 1 and not m.retain for m in messages)
        events = events_on(live)
        want = expected_events(photos, detector)
        assert [(e["type"], e["face_count"]) for e in events] == [(w["type"], w["face_count"]) for w in want]
        assert [e["sequence"] for e in events] == [1, 2, 3]
        assert len({e["boot_id"] for e in events}) == 1 and re.fullmatch(r"[0-9a-f]{32}", events[0]["boot_id"])
        for event, expected in zip(events, want, strict=True):
            assert set(event) == EVENT_KEYS
            assert event["device_id"] == DEVICE and event["model_id"] == detector.model_id
            assert ISO_UTC.match(event["time"])
            assert (event["frame_width"], event["frame_height"]) == expected["frame"]
            assert len(event["faces"]) == event["face_count"]
            for got, face in zip(event["faces"], expected["faces"], strict=True):
                np.testing.assert_allclose(got["box"], face["box"], atol=1e-6)
                assert got["score"] == pytest.approx(face["score"], abs=1e-4)

        statuses = [m.payload for m in live.on(f"{PREFIX}/status")]
        assert statuses[0] == b"online" and statuses[-1] == b"stopped" and b"offline" not in statuses
        stats = [json.loads(m.payload) for m in live.on(f"{PREFIX}/stats")]
        assert stats and set(stats[0]) >= STATS_KEYS
        assert stats[0]["queue_depth"] is not None and stats[0]["reconnects"] == 0
        discovery = json.loads(live.wait_for(f"homeassistant/device/{DEVICE}/config")[0].payload)
        active = {key for key, component in discovery["cmps"].items() if set(component) != {"p"}}
        assert (
            {"dev", "o", "cmps"} <= set(discovery)
            and active
            >= {
                "face_present",
                "face_count",
                "last_seen",
                "face_event",
                "detection",
                "snapshots",
                "score_threshold",
                "reannounce",
                "fps",
                "inference_ms",
                "dropped_frames",
                "source_state",
                "outbox_depth",
                "uptime",
            }
            and "snapshot" not in active
        )
        # Every stats key a diagnostic entity reads is in the stats the daemon really publishes.
        for key, component in discovery["cmps"].items():
            if component.get("state_topic") == f"{PREFIX}/stats":
                for field in re.findall(r"value_json\.(\w+)", component["value_template"]):
                    assert field in stats[0], (key, field)
        assert discovery["dev"]["model_id"] == detector.model_id

    with Subscriber(broker, [f"{PREFIX}/state", f"{PREFIX}/status"]) as late:
        state = late.wait_for(f"{PREFIX}/state")[0]
        assert state.retain
        final = json.loads(state.payload)
        assert final["present"] is False and final["count"] == 0 and ISO_UTC.match(final["last_seen"])
        assert late.wait_for(f"{PREFIX}/status")[0].payload == b"stopped"


def looping_scene(tmp_path, photos, blank):
    (first, _), _ = photos
    return build_scene(tmp_path / "loop", blank, [(first, 2), ("blank", 3)])


FAST_EVENTS = {"debounce_frames": 1, "clear_after_seconds": 0.1}


def test_sigterm_over_tls_with_a_password_file_ends_with_stopped(tmp_path, int8_model_path, photos, blank, pki):
    scene = looping_scene(tmp_path, photos, blank)
    password = tmp_path / "mqtt_password"
    password.write_text("daemon-secret\n")
    password.chmod(0o600)
    tls = (pki.server_cert, pki.server_key, pki.ca_file)
    users = {"edge": "daemon-secret", "ha": "ha-secret"}
    with MosquittoBroker(tmp_path / "tls", users=users, tls=tls) as broker:
        config = daemon_config(
            tmp_path,
            int8_model_path,
            {"source": "replay", "path": scene.folder, "fps": 20.0, "loop": True},
            {
                "host": "localhost",
                "port": broker.port,
                "tls": True,
                "ca_file": pki.ca_file,
                "username": "edge",
                "password_file": password,
            },
            events=FAST_EVENTS,
        )
        with Subscriber(broker, [f"{PREFIX}/#"], username="ha", password="ha-secret", ca_file=pki.ca_file) as live:
            process = start_run(config)
            try:
                live.wait_for_payload(f"{PREFIX}/status", b"online", timeout=60)
                live.wait_for(f"{PREFIX}/events", 3, timeout=30)
            finally:
                process.send_signal(signal.SIGTERM)
            code, _, err = finish(process)
            assert code == 0, err
            live.wait_for_payload(f"{PREFIX}/status", b"stopped")
            assert b"offline" not in [m.payload for m in live.on(f"{PREFIX}/status")]
            events = events_on(live)
            assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
            assert "daemon-secret" not in err and "Traceback" not in err


def test_sigkill_leaves_offline_from_the_last_will(tmp_path, broker, int8_model_path, photos, blank):
    scene = looping_scene(tmp_path, photos, blank)
    config = daemon_config(
        tmp_path,
        int8_model_path,
        {"source": "replay", "path": scene.folder, "fps": 20.0, "loop": True},
        {"host": broker.host, "port": broker.port},
    )
    with Subscriber(broker, [f"{PREFIX}/status"]) as live:
        process = start_run(config)
        try:
            live.wait_for_payload(f"{PREFIX}/status", b"online", timeout=60)
        finally:
            process.kill()
            process.communicate(timeout=30)
        live.wait_for_payload(f"{PREFIX}/status", b"offline", timeout=10)
    with Subscriber(broker, [f"{PREFIX}/status"]) as late:
        status = late.wait_for(f"{PREFIX}/status")[0]
        assert status.payload == b"offline" and status.retain


def test_broker_restart_mid_stream_loses_no_daemon_event(tmp_path, int8_model_path, photos, blank):
    scene = looping_scene(tmp_path, photos, blank)
    broker = MosquittoBroker(tmp_path / "broker", persistence=True).start()
    subscriber = Subscriber(broker, [f"{PREFIX}/events"], persistent=True, client_id="e2e-restart").start()
    process = None
    try:
        config = daemon_config(
            tmp_path,
            int8_model_path,
            {"source": "replay", "path": scene.folder, "fps": 20.0, "loop": True},
            {"host": broker.host, "port": broker.port},
            events=FAST_EVENTS,
        )
        process = start_run(config)
        subscriber.wait_for(f"{PREFIX}/events", 4, timeout=60)
        broker.stop()
        time.sleep(1.5)  # about 6 events happen while the broker is away
        broker.start()
        subscriber.wait_until(
            lambda: len(unique_sequences(events_on(subscriber))) >= 14, 30, "events after the restart"
        )
        process.send_signal(signal.SIGTERM)
        code, _, err = finish(process)
        assert code == 0, err
        assert "lost the connection" in err and "(reconnect," in err
        # Every event the daemon logged as made must reach the subscriber, once each, in order.
        produced = max(int(n) for n in re.findall(r"event (\d+) (?:face_detected|face_cleared|count_changed)", err))
        subscriber.wait_until(lambda: len(unique_sequences(events_on(subscriber))) >= produced, 10, "the last events")
        assert unique_sequences(events_on(subscriber)) == list(range(1, produced + 1))
    finally:
        if process is not None:
            process.kill()
        subscriber.stop()
        broker.stop()


def test_wrong_ca_exits_2_with_one_line(tmp_path, int8_model_path, photos, blank, pki):
    scene = looping_scene(tmp_path, photos, blank)
    tls = (pki.server_cert, pki.server_key, pki.ca_file)
    with MosquittoBroker(tmp_path / "tls", tls=tls) as broker:
        config = daemon_config(
            tmp_path,
            int8_model_path,
            {"source": "replay", "path": scene.folder},
            {"host": "localhost", "port": broker.port, "tls": True, "ca_file": pki.other_ca_file},
        )
        code, _out, err = finish(start_run(config))
    assert code == 2
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "certificate verify failed" in errors[0] and "mqtt.ca_file" in errors[0]
    assert "Traceback" not in err


def test_a_ca_file_that_is_not_pem_exits_2_naming_the_key(tmp_path, int8_model_path, photos, blank):
    """The file exists but holds no certificate: the config loader builds the TLS context the
    client will use, so this is a config error before anything starts (as in check-config)."""
    scene = looping_scene(tmp_path, photos, blank)
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("this is not a certificate\n")
    config = daemon_config(
        tmp_path,
        int8_model_path,
        {"source": "replay", "path": scene.folder},
        {"host": "localhost", "port": 8883, "tls": True, "ca_file": not_pem},
    )
    code, _out, err = finish(start_run(config))
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "'mqtt.ca_file'" in errors[0] and str(not_pem) in errors[0], err


def test_unreachable_broker_is_reported_and_the_replay_still_runs(tmp_path, int8_model_path, photos, blank):
    scene = build_scene(tmp_path / "frames", blank, [(photos[0][0], 4), ("blank", 2)])
    closed_port = MosquittoBroker(tmp_path / "never-started").port  # nothing listens there
    config = daemon_config(
        tmp_path,
        int8_model_path,
        {"source": "replay", "path": scene.folder, "fps": FPS},
        {"host": "127.0.0.1", "port": closed_port, "flush_timeout": 0.5},
    )
    code, _out, err = finish(start_run(config))
    assert code == 0, err
    assert f"MQTT broker 127.0.0.1:{closed_port} unreachable" in err
    # face_detected, never delivered: said so in the last line
    assert err.splitlines()[-1].endswith(
        "1 event(s) made, 0 delivered, 1 lost (0 dropped from a full outbox, "
        "0 rejected by the broker, 1 undelivered at stop)"
    )
    assert "Traceback" not in err
