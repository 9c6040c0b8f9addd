"""The int8 TFLite model: interpreter loading, sidecar metadata, one invoke.

An edge-face model is a ``.tflite`` file plus a sidecar ``.json`` written by
``tools/quantize.py`` (same stem). The sidecar says how to read the graph: input size and
channel order, prior layout, output quantization and the model's sha256, which is checked at
load time so a truncated copy or a mismatched pair is caught before the first frame.

Interpreter packages, tried in this order (``EDGE_FACE_INTERPRETER`` or the ``interpreter``
argument pins one): ``ai_edge_litert`` (LiteRT, the maintained successor, fast int8 kernels
via XNNPACK), ``tflite_runtime`` (2.14, the last release; needs numpy<2), ``tensorflow.lite``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.decode import QuantParams
from edge.priors import PriorConfig

SIDECAR_FORMAT = "edge-face-model/1"
INTERPRETER_MODULES = {
    "ai_edge_litert": "ai_edge_litert.interpreter",
    "tflite_runtime": "tflite_runtime.interpreter",
    "tensorflow": "tensorflow.lite",
}
# (p - 127) / 128 is exactly int8 with scale 1/128 and zero point -1 when q = p XOR 0x80.
INPUT_QUANT = QuantParams(scale=1.0 / 128.0, zero_point=-1)

__all__ = ["ModelError", "ModelInfo", "Int8Model", "QuantParams", "load_interpreter_class"]


class ModelError(Exception):
    """A model file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class ModelInfo:
    """What the sidecar says about one model."""

    model_id: str
    input_width: int
    input_height: int
    channel_order: str
    prior_config: PriorConfig
    logits_quant: QuantParams
    regressions_quant: QuantParams
    tflite_sha256: str
    sidecar: dict

    @classmethod
    def from_sidecar(cls, data: dict, where: str) -> "ModelInfo":
        if not isinstance(data, dict):
            raise ModelError(f"{where}: not a JSON object (found {type(data).__name__})")
        try:
            if data.get("format") != SIDECAR_FORMAT:
                raise ModelError(f"{where}: format {data.get('format')!r} is not {SIDECAR_FORMAT!r}")
            inp, outs = data["input"], data["outputs"]
            priors = PriorConfig.from_dict(data["priors"])
            if not all(isinstance(s, int) and s > 0 for s in priors.strides) or priors.num_priors < 1:
                raise ValueError(f"priors.strides {list(priors.strides)} must be positive integers")
            return cls(
                model_id=str(data["model_id"]),
                input_width=int(inp["width"]),
                input_height=int(inp["height"]),
                channel_order=str(inp["channel_order"]),
                prior_config=priors,
                logits_quant=QuantParams(float(outs["logits"]["scale"]), int(outs["logits"]["zero_point"])),
                regressions_quant=QuantParams(
                    float(outs["regressions"]["scale"]), int(outs["regressions"]["zero_point"])
                ),
                tflite_sha256=str(data["tflite_sha256"]),
                sidecar=data,
            )
        except (KeyError, TypeError, ValueError, AttributeError, ZeroDivisionError) as exc:
            raise ModelError(f"{where}: missing or invalid field ({exc!r})") from None


def load_interpreter_class(preferred: str | None = None) -> tuple[type, str]:
    """Return (Interpreter class, package name) of the first interpreter that imports.

    ``preferred`` (or ``$EDGE_FACE_INTERPRETER``) is one of ``INTERPRETER_MODULES``' keys and
    allows no fallback: asking for tflite_runtime and silently getting another would make a
    benchmark or a parity check lie.
    """
    preferred = preferred or os.environ.get("EDGE_FACE_INTERPRETER") or None
    if preferred is not None and preferred not in INTERPRETER_MODULES:
        raise ModelError(
            f"interpreter {preferred!r} is unknown (allowed: {', '.join(INTERPRETER_MODULES)})"
        )
    names = [preferred] if preferred else list(INTERPRETER_MODULES)
    failures = []
    for name in names:
        try:
            module = importlib.import_module(INTERPRETER_MODULES[name])
        except ImportError as exc:
            failures.append(f"{name}: {exc}")
            continue
        return module.Interpreter, name
    raise ModelError(
        "no TFLite interpreter could be imported (" + "; ".join(failures) + "); "
        "install ai-edge-litert, or tflite-runtime with numpy<2"
    )


def sidecar_path(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


def _tensor_quant(detail: dict) -> QuantParams:
    scale, zero_point = detail["quantization"]
    return QuantParams(float(scale), int(zero_point))


class Int8Model:
    """One loaded int8 model and its interpreter; not thread-safe (one invoke at a time).

    The input tensor is written in place (:meth:`input_pixels`), the outputs are copied out
    by :meth:`invoke`, so a caller never holds a view into the interpreter's memory across
    invokes (which the interpreter forbids).
    """

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None, interpreter: str | None = None):
        self.path = Path(path)
        self.info = self._read_sidecar()
        self._check_sha256()
        interpreter_class, self.interpreter_name = load_interpreter_class(interpreter)
        try:
            self._interpreter = interpreter_class(model_path=str(self.path), num_threads=num_threads)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"model '{self.path}': not a loadable TFLite model ({exc})") from None
        self._input_index = self._check_input()
        self._logits_index, self._regressions_index = self._check_outputs()

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) the model takes."""
        return self.info.input_width, self.info.input_height

    def _read_sidecar(self) -> ModelInfo:
        if not self.path.is_file():
            raise ModelError(f"model '{self.path}': no such file (build it with: python -m tools.quantize)")
        meta = sidecar_path(self.path)
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(
                f"model '{self.path}': sidecar '{meta}' is missing (it is written beside the .tflite by tools.quantize)"
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"model sidecar '{meta}': unreadable JSON ({exc})") from None
        return ModelInfo.from_sidecar(data, f"model sidecar '{meta}'")

    def _check_sha256(self) -> None:
        actual = hashlib.sha256(self.path.read_bytes()).hexdigest()
        if actual != self.info.tflite_sha256:
            raise ModelError(
                f"model '{self.path}': sha256 {actual} does not match its sidecar "
                f"({self.info.tflite_sha256}); the file is corrupt or from another build"
            )

    def _check_input(self) -> int:
        details = self._interpreter.get_input_details()
        expected_shape = (1, self.info.input_height, self.info.input_width, 3)
        if len(details) != 1:
            raise ModelError(f"model '{self.path}': has {len(details)} inputs, expected 1")
        detail = details[0]
        problems = []
        if tuple(detail["shape"]) != expected_shape:
            problems.append(f"shape {tuple(detail['shape'])} (expected {expected_shape})")
        if detail["dtype"] != np.int8:
            problems.append(f"dtype {np.dtype(detail['dtype']).name} (expected int8)")
        elif _tensor_quant(detail) != INPUT_QUANT:
            problems.append(f"quantization {_tensor_quant(detail)} (expected {INPUT_QUANT})")
        if problems:
            raise ModelError(f"model '{self.path}': input " + ", ".join(problems) + "; not an edge-face int8 model")
        return detail["index"]

    def _check_outputs(self) -> tuple[int, int]:
        num_priors = self.info.prior_config.num_priors
        by_width = {}
        for detail in self._interpreter.get_output_details():
            shape = tuple(detail["shape"])
            if len(shape) == 3 and shape[:2] == (1, num_priors) and detail["dtype"] == np.int8:
                by_width[shape[2]] = detail
        if set(by_width) != {2, 4} or len(self._interpreter.get_output_details()) != 2:
            found = [
                (tuple(d["shape"]), np.dtype(d["dtype"]).name) for d in self._interpreter.get_output_details()
            ]
            raise ModelError(
                f"model '{self.path}': outputs {found}; expected int8 (1, {num_priors}, 2) logits "
                f"and (1, {num_priors}, 4) regressions"
            )
        for name, detail, expected in (
            ("logits", by_width[2], self.info.logits_quant),
            ("regressions", by_width[4], self.info.regressions_quant),
        ):
            actual = _tensor_quant(detail)
            if not np.isclose(actual.scale, expected.scale, rtol=1e-6) or actual.zero_point != expected.zero_point:
                raise ModelError(
                    f"model '{self.path}': {name} quantization {actual} differs from the sidecar's {expected}"
                )
        return by_width[2]["index"], by_width[4]["index"]

    def input_pixels(self) -> np.ndarray:
        """A (H, W, 3) uint8 view of the input tensor: write ``pixel ^ 0x80`` into it.

        Drop the view before :meth:`invoke`; the interpreter refuses to run while one is held.
        """
        return self._interpreter.tensor(self._input_index)()[0].view(np.uint8)

    def invoke(self) -> tuple[np.ndarray, np.ndarray]:
        """Run the graph on the current input; returns copies of
        (logits (N, 2) int8 [background, face], regressions (N, 4) int8)."""
        self._interpreter.invoke()
        return (
            self._interpreter.get_tensor(self._logits_index)[0],
            self._interpreter.get_tensor(self._regressions_index)[0],
        )
