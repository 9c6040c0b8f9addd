"""The daemon's TOML configuration -> typed, validated dataclasses (stdlib only): the loader.

Each section is declared beside the code it configures, with the rule framework of
:mod:`edge.common.config_rules` (one :class:`~edge.common.config_rules.Rule` per key, the
dataclass default is its default, the rules across its keys next to them):

- ``[device]``: here (every stage shares it, and it is parsed first);
- ``[camera]``: :mod:`edge.sources.settings`;
- ``[detector]``: :mod:`edge.detect.settings`;
- ``[events]``, ``[motion]``, ``[scene]``: :mod:`edge.scene.settings`;
- ``[mqtt]``, ``[homeassistant]``: :mod:`edge.mqtt.settings`;
- ``[snapshot]``, ``[stats]``, ``[log]``: :mod:`edge.daemon.settings`;
- ``[recognition]``: :mod:`edge.recognize.settings`.

This module reads the file, hands each section its table (:class:`Config` lists them, one line
each) and describes the result. :func:`load_config` runs every check the daemon needs before
it starts (topic rules, the password file's readability and encoding, the TLS
certificate/key pair, files the service user must read), so ``edge-face check-config`` and
``edge-face run`` accept and reject exactly the same files: both call it.

Every problem is a :class:`ConfigError` whose text is one line naming the key, the bad value
(credentials in URLs redacted, passwords never shown) and what is allowed, e.g. ``config key
'mqtt.port': 70000 is not allowed (an integer 1-65535)``; unknown keys and sections are errors
too (a typo must not silently fall back to a default). A config file that cannot be read or
parsed is one line naming the file.

Relative paths are resolved against the folder of the config file, so a config and the
model or image folder beside it can be moved together. Secrets are never values in the
file: the MQTT password comes from ``mqtt.password_file`` or, under systemd's
``LoadCredential=mqtt_password:...``, from ``$CREDENTIALS_DIRECTORY/mqtt_password``.

The names each section's module declares are importable from here too, as before the sections
moved (``from edge.config import MqttConfig``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge._moved import moved_attribute
from edge.common.config_rules import (
    DEVICE_ID_PLACEHOLDER,
    MAX_CONFIG_BYTES,
    REQUIRED,
    TOPIC_ALLOWED,
    UNKNOWN_KEY,
    Boolean,
    Choice,
    ConfigContext,
    ConfigError,
    ConfigFileError,
    FilePath,
    FolderPath,
    Integer,
    Invalid,
    KeySection,
    Number,
    OptionSection,
    Rule,
    Text,
    Topic,
    did_you_mean,
    is_host,
    is_valid_topic_prefix,
    key,
    key_default,
    key_rule,
    one_line,
    path_problem,
    quote_path,
    section,
    validate_readable_file,
    validate_topic_prefix,
)
from edge.common.files import NotARegularFile, os_reason, read_bounded
from edge.common.redact import redact_url
from edge.daemon.settings import (
    LOG_LEVELS,
    LOG_SECTION,
    SNAPSHOT_SECTION,
    STATS_SECTION,
    LogConfig,
    SnapshotConfig,
    StatsConfig,
)
from edge.detect.settings import DETECTOR_SECTION, DetectorConfig
from edge.models import PACKAGED_MODEL_PATH as DEFAULT_MODEL_PATH  # the model inside the package
from edge.mqtt.settings import (
    CREDENTIAL_NAME,
    DEFAULT_QUEUE_BYTES,
    DEFAULT_QUEUE_SIZE,
    HOMEASSISTANT_SECTION,
    MAX_FLUSH_TIMEOUT_SECONDS,
    MAX_SECRET_BYTES,
    MQTT_PROTOCOLS,
    MQTT_SECTION,
    MQTT_TRANSPORTS,
    SHUTDOWN_RESERVE_SECONDS,
    STOP_BUDGET_SECONDS,
    HomeAssistantConfig,
    MqttConfig,
    MqttTransport,
    build_tls_context,
    read_secret,
    validate_password_file,
)
from edge.recognize.settings import RECOGNITION_SECTION, RecognitionOptions
from edge.scene.settings import EVENTS_SECTION, MOTION_SECTION, SCENE_SECTION, EventsConfig, MotionOptions, SceneOptions
from edge.sources.settings import CAMERA_SECTION, CAMERA_SOURCES, DEFAULT_MAX_PIXELS, PICAMERA2_STREAMS, CameraConfig

__all__ = [
    "CAMERA_SOURCES",
    "CREDENTIAL_NAME",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MODEL_PATH",
    "DEFAULT_QUEUE_BYTES",
    "DEFAULT_QUEUE_SIZE",
    "DEFAULT_STATE_DIR",
    "DEVICE_ID_PATTERN",
    "DEVICE_ID_PLACEHOLDER",
    "LOG_LEVELS",
    "MAX_CONFIG_BYTES",
    "MAX_FLUSH_TIMEOUT_SECONDS",
    "MAX_SECRET_BYTES",
    "MQTT_PROTOCOLS",
    "MQTT_TRANSPORTS",
    "OPTION_SECTIONS",
    "PICAMERA2_STREAMS",
    "REQUIRED",
    "SECTIONS",
    "SHUTDOWN_RESERVE_SECONDS",
    "STOP_BUDGET_SECONDS",
    "TOPIC_ALLOWED",
    "UNKNOWN_KEY",
    "Boolean",
    "CameraConfig",
    "Choice",
    "Config",
    "ConfigContext",
    "ConfigError",
    "ConfigFileError",
    "DetectorConfig",
    "DeviceConfig",
    "EventsConfig",
    "FilePath",
    "FolderPath",
    "HomeAssistantConfig",
    "Integer",
    "Invalid",
    "LogConfig",
    "MqttConfig",
    "MqttTransport",
    "Number",
    "Rule",
    "SnapshotConfig",
    "StatsConfig",
    "Text",
    "Topic",
    "build_tls_context",
    "describe",
    "is_host",
    "is_valid_topic_prefix",
    "key",
    "key_default",
    "key_rule",
    "load_config",
    "one_line",
    "parse_config",
    "path_problem",
    "quote_path",
    "read_secret",
    "sanitize_device_id",
    "schema",
    "validate_device_id",
    "validate_password_file",
    "validate_readable_file",
    "validate_topic_prefix",
]

# Where state that must survive restarts lives (the controls set from Home Assistant, the
# identity last announced): systemd's StateDirectory=edge-face, passed as $STATE_DIRECTORY,
# else this.
DEFAULT_STATE_DIR = Path("/var/lib/edge-face")
DEVICE_ID_PATTERN = re.compile(r"[a-z0-9_-]{1,64}")


# --- [device]: which device this is, where its state lives ----------------------------------------


def sanitize_device_id(name: str) -> str:
    """Turn a hostname into a valid device id: lower-case, other characters -> '-', <= 64."""
    cleaned = re.sub(r"[^a-z0-9_-]+", "-", name.split(".")[0].lower()).strip("-")[:64]
    return cleaned or "edge-face"


def validate_device_id(device_id: Any, key: str = "device.id") -> str:
    """``device_id`` if it is safe as one topic level ([a-z0-9_-], 1-64), else ConfigError."""
    if not isinstance(device_id, str) or not DEVICE_ID_PATTERN.fullmatch(device_id):
        raise ConfigError(key, device_id, "1-64 characters of a-z, 0-9, '_' and '-'")
    return device_id


def _default_device_id(values: dict[str, Any], context: ConfigContext) -> str:
    return sanitize_device_id(context.hostname if context.hostname is not None else socket.gethostname())


def _default_state_dir(values: dict[str, Any], context: ConfigContext) -> Path:
    # systemd passes StateDirectory= as a colon-separated list; ours is the first.
    return Path(context.environ.get("STATE_DIRECTORY", "").split(":")[0] or DEFAULT_STATE_DIR)


_DEVICE_ID_RULE = Text("1-64 characters of a-z, 0-9, '_' and '-'", pattern=DEVICE_ID_PATTERN)


@dataclass(frozen=True)
class DeviceConfig:
    id: str = key(_DEVICE_ID_RULE, derive=_default_device_id)
    state_dir: Path = key(FolderPath(), None, derive=_default_state_dir)


DEVICE_SECTION = KeySection(DeviceConfig)


# --- the whole configuration: one line per section ------------------------------------------------


@dataclass(frozen=True)
class Config:
    """Every section, in the order they are parsed: [device] first (topic prefixes need the
    device id), then the stages'. A new section is one line here, naming the declaration that
    lives beside the code it configures."""

    device: DeviceConfig = section(DEVICE_SECTION, required=True)
    camera: CameraConfig = section(CAMERA_SECTION)
    detector: DetectorConfig = section(DETECTOR_SECTION)
    events: EventsConfig = section(EVENTS_SECTION)
    snapshot: SnapshotConfig = section(SNAPSHOT_SECTION)
    mqtt: MqttConfig = section(MQTT_SECTION)
    homeassistant: HomeAssistantConfig = section(HOMEASSISTANT_SECTION)
    stats: StatsConfig = section(STATS_SECTION)
    log: LogConfig = section(LOG_SECTION)
    motion: MotionOptions = section(MOTION_SECTION)
    scene: SceneOptions = section(SCENE_SECTION)
    recognition: RecognitionOptions = section(RECOGNITION_SECTION)
    source_file: Path | None = None


def _declarations() -> dict[str, Any]:
    return {item.name: item.metadata["section"] for item in dataclasses.fields(Config) if "section" in item.metadata}


_DECLARATIONS = _declarations()
# The sections declared key by key (name -> the dataclass of its keys), and those whose options
# dataclasses check themselves.
SECTIONS: dict[str, type] = {
    name: declared.keys for name, declared in _DECLARATIONS.items() if isinstance(declared, KeySection)
}
OPTION_SECTIONS = tuple(name for name, declared in _DECLARATIONS.items() if isinstance(declared, OptionSection))


def schema() -> list[tuple[str, str, Rule, Any]]:
    """Every key as (section, key, rule, default); a derived default is listed as None."""
    rows = []
    for name, section_class in SECTIONS.items():
        for item in dataclasses.fields(section_class):
            default = None if item.default is dataclasses.MISSING else item.default
            rows.append((name, item.name, item.metadata["rule"], default))
    return rows


# --- loading ---------------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the TOML file at ``path``; raises :class:`ConfigError` (one line).

    ``environ`` (default ``os.environ``) supplies ``$CREDENTIALS_DIRECTORY``.
    """
    path = Path(path)
    try:
        raw = read_bounded(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        raise ConfigFileError(path, "no such file") from None
    except NotARegularFile as exc:
        raise ConfigFileError(path, f"{exc.strerror}, not a TOML file") from None
    except (OSError, ValueError) as exc:
        raise ConfigFileError(path, f"cannot be read ({os_reason(exc)})") from None
    raw = raw.removeprefix(b"\xef\xbb\xbf")  # tolerate the BOM some Windows editors write
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigFileError(path, f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(path, f"not valid TOML ({exc})") from None
    except RecursionError:
        raise ConfigFileError(path, "not valid TOML (nested too deeply)") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise ConfigFileError(path, f"not valid TOML ({exc})") from None
    return parse_config(data, base_dir=path.resolve().parent, source_file=path, environ=environ)


def parse_config(
    data: dict[str, Any],
    base_dir: Path,
    source_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    hostname: str | None = None,
) -> Config:
    """Validate already-parsed TOML ``data``; relative paths are resolved against ``base_dir``."""
    context = ConfigContext(base_dir=base_dir, environ=os.environ if environ is None else environ, hostname=hostname)
    for name, value in data.items():
        if name not in _DECLARATIONS:
            raise ConfigError(name, UNKNOWN_KEY, "unknown section" + did_you_mean(name, _DECLARATIONS))
        if not isinstance(value, dict):
            raise ConfigError(name, value, "a table: write it as [" + name + "]")
    sections = {}
    for name, declared in _DECLARATIONS.items():
        sections[name] = declared.parse(name, data.get(name, {}), context)
        if name == "device":
            context = dataclasses.replace(context, device_id=sections[name].id)
    return Config(**sections, source_file=source_file)


# --- check-config's summary -------------------------------------------------------------------------


def describe(config: Config) -> str:
    """One-line summary of what the daemon would do with ``config``; credentials redacted."""
    camera = config.camera
    source = camera.source
    if source == "replay":
        assert camera.path is not None  # load_config refuses a replay without camera.path
        source = f"replay '{quote_path(camera.path)}'" + (" (loop)" if camera.loop else "")
    elif source == "opencv":
        source = f"opencv {camera.device!r}"
    if config.mqtt.host is None:
        sink = "stdout (JSON lines; no [mqtt] host)"
    else:
        scheme = "mqtts" if config.mqtt.tls else "mqtt"
        sink = f"{scheme}://{config.mqtt.host}:{config.mqtt.port} prefix '{config.mqtt.topic_prefix}'"
    summary = (
        f"device '{config.device.id}', source {source}, model '{quote_path(config.detector.model)}', "
        f"events to {sink}, snapshot {'on' if config.snapshot.enabled else 'off'}"
    )
    motion = config.motion
    summary += f", motion gate {f'on (idle {motion.idle_interval:g} s)' if motion.enabled else 'off'}"
    scene = config.scene
    if scene.active:
        zones = ", ".join(scene.zone_names) or "none"
        summary += f", scene: {len(scene.masks)} mask(s), zones {zones}"
    if config.recognition.enabled:
        gallery = config.recognition.gallery_path(config.device.state_dir)
        summary += f", recognition on (gallery '{quote_path(gallery)}')"
    return one_line(redact_url(summary))


def __getattr__(name: str) -> object:
    return moved_attribute(__name__, name)  # check_config_main went to edge.ops.check_config, with a warning
