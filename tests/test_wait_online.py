"""tools.wait_online (the Ansible role's "is the device online" check) against a real broker,
with the password on stdin."""

from __future__ import annotations

import subprocess
import sys

import paho.mqtt.client as mqtt
import pytest
from broker import MosquittoBroker

pytestmark = pytest.mark.integration

USERS = {"edge": "s3cret pass"}
TOPIC = "edge-face/frontdoor/status"


def _publish_retained(broker: MosquittoBroker, payload: str) -> None:
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
    client.username_pw_set("edge", USERS["edge"])
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.publish(TOPIC, payload, qos=1, retain=True).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()


def _wait(broker: MosquittoBroker, password: str, timeout: str = "3") -> subprocess.CompletedProcess:
    argv = [
        sys.executable,
        "-m",
        "tools.wait_online",
        "--host",
        broker.host,
        "--port",
        str(broker.port),
        "--topic",
        TOPIC,
        "--timeout",
        timeout,
        "--username",
        "edge",
        "--password-stdin",
    ]
    done = subprocess.run(argv, input=password + "\n", capture_output=True, text=True, timeout=30)
    assert password not in " ".join(argv)
    return done


@pytest.fixture
def broker(tmp_path):
    with MosquittoBroker(tmp_path / "broker", users=USERS) as running:
        yield running


def test_online_status_is_seen_with_the_password_from_stdin(broker):
    _publish_retained(broker, "online")
    done = _wait(broker, USERS["edge"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "online"


def test_a_stopped_device_is_not_online(broker):
    _publish_retained(broker, "stopped")
    done = _wait(broker, USERS["edge"], timeout="1")
    assert done.returncode == 1
    assert "'stopped'" in done.stderr and TOPIC in done.stderr


def test_wrong_password_is_a_refusal_not_a_timeout(broker):
    done = _wait(broker, "wrong")
    assert done.returncode == 2
    assert "refused" in done.stderr and done.stderr.count("\n") == 1
