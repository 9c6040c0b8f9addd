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
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

import msgspec
from msgspec import Meta

from edge.config import (
    DEVICE_ID_PATTERN,
    DEVICE_ID_PLACEHOLDER,
    MAX_FLUSH_TIMEOUT_SECONDS,
    ConfigError,
    is_host,
)
from edge.scene.rules import MAX_FACE_SIZE, MAX_MASKS, MAX_POLYGON_POINTS, MAX_ZONES
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
    topic_prefix: Annotated[str, Meta(extra={"allowed": common.TOPIC_PREFIX_ALLOWED})] = (
        f"edge-face/{DEVICE_ID_PLACEHOLDER}"
    )
    keepalive: Annotated[int, Meta(ge=5, le=65535)] = 30
    queue_size: Annotated[int, Meta(ge=1, le=100_000)] = 1000
    flush_timeout: Annotated[
        float,
        Meta(
            ge=0,
            le=MAX_FLUSH_TIMEOUT_SECONDS,
            extra={"why": common.FLUSH_TIMEOUT_WHY},
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
    kind = common.without_none(get_type_hints(section, include_extras=True)[name])
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
    return common.allowed_text(kind, meta, meta.get("why"))


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
        changes["topic_prefix"] = common.substitute_device_id(section.topic_prefix, context["device_id"])
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
        common.check_camera(section, context)
    if name == "mqtt":
        return msgspec.structs.replace(section, password_file=common.check_mqtt(section, table, context))
    if name == "scene":
        common.check_scene(section, table)
        for key, polygon in _polygons(section):
            if not common.has_area(polygon):
                raise ConfigError(key, common.lookup(table, _loc(key)), common.POLYGON_AREA_ALLOWED)
    return section


def _polygons(scene: Any) -> list[tuple[str, list[list[float]]]]:
    masks = [(f"scene.masks[{index}]", mask) for index, mask in enumerate(scene.masks)]
    return masks + [(f"scene.zones[{index}].polygon", zone.polygon) for index, zone in enumerate(scene.zones)]


def _loc(key: str) -> tuple[str | int, ...]:
    return tuple(int(index) if index else name for name, index in re.findall(r"\.?([^.\[\]]+)|\[(\d+)\]", key))[1:]


def scene_error(what: str, loc: tuple[str | int, ...], table: dict[str, Any]) -> ConfigError:
    """A msgspec error in [scene] as edge.scene.rules words it."""
    if what.startswith("Object contains unknown field"):
        kind = "unknown"
    elif what.startswith("Object missing required field"):
        kind = "missing"
    elif "length <=" in what:
        kind = "too_long"
    elif ", got `" in what:
        kind = "not_a_number"
    else:
        kind = "other"
    return common.scene_error(kind, loc, table, SceneSection.__struct_fields__)


# --- the loader: one place, in section order ---------------------------------------------------

PORTED: dict[str, type] = {"device": DeviceSection, "camera": CameraSection, "mqtt": MqttSection, "scene": SceneSection}


def load(data: dict[str, Any], base_dir: Path, environ: Mapping[str, str], hostname: str | None) -> dict[str, Any]:
    common.check_sections(data)
    context = common.new_context(base_dir, environ, hostname)
    sections = {}
    for name, section in PORTED.items():
        table = prepare(section, name, data.get(name, {}), context)
        parsed = finish(convert(section, name, table), name, table, context)
        sections[name] = check_across_keys(parsed, name, data.get(name, {}), context)
        if name == "device":
            context["device_id"] = parsed.id
    return sections
