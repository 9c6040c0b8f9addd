"""Frame sources: one interface (:class:`FrameSource` -> :class:`Frame`) over picamera2,
OpenCV (V4L2, RTSP/HTTP, video files) and image replay, plus the reader thread that keeps
the newest frame (:class:`FrameGrabber`). Camera libraries are imported only when a source
of that kind is opened. The ``[camera]`` section is declared in :mod:`edge.sources.settings`.

Names are imported on first use, so reading the ``[camera]`` settings (the config loader
does) loads no numpy.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.sources.base import Frame, FrameSource, SourceError

__all__ = ["Frame", "FrameSource", "SourceError"]


def __getattr__(name: str) -> object:
    if name in __all__:
        return getattr(importlib.import_module("edge.sources.base"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
