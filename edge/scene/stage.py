"""The daemon's scene work around the detector: the motion gate before it, the scene rules
(masks, face-size limits, zones) after it, the face tracks, and the presence trackers (the
whole frame's, one per zone, and who is there by name).

Per frame the daemon asks :meth:`SceneStage.should_detect` first (a still scene with no
face is detected only every ``motion.idle_interval`` seconds), then, for frames that are
detected, :meth:`SceneStage.apply` on the detector's output, :meth:`SceneStage.track` for
each kept face's track (and which views recognition should see; recognition itself is
:mod:`edge.recognize.stage`, composed by the daemon) and :meth:`SceneStage.update_presence`
for the events of the frame, of each zone and of each person. The numeric parts live in
:mod:`edge.scene.motion`, :mod:`edge.scene.rules` and :mod:`edge.scene.tracks`; this class
only holds their state between frames.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edge.detect.decode import Detections
from edge.scene.events import (
    Event,
    EventIdentity,
    FaceIdentity,
    PeopleState,
    PresenceSettings,
    PresenceState,
    PresenceTracker,
    faces_from_detections,
)
from edge.scene.motion import DetectionGate, MotionDetector, MotionOptions, MotionResult
from edge.scene.persons import PersonPresence
from edge.scene.rules import SceneFilter, SceneOptions, SceneResult
from edge.scene.tracks import Tracker, TrackFrame, view_sharpness
from edge.sources.base import Frame


@dataclass
class _WindowCounts:
    """Scene figures of one stats interval."""

    motion_resets: int = 0
    faces_masked: int = 0
    faces_too_small: int = 0
    faces_too_large: int = 0


@dataclass
class SceneStage:
    """Motion gate + scene rules + presence trackers for one daemon (state between frames)."""

    motion_options: MotionOptions
    scene_options: SceneOptions
    identity: EventIdentity
    presence: PresenceSettings
    tracker: PresenceTracker = field(init=False)  # the whole frame
    zone_trackers: dict[str, PresenceTracker] = field(default_factory=dict)
    tracks: Tracker = field(default_factory=Tracker)
    persons: PersonPresence = field(init=False)
    _motion: MotionDetector = field(init=False)
    _gate: DetectionGate = field(init=False)
    _filter: SceneFilter = field(init=False)
    _last_motion: MotionResult | None = field(init=False, default=None)
    _faces_in_last_detection: bool = field(init=False, default=False)
    _window: _WindowCounts = field(init=False, default_factory=_WindowCounts)

    def __post_init__(self) -> None:
        self.tracker = PresenceTracker(self.identity, self.presence)
        self.persons = PersonPresence(self.identity, self.presence.clear_after_seconds)
        self._motion = MotionDetector(self.motion_options, self.scene_options.masks)
        self._gate = DetectionGate(self.motion_options)
        self._filter = SceneFilter(self.scene_options)
        self._sync_zone_trackers()

    # --- before the detector ----------------------------------------------------------------

    def should_detect(self, frame: Frame) -> bool:
        """Whether ``frame`` goes to the detector. While the last detected frame had faces or
        a presence is ongoing every frame is, so debouncing and clearing see them all."""
        faces_present = self._faces_in_last_detection or self.tracker.present
        motion = self._motion.update(frame.pixels) if self.motion_options.enabled else None
        self._last_motion = motion
        if motion is not None and motion.reset:
            self._window.motion_resets += 1
        return self._gate.decide(frame.t_monotonic, motion, faces_present).detect

    # --- after the detector -----------------------------------------------------------------

    def apply(self, detections: Detections, frame_height: int) -> SceneResult:
        """Masks and size limits on ``detections``; the kept faces with their zones."""
        result = self._filter(detections, frame_height)
        self._window.faces_masked += result.dropped_masked
        self._window.faces_too_small += result.dropped_small
        self._window.faces_too_large += result.dropped_large
        return result

    def track(self, result: SceneResult, frame: Frame, recognizable: np.ndarray | None = None) -> TrackFrame:
        """The kept faces' tracks. ``recognizable`` ((N,) bool, recognition on): which faces
        may be recognized; then views are also judged by sharpness. None: recognition is off,
        tracks only."""
        sharpness = view_sharpness(frame.pixels, result.detections) if recognizable is not None else None
        return self.tracks.update(result.detections, frame.t_monotonic, sharpness, recognizable)

    def update_presence(
        self,
        result: SceneResult,
        frame_width: int,
        frame_height: int,
        t_monotonic: float,
        wall_time: float,
        track_ids: np.ndarray | None = None,
        identities: Sequence[FaceIdentity] | None = None,
    ) -> list[Event]:
        """The whole frame's tracker fed the kept faces (with their ``track_ids`` and
        ``identities`` when given), then each zone's tracker the kept faces inside it, then
        the per-person presence: their events, the frame's first, zones in config order,
        persons last."""
        self._faces_in_last_detection = len(result.detections) > 0
        faces = faces_from_detections(result.detections.boxes, result.detections.scores, track_ids, identities)
        events = self.tracker.update(faces, frame_width, frame_height, t_monotonic, wall_time)
        for index, tracker in enumerate(self.zone_trackers.values()):
            inside = tuple(face for face, member in zip(faces, result.zones[:, index], strict=True) if member)
            events += tracker.update(inside, frame_width, frame_height, t_monotonic, wall_time)
        return events + self.persons.update(faces, frame_width, frame_height, t_monotonic, wall_time)

    def people_state(self, enrolled: Sequence[str]) -> PeopleState:
        """Each enrolled person's presence, and the last person who arrived."""
        return self.persons.state(enrolled)

    def end_people(self, wall_time: float) -> list[Event]:
        """Everyone named leaves now (recognition turned off, its gallery unusable)."""
        return self.persons.clear(wall_time)

    def forget_person(self, name: str, wall_time: float) -> list[Event]:
        """``name`` was forgotten: person_left if present."""
        return self.persons.forget(name, wall_time)

    def presence_state(self, detection: str, enrolled: Sequence[str] = ()) -> PresenceState:
        """The whole frame's presence with each zone's and each of the ``enrolled`` people's;
        ``detection``: "active" or "paused"."""
        zones = {
            name: dataclasses.replace(tracker.state, detection=detection)
            for name, tracker in self.zone_trackers.items()
        }
        return dataclasses.replace(
            self.tracker.state, zones=zones, detection=detection, people=self.persons.state(enrolled)
        )

    def clear_presence(self, wall_time: float) -> list[Event]:
        """Forget every presence, the frame's, each zone's and each person's, and end every
        track (detection paused, a clean stop): face_cleared and person_left events."""
        self._faces_in_last_detection = False
        self.tracks.end_all()
        events = self.tracker.clear(wall_time)
        for tracker in self.zone_trackers.values():
            events += tracker.clear(wall_time)
        return events + self.persons.clear(wall_time)

    # --- reload and stats -------------------------------------------------------------------

    def reconfigure(
        self, motion: MotionOptions, scene: SceneOptions, identity: EventIdentity, presence: PresenceSettings
    ) -> None:
        """A reload: new rules; a zone that stays keeps its presence, a new one starts absent.
        The motion background starts afresh when the gate or the masks change."""
        if motion != self.motion_options or scene.masks != self.scene_options.masks:
            self._motion = MotionDetector(motion, scene.masks)
            self._gate = DetectionGate(motion)
        self.motion_options, self.scene_options = motion, scene
        self.identity, self.presence = identity, presence
        self.tracker.identity, self.tracker.settings = identity, presence
        self.persons.identity, self.persons.clear_after_seconds = identity, presence.clear_after_seconds
        self._filter = SceneFilter(scene)
        self._sync_zone_trackers()

    def take_stats(self) -> dict[str, object]:
        """The scene's stats fields for one interval (and starts the next)."""
        counts = self._gate.take_window()
        window, self._window = self._window, _WindowCounts()
        motion = self._last_motion
        share = counts.detected_share
        return {
            "motion_gate": "on" if self.motion_options.enabled else "off",
            "motion": bool(motion is not None and (motion.motion or motion.reset)),
            "motion_changed": round(motion.changed_fraction, 4) if motion is not None else None,
            "motion_resets": window.motion_resets,
            "detected_share": round(share, 3) if share is not None else None,
            "faces_masked": window.faces_masked,
            "faces_too_small": window.faces_too_small,
            "faces_too_large": window.faces_too_large,
        }

    def _sync_zone_trackers(self) -> None:
        trackers: dict[str, PresenceTracker] = {}
        for name in self.scene_options.zone_names:
            tracker = self.zone_trackers.get(name) or PresenceTracker(self.identity, self.presence, zone=name)
            tracker.identity, tracker.settings = self.identity, self.presence
            trackers[name] = tracker
        self.zone_trackers = trackers
