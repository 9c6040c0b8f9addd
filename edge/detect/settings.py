"""The ``[detector]`` section: which model, its input size, thresholds, interpreter threads.

Declared here, beside the detector it configures, and read by edge.config. Numpy-free and
importing only rank 0 (edge.common, edge.models), like every ``settings`` module.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.common.config_rules import (
    MAX_CONFIG_BYTES,
    Choice,
    ConfigContext,
    ConfigError,
    FilePath,
    Integer,
    Invalid,
    KeySection,
    Number,
    key,
    key_rule,
    path_problem,
    quote_path,
)
from edge.common.files import read_bounded
from edge.models import DEFAULT_INPUT, INPUT_PROFILES, PACKAGED_MODELS, packaged_model_path
from edge.models import PACKAGED_MODEL_PATH as DEFAULT_MODEL_PATH  # the model inside the package


@dataclass(frozen=True)
class DetectorConfig:
    """``input`` chooses the packaged model of that input size (see edge.models); ``model``
    overrides it, and then ``input``, when written, must be the model's own size."""

    input: str = key(Choice(INPUT_PROFILES), DEFAULT_INPUT)
    model: Path = key(FilePath("file"), DEFAULT_MODEL_PATH)
    score_threshold: float = key(Number(0.0, 1.0, exclusive_minimum=True, exclusive_maximum=True), 0.7)
    iou_threshold: float = key(Number(0.0, 1.0, exclusive_minimum=True, exclusive_maximum=True), 0.3)
    num_threads: int | None = key(Integer(1, 64), None)


def _sidecar_input(sidecar: Path) -> str | None:
    """The "WxH" input size a model's sidecar states; None where it cannot say (an unreadable
    or malformed sidecar is the model loader's error, with its own message)."""
    try:
        section = json.loads(read_bounded(sidecar, MAX_CONFIG_BYTES))["input"]
        return f"{int(section['width'])}x{int(section['height'])}"
    except (OSError, ValueError, KeyError, TypeError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None


def check_detector(detector: DetectorConfig, table: dict[str, Any], context: ConfigContext) -> DetectorConfig:
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


def _sidecar_is_readable(detector: DetectorConfig, table: dict[str, Any], context: ConfigContext) -> DetectorConfig:
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


DETECTOR_SECTION = KeySection(DetectorConfig, check=check_detector)
