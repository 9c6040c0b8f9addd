"""Enrolment from Home Assistant: the "Enrol as" text, the "Enrol current face" button, the
"Person to forget" select and the "Forget person" button, turned into calls on the daemon's
recognition stage.

Two steps each, as HA users know them from a form: choose who (type a name, pick one from the
enrolled), then press. The choice is held here, in memory, and shown back to HA through the
retained controls topic (:meth:`Enrolment.state`); a press acts on the choice held *now*. So
nothing from the broker enrols by itself: a press without a name is refused, and retained
messages never reach this class (:mod:`edge.mqtt.command_intake` refuses them), so no
enrolment happens at start-up. A name is cleared once used, so a later press cannot add a
stranger's face to the last person enrolled.

Every outcome, done or refused (no name chosen, no face or several faces in view, a name that
is not enrolled), is logged (the stage logs its own) and is the state of the "Last enrolment"
diagnostic sensor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from edge.mqtt.controls import ENROL, ENROL_NAME, FORGET, FORGET_NAME, Command

# HA keeps at most 255 characters of a sensor's state.
MAX_OUTCOME_CHARS = 255


class Outcome(Protocol):
    """What a request to the recognition stage did (:class:`edge.recognize.stage.Outcome`):
    ``done``, and one line saying what, or why it was refused."""

    @property
    def done(self) -> bool: ...

    @property
    def message(self) -> str: ...


class PeopleStage(Protocol):
    """What enrolment needs of the daemon's recognition stage (:class:`edge.recognize.stage.RecognitionStage`)."""

    def enrol_current(self, name: str) -> Outcome:
        """Add the face in view (exactly one) to ``name``; refused (and logged) without a
        face or with several."""

    def forget(self, name: str) -> Outcome:
        """Remove ``name`` from the gallery; refused (and logged) when not enrolled."""

    def people(self) -> tuple[str, ...]:
        """The enrolled names."""


class Enrolment:
    """The enrolment choices made in Home Assistant, and the last outcome."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self.enrol_name: str | None = None
        self.forget_name: str | None = None
        self.outcome: str | None = None

    def handle(self, command: Command, stage: PeopleStage) -> bool:
        """Apply one of the recognition commands; True when the enrolled people changed."""
        if command.control == ENROL_NAME:
            self.enrol_name = str(command.value)
            self._log.info("enrolment: 'Enrol as' set to %r from Home Assistant", self.enrol_name)
            return False
        if command.control == FORGET_NAME:
            name = str(command.value)
            self.forget_name = name if name in stage.people() else None
            if self.forget_name is None:
                self._refuse("forget", f"{name!r} is not enrolled")
            return False
        if command.control == ENROL:
            return self._request("enrol", self.enrol_name, "set 'Enrol as' first", stage.enrol_current)
        if command.control == FORGET:
            return self._request("forget", self.forget_name, "choose a 'Person to forget' first", stage.forget)
        raise ValueError(f"not a recognition command: {command.control!r}")  # the caller dispatches

    def _request(self, verb: str, name: str | None, missing: str, act: Callable[[str], Outcome]) -> bool:
        """Press of the enrol or forget button: ``act`` on the chosen name (the stage logs
        what it did or why not); the name is cleared once used."""
        if name is None:
            self._refuse(verb, f"no name chosen ({missing})")
            return False
        self._log.info("%s %r requested from Home Assistant", verb, name)
        outcome = act(name)
        self._show(outcome.message if outcome.done else f"{verb} refused: {outcome.message}")
        if outcome.done and verb == "enrol":
            self.enrol_name = None
        elif outcome.done:
            self.forget_name = None
        return outcome.done

    def _refuse(self, verb: str, reason: str) -> None:
        self._log.warning("%s refused (from Home Assistant): %s", verb, reason)
        self._show(f"{verb} refused: {reason}")

    def _show(self, text: str) -> None:
        self.outcome = text[:MAX_OUTCOME_CHARS]

    def state(self) -> dict[str, Any]:
        """The keys of the retained controls state that the recognition entities read."""
        return {ENROL_NAME: self.enrol_name or "", FORGET_NAME: self.forget_name, "enrolment": self.outcome}
