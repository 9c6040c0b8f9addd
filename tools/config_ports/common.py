"""What both library ports need beyond any library: rules about the host (files the service
must read, the password file, the TLS pair), defaults taken from the host, and the one-line
error wording of the parts no schema library words for us. Both ports call these, so the
glue each port adds on top is what its library costs; this module is the part that stays
custom whichever library is chosen."""

from __future__ import annotations

import difflib
import socket
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

# edge.config's marker for "a key with no allowed value" (an unknown key); the ports raise
# the same ConfigError, so they use the same marker.
from edge.config import _MISSING as UNKNOWN_KEY  # noqa: F401  (re-exported for the ports)
from edge.config import (
    CREDENTIAL_NAME,
    DEFAULT_STATE_DIR,
    ConfigError,
    build_tls_context,
    path_problem,
    quote_path,
    sanitize_device_id,
    validate_password_file,
)
from edge.config import REQUIRED as MISSING_KEY
from edge.scene import MIN_POLYGON_AREA, polygon_area

PATH_ALLOWED = "a non-empty path string"
POLYGON_AREA_ALLOWED = "a polygon with an area: its points lie on one line or repeat"


def did_you_mean(word: str, candidates: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return "; known: " + ", ".join(sorted(candidates))


def default_device_id(hostname: str | None) -> str:
    return sanitize_device_id(hostname if hostname is not None else socket.gethostname())


def default_state_dir(environ: Mapping[str, str]) -> str:
    return environ.get("STATE_DIRECTORY", "").split(":")[0] or str(DEFAULT_STATE_DIR)


def resolve(value: str, base_dir: Path) -> Path:
    try:
        return base_dir / Path(value).expanduser()
    except RuntimeError:  # "~nosuchuser/..."
        return base_dir / value


def readable_path_problem(value: str, base_dir: Path, kind: str) -> tuple[Path, str | None]:
    """``value`` resolved, and None or what the error says is allowed (edge.config.FilePath)."""
    resolved = resolve(value, base_dir)
    subject = "it" if str(resolved) == value else f"'{quote_path(resolved)}'"
    problem = path_problem(resolved, kind)
    if problem is None:
        return resolved, None
    expected = "an existing file" if kind == "file" else "an existing file or folder"
    if not problem.startswith(("does not exist", "is a folder")):
        expected = "a readable file" if kind == "file" else "a readable file or folder"
    return resolved, f"{expected}; {subject} {problem}"


def has_area(points: Any) -> bool:
    import numpy as np

    return polygon_area(np.array(points, dtype=np.float64)) >= MIN_POLYGON_AREA


def check_camera(camera: Any) -> None:
    """edge.config's rules across [camera] keys; ``camera`` has the section's attributes."""
    if camera.source == "replay" and camera.path is None:
        raise ConfigError("camera.path", MISSING_KEY, 'camera.source = "replay" needs a folder of images or one image')
    if camera.reopen_max_delay < camera.reopen_min_delay:
        raise ConfigError(
            "camera.reopen_max_delay",
            float(camera.reopen_max_delay),
            f"a number >= camera.reopen_min_delay ({camera.reopen_min_delay:g})",
        )
    if (camera.width is None) != (camera.height is None):
        missing = "camera.height" if camera.height is None else "camera.width"
        raise ConfigError(missing, MISSING_KEY, "set camera.width and camera.height together, or neither")


def check_mqtt(mqtt: Any, table: Mapping[str, Any], environ: Mapping[str, str]) -> Path | None:
    """edge.config's rules across [mqtt] keys and the host's files; the password file to use
    (the configured one or the systemd credential)."""
    password_file: Path | None = mqtt.password_file
    if password_file is None and environ.get("CREDENTIALS_DIRECTORY"):
        credential = Path(environ["CREDENTIALS_DIRECTORY"]) / CREDENTIAL_NAME
        if credential.exists() and validate_password_file(credential, "mqtt.password_file (credential)"):
            password_file = credential
    elif password_file is not None:
        validate_password_file(password_file)
    if password_file is not None and mqtt.username is None:
        raise ConfigError(
            "mqtt.username", MISSING_KEY, "a password is configured: mqtt.password_file or the mqtt_password credential"
        )
    if (mqtt.cert_file is None) != (mqtt.key_file is None):
        missing = "mqtt.key_file" if mqtt.key_file is None else "mqtt.cert_file"
        raise ConfigError(missing, MISSING_KEY, "a client certificate needs both mqtt.cert_file and mqtt.key_file")
    if not mqtt.tls:
        for name in ("ca_file", "cert_file", "key_file", "tls_insecure"):
            if name in table and table[name] is not False:
                raise ConfigError(f"mqtt.{name}", table[name], "only with mqtt.tls = true")
    if mqtt.reconnect_max_delay < mqtt.reconnect_min_delay:
        raise ConfigError(
            "mqtt.reconnect_max_delay",
            float(mqtt.reconnect_max_delay),
            f"a number >= mqtt.reconnect_min_delay ({mqtt.reconnect_min_delay:g})",
        )
    if mqtt.tls:
        build_tls_context(mqtt)
    return password_file
