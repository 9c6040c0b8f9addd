"""Reading and writing still images (Pillow): photo replay, the CLI, snapshots.

Every failure is an :class:`ImageError` whose message names the file and says what is wrong,
so a caller can print it as one line and carry on with the next image.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np

from edge.decode import Detections

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


class ImageError(Exception):
    """An image that cannot be read or written; the message names the file."""


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file -> (H, W, 3) uint8 RGB, EXIF orientation applied."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file must fail here, not later
            image = ImageOps.exif_transpose(image)
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise ImageError(f"image '{path}': no such file") from None
    except IsADirectoryError:
        raise ImageError(f"image '{path}': is a directory") from None
    except UnidentifiedImageError:
        raise ImageError(f"image '{path}': not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"image '{path}': corrupt or truncated ({exc})") from None


def draw_detections(rgb: np.ndarray, detections: Detections) -> np.ndarray:
    """Copy of (H, W, 3) uint8 RGB with each face box and its score drawn on it."""
    from PIL import Image, ImageDraw

    height, width = rgb.shape[:2]
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    line = max(2, round(min(width, height) / 200))
    for (x1, y1, x2, y2), score in zip(detections.pixel_boxes(width, height), detections.scores):
        draw.rectangle((x1, y1, x2, y2), outline=(0, 255, 0), width=line)
        draw.text((x1 + line, max(0.0, y1 - 12 - line)), f"{score:.2f}", fill=(0, 255, 0))
    return np.asarray(image)


def encode_jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    """(H, W, 3) uint8 RGB -> JPEG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def save_image(rgb: np.ndarray, path: str | os.PathLike) -> None:
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
