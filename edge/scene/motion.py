"""Motion gate: a cheap motion detector on a small grayscale copy of each frame, and the
state machine that decides which frames the face detector sees.

Why: the int8 network is by far the most expensive stage of a frame. A camera watching an
empty room sees the same picture for hours; running the network on every one of those frames
keeps a Pi busy and warm for nothing. Frigate's answer, followed here: detect while the
picture changes (or while faces are present), and only now and then while it is still.

:class:`MotionDetector` (one per camera stream) works on a copy about 100 px high:

1. Downscale by sampling every ``factor``-th pixel of every ``factor``-th row (a strided
   view, no copy of the frame) and convert to gray as ``R + 2 G + B`` (0..1020, four times
   the gray level) in uint16: integer math only. The weights are symmetric in R and B, so an
   RGB and a BGR frame give the same gray and the detector need not know the colour order.
   A box average would filter noise better but costs about five times as much per frame
   (measured at 320x240: about 150 us against 30 us); the erosion of step 3 rejects the
   isolated noise pixels that sampling lets through.
2. Compare with a running-average background (float32, the same scale): a pixel changed when
   it differs from the background by more than ``threshold`` gray levels; masked pixels never
   change. The background then moves ``alpha`` of the way towards the frame.
3. Count changed pixels whose whole 2x2 neighbourhood changed (an erosion: three array ANDs).
   A moving person is a blob of changed pixels and survives it; sensor noise and compression
   artefacts are single pixels and do not. Frigate finds contours and keeps those above an
   area; connected components in numpy would need a Python loop or scipy (not a device
   dependency) for little gain: the eroded area already ignores speckle, and a gate only
   needs "did something the size of a person move", not where.
4. ``motion`` = eroded changed area >= ``min_area`` (a fraction of the unmasked pixels).
   When more than ``global_change`` of them change at once (lights switched, the camera's IR
   filter flipping, auto-exposure jumping) the background is replaced by the frame instead:
   ``reset`` is set and ``motion`` is not, so a light switch costs one detection (the gate
   detects on a reset, since the scene is new) rather than motion on every later frame.

:class:`DetectionGate` is pure: it is told each frame's monotonic time, its motion result
and whether faces are present, and answers whether to run the detector on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge.scene.rules import rasterize_polygons

# The [motion] section is declared with the other scene settings; its names are this module's too.
from edge.scene.settings import MAX_IDLE_INTERVAL as MAX_IDLE_INTERVAL
from edge.scene.settings import MotionOptions as MotionOptions
from edge.scene.settings import Polygon
from edge.scene.settings import motion_options_from_toml as motion_options_from_toml

# The working copy is at most this many rows high (Frigate works at about 100 px too):
# enough to see a person move, small enough to cost about 1% of one int8 invoke.
WORK_HEIGHT = 100
# The gray value is R + 2G + B: four times the gray level.
_GRAY_SCALE = 4


@dataclass(frozen=True)
class MotionResult:
    """What one frame showed. ``changed_fraction``: eroded changed pixels / unmasked pixels
    of the working copy (0..1). ``reset``: the background was (re)started from this frame
    (the first frame, a new frame size, or a global change); ``motion`` is then False."""

    motion: bool
    changed_fraction: float
    reset: bool


def sampling_factor(frame_height: int) -> int:
    """The stride that brings ``frame_height`` rows to at most :data:`WORK_HEIGHT` rows."""
    return max(1, math.ceil(frame_height / WORK_HEIGHT))


def gray_sample(frame: np.ndarray, factor: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB or BGR -> (H // factor, W // factor) uint16 ``R + 2G + B``
    (0..1020) of every ``factor``-th pixel of every ``factor``-th row. (H, W) uint8 gray
    is accepted too (scaled by 4 alike)."""
    rows, cols = frame.shape[0] // factor, frame.shape[1] // factor
    sample = frame[: rows * factor : factor, : cols * factor : factor]
    if sample.ndim == 2:
        return sample.astype(np.uint16) << 2
    # Each channel is first copied out as contiguous uint8, then widened and added: numpy's
    # casting and mixed-type adds straight from the strided view cost about twice as much
    # (ARM cost, see tests/test_motion.py's exactness test against the plain formula).
    gray = sample[..., 1].copy().astype(np.uint16)
    gray <<= 1
    gray += sample[..., 0].copy()
    gray += sample[..., 2].copy()
    return gray


def eroded_changed_count(changed: np.ndarray) -> int:
    """(h, w) bool, C-contiguous -> how many of its top-left (h-1) x (w-1) pixels changed
    together with their right, lower and lower-right neighbours (a 2x2 erosion, see the
    module docstring).

    Worked on the flattened array, where those neighbours are 1, w and w+1 places on: one
    contiguous pass per neighbour instead of strided 2-D views (fewer instructions per
    frame). The flat shift also pairs each last-column pixel with the next row's first
    pixels; those wrapped positions (every w-th from w-1) are taken off the count."""
    width = changed.shape[1]
    flat = changed.reshape(-1)
    eroded = flat[: -width - 1] & flat[1:-width]
    eroded &= flat[width:-1]
    eroded &= flat[width + 1 :]
    return int(np.count_nonzero(eroded)) - int(np.count_nonzero(eroded[width - 1 :: width]))


class MotionDetector:
    """Running-average motion detection for one stream (see the module docstring).

    ``masks``: polygons (normalized frame coordinates) where motion is ignored; rasterized
    once per working size. Holds the background (float32, about 100 x 133 values) and the
    masked-pixel raster; nothing else. Not thread-safe.
    """

    def __init__(self, options: MotionOptions = MotionOptions(), masks: Sequence[Polygon] = ()) -> None:
        self.options = options
        self.masks = tuple(masks)
        self._threshold = np.float32(options.threshold * _GRAY_SCALE)
        self._alpha = np.float32(options.alpha)
        self._background: np.ndarray | None = None
        self._frame_shape: tuple[int, int] | None = None
        self._factor = 1
        self._unmasked: np.ndarray | None = None  # (h, w) bool, None: nothing masked
        self._unmasked_count = 0

    @property
    def work_size(self) -> tuple[int, int] | None:
        """(width, height) of the working copy, None before the first frame."""
        if self._background is None:
            return None
        return int(self._background.shape[1]), int(self._background.shape[0])

    def update(self, frame: np.ndarray) -> MotionResult:
        """Feed one frame: (H, W, 3) uint8 RGB/BGR (or (H, W) uint8 gray). Updates the
        background and returns what changed since it."""
        if frame.dtype != np.uint8 or frame.ndim not in (2, 3):
            raise ValueError(f"motion: frame must be (H, W, 3) or (H, W) uint8, got {frame.shape} {frame.dtype}")
        shape = (int(frame.shape[0]), int(frame.shape[1]))
        if shape != self._frame_shape:
            self._start(shape)
        gray = gray_sample(frame, self._factor).astype(np.float32)
        if self._background is None:
            return self._reset(gray)
        difference = gray - self._background
        changed = np.abs(difference) > self._threshold
        if self._unmasked is not None:
            changed &= self._unmasked
        eroded_count = eroded_changed_count(changed)
        fraction = eroded_count / self._unmasked_count if self._unmasked_count else 0.0
        if fraction > self.options.global_change:
            return self._reset(gray, fraction)
        difference *= self._alpha
        self._background += difference
        motion = bool(fraction > 0.0 and fraction >= self.options.min_area)
        return MotionResult(motion=motion, changed_fraction=float(fraction), reset=False)

    def _start(self, shape: tuple[int, int]) -> None:
        """A new frame size: new sampling factor and mask raster, no background yet."""
        height, width = shape
        factor = sampling_factor(height)
        rows, cols = height // factor, width // factor
        if rows < 2 or cols < 2:
            raise ValueError(f"motion: frame {width}x{height} is too small (needs at least 2x2 after sampling)")
        self._frame_shape, self._factor = shape, factor
        self._background = None
        if self.masks:
            masked = rasterize_polygons(self.masks, cols, rows)
            self._unmasked = ~masked
        else:
            self._unmasked = None
        # Pixels the eroded count can reach: the (rows-1) x (cols-1) top-left ones, unmasked.
        if self._unmasked is None:
            self._unmasked_count = (rows - 1) * (cols - 1)
        else:
            self._unmasked_count = int(np.count_nonzero(self._unmasked[:-1, :-1]))

    def _reset(self, gray: np.ndarray, fraction: float = 0.0) -> MotionResult:
        self._background = gray
        return MotionResult(motion=False, changed_fraction=float(fraction), reset=True)


@dataclass(frozen=True)
class GateDecision:
    """Whether to run the detector on a frame, and why: "disabled", "first", "reset",
    "motion", "faces", "idle" (the idle interval elapsed) or "still" (skipped)."""

    detect: bool
    reason: str


@dataclass(frozen=True)
class GateCounts:
    """Frames the gate saw and let through, since start or since the last window."""

    frames: int
    detected: int

    @property
    def detected_share(self) -> float | None:
        """detected / frames (0..1); None when no frame was seen."""
        return self.detected / self.frames if self.frames else None


class DetectionGate:
    """Decides per frame whether the detector runs (pure: time is an argument, no clock).

    Detect every frame while there is motion or a reset, or while faces are present (so
    debouncing and clearing in the presence tracker see every frame); with a still scene and
    no face, detect once every ``options.idle_interval`` seconds. ``options.enabled`` False:
    every frame is detected.
    """

    def __init__(self, options: MotionOptions = MotionOptions()) -> None:
        self.options = options
        self._last_detect: float | None = None
        # Plain counters, made into GateCounts when asked: decide runs on every frame, and
        # two frozen dataclasses built per frame cost more than the decision itself.
        self._frames = self._detected = 0
        self._window_frames = self._window_detected = 0

    def decide(self, t_monotonic: float, motion: MotionResult | None, faces_present: bool) -> GateDecision:
        """``t_monotonic``: the frame's monotonic time (seconds); ``motion``: the motion
        detector's result for the frame (None: not measured, the frame is detected);
        ``faces_present``: the last detection found a face, or the presence tracker holds one."""
        if not self.options.enabled or motion is None:
            reason = "disabled"
        elif self._last_detect is None:
            reason = "first"
        elif motion.reset:
            reason = "reset"
        elif motion.motion:
            reason = "motion"
        elif faces_present:
            reason = "faces"
        elif t_monotonic - self._last_detect >= self.options.idle_interval:
            reason = "idle"
        else:
            reason = "still"
        decision = _DECISIONS[reason]
        if decision.detect:
            self._last_detect = t_monotonic
        self._frames += 1
        self._window_frames += 1
        self._detected += decision.detect
        self._window_detected += decision.detect
        return decision

    @property
    def counts(self) -> GateCounts:
        """Frames seen and detected since the gate was made."""
        return GateCounts(self._frames, self._detected)

    def take_window(self) -> GateCounts:
        """Frames seen and detected since the previous call (a stats interval); starts a new window."""
        window = GateCounts(self._window_frames, self._window_detected)
        self._window_frames = self._window_detected = 0
        return window


# One decision per reason, made once (they are immutable): only "still" skips the detector.
_DECISIONS = {
    reason: GateDecision(detect=reason != "still", reason=reason)
    for reason in ("disabled", "first", "reset", "motion", "faces", "idle", "still")
}
