"""The daemon's parts on their own (edge.daemon.reload, .commands, .retained, .stats, .camera):
what a reload plans from two setups, how a command from Home Assistant is routed, what a clean
stop leaves retained, the stats message, the outbox drop log, and the camera's swap and pause
with real replay sources. The assembled daemon is tested in test_daemon*.py, test_controls.py
and test_session_swap.py."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import pytest
from daemon_support import blank_frame, write_config

from edge.config import Config, load_config
from edge.daemon.camera import Camera
from edge.daemon.commands import CommandRoutes, apply_command
from edge.daemon.parts import StartupError, build_detector
from edge.daemon.reload import Setup, controls_for, next_setup, plan_reload
from edge.daemon.retained import absent_state
from edge.daemon.stats import DropLog, FrameTimes, StatsInputs, stats_message, status_line
from edge.exitcodes import ExitCode
from edge.mqtt.controls import DETECTION, REANNOUNCE, SNAPSHOTS, Command, Controls
from edge.mqtt.outbox import Outbox
from edge.scene.events import Event, PresenceState
from edge.sources.grabber import SourceHealth
from edge.sources.replay import ReplaySource

pytestmark = pytest.mark.unit

LOG = logging.getLogger("test.daemon_parts")


def make_config(tmp_path: Path, model: Path, name: str = "a", **sections: dict) -> Config:
    base: dict[str, dict] = {
        "device": {"id": "hall", "state_dir": tmp_path / "state"},
        "camera": {"source": "replay", "path": tmp_path},
        "detector": {"model": model},
    }
    for section, table in sections.items():
        base[section] = {**base.get(section, {}), **table}
    (tmp_path / "state").mkdir(exist_ok=True)
    return load_config(write_config(tmp_path / f"{name}.toml", base))


def setup_of(config: Config, detector) -> Setup:
    return Setup(config, config, detector, Controls.for_config(config, LOG))


# --- the reload plan -------------------------------------------------------------------------


def test_a_new_threshold_keeps_the_model_and_the_transport(tmp_path, int8_model_path, detector):
    old = setup_of(make_config(tmp_path, int8_model_path), detector)
    file_config = make_config(tmp_path, int8_model_path, "b", detector={"score_threshold": 0.9})
    new = next_setup(old, file_config, announce=False)
    plan = plan_reload(old, new)
    assert new.detector is detector  # not loaded again
    assert plan.changed == ("detector",)
    assert plan.thresholds_changed and not plan.sink_changed and not plan.snapshots_changed
    assert not plan.state_dir_moved and not plan.controls_replaced


def test_a_new_model_is_loaded_and_replaces_the_transport(tmp_path, int8_model_path, detector):
    old = setup_of(make_config(tmp_path, int8_model_path), detector)
    new = next_setup(old, make_config(tmp_path, int8_model_path, "b", detector={"num_threads": 1}), announce=False)
    plan = plan_reload(old, new)
    assert new.detector is not detector  # its threads are fixed when it loads
    # Same file, same model id: the transport stays (the model id is what it announces).
    assert new.detector.model_id == detector.model_id and not plan.sink_changed
    assert not plan.thresholds_changed  # a new detector already has the new thresholds


def test_the_sink_is_replaced_for_its_own_sections_and_what_it_announces(tmp_path, int8_model_path, detector):
    old = setup_of(make_config(tmp_path, int8_model_path), detector)
    make_config(tmp_path, int8_model_path, "zoned")
    with_zone = tmp_path / "zoned.toml"
    with_zone.write_text(
        with_zone.read_text() + '\n[[scene.zones]]\nname = "door"\npolygon = [[0, 0], [1, 0], [1, 1]]\n'
    )
    cases = {
        "device id": dataclasses.replace(old.config, device=dataclasses.replace(old.config.device, id="porch")),
        "mqtt": dataclasses.replace(old.config, mqtt=dataclasses.replace(old.config.mqtt, host="127.0.0.1")),
        "zones": dataclasses.replace(old.config, scene=load_config(with_zone).scene),
    }
    for what, config in cases.items():
        plan = plan_reload(old, dataclasses.replace(old, config=config, file_config=config))
        assert plan.sink_changed, what
    snapshots = dataclasses.replace(old.config, snapshot=dataclasses.replace(old.config.snapshot, enabled=True))
    plan = plan_reload(old, dataclasses.replace(old, config=snapshots))
    # The Snapshots switch is applied to the running session: no reconnect for it.
    assert plan.snapshots_changed and not plan.sink_changed and plan.changed == ("snapshot",)


def test_controls_follow_the_file(tmp_path, int8_model_path, detector):
    off = make_config(tmp_path, int8_model_path)
    running = Controls.for_config(off, LOG)
    assert controls_for(off, running) is running
    on = make_config(tmp_path, int8_model_path, "on", mqtt={"host": "127.0.0.1"})
    replaced = controls_for(on, running)
    assert replaced.enabled and not running.enabled
    (tmp_path / "elsewhere").mkdir()
    moved_file = dataclasses.replace(on, device=dataclasses.replace(on.device, state_dir=tmp_path / "elsewhere"))
    moved = controls_for(moved_file, replaced)
    assert moved is not replaced and moved.enabled and moved.state_dir == tmp_path / "elsewhere"
    plan = plan_reload(Setup(off, off, detector, running), Setup(on, on, detector, replaced))
    assert plan.controls_replaced and plan.sink_changed


# --- commands from Home Assistant ------------------------------------------------------------


class Answers:
    """What the daemon was asked to do, in order."""

    def __init__(self, actions: tuple[str, ...] = (REANNOUNCE,)) -> None:
        self.done: list[tuple[str, object]] = []
        self.routes = CommandRoutes(
            actions={name: (lambda command: self.done.append(("action", command.control))) for name in actions},
            set_detection=lambda on: self.done.append(("detection", on)),
            reapply=lambda: self.done.append(("reapply", None)),
            echo=lambda: self.done.append(("echo", None)),
        )


@pytest.fixture
def controls(tmp_path, int8_model_path) -> Controls:
    config = make_config(tmp_path, int8_model_path, mqtt={"host": "127.0.0.1"})
    controls = Controls.for_config(config, LOG)
    assert controls.enabled
    return controls


def test_a_stored_control_is_applied_and_echoed(controls):
    answers = Answers()
    apply_command(Command(DETECTION, False), controls, answers.routes)
    apply_command(Command(DETECTION, False), controls, answers.routes)  # unchanged: echoed only
    apply_command(Command(SNAPSHOTS, True), controls, answers.routes)
    assert answers.done == [("detection", False), ("echo", None), ("echo", None), ("reapply", None), ("echo", None)]
    assert controls.detection is False and controls.overrides.snapshots is True


def test_an_action_is_done_and_nothing_is_stored(controls):
    answers = Answers(actions=(REANNOUNCE, "enrol"))  # a new action is one more route
    before = controls.overrides
    apply_command(Command(REANNOUNCE, None), controls, answers.routes)
    apply_command(Command("enrol", None), controls, answers.routes)
    assert answers.done == [("action", REANNOUNCE), ("action", "enrol")]
    assert controls.overrides == before


def test_commands_are_ignored_when_the_controls_are_off(tmp_path, int8_model_path):
    off = Controls.for_config(make_config(tmp_path, int8_model_path), LOG)
    answers = Answers()
    for command in (Command(DETECTION, False), Command(REANNOUNCE, None)):
        apply_command(command, off, answers.routes)
    assert answers.done == [] and off.detection is True


# --- retained state --------------------------------------------------------------------------


def test_a_clean_stop_leaves_nobody_present_and_keeps_last_seen():
    zone = PresenceState(present=True, count=1, last_seen="2026-12-07T11:00:00Z")
    empty_zone = PresenceState(present=False, count=0, last_seen=None)
    state = PresenceState(
        present=True, count=2, last_seen="2026-12-07T11:00:01Z", zones={"door": zone, "desk": empty_zone}
    )
    absent = absent_state(state)
    assert (absent.present, absent.count, absent.last_seen) == (False, 0, "2026-12-07T11:00:01Z")
    assert {name: (z.present, z.count, z.last_seen) for name, z in absent.zones.items()} == {
        "door": (False, 0, "2026-12-07T11:00:00Z"),
        "desk": (False, 0, None),
    }
    assert state.present and state.zones["door"].present  # the running state is not touched


# --- stats -----------------------------------------------------------------------------------


def stats_inputs(**changes) -> StatsInputs:
    times = FrameTimes(window_start=100.0)
    for invoke in (0.010, 0.020, 0.030):
        times.add(invoke, invoke + 0.005)
    times.add_skipped()
    outbox = Outbox(10, 10_000)
    inputs = StatsInputs(
        now=110.0,
        started=50.0,
        frames_processed=42,
        window=times.take_window(110.0),
        health=SourceHealth("ok", frames_read=44, dropped_frames=2, reopens=1, last_error=None),
        paused=False,
        outbox=outbox.stats,
        sink_status={"state": "connecting", "last_error": "connection refused", "reconnects": 3},
        presence=PresenceState(present=True, count=1, last_seen=None),
        scene={"motion_skipped": 1},
    )
    return dataclasses.replace(inputs, **changes)


def test_the_stats_message_says_what_the_interval_measured():
    stats = stats_message(stats_inputs())
    assert stats["uptime_seconds"] == 60.0 and stats["frames"] == 42
    assert stats["fps"] == 0.4  # 3 detected + 1 skipped in 10 s
    assert (stats["invoke_ms_p50"], stats["detect_ms_p50"]) == (20.0, 25.0)
    assert stats["source_state"] == "ok" and stats["detection"] == "active" and stats["motion_skipped"] == 1
    assert (stats["mqtt_state"], stats["reconnects"], stats["face_count"]) == ("connecting", 3, 1)
    line = status_line(stats, stats_inputs().health)
    assert line == (
        "0.4 fps, 1 face(s), invoke p50 20.0 ms, dropped 2, source ok, "
        "mqtt connecting (connection refused), 0 event(s) waiting"
    )
    paused = stats_message(stats_inputs(paused=True))
    assert (paused["source_state"], paused["detection"]) == ("paused", "paused")


def test_outbox_drops_are_logged_at_once_then_summarised(caplog):
    outbox = Outbox(2, 1_000_000)
    drops = DropLog(outbox, LOG, interval=60.0)
    event = Event("face_detected", "hall", "b", 0, "t", 0, (), 640, 480, "model")
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        for _ in range(3):
            drops.add(outbox.add(event)[1])
        drops.log_due()
        for _ in range(2):
            drops.add(outbox.add(event)[1])
        drops.log_due()  # within the interval: not yet
        assert len(caplog.records) == 1 and "dropped 1 oldest event(s) (sequence 1-1)" in caplog.records[0].message
        drops.log_due(force=True)  # at stop
    assert len(caplog.records) == 2
    assert "dropped 2 oldest event(s) (sequence 2-3); 3 dropped in total" in caplog.records[1].message


# --- the camera ------------------------------------------------------------------------------


@pytest.fixture
def replay_folders(tmp_path) -> tuple[Path, Path]:
    """Two replay folders told apart by their frames' width: 640 and 400."""
    folders = []
    for name, width, height in (("first", 640, 480), ("second", 400, 300)):
        folder = tmp_path / name
        folder.mkdir()
        for index in range(3):
            blank_frame(folder / f"{index:04d}.png", width, height)
        folders.append(folder)
    return folders[0], folders[1]


def camera_config(tmp_path: Path, model: Path, folder: Path, name: str):
    return make_config(tmp_path, model, name, camera={"source": "replay", "path": folder, "loop": True}).camera


def first_frame(camera: Camera):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        frame = camera.grabber.get(0.25)
        if frame is not None:
            return frame
    raise AssertionError("no frame within 10 s")


def test_a_camera_that_does_not_open_keeps_the_running_one(tmp_path, int8_model_path, detector, replay_folders):
    first, second = replay_folders
    settings = camera_config(tmp_path, int8_model_path, first, "first")
    lost: list[bool] = []
    camera = Camera(
        ReplaySource(first, loop=True),
        settings,
        detector.input_size,
        paused=False,
        on_crash=lambda name, exc: None,
        on_lost=lambda: lost.append(True),
    )
    camera.grabber.start()
    try:
        assert first_frame(camera).width == 640
        empty = tmp_path / "empty"
        empty.mkdir()
        with pytest.raises(StartupError) as failed:
            camera.swap(dataclasses.replace(settings, path=empty), detector.input_size)
        assert failed.value.exit_code == ExitCode.SOURCE and "no images" in str(failed.value)
        assert camera.settings is settings and not lost
        assert first_frame(camera).width == 640  # reopened

        good = camera_config(tmp_path, int8_model_path, second, "second")
        camera.swap(good, detector.input_size)
        assert camera.settings is good and camera.reported_state == "ok"
        assert first_frame(camera).width == 400
    finally:
        camera.grabber.stop()


def test_a_paused_camera_opens_the_new_source_only_when_resumed(tmp_path, int8_model_path, detector, replay_folders):
    first, second = replay_folders
    camera = Camera(
        ReplaySource(first, loop=True),
        camera_config(tmp_path, int8_model_path, first, "first"),
        detector.input_size,
        paused=True,
        on_crash=lambda name, exc: None,
        on_lost=lambda: None,
    )
    camera.swap(camera_config(tmp_path, int8_model_path, second, "second"), detector.input_size)
    assert camera.grabber.get(0.5) is None  # not started while paused
    assert camera.resume() and not camera.paused
    try:
        assert first_frame(camera).width == 400
        camera.pause()
        assert camera.paused and camera.grabber.released
    finally:
        camera.grabber.stop()


def test_build_detector_names_an_unreadable_model(tmp_path, int8_model_path):
    config = make_config(tmp_path, int8_model_path)
    folder = tmp_path / "model-folder.tflite"
    folder.mkdir()
    with pytest.raises(StartupError) as failed:
        build_detector(dataclasses.replace(config, detector=dataclasses.replace(config.detector, model=folder)))
    assert failed.value.exit_code == ExitCode.MODEL and str(folder) in str(failed.value)
