"""Fleet status at a glance: one line per device, read from the broker (``edge-face fleet``).

Subscribes under the topic prefix with ``{device_id}`` as a wildcard level (the layout is
:class:`edge.mqtt.discovery.DeviceTopics`) and reads:

* ``status`` (retained): "online", "offline" (the broker's last will) or "stopped";
* ``state`` (retained): ``last_seen``, the time a face was last seen;
* ``health`` (retained, each stats interval): fps, inference time, CPU temperature, dropped
  events, read at once;
* ``stats`` (periodic, not retained): the same figures from a daemon too old to publish
  ``health``; the command waits up to ``--timeout`` for an online device that has neither;
* the Home Assistant discovery message (retained): the version and model the device announced.

Everything read is untrusted (anyone allowed to publish there writes it): the broker is told
not to send a message over :data:`MAX_MESSAGE_BYTES` (MQTT 5 maximum packet size), at most
:data:`MAX_TOPICS` topics are kept and :data:`MAX_DEVICES` devices shown, text is printed
with control characters escaped and cut to a column width, and a payload that is not the
JSON expected, or a field of the wrong type, is ignored with a one-line note on stderr
naming the topic. The whole look ends within ``--timeout`` (plus the TCP/TLS connect).

Exit status (:class:`edge.exitcodes.ExitCode`): OK when every device is online, OFFLINE when
any device is offline or stopped (or the ``--device`` asked for has no status), FAILURE when the
broker cannot be reached or refuses us, or no device publishes under the prefix, CONFIG for bad
arguments. The password comes from a file or the environment, never from argv.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from edge.common.untrusted import decoded, json_object, printable
from edge.config import (
    DEVICE_ID_PATTERN,
    DEVICE_ID_PLACEHOLDER,
    HomeAssistantConfig,
    MqttConfig,
    key_default,
    validate_topic_prefix,
)
from edge.exitcodes import ExitCode
from edge.mqtt.discovery import STATUS_OFFLINE, STATUS_ONLINE, STATUS_STOPPED, DeviceTopics, discovery_topic

if TYPE_CHECKING:  # paho is imported where it is used: the table's other paths run without it
    import ssl

    import paho.mqtt.client as paho
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

DEFAULT_TOPIC_PREFIX: str = key_default(MqttConfig, "topic_prefix")
DEFAULT_DISCOVERY_PREFIX: str = key_default(HomeAssistantConfig, "discovery_prefix")
DEFAULT_TIMEOUT_S = 5.0
# Retained messages follow the SUBACK at once; this much quiet after it is the wait for them.
RETAINED_SETTLE_S = 0.5
PASSWORD_ENV = "EDGE_FACE_MQTT_PASSWORD"
# Bounds on what the broker may make us hold or print. The largest message we read is a
# discovery config (about 26 kB with 16 zones and a 64-character device id).
MAX_MESSAGE_BYTES = 64 * 1024
MAX_TOPICS = 5000
MAX_DEVICES = 1000
# Notes about bad messages printed before "... and N more"; the width of a printed field.
MAX_NOTES = 10
FIELD_WIDTH = 40
STATUSES = (STATUS_ONLINE, STATUS_OFFLINE, STATUS_STOPPED)
# The daemon's stats keys behind each column (edge/daemon/loop.py Daemon.stats); version and model
# come from the retained discovery message.
STATS_KEYS = {
    "fps": "fps",
    "inference_ms": "invoke_ms_p50",
    "cpu_temp_c": "cpu_temperature_c",
    "dropped_events": "events_dropped",
}


class FleetError(Exception):
    """The broker cannot be used (unreachable, refused, bad TLS). ``str()`` is one line."""


@dataclass(frozen=True)
class TopicPattern:
    """Which topic levels carry the device id; built from a prefix holding ``{device_id}``."""

    levels: tuple[str, ...]
    device_level: int

    @classmethod
    def from_prefix(cls, prefix: str) -> TopicPattern:
        if prefix.count(DEVICE_ID_PLACEHOLDER) != 1:
            raise ValueError(f"--topic-prefix '{prefix}' must contain {DEVICE_ID_PLACEHOLDER} exactly once")
        # Validated with a sample id: the rest must be a literal topic a device may publish under.
        validate_topic_prefix(prefix.replace(DEVICE_ID_PLACEHOLDER, "x"), "--topic-prefix")
        levels = tuple(prefix.split("/"))
        device_level = levels.index(DEVICE_ID_PLACEHOLDER) if DEVICE_ID_PLACEHOLDER in levels else -1
        if device_level < 0:
            raise ValueError(f"--topic-prefix '{prefix}': {DEVICE_ID_PLACEHOLDER} must be a whole topic level")
        return cls(levels, device_level)

    def subscription(self, leaf: str) -> str:
        """The wildcard subscription for one of the :class:`edge.mqtt.discovery.DeviceTopics` leaves."""
        wild = list(self.levels)
        wild[self.device_level] = "+"
        return "/".join(wild) + "/" + leaf

    def match(self, topic: str) -> tuple[str, str] | None:
        """(device id, leaf) for a topic under the pattern, else None."""
        parts = topic.split("/")
        if len(parts) != len(self.levels) + 1:
            return None
        for index, level in enumerate(self.levels):
            if index != self.device_level and parts[index] != level:
                return None
        return parts[self.device_level], parts[-1]


# The leaves read here, named by the daemon's own topic layout.
_LEAVES = DeviceTopics.under("")
STATUS_LEAF, STATE_LEAF, STATS_LEAF, HEALTH_LEAF = (
    name.lstrip("/") for name in (_LEAVES.status, _LEAVES.state, _LEAVES.stats, _LEAVES.health)
)


@dataclass(frozen=True)
class DeviceReport:
    """What the broker says about one device. None: not reported (or not yet, for stats)."""

    device: str
    status: str | None
    version: str | None
    model: str | None
    fps: float | None
    inference_ms: float | None
    cpu_temp_c: float | None
    last_face_age_s: float | None
    dropped_events: int | None

    @property
    def online(self) -> bool:
        return self.status == STATUS_ONLINE


@dataclass(frozen=True)
class Snapshot:
    """The latest payload per topic seen during one look at the broker."""

    payloads: dict[str, bytes]
    received_at: float  # time.time() when the look ended
    notes: tuple[str, ...] = ()  # what the look refused (too large, too many topics)


def _note(notes: list[str], topic: str, problem: str) -> None:
    notes.append(f"{printable(topic)}: {problem}; ignored")


def _json_object(payload: bytes | None, topic: str, notes: list[str]) -> dict[str, Any]:
    if not payload:
        return {}
    value, problem = json_object(payload)
    if value is None:
        _note(notes, topic, problem or "not a JSON object")
        return {}
    return value


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _typed(values: dict[str, Any], key: str, kind: type, topic: str, notes: list[str]) -> Any:
    """``values[key]`` if it is a ``kind`` (a number: finite, not a bool); None if absent or
    null; a wrong type is noted and read as absent."""
    value = values.get(key)
    if value is None:
        return None
    if _is_number(value) if kind is float else isinstance(value, kind):
        return value
    _note(notes, topic, f"field '{printable(key, FIELD_WIDTH)}' is {type(value).__name__}, not {kind.__name__}")
    return None


def _age_seconds(iso_time: Any, now: float) -> float | None:
    if not isinstance(iso_time, str):
        return None
    try:
        moment = datetime.fromisoformat(iso_time.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, now - moment.timestamp())


def build_reports(
    snapshot: Snapshot, pattern: TopicPattern, discovery_prefix: str, notes: list[str] | None = None
) -> list[DeviceReport]:
    """One report per device that has a retained status, sorted by device id, at most
    :data:`MAX_DEVICES` (pure). What is refused is appended to ``notes`` (one line each)."""
    notes = notes if notes is not None else []
    by_device: dict[str, dict[str, bytes]] = {}
    for topic, payload in sorted(snapshot.payloads.items()):
        matched = pattern.match(topic)
        if matched is None or not payload:
            continue
        if not DEVICE_ID_PATTERN.fullmatch(matched[0]):
            _note(notes, topic, "not an edge-face device id")
            continue
        by_device.setdefault(matched[0], {})[matched[1]] = payload
    devices = [(device, leaves) for device, leaves in sorted(by_device.items()) if STATUS_LEAF in leaves]
    # (stats or state without a status: a removed device's stray message)
    if len(devices) > MAX_DEVICES:
        notes.append(f"{len(devices)} devices: showing the first {MAX_DEVICES}")
        devices = devices[:MAX_DEVICES]
    reports = []
    for device, leaves in devices:
        topic_of = pattern.subscription(STATUS_LEAF).replace("+", device, 1)[: -len(STATUS_LEAF)]
        status = decoded(leaves[STATUS_LEAF])
        if status not in STATUSES:
            _note(notes, topic_of + STATUS_LEAF, f"status '{printable(status, FIELD_WIDTH)}' is not one of {STATUSES}")
        # Live stats first; a daemon publishes the same figures retained as its health.
        figures_leaf = STATS_LEAF if STATS_LEAF in leaves else HEALTH_LEAF
        figures = _json_object(leaves.get(figures_leaf), topic_of + figures_leaf, notes)
        state = _json_object(leaves.get(STATE_LEAF), topic_of + STATE_LEAF, notes)
        discovery = discovery_topic(discovery_prefix, device)
        announced = _typed(
            _json_object(snapshot.payloads.get(discovery), discovery, notes), "dev", dict, discovery, notes
        )
        announced = announced or {}
        version = _typed(announced, "sw_version", str, discovery, notes)
        model = _typed(announced, "model_id", str, discovery, notes)
        dropped = _typed(figures, STATS_KEYS["dropped_events"], float, topic_of + figures_leaf, notes)
        last_seen = _typed(state, "last_seen", str, topic_of + STATE_LEAF, notes)
        reports.append(
            DeviceReport(
                device=device,
                status=printable(status, FIELD_WIDTH),
                version=printable(version, FIELD_WIDTH) if version is not None else None,
                model=printable(model, FIELD_WIDTH) if model is not None else None,
                fps=_typed(figures, STATS_KEYS["fps"], float, topic_of + figures_leaf, notes),
                inference_ms=_typed(figures, STATS_KEYS["inference_ms"], float, topic_of + figures_leaf, notes),
                cpu_temp_c=_typed(figures, STATS_KEYS["cpu_temp_c"], float, topic_of + figures_leaf, notes),
                last_face_age_s=_age_seconds(last_seen, snapshot.received_at),
                dropped_events=None if dropped is None else int(dropped),
            )
        )
    return reports


def fleet_exit_code(reports: list[DeviceReport], device: str | None = None) -> ExitCode:
    """OK when every device looked at is online; OFFLINE when one is not (or is missing)."""
    chosen = [r for r in reports if device is None or r.device == device]
    if device is not None and not chosen:
        return ExitCode.OFFLINE
    if not chosen:
        return ExitCode.FAILURE
    return ExitCode.OK if all(r.online for r in chosen) else ExitCode.OFFLINE


def _age_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _cell(value: Any, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


COLUMNS = ("DEVICE", "STATUS", "VERSION", "MODEL", "FPS", "INFER_MS", "CPU_C", "LAST_FACE", "DROPPED")


def format_table(reports: list[DeviceReport]) -> str:
    """A header and one aligned line per device."""
    rows = [COLUMNS] + [
        (
            r.device,
            r.status or "-",
            _cell(r.version),
            _cell(r.model),
            _cell(r.fps, ".1f"),
            _cell(r.inference_ms, ".1f"),
            _cell(r.cpu_temp_c, ".1f"),
            _age_text(r.last_face_age_s),
            _cell(r.dropped_events),
        )
        for r in reports
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


@dataclass(frozen=True)
class BrokerSettings:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None


@dataclass
class _Progress:
    """What paho's thread has reported so far (guarded by the caller's lock)."""

    refused: str | None = None  # the broker's reason
    subscribed: float | None = None  # time.monotonic() of the SUBACK
    oversized: int = 0  # messages over MAX_MESSAGE_BYTES (a broker that ignored our maximum)
    topics_dropped: int = 0  # topics beyond MAX_TOPICS


class _Collector:
    """What paho's thread delivers during one look (its callbacks), and the wait for it; all
    state is guarded by ``lock``."""

    def __init__(self, pattern: TopicPattern, discovery_prefix: str) -> None:
        self.pattern, self.discovery_prefix = pattern, discovery_prefix
        self.lock = threading.Condition()
        self.payloads: dict[str, bytes] = {}
        self.progress = _Progress()

    def on_connect(self, client: paho.Client, reason_code: ReasonCode) -> None:
        if reason_code.is_failure:
            with self.lock:
                self.progress.refused = str(reason_code)
                self.lock.notify_all()
            return
        client.subscribe(
            [(self.pattern.subscription(leaf), 0) for leaf in (STATUS_LEAF, STATE_LEAF, STATS_LEAF, HEALTH_LEAF)]
            + [(discovery_topic(self.discovery_prefix, "+"), 0)]
        )

    def on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        with self.lock:
            self.progress.subscribed = time.monotonic()
            self.lock.notify_all()

    def on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        with self.lock:
            if len(message.payload) > MAX_MESSAGE_BYTES:
                self.progress.oversized += 1
            elif message.topic in self.payloads or len(self.payloads) < MAX_TOPICS:
                self.payloads[message.topic] = bytes(message.payload)
            else:
                self.progress.topics_dropped += 1
            self.lock.notify_all()

    def _stats_missing(self) -> bool:
        for topic, payload in self.payloads.items():
            matched = self.pattern.match(topic)
            if matched and matched[1] == STATUS_LEAF and payload == STATUS_ONLINE.encode():
                figures = (
                    self.pattern.subscription(leaf).replace("+", matched[0], 1) for leaf in (STATS_LEAF, HEALTH_LEAF)
                )
                if not any(self.payloads.get(topic) for topic in figures):
                    return True
        return False

    def wait(self, timeout: float) -> tuple[_Progress, dict[str, bytes], tuple[str, ...]]:
        """Until the broker refuses us, or the retained messages have settled after the SUBACK
        and every online device has sent its stats, or ``timeout`` s: (the progress, the
        payloads by topic, the notes on what was refused) by then."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                now = time.monotonic()
                if self.progress.refused is not None or now >= deadline:
                    break
                subscribed = self.progress.subscribed
                if (
                    subscribed is not None
                    and now >= subscribed + min(RETAINED_SETTLE_S, timeout)
                    and not self._stats_missing()
                ):
                    break
                self.lock.wait(min(0.1, deadline - now))
            progress = self.progress
            notes = []
            if progress.oversized:
                notes.append(f"{progress.oversized} message(s) over {MAX_MESSAGE_BYTES} bytes; ignored")
            if progress.topics_dropped:
                notes.append(f"more than {MAX_TOPICS} topics; {progress.topics_dropped} ignored")
            return replace(progress), dict(self.payloads), tuple(notes)


def _tls_context(broker: BrokerSettings) -> ssl.SSLContext | None:
    import ssl

    if not broker.tls:
        return None
    try:
        tls = ssl.create_default_context(cafile=broker.cafile)
        if broker.certfile is not None:
            tls.load_cert_chain(broker.certfile, broker.keyfile)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise FleetError(f"TLS files unusable: {exc}") from None
    return tls


def _connect(client: paho.Client, broker: BrokerSettings, timeout: float) -> None:
    import ssl

    from edge.mqtt.client import max_packet_size

    try:
        # The broker drops what is larger for us rather than send it (MQTT 5 maximum packet size).
        client.connect(
            broker.host,
            broker.port,
            keepalive=max(5, int(timeout) + 5),
            properties=max_packet_size(MAX_MESSAGE_BYTES),
        )
    except ssl.SSLCertVerificationError as exc:
        raise FleetError(
            f"broker {broker.host}:{broker.port}: TLS certificate verify failed ({exc.verify_message})"
        ) from None
    except (OSError, ValueError) as exc:
        raise FleetError(f"broker {broker.host}:{broker.port} unreachable ({exc})") from None


def look(broker: BrokerSettings, pattern: TopicPattern, discovery_prefix: str, timeout: float) -> Snapshot:
    """Subscribe, take the retained messages, and wait (up to ``timeout`` s) until every online
    device has sent its stats. Raises FleetError when the broker cannot be used."""
    from edge.mqtt.client import ClientSettings, new_client, on_connack

    tls = _tls_context(broker)
    client = new_client(ClientSettings(client_id="", username=broker.username, password=broker.password, tls=tls))
    client.connect_timeout = min(timeout, client.connect_timeout)
    collector = _Collector(pattern, discovery_prefix)
    on_connack(client, collector.on_connect)
    client.on_subscribe, client.on_message = collector.on_subscribe, collector.on_message
    _connect(client, broker, timeout)
    client.loop_start()
    try:
        progress, seen, notes = collector.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    if progress.refused is not None:
        raise FleetError(f"broker {broker.host}:{broker.port} refused the connection ({progress.refused})")
    if progress.subscribed is None:
        raise FleetError(f"broker {broker.host}:{broker.port} did not answer within {timeout:g} s")
    return Snapshot(seen, time.time(), notes)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # No abbreviations: "--password SECRET" must be refused, not taken for --password-file.
    parser.allow_abbrev = False
    # The broker and how to log in to it,
    parser.add_argument("--broker", required=True, help="broker host name or address")
    parser.add_argument("--port", type=int, default=None, help="default 1883, or 8883 with --tls")
    parser.add_argument("--username")
    parser.add_argument(
        "--password-file",
        type=Path,
        help=f"file holding the broker password (default: ${PASSWORD_ENV} if set; never on argv)",
    )
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--cafile")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    # what to look at there, and for how long,
    parser.add_argument(
        "--topic-prefix",
        default=DEFAULT_TOPIC_PREFIX,
        help="the devices' [mqtt] topic_prefix, with {device_id} (default: %(default)s)",
    )
    parser.add_argument(
        "--discovery-prefix",
        default=DEFAULT_DISCOVERY_PREFIX,
        help="Home Assistant discovery prefix, for versions and models (default: %(default)s)",
    )
    parser.add_argument("--device", default=None, help="look at this device only (exit status as for the fleet)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help="seconds to wait for the online devices' stats (default: %(default)s)",
    )
    # and how to say it.
    parser.add_argument("--json", action="store_true", help="one JSON object per device and line")


def _password(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    if args.password_file is not None:
        from edge.config import read_secret

        return read_secret(args.password_file)
    return environ.get(PASSWORD_ENV)


def _settings(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[TopicPattern, BrokerSettings]:
    """The arguments checked: raises ValueError (a ConfigError too) naming the argument, or
    OSError when the password file cannot be read."""
    pattern = TopicPattern.from_prefix(args.topic_prefix)
    validate_topic_prefix(args.discovery_prefix, "--discovery-prefix")
    if not (args.timeout > 0 and math.isfinite(args.timeout)):
        raise ValueError(f"--timeout {args.timeout:g}: must be a positive number of seconds")
    if (args.cert is None) != (args.key is None):
        raise ValueError("--cert and --key go together")
    broker = BrokerSettings(
        host=args.broker,
        port=args.port or (8883 if args.tls else 1883),
        username=args.username,
        password=_password(args, environ),
        tls=args.tls,
        cafile=args.cafile,
        certfile=args.cert,
        keyfile=args.key,
    )
    return pattern, broker


def fleet_main(
    args: argparse.Namespace,
    environ: Mapping[str, str] = os.environ,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """``edge-face fleet``: prints the table (or JSON lines); returns the exit status."""
    try:
        pattern, broker = _settings(args, environ)
    except OSError as exc:
        print(f"edge-face fleet: --password-file {args.password_file}: {exc.strerror or exc}", file=err)
        return ExitCode.CONFIG
    except ValueError as exc:  # ConfigError is a ValueError too
        print(f"edge-face fleet: {exc}", file=err)
        return ExitCode.CONFIG
    try:
        snapshot = look(broker, pattern, args.discovery_prefix, args.timeout)
    except FleetError as exc:
        print(f"edge-face fleet: {exc}", file=err)
        return ExitCode.FAILURE
    notes = list(snapshot.notes)
    reports = build_reports(snapshot, pattern, args.discovery_prefix, notes)
    for note in notes[:MAX_NOTES]:
        print(f"edge-face fleet: {note}", file=err)
    if len(notes) > MAX_NOTES:
        print(f"edge-face fleet: ... and {len(notes) - MAX_NOTES} more message(s) ignored", file=err)
    if args.device is not None:
        reports = [r for r in reports if r.device == args.device]
    if args.json:
        for report in reports:
            print(json.dumps({**asdict(report), "online": report.online}), file=out)
    elif reports:
        print(format_table(reports), file=out)
    code = fleet_exit_code(reports, args.device)
    _explain(code, reports, args.device, pattern, broker, err)
    return code


def _explain(
    code: ExitCode,
    reports: list[DeviceReport],
    device: str | None,
    pattern: TopicPattern,
    broker: BrokerSettings,
    err: TextIO,
) -> None:
    """One line on stderr saying why ``code`` is not OK."""
    if code == ExitCode.FAILURE:
        print(
            f"edge-face fleet: no device status under '{pattern.subscription(STATUS_LEAF)}' on "
            f"{broker.host}:{broker.port}",
            file=err,
        )
    elif device is not None and not reports:
        print(f"edge-face fleet: device '{device}' has no status on {broker.host}:{broker.port}", file=err)
    elif code == ExitCode.OFFLINE:
        down = ", ".join(f"{r.device} ({r.status})" for r in reports if not r.online)
        print(f"edge-face fleet: not online: {down}", file=err)
