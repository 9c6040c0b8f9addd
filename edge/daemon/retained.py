"""What the daemon leaves retained on the broker: the presence state, the control state and
the snapshot placeholder a (new) sink announces, and the state a clean stop leaves.

In: the presence state (:class:`PresenceState`), the control state (or None with the controls
off), whether snapshots are on. Out: calls on the :class:`EventSink`; :func:`absent_state` is pure.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from edge.daemon.snapshot import placeholder_jpeg
from edge.mqtt.sinks import EventSink
from edge.scene.events import PresenceState


@dataclass(frozen=True)
class RetainedState:
    """What a sink announces when it starts. ``controls``: the control state payload
    (:func:`edge.mqtt.controls.control_state`), None when the controls are off."""

    presence: PresenceState
    controls: dict[str, Any] | None
    snapshots: bool


def announce_retained(sink: EventSink, retained: RetainedState) -> None:
    """The presence state, the control state, and, with snapshots on, a placeholder so the
    image entity is never empty while we run."""
    sink.publish_state(retained.presence)
    if retained.controls is not None:
        sink.publish_controls(retained.controls)
    if retained.snapshots:
        sink.publish_snapshot(placeholder_jpeg(), placeholder=True)


def absent_state(state: PresenceState) -> PresenceState:
    """What a clean stop leaves retained: nobody, in the frame, any zone or by name (last_seen kept)."""
    zones = {name: dataclasses.replace(zone, present=False, count=0) for name, zone in state.zones.items()}
    people = state.people.absent() if state.people is not None else None
    return dataclasses.replace(state, present=False, count=0, zones=zones, people=people)
