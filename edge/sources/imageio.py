"""Reading and writing still images (Pillow): photo replay, the CLI, snapshots.

Every failure is an :class:`ImageError` whose message is one line naming the file and the
cause, so a caller can print or log it and carry on with the next image.

Decoding is bounded: the pixel count is read from the file's header before anything is
decoded. Over ``max_pixels`` (``camera.max_pixels``), a JPEG is decoded at 1/2, 1/4 or 1/8
scale by libjpeg itself (Pillow's draft mode, never the full image in memory); any other
format is refused. Every mode Pillow reads becomes (H, W, 3) uint8 RGB; EXIF orientation is
applied; animated or multi-page files give their first frame.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge.common.files import open_regular_file, os_reason
from edge.config import DEFAULT_MAX_PIXELS, quote_path
from edge.detect.decode import Detections

if TYPE_CHECKING:  # Pillow is imported where an image is decoded, not at start-up
    from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
_JPEG_SCALES = (2, 4, 8)  # what libjpeg can decode to directly
_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_EXIF_ORIENTATION = 0x0112
# Decoded pixels are copied out of Pillow this many bytes at a time (see _rgb_pixels).
_STRIPE_BYTES = 1 << 18


class ImageError(Exception):
    """An image that cannot be read or written; the message is one line naming the file."""


@dataclass(frozen=True)
class DecodedImage:
    """``pixels``: (H, W, 3) uint8 RGB, upright; smaller than the stored image when a large
    JPEG was decoded at reduced scale. ``source_width`` x ``source_height``: the stored
    image's size, upright (what a viewer shows)."""

    pixels: np.ndarray
    source_width: int
    source_height: int

    @property
    def reduced(self) -> bool:
        height, width = self.pixels.shape[:2]
        return bool(width != self.source_width or height != self.source_height)


def load_image(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file -> (H, W, 3) uint8 RGB; see :func:`decode_image`."""
    return decode_image(path, max_pixels).pixels


def decode_image(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode the first frame of an image file with at most ``max_pixels`` decoded pixels;
    raises :class:`ImageError`. Never blocks on a FIFO, never reads a device."""
    from PIL import Image, UnidentifiedImageError

    where = f"image '{quote_path(path)}'"
    try:
        handle = open_regular_file(path)
    except (OSError, ValueError) as exc:
        reason = os_reason(exc)
        raise ImageError(
            f"{where}: {reason if reason.startswith(('no such', 'is ')) else f'cannot be read ({reason})'}"
        ) from None
    with handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise ImageError(f"{where}: is empty (0 bytes)")
        try:
            with warnings.catch_warnings():
                # Our own limit (checked next) is lower than Pillow's warning threshold.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(handle)
            with image:
                pixels, orientation, size = _decode_bounded(image, where, max_pixels)
        except ImageError:
            raise
        except Image.DecompressionBombError as exc:
            raise ImageError(f"{where}: refused as a decompression bomb ({str(exc).split(', could be')[0]})") from None
        except UnidentifiedImageError:
            raise ImageError(f"{where}: not a readable image (unknown format or corrupt header)") from None
        except MemoryError:
            raise ImageError(f"{where}: not enough memory to decode it") from None
        except Exception as exc:  # Pillow's plugins raise a zoo of types on malformed input
            raise ImageError(f"{where}: corrupt or truncated ({_reason(exc)})") from None
    pixels = _upright(pixels, orientation)
    width, height = size if orientation < 5 else size[::-1]
    return DecodedImage(pixels=pixels, source_width=width, source_height=height)


def _decode_bounded(image: Image.Image, where: str, max_pixels: int) -> tuple[np.ndarray, int, tuple[int, int]]:
    """(RGB pixels, EXIF orientation 1-8, stored size) of an opened Pillow image."""
    width, height = image.size
    if width * height > max_pixels:
        if image.format != "JPEG":
            raise ImageError(
                f"{where}: {width}x{height} {image.format or 'image'} is {width * height} pixels, over the limit of "
                f"{max_pixels} (camera.max_pixels); only JPEGs are decoded at reduced scale"
            )
        scale = next((s for s in _JPEG_SCALES if -(-width // s) * -(-height // s) <= max_pixels), None)
        if scale is None:
            raise ImageError(
                f"{where}: {width}x{height} JPEG is {width * height} pixels, over the limit of {max_pixels} "
                f"(camera.max_pixels) even at 1/{_JPEG_SCALES[-1]} scale"
            )
        image.draft("RGB", (width // scale, height // scale))
        if image.size[0] * image.size[1] > max_pixels:  # draft chose less than asked
            raise ImageError(f"{where}: {width}x{height} JPEG cannot be decoded within {max_pixels} pixels")
    image.load()  # decode now: a truncated file must fail here, not later
    return to_rgb(image), _orientation(image), (width, height)


def to_rgb(image: Image.Image) -> np.ndarray:
    """A loaded Pillow image of any mode -> (H, W, 3) uint8 RGB.

    16-bit and 32-bit grey (I;16, I) and float (F) are scaled to 8 bits, not clipped (a
    16-bit PNG would otherwise come out almost white); palettes and alpha go through RGBA,
    so a transparent palette entry is handled and the alpha then dropped."""
    mode = image.mode
    if mode == "RGB":
        return _rgb_pixels(image)
    if mode in _HIGH_BIT_MODES:
        grey = _to_uint8(np.asarray(image))
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in ("P", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
    try:
        converted = image.convert("RGB")
    except ValueError as exc:  # a mode Pillow cannot convert
        raise ValueError(f"unsupported image mode {mode!r} ({exc})") from None
    return _rgb_pixels(converted)


def _rgb_pixels(image: Image.Image) -> np.ndarray:
    """A loaded RGB Pillow image -> (H, W, 3) uint8, copied a stripe of rows at a time.

    ``np.asarray(image)`` goes through ``tobytes()``, which holds the packed pixels twice
    (its chunks, then their join) on top of Pillow's own 4 bytes per pixel: 10 bytes per
    pixel at its peak, for every replayed frame. Stripes keep it at 7 (a 1600x1200 photo:
    6 MB less)."""
    width, height = image.size
    pixels = np.empty((height, width, 3), np.uint8)
    rows = max(1, _STRIPE_BYTES // (3 * width))
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        stripe = image.crop((0, top, width, bottom)).tobytes()
        pixels[top:bottom] = np.frombuffer(stripe, np.uint8).reshape(bottom - top, width, 3)
    return pixels


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """(H, W) grey of any depth -> (H, W) uint8. 16-bit data (I;16) by its nominal range;
    float data in [0, 1] as fractions; other data already in 0-255 as is, in 0-65535 as
    16-bit; anything else stretched from its minimum to its maximum."""
    if values.dtype.kind == "u" and values.dtype.itemsize == 2:
        return (values >> 8).astype(np.uint8)
    is_float = values.dtype.kind == "f"
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if is_float and low >= 0.0 and high <= 1.0:
        return np.round(values * 255.0).astype(np.uint8)
    if low >= 0.0 and high <= 255.0:
        return np.round(values).astype(np.uint8)
    if low >= 0.0 and high <= 65535.0:
        return (values / 257.0).round().astype(np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a corrupt EXIF block only loses the orientation, not the image
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """(H, W, 3) as stored -> as a viewer shows it, per EXIF orientation 1-8."""
    if orientation == 1:
        return pixels
    transforms = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 1)[:, ::-1],
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(transforms[orientation](pixels))


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:200]


def draw_detections(rgb: np.ndarray, detections: Detections) -> np.ndarray:
    """Copy of (H, W, 3) uint8 RGB with each face box and its score drawn on it."""
    image = pillow_image(rgb, "RGB")
    draw_face_boxes(image, detections)
    return np.asarray(image)


FACE_COLOUR = (0, 255, 0)


def draw_face_boxes(image: Image.Image, detections: Detections, colour: tuple[int, int, int] = FACE_COLOUR) -> None:
    """Draw each face box of ``detections`` (normalized) and its score on a Pillow RGB image, in place."""
    from PIL import ImageDraw, ImageFont

    width, height = image.size
    draw = ImageDraw.Draw(image)
    # Pillow's bitmap font: newer Pillows default to a FreeType font, whose libraries cost
    # the daemon about a megabyte of RSS for a two-digit score (Pillow < 10.1: the default is it).
    font = getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)()
    line = max(2, round(min(width, height) / 200))
    for (x1, y1, x2, y2), score in zip(detections.pixel_boxes(width, height), detections.scores, strict=True):
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=line)
        draw.text((x1 + line, max(0.0, y1 - 12 - line)), f"{score:.2f}", fill=colour, font=font)


def pillow_image(pixels: np.ndarray, color_order: str) -> Image.Image:
    """(H, W, 3) uint8 in ``color_order`` ("RGB" or "BGR") -> a Pillow RGB image, in one
    copy of the frame (a BGR frame is flipped by Pillow's unpacker while it copies)."""
    from PIL import Image

    if color_order not in ("RGB", "BGR"):
        raise ValueError(f"color_order must be RGB or BGR, got {color_order!r}")
    height, width = pixels.shape[:2]
    # frombuffer reads the buffer as packed rows: a strided view (e.g. the colour channels
    # of a BGRA camera buffer) is packed first.
    packed = np.ascontiguousarray(pixels)
    return Image.frombuffer("RGB", (width, height), packed, "raw", color_order, 0, 1)


def encode_jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    """(H, W, 3) uint8 RGB -> JPEG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def save_image(rgb: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Write (H, W, 3) uint8 RGB to ``path`` (format from the suffix), atomically."""
    from PIL import Image

    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            Image.fromarray(rgb).save(handle, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))
        os.replace(tmp, path)
    except (OSError, ValueError) as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ImageError(f"image '{path}': cannot write ({exc})") from None


def save_new_image(
    rgb: np.ndarray, folder: Path, stem: str, suffix: str = ".jpg", skip: frozenset[str] = frozenset()
) -> Path:
    """Write (H, W, 3) uint8 RGB as a NEW file in ``folder``: ``stem`` + ``suffix``, or
    ``stem-1``, ``stem-2``, ... when that name exists or is in ``skip`` (names already given
    out). Never overwrites, never leaves a partial file: the image is written to a temp file
    and hard-linked under the first free name (link fails if the name exists, atomically).
    Returns the path written; raises :class:`ImageError`."""
    from PIL import Image

    folder = Path(folder)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=suffix)
    except OSError as exc:
        raise ImageError(f"image folder '{quote_path(folder)}': cannot write ({os_reason(exc)})") from None
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the copy from everyone else
        with os.fdopen(fd, "wb") as handle:
            Image.fromarray(rgb).save(handle, format=Image.registered_extensions().get(suffix.lower(), "PNG"))
        for number in range(10_000):
            name = f"{stem}{suffix}" if number == 0 else f"{stem}-{number}{suffix}"
            if name in skip:
                continue
            target = folder / name
            try:
                os.link(tmp, target)
                return target
            except FileExistsError:
                continue
            except OSError:  # no hard links here (e.g. FAT): claim the name, then replace it
                try:
                    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                except FileExistsError:
                    continue
                os.replace(tmp, target)
                return target
        raise ImageError(f"image folder '{quote_path(folder)}': no free name for {stem}{suffix}")
    except (OSError, ValueError) as exc:
        raise ImageError(f"image '{quote_path(folder / (stem + suffix))}': cannot write ({_reason(exc)})") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
