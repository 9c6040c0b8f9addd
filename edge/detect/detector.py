"""FaceDetector: one frame in, face boxes out (pre-process -> int8 invoke -> decode + NMS).

Embedding it::

    from edge.detect.detector import FaceDetector
    detector = FaceDetector("models/build/version-slim-320-int8.tflite")
    detections = detector.detect(frame)            # (H, W, 3) uint8 RGB
    for box, score in zip(detections.pixel_boxes(width, height), detections.scores): ...

Or with options and per-stage timing (for stats and benchmarks)::

    detector = FaceDetector("model.tflite", DetectorOptions(score_threshold=0.6, num_threads=1))
    result = detector.detect_timed(frame, color_order="BGR")
    result.detections, result.times.invoke_s
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

import numpy as np

from edge.detect.decode import Detections, Int8Postprocessor, PostprocessOptions
from edge.detect.model import Int8Model
from edge.detect.preprocess import COLOR_ORDERS, BilinearResizer, as_three_channels, write_model_input
from edge.detect.sidecar import ModelInfo


@dataclass(frozen=True)
class DetectorOptions(PostprocessOptions):
    """How a FaceDetector post-processes (the fields of
    :class:`edge.detect.decode.PostprocessOptions`) and runs: ``num_threads``: interpreter threads
    (None: the interpreter's default); ``interpreter``: pin an interpreter package (see
    :func:`edge.detect.model.load_interpreter_class`).
    """

    num_threads: int | None = None
    interpreter: str | None = None


@dataclass(frozen=True)
class StageTimes:
    """Seconds each stage of one :meth:`FaceDetector.detect_timed` took (perf_counter)."""

    preprocess_s: float
    invoke_s: float
    decode_s: float

    @property
    def total_s(self) -> float:
        return self.preprocess_s + self.invoke_s + self.decode_s


@dataclass(frozen=True)
class TimedDetections:
    """Faces of one frame and what finding them cost."""

    detections: Detections
    times: StageTimes


class FaceDetector:
    """Detects faces with the edge-face int8 model at ``model`` (its sidecar beside it), as
    ``options`` say (None: the defaults). One instance per thread."""

    def __init__(self, model: str | os.PathLike[str], options: DetectorOptions | None = None) -> None:
        self.options = options if options is not None else DetectorOptions()
        self._model = Int8Model(model, num_threads=self.options.num_threads, interpreter=self.options.interpreter)
        info = self._model.info
        self._postprocess = Int8Postprocessor(
            info.prior_config, info.logits_quant, info.regressions_quant, self.options
        )
        self._resize = BilinearResizer(info.input_width, info.input_height)

    @property
    def info(self) -> ModelInfo:
        """What the model's sidecar says (input size, priors, quantization, provenance)."""
        return self._model.info

    @property
    def model_id(self) -> str:
        return self._model.info.model_id

    @property
    def interpreter_name(self) -> str:
        return self._model.interpreter_name

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) frames are resized to; a camera delivering this size skips the resize."""
        return self._model.input_size

    @property
    def priors(self) -> np.ndarray:
        """(N, 4) float32 [cx, cy, w, h] normalized priors the model's outputs refer to."""
        return self._postprocess.priors

    def set_postprocess(self, score_threshold: float, iou_threshold: float) -> None:
        """Change the thresholds without loading the model again: they only steer decoding
        and NMS (a score threshold set from Home Assistant). Raises ValueError when out of range."""
        options = dataclasses.replace(self.options, score_threshold=score_threshold, iou_threshold=iou_threshold)
        self._postprocess = self._postprocess.with_options(options)
        self.options = options

    def detect(self, frame: np.ndarray, color_order: str = "RGB") -> Detections:
        """Faces in ``frame``: (H, W, 3) uint8 in ``color_order`` ("RGB" or "BGR"); (H, W)
        grayscale and (H, W, 4) RGBA/BGRA are accepted too. Boxes are normalized to the frame."""
        return self._postprocess(*self.raw_outputs(frame, color_order))

    def detect_timed(self, frame: np.ndarray, color_order: str = "RGB") -> TimedDetections:
        """:meth:`detect`, with the seconds each stage took."""
        started = time.perf_counter()
        self._prepare(frame, color_order)
        prepared = time.perf_counter()
        outputs = self._model.invoke()
        invoked = time.perf_counter()
        detections = self._postprocess(*outputs)
        done = time.perf_counter()
        return TimedDetections(detections, StageTimes(prepared - started, invoked - prepared, done - invoked))

    def raw_outputs(self, frame: np.ndarray, color_order: str = "RGB") -> tuple[np.ndarray, np.ndarray]:
        """The model's int8 heads for ``frame``, before decoding: (logits (N, 2) int8
        [background, face], regressions (N, 4) int8), the N priors of :attr:`priors`."""
        self._prepare(frame, color_order)
        return self._model.invoke()

    def postprocess(self, logits: np.ndarray, regressions: np.ndarray) -> Detections:
        """Decode + NMS of :meth:`raw_outputs` with this detector's options."""
        return self._postprocess(logits, regressions)

    def _prepare(self, frame: np.ndarray, color_order: str) -> None:
        if color_order not in COLOR_ORDERS:
            raise ValueError(f"color_order must be one of {COLOR_ORDERS}, got {color_order!r}")
        pixels = self._resize(as_three_channels(np.asarray(frame)))
        # write_model_input takes the frame's order relative to the model's: a model trained
        # on BGR (its sidecar says so) needs an RGB frame flipped, and a BGR frame as it is.
        relative_order = "RGB" if color_order == self._model.info.channel_order else "BGR"
        write_model_input(pixels, relative_order, self._model.input_pixels())
