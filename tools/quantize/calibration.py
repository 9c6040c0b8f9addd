"""Calibration photos: decoded and resized exactly as on the device, in a fixed order, with a
digest recorded in the sidecar (step 3's input, step 5's test set)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.detect.preprocess import resize_bilinear
from edge.sources.base import SourceError
from edge.sources.imageio import ImageError, load_image
from edge.sources.replay import list_images
from tools import weights as weights_store
from tools.quantize.variants import BuildError
from tools.shared_data import upstream_dir


@dataclass(frozen=True)
class CalibrationSet:
    """Photos resized to the model input. ``images``: (n, H, W, 3) uint8 RGB, in ``files`` order."""

    folder_name: str
    files: tuple[Path, ...]
    images: np.ndarray
    sha256: str


def _resize_for_model(path: Path, width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8 RGB: the photo at ``path`` decoded and resized exactly as the
    device pipeline does it (``edge.sources.imageio`` + ``edge.detect.preprocess``), so calibration sees the
    same pixel statistics as the deployed model."""
    try:
        return resize_bilinear(load_image(path), width, height)
    except ImageError as error:
        raise BuildError(str(error)) from None


def calibration_files(folder: Path, limit: int | None = None) -> tuple[Path, ...]:
    """Image files of ``folder`` sorted by name (a fixed order keeps the build reproducible),
    listed exactly as a replay source lists them."""
    try:
        files = list_images(folder)
    except SourceError as error:
        raise BuildError(f"calibration photos: {error}") from None
    return tuple(files[:limit])


def files_digest(files: Sequence[Path]) -> str:
    """sha256 over each file's name, a NUL byte and its bytes, in the given order."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode("utf-8") + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def load_calibration_set(folder: Path, width: int, height: int, limit: int | None = None) -> CalibrationSet:
    files = calibration_files(folder, limit)
    images = np.stack([_resize_for_model(path, width, height) for path in files])
    return CalibrationSet(folder.name, files, images, files_digest(files))


def with_full_input_range(images: np.ndarray) -> np.ndarray:
    """A copy of (n, H, W, 3) uint8 ``images`` whose pixels include both 0 and 255.

    The converter derives the input quantization from the calibrated input min/max; only the
    range [(0 - 127)/128, (255 - 127)/128] gives exactly scale 1/128 and zero point -1. When
    the photos lack a pure black or white pixel after resizing, one corner pixel of the first
    photo is set to it: a one-pixel change that barely moves any other tensor's range.
    """
    pinned = images.copy()
    if pinned.min() > 0:
        pinned[0, 0, 0, :] = 0
    if pinned.max() < 255:
        pinned[0, 0, 1, :] = 255
    return pinned


def default_calibration_dir() -> Path:
    """The local upstream photos when there is a local copy, else the pinned sample photos
    (fetched and hash-checked into models/cache/samples): a fresh machine can build too."""
    local = upstream_dir() / "images"
    if local.is_dir():
        return local
    try:
        return weights_store.fetch_samples()
    except weights_store.WeightsError as error:
        raise BuildError(f"calibration photos: {error}") from None
