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

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edge.detect.decode import Detections

# The [scene] section (polygons, zones, limits) is declared with the other scene settings; its
# names are this module's too.
from edge.scene.settings import MAX_FACE_SIZE as MAX_FACE_SIZE
from edge.scene.settings import MAX_MASKS as MAX_MASKS
from edge.scene.settings import MAX_POLYGON_POINTS as MAX_POLYGON_POINTS
from edge.scene.settings import MAX_ZONES as MAX_ZONES
from edge.scene.settings import MIN_POLYGON_AREA as MIN_POLYGON_AREA
from edge.scene.settings import POLYGON_ALLOWED as POLYGON_ALLOWED
from edge.scene.settings import ZONE_KEYS as ZONE_KEYS
from edge.scene.settings import ZONE_NAME_PATTERN as ZONE_NAME_PATTERN
from edge.scene.settings import Polygon as Polygon
from edge.scene.settings import SceneOptions as SceneOptions
from edge.scene.settings import Zone as Zone
from edge.scene.settings import make_polygon as make_polygon
from edge.scene.settings import make_zone as make_zone
from edge.scene.settings import polygon_area as polygon_area
from edge.scene.settings import scene_options_from_toml as scene_options_from_toml

# Rasterizing tests this many pixel centres at a time: bounds the (pixels, edges) temporaries.
_RASTER_CHUNK = 1 << 16


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
    x1, y1 = polygon.vertices[:, 0], polygon.vertices[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    spans = (y1 > py) != (y2 > py)  # (N, K): the edge straddles the point's row
    with np.errstate(divide="ignore", invalid="ignore"):
        # x where the edge meets the row; horizontal edges never straddle, so never divide by 0 here.
        crossing_x = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
    crossings = spans & (px < crossing_x)
    inside: np.ndarray = (np.count_nonzero(crossings, axis=1) % 2).astype(bool)
    return inside


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
    (green, as :func:`edge.sources.imageio.draw_detections`) and drops (gray) drawn on it."""
    from PIL import Image, ImageDraw, ImageFont

    height, width = rgb.shape[:2]
    line = max(2, round(min(width, height) / 200))
    try:
        font = ImageFont.load_default(size=max(11, height // 28))
    except TypeError:  # Pillow < 10.1: one fixed-size bitmap font
        font = ImageFont.load_default()
    base = Image.fromarray(rgb).convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    shade = ImageDraw.Draw(overlay)
    scale = np.array([width, height], dtype=np.float64)

    def pixels(polygon: Polygon) -> list[tuple[float, float]]:
        return [tuple(point) for point in (polygon.vertices * scale).tolist()]

    for polygon in options.masks:
        shade.polygon(pixels(polygon), fill=(*MASK_COLOUR, 110))
    for index, zone in enumerate(options.zones):
        shade.polygon(pixels(zone.polygon), fill=ZONE_COLOURS[index % len(ZONE_COLOURS)] + (40,))
    image = Image.alpha_composite(base, overlay).convert("RGB")
    draw = ImageDraw.Draw(image)

    def label(xy: tuple[float, float], words: str, colour: tuple[int, int, int]) -> None:
        draw.text(xy, words, fill=colour, font=font, stroke_width=1, stroke_fill=(0, 0, 0))

    for polygon in options.masks:
        outline = pixels(polygon)
        draw.line(outline + outline[:1], fill=MASK_COLOUR, width=line)
        x, y = outline[0]
        label((x + 2 * line, y + line), "mask", MASK_COLOUR)
    result = apply_scene(detections, height, options) if detections is not None else None
    for index, zone in enumerate(options.zones):
        colour = ZONE_COLOURS[index % len(ZONE_COLOURS)]
        outline = pixels(zone.polygon)
        draw.line(outline + outline[:1], fill=colour, width=line)
        name = zone.name if result is None else f"{zone.name}: {result.zone_counts[zone.name]}"
        x, y = outline[0]
        label((x + 2 * line, y + line), name, colour)
    if detections is not None and result is not None:
        kept = {tuple(box) for box in result.detections.boxes.tolist()}
        for pixel_box, box, score in zip(
            detections.pixel_boxes(width, height).tolist(),
            detections.boxes.tolist(),
            detections.scores.tolist(),
            strict=True,
        ):
            colour = KEPT_COLOUR if tuple(box) in kept else DROPPED_COLOUR
            draw.rectangle(tuple(pixel_box), outline=colour, width=line)
            label((pixel_box[0], pixel_box[3] + line), f"{score:.2f}", colour)
    return np.asarray(image)
