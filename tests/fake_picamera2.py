"""A small stand-in for picamera2's ``Picamera2`` class, for machines without a Pi camera.

It follows picamera2's documented API and memory layouts (Picamera2 manual, appendix A,
and ``picamera2/request.py``), so the adapter is tested against the same shapes a Pi gives:

* ``Picamera2.global_camera_info()`` -> list of dicts with "Model", "Location", "Rotation",
  "Id", "Num"; ``Picamera2(camera_num)``; ``create_preview_configuration(main=..., lores=...,
  controls=...)`` -> a config dict; ``configure``; ``start``; ``capture_array(name)``;
  ``stop``; ``close``.
* "RGB888" arrays are (H, W, 3) with bytes in B, G, R order.
* "YUV420" arrays are (H*3/2, stride): H rows of Y, then the U and V planes of H/2 rows of
  stride/2 bytes each, packed back to back; row padding past the image is left as garbage.

The "scene" is a real photo (RGB) the test hands in; it is resized to the stream size.
Knobs: ``paused`` (capture_array blocks, like a stalled camera), ``fail_captures`` and
``fail_starts`` (the next N calls raise RuntimeError, like an unplugged camera).
"""

from __future__ import annotations

import threading
import time

import numpy as np
from PIL import Image

STRIDE_ALIGN = 64  # bytes; picamera2 reports padded strides like this for ISP outputs
PADDING_BYTE = 0xAB


def _aligned(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def rgb_to_planes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H, W, 3) RGB -> full-range BT.601 Y (H, W) and 2x2-averaged U, V (H/2, W/2), by Pillow."""
    ycbcr = np.asarray(Image.fromarray(rgb).convert("YCbCr")).astype(np.float32)
    height, width = rgb.shape[:2]
    chroma = ycbcr[:, :, 1:].reshape(height // 2, 2, width // 2, 2, 2).mean(axis=(1, 3))
    chroma = np.round(chroma).astype(np.uint8)
    return ycbcr[:, :, 0].astype(np.uint8), chroma[:, :, 0], chroma[:, :, 1]


def pack_yuv420(y: np.ndarray, u: np.ndarray, v: np.ndarray, stride: int) -> np.ndarray:
    """Planes -> picamera2's (H*3/2, stride) YUV420 array, padding filled with a marker byte."""
    height, width = y.shape
    flat = np.full(height * 3 // 2 * stride, PADDING_BYTE, np.uint8)
    flat[: height * stride].reshape(height, stride)[:, :width] = y
    chroma_size = height // 2 * stride // 2
    for plane_number, plane in enumerate((u, v)):
        start = height * stride + plane_number * chroma_size
        flat[start:start + chroma_size].reshape(height // 2, stride // 2)[:, : width // 2] = plane
    return flat.reshape(height * 3 // 2, stride)


class FakePicamera2:
    """Configure per test with :meth:`with_scene`, which returns a subclass holding the state."""

    cameras: list[dict] = []
    scene: np.ndarray = np.zeros((480, 640, 3), np.uint8)
    instances: list["FakePicamera2"] = []
    paused: threading.Event
    fail_captures = 0
    fail_starts = 0
    captures = 0

    @classmethod
    def with_scene(cls, scene: np.ndarray, cameras: list[dict] | None = None) -> type["FakePicamera2"]:
        if cameras is None:
            cameras = [{"Model": "imx708", "Location": 2, "Rotation": 180, "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a", "Num": 0}]
        return type("Picamera2", (cls,), {"scene": scene, "cameras": cameras, "instances": [], "paused": threading.Event()})

    @classmethod
    def global_camera_info(cls) -> list[dict]:
        return [dict(c) for c in cls.cameras]

    def __init__(self, camera_num: int = 0) -> None:
        if camera_num >= len(self.cameras):
            raise IndexError("list index out of range")  # what picamera2 raises for a missing camera
        self.camera_num = camera_num
        self.config: dict | None = None
        self.started = False
        self.closed = False
        type(self).instances.append(self)

    def create_preview_configuration(self, main=None, lores=None, raw=None, controls=None, **_other) -> dict:
        config = {"use_case": "preview", "main": {"format": "XBGR8888", "size": (640, 480)}, "lores": None, "controls": dict(controls or {})}
        config["main"].update(main or {})
        if lores is not None:
            config["lores"] = {"format": "YUV420", **lores}
        return config

    def configure(self, config: dict) -> None:
        for name in ("main", "lores"):
            stream = config.get(name)
            if stream is None:
                continue
            width, height = stream["size"]
            bytes_per_pixel = {"RGB888": 3, "BGR888": 3, "XBGR8888": 4, "XRGB8888": 4, "YUV420": 1}[stream["format"]]
            stream["stride"] = _aligned(width * bytes_per_pixel, STRIDE_ALIGN)
        self.config = config

    def start(self) -> None:
        cls = type(self)
        if cls.fail_starts > 0:
            cls.fail_starts -= 1
            raise RuntimeError("Failed to start camera: Device or resource busy")
        self.started = True

    def capture_array(self, name: str = "main") -> np.ndarray:
        cls = type(self)
        while cls.paused.is_set() and not self.closed:  # a stalled camera: capture blocks
            time.sleep(0.01)
        if cls.fail_captures > 0:
            cls.fail_captures -= 1
            raise RuntimeError("Camera frontend has timed out!")
        if not self.started:
            raise RuntimeError("Camera not started")
        cls.captures += 1
        stream = self.config[name]
        width, height = stream["size"]
        rgb = np.asarray(Image.fromarray(cls.scene).resize((width, height), Image.Resampling.BILINEAR))
        if stream["format"] == "RGB888":
            return np.ascontiguousarray(rgb[:, :, ::-1])
        if stream["format"] == "YUV420":
            return pack_yuv420(*rgb_to_planes(rgb), stream["stride"])
        raise RuntimeError(f"format {stream['format']} not supported by the fake")

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True
