"""[device], [camera], [mqtt] and [scene] of edge.config declared with pydantic v2.

Types, limits, choices, defaults and unknown keys are pydantic's (strict mode: no "1883"
for an integer, no 1 for true); the allowed text of an error is derived from the field's
constraints (or its description, where a constraint cannot say it in words). What the
schema cannot say (paths against the config's folder, {device_id}, derived defaults, rules
across keys, the scene's own error wording) is validators and the error translation below.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

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

# --- glue: rules pydantic has no word for, and its errors -> edge.config's one line ----------

STRICT = ConfigDict(strict=True, extra="forbid", frozen=True)


def refuse(allowed: str) -> PydanticCustomError:
    """An error whose allowed text is not the field's (e.g. "only the placeholder ...")."""
    return PydanticCustomError("refused", "{allowed}", {"allowed": allowed})


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("not printable")
    return value


def _readable(kind: str) -> Any:
    def check(value: str, info: ValidationInfo) -> Path:
        if value == "" or "\x00" in value:
            raise ValueError("empty")
        resolved, problem = common.readable_path_problem(value, info.context["base_dir"], kind)
        if problem is not None:
            raise refuse(problem)
        return resolved

    return check


def _folder(value: str, info: ValidationInfo) -> Path:
    if value == "" or "\x00" in value:
        raise ValueError("empty")
    return common.resolve(value, info.context["base_dir"])


Printable = Annotated[str, AfterValidator(_printable)]
ReadableFile = Annotated[str, AfterValidator(_readable("file"))]
ReadableFileOrFolder = Annotated[str, AfterValidator(_readable("file-or-folder"))]
Folder = Annotated[str, AfterValidator(_folder)]


def allowed(model: type[BaseModel], name: str) -> str:
    """What key ``name`` of ``model`` allows, in edge.config's words, from its constraints."""
    info = model.model_fields[name]
    if info.description:
        return info.description
    kind = info.annotation
    if get_origin(kind) in (Union, types.UnionType):  # X | None
        kind = next(arg for arg in get_args(kind) if arg is not type(None))
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(json.dumps(choice) for choice in get_args(kind))
    if kind is bool:
        return "true or false"
    bounds = {
        attr: getattr(item, attr) for item in info.metadata for attr in ("ge", "gt", "le", "lt") if hasattr(item, attr)
    }
    if kind is int:
        return f"an integer {bounds['ge']}-{bounds['le']}"
    low = f"> {bounds['gt']:g}" if "gt" in bounds else f">= {bounds['ge']:g}"
    high = f"< {bounds['lt']:g}" if "lt" in bounds else f"<= {bounds['le']:g}"
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    return f"a number {low} and {high}" + (f": {extra['why']}" if "why" in extra else "")


def _first(errors: list[Any]) -> Any:
    """The error edge.config would report: an unknown key, then a missing one, before any
    value (a typo explains the rest); a container before its items (pydantic lists a short
    polygon's bad points before the polygon)."""
    priority = {"extra_forbidden": 0, "missing": 1}
    return min(errors, key=lambda error: (priority.get(error["type"], 2), len(error["loc"])))


def validate(model: type[BaseModel], section: str, table: dict[str, Any], context: dict[str, Any]) -> Any:
    try:
        return model.model_validate(table, context=context)
    except ValidationError as exc:
        error = _first(exc.errors(include_url=False))
    context_of_error = error.get("ctx") or {}
    if isinstance(context_of_error.get("error"), ConfigError):  # raised by a model validator
        raise context_of_error["error"] from None
    if section == "scene":
        raise scene_error(error, table) from None
    name = error["loc"][0]
    key = f"{section}.{name}"
    if error["type"] == "extra_forbidden":
        raise ConfigError(
            key, common.UNKNOWN_KEY, f"unknown key in [{section}]" + common.did_you_mean(name, model.model_fields)
        )
    text = context_of_error["allowed"] if error["type"] == "refused" else allowed(model, name)
    raise ConfigError(key, table.get(name, error["input"]), text) from None


def scene_error(error: Any, table: dict[str, Any]) -> ConfigError:
    """A pydantic error in [scene] as edge.scene words it (key paths like scene.zones[0].polygon[2])."""
    loc, kind, head = error["loc"], error["type"], error["loc"][0]
    key, value = scene_key(loc), lookup(table, loc)
    if kind == "extra_forbidden":
        where = (
            "a zone key: name, polygon" if len(loc) > 1 else "a key of [scene]: " + ", ".join(SceneSection.model_fields)
        )
        return ConfigError(key, loc[-1], where)
    if kind == "missing":
        return ConfigError(key, None, f"every [[scene.zones]] needs a {loc[-1]}")
    if kind == "refused":
        return ConfigError(key, value, error["ctx"]["allowed"])
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
    if len(loc) == len(point) or kind == "float_type":
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


# --- the sections ------------------------------------------------------------------------------


class DeviceSection(BaseModel):
    model_config = STRICT

    id: str = Field(pattern=f"^{DEVICE_ID_PATTERN.pattern}$", description="1-64 characters of a-z, 0-9, '_' and '-'")
    state_dir: Folder = Field(description=common.PATH_ALLOWED)

    @model_validator(mode="before")
    @classmethod
    def _derived_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict):
            data = {
                "id": common.default_device_id(info.context["hostname"]),
                "state_dir": common.default_state_dir(info.context["environ"]),
                **data,
            }
        return data


class CameraSection(BaseModel):
    model_config = STRICT

    source: Literal["auto", "picamera2", "opencv", "replay"] = "auto"
    width: int | None = Field(None, ge=16, le=8192)
    height: int | None = Field(None, ge=16, le=8192)
    fps: float | None = Field(None, gt=0, le=1000)
    camera_index: int = Field(0, ge=0, le=15)
    picamera2_stream: Literal["main", "lores"] = "main"
    device: Printable = Field(
        "/dev/video0",
        min_length=1,
        max_length=4096,
        description='a V4L2 index ("0"), a device path ("/dev/video0"), an rtsp/http(s) URL or a video file',
    )
    path: ReadableFileOrFolder | None = Field(None, description=common.PATH_ALLOWED)
    loop: bool = False
    reopen_min_delay: float = Field(1.0, gt=0, le=3600)
    reopen_max_delay: float = Field(30.0, gt=0, le=3600)
    max_pixels: int = Field(4_000_000, ge=65_536, le=50_000_000)

    @model_validator(mode="after")
    def _across_keys(self) -> CameraSection:
        common.check_camera(self)
        return self


class MqttSection(BaseModel):
    model_config = STRICT

    host: Printable | None = Field(
        None, min_length=1, max_length=1024, description="a host name or IP address (no scheme, no port, no spaces)"
    )
    port: int = Field(1883, ge=1, le=65535)  # 8883 with tls: see _default_port
    transport: Literal["tcp", "websockets"] = "tcp"
    protocol: Literal["5", "3.1.1"] = "5"
    client_id: str | None = Field(
        None, pattern=r"^[\x21-\x7e]{1,128}$", description="1-128 printable ASCII characters, no spaces"
    )
    username: Printable | None = Field(None, min_length=1, max_length=65535, description="a non-empty string")
    password_file: ReadableFile | None = Field(None, description=common.PATH_ALLOWED)
    tls: bool = False
    ca_file: ReadableFile | None = Field(None, description=common.PATH_ALLOWED)
    cert_file: ReadableFile | None = Field(None, description=common.PATH_ALLOWED)
    key_file: ReadableFile | None = Field(None, description=common.PATH_ALLOWED)
    tls_insecure: bool = False
    topic_prefix: str = Field(
        f"edge-face/{DEVICE_ID_PLACEHOLDER}",
        validate_default=True,
        description=f"{TOPIC_ALLOWED}; {DEVICE_ID_PLACEHOLDER} is substituted",
    )
    keepalive: int = Field(30, ge=5, le=65535)
    queue_size: int = Field(1000, ge=1, le=100_000)
    flush_timeout: float = Field(
        5.0,
        ge=0,
        le=MAX_FLUSH_TIMEOUT_SECONDS,
        json_schema_extra={
            "why": f"the unit's stop budget TimeoutStopSec={STOP_BUDGET_SECONDS:g}s "
            f"minus {SHUTDOWN_RESERVE_SECONDS:g} s for the rest of the shutdown"
        },
    )
    reconnect_min_delay: float = Field(1.0, gt=0, le=3600)
    reconnect_max_delay: float = Field(60.0, gt=0, le=3600)
    queue_bytes: int = Field(4 * 1024 * 1024, ge=65_536, le=64 * 1024 * 1024)

    @model_validator(mode="before")
    @classmethod
    def _default_port(cls, data: Any) -> Any:
        # A default_factory taking the validated data could do it, if tls came before port:
        # that would change which error a document with several is refused with.
        if isinstance(data, dict) and "port" not in data:
            data = {**data, "port": 8883 if data.get("tls") is True else 1883}
        return data

    @field_validator("host")
    @classmethod
    def _is_host(cls, value: str) -> str:
        if not is_host(value):
            raise ValueError("not a host")
        return value

    @field_validator("protocol", mode="before")
    @classmethod
    def _integer_five(cls, value: Any) -> Any:
        return "5" if type(value) is int and value == 5 else value  # TOML users write 5

    @field_validator("topic_prefix")
    @classmethod
    def _substitute_device_id(cls, value: str, info: ValidationInfo) -> str:
        if re.search(r"[{}]", value.replace(DEVICE_ID_PLACEHOLDER, "")):
            raise refuse(f"only the placeholder {DEVICE_ID_PLACEHOLDER}")
        prefix = value.replace(DEVICE_ID_PLACEHOLDER, info.context["device_id"])
        if not is_valid_topic_prefix(prefix):
            raise ValueError("not a topic")
        return prefix

    @model_validator(mode="wrap")
    @classmethod
    def _across_keys(cls, data: Any, handler: Any, info: ValidationInfo) -> Any:
        mqtt = handler(data)
        password_file = common.check_mqtt(mqtt, data, info.context["environ"])
        return mqtt.model_copy(update={"password_file": password_file})


def _has_area(points: list[list[float]]) -> list[list[float]]:
    if not common.has_area(points):
        raise refuse(common.POLYGON_AREA_ALLOWED)
    return points


Coordinate = Annotated[float, Field(ge=0, le=1)]
Point = Annotated[list[Coordinate], Field(min_length=2, max_length=2)]
Polygon = Annotated[list[Point], Field(min_length=3, max_length=MAX_POLYGON_POINTS), AfterValidator(_has_area)]


class ZoneSection(BaseModel):
    model_config = STRICT

    name: str = Field(pattern=r"^[a-z0-9_]{1,32}$")
    polygon: Polygon


class SceneSection(BaseModel):
    model_config = STRICT

    masks: list[Polygon] = Field([], max_length=MAX_MASKS)
    min_face_size: float = Field(0.0, ge=0, le=MAX_FACE_SIZE)
    max_face_size: float | None = Field(None, gt=0, le=MAX_FACE_SIZE)
    zones: list[ZoneSection] = Field([], max_length=MAX_ZONES)

    @model_validator(mode="wrap")
    @classmethod
    def _across_keys(cls, data: Any, handler: Any) -> Any:
        scene = handler(data)
        if scene.max_face_size is not None and not scene.min_face_size < scene.max_face_size:
            raise ConfigError(
                "scene.max_face_size",
                data["max_face_size"],  # as written: pydantic made an integer a float
                f"a number of pixels above scene.min_face_size ({scene.min_face_size:g}) and at most {MAX_FACE_SIZE}",
            )
        names = [zone.name for zone in scene.zones]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise ConfigError(f"scene.zones[{index}].name", name, "a name no other zone has")
        return scene


# --- the loader: one place, in section order ---------------------------------------------------

PORTED = {"device": DeviceSection, "camera": CameraSection, "mqtt": MqttSection, "scene": SceneSection}


def load(data: dict[str, Any], base_dir: Path, environ: Mapping[str, str], hostname: str | None) -> dict[str, Any]:
    known = [*SECTIONS, *OPTION_SECTIONS]
    for name, value in data.items():
        if name not in known:
            raise ConfigError(name, common.UNKNOWN_KEY, "unknown section" + common.did_you_mean(name, known))
        if not isinstance(value, dict):
            raise ConfigError(name, value, "a table: write it as [" + name + "]")
    context: dict[str, Any] = {"base_dir": base_dir, "environ": environ, "hostname": hostname, "device_id": ""}
    sections = {}
    for name, model in PORTED.items():
        sections[name] = validate(model, name, data.get(name, {}), context)
        if name == "device":
            context["device_id"] = sections[name].id
    return sections
