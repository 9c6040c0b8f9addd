"""[device], [camera], [mqtt] and [scene] of edge.config declared with pydantic v2.

Types, limits, choices, defaults and unknown keys are pydantic's (strict mode: no "1883"
for an integer, no 1 for true); the allowed text of an error is derived from the field's
constraints (or its description, where a constraint cannot say it in words). What the
schema cannot say (paths against the config's folder, {device_id}, derived defaults, rules
across keys, the scene's own error wording) is validators and the error translation below.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

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
    ConfigError,
    is_host,
)
from edge.scene.rules import MAX_FACE_SIZE, MAX_MASKS, MAX_POLYGON_POINTS, MAX_ZONES
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
    bounds = {
        attr: getattr(item, attr) for item in info.metadata for attr in ("ge", "gt", "le", "lt") if hasattr(item, attr)
    }
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    why = extra.get("why")
    return common.allowed_text(common.without_none(info.annotation), bounds, None if why is None else str(why))


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
    """A pydantic error in [scene] as edge.scene.rules words it (key paths like scene.zones[0].polygon[2])."""
    loc, kind = error["loc"], error["type"]
    if kind == "refused":
        return ConfigError(common.scene_key(loc), common.lookup(table, loc), error["ctx"]["allowed"])
    kinds = {"extra_forbidden": "unknown", "missing": "missing", "too_long": "too_long", "float_type": "not_a_number"}
    return common.scene_error(kinds.get(kind, "other"), loc, table, SceneSection.model_fields)


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
    def _across_keys(self, info: ValidationInfo) -> CameraSection:
        common.check_camera(self, info.context)
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
        description=common.TOPIC_PREFIX_ALLOWED,
    )
    keepalive: int = Field(30, ge=5, le=65535)
    queue_size: int = Field(1000, ge=1, le=100_000)
    flush_timeout: float = Field(
        5.0,
        ge=0,
        le=MAX_FLUSH_TIMEOUT_SECONDS,
        json_schema_extra={"why": common.FLUSH_TIMEOUT_WHY},
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
        return common.substitute_device_id(value, info.context["device_id"])

    @model_validator(mode="wrap")
    @classmethod
    def _across_keys(cls, data: Any, handler: Any, info: ValidationInfo) -> Any:
        mqtt = handler(data)
        password_file = common.check_mqtt(mqtt, data, info.context)
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
        common.check_scene(scene, data)
        return scene


# --- the loader: one place, in section order ---------------------------------------------------

PORTED = {"device": DeviceSection, "camera": CameraSection, "mqtt": MqttSection, "scene": SceneSection}


def load(data: dict[str, Any], base_dir: Path, environ: Mapping[str, str], hostname: str | None) -> dict[str, Any]:
    common.check_sections(data)
    context = common.new_context(base_dir, environ, hostname)
    sections = {}
    for name, model in PORTED.items():
        sections[name] = validate(model, name, data.get(name, {}), context)
        if name == "device":
            context["device_id"] = sections[name].id
    return sections
