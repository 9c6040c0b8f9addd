"""The detector stage: one RGB frame in, face boxes out (pre-process -> int8 invoke -> decode + NMS).

In: a frame, ``(H, W, 3)`` uint8 RGB of any size. Out: :class:`Detections`, boxes normalized to
the frame, best first. Modules, in the order a frame meets them: :mod:`~edge.detect.sidecar`
(the model file format), :mod:`~edge.detect.priors` (anchor boxes),
:mod:`~edge.detect.preprocess` (frame -> int8 input tensor), :mod:`~edge.detect.model`
(interpreter, one invoke; :mod:`~edge.detect.native_stderr` keeps the runtime's chatter in the
debug log), :mod:`~edge.detect.decode` (anchors -> boxes, NMS) and :mod:`~edge.detect.detector`
(all of it in one call). The public interface, for code that embeds the detector::

    from edge.detect import DetectorOptions, FaceDetector

Names are imported on first use, so importing one module of the package loads no other.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.detect.decode import Detections, PostprocessOptions
    from edge.detect.detector import DetectorOptions, FaceDetector
    from edge.detect.sidecar import ModelError

__all__ = ["Detections", "DetectorOptions", "FaceDetector", "ModelError", "PostprocessOptions"]
_PUBLIC = {
    "Detections": "edge.detect.decode",
    "PostprocessOptions": "edge.detect.decode",
    "DetectorOptions": "edge.detect.detector",
    "FaceDetector": "edge.detect.detector",
    "ModelError": "edge.detect.sidecar",
}


def __getattr__(name: str) -> object:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
