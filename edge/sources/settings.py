"""The ``[camera]`` section: where frames come from (declared here, read by edge.config).

Numpy-free and importing only rank 0 (edge.common), like every ``settings`` module, so the
loader and any stage can read it; :mod:`edge.sources.auto` opens the source it describes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.common.config_rules import (
    REQUIRED,
    Boolean,
    Choice,
    ConfigContext,
    ConfigError,
    FilePath,
    Integer,
    KeySection,
    Number,
    Text,
    key,
)

CAMERA_SOURCES = ("auto", "picamera2", "opencv", "replay")
PICAMERA2_STREAMS = ("main", "lores")

# Decoded-pixel limit of a replayed image (camera.max_pixels): 4 MP decodes to 12 MB of RGB
# (about 30 MB at the decoder's peak), which keeps a replay well inside the unit's
# MemoryHigh=192M next to the ~100 MB daemon; the detector sees 320x240 anyway, so more
# pixels buy nothing. Bigger JPEGs are decoded at 1/2, 1/4 or 1/8 scale, others refused.
DEFAULT_MAX_PIXELS = 4_000_000


@dataclass(frozen=True)
class CameraConfig:
    """Where frames come from. ``width``/``height`` None: the model's input size."""

    source: str = key(Choice(CAMERA_SOURCES), "auto")
    width: int | None = key(Integer(16, 8192), None)
    height: int | None = key(Integer(16, 8192), None)
    fps: float | None = key(Number(0.0, 1000.0, exclusive_minimum=True), None)
    camera_index: int = key(Integer(0, 15), 0)
    picamera2_stream: str = key(Choice(PICAMERA2_STREAMS), "main")
    device: str = key(
        Text('a V4L2 index ("0"), a device path ("/dev/video0"), an rtsp/http(s) URL or a video file', max_length=4096),
        "/dev/video0",
    )
    path: Path | None = key(FilePath("file-or-folder"), None)
    loop: bool = key(Boolean(), False)
    reopen_min_delay: float = key(Number(0.0, 3600.0, exclusive_minimum=True), 1.0)
    reopen_max_delay: float = key(Number(0.0, 3600.0, exclusive_minimum=True), 30.0)
    max_pixels: int = key(Integer(65_536, 50_000_000), DEFAULT_MAX_PIXELS)


def check_camera(camera: CameraConfig, table: dict[str, Any], context: ConfigContext) -> CameraConfig:
    if camera.source == "replay" and camera.path is None:
        raise ConfigError("camera.path", REQUIRED, 'camera.source = "replay" needs a folder of images or one image')
    if camera.reopen_max_delay < camera.reopen_min_delay:
        raise ConfigError(
            "camera.reopen_max_delay",
            camera.reopen_max_delay,
            f"a number >= camera.reopen_min_delay ({camera.reopen_min_delay:g})",
        )
    if (camera.width is None) != (camera.height is None):
        missing = "camera.height" if camera.height is None else "camera.width"
        raise ConfigError(missing, REQUIRED, "set camera.width and camera.height together, or neither")
    return camera


CAMERA_SECTION = KeySection(CameraConfig, check=check_camera)
