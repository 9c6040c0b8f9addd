"""What both library ports need beyond any library: rules about the host (files the service
must read, the password file, the TLS pair), defaults taken from the host, and the one-line
error wording of the parts no schema library words for us. Both ports call these, so the
glue each port adds on top is what its library costs; this module is the part that stays
custom whichever library is chosen."""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import socket
import types
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

# edge.config's marker for "a key with no allowed value" (an unknown key, UNKNOWN_KEY); the
# ports raise the same ConfigError, so they use the same marker. And the sections' own rules
# across keys (with the context they take): the ports run the same checks, not a copy.
from edge.config import (
    DEFAULT_STATE_DIR,
    DEVICE_ID_PLACEHOLDER,
    OPTION_SECTIONS,
    SECTIONS,
    SHUTDOWN_RESERVE_SECONDS,
    STOP_BUDGET_SECONDS,
    TOPIC_ALLOWED,
    UNKNOWN_KEY,
    ConfigContext,
    ConfigError,
    MqttConfig,
    is_valid_topic_prefix,
    path_problem,
    quote_path,
    sanitize_device_id,
)
from edge.mqtt.settings import check_mqtt as check_mqtt_keys
from edge.scene.rules import MAX_FACE_SIZE, MAX_MASKS, MAX_ZONES, MIN_POLYGON_AREA, POLYGON_ALLOWED, polygon_area
from edge.sources.settings import check_camera as check_camera_keys

PATH_ALLOWED = "a non-empty path string"
TOPIC_PREFIX_ALLOWED = f"{TOPIC_ALLOWED}; {DEVICE_ID_PLACEHOLDER} is substituted"
FLUSH_TIMEOUT_WHY = (
    f"the unit's stop budget TimeoutStopSec={STOP_BUDGET_SECONDS:g}s "
    f"minus {SHUTDOWN_RESERVE_SECONDS:g} s for the rest of the shutdown"
)
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


def substitute_device_id(prefix: str, device_id: str) -> str:
    """mqtt.topic_prefix with {device_id} substituted, checked as edge.config checks it."""
    if re.search(r"[{}]", prefix.replace(DEVICE_ID_PLACEHOLDER, "")):
        raise ConfigError("mqtt.topic_prefix", prefix, f"only the placeholder {DEVICE_ID_PLACEHOLDER}")
    substituted = prefix.replace(DEVICE_ID_PLACEHOLDER, device_id)
    if not is_valid_topic_prefix(substituted):
        raise ConfigError("mqtt.topic_prefix", prefix, TOPIC_PREFIX_ALLOWED)
    return substituted


def has_area(points: Any) -> bool:
    import numpy as np

    return polygon_area(np.array(points, dtype=np.float64)) >= MIN_POLYGON_AREA


def check_camera(camera: Any, context: dict[str, Any]) -> None:
    """edge.config's rules across [camera] keys; ``camera`` has the section's attributes."""
    check_camera_keys(camera, {}, _edge_context(context))


def check_mqtt(mqtt: Any, table: Mapping[str, Any], context: dict[str, Any]) -> Path | None:
    """edge.config's rules across [mqtt] keys and the host's files; the password file to use
    (the configured one or the systemd credential)."""
    fields = {item.name: getattr(mqtt, item.name) for item in dataclasses.fields(MqttConfig)}
    checked: MqttConfig = check_mqtt_keys(MqttConfig(**fields), dict(table), _edge_context(context))
    return checked.password_file


def _edge_context(context: dict[str, Any]) -> ConfigContext:
    return ConfigContext(context["base_dir"], context["environ"], context["hostname"], context["device_id"])


def check_sections(data: Mapping[str, Any]) -> None:
    """edge.config's rules on the document's top level: known section names, each a table."""
    known = [*SECTIONS, *OPTION_SECTIONS]
    for name, value in data.items():
        if name not in known:
            raise ConfigError(name, UNKNOWN_KEY, "unknown section" + did_you_mean(name, known))
        if not isinstance(value, dict):
            raise ConfigError(name, value, "a table: write it as [" + name + "]")


def new_context(base_dir: Path, environ: Mapping[str, str], hostname: str | None) -> dict[str, Any]:
    """What the ports' checks need beyond a value; "device_id" is set once [device] is read."""
    return {"base_dir": base_dir, "environ": environ, "hostname": hostname, "device_id": ""}


def without_none(kind: Any) -> Any:
    """``X`` of an ``X | None`` annotation; any other annotation as it is."""
    if get_origin(kind) in (Union, types.UnionType):
        return next(arg for arg in get_args(kind) if arg is not type(None))
    return kind


def allowed_text(kind: Any, bounds: Mapping[str, Any], why: str | None) -> str:
    """What a key of type ``kind`` with bounds ("ge", "gt", "le", "lt") allows, in edge.config's
    words; ``why`` explains a limit."""
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(json.dumps(choice) for choice in get_args(kind))
    if kind is bool:
        return "true or false"
    if kind is int:
        return f"an integer {bounds['ge']}-{bounds['le']}"
    low = f"> {bounds['gt']:g}" if "gt" in bounds else f">= {bounds['ge']:g}"
    high = f"< {bounds['lt']:g}" if "lt" in bounds else f"<= {bounds['le']:g}"
    return f"a number {low} and {high}" + (f": {why}" if why is not None else "")


def check_scene(scene: Any, table: Mapping[str, Any]) -> None:
    """edge.scene.rules's rules across [scene] keys; ``table`` is [scene] as written."""
    if scene.max_face_size is not None and not scene.min_face_size < scene.max_face_size:
        raise ConfigError(
            "scene.max_face_size",
            table["max_face_size"],  # as written: the library made an integer a float
            f"a number of pixels above scene.min_face_size ({scene.min_face_size:g}) and at most {MAX_FACE_SIZE}",
        )
    names = [zone.name for zone in scene.zones]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise ConfigError(f"scene.zones[{index}].name", name, "a name no other zone has")


def scene_error(kind: str, loc: tuple[str | int, ...], table: dict[str, Any], keys: Collection[str]) -> ConfigError:
    """A library's error in [scene] as edge.scene.rules words it (key paths like
    scene.zones[0].polygon[2]). ``kind``: what the library says, in the ports' common words:
    "unknown" (key), "missing" (key), "too_long" (list), "not_a_number" (coordinate) or
    "other"; ``loc``: where, as keys and indices; ``keys``: [scene]'s keys."""
    head, key, value = loc[0], scene_key(loc), lookup(table, loc)
    if kind == "unknown":
        where = "a zone key: name, polygon" if len(loc) > 1 else "a key of [scene]: " + ", ".join(keys)
        return ConfigError(key, loc[-1], where)
    if kind == "missing":
        return ConfigError(key, None, f"every [[scene.zones]] needs a {loc[-1]}")
    if head == "min_face_size":
        return ConfigError(key, value, f"a number of pixels from 0 to {MAX_FACE_SIZE}")
    if head == "max_face_size":
        low = table.get("min_face_size", 0)
        return ConfigError(
            key, value, f"a number of pixels above scene.min_face_size ({low:g}) and at most {MAX_FACE_SIZE}"
        )
    if len(loc) == 1 and kind == "too_long":
        return ConfigError(key, f"{len(value)} {head}", f"at most {MAX_MASKS if head == 'masks' else MAX_ZONES} {head}")
    if head == "masks" and len(loc) == 1:
        return ConfigError(key, value, f"a list of polygons, each {POLYGON_ALLOWED}")
    if head == "zones" and len(loc) <= 2:
        return ConfigError("scene.zones", table["zones"], "tables written as [[scene.zones]] with name and polygon")
    if loc[-1] == "name":
        return ConfigError(key, value, "1-32 characters of a-z, 0-9 and '_'")
    polygon_length = 2 if head == "masks" else 3  # ("masks", i) or ("zones", i, "polygon")
    if len(loc) == polygon_length:
        return ConfigError(key, value, POLYGON_ALLOWED)
    point = loc[: polygon_length + 1]
    if len(loc) == len(point) or kind == "not_a_number":
        return ConfigError(scene_key(point), lookup(table, point), "a point [x, y] of two numbers")
    return ConfigError(
        scene_key(point), lookup(table, point), "x and y from 0 to 1 (fractions of the frame width and height)"
    )


def scene_key(loc: tuple[Any, ...]) -> str:
    return "scene" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def lookup(table: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        try:
            table = table[part]
        except (KeyError, IndexError, TypeError):
            return None
    return table
