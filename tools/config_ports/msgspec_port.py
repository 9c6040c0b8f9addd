"""[device], [camera], [mqtt] and [scene] of edge.config declared with msgspec.

Types, limits, choices, defaults and unknown keys are msgspec's (``convert(strict=True)``);
the allowed text of an error is derived from the field's ``Meta`` constraints (or its
``extra["allowed"]``). msgspec has no validation context and no field validators, and its
errors are one string (``Expected `int` <= 65535 - at `$.port```) without the value: what
the schema cannot say (paths, {device_id}, derived defaults, printable text, host names,
rules across keys, the scene's wording) is the pre- and post-conversion glue below, and the
error translation parses msgspec's message and looks the value up in the TOML table.
"""

from __future__ import annotations

import functools
import json
import re
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import msgspec
from msgspec import Meta

from edge.config import (
    DEVICE_ID_PATTERN,
    DEVICE_ID_PLACEHOLDER,
    MAX_FLUSH_TIMEOUT_SECONDS,
    OPTION_SECTIONS,
    SECTIONS,
    SHUTDOWN_RESERVE_SECONDS,
    STOP_BUDGET_SECONDS,
    TOPIC_ALLOWED,
    ConfigError,
    is_host,
    is_valid_topic_prefix,
)
from edge.scene import MAX_FACE_SIZE, MAX_MASKS, MAX_POLYGON_POINTS, MAX_ZONES, POLYGON_ALLOWED
from tools.config_ports import common

# --- the sections ------------------------------------------------------------------------------

PATH = Meta(min_length=1, extra={"allowed": common.PATH_ALLOWED, "path": "file"})


class Section(msgspec.Struct, forbid_unknown_fields=True, frozen=True):  # type: ignore[call-arg]
    pass


class DeviceSection(Section):
    id: Annotated[
        str,
        Meta(pattern=rf"^{DEVICE_ID_PATTERN.pattern}\Z", extra={"allowed": "1-64 characters of a-z, 0-9, '_' and '-'"}),
    ]
    state_dir: Annotated[str, Meta(min_length=1, extra={"allowed": common.PATH_ALLOWED, "path": "folder"})]


class CameraSection(Section):
    source: Literal["auto", "picamera2", "opencv", "replay"] = "auto"
    width: Annotated[int, Meta(ge=16, le=8192)] | None = None
    height: Annotated[int, Meta(ge=16, le=8192)] | None = None
    fps: Annotated[float, Meta(gt=0, le=1000)] | None = None
    camera_index: Annotated[int, Meta(ge=0, le=15)] = 0
    picamera2_stream: Literal["main", "lores"] = "main"
    device: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=4096,
            extra={
                "allowed": 'a V4L2 index ("0"), a device path ("/dev/video0"), an rtsp/http(s) URL or a video file',
                "check": str.isprintable,
            },
        ),
    ] = "/dev/video0"
    path: (
        Annotated[str, Meta(min_length=1, extra={"allowed": common.PATH_ALLOWED, "path": "file-or-folder"})] | None
    ) = None
    loop: bool = False
    reopen_min_delay: Annotated[float, Meta(gt=0, le=3600)] = 1.0
    reopen_max_delay: Annotated[float, Meta(gt=0, le=3600)] = 30.0
    max_pixels: Annotated[int, Meta(ge=65_536, le=50_000_000)] = 4_000_000


def _is_printable_host(text: str) -> bool:
    return text.isprintable() and is_host(text)


class MqttSection(Section):
    host: (
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=1024,
                extra={
                    "allowed": "a host name or IP address (no scheme, no port, no spaces)",
                    "check": _is_printable_host,
                },
            ),
        ]
        | None
    ) = None
    port: Annotated[int, Meta(ge=1, le=65535)] = 1883  # 8883 with tls: filled in before conversion
    transport: Literal["tcp", "websockets"] = "tcp"
    protocol: Literal["5", "3.1.1"] = "5"
    client_id: (
        Annotated[
            str,
            Meta(pattern=r"^[\x21-\x7e]{1,128}\Z", extra={"allowed": "1-128 printable ASCII characters, no spaces"}),
        ]
        | None
    ) = None
    username: (
        Annotated[
            str, Meta(min_length=1, max_length=65535, extra={"allowed": "a non-empty string", "check": str.isprintable})
        ]
        | None
    ) = None
    password_file: Annotated[str, PATH] | None = None
    tls: bool = False
    ca_file: Annotated[str, PATH] | None = None
    cert_file: Annotated[str, PATH] | None = None
    key_file: Annotated[str, PATH] | None = None
    tls_insecure: bool = False
    topic_prefix: Annotated[
        str, Meta(extra={"allowed": f"{TOPIC_ALLOWED}; {DEVICE_ID_PLACEHOLDER} is substituted"})
    ] = f"edge-face/{DEVICE_ID_PLACEHOLDER}"
    keepalive: Annotated[int, Meta(ge=5, le=65535)] = 30
    queue_size: Annotated[int, Meta(ge=1, le=100_000)] = 1000
    flush_timeout: Annotated[
        float,
        Meta(
            ge=0,
            le=MAX_FLUSH_TIMEOUT_SECONDS,
            extra={
                "why": f"the unit's stop budget TimeoutStopSec={STOP_BUDGET_SECONDS:g}s "
                f"minus {SHUTDOWN_RESERVE_SECONDS:g} s for the rest of the shutdown"
            },
        ),
    ] = 5.0
    reconnect_min_delay: Annotated[float, Meta(gt=0, le=3600)] = 1.0
    reconnect_max_delay: Annotated[float, Meta(gt=0, le=3600)] = 60.0
    queue_bytes: Annotated[int, Meta(ge=65_536, le=64 * 1024 * 1024)] = 4 * 1024 * 1024


Coordinate = Annotated[float, Meta(ge=0, le=1)]
Point = Annotated[list[Coordinate], Meta(min_length=2, max_length=2)]
Polygon = Annotated[list[Point], Meta(min_length=3, max_length=MAX_POLYGON_POINTS)]


class ZoneSection(Section):
    name: Annotated[str, Meta(pattern=r"^[a-z0-9_]{1,32}\Z")]
    polygon: Polygon


class SceneSection(Section):
    masks: Annotated[list[Polygon], Meta(max_length=MAX_MASKS)] = []
    min_face_size: Annotated[float, Meta(ge=0, le=MAX_FACE_SIZE)] = 0.0
    max_face_size: Annotated[float, Meta(gt=0, le=MAX_FACE_SIZE)] | None = None
    zones: Annotated[list[ZoneSection], Meta(max_length=MAX_ZONES)] = []


# --- glue: what msgspec cannot do, and its errors -> edge.config's one line --------------------


@functools.cache  # get_type_hints is slow: once per key, not once per load
def _meta(section: Any, name: str) -> tuple[Any, dict[str, Any]]:
    """Key ``name``'s type (None and Annotated stripped) and its Meta bounds and extras."""
    kind = get_type_hints(section, include_extras=True)[name]
    if get_origin(kind) in (Union, types.UnionType):  # X | None
        kind = next(arg for arg in get_args(kind) if arg is not type(None))
    found: dict[str, Any] = {}
    if get_origin(kind) is Annotated:
        kind, *metas = get_args(kind)
        for meta in metas:
            found.update(
                {attr: getattr(meta, attr) for attr in ("ge", "gt", "le", "lt") if getattr(meta, attr) is not None}
            )
            found.update(meta.extra or {})
    return kind, found


def allowed(section: Any, name: str) -> str:
    kind, meta = _meta(section, name)
    if "allowed" in meta:
        return str(meta["allowed"])
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(json.dumps(choice) for choice in get_args(kind))
    if kind is bool:
        return "true or false"
    if kind is int:
        return f"an integer {meta['ge']}-{meta['le']}"
    low = f"> {meta['gt']:g}" if "gt" in meta else f">= {meta['ge']:g}"
    high = f"< {meta['lt']:g}" if "lt" in meta else f"<= {meta['le']:g}"
    return f"a number {low} and {high}" + (f": {meta['why']}" if "why" in meta else "")


_MESSAGE = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_FIELD = re.compile(r"(?:unknown|required) field `(?P<name>[^`]*)`")


def _location(message: str) -> tuple[str, tuple[str | int, ...]]:
    """msgspec's message -> (what it says, the path as a pydantic-like loc tuple)."""
    match = _MESSAGE.match(message)
    assert match is not None
    path = match.group("path") or ""
    loc = tuple(int(index) if index else name for name, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path))
    field = _FIELD.search(match.group("what"))
    return match.group("what"), (*loc, field.group("name")) if field else loc


def convert(section: Any, name: str, table: dict[str, Any]) -> Any:
    try:
        return msgspec.convert(table, type=section, strict=True)
    except msgspec.ValidationError as exc:
        what, loc = _location(str(exc))
    if name == "scene":
        raise scene_error(what, loc, table) from None
    key = f"{name}.{loc[0]}"
    if what.startswith("Object contains unknown field"):
        known = section.__struct_fields__
        raise ConfigError(
            key, common.UNKNOWN_KEY, f"unknown key in [{name}]" + common.did_you_mean(str(loc[0]), known)
        ) from None
    raise ConfigError(key, table[str(loc[0])], allowed(section, str(loc[0]))) from None


def finish(section: Any, name: str, table: dict[str, Any], context: dict[str, Any]) -> Any:
    """The rules msgspec has no place for, run over the converted ``section``: paths resolved
    and checked, extra checks, the topic placeholder."""
    changes: dict[str, Any] = {}
    for field in section.__struct_fields__:
        value = getattr(section, field)
        if value is None:
            continue
        _, meta = _meta(section.__class__, field)
        key = f"{name}.{field}"
        check: Callable[[str], bool] | None = meta.get("check")
        if check is not None and not check(value):
            raise ConfigError(key, value, str(meta["allowed"]))
        if "path" in meta:
            if "\x00" in value:
                raise ConfigError(key, value, common.PATH_ALLOWED)
            if meta["path"] == "folder":
                changes[field] = common.resolve(value, context["base_dir"])
                continue
            changes[field], problem = common.readable_path_problem(value, context["base_dir"], meta["path"])
            if problem is not None:
                raise ConfigError(key, value, problem)
    if name == "mqtt":
        prefix = section.topic_prefix
        if re.search(r"[{}]", prefix.replace(DEVICE_ID_PLACEHOLDER, "")):
            raise ConfigError("mqtt.topic_prefix", prefix, f"only the placeholder {DEVICE_ID_PLACEHOLDER}")
        changes["topic_prefix"] = prefix.replace(DEVICE_ID_PLACEHOLDER, context["device_id"])
        if not is_valid_topic_prefix(changes["topic_prefix"]):
            raise ConfigError("mqtt.topic_prefix", prefix, allowed(MqttSection, "topic_prefix"))
    return msgspec.structs.replace(section, **changes)


def prepare(section: Any, name: str, table: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """Defaults that depend on the host or on other keys, and aliases, filled in before
    conversion; keys put in declaration order, unknown ones first, since msgspec reports the
    first error in the table's order and edge.config reports the first key it declares."""
    fields = section.__struct_fields__
    table = {key: value for key, value in table.items() if key not in fields} | {
        key: table[key] for key in fields if key in table
    }
    if name == "device":
        table.setdefault("id", common.default_device_id(context["hostname"]))
        table.setdefault("state_dir", common.default_state_dir(context["environ"]))
    if name == "mqtt":
        table.setdefault("port", 8883 if table.get("tls") is True else 1883)
        if type(table.get("protocol")) is int and table["protocol"] == 5:
            table["protocol"] = "5"  # TOML users write 5
    return table


def check_across_keys(section: Any, name: str, table: dict[str, Any], context: dict[str, Any]) -> Any:
    if name == "camera":
        common.check_camera(section)
    if name == "mqtt":
        return msgspec.structs.replace(section, password_file=common.check_mqtt(section, table, context["environ"]))
    if name == "scene":
        if section.max_face_size is not None and not section.min_face_size < section.max_face_size:
            raise ConfigError(
                "scene.max_face_size",
                table["max_face_size"],  # as written: msgspec made an integer a float
                f"a number of pixels above scene.min_face_size ({section.min_face_size:g}) and at most {MAX_FACE_SIZE}",
            )
        names = [zone.name for zone in section.zones]
        for index, zone_name in enumerate(names):
            if zone_name in names[:index]:
                raise ConfigError(f"scene.zones[{index}].name", zone_name, "a name no other zone has")
        for key, polygon in _polygons(section):
            if not common.has_area(polygon):
                raise ConfigError(key, lookup(table, _loc(key)), common.POLYGON_AREA_ALLOWED)
    return section


def _polygons(scene: Any) -> list[tuple[str, list[list[float]]]]:
    masks = [(f"scene.masks[{index}]", mask) for index, mask in enumerate(scene.masks)]
    return masks + [(f"scene.zones[{index}].polygon", zone.polygon) for index, zone in enumerate(scene.zones)]


def _loc(key: str) -> tuple[str | int, ...]:
    return tuple(int(index) if index else name for name, index in re.findall(r"\.?([^.\[\]]+)|\[(\d+)\]", key))[1:]


def scene_error(what: str, loc: tuple[str | int, ...], table: dict[str, Any]) -> ConfigError:
    """A msgspec error in [scene] as edge.scene words it."""
    head, key, value = loc[0], scene_key(loc), lookup(table, loc)
    if what.startswith("Object contains unknown field"):
        where = (
            "a zone key: name, polygon"
            if len(loc) > 1
            else "a key of [scene]: " + ", ".join(SceneSection.__struct_fields__)
        )
        return ConfigError(key, loc[-1], where)
    if what.startswith("Object missing required field"):
        return ConfigError(key, None, f"every [[scene.zones]] needs a {loc[-1]}")
    if head == "min_face_size":
        return ConfigError(key, value, f"a number of pixels from 0 to {MAX_FACE_SIZE}")
    if head == "max_face_size":
        low = table.get("min_face_size", 0)
        return ConfigError(
            key, value, f"a number of pixels above scene.min_face_size ({low:g}) and at most {MAX_FACE_SIZE}"
        )
    if len(loc) == 1 and "length <=" in what:
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
    if len(loc) == len(point) or ", got `" in what:
        return ConfigError(scene_key(point), lookup(table, point), "a point [x, y] of two numbers")
    return ConfigError(
        scene_key(point), lookup(table, point), "x and y from 0 to 1 (fractions of the frame width and height)"
    )


def scene_key(loc: tuple[str | int, ...]) -> str:
    return "scene" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def lookup(table: Any, loc: tuple[str | int, ...]) -> Any:
    for part in loc:
        try:
            table = table[part]
        except (KeyError, IndexError, TypeError):
            return None
    return table


# --- the loader: one place, in section order ---------------------------------------------------

PORTED: dict[str, type] = {"device": DeviceSection, "camera": CameraSection, "mqtt": MqttSection, "scene": SceneSection}


def load(data: dict[str, Any], base_dir: Path, environ: Mapping[str, str], hostname: str | None) -> dict[str, Any]:
    known = [*SECTIONS, *OPTION_SECTIONS]
    for name, value in data.items():
        if name not in known:
            raise ConfigError(name, common.UNKNOWN_KEY, "unknown section" + common.did_you_mean(name, known))
        if not isinstance(value, dict):
            raise ConfigError(name, value, "a table: write it as [" + name + "]")
    context: dict[str, Any] = {"base_dir": base_dir, "environ": environ, "hostname": hostname, "device_id": ""}
    sections = {}
    for name, section in PORTED.items():
        table = prepare(section, name, data.get(name, {}), context)
        parsed = finish(convert(section, name, table), name, table, context)
        sections[name] = check_across_keys(parsed, name, data.get(name, {}), context)
        if name == "device":
            context["device_id"] = parsed.id
    return sections
