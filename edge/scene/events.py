"""Presence events: per-frame detections -> debounced ``face_detected`` / ``count_changed`` /
``face_cleared`` events (published by the sinks of :mod:`edge.mqtt.sinks`). The person events
(``person_arrived`` / ``person_left``) are made by :mod:`edge.scene.persons` from the same
:class:`Face` values.

The state machine (:class:`PresenceTracker`) is pure: it is fed what one frame showed and
the frame's times, and returns the events that frame causes; it never reads a clock. That
keeps it testable with hand-built detections and lets the daemon feed it frame timestamps.

Rules (N = ``debounce_frames``, T = ``clear_after_seconds``):

* absent -> present: N consecutive frames with at least one face -> ``face_detected``
  (count = faces in the N-th frame);
* present: the face count differs from the stable count and has been the same for N
  consecutive frames -> ``count_changed``; a frame with no face does not change the count
  (a blink or a turned head is not a departure), it only starts the clear timer;
* present -> absent: no face for T seconds (frame time) -> ``face_cleared`` (count 0).

Sequence numbers count events of one boot (one daemon start) from 1, with no gaps, so a
subscriber can tell a lost event from a quiet room. They are given by the daemon's
:class:`edge.mqtt.outbox.Outbox` when an event is queued (the tracker's events carry 0), so the
number and the delivery accounting live in one place.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from edge.scene.event_types import COUNT_CHANGED, FACE_CLEARED, FACE_DETECTED, PERSON_EVENT_TYPES

# Six decimals of a normalized coordinate is a sub-pixel even at 8K: more is noise in JSON.
_BOX_DECIMALS = 6
_SCORE_DECIMALS = 4


_DISTANCE_DECIMALS = 4


@dataclass(frozen=True)
class Face:
    """One face: ``box`` normalized (x1, y1, x2, y2) in 0..1 of the frame, ``score`` 0..1.

    ``track_id``: the face's track (:mod:`edge.scene.tracks`; tracking runs whether or not
    recognition is on), None only for a face the tracker's cap left out. ``person``: the
    enrolled name the track was recognized as, None when not recognized (not enrolled, not
    decided yet, or recognition off). ``distance``: descriptor distance to the nearest enrolled
    person (the decided person's mean when ``person`` is set), None when recognition is off,
    nobody is enrolled or the face was not described (yet). ``decided``: the track's identity
    is a decision, a name or "not enrolled" (not published; it drives the person events).
    The three published keys are always present, null when unknown: one schema for consumers.
    """

    box: tuple[float, float, float, float]
    score: float
    track_id: int | None = None
    person: str | None = None
    distance: float | None = None
    decided: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": [round(v, _BOX_DECIMALS) for v in self.box],
            "score": round(self.score, _SCORE_DECIMALS),
            "track_id": self.track_id,
            "person": self.person,
            "distance": None if self.distance is None else round(self.distance, _DISTANCE_DECIMALS),
        }


@dataclass(frozen=True)
class Event:
    """One presence event. ``sequence`` is 0 until :meth:`edge.mqtt.outbox.Outbox.add` numbers it."""

    type: str
    device_id: str
    boot_id: str
    sequence: int
    time: str
    face_count: int
    faces: tuple[Face, ...]
    frame_width: int
    frame_height: int
    model_id: str
    zone: str | None = None
    """The ``[[scene.zones]]`` name this event is about; None: the whole frame."""
    person: str | None = None
    """Person events only: the enrolled name, None for someone not enrolled."""
    track_id: int | None = None
    """Person events only: the track whose face was (last) recognized as ``person``."""

    def to_dict(self) -> dict[str, Any]:
        """The payload; person events add ``person`` and ``track_id`` to the usual fields."""
        fields = {
            "type": self.type,
            "device_id": self.device_id,
            "boot_id": self.boot_id,
            "sequence": self.sequence,
            "time": self.time,
            "face_count": self.face_count,
            "faces": [face.to_dict() for face in self.faces],
            "frame_width": self.frame_width,
            "frame_height": self.frame_height,
            "model_id": self.model_id,
            "zone": self.zone,
        }
        if self.type in PERSON_EVENT_TYPES:
            fields.update(person=self.person, track_id=self.track_id)
        return fields

    def to_json(self) -> bytes:
        """Compact UTF-8 JSON of :meth:`to_dict`: the payload on the wire and on stdout."""
        return json.dumps(self.to_dict(), separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True)
class PersonState:
    """One enrolled person in the state: seen now (``present``) and when last (ISO UTC, None:
    not since the daemon started)."""

    present: bool
    last_seen: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"present": self.present, "last_seen": self.last_seen}


@dataclass(frozen=True)
class PeopleState:
    """Who is there, by name: every enrolled person (none with recognition off), and the last
    enrolled person who arrived (None: nobody since the daemon started)."""

    people: Mapping[str, PersonState] = field(default_factory=dict)
    last_person: str | None = None

    def absent(self) -> PeopleState:
        """The same people, nobody present (what a clean stop leaves retained)."""
        people = {name: PersonState(False, person.last_seen) for name, person in self.people.items()}
        return PeopleState(people, self.last_person)


@dataclass(frozen=True)
class PresenceState:
    """What the room looks like now: retained on the ``state`` topic. ``detection``:
    "active", or "paused" while detection is switched off (privacy mode). ``people``: the
    whole frame's :class:`PeopleState` (``"people"`` and ``"last_person"`` in the payload; a
    zone's state has none)."""

    present: bool
    count: int
    last_seen: str | None
    zones: Mapping[str, PresenceState] = field(default_factory=dict)
    """Each ``[[scene.zones]]`` zone's own state, by name (empty without zones)."""
    detection: str = "active"
    people: PeopleState | None = None

    def to_dict(self) -> dict[str, Any]:
        fields = {
            "present": self.present,
            "count": self.count,
            "last_seen": self.last_seen,
            "zones": {name: zone.to_dict() for name, zone in self.zones.items()},
            "detection": self.detection,
        }
        if self.people is not None:
            fields["people"] = {name: person.to_dict() for name, person in self.people.people.items()}
            fields["last_person"] = self.people.last_person
        return fields


def iso_utc(epoch_seconds: float) -> str:
    """Unix time -> ISO-8601 UTC with milliseconds and 'Z', e.g. 2024-05-01T12:00:00.250Z."""
    moment = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def new_boot_id() -> str:
    return uuid.uuid4().hex


class FaceIdentity(Protocol):
    """Who one face is, as recognition says (:class:`edge.recognize.stage.TrackIdentity`
    has this shape; the scene does not depend on recognition)."""

    @property
    def person(self) -> str | None: ...
    @property
    def distance(self) -> float | None: ...
    @property
    def decided(self) -> bool: ...


def faces_from_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    track_ids: np.ndarray | None = None,
    identities: Sequence[FaceIdentity] | None = None,
) -> tuple[Face, ...]:
    """(N, 4) float32 normalized xyxy boxes and (N,) float32 scores -> Face values; with
    ``track_ids`` ((N,) int, negative: untracked) and ``identities`` (N of them) the faces carry
    their track and who they are.

    Boxes are clipped to the frame: the model may predict a box slightly past the border,
    and a subscriber should never see a coordinate outside 0..1.
    """
    # Python floats from whole arrays at once: per-element numpy indexing on every frame with
    # a face cost more than the rest of this function.
    clipped = np.clip(np.asarray(boxes, dtype=np.float64), 0.0, 1.0).tolist()
    confidences = np.asarray(scores, dtype=np.float64).tolist()
    tracks: list[int | None] = [None] * len(clipped)
    if track_ids is not None:
        tracks = [int(t) if t >= 0 else None for t in np.asarray(track_ids).tolist()]
    faces = []
    for index, (b, s) in enumerate(zip(clipped, confidences, strict=True)):
        box = (b[0], b[1], b[2], b[3])
        if identities is None:
            faces.append(Face(box=box, score=s, track_id=tracks[index]))
        else:
            who = identities[index]
            faces.append(Face(box, s, tracks[index], who.person, who.distance, who.decided))
    return tuple(faces)


@dataclass(frozen=True)
class EventIdentity:
    """Who is speaking: stamped on every event."""

    device_id: str
    boot_id: str
    model_id: str

    def event(
        self,
        kind: str,
        wall_time: float,
        faces: tuple[Face, ...],
        frame_width: int,
        frame_height: int,
        **about: Any,
    ) -> Event:
        """An event of this device; ``about``: its ``zone``, or a person event's ``person`` and
        ``track_id``. Sequence 0 until the outbox numbers it."""
        return Event(
            type=kind,
            device_id=self.device_id,
            boot_id=self.boot_id,
            sequence=0,
            time=iso_utc(wall_time),
            face_count=len(faces),
            faces=faces,
            frame_width=frame_width,
            frame_height=frame_height,
            model_id=self.model_id,
            **about,
        )


@dataclass(frozen=True)
class PresenceSettings:
    debounce_frames: int = 3
    clear_after_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.debounce_frames < 1:
            raise ValueError(f"debounce_frames must be >= 1, got {self.debounce_frames}")
        if not self.clear_after_seconds > 0:
            raise ValueError(f"clear_after_seconds must be > 0, got {self.clear_after_seconds}")


@dataclass
class _Streak:
    """How many consecutive frames showed ``count`` faces."""

    count: int = 0
    frames: int = 0

    def push(self, count: int) -> int:
        if count == self.count:
            self.frames += 1
        else:
            self.count, self.frames = count, 1
        return self.frames


@dataclass
class PresenceTracker:
    """The presence state machine (see the module docstring). Not thread-safe.

    ``identity`` and ``settings`` may be replaced between frames (config reload). Events
    come out with ``sequence`` 0: the daemon's outbox numbers them.
    """

    identity: EventIdentity
    settings: PresenceSettings = field(default_factory=PresenceSettings)
    zone: str | None = None
    present: bool = False
    stable_count: int = 0
    last_face_monotonic: float | None = None
    last_face_wall_time: float | None = None
    """Unix seconds of the last frame with a face; formatted only when the state is read
    (formatting on every frame with a face was a measurable share of the daemon's loop)."""
    _faces_streak: int = 0
    _count_streak: _Streak = field(default_factory=_Streak)

    @property
    def last_seen(self) -> str | None:
        return None if self.last_face_wall_time is None else iso_utc(self.last_face_wall_time)

    @property
    def state(self) -> PresenceState:
        count = self.stable_count if self.present else 0
        return PresenceState(present=self.present, count=count, last_seen=self.last_seen)

    def update(
        self,
        faces: Sequence[Face],
        frame_width: int,
        frame_height: int,
        t_monotonic: float,
        wall_time: float,
    ) -> list[Event]:
        """Feed one frame: its faces, its size, its monotonic time (for the clear timer) and
        its wall time (Unix seconds, stamped on events). Returns the events it causes (0 or 1)."""
        count = len(faces)
        debounce = self.settings.debounce_frames
        count_frames = self._count_streak.push(count)
        if count:
            self._faces_streak += 1
            self.last_face_monotonic = t_monotonic
            self.last_face_wall_time = wall_time
        else:
            self._faces_streak = 0

        kind = None
        if not self.present and self._faces_streak >= debounce:
            kind = FACE_DETECTED
            self.present, self.stable_count = True, count
        elif self.present and count and count != self.stable_count and count_frames >= debounce:
            kind = COUNT_CHANGED
            self.stable_count = count
        elif (
            self.present
            and not count
            and self.last_face_monotonic is not None  # always set while present
            and t_monotonic - self.last_face_monotonic >= self.settings.clear_after_seconds
        ):
            kind = FACE_CLEARED
            self.present, self.stable_count = False, 0
        if kind is None:
            return []
        return [self._event(kind, wall_time, tuple(faces), int(frame_width), int(frame_height))]

    def clear(self, wall_time: float) -> list[Event]:
        """Forget the room (detection paused, or a clean stop): ``face_cleared`` if someone
        was present, so subscribers never see a presence without its end (no frame caused it:
        its frame size is 0x0); the debounce starts over afterwards. Like :meth:`update`'s, the
        event has sequence 0 until the outbox numbers it."""
        was_present = self.present
        self.present, self.stable_count, self.last_face_monotonic = False, 0, None
        self._faces_streak, self._count_streak = 0, _Streak()
        if not was_present:
            return []
        return [self._event(FACE_CLEARED, wall_time, (), 0, 0)]

    def _event(
        self, kind: str, wall_time: float, faces: tuple[Face, ...], frame_width: int, frame_height: int
    ) -> Event:
        """An event of this tracker's device and zone; sequence 0 until the outbox numbers it."""
        return self.identity.event(kind, wall_time, faces, frame_width, frame_height, zone=self.zone)
