"""The int8 model that ships inside the package: slim-320, with its sidecar beside it.

``make shipped-model`` writes both files here with ``tools.quantize`` from the pinned upstream
weights, and ``make test`` rebuilds them and checks the bytes are identical, so what a device
runs is what the weights give. The sidecar carries the provenance: the source weights'
sha256, the calibration photos' hash and the converter's version.

Stdlib only: the config validator (``check-config``) resolves its default model through this
module and must not need numpy to do it.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

PACKAGED_MODEL_NAME = "version-slim-320-int8.tflite"

# A wheel or an editable install unpacks the package onto the file system, so the resource is a
# plain path the interpreter can open (a zipped package is not a supported install).
PACKAGED_MODEL_PATH = Path(str(files(__name__).joinpath(PACKAGED_MODEL_NAME)))

__all__ = ["PACKAGED_MODEL_NAME", "PACKAGED_MODEL_PATH"]
