"""The home-made framework (edge.config) behind the ports' interface: the baseline they are
measured and compared against."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge.config import parse_config

# The sections the ports declare; the reference parses the whole file and keeps these.
PORTED_SECTIONS = ("device", "camera", "mqtt", "scene")
# parse_config checks [detector] model too: the bench puts a stand-in model file here.
MODEL_NAME = "model.tflite"


def load(data: dict[str, Any], base_dir: Path, environ: Mapping[str, str], hostname: str) -> dict[str, Any]:
    data = {**data, "detector": {"model": str(base_dir / MODEL_NAME)}}
    config = parse_config(data, base_dir=base_dir, environ=environ, hostname=hostname)
    return {name: plain(getattr(config, name)) for name in PORTED_SECTIONS}


def plain(value: Any) -> Any:
    """A parsed section as comparable plain values: dataclasses and structs as dicts,
    paths as strings, polygons as their points, sequences as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if hasattr(value, "points") and hasattr(value, "vertices"):  # edge.scene.rules.Polygon
            return plain(value.points)
        return {item.name: plain(getattr(value, item.name)) for item in dataclasses.fields(value)}
    if hasattr(value, "__struct_fields__"):  # msgspec.Struct
        return {name: plain(getattr(value, name)) for name in value.__struct_fields__}
    if hasattr(value, "model_fields") and hasattr(value, "model_dump"):  # pydantic.BaseModel
        return {name: plain(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # a scene size kept as written (1) equals one made a float (1.0)
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value
