"""The model file format: the one definition of the sidecar ``.json`` written beside every
edge-face ``.tflite``. ``tools.quantize`` writes it with :func:`sidecar_document` and
:func:`encode`; ``edge.detect.model`` reads it with :func:`read_sidecar`, which checks every field.

A sidecar (format ``edge-face-model/2``) holds::

    format, model_id, model_file
    input        width, height, channels (3), channel_order (RGB|BGR), layout (NHWC),
                 dtype (int8), scale (1/128), zero_point (-1)
    outputs      logits (1, N, 2) and regressions (1, N, 4): shape, scale, zero_point, index, name
    priors       input_width, input_height, strides, min_boxes, center_variance, size_variance
    source, calibration, parity, converter     provenance: how the model was built
    tflite_sha256     sha256 of the .tflite bytes
    sidecar_sha256    sha256 of the canonical JSON of every other field (tflite_sha256 included)

The face-recognition models (:mod:`edge.recognize`) use the same format with a ``kind``
(the detector's sidecar has none)::

    format, kind (face-landmarks | face-embedding), model_id, model_file
    model        what the file holds, checked per kind (see parse_recognition_sidecar)
    source, converter     provenance: the pinned wheel, the file read from it, the tools
    model_sha256      sha256 of the model file's bytes (.npz or .tflite)
    sidecar_sha256    as below

Integrity. ``tflite_sha256`` catches a truncated, corrupt or swapped ``.tflite``;
``sidecar_sha256`` catches an edited sidecar: a changed center_variance or min_boxes still
parses and would shift every box silently. Because the digest covers ``tflite_sha256``, a
sidecar is bound to the bytes of exactly one model. The canonical JSON is over values
(sorted keys, no whitespace), so re-indenting a sidecar is harmless and changing a value is
not. This protects against accidents and stale files (a hand edit, a copy from another build,
a half-finished deploy), not against an attacker who can write both files: anyone can
recompute a sha256. Provenance fields are covered by the digest too, so they stay truthful.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.detect.decode import QuantParams
from edge.detect.priors import PriorConfig

SIDECAR_FORMAT = "edge-face-model/2"
CHANNEL_ORDERS = ("RGB", "BGR")
# (p - 127) / 128 is exactly int8 with scale 1/128 and zero point -1 when q = p XOR 0x80:
# the device writes pixels into the input tensor with no arithmetic (edge.detect.preprocess).
INPUT_QUANT = QuantParams(scale=1.0 / 128.0, zero_point=-1)
# Last axis of each output head: [background, face] logits and [dx, dy, dw, dh] regressions.
OUTPUT_WIDTHS = {"logits": 2, "regressions": 4}
# A sidecar is a few KiB; refusing anything far larger keeps a wrong file from filling memory.
MAX_SIDECAR_BYTES = 1 << 20
INT8_RANGE = (-128, 127)
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ModelError(Exception):
    """A model file that cannot be used; the message is one line naming the file and the problem."""


@dataclass(frozen=True)
class OutputHead:
    """One int8 output tensor as the interpreter reports it."""

    shape: tuple[int, ...]
    quant: QuantParams
    index: int
    name: str


@dataclass(frozen=True)
class ModelInfo:
    """What a checked sidecar says about one model."""

    model_id: str
    input_width: int
    input_height: int
    channel_order: str
    prior_config: PriorConfig
    logits_quant: QuantParams
    regressions_quant: QuantParams
    tflite_sha256: str
    sidecar: dict[str, Any]

    @property
    def num_priors(self) -> int:
        return self.prior_config.num_priors


# --- writing ------------------------------------------------------------------------------


def canonical_digest(document: dict[str, Any]) -> str:
    """sha256 of ``document`` without its ``sidecar_sha256``, as sorted, compact JSON."""
    fields = {key: value for key, value in document.items() if key != "sidecar_sha256"}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def sidecar_document(
    *,
    model_id: str,
    model_file: str,
    prior_config: PriorConfig,
    logits: OutputHead,
    regressions: OutputHead,
    provenance: dict[str, Any],
    tflite_sha256: str,
    channel_order: str = "RGB",
) -> dict[str, Any]:
    """The sealed sidecar of one model (key order as written); ``provenance`` holds the
    ``source``, ``calibration``, ``parity`` and ``converter`` sections."""

    def head(tensor: OutputHead) -> dict[str, Any]:
        return {
            "shape": list(tensor.shape),
            "scale": tensor.quant.scale,
            "zero_point": tensor.quant.zero_point,
            "index": tensor.index,
            "name": tensor.name,
        }

    document: dict[str, Any] = {
        "format": SIDECAR_FORMAT,
        "model_id": model_id,
        "model_file": model_file,
        "input": {
            "width": prior_config.input_width,
            "height": prior_config.input_height,
            "channels": 3,
            "channel_order": channel_order,
            "layout": "NHWC",
            "dtype": "int8",
            "scale": INPUT_QUANT.scale,
            "zero_point": INPUT_QUANT.zero_point,
        },
        "outputs": {"logits": head(logits), "regressions": head(regressions)},
        "priors": prior_config.to_dict(),
        **{key: provenance[key] for key in ("source", "calibration", "parity", "converter")},
        "tflite_sha256": tflite_sha256,
    }
    document["sidecar_sha256"] = canonical_digest(document)
    return document


def encode(document: dict[str, Any]) -> bytes:
    """The sidecar file's bytes: indented JSON, one trailing newline (stable for a build)."""
    return (json.dumps(document, indent=2, allow_nan=False) + "\n").encode("utf-8")


# --- reading ------------------------------------------------------------------------------


class _Fields:
    """Typed access to one JSON object; every failure is a ModelError naming the field."""

    def __init__(self, data: Any, where: str, path: str) -> None:
        if not isinstance(data, dict):
            raise ModelError(f"{where}: {path or 'the document'} must be a JSON object, got {_kind(data)}")
        self.data, self.where, self.path = data, where, path

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, problem: str) -> ModelError:
        return ModelError(f"{self.where}: {self._name(key)} {problem}")

    def get(self, key: str) -> Any:
        if key not in self.data:
            raise self.error(key, "is missing")
        return self.data[key]

    def obj(self, key: str) -> _Fields:
        return _Fields(self.get(key), self.where, self._name(key))

    def string(self, key: str, allowed: tuple[str, ...] | None = None) -> str:
        value = self.get(key)
        if not isinstance(value, str) or not value:
            raise self.error(key, f"must be a non-empty string, got {_shown(value)}")
        if allowed is not None and value not in allowed:
            raise self.error(key, f"is {value!r}, expected one of {', '.join(allowed)}")
        return value

    def integer(self, key: str, low: int | None = None, high: int | None = None) -> int:
        return _integer(self.get(key), lambda problem: self.error(key, problem), low, high)

    def positive_float(self, key: str) -> float:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise self.error(key, f"must be a finite number > 0, got {_shown(value)}")
        return float(value)

    def integer_list(self, key: str, low: int) -> tuple[int, ...]:
        value = self.get(key)
        if not isinstance(value, list) or not value:
            raise self.error(key, f"must be a non-empty list of integers, got {_shown(value)}")
        return tuple(_integer(item, self._item_error(key, i), low, None) for i, item in enumerate(value))

    def _item_error(self, key: str, index: int) -> Callable[[str], ModelError]:
        return lambda problem: self.error(f"{key}[{index}]", problem)

    def sha256(self, key: str) -> str:
        value = self.get(key)
        if not isinstance(value, str) or not _SHA256.fullmatch(value):
            raise self.error(key, f"must be 64 lowercase hex digits, got {_shown(value)}")
        return value


def _integer(value: Any, error: Callable[[str], ModelError], low: int | None, high: int | None) -> int:
    # bool is an int in Python; true/false in JSON is not a number.
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"must be an integer, got {_shown(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise error(f"must be {bounds}, got {value}")
    return value


def _kind(value: Any) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


def _shown(value: Any) -> str:
    """A short rendering of a wrong value for an error line: containers by kind only."""
    if isinstance(value, (dict, list)):
        return _kind(value)
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _priors(fields: _Fields, width: int, height: int) -> PriorConfig:
    strides = fields.integer_list("strides", low=1)
    levels = fields.get("min_boxes")
    if not isinstance(levels, list) or len(levels) != len(strides):
        problem = f"must be a list of {len(strides)} lists (one per stride), got {_shown(levels)}"
        raise fields.error("min_boxes", problem)
    min_boxes = tuple(
        _Fields({"level": level}, fields.where, f"{fields.path}.min_boxes[{i}]").integer_list("level", low=1)
        for i, level in enumerate(levels)
    )
    for key, expected in (("input_width", width), ("input_height", height)):
        if fields.integer(key, low=1) != expected:
            raise fields.error(key, f"is {fields.get(key)}, but the input is {width}x{height}")
    return PriorConfig(
        input_width=width,
        input_height=height,
        strides=strides,
        min_boxes=min_boxes,
        center_variance=fields.positive_float("center_variance"),
        size_variance=fields.positive_float("size_variance"),
    )


def _head(outputs: _Fields, key: str, num_priors: int) -> QuantParams:
    head = outputs.obj(key)
    shape = head.integer_list("shape", low=1)
    expected = (1, num_priors, OUTPUT_WIDTHS[key])
    if shape != expected:
        raise head.error("shape", f"is {list(shape)}, expected {list(expected)} for {num_priors} priors")
    head.integer("index", low=0)
    head.string("name")
    return QuantParams(head.positive_float("scale"), head.integer("zero_point", *INT8_RANGE))


def _check_seal(fields: _Fields, data: Any, digest_key: str, tool: str) -> str:
    """The format and the sidecar_sha256 seal of any sidecar; returns its ``digest_key`` (the
    model file's sha256)."""
    found = fields.get("format")
    if found != SIDECAR_FORMAT:
        problem = f"is {_shown(found)}, expected {SIDECAR_FORMAT!r} (rebuild with python -m {tool})"
        raise fields.error("format", problem)
    model_sha256 = fields.sha256(digest_key)
    recorded = fields.sha256("sidecar_sha256")
    if canonical_digest(data) != recorded:
        raise ModelError(
            f"{fields.where}: sidecar_sha256 does not match the sidecar's content: it was edited after the build "
            f"(rebuild with python -m {tool} instead of editing it)"
        )
    return model_sha256


def parse_sidecar(data: Any, where: str) -> ModelInfo:
    """Check every field of a decoded sidecar; raises ModelError (one line naming ``where``
    and the field) for a wrong format, a missing key, a wrong type or an impossible value."""
    fields = _Fields(data, where, "")
    if "kind" in data:
        raise ModelError(f"{where}: is a {_shown(data['kind'])} model, not the face detector")
    tflite_sha256 = _check_seal(fields, data, "tflite_sha256", "tools.quantize")
    inp = fields.obj("input")
    width, height = inp.integer("width", low=1), inp.integer("height", low=1)
    if inp.integer("channels") != 3:
        raise inp.error("channels", f"is {inp.get('channels')}, expected 3")
    for key, expected in (("layout", "NHWC"), ("dtype", "int8")):
        inp.string(key, allowed=(expected,))
    input_quant = QuantParams(inp.positive_float("scale"), inp.integer("zero_point", *INT8_RANGE))
    if input_quant != INPUT_QUANT:
        raise inp.error("scale", f"and zero_point are {input_quant}, expected {INPUT_QUANT} (pixel XOR 0x80)")
    prior_config = _priors(fields.obj("priors"), width, height)
    outputs = fields.obj("outputs")
    logits_quant = _head(outputs, "logits", prior_config.num_priors)
    regressions_quant = _head(outputs, "regressions", prior_config.num_priors)
    for section in ("source", "calibration", "parity", "converter"):
        fields.obj(section)
    fields.obj("source").sha256("sha256")
    fields.obj("calibration").integer("images", low=1)
    return ModelInfo(
        model_id=fields.string("model_id"),
        input_width=width,
        input_height=height,
        channel_order=inp.string("channel_order", allowed=CHANNEL_ORDERS),
        prior_config=prior_config,
        logits_quant=logits_quant,
        regressions_quant=regressions_quant,
        tflite_sha256=tflite_sha256,
        sidecar=data,
    )


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"key {repeated[0]!r} appears twice")
    return dict(pairs)


def sidecar_path(model_path: Path) -> Path:
    """The sidecar of ``model_path``: same folder, same stem, ``.json``."""
    return model_path.with_suffix(".json")


def read_sidecar(model_path: Path) -> ModelInfo:
    """Read and check the sidecar of ``model_path``; raises ModelError (one line)."""
    data, where = _read_document(model_path, "tools.quantize")
    return parse_sidecar(data, where)


def _read_document(model_path: Path, tool: str) -> tuple[Any, str]:
    """The decoded JSON of ``model_path``'s sidecar and the name errors give it."""
    path = sidecar_path(model_path)
    where = f"model sidecar '{path}'"
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_SIDECAR_BYTES + 1)
    except FileNotFoundError:
        raise ModelError(
            f"model '{model_path}': sidecar '{path}' is missing (it is written beside the model by {tool})"
        ) from None
    except OSError as exc:
        raise ModelError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    if len(raw) > MAX_SIDECAR_BYTES:
        raise ModelError(f"{where}: larger than {MAX_SIDECAR_BYTES} bytes, not a sidecar")
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ModelError(f"{where}: unreadable JSON ({exc})") from None
    return data, where


# --- the face-recognition models -------------------------------------------------------------

LANDMARKS_KIND = "face-landmarks"
EMBEDDING_KIND = "face-embedding"
RECOGNITION_TOOL = "tools.recognize_build"


@dataclass(frozen=True)
class BoxMapping:
    """How a detector box becomes the box the shape predictor was trained on, as fractions of
    the detector box's width w and height h: the centre moves by (center_x * w, center_y * h)
    and the box becomes (width * w) x (height * h)."""

    center_x: float
    center_y: float
    width: float
    height: float


@dataclass(frozen=True)
class LandmarkModelInfo:
    """A checked face-landmarks sidecar: the tree ensemble's sizes and the box mapping."""

    model_id: str
    model_sha256: str
    landmarks: int
    stages: int
    trees: int
    depth: int
    features: int
    box_mapping: BoxMapping
    sidecar: dict[str, Any]


@dataclass(frozen=True)
class EmbeddingModelInfo:
    """A checked face-embedding sidecar: the chip it takes and the descriptor it gives."""

    model_id: str
    model_sha256: str
    chip_size: int
    chip_padding: float
    dimensions: int
    match_threshold: float
    weight_format: str
    sidecar: dict[str, Any]


def recognition_sidecar_document(
    *, kind: str, model_id: str, model_file: str, model: dict[str, Any], provenance: dict[str, Any], model_sha256: str
) -> dict[str, Any]:
    """The sealed sidecar of a face-recognition model; ``provenance`` holds ``source`` and
    ``converter`` and any checks the build made; ``model`` is what
    :func:`parse_recognition_sidecar` checks for ``kind``."""
    document: dict[str, Any] = {
        "format": SIDECAR_FORMAT,
        "kind": kind,
        "model_id": model_id,
        "model_file": model_file,
        "model": model,
        "source": provenance["source"],
        "converter": provenance["converter"],
        **{key: value for key, value in provenance.items() if key not in ("source", "converter")},
        "model_sha256": model_sha256,
    }
    document["sidecar_sha256"] = canonical_digest(document)
    return document


def _fraction(fields: _Fields, key: str, low: float, high: float) -> float:
    value = fields.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise fields.error(key, f"must be a number in [{low}, {high}], got {_shown(value)}")
    return float(value)


def parse_recognition_sidecar(data: Any, where: str, kind: str) -> LandmarkModelInfo | EmbeddingModelInfo:
    """Check a face-recognition sidecar of ``kind``; raises ModelError (one line)."""
    fields = _Fields(data, where, "")
    found = fields.string("kind")
    if found != kind:
        raise fields.error("kind", f"is {found!r}, expected {kind!r}")
    model_sha256 = _check_seal(fields, data, "model_sha256", RECOGNITION_TOOL)
    fields.string("model_file")
    for section in ("source", "converter"):
        fields.obj(section)
    fields.obj("source").sha256("sha256")
    model = fields.obj("model")
    if kind == LANDMARKS_KIND:
        mapping = model.obj("box_mapping")
        return LandmarkModelInfo(
            model_id=fields.string("model_id"),
            model_sha256=model_sha256,
            landmarks=model.integer("landmarks", low=5, high=5),
            stages=model.integer("stages", low=1),
            trees=model.integer("trees", low=1),
            depth=model.integer("depth", low=1, high=16),
            features=model.integer("features", low=1),
            box_mapping=BoxMapping(
                center_x=_fraction(mapping, "center_x", -1.0, 1.0),
                center_y=_fraction(mapping, "center_y", -1.0, 1.0),
                width=_fraction(mapping, "width", 0.1, 10.0),
                height=_fraction(mapping, "height", 0.1, 10.0),
            ),
            sidecar=data,
        )
    return EmbeddingModelInfo(
        model_id=fields.string("model_id"),
        model_sha256=model_sha256,
        chip_size=model.integer("chip_size", low=1),
        chip_padding=_fraction(model, "chip_padding", 0.0, 10.0),
        dimensions=model.integer("dimensions", low=1),
        match_threshold=model.positive_float("match_threshold"),
        weight_format=model.string("weight_format"),
        sidecar=data,
    )


def read_recognition_sidecar(model_path: Path, kind: str) -> LandmarkModelInfo | EmbeddingModelInfo:
    """Read and check the sidecar of a face-recognition model file, and that the file's
    sha256 is the one it records; raises ModelError (one line)."""
    data, where = _read_document(model_path, RECOGNITION_TOOL)
    info = parse_recognition_sidecar(data, where, kind)
    check_file_sha256(model_path, info.model_sha256)
    return info


def check_file_sha256(model_path: Path, expected: str) -> None:
    """Raise ModelError unless ``model_path``'s bytes have sha256 ``expected``."""
    try:
        actual = hashlib.sha256(Path(model_path).read_bytes()).hexdigest()
    except OSError as exc:
        raise ModelError(f"model '{model_path}': cannot be read ({exc.strerror or exc})") from None
    if actual != expected:
        raise ModelError(
            f"model '{model_path}': sha256 {actual} does not match its sidecar ({expected}); "
            "the file is corrupt or from another build"
        )
