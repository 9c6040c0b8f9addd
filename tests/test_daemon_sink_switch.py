"""edge.daemon.sink_switch on its own, against a real Mosquitto: a transport replaced by a
reload delivers what waited in the outbox and announces the retained state through the new
session; settings the new transport cannot use keep the running one. The assembled daemon's
swaps are tested in test_session_swap.py and test_controls.py."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
from broker import MosquittoBroker, Subscriber, free_port
from daemon_support import write_config
from identity_support import retained

from edge.config import Config, load_config
from edge.daemon.parts import build_sink
from edge.daemon.sink_switch import SinkSwitch
from edge.mqtt.command_intake import CommandIntake
from edge.mqtt.outbox import Outbox
from edge.scene.events import Event, PresenceState

pytestmark = pytest.mark.integration

LOG = logging.getLogger("test.sink_switch")
PREFIX = "edge-face/hall"


def mqtt_config(tmp_path: Path, model: Path, name: str, host: str, port: int) -> Config:
    (tmp_path / "state").mkdir(exist_ok=True)
    sections = {
        "device": {"id": "hall", "state_dir": tmp_path / "state"},
        "camera": {"source": "replay", "path": tmp_path},
        "detector": {"model": model},
        "mqtt": {"host": host, "port": port},
    }
    return load_config(write_config(tmp_path / f"{name}.toml", sections))


def test_a_swapped_transport_delivers_what_waited_and_announces_the_state(tmp_path, int8_model_path, caplog):
    crashes: list[tuple[str, BaseException]] = []
    with MosquittoBroker(tmp_path / "broker") as broker, Subscriber(broker, [f"{PREFIX}/#"]) as live:
        away = mqtt_config(tmp_path, int8_model_path, "away", "127.0.0.1", free_port())
        here = mqtt_config(tmp_path, int8_model_path, "here", broker.host, broker.port)
        outbox = Outbox(100, 1_000_000)
        sinks = SinkSwitch(
            build_sink(away, "model-a", outbox), outbox, CommandIntake(LOG), lambda *crash: crashes.append(crash)
        )
        sinks.start(routes_commands=False, wait_first=False)  # nobody listens there: events wait
        first = sinks.sink
        for _ in range(3):
            sinks.sink.publish_event(outbox.add(Event("face_detected", "hall", "b", 0, "t", 0, (), 640, 480, "m"))[0])
        announced: list[Config] = []

        def publish_retained(config: Config) -> None:
            assert sinks.sink is not first  # announced through the new session
            announced.append(config)
            sinks.sink.publish_state(PresenceState(present=True, count=1, last_seen=None))

        try:
            assert sinks.swap(here, away, "model-a", routes_commands=False, publish_retained=publish_retained) is here
            assert announced == [here]
            events = live.wait_for(f"{PREFIX}/events", count=3, timeout=20)
            assert [json.loads(m.payload)["sequence"] for m in events] == [1, 2, 3]
            live.wait_for(f"{PREFIX}/state", timeout=10)
            assert json.loads(retained(broker, [f"{PREFIX}/state"])[f"{PREFIX}/state"])["present"] is True
            second = sinks.sink

            # A password "file" that cannot be read: the new settings are refused, the running
            # transport and its settings stay.
            (tmp_path / "secret-folder").mkdir()
            unusable = dataclasses.replace(
                here, mqtt=dataclasses.replace(here.mqtt, username="u", password_file=tmp_path / "secret-folder")
            )
            with caplog.at_level(logging.ERROR, logger="edge.daemon"):
                kept = sinks.swap(unusable, here, "model-a", routes_commands=False, publish_retained=publish_retained)
            assert kept.mqtt == here.mqtt and kept.device == here.device and sinks.sink is second
            assert announced == [here]
            refused = [r.message for r in caplog.records if "reload: new [mqtt] settings unusable" in r.message]
            assert len(refused) == 1 and "mqtt.password_file" in refused[0], refused
        finally:
            sinks.sink.close(2.0)
            sinks.stop_retiring()
    assert crashes == []
