"""Replay: a folder of images (in file-name order) or a single image, as a frame source.

Used by tests, demos and benchmarks, and by a machine with no camera. Not live: the
daemon takes every frame in order (nothing is dropped), so a replay is reproducible.

A file that cannot be used (corrupt, truncated, a decompression bomb, not a regular file,
gone since the listing) is skipped with one log line, once per file, not once per loop pass;
a replay in which no file at all can be read ends with a :class:`SourceError` naming the
folder (a looping replay of only bad files must not spin).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from edge.config import DEFAULT_MAX_PIXELS
from edge.sources.base import Frame, SourceError
from edge.sources.imageio import IMAGE_SUFFIXES, ImageError, load_image


def list_images(path: Path, log: logging.Logger | None = None) -> list[Path]:
    """The image files of folder ``path`` sorted by name, or ``[path]`` for one image file.
    Entries with an image suffix that are not regular files (a folder, a FIFO, a dangling
    link or a link loop) are left out, each with one line on ``log``."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SourceError(f"replay '{path}': no such file or folder")
    try:
        candidates = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    except OSError as exc:
        raise SourceError(f"replay '{path}': cannot list the folder ({exc.strerror or exc})") from None
    images = [p for p in candidates if p.is_file()]
    if log is not None:
        for skipped in sorted(set(candidates) - set(images)):
            log.warning("replay: skipping '%s': not a regular file", skipped)
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

    def __init__(
        self,
        path: str | Path,
        fps: float | None = None,
        loop: bool = False,
        preload: bool = False,
        logger: logging.Logger | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        if fps is not None and not fps > 0:
            raise ValueError(f"replay fps must be > 0, got {fps}")
        self.path = Path(path)
        self.fps, self.loop, self.preload = fps, loop, preload
        self.max_pixels = max_pixels
        self.name = f"replay '{self.path}'"
        self.log = logger or logging.getLogger("edge.sources")
        self._files: list[Path] = []
        self._decoded: list[np.ndarray | None] | None = None
        self._bad: dict[Path, str] = {}  # skipped files and why (each logged once)
        self._position = 0  # next file to read
        self._index = 0  # next frame index
        self._started: float | None = None

    @property
    def skipped(self) -> dict[Path, str]:
        """Files skipped so far and why."""
        return dict(self._bad)

    def open(self) -> None:
        self._files = list_images(self.path, self.log)
        self._decoded = self._decode_all() if self.preload else None
        self._position = self._index = 0
        self._started = None

    def read(self) -> Frame | None:
        pixels = self._next_pixels()
        if pixels is None:
            return None
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

    def _next_pixels(self) -> np.ndarray | None:
        """The next readable image's pixels, skipping bad files; None at the end of a
        non-looping replay; SourceError when a whole pass over the files found none readable."""
        misses = 0
        while self._files and (self.loop or self._position < len(self._files)):
            position = self._position % len(self._files)
            self._position += 1
            pixels = self._decoded[position] if self._decoded is not None else self._decode(self._files[position])
            if pixels is not None:
                return pixels
            misses += 1
            if misses >= len(self._files):
                raise SourceError(
                    f"{self.name}: none of its {len(self._files)} image file(s) can be read "
                    f"(first: {next(iter(self._bad.values()))})"
                )
        return None

    def _decode_all(self) -> list[np.ndarray | None]:
        """Every file decoded once (None: skipped); links to the same image share one array."""
        by_target: dict[Path, np.ndarray | None] = {}
        for path in self._files:
            target = path.resolve()
            if target not in by_target:
                by_target[target] = self._decode(path)
        return [by_target[path.resolve()] for path in self._files]

    def _decode(self, path: Path) -> np.ndarray | None:
        """(H, W, 3) uint8 RGB, or None for a file that cannot be used (logged once per file)."""
        try:
            return load_image(path, self.max_pixels)
        except ImageError as exc:
            why = str(exc)
        if path not in self._bad:
            self._bad[path] = why
            self.log.warning("replay: skipping %s", why)
        return None
