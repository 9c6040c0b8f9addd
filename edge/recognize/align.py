"""The aligned face chip: 5 landmarks -> dlib's 150x150 ``get_face_chip`` layout, in numpy.

The embedding network was trained on chips cut as dlib's ``get_face_chip_details(shape,
size=150, padding=0.25)`` and ``extract_image_chip`` cut them, so this follows those steps:

1. the least-squares similarity transform from dlib's template of the 5 points (in the chip,
   padded by 0.25 of the face on each side) to the landmarks gives the chip's angle, scale and
   centre; the chip covers a rectangle of (150 * scale - 1) pixels centred there (dlib's
   ``centered_drect``), rotated by the angle;
2. when that rectangle is more than twice the chip's size, the image is first halved with
   dlib's ``pyramid_down<2>`` (a 5-tap [1 4 6 4 1] filter, integer arithmetic) as often as
   dlib does, from the same crop, so a large face is not aliased;
3. each chip pixel is read bilinearly (weights in float64, the result truncated to uint8 as
   dlib's pixel assignment does); pixels that fall outside the image are black.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CHIP_SIZE = 150
CHIP_PADDING = 0.25
# dlib's mean positions of its 5 points in a face chip without padding (x, y in [0, 1]),
# from get_face_chip_details (dlib/image_transforms/interpolation.h).
TEMPLATE_POINTS = np.array(
    [
        (0.8595674595992, 0.2134981538014),
        (0.6460604764104, 0.2289674387677),
        (0.1205750620789, 0.2137274526848),
        (0.3340850613712, 0.2290642403242),
        (0.4901123135679, 0.6277975316475),
    ]
)


@dataclass(frozen=True)
class ChipGeometry:
    """Where a chip lies in the image: dlib's ``chip_details``. ``rect`` (left, top, right,
    bottom) before rotation, about its centre, by ``angle`` radians; ``size`` pixels a side."""

    rect: tuple[float, float, float, float]
    angle: float
    size: int


def similarity_transform(from_points: np.ndarray, to_points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(2x2 matrix, translation) of the least-squares similarity transform (rotation, uniform
    scale, translation; no reflection) taking ``from_points`` (N, 2) to ``to_points`` (N, 2):
    Umeyama's method, dlib's ``find_similarity_transform``, in float64."""
    from_points = np.asarray(from_points, dtype=np.float64)
    to_points = np.asarray(to_points, dtype=np.float64)
    mean_from, mean_to = from_points.mean(axis=0), to_points.mean(axis=0)
    src, dst = from_points - mean_from, to_points - mean_to
    sigma_from = float((src**2).sum()) / len(src)
    if sigma_from == 0:
        return np.eye(2), mean_to - mean_from
    a = float((src * dst).sum()) / len(src)
    b = float((src[:, 0] * dst[:, 1] - src[:, 1] * dst[:, 0]).sum()) / len(src)
    matrix = np.array([[a, -b], [b, a]]) / sigma_from
    return matrix, mean_to - matrix @ mean_from


def chip_geometry(landmarks: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> ChipGeometry:
    """dlib's ``get_face_chip_details`` for 5 landmarks ((5, 2) pixels, dlib's point order)."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != TEMPLATE_POINTS.shape:
        raise ValueError(f"landmarks must be (5, 2), got {landmarks.shape}")
    chip_points = (padding + TEMPLATE_POINTS) / (2 * padding + 1) * size
    matrix, offset = similarity_transform(chip_points, landmarks)
    angle = math.atan2(matrix[1, 0], matrix[0, 0])
    scale = math.hypot(matrix[0, 0], matrix[1, 0])
    center = matrix @ np.array([size / 2.0, size / 2.0]) + offset
    half = (size * scale - 1) / 2  # centered_drect: a width of w spans w - 1 between corners
    return ChipGeometry((center[0] - half, center[1] - half, center[0] + half, center[1] + half), angle, size)


def _area(rect: tuple[float, float, float, float]) -> float:
    """dlib's drectangle area: (right - left + 1) * (bottom - top + 1), 0 when empty."""
    left, top, right, bottom = rect
    if left > right or top > bottom:
        return 0.0
    return (right - left + 1) * (bottom - top + 1)


def _rect_down(rect: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """pyramid_down<2>'s mapping of a rectangle to the next level: p / 2 - (1.25, 0.75)."""
    left, top, right, bottom = rect
    return (left / 2 - 1.25, top / 2 - 0.75, right / 2 - 1.25, bottom / 2 - 0.75)


def _rotated_corners(rect: tuple[float, float, float, float], angle: float) -> np.ndarray:
    """(tl, tr, bl, br) of ``rect`` rotated by ``angle`` about its centre, (4, 2) float64."""
    left, top, right, bottom = rect
    center = np.array([(left + right) / 2, (top + bottom) / 2])
    corners = np.array([(left, top), (right, top), (left, bottom), (right, bottom)], dtype=np.float64)
    cos, sin = math.cos(angle), math.sin(angle)
    rotation = np.array([[cos, -sin], [sin, cos]])
    rotated: np.ndarray = (corners - center) @ rotation.T + center
    return rotated


def pyramid_down(image: np.ndarray) -> np.ndarray:
    """dlib's pyramid_down<2> of an (H, W, 3) uint8 image: a [1 4 6 4 1] filter along rows
    and columns in integers, every other pixel kept, the sum divided by 256 (truncated).
    The result is ((H - 3) // 2, (W - 3) // 2, 3); images of 8 pixels or fewer a side give
    an empty one, as in dlib."""
    rows, cols = image.shape[:2]
    if rows <= 8 or cols <= 8:
        return np.zeros((0, 0, *image.shape[2:]), dtype=np.uint8)
    out_cols = (cols - 3) // 2
    taps = (1, 4, 6, 4, 1)
    pixels = image.astype(np.uint32)
    horizontal = np.zeros((rows, out_cols, *image.shape[2:]), dtype=np.uint32)
    for k, tap in enumerate(taps):
        horizontal += tap * pixels[:, k : k + 2 * out_cols : 2]
    out_rows = (rows - 3) // 2
    # dlib's vertical pass centres on rows 2, 4, ... < rows - 2.
    centres = np.arange(2, rows - 2, 2)[:out_rows]
    vertical = np.zeros((out_rows, *horizontal.shape[1:]), dtype=np.uint32)
    for k, tap in enumerate(taps):
        vertical += tap * horizontal[centres + k - 2]
    result: np.ndarray = (vertical // 256).astype(np.uint8)
    return result


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dlib's interpolate_bilinear at (x, y) (same shapes, float64) in an (H, W, 3) uint8
    image: black where a 2x2 neighbourhood is not wholly inside, the value truncated."""
    rows, cols = image.shape[:2]
    out = np.zeros((*x.shape, 3), dtype=np.uint8)
    left = np.floor(x)
    top = np.floor(y)
    inside = (left >= 0) & (top >= 0) & (left + 1 < cols) & (top + 1 < rows)
    if not inside.any():
        return out
    left, top = left[inside], top[inside]
    lr = (x[inside] - left)[:, None]
    tb = (y[inside] - top)[:, None]
    # Flat indices into the (H * W, 3) pixels; gather first, then go to float64, so only
    # chip-many pixels are converted.
    flat = top.astype(np.intp) * cols + left.astype(np.intp)
    pixels = np.ascontiguousarray(image).reshape(-1, 3)
    tl, tr = pixels.take(flat, axis=0), pixels.take(flat + 1, axis=0)
    bl, br = pixels.take(flat + cols, axis=0), pixels.take(flat + cols + 1, axis=0)
    value = (1 - tb) * ((1 - lr) * tl + lr * tr) + tb * ((1 - lr) * bl + lr * br)
    out[inside] = value.astype(np.uint8)  # truncation toward zero, as dlib's static_cast
    return out


def extract_chip(image: np.ndarray, geometry: ChipGeometry) -> np.ndarray:
    """The (size, size, 3) uint8 RGB chip ``geometry`` describes in ``image`` ((H, W, 3)
    uint8 RGB), as dlib's extract_image_chip with bilinear interpolation."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    size = geometry.size
    chip_area = size * size
    rows, cols = image.shape[:2]
    # How many pyramid levels: halve until the next level would be no bigger than the chip.
    depth, grow = 0, 2.0
    rect = _rect_down(geometry.rect)
    while _area(rect) > chip_area:
        rect = _rect_down(rect)
        depth += 1
        grow = grow * 2 + 2
    # dlib cuts the image to the rotated rectangle grown by `grow` pixels (rounded to whole
    # pixels, half away from zero) and builds the pyramid from that crop.
    corners = _rotated_corners(geometry.rect, geometry.angle)
    low = np.maximum(corners.min(axis=0) - grow, 0.0)
    high = np.minimum(corners.max(axis=0) + grow, (cols - 1, rows - 1))
    if (low > high).any():
        return np.zeros((size, size, 3), dtype=np.uint8)
    left, top = (int(math.copysign(math.floor(abs(v) + 0.5), v)) for v in low)
    right, bottom = (int(math.copysign(math.floor(abs(v) + 0.5), v)) for v in high)
    source = image[top : bottom + 1, left : right + 1]
    rect = (geometry.rect[0] - left, geometry.rect[1] - top, geometry.rect[2] - left, geometry.rect[3] - top)
    for _ in range(depth):
        source = pyramid_down(source)
        rect = _rect_down(rect)
    tl, tr, bl, _ = _rotated_corners(rect, geometry.angle)
    # The chip's corners (0, 0), (size-1, 0), (0, size-1) go to the rotated rectangle's.
    steps = np.arange(size, dtype=np.float64) / (size - 1)
    x = tl[0] + steps[None, :] * (tr[0] - tl[0]) + steps[:, None] * (bl[0] - tl[0])
    y = tl[1] + steps[None, :] * (tr[1] - tl[1]) + steps[:, None] * (bl[1] - tl[1])
    return _bilinear(source, x, y)


def face_chip(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The aligned 150x150 chip of the face with these 5 landmarks ((5, 2) pixels)."""
    return extract_chip(image, chip_geometry(landmarks))
