"""The int8 TFLite model: interpreter loading, its sidecar, one invoke.

An edge-face model is a ``.tflite`` file plus a sidecar ``.json`` written by
``tools.quantize`` (same stem); :mod:`edge.detect.sidecar` defines that format and checks every
field. At load time the model's sha256 must match the sidecar, and the interpreter's input
and output tensors must be the ones the sidecar describes, so a truncated copy, a mismatched
pair or an edited sidecar is caught before the first frame.

Interpreter packages, tried in this order (``EDGE_FACE_INTERPRETER`` or the ``interpreter``
argument pins one): ``ai_edge_litert`` (LiteRT, the maintained successor, fast int8 kernels
via XNNPACK), ``tflite_runtime`` (2.14, the last release; needs numpy<2), ``tensorflow.lite``.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.detect.decode import QuantParams
from edge.detect.native_stderr import runtime_info_to_debug
from edge.detect.sidecar import INPUT_QUANT, OUTPUT_WIDTHS, ModelError, ModelInfo, read_sidecar, sidecar_path

INTERPRETER_MODULES = {
    "ai_edge_litert": "ai_edge_litert.interpreter",
    "tflite_runtime": "tflite_runtime.interpreter",
    "tensorflow": "tensorflow.lite",
}

__all__ = [
    "INPUT_QUANT",
    "Int8Model",
    "IoTensors",
    "ModelError",
    "ModelInfo",
    "QuantParams",
    "check_io_tensors",
    "existing_model_file",
    "load_interpreter_class",
    "open_interpreter",
    "sidecar_path",
]


def load_interpreter_class(preferred: str | None = None) -> tuple[type, str]:
    """Return (Interpreter class, package name) of the first interpreter that imports.

    ``preferred`` (or ``$EDGE_FACE_INTERPRETER``) is one of ``INTERPRETER_MODULES``' keys and
    allows no fallback: asking for tflite_runtime and silently getting another would make a
    benchmark or a parity check lie.
    """
    preferred = preferred or os.environ.get("EDGE_FACE_INTERPRETER") or None
    if preferred is not None and preferred not in INTERPRETER_MODULES:
        raise ModelError(f"interpreter {preferred!r} is unknown (allowed: {', '.join(INTERPRETER_MODULES)})")
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


def existing_model_file(path: str | os.PathLike[str], builder: str) -> Path:
    """``path`` as a Path; raises ModelError naming it, and the tool module ``builder`` that
    builds it, when there is no such file."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model '{path}': no such file (build it with: python -m {builder})")
    return path


def open_interpreter(
    path: Path, num_threads: int | None, preferred: str | None, log: logging.Logger
) -> tuple[Any, str]:
    """(allocated interpreter of the ``.tflite`` at ``path``, package name), the package
    chosen as :func:`load_interpreter_class` does. Raises ModelError (one line naming the
    file) when the runtime cannot load it.

    The runtime announces its delegate on stderr ("INFO: Created TensorFlow Lite XNNPACK
    delegate for CPU."): that goes to ``log`` at debug level, not to a user's terminal.
    """
    interpreter_class, name = load_interpreter_class(preferred)
    try:
        with runtime_info_to_debug(log):
            interpreter = interpreter_class(model_path=str(path), num_threads=num_threads)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"model '{path}': not a loadable TFLite model ({exc})") from None
    return interpreter, name


def tensor_quant(detail: dict[str, Any]) -> QuantParams:
    """The (scale, zero point) of one interpreter tensor detail."""
    scale, zero_point = detail["quantization"]
    return QuantParams(float(scale), int(zero_point))


@dataclass(frozen=True)
class IoTensors:
    """The interpreter's details (its dicts) of the int8 input and the two int8 heads."""

    input: dict[str, Any]
    logits: dict[str, Any]
    regressions: dict[str, Any]


def check_io_tensors(interpreter: Any, input_width: int, input_height: int, num_priors: int, where: str) -> IoTensors:
    """The edge-face int8 contract of an allocated interpreter: one (1, H, W, 3) int8 input
    quantized exactly as :data:`edge.detect.sidecar.INPUT_QUANT`, and two int8 outputs, (1, N, 2)
    logits and (1, N, 4) regressions. Raises ModelError (one line, naming ``where``).

    The quantizer checks a fresh build with it and the loader every model it opens.
    """
    inputs = interpreter.get_input_details()
    if len(inputs) != 1:
        raise ModelError(f"{where}: has {len(inputs)} inputs, expected 1")
    detail = inputs[0]
    expected_shape = (1, input_height, input_width, 3)
    problems = []
    if tuple(int(d) for d in detail["shape"]) != expected_shape:
        problems.append(f"shape {tuple(detail['shape'])} (expected {expected_shape})")
    if detail["dtype"] != np.int8:
        problems.append(f"dtype {np.dtype(detail['dtype']).name} (expected int8)")
    elif tensor_quant(detail) != INPUT_QUANT:
        problems.append(f"quantization {tensor_quant(detail)} (expected {INPUT_QUANT})")
    if problems:
        raise ModelError(f"{where}: input " + ", ".join(problems) + "; not an edge-face int8 model")

    outputs = interpreter.get_output_details()
    by_width = {}
    for output in outputs:
        shape = tuple(int(d) for d in output["shape"])
        if len(shape) == 3 and shape[:2] == (1, num_priors) and output["dtype"] == np.int8:
            by_width[shape[2]] = output
    if set(by_width) != set(OUTPUT_WIDTHS.values()) or len(outputs) != len(OUTPUT_WIDTHS):
        found = [(tuple(int(d) for d in o["shape"]), np.dtype(o["dtype"]).name) for o in outputs]
        raise ModelError(
            f"{where}: outputs {found}; expected int8 (1, {num_priors}, 2) logits and (1, {num_priors}, 4) regressions"
        )
    return IoTensors(detail, by_width[OUTPUT_WIDTHS["logits"]], by_width[OUTPUT_WIDTHS["regressions"]])


class Int8Model:
    """One loaded int8 model and its interpreter; not thread-safe (one invoke at a time).

    The input tensor is written in place (:meth:`input_pixels`), the outputs are copied out
    by :meth:`invoke`, so a caller never holds a view into the interpreter's memory across
    invokes (which the interpreter forbids).
    """

    def __init__(
        self, path: str | os.PathLike[str], num_threads: int | None = None, interpreter: str | None = None
    ) -> None:
        self.path = existing_model_file(path, "tools.quantize")
        self.info = read_sidecar(self.path)
        self._check_sha256()
        self._interpreter, self.interpreter_name = open_interpreter(
            self.path, num_threads, interpreter, logging.getLogger("edge.model")
        )
        info, where = self.info, f"model '{self.path}'"
        tensors = check_io_tensors(self._interpreter, info.input_width, info.input_height, info.num_priors, where)
        self._check_output_quant(tensors)
        self._input_index = tensors.input["index"]
        self._logits_index, self._regressions_index = tensors.logits["index"], tensors.regressions["index"]

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) the model takes."""
        return self.info.input_width, self.info.input_height

    def _check_sha256(self) -> None:
        actual = hashlib.sha256(self.path.read_bytes()).hexdigest()
        if actual != self.info.tflite_sha256:
            raise ModelError(
                f"model '{self.path}': sha256 {actual} does not match its sidecar "
                f"({self.info.tflite_sha256}); the file is corrupt or from another build"
            )

    def _check_output_quant(self, tensors: IoTensors) -> None:
        for name, detail, expected in (
            ("logits", tensors.logits, self.info.logits_quant),
            ("regressions", tensors.regressions, self.info.regressions_quant),
        ):
            actual = tensor_quant(detail)
            if not np.isclose(actual.scale, expected.scale, rtol=1e-6) or actual.zero_point != expected.zero_point:
                raise ModelError(
                    f"model '{self.path}': {name} quantization {actual} differs from the sidecar's {expected}"
                )

    def input_pixels(self) -> np.ndarray:
        """A (H, W, 3) uint8 view of the input tensor: write ``pixel ^ 0x80`` into it.

        Drop the view before :meth:`invoke`; the interpreter refuses to run while one is held.
        """
        view: np.ndarray = self._interpreter.tensor(self._input_index)()[0].view(np.uint8)
        return view

    def invoke(self) -> tuple[np.ndarray, np.ndarray]:
        """Run the graph on the current input; returns copies of
        (logits (N, 2) int8 [background, face], regressions (N, 4) int8)."""
        self._interpreter.invoke()
        return (
            self._interpreter.get_tensor(self._logits_index)[0],
            self._interpreter.get_tensor(self._regressions_index)[0],
        )
