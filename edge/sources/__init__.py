"""Frame sources: one interface (:class:`FrameSource` -> :class:`Frame`) over picamera2,
OpenCV (V4L2, RTSP/HTTP, video files) and image replay, plus the reader thread that keeps
the newest frame (:class:`FrameGrabber`). Camera libraries are imported only when a source
of that kind is opened."""

from edge.sources.base import Frame, FrameSource, SourceError

__all__ = ["Frame", "FrameSource", "SourceError"]
