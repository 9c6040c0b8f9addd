"""The face descriptor: an aligned 150x150 chip -> 128 numbers, and distances between them.

The network is dlib's ResNet v1 (``dlib_face_recognition_resnet_model_v1.dat``, CC0) converted
by ``tools.recognize_build`` to a TFLite model that takes the chip's RGB pixel values as float32
(its input mean and scale folded into the first convolution) and runs in the project's
interpreter (:func:`edge.detect.model.open_interpreter`).

Distances are between L2-normalised descriptors: dlib's descriptors are about 1.45 long, and
comparing directions makes the threshold independent of small scale errors of a converted
model. The same-person threshold in that space is in the model's sidecar.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from edge.detect.model import existing_model_file, open_interpreter
from edge.detect.sidecar import EMBEDDING_KIND, EmbeddingModelInfo, ModelError, read_recognition_sidecar


class FaceEmbedder:
    """One loaded descriptor network; not thread-safe (one invoke at a time)."""

    def __init__(
        self, path: str | os.PathLike[str], num_threads: int | None = None, interpreter: str | None = None
    ) -> None:
        self.path = existing_model_file(path, "tools.recognize_build")
        info = read_recognition_sidecar(self.path, EMBEDDING_KIND)
        assert isinstance(info, EmbeddingModelInfo)
        self.info = info
        self._interpreter, self.interpreter_name = open_interpreter(
            self.path, num_threads, interpreter, logging.getLogger("edge.recognize")
        )
        inputs, outputs = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        size, dims = info.chip_size, info.dimensions
        found = [(tuple(int(d) for d in t["shape"]), np.dtype(t["dtype"]).name) for t in (*inputs, *outputs)]
        if found != [((1, size, size, 3), "float32"), ((1, dims), "float32")]:
            raise ModelError(
                f"model '{self.path}': tensors {found}, expected a (1, {size}, {size}, 3) float32 chip "
                f"in and a (1, {dims}) float32 descriptor out"
            )
        self._input_index = inputs[0]["index"]
        self._output_index = outputs[0]["index"]

    @property
    def chip_size(self) -> int:
        return self.info.chip_size

    def descriptor(self, chip: np.ndarray) -> np.ndarray:
        """The (D,) float32 descriptor of ``chip`` ((S, S, 3) uint8 RGB, S = chip_size), as
        dlib's ``compute_face_descriptor`` gives it (not normalised)."""
        size = self.info.chip_size
        if chip.shape != (size, size, 3) or chip.dtype != np.uint8:
            raise ValueError(f"chip must be ({size}, {size}, 3) uint8, got {chip.shape} {chip.dtype}")
        self._interpreter.set_tensor(self._input_index, chip[None].astype(np.float32))
        self._interpreter.invoke()
        result: np.ndarray = self._interpreter.get_tensor(self._output_index)[0].copy()
        return result


def normalized(descriptors: np.ndarray) -> np.ndarray:
    """``descriptors`` ((D,) or (N, D)) scaled to unit length along the last axis, float64."""
    values = np.asarray(descriptors, dtype=np.float64)
    norms = np.linalg.norm(values, axis=-1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("a descriptor of length 0 has no direction")
    result: np.ndarray = values / norms
    return result


def distances(query: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Euclidean distances between the L2-normalised ``query`` (D,) and each row of
    ``gallery`` (N, D): (N,) float64 in [0, 2]."""
    result: np.ndarray = np.linalg.norm(normalized(gallery) - normalized(query), axis=-1)
    return result
