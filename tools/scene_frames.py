"""Camera-like frame sequences made from the real upstream photos, for the motion-gate tests
and the scene benchmark: a face-free room (a crop of a real photo), a real face cut out of
another photo, and that face walking through the room.

Nothing here is random: the same photos give the same frames, so a test's expectation and
a benchmark's figures can be reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.detect.preprocess import resize_bilinear
from edge.sources.imageio import load_image

# A crop of an office photo (monitors, desks, ceiling lights) in which the model finds no
# face even at score 0.5: the "empty room". Tests check that precondition with the model.
BACKGROUND_PHOTO = "5.jpg"
BACKGROUND_CROP = (0, 0, 409, 307)  # x1, y1, x2, y2 in the photo's pixels (4:3)
# A portrait whose best face is cut out (with hair and chin around it) and walked through.
FACE_PHOTO = "13.jpg"
# How much larger than the detector's box the cut-out is: a face needs its surroundings.
FACE_MARGIN = 1.8


def background_frame(images_dir: Path, width: int = 320, height: int = 240) -> np.ndarray:
    """The empty room: (height, width, 3) uint8 RGB."""
    photo = load_image(Path(images_dir) / BACKGROUND_PHOTO)
    x1, y1, x2, y2 = BACKGROUND_CROP
    return resize_bilinear(np.ascontiguousarray(photo[y1:y2, x1:x2]), width, height)


def face_patch(images_dir: Path, detector, patch_height: int = 90) -> np.ndarray:
    """The best-scoring face of :data:`FACE_PHOTO`, cut out with :data:`FACE_MARGIN` around
    its box and scaled to ``patch_height`` rows: (patch_height, w, 3) uint8 RGB."""
    photo = load_image(Path(images_dir) / FACE_PHOTO)
    height, width = photo.shape[:2]
    detections = detector.detect(photo)
    if len(detections) == 0:
        raise RuntimeError(f"no face found in {FACE_PHOTO}")
    x1, y1, x2, y2 = detections.pixel_boxes(width, height)[0]
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half_w, half_h = (x2 - x1) * FACE_MARGIN / 2, (y2 - y1) * FACE_MARGIN / 2
    left, top = int(max(0, cx - half_w)), int(max(0, cy - half_h))
    right, bottom = int(min(width, cx + half_w)), int(min(height, cy + half_h))
    crop = np.ascontiguousarray(photo[top:bottom, left:right])
    patch_width = max(1, round(crop.shape[1] * patch_height / crop.shape[0]))
    return resize_bilinear(crop, patch_width, patch_height)


def paste(frame: np.ndarray, patch: np.ndarray, x: int, y: int) -> np.ndarray:
    """Copy of ``frame`` with ``patch`` placed with its top-left corner at (x, y); parts
    outside the frame are cut off."""
    out = frame.copy()
    height, width = frame.shape[:2]
    ph, pw = patch.shape[:2]
    fx1, fy1, fx2, fy2 = max(0, x), max(0, y), min(width, x + pw), min(height, y + ph)
    if fx1 < fx2 and fy1 < fy2:
        out[fy1:fy2, fx1:fx2] = patch[fy1 - y : fy2 - y, fx1 - x : fx2 - x]
    return out


@dataclass(frozen=True)
class SceneClip:
    """A sequence of frames and, per frame, how much of the face cut-out is in the picture.

    ``frames``: list of (H, W, 3) uint8 RGB; ``visible``: (len(frames),) float64, 0..1.
    """

    frames: list[np.ndarray]
    visible: np.ndarray


def walk_through(background: np.ndarray, patch: np.ndarray, steps: int, pause: int = 0) -> SceneClip:
    """The face enters from the left edge, walks to the middle in ``steps`` frames, stays
    still for ``pause`` frames, and walks out to the right in ``steps`` frames; every frame
    of the walk moves it."""
    height, width = background.shape[:2]
    ph, pw = patch.shape[:2]
    y = (height - ph) // 2
    middle = (width - pw) // 2
    xs = list(np.linspace(-pw, middle, steps + 1).round().astype(int)[1:])
    xs += [middle] * pause
    xs += list(np.linspace(middle, width, steps + 1).round().astype(int)[1:])
    frames = [paste(background, patch, x, y) for x in xs]
    visible = np.array([(min(width, x + pw) - max(0, x)) / pw for x in xs]).clip(0.0, 1.0)
    return SceneClip(frames, visible)
