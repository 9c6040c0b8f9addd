"""Replay: a folder of images (in file-name order) or a single image, as a frame source.

Used by tests, demos and benchmarks, and by a machine with no camera. Not live: the
daemon takes every frame in order (nothing is dropped), so a replay is reproducible.
"""

from __future__ import annotations

import time
from pathlib import Path

from edge.imageio import IMAGE_SUFFIXES, ImageError, load_image
from edge.sources.base import Frame, SourceError


def list_images(path: Path) -> list[Path]:
    """The image files of folder ``path`` sorted by name, or ``[path]`` for one image file."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SourceError(f"replay '{path}': no such file or folder")
    images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise SourceError(f"replay '{path}': no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return images


class ReplaySource:
    """Frames from image files.

    ``fps``: pace frames at this rate on the monotonic clock (None: as fast as they are
    read); ``loop``: start over after the last image instead of ending; ``preload``: decode
    every image once at open (a looped benchmark then measures the daemon, not the JPEG
    decoder; costs H*W*3 bytes per distinct image: links to one file share it).
    """

    is_live = False

    def __init__(self, path: str | Path, fps: float | None = None, loop: bool = False, preload: bool = False) -> None:
        if fps is not None and not fps > 0:
            raise ValueError(f"replay fps must be > 0, got {fps}")
        self.path = Path(path)
        self.fps, self.loop, self.preload = fps, loop, preload
        self.name = f"replay '{self.path}'"
        self._files: list[Path] = []
        self._decoded: list | None = None
        self._index = 0
        self._started: float | None = None

    def open(self) -> None:
        self._files = list_images(self.path)
        self._decoded = self._decode_all() if self.preload else None
        self._index = 0
        self._started = None

    def read(self) -> Frame | None:
        if not self._files or (self._index >= len(self._files) and not self.loop):
            return None
        position = self._index % len(self._files)
        pixels = self._decoded[position] if self._decoded is not None else self._decode(self._files[position])
        now = time.monotonic()
        if self.fps is not None:
            # Pace against the start time, not the previous frame, so decode time doesn't drift the rate.
            if self._started is None:
                self._started = now
            due = self._started + self._index / self.fps
            if due > now:
                time.sleep(due - now)
                now = time.monotonic()
        frame = Frame(pixels=pixels, color_order="RGB", t_monotonic=now, index=self._index)
        self._index += 1
        return frame

    def close(self) -> None:
        self._decoded = None

    def _decode_all(self) -> list:
        """Every file decoded once; links to the same image share one array."""
        by_target: dict[Path, object] = {}
        for path in self._files:
            target = path.resolve()
            if target not in by_target:
                by_target[target] = self._decode(path)
        return [by_target[path.resolve()] for path in self._files]

    def _decode(self, path: Path):
        try:
            return load_image(path)
        except ImageError as exc:
            raise SourceError(f"replay: {exc}") from None
