"""Raspberry Pi cameras through picamera2 (libcamera), configured at the model's input size.

The adapter is deliberately thin: the ISP scales to the requested size, so no resize runs
on the CPU. Two stream layouts:

* ``stream="main"`` (default): the main stream as "RGB888", which picamera2 (following
  libcamera/DRM naming) stores as B, G, R bytes in memory: frames are ``color_order="BGR"``
  and are handed over untouched (the detector flips channels while pre-processing).
* ``stream="lores"``: the low-resolution stream, which on a Pi 4 (VC4 ISP) can only be
  YUV420. ``capture_array("lores")`` returns it as a (H*3/2, stride) array whose rows are
  padded to the stride, with the U and V planes (stride/2 wide) packed two rows per array
  row; :func:`yuv420_to_rgb` unpacks that. Useful when the main stream is wanted larger.

The preview configuration is used because its colour space is sYCC (full-range BT.601,
the JPEG matrix), which is what :func:`yuv420_to_rgb` decodes.

``picamera2`` is imported only in :meth:`Picamera2Source.open` (it exists only on Raspberry Pi
OS, installed with apt). Tests pass a small fake class through ``picamera2_class`` that
follows picamera2's documented API: ``Picamera2(camera_num)``,
``Picamera2.global_camera_info()``, ``create_preview_configuration(main=..., lores=...,
controls=...)``, ``configure``, ``start``, ``capture_array(name)``, ``stop``, ``close``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edge.sources.base import Frame, SourceError

STREAMS = ("main", "lores")
# Full-range BT.601 (JPEG / sYCC) YCbCr -> RGB coefficients in 16-bit fixed point.
_FIX = 16
_CR_TO_R = round(1.402 * (1 << _FIX))
_CB_TO_G = round(0.344136 * (1 << _FIX))
_CR_TO_G = round(0.714136 * (1 << _FIX))
_CB_TO_B = round(1.772 * (1 << _FIX))


def import_picamera2_class() -> Any:
    """picamera2's ``Picamera2`` class; raises :class:`SourceError` when it is not installed."""
    try:
        from picamera2 import Picamera2
    except ImportError as exc:
        raise SourceError(
            f"picamera2 is not installed ({exc}); on Raspberry Pi OS: sudo apt install python3-picamera2 "
            "(and create the venv with --system-site-packages)"
        ) from None
    return Picamera2


def yuv420_to_rgb(yuv: np.ndarray, width: int, height: int) -> np.ndarray:
    """picamera2's YUV420 array -> (height, width, 3) uint8 RGB.

    ``yuv``: (height*3/2, stride) uint8 as ``capture_array`` returns it: ``height`` rows of
    Y, then the U plane and the V plane, each (height/2) rows of stride/2 bytes, stored
    back to back (so two chroma rows share one array row). Bytes past ``width`` (Y) or
    ``width/2`` (U, V) in a row are padding. Chroma is upsampled by repetition.
    """
    if width % 2 or height % 2:
        raise ValueError(f"YUV420 needs an even size, got {width}x{height}")
    stride = yuv.shape[1]
    if yuv.shape[0] != height * 3 // 2 or stride < width:
        raise ValueError(f"YUV420 array {yuv.shape} does not hold a {width}x{height} image")
    flat = np.ascontiguousarray(yuv).reshape(-1)
    chroma_stride, chroma_rows = stride // 2, height // 2
    y_size, c_size = height * stride, chroma_rows * chroma_stride
    luma = flat[:y_size].reshape(height, stride)[:, :width]
    u = flat[y_size:y_size + c_size].reshape(chroma_rows, chroma_stride)[:, : width // 2]
    v = flat[y_size + c_size:y_size + 2 * c_size].reshape(chroma_rows, chroma_stride)[:, : width // 2]

    cb = u.astype(np.int32) - 128
    cr = v.astype(np.int32) - 128
    # Chroma terms at half resolution, then repeated: 4x less arithmetic than upsampling first.
    terms = np.stack([_CR_TO_R * cr, -_CB_TO_G * cb - _CR_TO_G * cr, _CB_TO_B * cb], axis=-1)
    terms = terms.repeat(2, axis=0).repeat(2, axis=1)
    base = (luma.astype(np.int32) << _FIX) + (1 << (_FIX - 1))
    rgb = (base[:, :, None] + terms) >> _FIX
    return np.clip(rgb, 0, 255).astype(np.uint8)


class Picamera2Source:
    """A Raspberry Pi camera, delivering ``width`` x ``height`` frames (see module docstring)."""

    is_live = True

    def __init__(
        self,
        width: int,
        height: int,
        camera_index: int = 0,
        stream: str = "main",
        fps: float | None = None,
        picamera2_class: Any = None,
    ) -> None:
        if stream not in STREAMS:
            raise ValueError(f"picamera2 stream must be one of {STREAMS}, got {stream!r}")
        self.width, self.height = width, height
        self.camera_index, self.stream, self.fps = camera_index, stream, fps
        self._picamera2_class = picamera2_class
        self._camera: Any = None
        self._index = 0
        self.name = f"picamera2 camera {camera_index} ({stream} {width}x{height})"

    def open(self) -> None:
        camera_class = self._picamera2_class or import_picamera2_class()
        try:
            cameras = camera_class.global_camera_info()
            if self.camera_index >= len(cameras):
                found = ", ".join(str(c.get("Model", "?")) for c in cameras) or "none"
                raise SourceError(f"{self.name}: no such camera (cameras found: {found})")
            camera = camera_class(self.camera_index)
            controls = {"FrameRate": float(self.fps)} if self.fps else {}
            size = (self.width, self.height)
            if self.stream == "main":
                streams = {"main": {"size": size, "format": "RGB888"}}
            else:
                streams = {"lores": {"size": size, "format": "YUV420"}}
            config = camera.create_preview_configuration(**streams, controls=controls)
            self._camera = camera
            camera.configure(config)
            camera.start()
        except SourceError:
            raise
        except Exception as exc:  # libcamera reports through RuntimeError, OSError, IndexError...
            self.close()
            raise SourceError(f"{self.name}: cannot start ({type(exc).__name__}: {exc})") from None
        self._index = 0

    def read(self) -> Frame | None:
        if self._camera is None:
            raise SourceError(f"{self.name}: read before open")
        try:
            array = self._camera.capture_array(self.stream)
        except Exception as exc:
            raise SourceError(f"{self.name}: capture failed ({type(exc).__name__}: {exc})") from None
        t_captured = time.monotonic()
        if self.stream == "main":
            pixels, color_order = array, "BGR"
        else:
            pixels, color_order = yuv420_to_rgb(array, self.width, array.shape[0] * 2 // 3), "RGB"
        frame = Frame(pixels=pixels, color_order=color_order, t_monotonic=t_captured, index=self._index)
        self._index += 1
        return frame

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is None:
            return
        for release in (camera.stop, camera.close):
            try:
                release()
            except Exception:  # already stopped or the device is gone: nothing more to release
                pass
