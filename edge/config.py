"""The daemon's TOML configuration -> typed, validated dataclasses (stdlib only).

Every problem is a :class:`ConfigError` whose text is one line naming the key, the bad value
and what is allowed, e.g. ``config key 'mqtt.port': 70000 is not allowed (an integer
1-65535)``; unknown keys are errors too (a typo must not silently fall back to a default).

Relative paths are resolved against the folder of the config file, so a config and the
model or image folder beside it can be moved together. Secrets are never values in the
file: the MQTT password comes from ``mqtt.password_file`` or, under systemd's
``LoadCredential=mqtt_password:...``, from ``$CREDENTIALS_DIRECTORY/mqtt_password``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import socket
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edge.exitcodes import ExitCode
from edge.models import PACKAGED_MODEL_PATH as DEFAULT_MODEL_PATH  # the model inside the package

DEVICE_ID_PATTERN = re.compile(r"^[a-z0-9_-]{1,64}$")
CAMERA_SOURCES = ("auto", "picamera2", "opencv", "replay")
PICAMERA2_STREAMS = ("main", "lores")
MQTT_TRANSPORTS = ("tcp", "websockets")
MQTT_PROTOCOLS = ("5", "3.1.1")
LOG_LEVELS = ("debug", "info", "warning", "error")
CREDENTIAL_NAME = "mqtt_password"
_MISSING = object()  # an unknown key: there is a key but no allowed value for it
REQUIRED = object()  # a key that must be set in this configuration but is not


class ConfigError(ValueError):
    """A config value that is not allowed. ``str(error)`` is one line for the user."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(key, value, allowed)
        self.key, self.value, self.allowed = key, value, allowed

    def __str__(self) -> str:
        if self.value is _MISSING:
            return f"config key {self.key!r} is not allowed ({self.allowed})"
        if self.value is REQUIRED:
            return f"config key {self.key!r} is missing ({self.allowed})"
        return f"config key {self.key!r}: {_show(self.value)} is not allowed ({self.allowed})"


class ConfigFileError(ConfigError):
    """The config file itself cannot be read or is not TOML."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__("", str(path), reason)
        self.path, self.reason = path, reason

    def __str__(self) -> str:
        return f"config file '{self.path}': {self.reason}"


def _show(value: Any) -> str:
    """A value as the user wrote it in TOML (strings quoted, booleans lower-case)."""
    if isinstance(value, (str, bool, int, float)) or value is None:
        return json.dumps(value)
    return repr(value)


# --- sections -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceConfig:
    id: str


@dataclass(frozen=True)
class CameraConfig:
    """Where frames come from. ``width``/``height`` None: the model's input size."""

    source: str = "auto"
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    camera_index: int = 0
    picamera2_stream: str = "main"
    device: str = "/dev/video0"
    path: Path | None = None
    loop: bool = False
    reopen_min_delay: float = 1.0
    reopen_max_delay: float = 30.0


@dataclass(frozen=True)
class DetectorConfig:
    model: Path = DEFAULT_MODEL_PATH
    score_threshold: float = 0.7
    iou_threshold: float = 0.3
    num_threads: int | None = None


@dataclass(frozen=True)
class EventsConfig:
    debounce_frames: int = 3
    clear_after_seconds: float = 5.0


@dataclass(frozen=True)
class SnapshotConfig:
    enabled: bool = False
    max_bytes: int = 100_000
    quality: int = 80


@dataclass(frozen=True)
class MqttConfig:
    """Broker connection. ``host`` None: MQTT is off and events go to stdout as JSON lines.

    ``topic_prefix`` is stored with ``{device_id}`` already substituted by :func:`load_config`.
    ``password_file`` is where the secret lives (see :func:`read_secret`), never the secret.
    """

    host: str | None = None
    port: int = 1883
    transport: str = "tcp"
    protocol: str = "5"
    client_id: str | None = None
    username: str | None = None
    password_file: Path | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_insecure: bool = False
    topic_prefix: str = "edge-face/{device_id}"
    keepalive: int = 30
    queue_size: int = 1000
    flush_timeout: float = 5.0
    reconnect_min_delay: float = 1
    reconnect_max_delay: float = 60


@dataclass(frozen=True)
class HomeAssistantConfig:
    enabled: bool = True
    discovery_prefix: str = "homeassistant"
    device_name: str | None = None


@dataclass(frozen=True)
class StatsConfig:
    interval_seconds: float = 60.0


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"


@dataclass(frozen=True)
class Config:
    device: DeviceConfig
    camera: CameraConfig = field(default_factory=CameraConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    snapshot: SnapshotConfig = field(default_factory=SnapshotConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    homeassistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    source_file: Path | None = None


SECTIONS: dict[str, type] = {
    "device": DeviceConfig,
    "camera": CameraConfig,
    "detector": DetectorConfig,
    "events": EventsConfig,
    "snapshot": SnapshotConfig,
    "mqtt": MqttConfig,
    "homeassistant": HomeAssistantConfig,
    "stats": StatsConfig,
    "log": LogConfig,
}


# --- loading --------------------------------------------------------------------------------


def load_config(path: str | os.PathLike, environ: dict[str, str] | None = None) -> Config:
    """Read and validate the TOML file at ``path``; raises :class:`ConfigError`.

    ``environ`` (default ``os.environ``) supplies ``$CREDENTIALS_DIRECTORY``.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigFileError(path, "no such file") from None
    except IsADirectoryError:
        raise ConfigFileError(path, "is a directory, not a TOML file") from None
    except OSError as exc:
        raise ConfigFileError(path, f"cannot be read ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigFileError(path, f"not valid TOML ({exc})") from None
    return parse_config(data, base_dir=path.resolve().parent, source_file=path, environ=environ)


def parse_config(
    data: dict,
    base_dir: Path,
    source_file: Path | None = None,
    environ: dict[str, str] | None = None,
    hostname: str | None = None,
) -> Config:
    """Validate already-parsed TOML ``data``; relative paths are resolved against ``base_dir``."""
    environ = os.environ if environ is None else environ
    for name, value in data.items():
        if name not in SECTIONS:
            raise ConfigError(name, _MISSING, "unknown section" + _did_you_mean(name, SECTIONS))
        if not isinstance(value, dict):
            raise ConfigError(name, value, "a table: write it as [" + name + "]")
    reader = _Reader(data, base_dir)
    device = _parse_device(reader, hostname)
    return Config(
        device=device,
        camera=_parse_camera(reader),
        detector=_parse_detector(reader),
        events=_parse_events(reader),
        snapshot=_parse_snapshot(reader),
        mqtt=_parse_mqtt(reader, device.id, environ),
        homeassistant=_parse_homeassistant(reader),
        stats=_parse_stats(reader),
        log=_parse_log(reader),
        source_file=source_file,
    )


def sanitize_device_id(name: str) -> str:
    """Turn a hostname into a valid device id: lower-case, other characters -> '-', <= 64."""
    cleaned = re.sub(r"[^a-z0-9_-]+", "-", name.split(".")[0].lower()).strip("-")[:64]
    return cleaned or "edge-face"


def read_secret(password_file: Path) -> str:
    """The secret stored in ``password_file``, minus one trailing newline (as editors add)."""
    text = Path(password_file).read_text(encoding="utf-8")
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


class _Reader:
    """Typed access to the raw TOML tables: each accessor validates one key or returns its default."""

    def __init__(self, data: dict, base_dir: Path) -> None:
        self.data, self.base_dir = data, base_dir

    def raw(self, section: str, key: str) -> Any:
        table = self.data.get(section, {})
        return table.get(key, _MISSING)

    def check_known(self, section: str) -> None:
        known = [f.name for f in dataclasses.fields(SECTIONS[section])]
        for key in self.data.get(section, {}):
            if key not in known:
                raise ConfigError(
                    f"{section}.{key}", _MISSING, f"unknown key in [{section}]" + _did_you_mean(key, known)
                )

    def _get(self, section: str, key: str, default: Any, check: Callable[[Any], bool], allowed: str) -> Any:
        value = self.raw(section, key)
        if value is _MISSING:
            return default
        if not check(value):
            raise ConfigError(f"{section}.{key}", value, allowed)
        return value

    def boolean(self, section: str, key: str, default: bool) -> bool:
        return self._get(section, key, default, lambda v: isinstance(v, bool), "true or false")

    def integer(self, section: str, key: str, default: Any, minimum: int, maximum: int) -> Any:
        return self._get(
            section, key, default,
            lambda v: _is_int(v) and minimum <= v <= maximum,
            f"an integer {minimum}-{maximum}",
        )

    def number(
        self, section: str, key: str, default: Any, minimum: float, maximum: float = float("inf"),
        exclusive_minimum: bool = False, exclusive_maximum: bool = False,
    ) -> Any:
        def in_range(v: Any) -> bool:
            if not (_is_number(v) and v == v):  # v == v rejects nan
                return False
            low_ok = v > minimum if exclusive_minimum else v >= minimum
            high_ok = v < maximum if exclusive_maximum else v <= maximum
            return low_ok and high_ok

        low = f"> {minimum:g}" if exclusive_minimum else f">= {minimum:g}"
        if maximum == float("inf"):
            high = ""
        else:
            high = f" and < {maximum:g}" if exclusive_maximum else f" and <= {maximum:g}"
        value = self._get(section, key, default, in_range, f"a number {low}{high}")
        return None if value is None else float(value)

    def string(self, section: str, key: str, default: Any, pattern: re.Pattern | None = None, allowed: str = "") -> Any:
        def ok(v: Any) -> bool:
            return isinstance(v, str) and v != "" and (pattern is None or bool(pattern.fullmatch(v)))

        return self._get(section, key, default, ok, allowed or "a non-empty string")

    def choice(self, section: str, key: str, default: str, choices: tuple[str, ...]) -> str:
        allowed = "one of " + ", ".join(json.dumps(c) for c in choices)
        return self._get(section, key, default, lambda v: v in choices, allowed)

    def path(self, section: str, key: str, default: Path | None, must_exist: str | None = None) -> Path | None:
        """A path resolved against the config's folder; ``must_exist``: "file" or "any" (file or folder).

        The default is checked too: a default model that is not there is as fatal as a typo.
        """
        value = self.raw(section, key)
        if value is _MISSING:
            if default is None:
                return None
            value = str(default)
        elif not isinstance(value, str) or value == "":
            raise ConfigError(f"{section}.{key}", value, "a non-empty path string")
        resolved = self.base_dir / Path(value).expanduser()
        subject = "it" if str(resolved) == value else f"'{resolved}'"
        if must_exist == "file" and not resolved.is_file():
            problem = "is a folder" if resolved.is_dir() else "does not exist"
            raise ConfigError(f"{section}.{key}", value, f"an existing file; {subject} {problem}")
        if must_exist == "any" and not resolved.exists():
            raise ConfigError(f"{section}.{key}", value, f"an existing file or folder; {subject} does not exist")
        return resolved


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _did_you_mean(word: str, candidates: Any) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return "; known: " + ", ".join(sorted(candidates))


def _parse_device(reader: _Reader, hostname: str | None) -> DeviceConfig:
    reader.check_known("device")
    default = sanitize_device_id(hostname if hostname is not None else socket.gethostname())
    device_id = reader.string(
        "device", "id", default, DEVICE_ID_PATTERN, "1-64 characters of a-z, 0-9, '_' and '-'"
    )
    return DeviceConfig(id=device_id)


def _parse_camera(reader: _Reader) -> CameraConfig:
    reader.check_known("camera")
    source = reader.choice("camera", "source", "auto", CAMERA_SOURCES)
    path = reader.path("camera", "path", None, must_exist="any")
    if source == "replay" and path is None:
        raise ConfigError("camera.path", REQUIRED, 'camera.source = "replay" needs a folder of images or one image')
    min_delay = reader.number("camera", "reopen_min_delay", 1.0, minimum=0.0, exclusive_minimum=True)
    max_delay = reader.number("camera", "reopen_max_delay", 30.0, minimum=0.0, exclusive_minimum=True)
    if max_delay < min_delay:
        raise ConfigError("camera.reopen_max_delay", max_delay, f"a number >= camera.reopen_min_delay ({min_delay:g})")
    width = reader.integer("camera", "width", None, 16, 8192)
    height = reader.integer("camera", "height", None, 16, 8192)
    if (width is None) != (height is None):
        missing = "camera.height" if height is None else "camera.width"
        raise ConfigError(missing, REQUIRED, "set camera.width and camera.height together, or neither")
    return CameraConfig(
        source=source,
        width=width,
        height=height,
        fps=reader.number("camera", "fps", None, minimum=0.0, maximum=1000.0, exclusive_minimum=True),
        camera_index=reader.integer("camera", "camera_index", 0, 0, 15),
        picamera2_stream=reader.choice("camera", "picamera2_stream", "main", PICAMERA2_STREAMS),
        device=reader.string(
            "camera", "device", "/dev/video0",
            allowed="a V4L2 index (\"0\"), a device path (\"/dev/video0\"), an rtsp/http(s) URL or a video file",
        ),
        path=path,
        loop=reader.boolean("camera", "loop", False),
        reopen_min_delay=min_delay,
        reopen_max_delay=max_delay,
    )


def _parse_detector(reader: _Reader) -> DetectorConfig:
    reader.check_known("detector")
    return DetectorConfig(
        model=reader.path("detector", "model", DEFAULT_MODEL_PATH, must_exist="file"),
        score_threshold=reader.number(
            "detector", "score_threshold", 0.7, minimum=0.0, maximum=1.0, exclusive_minimum=True, exclusive_maximum=True
        ),
        iou_threshold=reader.number(
            "detector", "iou_threshold", 0.3, minimum=0.0, maximum=1.0, exclusive_minimum=True, exclusive_maximum=True
        ),
        num_threads=reader.integer("detector", "num_threads", None, 1, 64),
    )


def _parse_events(reader: _Reader) -> EventsConfig:
    reader.check_known("events")
    return EventsConfig(
        debounce_frames=reader.integer("events", "debounce_frames", 3, 1, 1000),
        clear_after_seconds=reader.number("events", "clear_after_seconds", 5.0, minimum=0.0, exclusive_minimum=True),
    )


def _parse_snapshot(reader: _Reader) -> SnapshotConfig:
    reader.check_known("snapshot")
    return SnapshotConfig(
        enabled=reader.boolean("snapshot", "enabled", False),
        max_bytes=reader.integer("snapshot", "max_bytes", 100_000, 2_000, 10_000_000),
        quality=reader.integer("snapshot", "quality", 80, 10, 95),
    )


_TOPIC_LEVELS = re.compile(r"[^/+#\x00\s]+(/[^/+#\x00\s]+)*")


def _parse_mqtt(reader: _Reader, device_id: str, environ: dict[str, str]) -> MqttConfig:
    reader.check_known("mqtt")
    s = "mqtt"
    tls = reader.boolean(s, "tls", False)
    protocol = reader.raw(s, "protocol")
    if protocol == 5:  # TOML users naturally write the integer 5
        protocol = "5"
    if protocol is not _MISSING and protocol not in MQTT_PROTOCOLS:
        raise ConfigError("mqtt.protocol", protocol, 'one of "5", "3.1.1"')
    prefix_template = reader.string(
        s, "topic_prefix", "edge-face/{device_id}", _TOPIC_LEVELS,
        "topic levels separated by '/', no '+', '#', spaces or empty levels; {device_id} is substituted",
    )
    if re.search(r"[{}]", prefix_template.replace("{device_id}", "")):
        raise ConfigError("mqtt.topic_prefix", prefix_template, "only the placeholder {device_id}")
    username = reader.string(s, "username", None)
    password_file = reader.path(s, "password_file", None, must_exist="file")
    if password_file is None and environ.get("CREDENTIALS_DIRECTORY"):
        credential = Path(environ["CREDENTIALS_DIRECTORY"]) / CREDENTIAL_NAME
        # The unit always loads the credential; an empty one means "the broker needs no password".
        if credential.is_file() and read_secret(credential):
            password_file = credential
    if password_file is not None and username is None:
        raise ConfigError(
            "mqtt.username", REQUIRED, "a password is configured: mqtt.password_file or the mqtt_password credential"
        )
    cert_file = reader.path(s, "cert_file", None, must_exist="file")
    key_file = reader.path(s, "key_file", None, must_exist="file")
    if (cert_file is None) != (key_file is None):
        missing = "mqtt.key_file" if key_file is None else "mqtt.cert_file"
        raise ConfigError(missing, REQUIRED, "a client certificate needs both mqtt.cert_file and mqtt.key_file")
    ca_file = reader.path(s, "ca_file", None, must_exist="file")
    tls_insecure = reader.boolean(s, "tls_insecure", False)
    if not tls:
        for key, value in (("ca_file", ca_file), ("cert_file", cert_file), ("tls_insecure", tls_insecure or None)):
            if value is not None:
                raise ConfigError(f"mqtt.{key}", reader.raw(s, key), "only with mqtt.tls = true")
    min_delay = reader.number(s, "reconnect_min_delay", 1.0, minimum=0.0, exclusive_minimum=True)
    max_delay = reader.number(s, "reconnect_max_delay", 60.0, minimum=0.0, exclusive_minimum=True)
    if max_delay < min_delay:
        raise ConfigError(
            "mqtt.reconnect_max_delay", max_delay, f"a number >= mqtt.reconnect_min_delay ({min_delay:g})"
        )
    return MqttConfig(
        host=reader.string(s, "host", None, re.compile(r"[^\s/]+"), "a host name or IP address (no scheme, no spaces)"),
        port=reader.integer(s, "port", 8883 if tls else 1883, 1, 65535),
        transport=reader.choice(s, "transport", "tcp", MQTT_TRANSPORTS),
        protocol="5" if protocol is _MISSING else protocol,
        client_id=reader.string(
            s, "client_id", None, re.compile(r"[\x21-\x7e]{1,128}"), "1-128 printable ASCII characters, no spaces"
        ),
        username=username,
        password_file=password_file,
        tls=tls,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
        tls_insecure=tls_insecure,
        topic_prefix=prefix_template.replace("{device_id}", device_id),
        keepalive=reader.integer(s, "keepalive", 30, 5, 65535),
        queue_size=reader.integer(s, "queue_size", 1000, 1, 1_000_000),
        flush_timeout=reader.number(s, "flush_timeout", 5.0, minimum=0.0, maximum=300.0),
        reconnect_min_delay=min_delay,
        reconnect_max_delay=max_delay,
    )


def _parse_homeassistant(reader: _Reader) -> HomeAssistantConfig:
    reader.check_known("homeassistant")
    return HomeAssistantConfig(
        enabled=reader.boolean("homeassistant", "enabled", True),
        discovery_prefix=reader.string(
            "homeassistant", "discovery_prefix", "homeassistant", _TOPIC_LEVELS,
            "topic levels separated by '/', no '+', '#', spaces or empty levels",
        ),
        device_name=reader.string("homeassistant", "device_name", None, allowed="a non-empty string"),
    )


def _parse_stats(reader: _Reader) -> StatsConfig:
    reader.check_known("stats")
    return StatsConfig(interval_seconds=reader.number("stats", "interval_seconds", 60.0, minimum=1.0, maximum=86400.0))


def _parse_log(reader: _Reader) -> LogConfig:
    reader.check_known("log")
    return LogConfig(level=reader.choice("log", "level", "info", LOG_LEVELS))


# --- check-config ---------------------------------------------------------------------------


def describe(config: Config) -> str:
    """One-line summary of what the daemon would do with ``config``."""
    camera = config.camera
    source = camera.source
    if source == "replay":
        source = f"replay '{camera.path}'" + (" (loop)" if camera.loop else "")
    elif source == "opencv":
        source = f"opencv {camera.device!r}"
    if config.mqtt.host is None:
        sink = "stdout (JSON lines; no [mqtt] host)"
    else:
        scheme = "mqtts" if config.mqtt.tls else "mqtt"
        sink = f"{scheme}://{config.mqtt.host}:{config.mqtt.port} prefix '{config.mqtt.topic_prefix}'"
    return (
        f"device '{config.device.id}', source {source}, model '{config.detector.model}', "
        f"events to {sink}, snapshot {'on' if config.snapshot.enabled else 'off'}"
    )


def check_config_main(path: str | os.PathLike) -> int:
    """``edge-face check-config FILE``: 0 and "ok: <summary>" on stdout, or 2 and one error line."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    print(f"ok: {describe(config)}")
    return ExitCode.OK
