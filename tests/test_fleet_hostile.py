"""`edge-face fleet` against a broker someone hostile has published on: whatever is retained
reaches the operator's terminal and memory, so it must arrive escaped, bounded and refused
with a note when it is not what a device publishes. A real Mosquitto, the real command."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from broker import MosquittoBroker
from cli_support import EDGE_CLI
from paho.mqtt.enums import CallbackAPIVersion

from edge.ops.fleet import MAX_DEVICES, MAX_NOTES
from tools.shared_data import PROJECT_ROOT

pytestmark = pytest.mark.integration

TERMINAL_CONTROLS = ("\x1b", "\x07", "\x9b", "\u202e")


def publish(broker: MosquittoBroker, messages: list[tuple[str, bytes]]) -> None:
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1, retain=True) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout=20)
            assert info.is_published(), info.rc
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def broker(tmp_path):
    with MosquittoBroker(tmp_path / "broker") as running:
        yield running


def fleet_result(broker: MosquittoBroker, *args: str) -> tuple[subprocess.CompletedProcess, float, int]:
    """The command's result, its wall time and its peak memory (VmHWM, KiB). Read from /proc
    while it runs: a child's rusage also counts the parent's pages it had before exec."""
    started = time.monotonic()
    process = subprocess.Popen(
        [*EDGE_CLI, "fleet", "--broker", broker.host, "--port", str(broker.port), *args],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    peaks = [0]

    def watch() -> None:  # beside communicate(): a pipe left unread would block the command
        while process.poll() is None:
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{process.pid}/status").read_text()
                peaks.extend(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    out, err = process.communicate(timeout=60)
    watcher.join()
    peak = max(peaks)
    elapsed = time.monotonic() - started
    return subprocess.CompletedProcess(process.args, process.returncode, out.decode(), err.decode()), elapsed, peak


def assert_clean_terminal_text(text: str) -> None:
    assert not any(char in text for char in TERMINAL_CONTROLS), repr(text)
    assert "Traceback" not in text, text


def test_escape_sequences_in_payloads_and_topics_never_reach_the_terminal(broker):
    device = "edge-face/porch"
    publish(
        broker,
        [
            (f"{device}/status", b"online"),
            (f"{device}/health", json.dumps({"fps": 5.0, "invoke_ms_p50": 9.5}).encode()),
            (
                "homeassistant/device/porch/config",
                json.dumps(
                    {"dev": {"sw_version": "\x1b[2J\x1b]0;pwned\x07", "model_id": "m\u202eodel\x9b31m"}}
                ).encode(),
            ),
            # Not a device id (the broker itself refuses C0 controls in topics): refused with a note.
            ("edge-face/evil\u202e\u2066/status", b"online"),
            ("edge-face/shouty/status", b"\x1b[5moffline\x1b[0m"),
        ],
    )
    result, elapsed, _ = fleet_result(broker, "--timeout", "2")
    assert_clean_terminal_text(result.stdout + result.stderr)
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["porch", "shouty"]
    porch = lines[1].split()
    assert porch[1] == "online" and "\\x1b[2J\\x1b]0;pwned\\x07"[:20] in lines[1]
    assert porch[4:6] == ["5.0", "9.5"]  # read at once from the retained health
    assert "edge-face/evil\\u202e\\u2066/status: not an edge-face device id; ignored" in result.stderr
    assert "edge-face/shouty/status: status '\\x1b[5moffline\\x1b[0m' is not one of" in result.stderr
    assert result.returncode == 5  # shouty is not online
    assert elapsed < 2 + 10


def test_invalid_utf8_and_wrong_json_types_are_refused_naming_the_topic(broker):
    publish(
        broker,
        [
            ("edge-face/a/status", b"online"),
            ("edge-face/a/health", b"\xff\xfe{not utf-8"),
            ("edge-face/a/state", json.dumps({"last_seen": 12345}).encode()),
            ("homeassistant/device/a/config", json.dumps({"dev": "a string"}).encode()),
            ("edge-face/b/status", b"\xc3(online"),
            (
                "edge-face/b/health",
                json.dumps({"fps": "fast", "invoke_ms_p50": {"x": 1}}).encode(),
            ),
            ("homeassistant/device/b/config", json.dumps({"dev": {"sw_version": ["1"]}}).encode()),
            ("edge-face/c/status", b"online"),
            ("edge-face/c/health", b"[" * 60_000),  # deeper than Python's JSON parser goes
            ("edge-face/d/status", b"online"),
            ("edge-face/d/health", b"[1, 2]"),
        ],
    )
    result, _, _ = fleet_result(broker, "--json", "--timeout", "2")
    assert_clean_terminal_text(result.stdout + result.stderr)
    devices = {d["device"]: d for d in map(json.loads, result.stdout.splitlines())}
    assert set(devices) == {"a", "b", "c", "d"}
    for report in devices.values():
        assert (report["fps"], report["inference_ms"], report["version"], report["model"]) == (None,) * 4
    assert devices["b"]["status"] == "\ufffd(online" and devices["b"]["online"] is False
    notes = result.stderr
    for line in (
        "edge-face/a/health: not UTF-8; ignored",
        "edge-face/a/state: field 'last_seen' is int, not str; ignored",
        "homeassistant/device/a/config: field 'dev' is str, not dict; ignored",
        "edge-face/b/health: field 'fps' is str, not float; ignored",
        "homeassistant/device/b/config: field 'sw_version' is list, not str; ignored",
        "edge-face/c/health: JSON nested too deep; ignored",
        "edge-face/d/health: JSON list, not an object; ignored",
    ):
        assert line in notes, notes


def test_ten_megabyte_payloads_are_never_received(broker):
    baseline_broker_messages = [("edge-face/small/status", b"online"), ("edge-face/small/health", b'{"fps": 1}')]
    publish(broker, baseline_broker_messages)
    baseline, _, baseline_peak = fleet_result(broker, "--timeout", "2")
    assert baseline.returncode == 0, baseline.stderr
    big = b'{"fps": 1, "pad": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    publish(broker, [(f"edge-face/big-{n}/status", b"online") for n in range(4)])
    publish(broker, [(f"edge-face/big-{n}/health", big) for n in range(4)])
    publish(broker, [("homeassistant/device/big-0/config", big)])
    result, elapsed, peak = fleet_result(broker, "--timeout", "2")
    assert_clean_terminal_text(result.stdout + result.stderr)
    # 50 MB were retained; the command's peak memory stays that of the small fleet.
    print(f"peak RSS: small fleet {baseline_peak} KiB, with 50 MB retained {peak} KiB")
    assert peak < baseline_peak + 10 * 1024, (baseline_peak, peak)
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == [f"big-{n}" for n in range(4)] + ["small"]
    assert elapsed < 2 + 10


def test_thousands_of_topics_are_bounded_in_time_and_lines(broker):
    count = MAX_DEVICES + 500
    publish(broker, [(f"edge-face/dev-{n:05d}/status", b"online") for n in range(count)])
    publish(broker, [(f"edge-face/dev-{n:05d}/health", b"garbage") for n in range(count)])
    result, elapsed, _ = fleet_result(broker, "--timeout", "3")
    lines = result.stdout.splitlines()
    assert len(lines) == 1 + MAX_DEVICES
    assert f"{count} devices: showing the first {MAX_DEVICES}" in result.stderr, result.stderr
    # A note per bad message, but at most MAX_NOTES of them on the terminal, then a count.
    notes = result.stderr.splitlines()
    assert len(notes) == MAX_NOTES + 1, notes
    assert notes[-1] == f"edge-face fleet: ... and {MAX_DEVICES + 1 - MAX_NOTES} more message(s) ignored"
    assert elapsed < 3 + 10
    assert result.returncode == 0
