"""FaceDetector: one frame in, face boxes out (pre-process -> int8 invoke -> decode + NMS).

Embedding it::

    from edge.detector import FaceDetector
    detector = FaceDetector("models/build/version-slim-320-int8.tflite")
    detections = detector.detect(frame)            # (H, W, 3) uint8 RGB
    for box, score in zip(detections.pixel_boxes(width, height), detections.scores): ...
"""

from __future__ import annotations

import os

import numpy as np

from edge.decode import Detections, Int8Postprocessor
from edge.model import Int8Model
from edge.preprocess import COLOR_ORDERS, BilinearResizer, as_three_channels, write_model_input


class FaceDetector:
    """Detects faces with an edge-face int8 model. One instance per thread.

    ``score_threshold``: minimum face probability (upstream's demo uses 0.7);
    ``iou_threshold``: hard-NMS overlap above which the weaker box is dropped;
    ``top_k``: keep at most this many faces (-1: all); ``num_threads``: interpreter threads
    (None: the interpreter's default); ``interpreter``: pin an interpreter package
    (see :func:`edge.model.load_interpreter_class`).
    """

    def __init__(
        self,
        model: str | os.PathLike,
        score_threshold: float = 0.7,
        iou_threshold: float = 0.3,
        top_k: int = -1,
        num_threads: int | None = None,
        interpreter: str | None = None,
    ) -> None:
        self.model = Int8Model(model, num_threads=num_threads, interpreter=interpreter)
        info = self.model.info
        self.postprocess = Int8Postprocessor(
            info.prior_config,
            info.logits_quant,
            info.regressions_quant,
            score_threshold=score_threshold,
            iou_threshold=iou_threshold,
            top_k=top_k,
        )
        self._resize = BilinearResizer(info.input_width, info.input_height)

    @property
    def model_id(self) -> str:
        return self.model.info.model_id

    @property
    def interpreter_name(self) -> str:
        return self.model.interpreter_name

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) frames are resized to; a camera delivering this size skips the resize."""
        return self.model.input_size

    def detect(self, frame: np.ndarray, color_order: str = "RGB") -> Detections:
        """Faces in ``frame``: (H, W, 3) uint8 in ``color_order`` ("RGB" or "BGR"); (H, W)
        grayscale and (H, W, 4) RGBA/BGRA are accepted too. Boxes are normalized to the frame."""
        self.prepare(frame, color_order)
        return self.postprocess(*self.model.invoke())

    def prepare(self, frame: np.ndarray, color_order: str = "RGB") -> None:
        """Pre-process ``frame`` into the model's input tensor (the first stage of detect)."""
        if color_order not in COLOR_ORDERS:
            raise ValueError(f"color_order must be one of {COLOR_ORDERS}, got {color_order!r}")
        pixels = self._resize(as_three_channels(np.asarray(frame)))
        write_model_input(pixels, color_order, self.model.input_pixels())
