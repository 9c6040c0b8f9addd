"""Remote controls (Home Assistant's switches, number and button): command parsing, the
overrides they set, their persistence in the state directory, and their merge over the
configuration file.

A control is an *override*: the config file says what the device does, a control set from
Home Assistant says otherwise until it is set again. Overrides are stored atomically as JSON
(``<state_dir>/controls.json``) so they survive restarts and reboots, and they are merged over
the file's values after every reload: a SIGHUP never undoes them silently (each override of a
file value is logged). ``[homeassistant] controls = false`` ignores both commands and stored
overrides (locked-down fleets: the file is the only authority).

Commands reach the daemon only through :mod:`edge.mqtt.command_intake` (the gate every message
from the broker passes); the daemon loop applies them between frames.

Privacy fails closed: a stored state that exists but cannot be read, or a stored switch
that is not ON or OFF, leaves that switch OFF (detection paused, no snapshot leaves the
device) until it is switched on from Home Assistant. A change is stored at once when it
turns a switch OFF, otherwise at most every :data:`STORE_INTERVAL_S` (the state directory
is usually an SD card).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.common.files import os_reason, read_bounded
from edge.config import Config
from edge.mqtt.discovery import MAX_NAME_CHARS, OFF, ON, PRESS, SCORE_THRESHOLD_MAX, SCORE_THRESHOLD_MIN

STATE_FILE_NAME = "controls.json"
DETECTION, SNAPSHOTS, SCORE_THRESHOLD, REANNOUNCE = "detection", "snapshots", "score_threshold", "reannounce"
# Recognition's commands (the "Enrol as" text, the "Person to forget" select, their buttons):
# requests to the daemon, never stored overrides (edge.mqtt.enrolment holds their state).
ENROL_NAME, ENROL, FORGET_NAME, FORGET = "enrol_name", "enrol", "forget_name", "forget"
PEOPLE_CONTROLS = (ENROL_NAME, ENROL, FORGET_NAME, FORGET)
# The controls whose value overrides the config file (and is stored in controls.json).
OVERRIDE_CONTROLS = (DETECTION, SNAPSHOTS, SCORE_THRESHOLD)
CONTROL_NAMES = (*OVERRIDE_CONTROLS, REANNOUNCE, *PEOPLE_CONTROLS)
# A command is a few bytes ("ON", "0.55"): anything longer is not one of ours.
MAX_COMMAND_BYTES = 32
# A person's name is up to MAX_NAME_CHARS characters of up to 4 UTF-8 bytes each.
MAX_NAME_COMMAND_BYTES = 4 * MAX_NAME_CHARS
_NAME_CONTROLS = (ENROL_NAME, FORGET_NAME)
# The switches that keep data on the device when OFF: an unreadable stored value means OFF.
PRIVACY_SWITCHES = (DETECTION, SNAPSHOTS)
# Changes that do not switch a privacy control OFF are stored at most this often.
STORE_INTERVAL_S = 5.0
# What we store is under 100 bytes: a bigger file is not ours (and is not read into memory).
MAX_STATE_BYTES = 4096
# What Home Assistant's number entity sends: a plain decimal ("0.55"), no exponent, no
# "nan"/"inf", no underscores (all of which float() would take).
_DECIMAL = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,6})?")


class ControlError(ValueError):
    """A command payload that is not allowed; ``str(error)`` is one line naming the control."""


def max_command_bytes(control: str) -> int:
    """The largest payload a command to ``control`` may have (a name, or a few bytes)."""
    return MAX_NAME_COMMAND_BYTES if control in _NAME_CONTROLS else MAX_COMMAND_BYTES


@dataclass(frozen=True)
class Command:
    """One parsed command: ``control`` one of :data:`CONTROL_NAMES`; ``value`` bool for the
    switches, float for the score threshold, a valid person name (str) for the "Enrol as"
    text and the "Person to forget" select, None for the buttons."""

    control: str
    value: bool | float | str | None


@dataclass(frozen=True)
class Overrides:
    """What the controls set; None: the config file's value applies."""

    detection: bool | None = None
    snapshots: bool | None = None
    score_threshold: float | None = None

    def with_command(self, command: Command) -> Overrides:
        if command.control not in OVERRIDE_CONTROLS:  # a request, not a value to keep
            return self
        change: dict[str, Any] = {command.control: command.value}  # parse_command checked the pair
        return dataclasses.replace(self, **change)

    def to_json(self) -> dict[str, Any]:
        return {name: value for name, value in dataclasses.asdict(self).items() if value is not None}


def parse_command(control: str, payload: bytes) -> Command:
    """A command topic's last level and payload -> :class:`Command`, or ControlError (one
    line; ``control`` and the payload shown escaped: both come from whoever published)."""
    if control not in CONTROL_NAMES:
        raise ControlError(f"unknown control {control[:40]!a} (known: {', '.join(CONTROL_NAMES)})")
    if len(payload) > max_command_bytes(control):
        raise ControlError(f"control '{control}': a {len(payload)}-byte payload is not a command")
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ControlError(f"control '{control}': payload {payload[:40]!r} is not UTF-8 text") from None
    if control in _NAME_CONTROLS:
        return Command(control, _person_name(control, text))
    if control in (DETECTION, SNAPSHOTS):
        if text not in (ON, OFF):
            raise ControlError(f"control '{control}': payload {text!a} is not allowed ({ON!r} or {OFF!r})")
        return Command(control, text == ON)
    if control == SCORE_THRESHOLD:
        value = float(text) if _DECIMAL.fullmatch(text) else None
        if value is None or not SCORE_THRESHOLD_MIN <= value <= SCORE_THRESHOLD_MAX:
            raise ControlError(
                f"control '{control}': payload {text!a} is not allowed "
                f"(a decimal number {SCORE_THRESHOLD_MIN:g}-{SCORE_THRESHOLD_MAX:g})"
            )
        return Command(control, round(value, 4))
    if text != PRESS:
        raise ControlError(f"control '{control}': payload {text!a} is not allowed ({PRESS!r})")
    return Command(control, None)


def _person_name(control: str, text: str) -> str:
    """``text`` if it is a name the gallery allows, else ControlError (the gallery's rule)."""
    # Imported here: the gallery needs numpy, which check-config (a user of this module) does not.
    from edge.recognize.gallery import GalleryError, check_name

    try:
        return check_name(text)
    except GalleryError as exc:
        raise ControlError(f"control '{control}': {exc}") from None


def state_path(state_dir: Path) -> Path:
    return Path(state_dir) / STATE_FILE_NAME


def load_overrides(state_dir: Path, log: logging.Logger) -> Overrides:
    """The stored overrides; none when the file does not exist. Fails closed: a file that
    exists but cannot be read (or is not ours) switches detection and snapshots OFF, a
    stored switch that is not ON or OFF is OFF; each is logged naming the file. A bad
    threshold or an unknown entry is logged and ignored."""
    path = state_path(state_dir)
    closed = Overrides(**dict.fromkeys(PRIVACY_SWITCHES, False))
    try:
        data = json.loads(read_bounded(path, MAX_STATE_BYTES).decode("utf-8"))
    except FileNotFoundError:
        return Overrides()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = os_reason(exc) if isinstance(exc, OSError) else exc
        log.error("control state '%s' cannot be read (%s); %s", path, reason, _FAILED_CLOSED)
        return closed
    if not isinstance(data, dict):
        log.error("control state '%s' is not a JSON object; %s", path, _FAILED_CLOSED)
        return closed
    overrides = Overrides()
    for name, value in data.items():
        try:
            if name in CONTROL_NAMES and name not in OVERRIDE_CONTROLS:
                raise ControlError(f"'{name}' is a request, not a stored value")
            raw = (ON if value else OFF) if isinstance(value, bool) else str(value)
            overrides = overrides.with_command(parse_command(str(name), raw.encode()))
        except ControlError as exc:
            if name in PRIVACY_SWITCHES:
                log.error("control state '%s': %s; %s stays OFF until switched on", path, exc, name)
                overrides = overrides.with_command(Command(name, False))
            else:
                log.error("control state '%s': %s; ignoring that entry", path, exc)
    return overrides


_FAILED_CLOSED = (
    "detection and snapshots stay OFF until switched on from Home Assistant "
    "(or the file is fixed or removed, and the daemon restarted)"
)


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


class Controls:
    """The daemon's view of its controls: the stored overrides and their merge over the
    config file. ``enabled`` False (``homeassistant.controls = false``, or no MQTT): no
    command is accepted and stored overrides are ignored. ``clock``: for the store's pace."""

    def __init__(
        self,
        state_dir: Path,
        enabled: bool,
        log: logging.Logger,
        load: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state_dir, self.enabled, self._log, self._clock = Path(state_dir), enabled, log, clock
        self.overrides = load_overrides(self.state_dir, log) if enabled and load else Overrides()
        self._unstored = False
        self._last_store = float("-inf")
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
        never undoes a switch; the old folder is left as it is."""
        moved = Controls(state_dir, self.enabled, self._log, load=False, clock=self._clock)
        moved.overrides = self.overrides
        if self.enabled and self.overrides != Overrides():
            moved._save()
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
        """Record ``command``'s value; False if it changes nothing. Stored at once when it
        switches a privacy control OFF or the last store is :data:`STORE_INTERVAL_S` old,
        otherwise by :meth:`store_if_due` (the daemon loop) or :meth:`store` (at stop)."""
        updated = self.overrides.with_command(command)
        if updated == self.overrides:
            return False
        self.overrides, self._unstored = updated, True
        self._log.info(
            "control %s set to %s from MQTT",
            command.control,
            _switch(command.value) if isinstance(command.value, bool) else command.value,
        )
        if command.value is False and command.control in PRIVACY_SWITCHES:
            self.store()
        else:
            self.store_if_due()
        return True

    def store_if_due(self) -> None:
        """Store a change not stored yet, if the last store is :data:`STORE_INTERVAL_S` old."""
        if self._unstored and self._clock() - self._last_store >= STORE_INTERVAL_S:
            self.store()

    def store(self) -> None:
        """Store the overrides now if a change is not stored yet. A store that fails is
        logged: the values still apply until the daemon stops."""
        if not self._unstored:
            return
        self._unstored, self._last_store = False, self._clock()
        self._save()

    def _save(self) -> None:
        """Write the overrides; a failure is logged (the values still apply until the daemon stops)."""
        try:
            save_overrides(self.state_dir, self.overrides)
        except OSError as exc:
            self._log.error(
                "cannot store the controls in '%s' (%s; set device.state_dir): they apply until the daemon stops",
                state_path(self.state_dir),
                exc.strerror or exc,
            )


def state_dir_problem(state_dir: Path) -> str | None:
    """Why this process could not keep the controls in ``state_dir`` (None: it can), one
    line naming the key or file: a folder it cannot reach, enter, list or write, or a
    stored state it cannot read. A folder that does not exist yet is no problem: the
    daemon (or systemd's StateDirectory=) creates it."""
    folder = Path(state_dir)
    try:
        is_dir = stat.S_ISDIR(folder.stat().st_mode)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"device.state_dir '{folder}': cannot be reached ({exc.strerror or exc})"
    if not is_dir:
        return f"device.state_dir '{folder}': is not a folder"
    for mode, verb in ((os.R_OK | os.X_OK, "read"), (os.W_OK | os.X_OK, "written")):
        if not os.access(folder, mode):
            return f"device.state_dir '{folder}': cannot be {verb} (permission denied)"
    stored = state_path(folder)
    try:
        read_bounded(stored, MAX_STATE_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"control state '{stored}': cannot be read ({os_reason(exc)}); the daemon would keep detection OFF"
    return None
