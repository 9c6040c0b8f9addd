"""``[camera]`` config -> a frame source, including auto-selection when none is named.

Auto-selection (``source = "auto"``): picamera2 when it is installed and lists a camera,
else the V4L2 device /dev/video0 through OpenCV when it exists, else a clear error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.config import CameraConfig
from edge.sources.base import FrameSource, SourceError
from edge.sources.opencv import OpenCVSource
from edge.sources.picamera2 import Picamera2Source, import_picamera2_class
from edge.sources.replay import ReplaySource

DEFAULT_VIDEO_DEVICE = Path("/dev/video0")


def build_source(
    camera: CameraConfig,
    model_size: tuple[int, int],
    picamera2_class: Any = None,
    video_device: Path = DEFAULT_VIDEO_DEVICE,
) -> FrameSource:
    """The source ``camera`` asks for; frames are requested at ``camera.width`` x
    ``camera.height``, or at ``model_size`` (width, height) so no resize is needed.

    ``picamera2_class`` / ``video_device`` replace the real ones (tests). Raises
    :class:`SourceError` when auto-selection finds no camera. Nothing is opened here.
    """
    width, height = (camera.width, camera.height) if camera.width and camera.height else model_size
    source = camera.source
    if source == "auto":
        source, picamera2_class = _auto_select(picamera2_class, video_device)
    if source == "replay":
        return ReplaySource(camera.path, fps=camera.fps, loop=camera.loop)
    if source == "picamera2":
        return Picamera2Source(
            width, height, camera.camera_index, camera.picamera2_stream, camera.fps, picamera2_class=picamera2_class
        )
    device = str(video_device) if camera.source == "auto" else camera.device
    return OpenCVSource(device, width, height, camera.fps)


def _auto_select(picamera2_class: Any, video_device: Path) -> tuple[str, Any]:
    why_not_picamera2 = "picamera2 lists no camera"
    try:
        camera_class = picamera2_class or import_picamera2_class()
        if camera_class.global_camera_info():
            return "picamera2", camera_class
    except SourceError:
        why_not_picamera2 = "picamera2 is not installed"
    except Exception as exc:  # libcamera failing to enumerate is "no camera" for this purpose
        why_not_picamera2 = f"picamera2 failed to list cameras ({exc})"
    if video_device.exists():
        return "opencv", None
    raise SourceError(
        f"no camera found: {why_not_picamera2} and {video_device} does not exist; "
        'connect a camera, or set [camera] source = "replay" with path = a folder of images'
    )
