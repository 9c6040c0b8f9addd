"""Frame pre-processing: any camera frame -> the model's int8 input, in place, no float copy.

Upstream evaluated the model on ``cv2.resize(image, (320, 240))`` (bilinear, half-pixel
centres, no anti-aliasing) of an RGB image normalized as (p - 127) / 128. That normalization
is exactly int8 with scale 1/128 and zero point -1, whose value for pixel p is ``p XOR 0x80``
read as int8 (p - 128): so pre-processing is a resize (skipped when the camera already
delivers the model size) and one XOR written straight into the interpreter's input tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLOR_ORDERS = ("RGB", "BGR")
# Upstream's input normalization (p - 127) / 128.
PIXEL_OFFSET = 127.0
PIXEL_SCALE = 128.0
# cv2's INTER_LINEAR uses 11-bit fixed-point weights; so do we. Its passes round in a
# different order, so a pixel can differ from cv2's by one level (measured: AP unchanged).
_WEIGHT_BITS = 11
_WEIGHT_ONE = 1 << _WEIGHT_BITS


def as_three_channels(frame: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8 -> (H, W, 3) uint8 (a view when possible).

    Grayscale is replicated to three channels; a fourth (alpha) channel is dropped.
    """
    if frame.dtype != np.uint8:
        raise ValueError(f"frame must be uint8, got {frame.dtype}")
    if frame.ndim == 2:
        return np.repeat(frame[:, :, None], 3, axis=2)
    if frame.ndim == 3 and frame.shape[2] == 1:
        return np.repeat(frame, 3, axis=2)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    if frame.ndim == 3 and frame.shape[2] == 4:
        return frame[:, :, :3]
    raise ValueError(f"frame must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {frame.shape}")


@dataclass(frozen=True)
class _AxisTable:
    """Bilinear taps along one axis: out[i] = src[lo[i]] * w_lo[i] + src[hi[i]] * w_hi[i], weights summing to 2048."""

    lo: np.ndarray
    hi: np.ndarray
    w_lo: np.ndarray
    w_hi: np.ndarray


def _axis_table(src_size: int, dst_size: int) -> _AxisTable:
    scale = src_size / dst_size
    pos = (np.arange(dst_size, dtype=np.float64) + 0.5) * scale - 0.5
    pos = np.clip(pos, 0.0, src_size - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, src_size - 1)
    w_hi = np.round((pos - lo) * _WEIGHT_ONE).astype(np.int32)
    return _AxisTable(lo, hi, (_WEIGHT_ONE - w_hi).astype(np.int32), w_hi)


class BilinearResizer:
    """Resize (H, W, C) uint8 to a fixed (height, width) with cv2.INTER_LINEAR semantics.

    The tap tables depend only on the source size, so they are built once per source size
    and reused for every frame of a stream.
    """

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self._tables: dict[tuple[int, int], tuple[_AxisTable, _AxisTable]] = {}

    def __call__(self, image: np.ndarray) -> np.ndarray:
        src_h, src_w = image.shape[:2]
        if (src_w, src_h) == (self.width, self.height):
            return image
        if (src_w, src_h) == (2 * self.width, 2 * self.height):
            # Exactly half size (640x480 -> 320x240, the common camera mode): the taps are the
            # rounded 2x2 mean, the same result as the general path at a fifth of its cost.
            # Rows first (whole contiguous rows), then neighbouring pixels of the row sums.
            rows = image[0::2].astype(np.uint16)
            rows += image[1::2]
            pixel_pairs = rows.reshape(self.height, self.width, 2, image.shape[2])
            total = pixel_pairs[:, :, 0] + pixel_pairs[:, :, 1]
            total += 2
            total >>= 2
            return total.astype(np.uint8)
        tables = self._tables.get((src_w, src_h))
        if tables is None:
            tables = (_axis_table(src_h, self.height), _axis_table(src_w, self.width))
            self._tables[(src_w, src_h)] = tables
        rows, cols = tables
        # Rows first: it shrinks the data the column pass has to touch.
        vertical = (
            image[rows.lo].astype(np.int32) * rows.w_lo[:, None, None]
            + image[rows.hi].astype(np.int32) * rows.w_hi[:, None, None]
        )
        # One rounding at the end, like cv2: 255 * 2048 * 2048 still fits in int32.
        out = vertical[:, cols.lo] * cols.w_lo[None, :, None] + vertical[:, cols.hi] * cols.w_hi[None, :, None]
        out = (out + (1 << (2 * _WEIGHT_BITS - 1))) >> (2 * _WEIGHT_BITS)
        # order="C": fancy indexing leaves a transposed layout, and a strided frame makes
        # every later pass (the XOR into the input tensor first) several times slower.
        return out.astype(np.uint8, order="C")


def resize_bilinear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """One-off bilinear resize of (H, W, C) uint8 to (height, width, C) uint8 (cv2.INTER_LINEAR)."""
    return BilinearResizer(width, height)(image)


def write_model_input(rgb: np.ndarray, color_order: str, input_pixels: np.ndarray) -> None:
    """Write (H, W, 3) uint8 pixels, already at the model size, into the int8 input tensor.

    ``input_pixels`` is the model's (H, W, 3) input viewed as uint8; ``pixel ^ 0x80`` there
    is (p - 127) / 128 for the model. BGR frames are flipped on the way, in the same pass.
    """
    if color_order == "BGR":
        rgb = rgb[:, :, ::-1]
    elif color_order != "RGB":
        raise ValueError(f"color_order must be one of {COLOR_ORDERS}, got {color_order!r}")
    np.bitwise_xor(rgb, np.uint8(0x80), out=input_pixels)


def normalize(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels of any shape -> float32 (p - 127) / 128 of the same shape: upstream's
    normalization, what a float model takes (the int8 model gets it as ``p ^ 0x80``)."""
    return (pixels.astype(np.float32) - np.float32(PIXEL_OFFSET)) / np.float32(PIXEL_SCALE)


def normalize_nchw(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float32 :func:`normalize`: upstream's ONNX input."""
    return normalize(rgb).transpose(2, 0, 1)[None]
