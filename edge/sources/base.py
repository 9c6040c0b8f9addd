"""What every frame source delivers, and the interface the daemon drives them through."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

COLOR_ORDERS = ("RGB", "BGR")


@dataclass(frozen=True)
class Frame:
    """One camera frame.

    ``pixels``: (H, W, 3) uint8 in ``color_order`` ("RGB" or "BGR": a camera's native order
    is passed through, the detector flips it while pre-processing, so no copy is made here).
    ``t_monotonic``: ``time.monotonic()`` when the frame was captured (or read, for replay).
    ``index``: position in the stream since the source was opened, from 0.
    """

    pixels: np.ndarray
    color_order: str
    t_monotonic: float
    index: int

    def __post_init__(self) -> None:
        if self.pixels.dtype != np.uint8 or self.pixels.ndim != 3 or self.pixels.shape[2] != 3:
            raise ValueError(f"Frame.pixels must be (H, W, 3) uint8, got {self.pixels.shape} {self.pixels.dtype}")
        if self.color_order not in COLOR_ORDERS:
            raise ValueError(f"Frame.color_order must be one of {COLOR_ORDERS}, got {self.color_order!r}")

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


class SourceError(Exception):
    """A source that cannot be opened or read; the message is one line naming the source."""


class FrameSource(Protocol):
    """A camera, stream or replay. Not thread-safe: one thread opens, reads and closes it.

    ``is_live``: frames keep coming whether or not they are read (a camera): the reader
    keeps only the newest. A finite, non-live source (a replay, a video file) is read
    frame by frame at the consumer's pace and ends with ``read() -> None``.
    """

    name: str
    is_live: bool

    def open(self) -> None:
        """Acquire the device; raises :class:`SourceError`."""

    def read(self) -> Frame | None:
        """The next frame (blocking), or None at the end of a finite source;
        raises :class:`SourceError` when the device fails."""

    def close(self) -> None:
        """Release the device; safe to call twice or after a failed open."""
