"""Scene rules applied to the faces of a frame after decode + NMS: masks, face-size limits
and zones. Pure numpy (Pillow only for :func:`draw_scene`).

* Polygons are in normalized frame coordinates (x right, y down, 0..1 of the frame), so one
  configuration fits every camera resolution.
* A face belongs to a polygon when the centre of its box is inside (even-odd rule; a centre
  exactly on an edge may fall either way).
* Masks: a face whose centre is in any mask is dropped (a poster, a TV, a photo on the wall).
  The motion detector ignores the same polygons, rasterized once per frame size.
* Size limits: ``min_face_size`` / ``max_face_size`` are box heights in pixels of the frame
  (box height x frame height), so "faces 6 m away" can be ignored by size.
* Zones: named polygons; each kept face is counted in every zone containing its centre
  (zones may overlap; a face outside every zone is still a face of the frame).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from edge.decode import Detections

ZONE_NAME_PATTERN = re.compile(r"^[a-z0-9_]{1,32}$")
MAX_POLYGON_POINTS = 100
MAX_ZONES = 16
MAX_MASKS = 32
# Rasterizing tests this many pixel centres at a time: bounds the (pixels, edges) temporaries.
_RASTER_CHUNK = 1 << 16


class SceneError(ValueError):
    """A polygon, zone or limit that is not allowed. ``allowed`` says what would be (for a
    config error line); ``str()`` is one line naming what is wrong."""

    def __init__(self, what: str, allowed: str) -> None:
        super().__init__(f"{what}: {allowed}")
        self.what, self.allowed = what, allowed


@dataclass(frozen=True)
class Polygon:
    """A simple polygon in normalized frame coordinates.

    ``points``: (K, 2) float64 [x, y], K >= 3, each in [0, 1]; use :func:`make_polygon` to
    build one from config values (it validates).
    """

    points: np.ndarray

    def __post_init__(self) -> None:
        if self.points.ndim != 2 or self.points.shape[1] != 2 or self.points.shape[0] < 3:
            raise ValueError(f"Polygon.points must be (K>=3, 2), got {self.points.shape}")

    def to_list(self) -> list[list[float]]:
        return self.points.tolist()


@dataclass(frozen=True)
class Zone:
    """A named polygon; ``name`` matches :data:`ZONE_NAME_PATTERN` (it becomes part of MQTT
    topics, JSON keys and Home Assistant unique ids)."""

    name: str
    polygon: Polygon


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def make_polygon(value: Any, what: str = "polygon") -> Polygon:
    """Config value ``[[x, y], ...]`` -> :class:`Polygon`; raises :class:`SceneError` naming
    ``what`` (e.g. "scene.masks[1]") and the first bad point."""
    allowed = f"a list of 3-{MAX_POLYGON_POINTS} [x, y] points, each a number from 0 to 1 (fractions of the frame)"
    if not isinstance(value, (list, tuple)) or not 3 <= len(value) <= MAX_POLYGON_POINTS:
        count = f"{len(value)} points" if isinstance(value, (list, tuple)) else type(value).__name__
        raise SceneError(what, f"{allowed}; got {count}")
    for index, point in enumerate(value):
        if not (isinstance(point, (list, tuple)) and len(point) == 2 and all(_is_number(v) for v in point)):
            raise SceneError(f"{what}[{index}]", f"a point [x, y] of two numbers; got {point!r}")
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in point):
            raise SceneError(f"{what}[{index}]", f"x and y from 0 to 1 (fractions of the frame); got {list(point)!r}")
    points = np.asarray(value, dtype=np.float64)
    if polygon_area(points) < 1e-6:
        raise SceneError(what, "a polygon with an area (its points lie on one line or repeat)")
    return Polygon(points)


def polygon_area(points: np.ndarray) -> float:
    """(K, 2) vertices -> absolute shoelace area (normalized units: 1.0 is the whole frame)."""
    x, y = points[:, 0], points[:, 1]
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2.0


def make_zone(name: Any, polygon: Any, what: str = "zone") -> Zone:
    """Config values -> :class:`Zone`; raises :class:`SceneError`."""
    if not (isinstance(name, str) and ZONE_NAME_PATTERN.fullmatch(name)):
        raise SceneError(f"{what}.name", f"1-32 characters of a-z, 0-9 and '_'; got {name!r}")
    return Zone(name, make_polygon(polygon, f"{what}.polygon"))


def points_in_polygon(points: np.ndarray, polygon: Polygon) -> np.ndarray:
    """(N, 2) float [x, y] -> (N,) bool: inside ``polygon`` by the even-odd rule.

    Vectorized ray casting: a ray from each point towards +x crosses each edge whose y-range
    holds the point's y (half-open, so a vertex is counted once) to the right of the point;
    an odd number of crossings is inside. Memory is (N, K) for K edges.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    px, py = points[:, 0:1], points[:, 1:2]
    x1, y1 = polygon.points[:, 0], polygon.points[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    spans = (y1 > py) != (y2 > py)  # (N, K): the edge straddles the point's row
    with np.errstate(divide="ignore", invalid="ignore"):
        # x where the edge meets the row; horizontal edges never straddle, so never divide by 0 here.
        crossing_x = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
    crossings = spans & (px < crossing_x)
    return (np.count_nonzero(crossings, axis=1) % 2).astype(bool)


def box_centres(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) xyxy -> (N, 2) float64 centres [cx, cy]."""
    boxes = np.asarray(boxes, dtype=np.float64)
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2.0, (boxes[:, 1] + boxes[:, 3]) / 2.0], axis=1)


def rasterize_polygons(polygons: Sequence[Polygon], width: int, height: int) -> np.ndarray:
    """(height, width) bool: pixels whose centre ((x + 0.5) / width, (y + 0.5) / height) is
    inside any of ``polygons``."""
    covered = np.zeros(height * width, dtype=bool)
    if not polygons:
        return covered.reshape(height, width)
    xs = (np.arange(width, dtype=np.float64) + 0.5) / width
    ys = (np.arange(height, dtype=np.float64) + 0.5) / height
    rows_per_chunk = max(1, _RASTER_CHUNK // width)
    for top in range(0, height, rows_per_chunk):
        rows = ys[top : top + rows_per_chunk]
        grid = np.stack([np.tile(xs, rows.size), np.repeat(rows, width)], axis=1)
        inside = np.zeros(grid.shape[0], dtype=bool)
        for polygon in polygons:
            inside |= points_in_polygon(grid, polygon)
        covered[top * width : top * width + grid.shape[0]] = inside
    return covered.reshape(height, width)


@dataclass(frozen=True)
class SceneOptions:
    """The ``[scene]`` config section. ``min_face_size``: faces less tall than this (pixels
    of the frame height) are dropped, 0 keeps all; ``max_face_size``: faces taller are
    dropped, None keeps all."""

    masks: tuple[Polygon, ...] = ()
    min_face_size: float = 0.0
    max_face_size: float | None = None
    zones: tuple[Zone, ...] = ()

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_face_size) and self.min_face_size >= 0):
            raise SceneError("scene.min_face_size", f"a number of pixels >= 0; got {self.min_face_size!r}")
        if self.max_face_size is not None and not (
            math.isfinite(self.max_face_size) and self.max_face_size > self.min_face_size
        ):
            raise SceneError(
                "scene.max_face_size",
                f"a number of pixels above scene.min_face_size ({self.min_face_size:g}); got {self.max_face_size!r}",
            )
        names = [zone.name for zone in self.zones]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise SceneError("scene.zones", f"names must be unique; {duplicates[0]!r} is used twice")
        if len(self.zones) > MAX_ZONES:
            raise SceneError("scene.zones", f"at most {MAX_ZONES} zones; got {len(self.zones)}")
        if len(self.masks) > MAX_MASKS:
            raise SceneError("scene.masks", f"at most {MAX_MASKS} masks; got {len(self.masks)}")

    @property
    def zone_names(self) -> tuple[str, ...]:
        return tuple(zone.name for zone in self.zones)

    @property
    def active(self) -> bool:
        """False when the options keep every face and define no zone (the filter is a no-op)."""
        return bool(self.masks or self.zones or self.min_face_size > 0 or self.max_face_size is not None)


@dataclass(frozen=True)
class SceneResult:
    """The faces kept in one frame and where they are.

    ``detections``: the kept faces, best first (a subset of the input, order kept).
    ``zones``: (N_kept, Z) bool, face i is in zone j (zones in config order).
    ``zone_counts``: {zone name: faces in it}, every zone listed, 0 included.
    ``dropped_masked`` / ``dropped_small`` / ``dropped_large``: faces removed by each rule
    (a face failing several rules is counted once, by the first of mask, small, large).
    """

    detections: Detections
    zones: np.ndarray
    zone_counts: dict[str, int]
    dropped_masked: int = 0
    dropped_small: int = 0
    dropped_large: int = 0

    def faces_in_zone(self, name: str) -> Detections:
        """The kept faces whose centre is in zone ``name``."""
        index = list(self.zone_counts).index(name)
        members = self.zones[:, index]
        return Detections(self.detections.boxes[members], self.detections.scores[members])


def apply_scene(detections: Detections, frame_height: int, options: SceneOptions) -> SceneResult:
    """Drop masked and out-of-size faces, then assign the rest to zones.

    ``detections``: boxes (N, 4) float32 normalized xyxy, scores (N,) float32, after NMS.
    ``frame_height``: pixels; the size limits are box height x frame height.
    """
    boxes = detections.boxes
    count = len(detections)
    if count == 0 or not options.active:
        # The common frame of an empty room: no polygon test to run.
        membership = np.zeros((count, len(options.zones)), dtype=bool)
        return SceneResult(detections, membership, {zone.name: 0 for zone in options.zones})
    centres = box_centres(boxes)
    masked = np.zeros(count, dtype=bool)
    for polygon in options.masks:
        masked |= points_in_polygon(centres, polygon)
    heights = (boxes[:, 3].astype(np.float64) - boxes[:, 1]) * frame_height
    small = ~masked & (heights < options.min_face_size)
    large = ~masked & ~small
    large &= heights > (options.max_face_size if options.max_face_size is not None else np.inf)
    keep = ~(masked | small | large)
    kept = detections if keep.all() else Detections(boxes[keep], detections.scores[keep])
    membership = np.zeros((int(keep.sum()), len(options.zones)), dtype=bool)
    for column, zone in enumerate(options.zones):
        membership[:, column] = points_in_polygon(centres[keep], zone.polygon)
    counts = {zone.name: int(membership[:, column].sum()) for column, zone in enumerate(options.zones)}
    return SceneResult(
        detections=kept,
        zones=membership,
        zone_counts=counts,
        dropped_masked=int(masked.sum()),
        dropped_small=int(small.sum()),
        dropped_large=int(large.sum()),
    )


@dataclass
class SceneFilter:
    """:func:`apply_scene` with its options bound, for the daemon loop (the options may be
    replaced between frames on a config reload). Holds no per-frame state."""

    options: SceneOptions = field(default_factory=SceneOptions)

    def __call__(self, detections: Detections, frame_height: int) -> SceneResult:
        return apply_scene(detections, frame_height, self.options)


# --- drawing ------------------------------------------------------------------------------

MASK_COLOUR = (230, 40, 40)
ZONE_COLOURS = ((40, 160, 255), (255, 200, 0), (200, 80, 255), (0, 220, 200))
KEPT_COLOUR = (0, 255, 0)
DROPPED_COLOUR = (150, 150, 150)


def draw_scene(rgb: np.ndarray, options: SceneOptions, detections: Detections | None = None) -> np.ndarray:
    """Copy of (H, W, 3) uint8 RGB with the masks (shaded red), the zones (outlined, named,
    with their face counts) and, when ``detections`` are given, the faces the scene keeps
    (green, as :func:`edge.imageio.draw_detections`) and drops (gray) drawn on it."""
    from PIL import Image, ImageDraw, ImageFont

    height, width = rgb.shape[:2]
    line = max(2, round(min(width, height) / 200))
    try:
        font = ImageFont.load_default(size=max(11, height // 28))
    except TypeError:  # Pillow < 10.1: one fixed-size bitmap font
        font = ImageFont.load_default()
    text = dict(font=font, stroke_width=1, stroke_fill=(0, 0, 0))
    base = Image.fromarray(rgb).convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    shade = ImageDraw.Draw(overlay)
    scale = np.array([width, height], dtype=np.float64)

    def pixels(polygon: Polygon) -> list[tuple[float, float]]:
        return [tuple(point) for point in (polygon.points * scale).tolist()]

    for polygon in options.masks:
        shade.polygon(pixels(polygon), fill=MASK_COLOUR + (110,))
    for index, zone in enumerate(options.zones):
        shade.polygon(pixels(zone.polygon), fill=ZONE_COLOURS[index % len(ZONE_COLOURS)] + (40,))
    image = Image.alpha_composite(base, overlay).convert("RGB")
    draw = ImageDraw.Draw(image)
    for polygon in options.masks:
        outline = pixels(polygon)
        draw.line(outline + outline[:1], fill=MASK_COLOUR, width=line)
        x, y = outline[0]
        draw.text((x + 2 * line, y + line), "mask", fill=MASK_COLOUR, **text)
    result = apply_scene(detections, height, options) if detections is not None else None
    for index, zone in enumerate(options.zones):
        colour = ZONE_COLOURS[index % len(ZONE_COLOURS)]
        outline = pixels(zone.polygon)
        draw.line(outline + outline[:1], fill=colour, width=line)
        label = zone.name if result is None else f"{zone.name}: {result.zone_counts[zone.name]}"
        x, y = outline[0]
        draw.text((x + 2 * line, y + line), label, fill=colour, **text)
    if detections is not None and result is not None:
        kept = {tuple(box) for box in result.detections.boxes.tolist()}
        for pixel_box, box, score in zip(
            detections.pixel_boxes(width, height).tolist(), detections.boxes.tolist(), detections.scores.tolist()
        ):
            colour = KEPT_COLOUR if tuple(box) in kept else DROPPED_COLOUR
            draw.rectangle(tuple(pixel_box), outline=colour, width=line)
            draw.text((pixel_box[0], pixel_box[3] + line), f"{score:.2f}", fill=colour, **text)
    return np.asarray(image)
