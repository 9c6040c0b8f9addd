"""The int8 models that ship inside the package, one per input-size profile, each with its
sidecar beside it: slim-320's weights built for a 320x240 input (the default), for 256x192
(0.64x the pixels and of the work: a Pi 4's frame under 1.5x BlazeFace short-range's, for faces
a tenth of the frame tall or more) and for 160x120 (a door or a desk, where faces are large; a
quarter of the pixels and of the work).

``make shipped-model`` writes the files here with ``tools.quantize`` from the pinned upstream
weights, and ``make test`` rebuilds them and checks the bytes are identical, so what a device
runs is what the weights give. The sidecar carries the provenance: the source weights'
sha256, the calibration photos' hash and the converter's version.

Stdlib only: the config validator (``check-config``) resolves its default model through this
module and must not need numpy to do it.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

# [detector] input -> the packaged model's file name. 640x480 (slim-640's weights) is a
# build option, not shipped: python -m tools.quantize --model slim-640, then [detector] model.
PACKAGED_MODELS = {
    "160x120": "version-slim-320-160x120-int8.tflite",
    "256x192": "version-slim-320-256x192-int8.tflite",
    "320x240": "version-slim-320-int8.tflite",
}
INPUT_PROFILES = ("160x120", "256x192", "320x240", "640x480")
DEFAULT_INPUT = "320x240"
PACKAGED_MODEL_NAME = PACKAGED_MODELS[DEFAULT_INPUT]


def packaged_model_path(name: str) -> Path:
    """Where the packaged model file ``name`` is. A wheel or an editable install unpacks the
    package onto the file system, so the resource is a plain path the interpreter can open (a
    zipped package is not a supported install)."""
    return Path(str(files(__name__).joinpath(name)))


PACKAGED_MODEL_PATH = packaged_model_path(PACKAGED_MODEL_NAME)

__all__ = [
    "DEFAULT_INPUT",
    "INPUT_PROFILES",
    "PACKAGED_MODELS",
    "PACKAGED_MODEL_NAME",
    "PACKAGED_MODEL_PATH",
    "packaged_model_path",
]
