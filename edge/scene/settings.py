"""The ``[events]``, ``[motion]`` and ``[scene]`` sections: presence events, the motion gate,
masks, face-size limits and zones.

Declared here, beside the scene stage they configure, and read by edge.config. Numpy-free and
importing only rank 0 (edge.common), like every ``settings`` module: :class:`Polygon` makes its
array only when the scene code first asks for it. ``[motion]`` and ``[scene]`` are options
dataclasses that check themselves (each raises :class:`~edge.common.options.OptionError`
naming the key), so code that builds them by hand gets the same checks as a config file.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge.common.config_rules import Integer, KeySection, Number, OptionSection, key
from edge.common.options import OptionError, is_number

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class EventsConfig:
    debounce_frames: int = key(Integer(1, 1000), 3)
    clear_after_seconds: float = key(Number(0.0, 86400.0, exclusive_minimum=True), 5.0)


# --- [motion] ----------------------------------------------------------------------------------

# Longest idle interval: a still scene is looked at at least once an hour.
MAX_IDLE_INTERVAL = 3600.0


@dataclass(frozen=True)
class MotionOptions:
    """Settings of the motion gate (the ``[motion]`` config section).

    Each field is checked here, once; a bad value raises :class:`edge.common.options.OptionError`
    naming ``motion.<field>`` (what the config loader reports).

    ``enabled``: gate the detector on motion (False: detect every frame).
    ``idle_interval``: seconds between detections while the scene is still and no face is
    present (a face that sits still is still found within this time).
    ``threshold``: gray levels (1-255) a pixel must differ from the background by to count
    as changed. ``min_area``: fraction (0-1) of the unmasked working copy that must change
    for motion. ``alpha``: background learning rate per frame (0-1, exclusive): how quickly
    something that stopped moving becomes background. ``global_change``: fraction (0-1] of
    pixels changing at once that is taken for a lighting change and resets the background.
    """

    enabled: bool = True
    idle_interval: float = 2.0
    threshold: int = 30
    min_area: float = 0.002
    alpha: float = 0.02
    global_change: float = 0.5

    def __post_init__(self) -> None:
        def check(name: str, good: bool, allowed: str) -> None:
            if not good:
                raise OptionError(f"motion.{name}", getattr(self, name), allowed)

        check("enabled", isinstance(self.enabled, bool), "true or false")
        check(
            "idle_interval",
            is_number(self.idle_interval) and 0 < self.idle_interval <= MAX_IDLE_INTERVAL,
            f"a number of seconds > 0 and <= {MAX_IDLE_INTERVAL:g}",
        )
        check(
            "threshold",
            isinstance(self.threshold, int) and not isinstance(self.threshold, bool) and 1 <= self.threshold <= 255,
            "an integer 1-255 (gray levels)",
        )
        check(
            "min_area",
            is_number(self.min_area) and 0 <= self.min_area < 1,
            "a number >= 0 and < 1 (a fraction of the frame)",
        )
        check("alpha", is_number(self.alpha) and 0 < self.alpha < 1, "a number > 0 and < 1")
        check(
            "global_change",
            is_number(self.global_change) and 0 < self.global_change <= 1,
            "a number > 0 and <= 1 (a fraction of the frame)",
        )
        check(
            "global_change", self.global_change > self.min_area, f"a number above motion.min_area ({self.min_area:g})"
        )


def motion_options_from_toml(table: dict[str, Any], section: str = "motion") -> MotionOptions:
    """The raw ``[motion]`` TOML table -> validated :class:`MotionOptions` (absent keys take
    the defaults); raises :class:`edge.common.options.OptionError` naming the key."""
    known = [f.name for f in dataclasses.fields(MotionOptions)]
    for name in table:
        if name not in known:
            raise OptionError(f"{section}.{name}", name, f"a key of [{section}]: " + ", ".join(known))
    return MotionOptions(**table)


# --- [scene] -----------------------------------------------------------------------------------

ZONE_NAME_PATTERN = re.compile(r"^[a-z0-9_]{1,32}$")
MAX_POLYGON_POINTS = 100
MAX_ZONES = 16
MAX_MASKS = 32
# Largest face-size limit, in pixels: the largest frame height a camera source accepts.
MAX_FACE_SIZE = 8192
# A polygon smaller than this (a millionth of the frame) is a typo, not a region.
MIN_POLYGON_AREA = 1e-6
POLYGON_ALLOWED = f"a list of 3-{MAX_POLYGON_POINTS} [x, y] points, x and y from 0 to 1 (fractions of the frame)"
# Rasterizing tests this many pixel centres at a time: bounds the (pixels, edges) temporaries.


@dataclass(frozen=True)
class Polygon:
    """A simple polygon in normalized frame coordinates; use :func:`make_polygon` to build
    one from config values (it validates the range and the area).

    ``points``: the K >= 3 vertices as a tuple of (x, y) float pairs (given as any (K, 2)
    sequence or array), so options holding polygons compare and hash as values;
    ``vertices``: the same as a read-only (K, 2) float64 array, for the arithmetic, made when
    first asked for (reading a config imports no numpy).
    """

    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        try:
            points = tuple((float(x), float(y)) for x, y in self.points)
        except (TypeError, ValueError):
            points = ()
        if len(points) < 3:
            raise ValueError(f"Polygon points must be (K>=3, 2), got {self.points!r}")
        object.__setattr__(self, "points", points)

    @functools.cached_property
    def vertices(self) -> np.ndarray:
        import numpy as np

        vertices = np.array(self.points, dtype=np.float64)
        vertices.flags.writeable = False
        return vertices

    def to_list(self) -> list[list[float]]:
        return [list(point) for point in self.points]


@dataclass(frozen=True)
class Zone:
    """A named polygon; ``name`` matches :data:`ZONE_NAME_PATTERN` (it becomes part of MQTT
    topics, JSON keys and Home Assistant unique ids)."""

    name: str
    polygon: Polygon


def make_polygon(value: Any, key: str = "polygon") -> Polygon:
    """Config value ``[[x, y], ...]`` -> :class:`Polygon`; raises :class:`OptionError` naming
    ``key`` (e.g. "scene.masks[1]") or the first bad point ("scene.masks[1][2]")."""
    if not isinstance(value, (list, tuple)) or not 3 <= len(value) <= MAX_POLYGON_POINTS:
        raise OptionError(key, value, POLYGON_ALLOWED)
    for index, point in enumerate(value):
        if not (isinstance(point, (list, tuple)) and len(point) == 2 and all(is_number(v) for v in point)):
            raise OptionError(f"{key}[{index}]", point, "a point [x, y] of two numbers")
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in point):
            raise OptionError(f"{key}[{index}]", point, "x and y from 0 to 1 (fractions of the frame width and height)")
    polygon = Polygon(tuple((float(x), float(y)) for x, y in value))
    if polygon_area(polygon.points) < MIN_POLYGON_AREA:
        raise OptionError(key, value, "a polygon with an area: its points lie on one line or repeat")
    return polygon


def polygon_area(points: Sequence[Sequence[float]] | np.ndarray) -> float:
    """(K, 2) vertices (pairs or an array) -> absolute shoelace area (normalized units: 1.0 is
    the whole frame)."""
    doubled = 0.0
    for (x1, y1), (x2, y2) in zip(points, [*points[1:], points[0]], strict=True):
        doubled += float(x1) * float(y2) - float(y1) * float(x2)
    return abs(doubled) / 2.0


def make_zone(name: Any, polygon: Any, key: str = "zone") -> Zone:
    """Config values -> :class:`Zone`; raises :class:`OptionError` (``key``: e.g. "scene.zones[0]")."""
    if not (isinstance(name, str) and ZONE_NAME_PATTERN.fullmatch(name)):
        raise OptionError(f"{key}.name", name, "1-32 characters of a-z, 0-9 and '_'")
    return Zone(name, make_polygon(polygon, f"{key}.polygon"))


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
        if not (is_number(self.min_face_size) and 0 <= self.min_face_size <= MAX_FACE_SIZE):
            raise OptionError(
                "scene.min_face_size", self.min_face_size, f"a number of pixels from 0 to {MAX_FACE_SIZE}"
            )
        if self.max_face_size is not None and not (
            is_number(self.max_face_size) and self.min_face_size < self.max_face_size <= MAX_FACE_SIZE
        ):
            raise OptionError(
                "scene.max_face_size",
                self.max_face_size,
                f"a number of pixels above scene.min_face_size ({self.min_face_size:g}) and at most {MAX_FACE_SIZE}",
            )
        if len(self.masks) > MAX_MASKS:
            raise OptionError("scene.masks", f"{len(self.masks)} masks", f"at most {MAX_MASKS} masks")
        if len(self.zones) > MAX_ZONES:
            raise OptionError("scene.zones", f"{len(self.zones)} zones", f"at most {MAX_ZONES} zones")
        names = [zone.name for zone in self.zones]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise OptionError(f"scene.zones[{index}].name", name, "a name no other zone has")

    @property
    def zone_names(self) -> tuple[str, ...]:
        return tuple(zone.name for zone in self.zones)

    @property
    def active(self) -> bool:
        """False when the options keep every face and define no zone (the filter is a no-op)."""
        return bool(self.masks or self.zones or self.min_face_size > 0 or self.max_face_size is not None)


ZONE_KEYS = ("name", "polygon")


def scene_options_from_toml(table: dict[str, Any], section: str = "scene") -> SceneOptions:
    """The raw ``[scene]`` TOML table (``masks``, ``min_face_size``, ``max_face_size``,
    ``[[scene.zones]]`` with ``name`` and ``polygon``) -> validated :class:`SceneOptions`.
    Absent keys take the dataclass defaults; raises :class:`OptionError` naming the key."""
    defaults = SceneOptions()
    known = [f.name for f in dataclasses.fields(SceneOptions)]
    for name in table:
        if name not in known:
            raise OptionError(f"{section}.{name}", name, f"a key of [{section}]: " + ", ".join(known))
    masks = table.get("masks", [])
    if not isinstance(masks, list):
        raise OptionError(f"{section}.masks", masks, f"a list of polygons, each {POLYGON_ALLOWED}")
    zones = table.get("zones", [])
    if not (isinstance(zones, list) and all(isinstance(zone, dict) for zone in zones)):
        raise OptionError(f"{section}.zones", zones, f"tables written as [[{section}.zones]] with name and polygon")
    parsed_zones = []
    for index, zone in enumerate(zones):
        where = f"{section}.zones[{index}]"
        for name in zone:
            if name not in ZONE_KEYS:
                raise OptionError(f"{where}.{name}", name, "a zone key: name, polygon")
        for name in ZONE_KEYS:
            if name not in zone:
                raise OptionError(f"{where}.{name}", None, f"every [[{section}.zones]] needs a {name}")
        parsed_zones.append(make_zone(zone["name"], zone["polygon"], where))
    return SceneOptions(
        masks=tuple(make_polygon(mask, f"{section}.masks[{index}]") for index, mask in enumerate(masks)),
        min_face_size=table.get("min_face_size", defaults.min_face_size),
        max_face_size=table.get("max_face_size", defaults.max_face_size),
        zones=tuple(parsed_zones),
    )


EVENTS_SECTION = KeySection(EventsConfig)
MOTION_SECTION = OptionSection(MotionOptions, motion_options_from_toml)
SCENE_SECTION = OptionSection(SceneOptions, scene_options_from_toml)
