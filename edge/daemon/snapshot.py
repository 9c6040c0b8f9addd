"""Snapshot: the frame that caused an event, boxes drawn, as a JPEG no larger than a cap.

Off by default (a camera image leaving the device is a privacy decision). The cap keeps a
retained MQTT message small: quality is lowered first, then the image is scaled down.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

from edge.detect.decode import Detections
from edge.sources.imageio import draw_face_boxes, encode_jpeg, pillow_image

if TYPE_CHECKING:  # Pillow is imported where a snapshot is made: only when snapshots are on
    from PIL import Image

_LOWEST_QUALITY = 40
_QUALITY_STEP = 15
_SCALES = (1.0, 0.75, 0.5, 0.35, 0.25)


def encode_snapshot(
    pixels: np.ndarray, color_order: str, detections: Detections, max_bytes: int, quality: int
) -> bytes | None:
    """(H, W, 3) uint8 frame in ``color_order`` + its detections -> JPEG bytes <= ``max_bytes``.

    Tries ``quality``, then lower qualities down to 40, then 75%, 50%, 35% and 25% of the
    size; returns None if even the smallest does not fit.
    """
    # One copy of the frame, drawn on in place and encoded at every quality and scale: each
    # conversion between array and image would hold another copy (2 more per snapshot before;
    # memory is the Pi's scarcest resource).
    drawn = pillow_image(pixels, color_order)
    draw_face_boxes(drawn, detections)
    qualities = list(range(quality, _LOWEST_QUALITY - 1, -_QUALITY_STEP)) or [quality]
    if qualities[-1] > _LOWEST_QUALITY:
        qualities.append(_LOWEST_QUALITY)
    buffer = io.BytesIO()
    for scale in _SCALES:
        image = drawn if scale == 1.0 else _scaled(drawn, scale)
        for q in qualities:
            buffer.seek(0)
            buffer.truncate()
            image.save(buffer, format="JPEG", quality=q)
            if buffer.tell() <= max_bytes:
                return buffer.getvalue()
        del image  # one scaled copy at a time: the next is made after this one is gone
    return None


def _scaled(image: Image.Image, scale: float) -> Image.Image:
    from PIL import Image

    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


def placeholder_jpeg(width: int = 320, height: int = 240) -> bytes:
    """A plain dark-grey JPEG: what the "last face" image shows before any face was seen, so
    Home Assistant's image entity is never empty (a 500 from its proxy) while the daemon runs."""
    return encode_jpeg(np.full((height, width, 3), 48, dtype=np.uint8), 80)
