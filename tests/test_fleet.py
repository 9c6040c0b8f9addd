"""`edge-face fleet`: the status of every device, read from a real mosquitto.

Two kinds of publishers: fixtures (retained messages published here, so each field and each
status has a known value) and real daemons (replaying real photos with the real model), whose
retained status, state, discovery and periodic stats the command must read as they are.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from broker import MosquittoBroker, Subscriber, free_port, make_test_pki
from cli_support import run_cli
from daemon_support import build_scene, write_config
from paho.mqtt.enums import CallbackAPIVersion

from edge import __version__
from edge.exitcodes import ExitCode
from edge.ops.fleet import Snapshot, TopicPattern, build_reports, fleet_exit_code, format_table

pytestmark = pytest.mark.integration

PASSWORD = "fleet 'pw' \"with\" spaces"
USERS = {"watcher": PASSWORD, "device": "device-secret"}


def publish_retained(
    broker: MosquittoBroker, messages: dict[str, bytes | str | dict], ca_file: Path | None = None
) -> None:
    """Publish each (topic, payload) retained with QoS 1 and wait for every PUBACK
    (over TLS when ``ca_file`` is given)."""
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.username_pw_set("device", "device-secret")
    if ca_file is not None:
        client.tls_set(ca_certs=str(ca_file))
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        infos = []
        for topic, payload in messages.items():
            data = json.dumps(payload) if isinstance(payload, dict) else payload
            infos.append(client.publish(topic, data, qos=1, retain=True))
        for info in infos:
            info.wait_for_publish(timeout=10)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def run_fleet(
    broker: MosquittoBroker, *args: str, env: dict | None = None, password_file: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    argv = ["fleet", "--broker", broker.host, "--port", str(broker.port), "--username", "watcher", *args]
    if password_file is not None:
        argv += ["--password-file", str(password_file)]
    return run_cli(*argv, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture
def broker(tmp_path):
    with MosquittoBroker(tmp_path / "broker", users=USERS) as running:
        yield running


@pytest.fixture
def password_file(tmp_path) -> Path:
    path = tmp_path / "password"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path


def fleet_fixture() -> dict[str, bytes | str | dict]:
    """The retained messages of a small fleet; ages are counted from now (when the test runs)."""
    now = datetime.now(UTC)
    return {
        # online, with stats (the daemon's own keys)
        "edge-face/frontdoor/status": "online",
        "edge-face/frontdoor/state": {"present": True, "count": 1, "last_seen": iso(now - timedelta(seconds=90))},
        "edge-face/frontdoor/stats": {
            "fps": 9.76,
            "invoke_ms_p50": 12.34,
            "cpu_temperature_c": 51.5,
            "events_dropped": 3,
        },
        "homeassistant/device/frontdoor/config": {
            "dev": {"sw_version": "0.1.0", "model_id": "slim-320-int8-aaaa"},
            "availability_topic": "edge-face/frontdoor/status",
        },
        # the broker's last will: the daemon vanished
        "edge-face/garage/status": "offline",
        "edge-face/garage/state": {"present": False, "count": 0, "last_seen": None},
        # a clean stop
        "edge-face/hallway/status": "stopped",
        "homeassistant/device/hallway/config": {"dev": {"sw_version": "0.0.9", "model_id": "slim-320-int8-bbbb"}},
        # not a device status: another application's topic under a similar name
        "edge-face/frontdoor/extra/status": "online",
    }


def test_every_device_gets_one_line_and_an_offline_one_fails_the_fleet(broker, password_file):
    publish_retained(broker, fleet_fixture())
    result = run_fleet(broker, "--timeout", "3", password_file=password_file)
    assert result.returncode == ExitCode.OFFLINE == 5, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split() == [
        "DEVICE",
        "STATUS",
        "VERSION",
        "MODEL",
        "FPS",
        "INFER_MS",
        "CPU_C",
        "LAST_FACE",
        "DROPPED",
    ]
    assert [line.split()[:2] for line in lines] == [
        ["frontdoor", "online"],
        ["garage", "offline"],
        ["hallway", "stopped"],
    ]
    assert lines[0].split() == [
        "frontdoor",
        "online",
        "0.1.0",
        "slim-320-int8-aaaa",
        "9.8",
        "12.3",
        "51.5",
        "2m",
        "ago",
        "3",
    ]
    assert lines[1].split() == ["garage", "offline", "-", "-", "-", "-", "-", "-", "-"]
    assert lines[2].split()[2:4] == ["0.0.9", "slim-320-int8-bbbb"]
    # Columns line up: every value starts where its header does.
    assert {line.index(line.split()[1]) for line in [header, *lines]} == {header.index("STATUS")}
    assert result.stderr.strip() == "edge-face fleet: not online: garage (offline), hallway (stopped)"


def test_json_lines_carry_the_numbers(broker, password_file):
    publish_retained(broker, fleet_fixture())
    result = run_fleet(broker, "--json", "--timeout", "3", password_file=password_file)
    assert result.returncode == ExitCode.OFFLINE
    devices = {d["device"]: d for d in map(json.loads, result.stdout.splitlines())}
    assert set(devices) == {"frontdoor", "garage", "hallway"}
    front = devices["frontdoor"]
    assert (front["online"], front["fps"], front["inference_ms"], front["cpu_temp_c"], front["dropped_events"]) == (
        True,
        9.76,
        12.34,
        51.5,
        3,
    )
    assert 88 <= front["last_face_age_s"] <= 90 + 60
    assert devices["garage"] == {
        "device": "garage",
        "status": "offline",
        "version": None,
        "model": None,
        "fps": None,
        "inference_ms": None,
        "cpu_temp_c": None,
        "last_face_age_s": None,
        "dropped_events": None,
        "online": False,
    }


def test_one_device_can_be_asked_for_and_gates_on_it_alone(broker, password_file):
    publish_retained(broker, fleet_fixture())
    online = run_fleet(broker, "--device", "frontdoor", "--timeout", "2", password_file=password_file)
    assert online.returncode == ExitCode.OK, online.stderr
    assert [line.split()[0] for line in online.stdout.splitlines()] == ["DEVICE", "frontdoor"]
    missing = run_fleet(broker, "--device", "attic", "--timeout", "2", password_file=password_file)
    assert missing.returncode == ExitCode.OFFLINE and missing.stdout == ""
    assert missing.stderr.strip() == f"edge-face fleet: device 'attic' has no status on {broker.host}:{broker.port}"


def test_all_online_exits_0_and_the_password_may_come_from_the_environment(broker):
    publish_retained(broker, {"site/a/face/status": "online", "site/b/face/status": "online"})
    result = run_fleet(
        broker, "--topic-prefix", "site/{device_id}/face", "--timeout", "1", env={"EDGE_FACE_MQTT_PASSWORD": PASSWORD}
    )
    assert result.returncode == ExitCode.OK, result.stderr
    assert [line.split()[:2] for line in result.stdout.splitlines()[1:]] == [["a", "online"], ["b", "online"]]


def test_broker_problems_exit_1_with_one_line(broker, password_file, tmp_path):
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password")
    refused = run_fleet(broker, "--timeout", "2", password_file=wrong)
    assert refused.returncode == ExitCode.FAILURE
    assert refused.stderr.startswith(f"edge-face fleet: broker {broker.host}:{broker.port} refused the connection (")
    assert len(refused.stderr.splitlines()) == 1 and "not the password" not in refused.stderr

    empty = run_fleet(broker, "--timeout", "1", password_file=password_file)
    assert empty.returncode == ExitCode.FAILURE
    assert empty.stderr.strip() == (
        f"edge-face fleet: no device status under 'edge-face/+/status' on {broker.host}:{broker.port}"
    )

    closed_port = free_port()
    unreachable = run_cli("fleet", "--broker", "127.0.0.1", "--port", str(closed_port))
    assert unreachable.returncode == ExitCode.FAILURE
    assert unreachable.stderr.startswith(f"edge-face fleet: broker 127.0.0.1:{closed_port} unreachable (")


def test_a_tls_broker_is_read_with_its_ca_and_refused_with_another(tmp_path, password_file):
    pki = make_test_pki(tmp_path / "pki")
    with MosquittoBroker(tmp_path / "tls", users=USERS, tls=(pki.server_cert, pki.server_key, pki.ca_file)) as broker:
        publish_retained(broker, {"edge-face/porch/status": "online"}, ca_file=pki.ca_file)
        trusted = run_fleet(
            broker, "--tls", "--cafile", str(pki.ca_file), "--timeout", "1", password_file=password_file
        )
        assert trusted.returncode == ExitCode.OK, trusted.stderr
        assert [line.split()[:2] for line in trusted.stdout.splitlines()[1:]] == [["porch", "online"]]

        untrusted = run_fleet(
            broker, "--tls", "--cafile", str(pki.other_ca_file), "--timeout", "1", password_file=password_file
        )
        assert untrusted.returncode == ExitCode.FAILURE
        assert untrusted.stderr.startswith(
            f"edge-face fleet: broker {broker.host}:{broker.port}: TLS certificate verify failed ("
        )
        assert len(untrusted.stderr.splitlines()) == 1

        missing_ca = run_fleet(broker, "--tls", "--cafile", str(tmp_path / "nope.pem"), password_file=password_file)
        assert missing_ca.returncode == ExitCode.FAILURE
        assert missing_ca.stderr.startswith("edge-face fleet: TLS files unusable: ")
        assert len(missing_ca.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--topic-prefix", "edge-face/all"], "must contain {device_id} exactly once"),
        (["--topic-prefix", "edge-face/dev-{device_id}"], "must be a whole topic level"),
        (["--topic-prefix", "edge-face/+/{device_id}"], "'--topic-prefix'"),
        (["--timeout", "0"], "--timeout 0: must be a positive number of seconds"),
        (["--cert", "client.crt"], "--cert and --key go together"),
        (["--password-file", "/nonexistent/secret"], "--password-file /nonexistent/secret: No such file or directory"),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument(args, message):
    result = run_cli("fleet", "--broker", "127.0.0.1", *args)
    assert result.returncode == ExitCode.CONFIG
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr, result.stderr


def test_no_password_option_on_the_command_line():
    result = run_cli("fleet", "--broker", "x", "--password", "secret")
    assert result.returncode == 2 and "unrecognized arguments: --password secret" in result.stderr


# --- pure parts --------------------------------------------------------------------------------


def test_topic_pattern_finds_the_device_level_anywhere():
    pattern = TopicPattern.from_prefix("site/{device_id}/face")
    assert pattern.subscription("stats") == "site/+/face/stats"
    assert pattern.match("site/door/face/status") == ("door", "status")
    assert pattern.match("site/door/other/status") is None
    assert pattern.match("site/door/face/extra/status") is None


def test_reports_ignore_garbage_and_strays():
    pattern = TopicPattern.from_prefix("edge-face/{device_id}")
    snapshot = Snapshot(
        {
            "edge-face/a/status": b"online",
            "edge-face/a/stats": b"not json",
            "edge-face/a/state": b'{"last_seen": "yesterday"}',
            "edge-face/b/stats": b'{"fps": 5}',  # stats without a status: not a device of the fleet
            "edge-face/c/status": b"",  # a cleared retained status: removed
            "edge-face/d/status": b"online",
            "edge-face/d/stats": b'{"fps": true, "invoke_ms_p50": "12", "events_dropped": 2}',
        },
        received_at=time.time(),
    )
    reports = build_reports(snapshot, pattern, "homeassistant")
    assert [r.device for r in reports] == ["a", "d"]
    assert reports[0].fps is None and reports[0].last_face_age_s is None
    assert (reports[1].fps, reports[1].inference_ms, reports[1].dropped_events) == (None, None, 2)
    assert fleet_exit_code(reports) == ExitCode.OK
    assert fleet_exit_code([]) == ExitCode.FAILURE
    assert format_table(reports).splitlines()[1].split() == ["a", "online", "-", "-", "-", "-", "-", "-", "-"]


# --- real daemons --------------------------------------------------------------------------------


def start_daemon(tmp_path: Path, name: str, broker: MosquittoBroker, scene: Path, model: Path) -> subprocess.Popen:
    password = tmp_path / f"{name}.password"
    password.write_text("device-secret")
    state_dir = tmp_path / f"{name}.state"
    state_dir.mkdir()
    config = write_config(
        tmp_path / f"{name}.toml",
        {
            # Its own state folder: a daemon that finds another id's state there takes it for its
            # own old name and removes that device from the broker.
            "device": {"id": name, "state_dir": state_dir},
            "camera": {"source": "replay", "path": scene, "fps": 10.0, "loop": True},
            "detector": {"model": model},
            "events": {"debounce_frames": 1, "clear_after_seconds": 0.1},
            "stats": {"interval_seconds": 1.0},
            "mqtt": {
                "host": broker.host,
                "port": broker.port,
                "username": "device",
                "password_file": password,
                "keepalive": 5,
            },
        },
    )
    return subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_real_daemons_report_their_version_model_and_speed(
    tmp_path, broker, password_file, int8_model_path, detector, photo_paths, blank
):
    scene = build_scene(tmp_path / "scene", blank, [(photo_paths[0], 2), ("blank", 2)]).folder
    daemons = {name: start_daemon(tmp_path, name, broker, scene, int8_model_path) for name in ("cam-1", "cam-2")}
    try:
        with Subscriber(broker, ["edge-face/+/stats"], username="watcher", password=PASSWORD) as live:
            for name in daemons:
                live.wait_for(f"edge-face/{name}/stats", timeout=90)
        result = run_fleet(broker, "--json", "--timeout", "10", password_file=password_file)
        assert result.returncode == ExitCode.OK, result.stderr
        devices = {d["device"]: d for d in map(json.loads, result.stdout.splitlines())}
        assert set(devices) == set(daemons)
        for report in devices.values():
            assert report["status"] == "online"
            assert (report["version"], report["model"]) == (__version__, detector.model_id)
            assert report["fps"] > 0 and report["inference_ms"] > 0
            # The photo has a face: last_seen is recent.
            assert report["last_face_age_s"] is not None and report["last_face_age_s"] < 60

        # A clean stop shows as "stopped" and fails the fleet; the other stays online.
        daemons["cam-2"].send_signal(signal.SIGTERM)
        assert daemons["cam-2"].wait(timeout=60) == 0
        result = run_fleet(broker, "--timeout", "3", password_file=password_file)
        assert result.returncode == ExitCode.OFFLINE
        assert [line.split()[:2] for line in result.stdout.splitlines()[1:]] == [
            ["cam-1", "online"],
            ["cam-2", "stopped"],
        ]
        # A killed daemon: the broker's last will says offline (after 1.5 keepalives).
        daemons["cam-1"].kill()
        daemons["cam-1"].wait(timeout=30)
        deadline = time.monotonic() + 30
        while True:
            result = run_fleet(broker, "--json", "--timeout", "1", password_file=password_file)
            status = {d["device"]: d["status"] for d in map(json.loads, result.stdout.splitlines())}
            if status["cam-1"] == "offline" or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert status == {"cam-1": "offline", "cam-2": "stopped"} and result.returncode == ExitCode.OFFLINE
    finally:
        for process in daemons.values():
            process.kill()
            process.wait(timeout=30)
