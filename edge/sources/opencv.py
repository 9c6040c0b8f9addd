"""V4L2/USB cameras, RTSP/HTTP streams and video files through OpenCV (an optional extra).

``device`` says which: "0" (a V4L2 index), "/dev/videoN", an rtsp://, http:// or https://
URL, or a video file path. Cameras and network streams are live (the daemon keeps only
the newest frame); a video file is read frame by frame and ends. OpenCV hands frames over
as B, G, R, so frames are ``color_order="BGR"``, untouched.

``cv2`` is imported only in :meth:`OpenCVSource.open`: the device install does not need it.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from edge.common.redact import redact_url
from edge.sources.base import Frame, SourceError

_URL = re.compile(r"^(rtsp|rtsps|http|https)://", re.IGNORECASE)
_VIDEO_DEVICE = re.compile(r"^/dev/video\d+$")


def import_cv2() -> Any:
    """The ``cv2`` module; raises :class:`SourceError` naming the extra when it is missing."""
    try:
        import cv2
    except ImportError:
        raise SourceError(
            "OpenCV is not installed; the opencv source needs the extra: pip install 'edge-face[opencv]'"
        ) from None
    return cv2


def classify_device(device: str) -> str:
    """ "index", "v4l2", "url" or "file" for a ``[camera] device`` string."""
    if device.isdigit():
        return "index"
    if _VIDEO_DEVICE.match(device):
        return "v4l2"
    if _URL.match(device):
        return "url"
    return "file"


class OpenCVSource:
    """Frames from ``cv2.VideoCapture``. ``width``/``height``/``fps`` are requests to a camera
    (the driver may pick the nearest mode; frames report their real size)."""

    def __init__(
        self, device: str, width: int | None = None, height: int | None = None, fps: float | None = None
    ) -> None:
        self.device, self.kind = device, classify_device(device)
        self.width, self.height, self.fps = width, height, fps
        self.is_live = self.kind != "file"
        self.name = f"opencv '{redact_url(device)}'"
        self._capture: Any = None
        self._index = 0

    def open(self) -> None:
        cv2 = import_cv2()
        if self.kind == "file" and not Path(self.device).is_file():
            raise SourceError(f"{self.name}: no such video file")
        if self.kind == "v4l2" and not Path(self.device).exists():
            raise SourceError(f"{self.name}: no such device (is the camera plugged in?)")
        if self.kind == "index":
            capture = cv2.VideoCapture(int(self.device), cv2.CAP_V4L2)
        elif self.kind == "v4l2":
            capture = cv2.VideoCapture(self.device, cv2.CAP_V4L2)
        else:
            capture = cv2.VideoCapture(self.device)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"{self.name}: OpenCV cannot open it")
        if self.is_live:
            # A driver-side queue would hand us stale frames: we want the newest one.
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        if self.kind in ("index", "v4l2"):
            if self.width and self.height:
                capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
                capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            if self.fps:
                capture.set(cv2.CAP_PROP_FPS, self.fps)
        self._capture, self._index = capture, 0

    def read(self) -> Frame | None:
        if self._capture is None:
            raise SourceError(f"{self.name}: read before open")
        ok, pixels = self._capture.read()
        t_captured = time.monotonic()
        if not ok or pixels is None:
            if self.kind == "file":
                return None
            raise SourceError(f"{self.name}: no frame (device unplugged or stream dropped)")
        if pixels.ndim == 2:  # some V4L2 greyscale cameras
            pixels = pixels[:, :, None].repeat(3, axis=2)
        frame = Frame(pixels=pixels, color_order="BGR", t_monotonic=t_captured, index=self._index)
        self._index += 1
        return frame

    def close(self) -> None:
        capture, self._capture = self._capture, None
        if capture is not None:
            capture.release()
