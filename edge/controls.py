"""Remote controls (Home Assistant's switches, number and button): command parsing, the
overrides they set, their persistence in the state directory, and their merge over the
configuration file.

A control is an *override*: the config file says what the device does, a control set from
Home Assistant says otherwise until it is set again. Overrides are stored atomically as JSON
(``<state_dir>/controls.json``) so they survive restarts and reboots, and they are merged over
the file's values after every reload: a SIGHUP never undoes them silently (each override of a
file value is logged). ``[homeassistant] controls = false`` ignores both commands and stored
overrides (locked-down fleets: the file is the only authority).

Threads: commands arrive on the MQTT network thread; :class:`ControlInbox` only parses and
queues them. The daemon loop takes them between frames and applies them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.config import Config
from edge.discovery import OFF, ON, PRESS, SCORE_THRESHOLD_MAX, SCORE_THRESHOLD_MIN

STATE_FILE_NAME = "controls.json"
DETECTION, SNAPSHOTS, SCORE_THRESHOLD, REANNOUNCE = "detection", "snapshots", "score_threshold", "reannounce"
CONTROL_NAMES = (DETECTION, SNAPSHOTS, SCORE_THRESHOLD, REANNOUNCE)
# A command is a few bytes ("ON", "0.55"): anything longer is not one of ours.
MAX_COMMAND_BYTES = 32


class ControlError(ValueError):
    """A command payload that is not allowed; ``str(error)`` is one line naming the control."""


@dataclass(frozen=True)
class Command:
    """One parsed command: ``control`` one of :data:`CONTROL_NAMES`; ``value`` bool for the
    switches, float for the score threshold, None for the button."""

    control: str
    value: bool | float | None


@dataclass(frozen=True)
class Overrides:
    """What the controls set; None: the config file's value applies."""

    detection: bool | None = None
    snapshots: bool | None = None
    score_threshold: float | None = None

    def with_command(self, command: Command) -> Overrides:
        if command.control == REANNOUNCE:
            return self
        change: dict[str, Any] = {command.control: command.value}  # parse_command checked the pair
        return dataclasses.replace(self, **change)

    def to_json(self) -> dict[str, Any]:
        return {name: value for name, value in dataclasses.asdict(self).items() if value is not None}


def parse_command(control: str, payload: bytes) -> Command:
    """A command topic's last level and payload -> :class:`Command`, or ControlError."""
    if control not in CONTROL_NAMES:
        raise ControlError(f"unknown control '{control[:40]}' (known: {', '.join(CONTROL_NAMES)})")
    if len(payload) > MAX_COMMAND_BYTES:
        raise ControlError(f"control '{control}': a {len(payload)}-byte payload is not a command")
    text = payload.decode("utf-8", errors="replace").strip()
    if control in (DETECTION, SNAPSHOTS):
        if text not in (ON, OFF):
            raise ControlError(f"control '{control}': payload {text!r} is not allowed ({ON!r} or {OFF!r})")
        return Command(control, text == ON)
    if control == SCORE_THRESHOLD:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not SCORE_THRESHOLD_MIN <= value <= SCORE_THRESHOLD_MAX:  # also false for nan
            raise ControlError(
                f"control '{control}': payload {text!r} is not allowed "
                f"(a number {SCORE_THRESHOLD_MIN:g}-{SCORE_THRESHOLD_MAX:g})"
            )
        return Command(control, round(value, 4))
    if text != PRESS:
        raise ControlError(f"control '{control}': payload {text!r} is not allowed ({PRESS!r})")
    return Command(control, None)


def state_path(state_dir: Path) -> Path:
    return Path(state_dir) / STATE_FILE_NAME


def load_overrides(state_dir: Path, log: logging.Logger) -> Overrides:
    """The stored overrides; none when the file does not exist. A file that cannot be read
    or is not ours is logged (naming it) and ignored: the config file applies."""
    path = state_path(state_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Overrides()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.error("control state '%s' cannot be read (%s); using the config file's values", path, exc)
        return Overrides()
    overrides = Overrides()
    if not isinstance(data, dict):
        data = {"": data}
    for name, value in data.items():
        try:
            raw = (ON if value else OFF) if isinstance(value, bool) else str(value)
            if name == REANNOUNCE:
                raise ControlError(f"'{name}' is a button, not a stored value")
            overrides = overrides.with_command(parse_command(name, raw.encode()))
        except ControlError as exc:
            log.error("control state '%s': %s; ignoring that entry", path, exc)
    return overrides


def save_overrides(state_dir: Path, overrides: Overrides) -> None:
    """Write the overrides atomically (temp file in the same folder, fsync, rename): a crash
    leaves the old file or the new one, never a partial one. Raises OSError."""
    path = state_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".controls.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(overrides.to_json(), handle, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def apply_overrides(config: Config, overrides: Overrides) -> tuple[Config, list[str]]:
    """``config`` with the overrides merged in, and one line per file value overridden."""
    notes = []
    snapshot, detector = config.snapshot, config.detector
    if overrides.snapshots is not None and overrides.snapshots != snapshot.enabled:
        notes.append(
            f"snapshots {_switch(overrides.snapshots)} (config file: snapshot.enabled = {_toml(snapshot.enabled)})"
        )
        snapshot = dataclasses.replace(snapshot, enabled=overrides.snapshots)
    if overrides.score_threshold is not None and overrides.score_threshold != detector.score_threshold:
        notes.append(
            f"score threshold {overrides.score_threshold:g} "
            f"(config file: detector.score_threshold = {detector.score_threshold:g})"
        )
        detector = dataclasses.replace(detector, score_threshold=overrides.score_threshold)
    if overrides.detection is False:
        notes.append("detection OFF (paused from Home Assistant)")
    return dataclasses.replace(config, snapshot=snapshot, detector=detector), notes


def control_state(config: Config, detection: bool) -> dict[str, Any]:
    """The retained JSON the switches and the number read their state from."""
    return {
        DETECTION: _switch(detection),
        SNAPSHOTS: _switch(config.snapshot.enabled),
        SCORE_THRESHOLD: config.detector.score_threshold,
    }


def _switch(value: bool) -> str:
    return ON if value else OFF


def _toml(value: bool) -> str:
    return "true" if value else "false"


class ControlInbox:
    """Commands received on the MQTT thread, waiting for the daemon loop. Invalid commands
    are dropped and logged once per control (unknown controls count as one): a repeated or
    hostile stream of bad commands must not flood the journal."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._lock = threading.Lock()
        self._pending: list[Command] = []
        self._reported: set[str] = set()
        self._wake = threading.Event()

    def receive(self, control: str, payload: bytes) -> None:
        try:
            command = parse_command(control, payload)
        except ControlError as exc:
            key = control if control in CONTROL_NAMES else ""
            with self._lock:
                first = key not in self._reported
                self._reported.add(key)
            if first:
                self._log.warning("ignored a command from MQTT: %s (further bad commands for it are not logged)", exc)
            return
        with self._lock:
            self._pending.append(command)
        self._wake.set()

    def take(self) -> list[Command]:
        with self._lock:
            pending, self._pending = self._pending, []
            self._wake.clear()
        return pending

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` s until a command arrives (the paused loop sleeps here)."""
        return self._wake.wait(timeout)


class Controls:
    """The daemon's view of its controls: the stored overrides, the inbox, and their merge
    over the config file. ``enabled`` False (``homeassistant.controls = false``, or no MQTT):
    no command is accepted and stored overrides are ignored."""

    def __init__(self, state_dir: Path, enabled: bool, log: logging.Logger, load: bool = True) -> None:
        self.state_dir, self.enabled, self._log = Path(state_dir), enabled, log
        self.inbox = ControlInbox(log)
        self.overrides = load_overrides(self.state_dir, log) if enabled and load else Overrides()
        if load and not enabled and state_path(self.state_dir).is_file():
            log.info(
                "controls are off (homeassistant.controls = false): ignoring the stored %s", state_path(self.state_dir)
            )

    @classmethod
    def for_config(cls, config: Config, log: logging.Logger, load: bool = True) -> Controls:
        """The controls ``config`` allows; ``load`` False: do not read the stored ones (yet)."""
        enabled = config.mqtt.host is not None and config.homeassistant.enabled and config.homeassistant.controls
        return cls(config.device.state_dir, enabled, log, load)

    def moved_to(self, state_dir: Path) -> Controls:
        """The same controls kept in ``state_dir`` from now on (a reload changed
        ``device.state_dir``): the values in force are stored there, so moving the folder
        never undoes a switch; the old folder is left as it is. The inbox stays the same
        (the running sink delivers to it)."""
        moved = Controls(state_dir, self.enabled, self._log, load=False)
        moved.inbox, moved.overrides = self.inbox, self.overrides
        if self.enabled and self.overrides != Overrides():
            try:
                save_overrides(moved.state_dir, self.overrides)
            except OSError as exc:
                self._log.error(
                    "cannot store the controls in '%s' (%s; set device.state_dir): they apply until the daemon stops",
                    state_path(moved.state_dir),
                    exc.strerror or exc,
                )
        return moved

    @property
    def detection(self) -> bool:
        """False while detection is switched off (privacy mode)."""
        return self.overrides.detection is not False

    def effective(self, file_config: Config, announce: bool = True) -> Config:
        """The config file's values with the overrides merged in; logs each override of a
        file value when ``announce`` (start and reload: the file was just read)."""
        config, notes = apply_overrides(file_config, self.overrides)
        for note in notes if announce else ():
            self._log.info("control set from Home Assistant overrides the config file: %s", note)
        return config

    def apply(self, command: Command) -> bool:
        """Record ``command``'s value and store it; False if it changes nothing. A store that
        fails is logged: the value still applies until the daemon stops."""
        updated = self.overrides.with_command(command)
        if updated == self.overrides:
            return False
        self.overrides = updated
        self._log.info(
            "control %s set to %s from MQTT",
            command.control,
            _switch(command.value) if isinstance(command.value, bool) else command.value,
        )
        try:
            save_overrides(self.state_dir, updated)
        except OSError as exc:
            self._log.error(
                "cannot store the controls in '%s' (%s; set device.state_dir): they apply until the daemon stops",
                state_path(self.state_dir),
                exc.strerror or exc,
            )
        return True
