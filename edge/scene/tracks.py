"""Face tracks: a track id per face across frames, and which views of a track are worth a
recognition. Pure numpy; the tracker knows nothing of names (see :mod:`edge.recognize.identity`).

:class:`Tracker` is fed each detected frame's :class:`edge.detect.decode.Detections` (normalized
xyxy boxes, best first) with the frame's monotonic time and, optionally, a sharpness per face
(:func:`view_sharpness`); it returns a :class:`TrackFrame`: a track id per detection, the
tracks that started and ended, and per detection whether this view goes to recognition.

Matching (:func:`greedy_match`): each live track is scored against each detection by IoU,
the larger of the IoU with the track's last box and with that box moved on by the track's
last displacement per frame (a walking face can move most of its width between frames; a
face that stops still matches where it was). Pairs at or above ``min_iou`` are taken greedily,
best IoU first. Greedy is enough here: a frame holds a handful of faces and NMS has already
kept apart any two boxes overlapping by more than its IoU threshold, so a track's own next box
is nearly always by far its best match and greedy and optimal (Hungarian) assignments agree;
where they could differ, two faces overlap so much that neither assignment is trustworthy.
Greedy is O(P log P) over the P candidate pairs with no solver to ship (scipy is not a device
dependency).

Lifetime: a track survives ``max_missed`` consecutive frames without a match (a blink, a
frame the detector missed) and ends on the next; ids count up from 1 per tracker and are never
reused; at most ``max_tracks`` tracks live at once (memory is bounded whatever the input): a
face that would start one more evicts the longest-unseen track, or, when every live track was
seen in this very frame, stays :data:`UNTRACKED`.

Views (:func:`decide_view`): a track's first view is recognized ("new"), then its next views
until it has had ``initial_views`` ("early": an identity needs several views, and a face
standing still never offers a bigger one), then only a clearly better view: ``bigger_ratio``
times the area of the largest view recognized so far ("bigger"), or ``sharper_ratio`` times
its sharpness at not much less area ("sharper"). Views are at least ``min_view_frames`` frames
and ``min_view_seconds`` apart, at most ``max_views`` per track: recognition never runs on
every frame.

"Frames" are calls to :meth:`Tracker.update` (detected frames; frames the motion gate skipped
do not count).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from edge.detect.decode import Detections

UNTRACKED = -1
"""Track id of a detection left out because ``max_tracks`` tracks were all seen in its frame."""

ViewReason = Literal["new", "early", "bigger", "sharper"]

# Laplacian variance needs a 3x3 neighbourhood; a smaller crop has no sharpness.
_MIN_SHARPNESS_SIDE = 3


@dataclass(frozen=True)
class TrackerOptions:
    """How faces are tracked and how often a track is recognized (see the module docstring).

    ``min_iou``: IoU (0, 1] a detection needs with a track to continue it; ``max_missed``:
    consecutive frames (>= 0) a track survives unmatched; ``max_tracks``: live tracks at most
    (>= 1); ``initial_views``: views recognized whatever their quality (1..``max_views``);
    ``bigger_ratio`` / ``sharper_ratio``: how much bigger (area) / sharper a later view must be
    than the best recognized so far (> 1); ``min_view_frames`` (>= 1) and ``min_view_seconds``
    (>= 0): the least spacing between two recognized views of one track; ``max_views``:
    recognized views per track at most (>= 1). Raises ValueError naming the field.
    """

    min_iou: float = 0.3
    max_missed: int = 5
    max_tracks: int = 32
    initial_views: int = 3
    bigger_ratio: float = 1.5
    sharper_ratio: float = 1.5
    min_view_frames: int = 3
    min_view_seconds: float = 0.5
    max_views: int = 6

    def __post_init__(self) -> None:
        checks = (
            ("min_iou", 0.0 < self.min_iou <= 1.0, "in (0, 1]"),
            ("max_missed", self.max_missed >= 0, ">= 0"),
            ("max_tracks", self.max_tracks >= 1, ">= 1"),
            ("max_views", self.max_views >= 1, ">= 1"),
            ("initial_views", 1 <= self.initial_views <= self.max_views, f"in 1..max_views ({self.max_views})"),
            ("bigger_ratio", math.isfinite(self.bigger_ratio) and self.bigger_ratio > 1.0, "> 1"),
            ("sharper_ratio", math.isfinite(self.sharper_ratio) and self.sharper_ratio > 1.0, "> 1"),
            ("min_view_frames", self.min_view_frames >= 1, ">= 1"),
            ("min_view_seconds", math.isfinite(self.min_view_seconds) and self.min_view_seconds >= 0.0, ">= 0"),
        )
        for name, good, allowed in checks:
            if not good:
                raise ValueError(f"TrackerOptions.{name} must be {allowed}, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class ViewHistory:
    """What recognition has been given of one track: ``views`` recognized so far, the largest
    area (normalized, clipped to the frame) and sharpness among them (None: none measured), and
    the frame number and time of the last one (None before the first)."""

    views: int = 0
    best_area: float = 0.0
    best_sharpness: float | None = None
    last_frame: int | None = None
    last_time: float | None = None

    def after_view(self, area: float, sharpness: float | None, frame: int, time: float) -> ViewHistory:
        """This history once the view (``area``, ``sharpness``) of ``frame`` at ``time`` went to recognition."""
        best_sharpness = self.best_sharpness
        if sharpness is not None:
            best_sharpness = sharpness if best_sharpness is None else max(best_sharpness, sharpness)
        return ViewHistory(self.views + 1, max(self.best_area, area), best_sharpness, frame, time)


@dataclass(frozen=True)
class TrackFrame:
    """What one frame did to the tracks.

    ``track_ids``: (N,) int64, read-only, the track of each detection of the frame in the
    detections' order (:data:`UNTRACKED` when the cap left one out); ``views``: per detection,
    why its view goes to recognition, or None when it does not; ``started`` / ``ended``: ids of
    the tracks that started / ended with this frame, ascending (an ended track's id is never
    given again).
    """

    track_ids: np.ndarray
    views: tuple[ViewReason | None, ...]
    started: tuple[int, ...]
    ended: tuple[int, ...]

    def to_recognize(self) -> tuple[int, ...]:
        """Indices of the detections whose views go to recognition, in detection order."""
        return tuple(index for index, reason in enumerate(self.views) if reason is not None)


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, 4) and (B, 4) xyxy boxes (any float dtype, one coordinate system) -> (A, B) float64
    IoU; an empty or inverted box has IoU 0 with everything. IoU does not change when x and y
    are scaled, so normalized and pixel boxes give the same values."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.maximum(a[:, 2] - a[:, 0], 0.0) * np.maximum(a[:, 3] - a[:, 1], 0.0)
    area_b = np.maximum(b[:, 2] - b[:, 0], 0.0) * np.maximum(b[:, 3] - b[:, 1], 0.0)
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    overlap = np.maximum(width, 0.0) * np.maximum(height, 0.0)
    union = area_a[:, None] + area_b[None, :] - overlap
    iou: np.ndarray = np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0.0)
    return iou


def greedy_match(scores: np.ndarray, min_score: float) -> list[tuple[int, int]]:
    """(T, D) match scores (float; e.g. IoU of track t and detection d) -> (t, d) pairs, each
    row and column used at most once: pairs at or above ``min_score`` taken best first; equal
    scores go to the lower row, then the lower column (older track, better detection)."""
    rows, columns = np.nonzero(scores >= min_score)
    order = np.lexsort((columns, rows, -scores[rows, columns]))
    used_rows: set[int] = set()
    used_columns: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for row, column in zip(rows[order].tolist(), columns[order].tolist(), strict=True):
        if row not in used_rows and column not in used_columns:
            used_rows.add(row)
            used_columns.add(column)
            pairs.append((row, column))
    return pairs


def clipped_areas(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) normalized xyxy -> (N,) float64 areas of the boxes' parts inside the frame (a
    face half out of the frame is not a bigger view for the part outside)."""
    clipped = np.clip(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), 0.0, 1.0)
    areas: np.ndarray = np.maximum(clipped[:, 2] - clipped[:, 0], 0.0) * np.maximum(clipped[:, 3] - clipped[:, 1], 0.0)
    return areas


def decide_view(
    history: ViewHistory, area: float, sharpness: float | None, frame: int, time: float, options: TrackerOptions
) -> ViewReason | None:
    """Whether a track's view in ``frame`` at ``time`` (its ``area`` from :func:`clipped_areas`,
    its ``sharpness`` from :func:`laplacian_variance` or None) goes to recognition, given the
    track's ``history``: the reason, or None (rules in the module docstring).

    "Sharper" counts only at an area of at least 1 / ``bigger_ratio`` of the best: the
    Laplacian variance of one face rises as it covers fewer pixels, so a much smaller view would
    look sharper without being a better view.
    """
    if history.views == 0:
        return "new"
    if history.views >= options.max_views:
        return None
    if history.last_frame is not None and frame - history.last_frame < options.min_view_frames:
        return None
    if history.last_time is not None and time - history.last_time < options.min_view_seconds:
        return None
    if history.views < options.initial_views:
        return "early"
    if area >= history.best_area * options.bigger_ratio:
        return "bigger"
    if (
        sharpness is not None
        and history.best_sharpness is not None
        and sharpness >= history.best_sharpness * options.sharper_ratio
        and area * options.bigger_ratio >= history.best_area
    ):
        return "sharper"
    return None


def laplacian_variance(grey: np.ndarray) -> float:
    """Sharpness of a (H, W) uint8 grey crop, H and W >= 3: the variance of its 4-neighbour
    Laplacian over the interior pixels (integer arithmetic; 0.0 for a flat crop). Blur lowers
    it; compare it only between crops of about the same size (see :func:`decide_view`)."""
    if grey.ndim != 2 or grey.dtype != np.uint8:
        raise ValueError(f"laplacian_variance needs a (H, W) uint8 array, got {grey.shape} {grey.dtype}")
    if min(grey.shape) < _MIN_SHARPNESS_SIDE:
        raise ValueError(f"laplacian_variance needs H and W >= {_MIN_SHARPNESS_SIDE}, got {grey.shape}")
    g = grey.astype(np.int32)
    laplacian = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]
    return float(laplacian.var())


def grey_crop(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The part of ``frame`` ((H, W, 3) uint8 RGB or BGR, or (H, W) uint8 grey) under ``box``
    ((4,) normalized xyxy, clipped to the frame) as (h, w) uint8 grey (R + 2G + B) / 4, the
    motion gate's weights, which are the same for either colour order. May be empty."""
    height, width = frame.shape[:2]
    x1, y1, x2, y2 = np.clip(np.asarray(box, dtype=np.float64), 0.0, 1.0) * (width, height, width, height)
    crop = frame[int(y1) : math.ceil(y2), int(x1) : math.ceil(x2)]
    if crop.ndim == 2:
        return np.ascontiguousarray(crop, dtype=np.uint8)
    wide = crop[..., :3].astype(np.uint16)
    grey: np.ndarray = ((wide[..., 0] + 2 * wide[..., 1] + wide[..., 2]) // 4).astype(np.uint8)
    return grey


def view_sharpness(frame: np.ndarray, detections: Detections) -> np.ndarray:
    """(N,) float64 :func:`laplacian_variance` of each detection's :func:`grey_crop` of
    ``frame``; 0.0 for a crop smaller than 3x3 pixels (too small to be sharp)."""
    values = np.zeros(len(detections), dtype=np.float64)
    for index, box in enumerate(detections.boxes):
        crop = grey_crop(frame, box)
        if min(crop.shape) >= _MIN_SHARPNESS_SIDE:
            values[index] = laplacian_variance(crop)
    return values


@dataclass
class _Track:
    """A live track: its last box (normalized xyxy, float64), the box's change per frame
    between its last two matches, consecutive frames missed, and its recognition history."""

    track_id: int
    box: np.ndarray
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    missed: int = 0
    history: ViewHistory = field(default_factory=ViewHistory)

    def predicted_box(self) -> np.ndarray:
        box: np.ndarray = self.box + self.velocity * (self.missed + 1)
        return box


class Tracker:
    """Track state between frames (rules in the module docstring). Not thread-safe.

    ``options`` may be replaced between frames (a config reload); a smaller ``max_tracks``
    takes effect on the next :meth:`update`, ending the longest-unseen tracks beyond it.
    """

    def __init__(self, options: TrackerOptions | None = None) -> None:
        self.options = options if options is not None else TrackerOptions()
        self._tracks: list[_Track] = []  # oldest first (ids ascending)
        self._next_id = 1
        self._frame = 0
        self._last_time: float | None = None

    @property
    def live_ids(self) -> tuple[int, ...]:
        """Ids of the live tracks, ascending."""
        return tuple(track.track_id for track in self._tracks)

    def update(
        self,
        detections: Detections,
        time: float,
        sharpness: np.ndarray | None = None,
        recognizable: np.ndarray | None = None,
    ) -> TrackFrame:
        """Feed one detected frame: its faces, its monotonic ``time`` in seconds (never
        decreasing) and optionally (N,) non-negative sharpness per face (:func:`view_sharpness`;
        None: views are judged by size only) and (N,) bool ``recognizable`` (False: the face is
        tracked but its view is never one for recognition, e.g. too small; None: all are).
        Raises ValueError on a bad time, sharpness or recognizable."""
        count = len(detections)
        sharpness, recognizable = self._checked(count, time, sharpness, recognizable)
        self._last_time = time
        self._frame += 1
        options = self.options
        ended = self._evict(len(self._tracks) - options.max_tracks, [])

        boxes = np.asarray(detections.boxes, dtype=np.float64)
        pairs = greedy_match(self._match_scores(boxes), options.min_iou)
        track_of: list[_Track | None] = [None] * count
        seen: set[int] = set()
        for row, column in pairs:
            track = self._tracks[row]
            track.velocity = (boxes[column] - track.box) / (track.missed + 1)
            track.box, track.missed = boxes[column].copy(), 0
            track_of[column] = track
            seen.add(track.track_id)
        for track in self._tracks:
            if track.track_id not in seen:
                track.missed += 1
        ended += [track.track_id for track in self._tracks if track.missed > options.max_missed]
        self._tracks = [track for track in self._tracks if track.missed <= options.max_missed]

        started: list[int] = []
        for column in range(count):
            if track_of[column] is not None:
                continue
            if len(self._tracks) >= options.max_tracks:
                ended = self._evict(1, ended, unseen_only=True)
            if len(self._tracks) < options.max_tracks:
                track = _Track(self._next_id, boxes[column].copy())
                self._next_id += 1
                self._tracks.append(track)
                track_of[column] = track
                started.append(track.track_id)

        views = self._views(track_of, clipped_areas(boxes), sharpness, recognizable, time)
        track_ids = np.array([UNTRACKED if t is None else t.track_id for t in track_of], dtype=np.int64)
        track_ids.flags.writeable = False
        return TrackFrame(track_ids, views, tuple(started), tuple(sorted(ended)))

    def _checked(
        self, count: int, time: float, sharpness: np.ndarray | None, recognizable: np.ndarray | None
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """:meth:`update`'s inputs as arrays, or ValueError saying which one is wrong."""
        if not math.isfinite(time) or (self._last_time is not None and time < self._last_time):
            raise ValueError(f"frame time must be finite and not before the last one ({self._last_time}), got {time}")
        if recognizable is not None:
            recognizable = np.asarray(recognizable, dtype=bool)
            if recognizable.shape != (count,):
                raise ValueError(f"recognizable must be ({count},) values, one per face, got {recognizable.shape}")
        if sharpness is not None:
            sharpness = np.asarray(sharpness, dtype=np.float64)
            if sharpness.shape != (count,):
                raise ValueError(f"sharpness must be ({count},) values, one per face, got shape {sharpness.shape}")
            bad = ~(np.isfinite(sharpness) & (sharpness >= 0.0))
            if bad.any():
                raise ValueError(
                    f"sharpness must be finite and >= 0, got {sharpness[bad][0]} for face {np.flatnonzero(bad)[0]}"
                )
        return sharpness, recognizable

    def _views(
        self,
        track_of: list[_Track | None],
        areas: np.ndarray,
        sharpness: np.ndarray | None,
        recognizable: np.ndarray | None,
        time: float,
    ) -> tuple[ViewReason | None, ...]:
        """Per face of this frame, why its view goes to recognition (None: it does not); the
        chosen views are recorded in their tracks' histories."""
        views: list[ViewReason | None] = []
        for column, matched in enumerate(track_of):
            if matched is None or (recognizable is not None and not recognizable[column]):
                views.append(None)
                continue
            area = float(areas[column])
            face_sharpness = None if sharpness is None else float(sharpness[column])
            reason = decide_view(matched.history, area, face_sharpness, self._frame, time, self.options)
            if reason is not None:
                matched.history = matched.history.after_view(area, face_sharpness, self._frame, time)
            views.append(reason)
        return tuple(views)

    def end_all(self) -> tuple[int, ...]:
        """End every live track (detection paused, a clean stop): their ids, ascending. Ids
        still count on: a face seen afterwards gets a new one."""
        ended = self.live_ids
        self._tracks = []
        return ended

    def _match_scores(self, boxes: np.ndarray) -> np.ndarray:
        """(T, D) float64: per live track and detection, the better IoU of the detection with
        the track's last box and with its predicted box."""
        if not self._tracks or boxes.shape[0] == 0:
            return np.zeros((len(self._tracks), boxes.shape[0]))
        last = np.stack([track.box for track in self._tracks])
        predicted = np.stack([track.predicted_box() for track in self._tracks])
        scores: np.ndarray = np.maximum(pairwise_iou(last, boxes), pairwise_iou(predicted, boxes))
        return scores

    def _evict(self, how_many: int, ended: list[int], unseen_only: bool = False) -> list[int]:
        """End up to ``how_many`` live tracks, longest unseen first, then oldest (``unseen_only``:
        only tracks not matched in this frame); their ids appended to ``ended``, which is returned."""
        candidates = [t for t in self._tracks if t.missed > 0 or not unseen_only]
        candidates.sort(key=lambda t: (-t.missed, t.track_id))
        gone = {t.track_id for t in candidates[: max(how_many, 0)]}
        self._tracks = [t for t in self._tracks if t.track_id not in gone]
        return ended + sorted(gone)
