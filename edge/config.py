"""The daemon's TOML configuration -> typed, validated dataclasses (stdlib only).

One source of truth: each key is declared once, as a field of its section's dataclass whose
metadata holds its :class:`Rule` (type, limits, what the error says is allowed); the
dataclass default is its default. :func:`load_config` runs every check the daemon needs
before it starts (topic rules, the password file's readability and encoding, the TLS
certificate/key pair, files the service user must read), so ``edge-face check-config``
and ``edge-face run`` accept and reject exactly the same files: both call it.

Every problem is a :class:`ConfigError` whose text is one line naming the key, the bad value
(credentials in URLs redacted, passwords never shown) and what is allowed, e.g. ``config key
'mqtt.port': 70000 is not allowed (an integer 1-65535)``; unknown keys are errors too (a typo
must not silently fall back to a default). A config file that cannot be read or parsed is
one line naming the file.

Relative paths are resolved against the folder of the config file, so a config and the
model or image folder beside it can be moved together. Secrets are never values in the
file: the MQTT password comes from ``mqtt.password_file`` or, under systemd's
``LoadCredential=mqtt_password:...``, from ``$CREDENTIALS_DIRECTORY/mqtt_password``.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import os
import re
import socket
import ssl
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from edge.common.files import NotARegularFile, open_regular_file, os_reason, read_bounded
from edge.common.redact import redact_url
from edge.exitcodes import ExitCode
from edge.models import DEFAULT_INPUT, INPUT_PROFILES, PACKAGED_MODELS, packaged_model_path
from edge.models import PACKAGED_MODEL_PATH as DEFAULT_MODEL_PATH  # the model inside the package

if TYPE_CHECKING:
    from edge.recognize.settings import RecognitionOptions
    from edge.scene.motion import MotionOptions
    from edge.scene.rules import SceneOptions

CAMERA_SOURCES = ("auto", "picamera2", "opencv", "replay")
PICAMERA2_STREAMS = ("main", "lores")
MqttTransport = Literal["tcp", "websockets"]
MQTT_TRANSPORTS: tuple[MqttTransport, ...] = get_args(MqttTransport)
MQTT_PROTOCOLS = ("5", "3.1.1")
LOG_LEVELS = ("debug", "info", "warning", "error")
CREDENTIAL_NAME = "mqtt_password"
# Where state that must survive restarts lives (the controls set from Home Assistant, the
# identity last announced): systemd's StateDirectory=edge-face, passed as $STATE_DIRECTORY,
# else this.
DEFAULT_STATE_DIR = Path("/var/lib/edge-face")

# The shutdown budget: systemd/edge-face.service's TimeoutStopSec. After SIGTERM the daemon
# must have flushed, published "stopped" and exited within it, or systemd SIGKILLs it
# mid-flush before the loss is logged. mqtt.flush_timeout gets the budget minus a reserve for
# the rest of the stop (camera release, the "stopped" status, disconnect, final log line).
STOP_BUDGET_SECONDS = 30.0
SHUTDOWN_RESERVE_SECONDS = 10.0
MAX_FLUSH_TIMEOUT_SECONDS = STOP_BUDGET_SECONDS - SHUTDOWN_RESERVE_SECONDS

# Decoded-pixel limit of a replayed image (camera.max_pixels): 4 MP decodes to 12 MB of RGB
# (about 30 MB at the decoder's peak), which keeps a replay well inside the unit's
# MemoryHigh=192M next to the ~100 MB daemon; the detector sees 320x240 anyway, so more
# pixels buy nothing. Bigger JPEGs are decoded at 1/2, 1/4 or 1/8 scale, others refused.
DEFAULT_MAX_PIXELS = 4_000_000
# Bytes of events the MQTT outbox may hold while the broker is away (mqtt.queue_bytes). An
# event is ~1.3 KB of JSON, so the 4 MiB default holds ~3000, more than queue_size's default
# 1000: the count binds first; the bytes bound caps events carrying many faces. The 64 MiB
# maximum still leaves room under MemoryMax=256M.
DEFAULT_QUEUE_BYTES = 4 * 1024 * 1024
# Events the outbox may hold (mqtt.queue_size).
DEFAULT_QUEUE_SIZE = 1000

MAX_CONFIG_BYTES = 1024 * 1024  # a real config is a few KB; anything bigger is a mistake
MAX_SECRET_BYTES = 65535  # the largest password MQTT can carry

DEVICE_ID_PATTERN = re.compile(r"[a-z0-9_-]{1,64}")
_TOPIC_LEVEL = re.compile(r"[^/+#\s\x00-\x1f\x7f]+")
_HOST_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_MISSING = object()  # an unknown key: there is a key but no allowed value for it
REQUIRED = object()  # a key that must be set in this configuration but is not
_SHOWN_VALUE_CHARS = 80


class ConfigError(ValueError):
    """A config value that is not allowed. ``str(error)`` is one line for the user."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(key, value, allowed)
        self.key, self.value, self.allowed = key, value, allowed

    def __str__(self) -> str:
        if self.value is _MISSING:
            text = f"config key {self.key!r} is not allowed ({self.allowed})"
        elif self.value is REQUIRED:
            text = f"config key {self.key!r} is missing ({self.allowed})"
        else:
            text = f"config key {self.key!r}: {_show(self.value)} is not allowed ({self.allowed})"
        return one_line(text)


class ConfigFileError(ConfigError):
    """The config file itself cannot be read or is not TOML."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__("", str(path), reason)
        self.path, self.reason = path, reason

    def __str__(self) -> str:
        return one_line(f"config file '{quote_path(self.path)}': {self.reason}")


def one_line(text: str) -> str:
    """``text`` with any line break (incl. the Unicode ones) turned into a space."""
    return " ".join(text.splitlines())


def quote_path(path: str | os.PathLike[str]) -> str:
    """A path for a one-line message: control and other unprintable characters escaped."""
    text = os.fspath(path)
    text = text if isinstance(text, str) else os.fsdecode(text)
    return text if text.isprintable() else repr(text)[1:-1]


def _show(value: Any) -> str:
    """A value as the user wrote it in TOML (strings quoted, booleans lower-case), credentials
    in URLs redacted, long values cut."""
    if isinstance(value, str):
        text = json.dumps(redact_url(value))
    elif isinstance(value, (bool, float)) or value is None:
        text = json.dumps(value)
    elif isinstance(value, int):
        text = str(value) if value.bit_length() < 256 else ("-" if value < 0 else "") + "a huge integer"
    elif isinstance(value, Path):
        text = json.dumps(redact_url(str(value)))
    else:
        try:
            text = redact_url(repr(value))
        except (RecursionError, ValueError):
            text = "a deeply nested value"
        kind = "an array " if isinstance(value, list) else "a table " if isinstance(value, dict) else ""
        text = kind + text
    if len(text) > _SHOWN_VALUE_CHARS:
        text = text[: _SHOWN_VALUE_CHARS - 3] + "..."
    return text


# --- rules: one per key, in the field metadata -------------------------------------------------


class Invalid(Exception):
    """Raised by a rule: the value is not allowed; ``allowed`` says what is."""

    def __init__(self, allowed: str) -> None:
        super().__init__(allowed)
        self.allowed = allowed


@dataclass(frozen=True)
class _Context:
    """What rules need beyond the value: where relative paths start, the device id so far."""

    base_dir: Path
    environ: Mapping[str, str]
    hostname: str | None
    device_id: str = ""


class Rule:
    """How one key's TOML value is checked and converted. ``allowed`` is the error's text."""

    @property
    def allowed(self) -> str:
        return ""

    def parse(self, value: Any, context: _Context) -> Any:
        raise NotImplementedError

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is allowed as it is: the ranged rules, which CLI options mirror."""
        raise NotImplementedError


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Boolean(Rule):
    allowed = "true or false"

    def parse(self, value: Any, context: _Context) -> bool:
        if not isinstance(value, bool):
            raise Invalid(self.allowed)
        return value


@dataclass(frozen=True)
class Integer(Rule):
    minimum: int
    maximum: int

    @property
    def allowed(self) -> str:
        return f"an integer {self.minimum}-{self.maximum}"

    def contains(self, value: Any) -> bool:
        return _is_int(value) and self.minimum <= value <= self.maximum

    def parse(self, value: Any, context: _Context) -> int:
        if not self.contains(value):
            raise Invalid(self.allowed)
        integer: int = value
        return integer


@dataclass(frozen=True)
class Number(Rule):
    """A finite number in a range (ints are accepted and returned as float); ``why`` explains
    a limit that is not obvious."""

    minimum: float
    maximum: float
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    why: str = ""

    @property
    def allowed(self) -> str:
        low = f"> {self.minimum:g}" if self.exclusive_minimum else f">= {self.minimum:g}"
        high = f"< {self.maximum:g}" if self.exclusive_maximum else f"<= {self.maximum:g}"
        return f"a number {low} and {high}" + (f": {self.why}" if self.why else "")

    def contains(self, value: Any) -> bool:
        if not (_is_number(value) and value == value):  # value == value rejects nan
            return False
        low_ok: bool = value > self.minimum if self.exclusive_minimum else value >= self.minimum
        high_ok: bool = value < self.maximum if self.exclusive_maximum else value <= self.maximum
        return low_ok and high_ok

    def parse(self, value: Any, context: _Context) -> float:
        if not self.contains(value):
            raise Invalid(self.allowed)
        return float(value)


@dataclass(frozen=True)
class Choice(Rule):
    """One of ``choices``; ``aliases`` maps other spellings (e.g. the integer 5) to a choice."""

    choices: tuple[str, ...]
    aliases: tuple[tuple[Any, str], ...] = ()

    @property
    def allowed(self) -> str:
        return "one of " + ", ".join(json.dumps(c) for c in self.choices)

    def parse(self, value: Any, context: _Context) -> str:
        if isinstance(value, str) and value in self.choices:
            return value
        for alias, choice in self.aliases:
            if type(value) is type(alias) and value == alias:
                return choice
        raise Invalid(self.allowed)


@dataclass(frozen=True)
class Text(Rule):
    """A non-empty string of printable characters, optionally matching ``pattern`` or passing
    ``check``."""

    allowed: str = "a non-empty string"
    pattern: re.Pattern[str] | None = None
    check: Callable[[str], bool] | None = None
    max_length: int = 1024

    def parse(self, value: Any, context: _Context) -> str:
        if not (isinstance(value, str) and 0 < len(value) <= self.max_length and value.isprintable()):
            raise Invalid(self.allowed)
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise Invalid(self.allowed)
        if self.check is not None and not self.check(value):
            raise Invalid(self.allowed)
        return value


TOPIC_ALLOWED = (
    "topic levels separated by '/', no '+', '#', spaces, control characters or empty levels, not starting with '$'"
)


# In mqtt.topic_prefix (and `edge-face fleet --topic-prefix`): where the device id goes.
DEVICE_ID_PLACEHOLDER = "{device_id}"


@dataclass(frozen=True)
class Topic(Rule):
    """An MQTT topic prefix we may publish under; with ``placeholder``, ``{device_id}`` is
    replaced by the device id and the result is what is stored."""

    placeholder: bool = False

    @property
    def allowed(self) -> str:
        return TOPIC_ALLOWED + (f"; {DEVICE_ID_PLACEHOLDER} is substituted" if self.placeholder else "")

    def parse(self, value: Any, context: _Context) -> str:
        if not isinstance(value, str):
            raise Invalid(self.allowed)
        prefix = value
        if self.placeholder:
            if re.search(r"[{}]", value.replace(DEVICE_ID_PLACEHOLDER, "")):
                raise Invalid(f"only the placeholder {DEVICE_ID_PLACEHOLDER}")
            prefix = value.replace(DEVICE_ID_PLACEHOLDER, context.device_id)
        if not is_valid_topic_prefix(prefix):
            raise Invalid(self.allowed)
        return prefix


@dataclass(frozen=True)
class FilePath(Rule):
    """A path resolved against the config's folder that the daemon must be able to read:
    ``kind`` "file" (a readable regular file) or "file-or-folder" (that, or a listable
    folder). A missing default is checked too: a default model that is not there is as
    fatal as a typo."""

    kind: str = "file"

    @property
    def allowed(self) -> str:
        return "a non-empty path string"

    def parse(self, value: Any, context: _Context) -> Path:
        if not isinstance(value, str) or value == "" or "\x00" in value:
            raise Invalid(self.allowed)
        try:
            resolved = context.base_dir / Path(value).expanduser()
        except RuntimeError:  # "~nosuchuser/..."
            resolved = context.base_dir / value
        subject = "it" if str(resolved) == value else f"'{quote_path(resolved)}'"
        problem = path_problem(resolved, self.kind)
        if problem is not None:
            expected = "an existing file" if self.kind == "file" else "an existing file or folder"
            if not problem.startswith(("does not exist", "is a folder")):
                expected = "a readable file" if self.kind == "file" else "a readable file or folder"
            raise Invalid(f"{expected}; {subject} {problem}")
        return resolved


@dataclass(frozen=True)
class FolderPath(Rule):
    """A folder the daemon writes to, resolved against the config's folder; it need not exist
    yet (the daemon creates it, and reports a failure to when it writes)."""

    allowed = "a non-empty path string"

    def parse(self, value: Any, context: _Context) -> Path:
        if not isinstance(value, str) or value == "" or "\x00" in value:
            raise Invalid(self.allowed)
        try:
            return context.base_dir / Path(value).expanduser()
        except RuntimeError:  # "~nosuchuser/..."
            return context.base_dir / value


def path_problem(path: Path, kind: str = "file") -> str | None:
    """Why the daemon could not read ``path`` (None: it can): "does not exist", "is a
    folder", "cannot be read (permission denied)", ... ``kind`` "file-or-folder" accepts a
    folder the process can list and enter."""
    try:
        with open_regular_file(path):
            return None
    except FileNotFoundError:
        return "does not exist"
    except NotARegularFile as exc:
        if kind == "file-or-folder" and Path(path).is_dir():
            return _folder_problem(path)
        return str(exc.strerror)
    except (OSError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno == 20:  # ENOTDIR: a file used as a folder
            return "does not exist (a parent is a file)"
        return f"cannot be read ({os_reason(exc)})"


def _folder_problem(path: Path) -> str | None:
    try:
        os.listdir(path)
    except OSError as exc:
        return f"cannot be listed ({os_reason(exc)})"
    if not os.access(path, os.X_OK):
        return "cannot be entered (permission denied)"
    return None


def key(
    rule: Rule, default: Any = dataclasses.MISSING, *, derive: Callable[[dict[str, Any], _Context], Any] | None = None
) -> Any:
    """A config key: its rule, its default (the dataclass default), and ``derive`` for a
    default that depends on other keys or the host (computed when the key is absent)."""
    return field(default=default, metadata={"rule": rule, "derive": derive})


# --- validators shared with the runtime ---------------------------------------------------------


def is_valid_topic_prefix(prefix: str) -> bool:
    """A literal topic we may publish under: no wildcards (a subscriber's '+'/'#' would match
    other devices' topics), no empty levels ('a//b' and a leading or trailing '/' are
    different topics from what users mean), no whitespace or control characters, not
    starting with '$' (reserved for the broker, e.g. $SYS), at most 1024 bytes."""
    return (
        isinstance(prefix, str)
        and not prefix.startswith("$")
        and len(prefix.encode("utf-8", "surrogatepass")) <= 1024
        and all(_TOPIC_LEVEL.fullmatch(level) for level in prefix.split("/"))
    )


def validate_topic_prefix(prefix: Any, key: str) -> str:
    """``prefix`` if :func:`is_valid_topic_prefix`, else ConfigError naming ``key``."""
    if not is_valid_topic_prefix(prefix):
        raise ConfigError(key, prefix, TOPIC_ALLOWED)
    valid: str = prefix
    return valid


def validate_device_id(device_id: Any, key: str = "device.id") -> str:
    """``device_id`` if it is safe as one topic level ([a-z0-9_-], 1-64), else ConfigError."""
    if not isinstance(device_id, str) or not DEVICE_ID_PATTERN.fullmatch(device_id):
        raise ConfigError(key, device_id, "1-64 characters of a-z, 0-9, '_' and '-'")
    return device_id


def is_host(text: str) -> bool:
    """An IP address or a DNS name of ASCII labels (underscores allowed, as container names
    use them). Unicode names are refused: getaddrinfo's IDNA encoding would fail at connect
    time, in paho's thread."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        pass
    name = text[:-1] if text.endswith(".") else text
    return 0 < len(name) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in name.split("."))


def validate_readable_file(path: Path | None, key: str) -> Path | None:
    """``path`` (or None) if this process can open it as a regular file, else ConfigError."""
    if path is None:
        return None
    problem = path_problem(Path(path))
    if problem is not None:
        raise ConfigError(key, str(path), f"a readable file; it {problem}")
    return Path(path)


def read_secret(password_file: Path) -> str:
    """The secret stored in ``password_file``, minus one trailing newline (as editors add).

    Raises OSError (unreadable, not a regular file, over 65535 bytes) or UnicodeDecodeError."""
    text = read_bounded(password_file, MAX_SECRET_BYTES).decode("utf-8")
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


def validate_password_file(path: Path, key: str = "mqtt.password_file") -> str:
    """The password in ``path`` (see :func:`read_secret`), or ConfigError naming ``key`` and the
    file, never its content."""
    try:
        return read_secret(path)
    except UnicodeDecodeError:
        raise ConfigError(key, str(path), "a UTF-8 text file") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            key, str(path), f"a readable file of at most {MAX_SECRET_BYTES} bytes ({os_reason(exc)})"
        ) from None


def _refuse_passphrase() -> bytes:
    # Without a callback OpenSSL prompts on the terminal for an encrypted key's passphrase:
    # check-config would hang waiting for it. An empty one makes the load fail instead.
    return b""


def build_tls_context(mqtt: MqttConfig) -> ssl.SSLContext:
    """The client TLS context for ``mqtt``: the broker's chain verified against
    ``mqtt.ca_file`` (system CAs when unset), its name against ``mqtt.host``, the client
    certificate loaded when configured. Raises ConfigError naming the key at fault."""
    ca_file = validate_readable_file(mqtt.ca_file, "mqtt.ca_file")
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError("mqtt.ca_file", str(ca_file), f"a PEM file of CA certificates ({_ssl_reason(exc)})") from None
    cert_file = validate_readable_file(mqtt.cert_file, "mqtt.cert_file")
    key_file = validate_readable_file(mqtt.key_file, "mqtt.key_file")
    if (cert_file is None) != (key_file is None):
        missing = "mqtt.key_file" if key_file is None else "mqtt.cert_file"
        raise ConfigError(missing, REQUIRED, "a client certificate needs both mqtt.cert_file and mqtt.key_file")
    if cert_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file, password=_refuse_passphrase)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(
                "mqtt.cert_file",
                str(cert_file),
                f"a PEM certificate matching mqtt.key_file, key without passphrase ({_ssl_reason(exc)})",
            ) from None
    return context


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc.strerror or exc).replace("_", " ").lower()
    return os_reason(exc)


# --- sections ------------------------------------------------------------------------------------


def _default_device_id(values: dict[str, Any], context: _Context) -> str:
    return sanitize_device_id(context.hostname if context.hostname is not None else socket.gethostname())


def _default_port(values: dict[str, Any], context: _Context) -> int:
    return 8883 if values["tls"] else 1883


def _default_state_dir(values: dict[str, Any], context: _Context) -> Path:
    # systemd passes StateDirectory= as a colon-separated list; ours is the first.
    return Path(context.environ.get("STATE_DIRECTORY", "").split(":")[0] or DEFAULT_STATE_DIR)


_DEVICE_ID_RULE = Text("1-64 characters of a-z, 0-9, '_' and '-'", pattern=DEVICE_ID_PATTERN)


@dataclass(frozen=True)
class DeviceConfig:
    id: str = key(_DEVICE_ID_RULE, derive=_default_device_id)
    state_dir: Path = key(FolderPath(), None, derive=_default_state_dir)


@dataclass(frozen=True)
class CameraConfig:
    """Where frames come from. ``width``/``height`` None: the model's input size."""

    source: str = key(Choice(CAMERA_SOURCES), "auto")
    width: int | None = key(Integer(16, 8192), None)
    height: int | None = key(Integer(16, 8192), None)
    fps: float | None = key(Number(0.0, 1000.0, exclusive_minimum=True), None)
    camera_index: int = key(Integer(0, 15), 0)
    picamera2_stream: str = key(Choice(PICAMERA2_STREAMS), "main")
    device: str = key(
        Text('a V4L2 index ("0"), a device path ("/dev/video0"), an rtsp/http(s) URL or a video file', max_length=4096),
        "/dev/video0",
    )
    path: Path | None = key(FilePath("file-or-folder"), None)
    loop: bool = key(Boolean(), False)
    reopen_min_delay: float = key(Number(0.0, 3600.0, exclusive_minimum=True), 1.0)
    reopen_max_delay: float = key(Number(0.0, 3600.0, exclusive_minimum=True), 30.0)
    max_pixels: int = key(Integer(65_536, 50_000_000), DEFAULT_MAX_PIXELS)


@dataclass(frozen=True)
class DetectorConfig:
    """``input`` chooses the packaged model of that input size (see edge.models); ``model``
    overrides it, and then ``input``, when written, must be the model's own size."""

    input: str = key(Choice(INPUT_PROFILES), DEFAULT_INPUT)
    model: Path = key(FilePath("file"), DEFAULT_MODEL_PATH)
    score_threshold: float = key(Number(0.0, 1.0, exclusive_minimum=True, exclusive_maximum=True), 0.7)
    iou_threshold: float = key(Number(0.0, 1.0, exclusive_minimum=True, exclusive_maximum=True), 0.3)
    num_threads: int | None = key(Integer(1, 64), None)


@dataclass(frozen=True)
class EventsConfig:
    debounce_frames: int = key(Integer(1, 1000), 3)
    clear_after_seconds: float = key(Number(0.0, 86400.0, exclusive_minimum=True), 5.0)


@dataclass(frozen=True)
class SnapshotConfig:
    enabled: bool = key(Boolean(), False)
    max_bytes: int = key(Integer(2_000, 10_000_000), 100_000)
    quality: int = key(Integer(10, 95), 80)


@dataclass(frozen=True)
class MqttConfig:
    """Broker connection. ``host`` None: MQTT is off and events go to stdout as JSON lines.

    ``topic_prefix`` is stored with ``{device_id}`` already substituted by :func:`load_config`.
    ``password_file`` is where the secret lives (see :func:`read_secret`), never the secret.
    ``queue_size`` and ``queue_bytes`` bound the outbox in events and in bytes.
    """

    host: str | None = key(Text("a host name or IP address (no scheme, no port, no spaces)", check=is_host), None)
    port: int = key(Integer(1, 65535), 1883, derive=_default_port)
    transport: MqttTransport = key(Choice(MQTT_TRANSPORTS), "tcp")
    protocol: str = key(Choice(MQTT_PROTOCOLS, aliases=((5, "5"),)), "5")  # TOML users write 5
    client_id: str | None = key(
        Text("1-128 printable ASCII characters, no spaces", pattern=re.compile(r"[\x21-\x7e]{1,128}")), None
    )
    username: str | None = key(Text(max_length=65535), None)
    password_file: Path | None = key(FilePath("file"), None)
    tls: bool = key(Boolean(), False)
    ca_file: Path | None = key(FilePath("file"), None)
    cert_file: Path | None = key(FilePath("file"), None)
    key_file: Path | None = key(FilePath("file"), None)
    tls_insecure: bool = key(Boolean(), False)
    topic_prefix: str = key(Topic(placeholder=True), f"edge-face/{DEVICE_ID_PLACEHOLDER}")
    keepalive: int = key(Integer(5, 65535), 30)
    queue_size: int = key(Integer(1, 100_000), DEFAULT_QUEUE_SIZE)
    flush_timeout: float = key(
        Number(
            0.0,
            MAX_FLUSH_TIMEOUT_SECONDS,
            why=f"the unit's stop budget TimeoutStopSec={STOP_BUDGET_SECONDS:g}s "
            f"minus {SHUTDOWN_RESERVE_SECONDS:g} s for the rest of the shutdown",
        ),
        5.0,
    )
    reconnect_min_delay: float = key(Number(0.0, 3600.0, exclusive_minimum=True), 1.0)
    reconnect_max_delay: float = key(Number(0.0, 3600.0, exclusive_minimum=True), 60.0)
    queue_bytes: int = key(Integer(65_536, 64 * 1024 * 1024), DEFAULT_QUEUE_BYTES)


@dataclass(frozen=True)
class HomeAssistantConfig:
    enabled: bool = key(Boolean(), True)
    discovery_prefix: str = key(Topic(), "homeassistant")
    device_name: str | None = key(Text(max_length=256), None)
    # false: no command topics are subscribed, for fleets where Home Assistant must not steer
    # devices; the controls set earlier are kept in the state directory but not applied.
    controls: bool = key(Boolean(), True)


@dataclass(frozen=True)
class StatsConfig:
    interval_seconds: float = key(Number(1.0, 86400.0), 60.0)


@dataclass(frozen=True)
class LogConfig:
    level: str = key(Choice(LOG_LEVELS), "info")


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
    motion: MotionOptions = field(default_factory=lambda: _option_section("motion", {}))
    scene: SceneOptions = field(default_factory=lambda: _option_section("scene", {}))
    recognition: RecognitionOptions = field(default_factory=lambda: _option_section("recognition", {}))
    source_file: Path | None = None


# Parsed in this order: [device] first, topic prefixes need the device id.
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


# Sections whose options dataclasses check themselves (edge.scene.motion, edge.scene.rules: numpy code,
# imported when a config is parsed, so `import edge.config` stays light). Their OptionError
# carries the same key, value and allowed text as ConfigError.
OPTION_SECTIONS = ("motion", "scene", "recognition")


def _option_section(name: str, table: Any, base_dir: Path | None = None) -> Any:
    from edge.common.options import OptionError
    from edge.recognize.settings import recognition_options_from_toml
    from edge.scene.motion import motion_options_from_toml
    from edge.scene.rules import scene_options_from_toml

    try:
        if name == "recognition":  # its gallery path is relative to the config file's folder
            return recognition_options_from_toml(table, name, base_dir)
        reader = {"motion": motion_options_from_toml, "scene": scene_options_from_toml}[name]
        return reader(table, name)
    except OptionError as exc:
        raise ConfigError(exc.key, exc.value, exc.allowed) from None


def key_rule(section: type, name: str) -> Rule:
    """The rule of key ``name`` of ``section`` (e.g. a CLI option that mirrors the key)."""
    rule: Rule = _field(section, name).metadata["rule"]
    return rule


def key_default(section: type, name: str) -> Any:
    return _field(section, name).default


def _field(section: type, name: str) -> dataclasses.Field[Any]:
    return next(item for item in dataclasses.fields(section) if item.name == name)


def schema() -> list[tuple[str, str, Rule, Any]]:
    """Every key as (section, key, rule, default); a derived default is listed as None."""
    rows = []
    for section, section_class in SECTIONS.items():
        for item in dataclasses.fields(section_class):
            default = None if item.default is dataclasses.MISSING else item.default
            rows.append((section, item.name, item.metadata["rule"], default))
    return rows


# --- rules across keys -----------------------------------------------------------------------------


def _check_camera(camera: CameraConfig, table: dict[str, Any], context: _Context) -> CameraConfig:
    if camera.source == "replay" and camera.path is None:
        raise ConfigError("camera.path", REQUIRED, 'camera.source = "replay" needs a folder of images or one image')
    if camera.reopen_max_delay < camera.reopen_min_delay:
        raise ConfigError(
            "camera.reopen_max_delay",
            camera.reopen_max_delay,
            f"a number >= camera.reopen_min_delay ({camera.reopen_min_delay:g})",
        )
    if (camera.width is None) != (camera.height is None):
        missing = "camera.height" if camera.height is None else "camera.width"
        raise ConfigError(missing, REQUIRED, "set camera.width and camera.height together, or neither")
    return camera


def _sidecar_input(sidecar: Path) -> str | None:
    """The "WxH" input size a model's sidecar states; None where it cannot say (an unreadable
    or malformed sidecar is the model loader's error, with its own message)."""
    try:
        section = json.loads(read_bounded(sidecar, MAX_CONFIG_BYTES))["input"]
        return f"{int(section['width'])}x{int(section['height'])}"
    except (OSError, ValueError, KeyError, TypeError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None


def _check_detector(detector: DetectorConfig, table: dict[str, Any], context: _Context) -> DetectorConfig:
    if "model" not in table:
        if detector.input not in PACKAGED_MODELS:
            raise ConfigError(
                "detector.input",
                detector.input,
                f"{' or '.join(PACKAGED_MODELS)} with the packaged models; for {detector.input} build a model "
                "(python -m tools.quantize --model slim-640) and set detector.model to it",
            )
        packaged = str(packaged_model_path(PACKAGED_MODELS[detector.input]))
        try:
            model = key_rule(DetectorConfig, "model").parse(packaged, context)
        except Invalid as exc:
            raise ConfigError("detector.model", packaged, exc.allowed) from None
        detector = dataclasses.replace(detector, model=model)
    else:
        stated = _sidecar_input(detector.model.with_suffix(".json"))
        if "input" in table and stated is not None and stated != detector.input:
            raise ConfigError(
                "detector.input", detector.input, f"the input size of detector.model, whose sidecar says {stated}"
            )
        if stated in INPUT_PROFILES:
            detector = dataclasses.replace(detector, input=stated)
    return _sidecar_is_readable(detector, table, context)


def _sidecar_is_readable(detector: DetectorConfig, table: dict[str, Any], context: _Context) -> DetectorConfig:
    # A missing sidecar is the model loader's error (exit 4); one the service cannot read
    # is a deployment (permissions) problem that check-config --as-user must catch.
    sidecar = detector.model.with_suffix(".json")
    if sidecar.exists():
        problem = path_problem(sidecar)
        if problem is not None:
            raise ConfigError(
                "detector.model",
                table.get("model", str(detector.model)),
                f"a model whose sidecar is readable; '{quote_path(sidecar)}' {problem}",
            )
    return detector


def _check_mqtt(mqtt: MqttConfig, table: dict[str, Any], context: _Context) -> MqttConfig:
    password_file = mqtt.password_file
    if password_file is None and context.environ.get("CREDENTIALS_DIRECTORY"):
        credential = Path(context.environ["CREDENTIALS_DIRECTORY"]) / CREDENTIAL_NAME
        # The unit always loads the credential; an empty one means "the broker needs no password".
        if credential.exists() and validate_password_file(credential, "mqtt.password_file (credential)"):
            password_file = credential
    elif password_file is not None:
        validate_password_file(password_file)
    if password_file is not None and mqtt.username is None:
        raise ConfigError(
            "mqtt.username", REQUIRED, "a password is configured: mqtt.password_file or the mqtt_password credential"
        )
    if (mqtt.cert_file is None) != (mqtt.key_file is None):
        missing = "mqtt.key_file" if mqtt.key_file is None else "mqtt.cert_file"
        raise ConfigError(missing, REQUIRED, "a client certificate needs both mqtt.cert_file and mqtt.key_file")
    if not mqtt.tls:
        for name in ("ca_file", "cert_file", "key_file", "tls_insecure"):
            if name in table and table[name] is not False:
                raise ConfigError(f"mqtt.{name}", table[name], "only with mqtt.tls = true")
    if mqtt.reconnect_max_delay < mqtt.reconnect_min_delay:
        raise ConfigError(
            "mqtt.reconnect_max_delay",
            mqtt.reconnect_max_delay,
            f"a number >= mqtt.reconnect_min_delay ({mqtt.reconnect_min_delay:g})",
        )
    mqtt = dataclasses.replace(mqtt, password_file=password_file)
    if mqtt.tls:
        build_tls_context(mqtt)  # the same call the MQTT client makes at start
    return mqtt


_SECTION_CHECKS: dict[str, Callable[[Any, dict[str, Any], _Context], Any]] = {
    "camera": _check_camera,
    "detector": _check_detector,
    "mqtt": _check_mqtt,
}


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
    context = _Context(base_dir=base_dir, environ=os.environ if environ is None else environ, hostname=hostname)
    for name, value in data.items():
        if name not in SECTIONS and name not in OPTION_SECTIONS:
            raise ConfigError(name, _MISSING, "unknown section" + _did_you_mean(name, [*SECTIONS, *OPTION_SECTIONS]))
        if not isinstance(value, dict):
            raise ConfigError(name, value, "a table: write it as [" + name + "]")
    sections = {}
    for name, section_class in SECTIONS.items():
        sections[name] = _parse_section(name, section_class, data.get(name, {}), context)
        if name == "device":
            context = dataclasses.replace(context, device_id=sections[name].id)
    for name in OPTION_SECTIONS:
        sections[name] = _option_section(name, data.get(name, {}), context.base_dir)
    return Config(**sections, source_file=source_file)


def _parse_section(name: str, section_class: type, table: dict[str, Any], context: _Context) -> Any:
    fields = dataclasses.fields(section_class)
    known = [item.name for item in fields]
    for key_name in table:
        if key_name not in known:
            raise ConfigError(
                f"{name}.{key_name}", _MISSING, f"unknown key in [{name}]" + _did_you_mean(key_name, known)
            )
    values: dict[str, Any] = {}
    for item in fields:
        rule: Rule = item.metadata["rule"]
        if item.name in table:
            written = table[item.name]
        elif item.default not in (None, dataclasses.MISSING):
            # Defaults go through the rule too: the default model must exist like a written
            # one, and the default topic prefix gets its {device_id}.
            written = str(item.default) if isinstance(item.default, Path) else item.default
        else:
            continue
        try:
            values[item.name] = rule.parse(written, context)
        except Invalid as exc:
            raise ConfigError(f"{name}.{item.name}", written, exc.allowed) from None
    for item in fields:  # absent keys without a default: None, or a derived default
        derive = item.metadata["derive"]
        if item.name not in table and derive is not None:
            values[item.name] = derive(values, context)
        values.setdefault(item.name, None)
    section = section_class(**values)
    check = _SECTION_CHECKS.get(name)
    return check(section, table, context) if check else section


def sanitize_device_id(name: str) -> str:
    """Turn a hostname into a valid device id: lower-case, other characters -> '-', <= 64."""
    cleaned = re.sub(r"[^a-z0-9_-]+", "-", name.split(".")[0].lower()).strip("-")[:64]
    return cleaned or "edge-face"


def _did_you_mean(word: str, candidates: Any) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return "; known: " + ", ".join(sorted(candidates))


# --- check-config -------------------------------------------------------------------------------


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
    recognition = config.recognition
    if recognition.enabled:
        gallery = recognition.gallery_path(config.device.state_dir)
        summary += f", recognition on (gallery '{quote_path(gallery)}')"
    return one_line(redact_url(summary))


def check_config_main(path: str | os.PathLike[str], as_user: str | None = None) -> int:
    """``edge-face check-config [--as-user USER] FILE``: 0 and "ok: <summary>" on stdout, or
    2 and one error line on stderr. With ``as_user`` the check runs in a child process with
    that user's uid, gid and groups (needs root), so every path is opened as the service
    will open it."""
    if as_user is None:
        return _check_and_report(path, "")
    from edge.ops.asuser import run_as_user

    # Everything the check imports is imported now, as root: the service user may not be
    # able to read the interpreter's own files (a Python under /root, say). Parsing an empty
    # option section imports its module.
    for name in OPTION_SECTIONS:
        _option_section(name, {})
    import edge.mqtt.controls  # noqa: F401  # the state_dir check's module

    absolute = os.path.abspath(path)  # the service starts from /, not from our folder
    return run_as_user(as_user, lambda: _check_and_report(absolute, f" (as user {as_user!r})"), what="check-config")


def _check_and_report(path: str | os.PathLike[str], who: str) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"error{who}: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    from edge.mqtt.controls import state_dir_problem  # it imports this module

    # The state directory keeps the controls and the announced identity, both MQTT's.
    problem = state_dir_problem(config.device.state_dir) if config.mqtt.host is not None else None
    if problem is not None:
        print(f"error{who}: {problem}", file=sys.stderr)
        return ExitCode.CONFIG
    print(f"ok{who}: {describe(config)}")
    return ExitCode.OK
