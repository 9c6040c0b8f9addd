"""The device's identity in Home Assistant: no ghost left behind, no live device removed.
Real daemons, a real Mosquitto, and what it retains (what HA sees after any restart)."""

from __future__ import annotations

import json
import shutil
import signal
import time

import pytest
from broker import MosquittoBroker, Subscriber, free_port
from daemon_support import daemon_config, face_scene
from identity_support import Running, retained, wait_json

from edge.daemon.snapshot import placeholder_jpeg
from edge.sources.imageio import load_image

pytestmark = pytest.mark.integration


def discovery(device: str) -> str:
    return f"homeassistant/device/{device}/config"


@pytest.fixture(scope="module")
def face_photo(photo_paths, detector):
    return min(photo_paths, key=lambda p: (len(detector.detect(load_image(p))) == 0, p.name))


def test_a_state_directory_copied_from_a_running_device_never_removes_it(tmp_path, int8_model_path, face_photo, blank):
    scene = face_scene(tmp_path / "scene", face_photo, blank)
    with MosquittoBroker(tmp_path / "broker") as broker, Subscriber(broker, ["homeassistant/device/#"]) as live:
        original = Running(
            daemon_config(tmp_path / "a.toml", broker, int8_model_path, scene, "cam-a", tmp_path / "a-state"),
            tmp_path / "a.log",
        )
        try:
            wait_json(live, discovery("cam-a"), lambda d: "cmps" in d, "cam-a announced")
            # The SD card is cloned while cam-a runs; the clone's config gets its own name.
            shutil.copytree(tmp_path / "a-state", tmp_path / "b-state")
            clone = Running(
                daemon_config(tmp_path / "b.toml", broker, int8_model_path, scene, "cam-b", tmp_path / "b-state"),
                tmp_path / "b.log",
            )
            try:
                wait_json(live, discovery("cam-b"), lambda d: "cmps" in d, "cam-b announced")
                time.sleep(2.0)
                kept = retained(broker, [discovery("cam-a"), "edge-face/cam-a/status"])
                assert discovery("cam-a") in kept, "the clone removed the running device"
                assert json.loads(kept[discovery("cam-a")])["dev"]["identifiers"] == ["edge-face-cam-a"]
                assert kept["edge-face/cam-a/status"] == b"online"
                clone.wait_log("is online on broker")
            finally:
                code, log = clone.stop()
            assert code == 0 and "removing that one" not in log, log
        finally:
            assert original.stop()[0] == 0
        # The clone's record is its own now: its next start does not look at cam-a again.
        record = json.loads((tmp_path / "b-state" / "announced.json").read_text())
        assert record["device_id"] == "cam-b" and record["retiring"] == []


def test_a_rename_while_the_broker_is_away_is_removed_when_it_returns(tmp_path, int8_model_path, face_photo, blank):
    scene = face_scene(tmp_path / "scene", face_photo, blank)
    config = tmp_path / "edge-face.toml"
    broker = MosquittoBroker(tmp_path / "broker", persistence=True, port=free_port()).start()
    try:
        daemon_config(config, broker, int8_model_path, scene, "porch", tmp_path / "state")
        daemon = Running(config, tmp_path / "daemon.log")
        try:
            with Subscriber(broker, ["homeassistant/device/#"]) as live:
                wait_json(live, discovery("porch"), lambda d: "cmps" in d, "porch announced")
            broker.stop()
            daemon_config(config, broker, int8_model_path, scene, "porch-2", tmp_path / "state")
            daemon.process.send_signal(signal.SIGHUP)
            daemon.wait_log("configuration reloaded (changed: device")
            time.sleep(1.0)
            broker.start()  # the persisted retained messages of 'porch' are back
            with Subscriber(broker, ["homeassistant/device/#"]) as live:
                wait_json(live, discovery("porch-2"), lambda d: "cmps" in d, "porch-2 announced", timeout=30)
                # Without a restart of the daemon: the old name goes once the broker is back.
                live.wait_until(
                    lambda: live.on(discovery("porch")) and live.on(discovery("porch"))[-1].payload == b"",
                    30,
                    "porch removed",
                )
            daemon.wait_log("removed device 'porch' from broker")  # every removal acknowledged
            kept = retained(broker, ["homeassistant/device/#", "edge-face/#"])
            left = sorted(t for t in kept if t.startswith("edge-face/porch/") or t == discovery("porch"))
            assert left == [], left
            assert discovery("porch-2") in kept and kept["edge-face/porch-2/status"] == b"online"
        finally:
            code, log = daemon.stop()
        assert code == 0, log
        assert json.loads((tmp_path / "state" / "announced.json").read_text())["retiring"] == []
    finally:
        broker.stop()


def test_zones_removed_while_stopped_are_announced_as_removed_at_start(tmp_path, int8_model_path, face_photo, blank):
    scene = face_scene(tmp_path / "scene", face_photo, blank)
    config = tmp_path / "edge-face.toml"
    zone = '\n[[scene.zones]]\nname = "{}"\npolygon = [[0, 0], [1, 0], [1, 1], [0, 1]]\n'
    with MosquittoBroker(tmp_path / "broker") as broker, Subscriber(broker, ["homeassistant/device/#"]) as live:
        daemon_config(config, broker, int8_model_path, scene, "yard", tmp_path / "state")
        base = config.read_text()
        config.write_text(base + zone.format("door") + zone.format("window"))
        daemon = Running(config, tmp_path / "a.log")
        try:
            wait_json(live, discovery("yard"), lambda d: "zone_window_present" in d.get("cmps", {}), "zones announced")
        finally:
            assert daemon.stop()[0] == 0
        config.write_text(base + zone.format("door"))  # the window zone is deleted while stopped
        live.clear()
        daemon = Running(config, tmp_path / "b.log")
        try:
            announced = wait_json(live, discovery("yard"), lambda d: "cmps" in d, "announced again")
        finally:
            assert daemon.stop()[0] == 0
    components = announced["cmps"]
    assert components["zone_window_present"] == {"p": "binary_sensor"}
    assert components["zone_window_count"] == {"p": "sensor"}
    assert "state_topic" in components["zone_door_present"]


def test_a_restart_keeps_the_last_real_face_instead_of_the_placeholder(tmp_path, int8_model_path, face_photo, blank):
    faces = face_scene(tmp_path / "faces", face_photo, blank)
    empty = face_scene(tmp_path / "empty", blank, blank)  # no face at all
    config = tmp_path / "edge-face.toml"
    snapshot = "edge-face/attic/snapshot"
    placeholder = placeholder_jpeg()
    with MosquittoBroker(tmp_path / "broker") as broker, Subscriber(broker, [snapshot]) as live:
        daemon_config(config, broker, int8_model_path, faces, "attic", tmp_path / "state")
        daemon = Running(config, tmp_path / "a.log")
        try:
            live.wait_until(lambda: any(m.payload not in (b"", placeholder) for m in live.on(snapshot)), 30, "a face")
        finally:
            assert daemon.stop()[0] == 0
        face = retained(broker, [snapshot])[snapshot]
        assert face != placeholder
        daemon_config(config, broker, int8_model_path, empty, "attic", tmp_path / "state")
        live.clear()
        daemon = Running(config, tmp_path / "b.log")
        try:
            daemon.wait_log("ready: first frame processed")
            time.sleep(2.5)  # well past the look at the retained picture
            assert retained(broker, [snapshot]) == {snapshot: face}
            assert [m.payload for m in live.on(snapshot) if not m.retain] == []
        finally:
            assert daemon.stop()[0] == 0
        # Without a picture on the broker the placeholder is published, so HA shows an image.
        with Subscriber(broker, [snapshot]) as clear:
            clear.client.publish(snapshot, b"", qos=1, retain=True).wait_for_publish(5)
        daemon = Running(config, tmp_path / "c.log")
        try:
            with Subscriber(broker, [snapshot]) as late:
                late.wait_until(lambda: any(m.payload == placeholder for m in late.on(snapshot)), 15, "placeholder")
        finally:
            assert daemon.stop()[0] == 0


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_last_face_bigger_than_the_command_cap_is_kept_at_restart(tmp_path, int8_model_path, blank, protocol):
    """snapshot.max_bytes may exceed the 256 KiB the client reads for commands: the look at its
    own retained picture must still see it (MQTT 5: the broker would drop it for us and the
    placeholder replace it; 3.1.1: the client would end the connection)."""
    empty = face_scene(tmp_path / "empty", blank, blank)
    config = tmp_path / "edge-face.toml"
    snapshot = "edge-face/porch/snapshot"
    big_face = bytes(range(256)) * 2000  # 512,000 B, as a previous run with a big cap left it
    with MosquittoBroker(tmp_path / "broker") as broker:
        with Subscriber(broker, [snapshot]) as setter:
            setter.client.publish(snapshot, big_face, qos=1, retain=True).wait_for_publish(5)
        daemon_config(
            config,
            broker,
            int8_model_path,
            empty,
            "porch",
            tmp_path / "state",
            snapshot={"max_bytes": 600_000},
            mqtt={"protocol": protocol},
        )
        daemon = Running(config, tmp_path / "daemon.log")
        try:
            daemon.wait_log("ready: first frame processed")
            time.sleep(2.5)  # well past the look at the retained picture
            assert retained(broker, [snapshot]) == {snapshot: big_face}
        finally:
            code, log = daemon.stop()
        assert code == 0 and "was not read" not in log, log


def test_a_reload_that_moves_the_state_directory_is_followed(tmp_path, int8_model_path, face_photo, blank):
    scene = face_scene(tmp_path / "scene", face_photo, blank)
    config = tmp_path / "edge-face.toml"
    old_dir, new_dir = tmp_path / "state-old", tmp_path / "state-new"
    prefix = "edge-face/loft"
    with MosquittoBroker(tmp_path / "broker") as broker, Subscriber(broker, [f"{prefix}/#"]) as live:
        daemon_config(config, broker, int8_model_path, scene, "loft", old_dir)
        daemon = Running(config, tmp_path / "daemon.log")
        try:
            wait_json(live, f"{prefix}/controls", lambda c: c.get("snapshots") == "ON", "controls announced")
            live.client.publish(f"{prefix}/set/score_threshold", "0.6", qos=1).wait_for_publish(5)
            wait_json(live, f"{prefix}/controls", lambda c: c.get("score_threshold") == 0.6, "threshold echoed")
            daemon_config(config, broker, int8_model_path, scene, "loft", new_dir)
            daemon.process.send_signal(signal.SIGHUP)
            daemon.wait_log("configuration reloaded (changed: device")
            time.sleep(0.5)  # the identity record is written beside the frame loop
            # The values in force moved with the folder; a new command is stored there.
            assert json.loads((new_dir / "controls.json").read_text()) == {"score_threshold": 0.6}
            assert json.loads((new_dir / "announced.json").read_text())["device_id"] == "loft"
            live.client.publish(f"{prefix}/set/snapshots", "OFF", qos=1).wait_for_publish(5)
            wait_json(live, f"{prefix}/controls", lambda c: c.get("snapshots") == "OFF", "snapshots echoed")
            time.sleep(0.5)
        finally:
            code, log = daemon.stop()
        assert code == 0, log
    assert json.loads((new_dir / "controls.json").read_text()) == {"score_threshold": 0.6, "snapshots": False}
    assert json.loads((old_dir / "controls.json").read_text()) == {"score_threshold": 0.6}  # left as it was
    assert log.count("MQTT: connected to") == 1  # moving the folder does not reconnect
    assert f"controls and the announced identity are kept in '{new_dir}' from now on" in log
