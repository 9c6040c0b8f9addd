"""The ``[mqtt]`` and ``[homeassistant]`` sections: the broker connection, the outbox's bounds,
Home Assistant discovery and controls; and the checks the MQTT client repeats at start (the
password file, the TLS context).

Declared here, beside the MQTT code they configure, and read by edge.config. Numpy-free and
importing only rank 0 (edge.common), like every ``settings`` module. Secrets are never values
in the file: the password comes from ``mqtt.password_file`` or, under systemd's
``LoadCredential=mqtt_password:...``, from ``$CREDENTIALS_DIRECTORY/mqtt_password``.
"""

from __future__ import annotations

import dataclasses
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from edge.common.config_rules import (
    DEVICE_ID_PLACEHOLDER,
    REQUIRED,
    Boolean,
    Choice,
    ConfigContext,
    ConfigError,
    FilePath,
    Integer,
    KeySection,
    Number,
    Text,
    Topic,
    is_host,
    key,
    validate_readable_file,
)
from edge.common.files import os_reason, read_bounded

MqttTransport = Literal["tcp", "websockets"]
MQTT_TRANSPORTS: tuple[MqttTransport, ...] = get_args(MqttTransport)
MQTT_PROTOCOLS = ("5", "3.1.1")
CREDENTIAL_NAME = "mqtt_password"

# The shutdown budget: systemd/edge-face.service's TimeoutStopSec. After SIGTERM the daemon
# must have flushed, published "stopped" and exited within it, or systemd SIGKILLs it
# mid-flush before the loss is logged. mqtt.flush_timeout gets the budget minus a reserve for
# the rest of the stop (camera release, the "stopped" status, disconnect, final log line).
STOP_BUDGET_SECONDS = 30.0
SHUTDOWN_RESERVE_SECONDS = 10.0
MAX_FLUSH_TIMEOUT_SECONDS = STOP_BUDGET_SECONDS - SHUTDOWN_RESERVE_SECONDS

# Bytes of events the MQTT outbox may hold while the broker is away (mqtt.queue_bytes). An
# event is ~1.3 KB of JSON, so the 4 MiB default holds ~3000, more than queue_size's default
# 1000: the count binds first; the bytes bound caps events carrying many faces. The 64 MiB
# maximum still leaves room under MemoryMax=256M.
DEFAULT_QUEUE_BYTES = 4 * 1024 * 1024
# Events the outbox may hold (mqtt.queue_size).
DEFAULT_QUEUE_SIZE = 1000

MAX_SECRET_BYTES = 65535  # the largest password MQTT can carry


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


def _default_port(values: dict[str, Any], context: ConfigContext) -> int:
    return 8883 if values["tls"] else 1883


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


def check_mqtt(mqtt: MqttConfig, table: dict[str, Any], context: ConfigContext) -> MqttConfig:
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


MQTT_SECTION = KeySection(MqttConfig, check=check_mqtt)
HOMEASSISTANT_SECTION = KeySection(HomeAssistantConfig)
