"""Frame pre-processing: any camera frame -> the model's int8 input, in place, no float copy.

Upstream evaluated the model on ``cv2.resize(image, (320, 240))`` (bilinear, half-pixel
centres, no anti-aliasing) of an RGB image normalized as (p - 127) / 128. That normalization
is exactly int8 with scale 1/128 and zero point -1, whose value for pixel p is ``p XOR 0x80``
read as int8 (p - 128): so pre-processing is a resize (skipped when the camera already
delivers the model size) and one XOR written straight into the interpreter's input tensor.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

COLOR_ORDERS = ("RGB", "BGR")
# Upstream's input normalization (p - 127) / 128.
PIXEL_OFFSET = 127.0
PIXEL_SCALE = 128.0
# cv2's INTER_LINEAR uses 11-bit fixed-point weights; so does the numpy path.
_WEIGHT_ONE = 1 << 11
# Resize plans kept per resizer (least recently used dropped first): a camera has one frame
# size; a replay of photos or a `detect` run over a folder has as many as it has photos.
MAX_RESIZE_PLANS = 8
# Largest temporary of the numpy resize (see _ResizePlan.__call__), under edge.daemon.memory's
# mmap threshold.
_BLOCK_BYTES = 192 * 1024


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


def _taps(src_size: int, dst_size: int, clamp_weights: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """cv2.INTER_LINEAR's taps along one axis: (lo, hi) source indices and their 11-bit
    weights (w_lo, w_hi), computed as cv2 computes them (float32 positions, each weight
    rounded on its own). Columns clamp the weight at the borders (w_hi = 0); rows keep it
    and read the border row twice, which rounds differently in the vertical pass."""
    scale = 1.0 / (dst_size / src_size)
    pos = ((np.arange(dst_size, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    floor = np.floor(pos)
    frac = pos - floor
    lo = floor.astype(np.intp)
    if clamp_weights:
        frac[(lo < 0) | (lo >= src_size - 1)] = 0
    w_hi = np.rint(frac * np.float32(_WEIGHT_ONE)).astype(np.int32)
    w_lo = np.rint((np.float32(1) - frac) * np.float32(_WEIGHT_ONE)).astype(np.int32)
    return np.clip(lo, 0, src_size - 1), np.clip(lo + 1, 0, src_size - 1), w_lo, w_hi


@dataclass(frozen=True)
class _ResizePlan:
    """Everything about one (source size -> model size) resize that does not depend on the
    pixels, per axis (a few KB whatever the frame size; a per-pixel plan was ~7 MB).

    ``rows``: (top, bottom) (dst_h,) source row of each output row, bottom None when every
    bottom weight is 0; ``cols``: (left, right) (dst_w * C,) byte offsets within a source
    row of each output byte's taps, right None when every right weight is 0;
    ``col_weights``: (dst_w * C,) int32 left/right weights; ``row_weights``: (dst_h, 1)
    int32 top/bottom weights. Indices are intp, what ``take`` uses (int32 would be
    converted at every frame).
    """

    rows: tuple[np.ndarray, np.ndarray | None]
    cols: tuple[np.ndarray, np.ndarray | None]
    col_weights: tuple[np.ndarray, np.ndarray]
    row_weights: tuple[np.ndarray, np.ndarray]
    out_shape: tuple[int, int, int]

    @classmethod
    def build(cls, src_w: int, src_h: int, dst_w: int, dst_h: int, channels: int) -> _ResizePlan:
        top, bottom, w_top, w_bottom = _taps(src_h, dst_h, clamp_weights=False)
        left, right, w_left, w_right = _taps(src_w, dst_w, clamp_weights=True)
        channel = np.arange(channels)

        def byte_offsets(cols: np.ndarray) -> np.ndarray:
            offsets: np.ndarray = (cols[:, None] * channels + channel).reshape(-1)
            return offsets

        return cls(
            rows=(top, bottom if w_bottom.any() else None),
            cols=(byte_offsets(left), byte_offsets(right) if w_right.any() else None),
            col_weights=(np.repeat(w_left, channels), np.repeat(w_right, channels)),
            row_weights=(w_top[:, None], w_bottom[:, None]),
            out_shape=(dst_h, dst_w, channels),
        )

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(src_h, src_w, C) uint8 -> (dst_h, dst_w, C) uint8, bit-identical to cv2.resize.

        Horizontal pass exact in int32 (cv2's HResizeLinear) over the source rows each output
        row reads; vertical pass with cv2's SIMD fixed-point rounding (VResizeLinearVec_32s8u,
        which OpenCV 5 applies to whole rows):
        ((S_top >> 4) * w_top >> 16) + ((S_bottom >> 4) * w_bottom >> 16), + 2, >> 2.
        """
        left, right = self.cols
        w_left, w_right = self.col_weights
        out_height, out_width, channels = self.out_shape
        resized = np.empty((out_height, out_width * channels), np.uint8)
        # A block of output rows at a time: each temporary stays under _BLOCK_BYTES, so it is
        # served from malloc's heap (edge.daemon.memory maps larger ones and returns them at free:
        # a page fault per 4 KB, each frame) and stays in the CPU's cache.
        row_bytes = max(image.shape[1] * channels, out_width * channels * 4)
        block = max(1, _BLOCK_BYTES // row_bytes)
        for start in range(0, out_height, block):
            stop = min(out_height, start + block)
            out = None
            for rows, row_weight in zip(self.rows, self.row_weights, strict=True):
                if rows is None:
                    continue
                # Whole source rows first (row copies), then the taps within them: a
                # non-contiguous frame (a colour view of a BGRA buffer) is never copied whole.
                picked = image[rows[start:stop]].reshape(stop - start, -1)
                sums = picked.take(left, axis=1) * w_left
                if right is not None:
                    sums += picked.take(right, axis=1) * w_right
                sums >>= 4
                sums *= row_weight[start:stop]
                sums >>= 16
                if out is None:
                    out = sums
                else:
                    out += sums
            assert out is not None
            out += 2
            out >>= 2
            resized[start:stop] = out  # 0..255 after the shift: the cast keeps every value
        shaped: np.ndarray = resized.reshape(self.out_shape)
        return shaped


def _load_cv2() -> Any:
    try:
        import cv2
    except ImportError:
        return None
    return cv2


class BilinearResizer:
    """Resize (H, W, C) uint8 to a fixed (height, width) exactly as cv2.INTER_LINEAR does.

    With OpenCV installed (every OpenCV camera source has it) this is ``cv2.resize``; without
    it (a Pi with only picamera2 or a replay folder) a numpy implementation of the same
    fixed-point arithmetic, bit-identical to it (tests/test_preprocess.py compares them on
    real photos at many sizes). ``use_cv2``: None picks cv2 when it imports; False forces
    numpy. The numpy plan depends only on the source size, so it is built once per source
    size and reused for every frame of a stream; the :data:`MAX_RESIZE_PLANS` most recently
    used sizes keep theirs (a few KB each), so any number of sizes costs bounded memory.
    """

    def __init__(self, width: int, height: int, use_cv2: bool | None = None) -> None:
        self.width, self.height = width, height
        self._cv2 = _load_cv2() if use_cv2 is not False else None
        if use_cv2 and self._cv2 is None:
            raise ValueError("use_cv2=True but OpenCV (cv2) is not installed")
        self._plans: OrderedDict[tuple[int, int, int], _ResizePlan] = OrderedDict()

    @property
    def uses_cv2(self) -> bool:
        return self._cv2 is not None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        src_h, src_w = image.shape[:2]
        if (src_w, src_h) == (self.width, self.height):
            return image
        if self._cv2 is not None:
            resized = self._cv2.resize(image, (self.width, self.height), interpolation=self._cv2.INTER_LINEAR)
            # cv2 drops a channel axis of length 1; the numpy path keeps it.
            shaped: np.ndarray = resized.reshape(self.height, self.width, *image.shape[2:])
            return shaped
        if (src_w, src_h) == (2 * self.width, 2 * self.height):
            # Exactly half size (640x480 -> 320x240, the common camera mode): cv2 switches to
            # its INTER_AREA fast path, the rounded 2x2 mean, which is also far cheaper here.
            # Rows first (whole contiguous rows), then neighbouring pixels of the row sums.
            # Only contiguous adds: each pixel gets its right neighbour added in one shifted
            # pass over the row sums, and every other pixel of the result is kept. On an
            # aarch64 core this halves the instructions of the strided pixel-pair add.
            # A block of output rows at a time, as in _ResizePlan.__call__.
            channels = image.shape[2]
            row_pairs = np.ascontiguousarray(image).reshape(self.height, 2, src_w * channels)
            halved = np.empty((self.height, self.width, channels), np.uint8)
            block = max(1, _BLOCK_BYTES // (2 * src_w * channels))
            for start in range(0, self.height, block):
                stop = min(self.height, start + block)
                rows = np.add(row_pairs[start:stop, 0], row_pairs[start:stop, 1], dtype=np.uint16)
                total = np.empty_like(rows)
                np.add(rows[:, :-channels], rows[:, channels:], out=total[:, :-channels])
                total += 2
                total >>= 2
                halved[start:stop] = total.reshape(stop - start, self.width, 2 * channels)[:, :, :channels]
            return halved
        return self._plan_for(src_w, src_h, image.shape[2])(image)

    @property
    def cached_sizes(self) -> tuple[tuple[int, int, int], ...]:
        """(width, height, channels) of the source sizes holding a numpy plan, oldest use first."""
        return tuple(self._plans)

    def _plan_for(self, src_w: int, src_h: int, channels: int) -> _ResizePlan:
        key = (src_w, src_h, channels)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = _ResizePlan.build(src_w, src_h, self.width, self.height, channels)
            if len(self._plans) > MAX_RESIZE_PLANS:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(key)
        return plan


def resize_bilinear(image: np.ndarray, width: int, height: int, use_cv2: bool | None = None) -> np.ndarray:
    """One-off bilinear resize of (H, W, C) uint8 to (height, width, C) uint8 (cv2.INTER_LINEAR)."""
    return BilinearResizer(width, height, use_cv2)(image)


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
