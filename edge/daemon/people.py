"""Recognition's side of the daemon's Home Assistant controls: the enrol / forget commands
dispatched to the recognition, the choices shown back in the retained control state, and the
enrolled names the sink announces (one presence entity each).

In: the parsed recognition commands (:data:`edge.mqtt.controls.PEOPLE_CONTROLS`, through the
command intake), the daemon's :class:`edge.daemon.recognition.DaemonRecognition`. Out: calls on
it, the control state's recognition keys, and the names for
:meth:`edge.mqtt.sinks.EventSink.set_people` (None while recognition is off: its entities are
then announced as removed).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from edge.mqtt.controls import Command
from edge.mqtt.enrolment import Enrolment, PeopleStage
from edge.mqtt.sinks import EventSink


class Stage(Protocol):
    @property
    def usable(self) -> bool:
        """False while the gallery file cannot be used (recognition suspended)."""


class Recognition(PeopleStage, Protocol):
    """What these controls need of the daemon's recognition: its stage (None: recognition is
    off) and the requests of :class:`PeopleStage`, which refuse while it is off."""

    @property
    def stage(self) -> Stage | None: ...


class PeopleControls:
    """The enrolment choices from Home Assistant for one daemon (kept across reloads and sink
    swaps: a name typed before a reload still enrols after it)."""

    def __init__(self, recognition: Recognition, log: logging.Logger) -> None:
        self.recognition = recognition
        self.enrolment = Enrolment(log)
        self._announced: tuple[str, ...] = ()

    def apply(self, command: Command) -> None:
        """One of :data:`edge.mqtt.controls.PEOPLE_CONTROLS`; a change of the enrolled names
        is announced by the recognition itself (its ``on_people_changed``)."""
        self.enrolment.handle(command, self.recognition)

    def control_state(self, controls: dict[str, Any]) -> dict[str, Any]:
        """``controls`` (the switches' state) with the enrolment's keys while recognition is on."""
        return {**controls, **self.enrolment.state()} if self.recognition.stage is not None else controls

    def announced(self) -> tuple[str, ...] | None:
        """The names for the sink's person entities; None while recognition is off. While the
        gallery cannot be used (recognition suspended: nobody is named, every sensor reads
        off) the names announced last are kept: a broken file must not make Home Assistant
        delete the family's entities, with their history and settings."""
        stage = self.recognition.stage
        if stage is None:
            return None
        if stage.usable:
            self._announced = self.recognition.people()
        return self._announced

    def announce(self, sink: EventSink) -> None:
        """Tell ``sink`` who is enrolled (before it starts: its first discovery holds them)."""
        sink.set_people(self.announced())
