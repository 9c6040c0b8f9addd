"""Controls from Home Assistant: command parsing, the stored overrides and their merge over
the config file, and each control end to end: the real daemon (`python -m edge.cli run`)
on a looping replay of a real photo, commanded over a real Mosquitto. Plus `edge-face forget`
and the removal of a renamed device.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from broker import MosquittoBroker, Subscriber, free_port
from cli_support import run_cli, start_run
from daemon_support import daemon_config, face_scene, write_config
from identity_support import latest_json, wait_json

from edge.config import parse_config
from edge.mqtt.command_intake import (
    COMMAND_INTERVAL_S,
    REFUSAL_WINDOW_S,
    REFUSALS_LOGGED_PER_WINDOW,
    CommandIntake,
    CommandMessage,
)
from edge.mqtt.controls import (
    STORE_INTERVAL_S,
    Command,
    ControlError,
    Controls,
    Overrides,
    apply_overrides,
    load_overrides,
    parse_command,
    save_overrides,
)
from edge.sources.imageio import load_image

pytestmark = pytest.mark.integration

DEVICE = "hall-ctl"
PREFIX = f"edge-face/{DEVICE}"
DISCOVERY = f"homeassistant/device/{DEVICE}/config"


# --- parsing, storing, merging ----------------------------------------------------------------


@pytest.mark.parametrize(
    "control, payload, value",
    [
        ("detection", b"OFF", False),
        ("detection", b"ON", True),
        ("snapshots", b" ON\n", True),
        ("score_threshold", b"0.55", 0.55),
        ("score_threshold", b"0.05", 0.05),
        ("reannounce", b"PRESS", None),
    ],
)
def test_valid_commands_parse(control, payload, value):
    assert parse_command(control, payload) == Command(control, value)


@pytest.mark.parametrize(
    "control, payload, named",
    [
        ("detection", b"off", "'off'"),
        ("detection", b"", "''"),
        ("snapshots", b"1", "'1'"),
        ("score_threshold", b"0.99", "'0.99'"),
        ("score_threshold", b"nan", "'nan'"),
        ("score_threshold", b"abc", "'abc'"),
        ("reannounce", b"ON", "'ON'"),
        ("lights", b"ON", "'lights'"),
        ("detection", b"O" * 500, "500-byte"),
        ("detection", b"\xffON", "not UTF-8"),
        ("detection", b'{"state": "ON"}', '\'{"state": "ON"}\''),
        ("score_threshold", b"inf", "'inf'"),
        ("score_threshold", b"1e309", "'1e309'"),
        ("score_threshold", b"5e-1", "'5e-1'"),  # float() would take these three
        ("score_threshold", b"0.5_5", "'0.5_5'"),
        ("score_threshold", b"-0.5", "'-0.5'"),
        ("score_threshold", b"9" * 32, "'" + "9" * 32 + "'"),
        ("lights\nfake log line", b"ON", "'lights\\nfake log line'"),
    ],
)
def test_invalid_commands_are_one_line_errors_naming_control_and_payload(control, payload, named):
    with pytest.raises(ControlError) as error:
        parse_command(control, payload)
    message = str(error.value)
    assert "\n" not in message and named in message and ascii(control[:40])[1:-1] in message


def test_overrides_survive_a_round_trip_and_bad_entries_fail_closed(tmp_path, caplog):
    log = logging.getLogger("test.controls")
    assert load_overrides(tmp_path, log) == Overrides()  # nothing stored yet
    save_overrides(tmp_path, Overrides(detection=False, score_threshold=0.5))
    assert load_overrides(tmp_path, log) == Overrides(detection=False, score_threshold=0.5)
    assert [p.name for p in tmp_path.iterdir()] == ["controls.json"]  # no temp file left behind
    (tmp_path / "controls.json").write_text('{"detection": true, "score_threshold": 7, "lights": true}')
    with caplog.at_level(logging.ERROR):
        assert load_overrides(tmp_path, log) == Overrides(detection=True)
    assert "score_threshold" in caplog.text and "lights" in caplog.text and "controls.json" in caplog.text
    # A stored switch that is not ON or OFF is OFF: privacy fails closed.
    (tmp_path / "controls.json").write_text('{"detection": "maybe", "snapshots": {"on": 1}}')
    assert load_overrides(tmp_path, log) == Overrides(detection=False, snapshots=False)


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_text("{not json"),
        lambda path: path.write_bytes(b"\xff\xfe{}"),
        lambda path: path.write_text("[false]"),
        lambda path: path.mkdir(),  # an OSError on read, as an unreadable file gives
        lambda path: os.mkfifo(path),  # must not block the start
        lambda path: path.write_text('{"detection": true}' + " " * 5000),
    ],
    ids=["not-json", "not-utf8", "not-an-object", "unreadable", "fifo", "too-big"],
)
def test_a_stored_state_that_cannot_be_read_keeps_detection_and_snapshots_off(tmp_path, caplog, damage):
    damage(tmp_path / "controls.json")
    with caplog.at_level(logging.ERROR):
        assert load_overrides(tmp_path, logging.getLogger("test.controls")) == Overrides(
            detection=False, snapshots=False
        )
    assert len(caplog.records) == 1 and "controls.json" in caplog.text and "stay OFF" in caplog.text


class Clock:
    """Monotonic time the test moves by hand (the intake's and the store's pace)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_controls_store_an_off_at_once_and_other_changes_at_most_every_store_interval(tmp_path):
    clock = Clock()
    controls = Controls(tmp_path, True, logging.getLogger("test.controls"), clock=clock)
    stored = lambda: load_overrides(tmp_path, logging.getLogger("test.controls"))  # noqa: E731
    assert controls.apply(Command("score_threshold", 0.5)) and stored() == Overrides(score_threshold=0.5)
    clock.now += 1
    controls.apply(Command("score_threshold", 0.6))  # within the interval: not yet
    assert stored() == Overrides(score_threshold=0.5)
    controls.apply(Command("detection", False))  # privacy closes: at once
    assert stored() == Overrides(detection=False, score_threshold=0.6)
    clock.now += 1
    controls.apply(Command("snapshots", True))
    controls.store_if_due()
    assert stored().snapshots is None
    clock.now += STORE_INTERVAL_S
    controls.store_if_due()
    assert stored() == Overrides(detection=False, snapshots=True, score_threshold=0.6)
    clock.now += 1
    controls.apply(Command("score_threshold", 0.7))
    controls.store()  # the daemon's stop
    assert stored().score_threshold == 0.7


def message(control: str, payload: bytes, retained: bool = False) -> CommandMessage:
    return CommandMessage(f"{PREFIX}/set/{control}", control, payload, retained)


def test_the_intake_refuses_each_hostile_message_with_one_line_and_keeps_the_latest_per_control(caplog):
    clock = Clock()
    intake = CommandIntake(logging.getLogger("test.intake"), clock=clock)
    hostile = [
        message("detection", b"ON", retained=True),
        message("detection", b"X" * 100_000_000),
        message("detection", b""),
        message("detection", b"\xc3\x28"),
        message("score_threshold", b"nan"),
        message("score_threshold", b"1" + b"0" * 31),
        message("reannounce", b'{"press": true}'),
        message("lights", b"ON"),
        message("+", b"ON"),
    ]
    with caplog.at_level(logging.WARNING):
        for bad in hostile:
            intake.receive(bad)
    assert intake.take() == []  # nothing passed
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == len(hostile) and all("\n" not in line for line in lines)
    for line, bad in zip(lines, hostile, strict=True):
        assert line.startswith(f"refused a command on '{bad.topic}': ")
    assert "retained" in lines[0] and "100000000-byte" in lines[1] and "empty" in lines[2]
    assert "not UTF-8" in lines[3] and "unknown control '+'" in lines[8]

    for payload in (b"OFF", b"ON", b"OFF"):
        intake.receive(message("detection", payload))
    for value in range(5, 96):
        intake.receive(message("score_threshold", f"0.{value:02d}".encode()))
    assert intake.take() == [Command("detection", False), Command("score_threshold", 0.95)]
    intake.receive(message("snapshots", b"ON"))
    assert intake.take() == []  # within the interval after a take
    clock.now += COMMAND_INTERVAL_S
    assert intake.take() == [Command("snapshots", True)]


def test_the_intake_logs_a_repeated_or_endless_refusal_as_a_count(caplog):
    clock = Clock()
    intake = CommandIntake(logging.getLogger("test.intake"), clock=clock)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            intake.receive(message("detection", b"maybe"))
        for number in range(100):
            intake.receive(message("detection", f"maybe{number}".encode()))
        intake.report_unlogged()  # the window is not over: nothing yet
        assert len(caplog.records) == 1 + (REFUSALS_LOGGED_PER_WINDOW - 1)
        clock.now += REFUSAL_WINDOW_S
        intake.report_unlogged()
    assert (
        caplog.records[-1]
        .getMessage()
        .startswith(f"refused {103 - REFUSALS_LOGGED_PER_WINDOW} more command(s) without a line each")
    )
    assert intake.refused == 103


def test_overrides_merge_over_the_file_and_say_what_they_override(tmp_path):
    config = parse_config(
        {"device": {"id": "x"}, "detector": {"model": __file__}, "snapshot": {"enabled": True}},
        base_dir=tmp_path,
        environ={},
    )
    merged, notes = apply_overrides(config, Overrides(snapshots=False, score_threshold=0.5))
    assert (merged.snapshot.enabled, merged.detector.score_threshold) == (False, 0.5)
    assert notes == [
        "snapshots OFF (config file: snapshot.enabled = true)",
        "score threshold 0.5 (config file: detector.score_threshold = 0.7)",
    ]
    same, none = apply_overrides(config, Overrides(snapshots=True, score_threshold=0.7))
    assert same == config and none == []


def test_state_dir_defaults_to_systemds_state_directory(tmp_path):
    data = {"device": {"id": "x"}, "detector": {"model": __file__}}
    assert parse_config(data, tmp_path, environ={}).device.state_dir == Path("/var/lib/edge-face")
    assert parse_config(data, tmp_path, environ={"STATE_DIRECTORY": "/var/lib/a:/var/lib/b"}).device.state_dir == Path(
        "/var/lib/a"
    )


# --- the daemon over a real broker -------------------------------------------------------------


@pytest.fixture
def broker(tmp_path):
    with MosquittoBroker(tmp_path / "broker") as running:
        yield running


@pytest.fixture(scope="module")
def face_photo(photo_paths, detector) -> Path:
    return min(photo_paths, key=lambda p: (len(detector.detect(load_image(p))) == 0, p.name))


def config_file(tmp_path, broker, model, photo, blank, **sections) -> Path:
    scene = face_scene(tmp_path / "scene", photo, blank)
    return daemon_config(tmp_path / "edge-face.toml", broker, model, scene, DEVICE, tmp_path / "state", **sections)


class Running:
    """The daemon as a subprocess whose stderr is collected as it runs."""

    def __init__(self, config: Path) -> None:
        self.process = start_run(config, stdout=subprocess.DEVNULL)
        self.err = ""

    def stop(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGTERM)
        try:
            _, self.err = self.process.communicate(timeout=30)
        finally:
            self.process.kill()
        return self.process.returncode, self.err


def command(live: Subscriber, control: str, payload: str) -> None:
    live.client.publish(f"{PREFIX}/set/{control}", payload, qos=1).wait_for_publish(5)


def test_detection_off_pauses_persists_across_a_restart_and_on_resumes(
    tmp_path, broker, int8_model_path, face_photo, blank
):
    config = config_file(tmp_path, broker, int8_model_path, face_photo, blank)
    with Subscriber(broker, [f"{PREFIX}/#"]) as live:
        daemon = Running(config)
        try:
            wait_json(live, f"{PREFIX}/controls", lambda c: c.get("detection") == "ON", "controls announced")
            wait_json(live, f"{PREFIX}/state", lambda s: s.get("present") is True, "a face seen")
            command(live, "detection", "OFF")
            state = wait_json(live, f"{PREFIX}/state", lambda s: s.get("detection") == "paused", "state paused")
            assert state["present"] is False and state["count"] == 0  # privacy mode: nobody reported
            wait_json(live, f"{PREFIX}/controls", lambda c: c.get("detection") == "OFF", "switch echoed OFF")
            stats = wait_json(live, f"{PREFIX}/stats", lambda s: s.get("source_state") == "paused", "stats paused")
            assert stats["detection"] == "paused"
            time.sleep(1.2)  # a full stats interval while paused
            assert latest_json(live, f"{PREFIX}/stats")["fps"] == 0
            events = [json.loads(m.payload)["type"] for m in live.on(f"{PREFIX}/events")]
            assert events[-1] == "face_cleared"  # the presence was ended, not left hanging
        finally:
            code, err = daemon.stop()
        assert code == 0 and "detection paused from Home Assistant" in err and "Traceback" not in err
        assert json.loads((tmp_path / "state" / "controls.json").read_text()) == {"detection": False}

        live.clear()
        daemon = Running(config)  # a restart keeps privacy mode
        try:
            wait_json(live, f"{PREFIX}/state", lambda s: s.get("detection") == "paused", "paused after restart")
            time.sleep(1.0)
            assert live.on(f"{PREFIX}/events") == []
            command(live, "detection", "ON")
            wait_json(live, f"{PREFIX}/state", lambda s: s.get("present") is True, "detection resumed")
            assert latest_json(live, f"{PREFIX}/controls")["detection"] == "ON"
        finally:
            code, err = daemon.stop()
        assert code == 0 and "the camera stays closed" in err and "detection resumed" in err


def test_snapshots_off_removes_the_image_component_and_the_picture(
    tmp_path, broker, int8_model_path, face_photo, blank
):
    config = config_file(tmp_path, broker, int8_model_path, face_photo, blank)
    with Subscriber(broker, [f"{PREFIX}/#", DISCOVERY]) as live:
        daemon = Running(config)
        try:
            first = wait_json(
                live, DISCOVERY, lambda d: "image_topic" in d.get("cmps", {}).get("snapshot", {}), "image announced"
            )
            assert first["cmps"]["snapshot"]["qos"] == 1
            live.wait_for(f"{PREFIX}/snapshot")  # the placeholder, at once
            command(live, "snapshots", "OFF")
            wait_json(live, DISCOVERY, lambda d: d.get("cmps", {}).get("snapshot") == {"p": "image"}, "image removed")
            live.wait_until(lambda: live.on(f"{PREFIX}/snapshot")[-1].payload == b"", 10, "snapshot cleared")
            wait_json(live, f"{PREFIX}/controls", lambda c: c.get("snapshots") == "OFF", "switch echoed OFF")
            count = len(live.on(f"{PREFIX}/snapshot"))
            time.sleep(1.0)  # faces keep coming and going: no picture leaves the device any more
            assert len(live.on(f"{PREFIX}/snapshot")) == count
        finally:
            code, err = daemon.stop()
        assert code == 0, err
        assert json.loads((tmp_path / "state" / "controls.json").read_text()) == {"snapshots": False}


def test_score_threshold_and_reannounce_and_a_reload_never_undoes_a_control(
    tmp_path, broker, int8_model_path, face_photo, blank, caplog
):
    config = config_file(tmp_path, broker, int8_model_path, face_photo, blank)
    with Subscriber(broker, [f"{PREFIX}/#", DISCOVERY]) as live:
        daemon = Running(config)
        try:
            wait_json(live, f"{PREFIX}/controls", lambda c: c.get("score_threshold") == 0.7, "threshold 0.7")
            command(live, "score_threshold", "0.55")
            wait_json(live, f"{PREFIX}/controls", lambda c: c.get("score_threshold") == 0.55, "threshold echoed")
            command(live, "score_threshold", "banana")  # logged once, ignored
            command(live, "score_threshold", "banana")
            live.wait_for(DISCOVERY)
            announced = len(live.on(DISCOVERY))
            command(live, "reannounce", "PRESS")
            live.wait_until(lambda: len(live.on(DISCOVERY)) > announced, 10, "discovery re-sent")
            daemon.process.send_signal(signal.SIGHUP)  # the file still says 0.7
            time.sleep(1.5)
            assert latest_json(live, f"{PREFIX}/controls")["score_threshold"] == 0.55
        finally:
            code, err = daemon.stop()
    assert code == 0, err
    # The repeat is counted, not logged again.
    assert (
        err.count(f"refused a command on '{PREFIX}/set/score_threshold': control 'score_threshold': payload 'banana'")
        == 1
    )
    assert "overrides the config file: score threshold 0.55 (config file: detector.score_threshold = 0.7)" in err
    assert json.loads((tmp_path / "state" / "controls.json").read_text()) == {"score_threshold": 0.55}


def test_controls_false_ignores_commands_and_stored_overrides(tmp_path, broker, int8_model_path, face_photo, blank):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "controls.json").write_text('{"detection": false}')
    config = config_file(tmp_path, broker, int8_model_path, face_photo, blank, homeassistant={"controls": False})
    with Subscriber(broker, [f"{PREFIX}/#", DISCOVERY]) as live:
        daemon = Running(config)
        try:
            discovery = wait_json(live, DISCOVERY, lambda d: "cmps" in d, "discovery")
            assert {k: discovery["cmps"][k] for k in ("detection", "snapshots", "score_threshold", "reannounce")} == {
                "detection": {"p": "switch"},
                "snapshots": {"p": "switch"},
                "score_threshold": {"p": "number"},
                "reannounce": {"p": "button"},
            }
            wait_json(live, f"{PREFIX}/state", lambda s: s.get("present") is True, "detection runs")
            command(live, "detection", "OFF")
            time.sleep(1.0)
            assert latest_json(live, f"{PREFIX}/state").get("detection") == "active"
            assert live.on(f"{PREFIX}/controls") == []
        finally:
            code, err = daemon.stop()
    assert code == 0 and "ignoring the stored" in err
    assert json.loads((tmp_path / "state" / "controls.json").read_text()) == {"detection": False}  # untouched


# --- removal: a renamed device, `edge-face forget` ------------------------------------------------


def test_a_device_renamed_by_reload_is_removed_and_forget_clears_everything(
    tmp_path, broker, int8_model_path, face_photo, blank
):
    config = config_file(tmp_path, broker, int8_model_path, face_photo, blank)
    renamed = DEVICE + "-2"
    with Subscriber(broker, ["edge-face/#", "homeassistant/device/#"]) as live:
        daemon = Running(config)
        try:
            wait_json(live, DISCOVERY, lambda d: "cmps" in d, "discovery")
            config_file(tmp_path, broker, int8_model_path, face_photo, blank, device={"id": renamed})
            daemon.process.send_signal(signal.SIGHUP)
            live.wait_until(lambda: live.on(DISCOVERY)[-1].payload == b"", 15, "old device removed")
            live.wait_for(f"homeassistant/device/{renamed}/config")
        finally:
            code, err = daemon.stop()
        assert code == 0, err
    with Subscriber(broker, ["edge-face/#", "homeassistant/#"]) as late:
        time.sleep(1.0)
        retained = {m.topic for m in late.messages if m.retain}
        assert not any(topic.startswith(PREFIX + "/") or topic == DISCOVERY for topic in retained), retained
        assert f"edge-face/{renamed}/state" in retained and f"homeassistant/device/{renamed}/config" in retained

    # A command left retained by any client must not outlive the device.
    with Subscriber(broker, [f"edge-face/{renamed}/set/#"]) as anyone:
        command_topic = f"edge-face/{renamed}/set/detection"
        anyone.client.publish(command_topic, "ON", qos=1, retain=True).wait_for_publish(5)
    forget = run_cli("forget", "--config", str(config))
    assert forget.returncode == 0, forget.stderr
    assert f"removed device '{renamed}'" in forget.stderr
    with Subscriber(broker, ["edge-face/#", "homeassistant/#"]) as late:
        time.sleep(1.0)
        assert [m.topic for m in late.messages if m.retain] == []
    assert not (tmp_path / "state" / "controls.json").exists()


def test_forget_reports_an_unreachable_broker_and_a_bad_config(tmp_path, int8_model_path):
    unreachable = write_config(
        tmp_path / "a.toml",
        {
            "device": {"id": "x"},
            "detector": {"model": int8_model_path},
            "mqtt": {"host": "127.0.0.1", "port": free_port()},
        },
    )
    result = run_cli("forget", "--config", str(unreachable))
    assert result.returncode == 1 and "unreachable" in result.stderr and "Traceback" not in result.stderr
    bad = write_config(tmp_path / "b.toml", {"device": {"id": "Not Valid"}, "detector": {"model": int8_model_path}})
    result = run_cli("forget", "--config", str(bad))
    assert result.returncode == 2 and "device.id" in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_reload_that_turns_controls_off_and_on_drops_and_restores_the_stored_ones(
    tmp_path, broker, int8_model_path, face_photo, blank
):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "controls.json").write_text('{"detection": false}')
    config = config_file(tmp_path, broker, int8_model_path, face_photo, blank)
    with Subscriber(broker, [f"{PREFIX}/#"]) as live:
        daemon = Running(config)
        try:
            wait_json(
                live, f"{PREFIX}/state", lambda s: s.get("detection") == "paused", "paused from the stored control"
            )
            config_file(tmp_path, broker, int8_model_path, face_photo, blank, homeassistant={"controls": False})
            daemon.process.send_signal(signal.SIGHUP)
            wait_json(live, f"{PREFIX}/state", lambda s: s.get("present") is True, "the file rules: detection runs")
            config_file(tmp_path, broker, int8_model_path, face_photo, blank)
            daemon.process.send_signal(signal.SIGHUP)
            wait_json(live, f"{PREFIX}/state", lambda s: s.get("detection") == "paused", "the stored control again")
        finally:
            code, err = daemon.stop()
    assert code == 0 and "ignoring the stored" in err and "detection OFF" in err, err


def test_a_device_renamed_while_stopped_is_removed_at_the_next_start(
    tmp_path, broker, int8_model_path, face_photo, blank
):
    config = config_file(tmp_path, broker, int8_model_path, face_photo, blank)
    with Subscriber(broker, ["homeassistant/device/#"]) as live:
        daemon = Running(config)
        try:
            wait_json(live, DISCOVERY, lambda d: "cmps" in d, "discovery")
        finally:
            assert daemon.stop()[0] == 0
        config_file(tmp_path, broker, int8_model_path, face_photo, blank, device={"id": "porch"})
        daemon = Running(config)  # an Ansible run changed the id and restarted us
        try:
            live.wait_until(lambda: live.on(DISCOVERY)[-1].payload == b"", 15, "the old device removed")
            live.wait_for("homeassistant/device/porch/config")
        finally:
            code, err = daemon.stop()
    assert code == 0 and f"the device was announced as '{DEVICE}'" in err, err
    assert json.loads((tmp_path / "state" / "announced.json").read_text())["device_id"] == "porch"
