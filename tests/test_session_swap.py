"""A running device must never look offline to Home Assistant because its own MQTT session
was replaced: the Snapshots switch and a reload that changes ``[mqtt]`` used to leave the
last will ("offline", retained) on the status topic each time. The real daemon, a real
Mosquitto, and a subscriber counting what HA would see on the availability topic."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from broker import MosquittoBroker, Subscriber
from daemon_support import daemon_config, face_scene
from identity_support import Running, retained, wait_json

from edge.sources.imageio import load_image

pytestmark = pytest.mark.integration

DEVICE = "hall-swap"
PREFIX = f"edge-face/{DEVICE}"
STATUS = f"{PREFIX}/status"


@pytest.fixture(scope="module")
def face_photo(photo_paths, detector):
    return min(photo_paths, key=lambda p: (len(detector.detect(load_image(p))) == 0, p.name))


@contextmanager
def online_daemon(
    tmp_path: Path, model: Path, photo: Path, blank: Path, topics: list[str]
) -> Iterator[tuple[MosquittoBroker, Subscriber, Running, Callable[[int], None]]]:
    """A broker, ``live`` subscribed to ``topics`` on it, and the daemon seen online there
    (keepalive 5); ``rewrite(keepalive)`` writes its config again with another keepalive, a
    change of [mqtt] that the next SIGHUP answers with a new session. The caller stops the
    daemon."""
    scene = face_scene(tmp_path / "scene", photo, blank)
    config = tmp_path / "edge-face.toml"
    with MosquittoBroker(tmp_path / "broker") as broker, Subscriber(broker, topics) as live:

        def rewrite(keepalive: int) -> None:
            daemon_config(config, broker, model, scene, DEVICE, tmp_path / "state", mqtt={"keepalive": keepalive})

        rewrite(5)
        daemon = Running(config, tmp_path / "daemon.log")
        try:
            live.wait_for_payload(STATUS, b"online", timeout=60)
        except BaseException:
            daemon.stop()
            raise
        yield broker, live, daemon, rewrite


def test_snapshot_toggles_and_mqtt_reloads_never_publish_offline(tmp_path, int8_model_path, face_photo, blank):
    everything = [f"{PREFIX}/#"]
    with online_daemon(tmp_path, int8_model_path, face_photo, blank, everything) as (broker, live, daemon, rewrite):
        try:
            wait_json(live, f"{PREFIX}/controls", lambda c: c.get("snapshots") == "ON", "controls announced")
            for switch in ("OFF", "ON", "OFF", "ON"):
                live.client.publish(f"{PREFIX}/set/snapshots", switch, qos=1).wait_for_publish(5)
                wait_json(live, f"{PREFIX}/controls", lambda c, s=switch: c.get("snapshots") == s, f"echo {switch}")
            for number, keepalive in enumerate((6, 5, 6, 5), start=1):
                rewrite(keepalive)
                daemon.process.send_signal(signal.SIGHUP)
                daemon.wait_log("configuration reloaded (changed: mqtt)", number)
                # The new session announces itself before the next reload.
                live.wait_until(lambda n=number: _onlines(live) > n, 15, "online from the new session")
            wait_json(live, f"{PREFIX}/state", lambda s: s.get("present") is True, "events still flow")
            status_payloads = [m.payload for m in live.on(STATUS)]
            assert b"offline" not in status_payloads, status_payloads
            assert retained(broker, [STATUS]) == {STATUS: b"online"}
        finally:
            code, log = daemon.stop()
        assert code == 0, log
        # The switch changes the running session; only the [mqtt] reloads open a new one.
        assert log.count("MQTT: connected to") == 1 + 4, log
        broker_log = broker.log_text()
        assert "session taken over" not in broker_log.lower() and "already connected" not in broker_log, broker_log[
            -3000:
        ]


def _onlines(live: Subscriber) -> int:
    return sum(1 for m in live.on(STATUS) if m.payload == b"online")


def test_a_reload_storm_never_publishes_offline_and_ends_online(tmp_path, int8_model_path, face_photo, blank):
    with online_daemon(tmp_path, int8_model_path, face_photo, blank, [STATUS]) as (broker, live, daemon, rewrite):
        try:
            for number in range(20):  # 20 SIGHUPs in 2 s, each replacing the session (same client id)
                rewrite(6 + number % 2)
                daemon.process.send_signal(signal.SIGHUP)
                time.sleep(0.1)
            daemon.wait_log("configuration reloaded", 1)
            time.sleep(4.0)  # every handover done
            assert b"offline" not in [m.payload for m in live.on(STATUS)], live.summary()
            assert retained(broker, [STATUS]) == {STATUS: b"online"}
        finally:
            code, log = daemon.stop()
        assert code == 0 and "Traceback" not in log, log
