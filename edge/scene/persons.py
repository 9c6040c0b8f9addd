"""Who is there, by name: faces whose identity is decided -> ``person_arrived`` /
``person_left`` events and each enrolled person's presence. Pure; fed frame times like
:class:`edge.scene.events.PresenceTracker`, never reads a clock.

Fed each detected frame's :class:`~edge.scene.events.Face` values (with their track, person
and whether that is a decision, see :mod:`edge.recognize.stage`). "Someone" is an enrolled
name, or None for everyone not enrolled ("unknown", one presence for all strangers):

* a decided face of someone absent -> ``person_arrived`` for them (its face and track id);
  no debounce of its own: a decision already took several views of the track;
* someone not seen in a decided face for ``clear_after_seconds`` (frame time, the ``[events]``
  setting, as ``face_cleared``) -> ``person_left`` (no face; the track id last seen);
* :meth:`PersonPresence.clear` (detection paused, a clean stop, recognition turned off or its
  gallery unusable) ends every presence at once; :meth:`PersonPresence.forget` ends one
  person's (forgotten from the gallery).

A face that is not decided (recognition off, a track still pending) counts for nobody: the
face events say someone is there, the person events only say who once it is known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from edge.scene.event_types import PERSON_ARRIVED, PERSON_LEFT
from edge.scene.events import Event, EventIdentity, Face, PeopleState, PersonState, iso_utc


@dataclass
class _Seen:
    """The last decided face of someone present: its track, and when (monotonic seconds)."""

    track_id: int | None
    t_monotonic: float


@dataclass
class PersonPresence:
    """Per-person presence of the whole frame (see the module docstring). Not thread-safe."""

    identity: EventIdentity
    clear_after_seconds: float = 5.0
    _present: dict[str | None, _Seen] = field(default_factory=dict)
    _last_seen: dict[str, float] = field(default_factory=dict)  # Unix seconds, formatted when read
    _last_person: str | None = None

    def update(
        self, faces: Sequence[Face], frame_width: int, frame_height: int, t_monotonic: float, wall_time: float
    ) -> list[Event]:
        """Feed one detected frame; its person events: arrivals in face order, then departures
        (enrolled names sorted, unknown last)."""
        events: list[Event] = []
        seen_now: set[str | None] = set()
        for face in faces:
            if not face.decided or face.person in seen_now:
                continue
            who = face.person
            seen_now.add(who)
            if who is not None:
                self._last_seen[who] = wall_time
            if who not in self._present:
                if who is not None:
                    self._last_person = who
                events.append(
                    self._event(PERSON_ARRIVED, who, face.track_id, wall_time, (face,), frame_width, frame_height)
                )
            self._present[who] = _Seen(face.track_id, t_monotonic)
        gone = [
            who
            for who, seen in self._present.items()
            if who not in seen_now and t_monotonic - seen.t_monotonic >= self.clear_after_seconds
        ]
        return events + self._leave(gone, wall_time, frame_width, frame_height)

    def clear(self, wall_time: float) -> list[Event]:
        """Everyone present leaves now (no frame caused it: frame size 0x0)."""
        return self._leave(list(self._present), wall_time, 0, 0)

    def forget(self, name: str, wall_time: float) -> list[Event]:
        """``name`` is no longer enrolled: ``person_left`` if present; the name leaves the state."""
        self._last_seen.pop(name, None)
        if self._last_person == name:
            self._last_person = None
        return self._leave([name] if name in self._present else [], wall_time, 0, 0)

    def state(self, enrolled: Sequence[str]) -> PeopleState:
        """The state of each of the ``enrolled`` names, and the last person who arrived."""
        people = {
            name: PersonState(
                name in self._present, iso_utc(self._last_seen[name]) if name in self._last_seen else None
            )
            for name in enrolled
        }
        return PeopleState(people, self._last_person)

    def _leave(self, gone: list[str | None], wall_time: float, frame_width: int, frame_height: int) -> list[Event]:
        events = []
        for who in sorted(gone, key=lambda name: (name is None, name or "")):
            seen = self._present.pop(who)
            events.append(self._event(PERSON_LEFT, who, seen.track_id, wall_time, (), frame_width, frame_height))
        return events

    def _event(
        self,
        kind: str,
        who: str | None,
        track_id: int | None,
        wall_time: float,
        faces: tuple[Face, ...],
        frame_width: int,
        frame_height: int,
    ) -> Event:
        return self.identity.event(kind, wall_time, faces, frame_width, frame_height, person=who, track_id=track_id)
