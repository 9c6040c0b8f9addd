"""One face in a frame -> its descriptor: mapped box -> landmarks -> chip -> network.

The chain of :mod:`edge.recognize` in one object, loaded from the shipped models (or others
given by path); the detector's box comes in, the descriptor goes out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from edge.detect.sidecar import BoxMapping
from edge.recognize.align import face_chip
from edge.recognize.embed import FaceEmbedder
from edge.recognize.landmarks import ShapePredictor, load_shape_model, predictor_box
from edge.recognize.models import EMBEDDING_MODEL_PATH, LANDMARKS_MODEL_PATH


@dataclass(frozen=True)
class Described:
    """What :meth:`FaceDescriber.describe` found: (5, 2) landmarks in frame pixels, the
    (S, S, 3) uint8 chip and the (D,) float32 descriptor."""

    landmarks: np.ndarray
    chip: np.ndarray
    descriptor: np.ndarray


class FaceDescriber:
    """Landmarks, chip and descriptor of detected faces; one instance per thread."""

    def __init__(
        self,
        landmarks_model: str | os.PathLike[str] = LANDMARKS_MODEL_PATH,
        embedding_model: str | os.PathLike[str] = EMBEDDING_MODEL_PATH,
        num_threads: int | None = None,
        interpreter: str | None = None,
    ) -> None:
        shape_model, info = load_shape_model(landmarks_model)
        self._predictor = ShapePredictor(shape_model)
        self.box_mapping: BoxMapping = info.box_mapping
        self.embedder = FaceEmbedder(embedding_model, num_threads=num_threads, interpreter=interpreter)

    @property
    def model_id(self) -> str:
        """The descriptor model's id: descriptors of different ids are not comparable."""
        return self.embedder.info.model_id

    @property
    def dimensions(self) -> int:
        return self.embedder.info.dimensions

    @property
    def match_threshold(self) -> float:
        return self.embedder.info.match_threshold

    def describe(self, frame: np.ndarray, box: np.ndarray | tuple[float, float, float, float]) -> Described:
        """The face in ``box`` ((x1, y1, x2, y2) detector pixels) of ``frame`` ((H, W, 3)
        uint8 RGB)."""
        x1, y1, x2, y2 = (float(v) for v in box)
        landmarks = self._predictor.predict(frame, predictor_box((x1, y1, x2, y2), self.box_mapping))
        chip = face_chip(frame, landmarks)
        return Described(landmarks, chip, self.embedder.descriptor(chip))
