"""``[camera]`` config -> a frame source, including auto-selection when none is named.

Auto-selection (``source = "auto"``): picamera2 when it is installed and lists a camera
that is not a USB one, else the V4L2 device /dev/video0 through OpenCV when it exists, else
a clear error. libcamera lists USB (UVC) webcams too, but their YUYV and MJPEG streams are
OpenCV's to read (the picamera2 source takes only RGB888 and YUV420). The
choice is made when the source is opened (:class:`AutoSource`), not when it is built, so a
camera that shows up after the service started is found by the reader's retries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.config import CameraConfig
from edge.sources.base import Frame, FrameSource, SourceError
from edge.sources.opencv import OpenCVSource
from edge.sources.picamera2 import Picamera2NotInstalled, Picamera2Source, import_picamera2_class
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

    ``picamera2_class`` / ``video_device`` replace the real ones (tests). Nothing is opened
    here; "auto" picks the camera when it is opened (:class:`AutoSource`).
    """
    if camera.source == "auto":
        return AutoSource(camera, model_size, picamera2_class, video_device)
    return _build(camera, camera.source, model_size, picamera2_class, video_device)


class AutoSource:
    """``source = "auto"``: at each :meth:`open`, the camera :func:`select_auto_camera` finds now."""

    is_live = True

    def __init__(
        self, camera: CameraConfig, model_size: tuple[int, int], picamera2_class: Any, video_device: Path
    ) -> None:
        self._camera, self._model_size = camera, model_size
        self._picamera2_class, self._video_device = picamera2_class, video_device
        self._chosen: FrameSource | None = None
        self.name = "auto camera"

    def open(self) -> None:
        kind, camera_class = select_auto_camera(self._picamera2_class, self._video_device)
        source = _build(self._camera, kind, self._model_size, camera_class, self._video_device)
        source.open()
        self._chosen, self.name = source, source.name

    def read(self) -> Frame | None:
        if self._chosen is None:
            raise SourceError(f"{self.name}: read before open")
        return self._chosen.read()

    def close(self) -> None:
        chosen, self._chosen = self._chosen, None
        if chosen is not None:
            chosen.close()


def _build(
    camera: CameraConfig, source: str, model_size: tuple[int, int], picamera2_class: Any, video_device: Path
) -> FrameSource:
    width, height = (camera.width, camera.height) if camera.width and camera.height else model_size
    if source == "replay":
        if camera.path is None:  # edge.config refuses this already; a caller building the config by hand gets told
            raise SourceError('camera.source = "replay" needs camera.path')
        return ReplaySource(camera.path, fps=camera.fps, loop=camera.loop, max_pixels=camera.max_pixels)
    if source == "picamera2":
        return Picamera2Source(
            width, height, camera.camera_index, camera.picamera2_stream, camera.fps, picamera2_class=picamera2_class
        )
    device = str(video_device) if camera.source == "auto" else camera.device
    return OpenCVSource(device, width, height, camera.fps)


def is_usb_camera(info: dict[str, Any]) -> bool:
    """A ``global_camera_info()`` entry of a USB camera (picamera2 tests ``"/usb" in Id``)."""
    return "/usb" in str(info.get("Id", ""))


def select_auto_camera(picamera2_class: Any = None, video_device: Path = DEFAULT_VIDEO_DEVICE) -> tuple[str, Any]:
    """What ``source = "auto"`` would open now, without opening it: ("picamera2", its class)
    or ("opencv", None); raises SourceError saying why there is no camera (the installer
    reports that before the service starts)."""
    why_not_picamera2 = "picamera2 lists no camera"
    try:
        camera_class = picamera2_class or import_picamera2_class()
        cameras = camera_class.global_camera_info()
        # picamera2 sorts USB cameras last (their Id names the USB path), so camera 0 is a
        # Pi camera whenever there is one.
        if any(not is_usb_camera(camera) for camera in cameras):
            return "picamera2", camera_class
        if cameras:
            why_not_picamera2 = "picamera2 lists only USB cameras, which OpenCV reads"
    except Picamera2NotInstalled:
        why_not_picamera2 = "picamera2 is not installed"
    except SourceError:
        # Installed but broken (e.g. a numpy 1/2 mismatch): on a Pi /dev/video0 is the raw
        # sensor node, so falling back to it would hide the real fault behind garbage frames.
        raise
    except Exception as exc:  # libcamera failing to enumerate is "no camera" for this purpose
        why_not_picamera2 = f"picamera2 failed to list cameras ({exc})"
    if video_device.exists():
        return "opencv", None
    raise SourceError(
        f"no camera found: {why_not_picamera2} and {video_device} does not exist; "
        'connect a camera, or set [camera] source = "replay" with path = a folder of images'
    )
