"""The one gate between the broker and the daemon's controls.

Whoever can publish to the broker, and every stale message the broker keeps, reaches the
daemon through its command topics: what arrives there is untrusted input. A message becomes
a :class:`edge.mqtt.controls.Command` only if it passes, in this order:

1. size: at most :func:`edge.mqtt.controls.max_command_bytes` (a few bytes; a person's name
   for the "Enrol as" text and the "Person to forget" select), looked at before anything is
   copied or decoded (the transport already refused to read big packets at all,
   :data:`edge.mqtt.client.MAX_INCOMING_PACKET_BYTES`);
2. live: not a retained message. A retained command is stale by definition: taken again
   at every reconnect, it would undo what the user did since (a camera switched off in
   Home Assistant back on after a broker restart);
3. topic, syntax, value: :func:`edge.mqtt.controls.parse_command` (a known control, UTF-8, the
   control's word, a finite number in range, or a name the gallery allows);
4. coalesce: only the latest command per control waits for the daemon loop, which takes
   them at most every :data:`COMMAND_INTERVAL_S` (the first at once): a burst of a thousand
   commands costs what two do.

So a retained message on ``set/enrol_name`` neither enrols nor even prefills a name, and a
retained ``PRESS`` on ``set/enrol`` never enrols at start-up: a button press is not state.

Each refusal is one log line naming the topic and the reason, and changes nothing. So that a
hostile stream cannot flood the journal, a refusal that repeats one already logged, or that
comes after :data:`REFUSALS_LOGGED_PER_WINDOW` lines in :data:`REFUSAL_WINDOW_S`, is only
counted; the count is logged when the window ends (:meth:`CommandIntake.report_unlogged`).

Threads: :meth:`CommandIntake.receive` runs on the MQTT transport thread and only queues;
the daemon loop calls :meth:`CommandIntake.take` between frames.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from edge.mqtt.controls import Command, ControlError, max_command_bytes, parse_command

# The daemon loop takes commands at most this often: each batch may restart the camera (a
# Detection switch) or store the controls, so a burst must not do that per command.
COMMAND_INTERVAL_S = 0.5
# At most this many refusals are logged one by one per window; the rest are counted.
REFUSALS_LOGGED_PER_WINDOW = 30
REFUSAL_WINDOW_S = 60.0
# Distinct (topic, reason) lines remembered as logged (a repeat is only counted).
_REMEMBERED_LINES = 256
# How much of a topic or payload a log line shows (escaped: nothing hostile reaches the journal raw).
_SHOWN_CHARS = 80


@dataclass(frozen=True)
class CommandMessage:
    """One message the transport received on a command topic, as it came: ``topic`` in full,
    ``control`` its last level, ``payload`` untouched, ``retained`` the broker's flag."""

    topic: str
    control: str
    payload: bytes
    retained: bool


class CommandRefused(Exception):
    """Why a message is not a command: one line, without the topic (the log line adds it)."""


def shown(text: str) -> str:
    """``text`` escaped and cut for a log line: quotes, no control characters, bounded."""
    cut = text[:_SHOWN_CHARS]
    return ascii(cut) + ("..." if len(text) > _SHOWN_CHARS else "")


def admit(message: CommandMessage) -> Command:
    """The gate (see the module docs) for one message: its :class:`Command`, or CommandRefused."""
    size, limit = len(message.payload), max_command_bytes(message.control)
    if size > limit:
        raise CommandRefused(f"a {size}-byte payload (a command to this control is at most {limit} bytes)")
    if message.retained:
        raise CommandRefused(
            "a retained message: commands are taken only as they are sent, never from what the broker "
            f"keeps (clear it: mosquitto_pub -r -n -t {shown(message.topic)})",
        )
    if not size:
        raise CommandRefused("an empty payload (what clears a retained message; not a command)")
    try:
        return parse_command(message.control, message.payload)
    except ControlError as exc:
        raise CommandRefused(str(exc)) from None


class CommandIntake:
    """Commands received on the transport thread, coalesced, waiting for the daemon loop."""

    def __init__(
        self,
        log: logging.Logger,
        interval: float = COMMAND_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log, self._interval, self._clock = log, interval, clock
        self._cond = threading.Condition()
        # Guarded by self._cond:
        self._pending: dict[str, Command] = {}  # control -> its latest command, in arrival order
        self._next_take = float("-inf")
        self._logged: set[tuple[str, str]] = set()  # (topic, reason) lines logged
        self._window_start = clock()
        self._logged_in_window = 0
        self._unlogged = 0
        self.refused = 0  # in all, since the start

    def receive(self, message: CommandMessage) -> None:
        """Take ``message`` through the gate; queue the command it is, or log the refusal."""
        try:
            command = admit(message)
        except CommandRefused as refusal:
            self._refused(message, refusal)
            return
        with self._cond:
            self._pending.pop(command.control, None)  # the latest goes last: arrival order
            self._pending[command.control] = command
            self._cond.notify_all()

    def take(self) -> list[Command]:
        """The latest command of each control received since the last take, or [] when
        there is none or the last take was less than the interval ago."""
        now = self._clock()
        with self._cond:
            if not self._pending or now < self._next_take:
                return []
            pending, self._pending = list(self._pending.values()), {}
            self._next_take = now + self._interval
        return pending

    def wait(self, timeout: float) -> None:
        """Block up to ``timeout`` s until :meth:`take` has something (the paused loop sleeps here)."""
        deadline = self._clock() + timeout
        with self._cond:
            while True:
                now = self._clock()
                if now >= deadline:
                    return
                if self._pending and now >= self._next_take:
                    return
                until = deadline if not self._pending else min(deadline, self._next_take)
                self._cond.wait(max(0.0, until - now))

    def report_unlogged(self) -> None:
        """Log how many refusals were only counted, once their window is over (the daemon
        calls this with its stats)."""
        now = self._clock()
        with self._cond:
            if now - self._window_start < REFUSAL_WINDOW_S:
                return
            unlogged, total = self._unlogged, self.refused
            self._unlogged, self._logged_in_window, self._window_start = 0, 0, now
        if unlogged:
            self._log.warning(
                "refused %d more command(s) without a line each (repeats, or over %d lines in %g s); %d in all",
                unlogged,
                REFUSALS_LOGGED_PER_WINDOW,
                REFUSAL_WINDOW_S,
                total,
            )

    def _refused(self, message: CommandMessage, refusal: CommandRefused) -> None:
        self.report_unlogged()
        line = (message.topic, str(refusal))
        with self._cond:
            self.refused += 1
            if line in self._logged or self._logged_in_window >= REFUSALS_LOGGED_PER_WINDOW:
                self._unlogged += 1
                return
            if len(self._logged) >= _REMEMBERED_LINES:
                self._logged.clear()
            self._logged.add(line)
            self._logged_in_window += 1
        self._log.warning("refused a command on %s: %s", shown(message.topic), refusal)
