"""Fleet status at a glance: one line per device, read from the broker (``edge-face fleet``).

Subscribes under the topic prefix with ``{device_id}`` as a wildcard level (the layout is
:class:`edge.discovery.DeviceTopics`) and reads:

* ``status`` (retained): "online", "offline" (the broker's last will) or "stopped";
* ``state`` (retained): ``last_seen``, the time a face was last seen;
* ``stats`` (periodic, not retained): fps, inference time, dropped events and, when the
  daemon reports them, CPU temperature, version and model. A device's stats only show if one
  arrives within ``--timeout``: the command waits that long for every online device's stats,
  so a timeout above ``[stats] interval_seconds`` shows all of them;
* the Home Assistant discovery message (retained): the version and model the device announced.

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
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from edge.config import (
    DEVICE_ID_PLACEHOLDER,
    HomeAssistantConfig,
    MqttConfig,
    key_default,
    validate_topic_prefix,
)
from edge.discovery import STATUS_ONLINE, DeviceTopics, discovery_topic
from edge.exitcodes import ExitCode

if TYPE_CHECKING:  # paho is imported where it is used: the table's other paths run without it
    import paho.mqtt.client as paho
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

DEFAULT_TOPIC_PREFIX: str = key_default(MqttConfig, "topic_prefix")
DEFAULT_DISCOVERY_PREFIX: str = key_default(HomeAssistantConfig, "discovery_prefix")
DEFAULT_TIMEOUT_S = 5.0
# Retained messages follow the SUBACK at once; this much quiet after it is the wait for them.
RETAINED_SETTLE_S = 0.5
PASSWORD_ENV = "EDGE_FACE_MQTT_PASSWORD"
# The daemon's stats keys behind each column (edge/daemon.py Daemon.stats); version and model
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
        """The wildcard subscription for one of the :class:`edge.discovery.DeviceTopics` leaves."""
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
STATUS_LEAF, STATE_LEAF, STATS_LEAF = (name.lstrip("/") for name in (_LEAVES.status, _LEAVES.state, _LEAVES.stats))


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


def _json_object(payload: bytes | None) -> dict[str, Any]:
    if not payload:
        return {}
    try:
        value = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


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


def _dropped(stats: dict[str, Any]) -> int | None:
    """Events lost to a full outbox since the daemon started."""
    value = _number(stats.get(STATS_KEYS["dropped_events"]))
    return None if value is None else int(value)


def build_reports(snapshot: Snapshot, pattern: TopicPattern, discovery_prefix: str) -> list[DeviceReport]:
    """One report per device that has a retained status, sorted by device id (pure)."""
    by_device: dict[str, dict[str, bytes]] = {}
    for topic, payload in snapshot.payloads.items():
        matched = pattern.match(topic)
        if matched is not None and payload:
            by_device.setdefault(matched[0], {})[matched[1]] = payload
    reports = []
    for device, leaves in sorted(by_device.items()):
        if STATUS_LEAF not in leaves:
            continue  # stats or state without a status: a removed device's stray message
        stats = _json_object(leaves.get(STATS_LEAF))
        state = _json_object(leaves.get(STATE_LEAF))
        announced = _json_object(snapshot.payloads.get(discovery_topic(discovery_prefix, device))).get("dev")
        announced = announced if isinstance(announced, dict) else {}
        version = announced.get("sw_version")
        model = announced.get("model_id")
        reports.append(
            DeviceReport(
                device=device,
                status=leaves[STATUS_LEAF].decode("utf-8", "replace"),
                version=str(version) if version is not None else None,
                model=str(model) if model is not None else None,
                fps=_number(stats.get(STATS_KEYS["fps"])),
                inference_ms=_number(stats.get(STATS_KEYS["inference_ms"])),
                cpu_temp_c=_number(stats.get(STATS_KEYS["cpu_temp_c"])),
                last_face_age_s=_age_seconds(state.get("last_seen"), snapshot.received_at),
                dropped_events=_dropped(stats),
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


def look(broker: BrokerSettings, pattern: TopicPattern, discovery_prefix: str, timeout: float) -> Snapshot:
    """Subscribe, take the retained messages, and wait (up to ``timeout`` s) until every online
    device has sent its stats. Raises FleetError when the broker cannot be used."""
    import ssl

    from edge.mqtt_client import ClientSettings, new_client, on_connack

    tls = None
    if broker.tls:
        try:
            tls = ssl.create_default_context(cafile=broker.cafile)
            if broker.certfile is not None:
                tls.load_cert_chain(broker.certfile, broker.keyfile)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise FleetError(f"TLS files unusable: {exc}") from None
    client = new_client(ClientSettings(client_id="", username=broker.username, password=broker.password, tls=tls))
    lock = threading.Condition()
    payloads: dict[str, bytes] = {}
    progress = _Progress()

    def on_connect(client: paho.Client, reason_code: ReasonCode) -> None:
        if reason_code.is_failure:
            with lock:
                progress.refused = str(reason_code)
                lock.notify_all()
            return
        client.subscribe(
            [(pattern.subscription(leaf), 0) for leaf in (STATUS_LEAF, STATE_LEAF, STATS_LEAF)]
            + [(discovery_topic(discovery_prefix, "+"), 0)]
        )

    def on_subscribe(
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        with lock:
            progress.subscribed = time.monotonic()
            lock.notify_all()

    def on_message(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        with lock:
            payloads[message.topic] = bytes(message.payload)
            lock.notify_all()

    def stats_missing() -> bool:
        for topic, payload in payloads.items():
            matched = pattern.match(topic)
            if (
                matched
                and matched[1] == STATUS_LEAF
                and payload == STATUS_ONLINE.encode()
                and pattern.subscription(STATS_LEAF).replace("+", matched[0], 1) not in payloads
            ):
                return True
        return False

    on_connack(client, on_connect)
    client.on_subscribe, client.on_message = on_subscribe, on_message
    try:
        client.connect(broker.host, broker.port, keepalive=max(5, int(timeout) + 5))
    except ssl.SSLCertVerificationError as exc:
        raise FleetError(
            f"broker {broker.host}:{broker.port}: TLS certificate verify failed ({exc.verify_message})"
        ) from None
    except (OSError, ValueError) as exc:
        raise FleetError(f"broker {broker.host}:{broker.port} unreachable ({exc})") from None
    client.loop_start()
    deadline = time.monotonic() + timeout
    try:
        with lock:
            while True:
                now = time.monotonic()
                if progress.refused is not None or now >= deadline:
                    break
                subscribed = progress.subscribed
                if (
                    subscribed is not None
                    and now >= subscribed + min(RETAINED_SETTLE_S, timeout)
                    and not stats_missing()
                ):
                    break
                lock.wait(min(0.1, deadline - now))
            refused, subscribed = progress.refused, progress.subscribed
            seen = dict(payloads)
    finally:
        client.disconnect()
        client.loop_stop()
    if refused is not None:
        raise FleetError(f"broker {broker.host}:{broker.port} refused the connection ({refused})")
    if subscribed is None:
        raise FleetError(f"broker {broker.host}:{broker.port} did not answer within {timeout:g} s")
    return Snapshot(seen, time.time())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # No abbreviations: "--password SECRET" must be refused, not taken for --password-file.
    parser.allow_abbrev = False
    parser.add_argument("--broker", required=True, help="broker host name or address")
    parser.add_argument("--port", type=int, default=None, help="default 1883, or 8883 with --tls")
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
    parser.add_argument("--json", action="store_true", help="one JSON object per device and line")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help="seconds to wait for the online devices' stats (default: %(default)s)",
    )


def _password(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    if args.password_file is not None:
        from edge.config import read_secret

        return read_secret(args.password_file)
    return environ.get(PASSWORD_ENV)


def fleet_main(
    args: argparse.Namespace,
    environ: Mapping[str, str] = os.environ,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """``edge-face fleet``: prints the table (or JSON lines); returns the exit status."""
    try:
        pattern = TopicPattern.from_prefix(args.topic_prefix)
        validate_topic_prefix(args.discovery_prefix, "--discovery-prefix")
        if not (args.timeout > 0 and math.isfinite(args.timeout)):
            raise ValueError(f"--timeout {args.timeout:g}: must be a positive number of seconds")
        if (args.cert is None) != (args.key is None):
            raise ValueError("--cert and --key go together")
        password = _password(args, environ)
    except OSError as exc:
        print(f"edge-face fleet: --password-file {args.password_file}: {exc.strerror or exc}", file=err)
        return ExitCode.CONFIG
    except ValueError as exc:  # ConfigError is a ValueError too
        print(f"edge-face fleet: {exc}", file=err)
        return ExitCode.CONFIG
    broker = BrokerSettings(
        host=args.broker,
        port=args.port or (8883 if args.tls else 1883),
        username=args.username,
        password=password,
        tls=args.tls,
        cafile=args.cafile,
        certfile=args.cert,
        keyfile=args.key,
    )
    try:
        snapshot = look(broker, pattern, args.discovery_prefix, args.timeout)
    except FleetError as exc:
        print(f"edge-face fleet: {exc}", file=err)
        return ExitCode.FAILURE
    reports = build_reports(snapshot, pattern, args.discovery_prefix)
    if args.device is not None:
        reports = [r for r in reports if r.device == args.device]
    if args.json:
        for report in reports:
            print(json.dumps({**asdict(report), "online": report.online}), file=out)
    elif reports:
        print(format_table(reports), file=out)
    code = fleet_exit_code(reports, args.device)
    if code == ExitCode.FAILURE:
        print(
            f"edge-face fleet: no device status under '{pattern.subscription(STATUS_LEAF)}' on "
            f"{broker.host}:{broker.port}",
            file=err,
        )
    elif args.device is not None and not reports:
        print(f"edge-face fleet: device '{args.device}' has no status on {broker.host}:{broker.port}", file=err)
    elif code == ExitCode.OFFLINE:
        down = ", ".join(f"{r.device} ({r.status})" for r in reports if not r.online)
        print(f"edge-face fleet: not online: {down}", file=err)
    return code
