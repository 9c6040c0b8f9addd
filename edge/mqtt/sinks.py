"""Sinks: where the daemon's outbox goes. :class:`EventSink` is the daemon's whole view of a
transport; :class:`StdoutSink` writes one JSON line per event (the embedded default), and
:class:`edge.mqtt.sink.MqttSink` publishes to a broker.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TextIO

if TYPE_CHECKING:
    from edge.mqtt.command_intake import CommandMessage
    from edge.mqtt.outbox import Outbox
    from edge.scene.events import Event, PresenceState


class SinkError(Exception):
    """A sink that cannot work as configured (e.g. a rejected certificate): the daemon's
    config error. ``str(error)`` is one line for the user."""


class SinkClosed(Exception):
    """The sink's reader went away for good (stdout piped into a process that exited)."""


# Called on the sink's thread with each message received on a command topic, unchecked: the
# handler is the gate (edge.mqtt.command_intake) and must only queue.
CommandHandler = Callable[["CommandMessage"], None]


class EventSink(Protocol):
    """A transport for the daemon's outbox, and the daemon's only view of it.

    Home Assistant controls (:meth:`set_command_handler`, :meth:`publish_controls`,
    :meth:`reannounce`) and the connection (:meth:`start`, :attr:`status`) mean something
    to a network sink only; others accept the calls and do nothing.
    """

    @property
    def outbox(self) -> Outbox | None:
        """The outbox it drains (None: made without one, the daemon gives it its own)."""

    @property
    def status(self) -> dict[str, Any]:
        """The connection's figures for the stats message ({} without a connection)."""

    def set_command_handler(self, handler: CommandHandler) -> None:
        """Before :meth:`start`: call ``handler(message)`` for each message received on a
        command topic (in the sink's thread; it must only queue it)."""

    def start(self, wait_first: bool = True) -> None:
        """Begin delivering. Raises SinkError when the settings cannot work; a peer that is
        merely unreachable is retried in the background. ``wait_first`` False: not even a
        first attempt in the calling thread."""

    def publish_event(self, event: Event | None) -> None:
        """``event`` was just added to the outbox: deliver it (now, or when connected). None:
        nothing new, a wake-up for what waits in the outbox (after a transport change)."""

    def publish_state(self, state: PresenceState) -> None: ...

    def publish_stats(self, stats: dict[str, Any]) -> None: ...

    def publish_snapshot(self, jpeg: bytes, placeholder: bool = False) -> None:
        """The last face. ``placeholder``: a stand-in until one is seen, which must not
        replace a real picture the peer still holds (from before a restart)."""

    def set_snapshots(self, enabled: bool) -> None:
        """The Snapshots switch changed: apply it to the running transport."""

    def publish_controls(self, state: dict[str, Any]) -> None:
        """The Home Assistant controls' state (the switches read it)."""

    def reannounce(self) -> None:
        """Announce everything again (discovery, retained state): HA's Re-announce button."""

    def set_people(self, people: tuple[str, ...] | None) -> None:
        """The enrolled names (None: recognition off): each person's presence entity is
        announced, a person no longer enrolled is removed."""

    def detach(self) -> None:
        """Stop now without announcing a stop, events in flight given back to the outbox:
        another transport takes over (a reload). Never waits on the network."""

    def wait_detached(self) -> bool:
        """After :meth:`detach` (bounded by the transport): True once it has let go of its
        peer, so its successor may connect."""

    def close(self, timeout: float, abandon: threading.Event | None = None) -> None:
        """Flush what is pending within ``timeout`` seconds (less once ``abandon`` is set),
        then announce the stop."""


class StdoutSink:
    """The embedded default sink: one JSON line per event on ``stream`` (default stdout),
    flushed at once so a pipe reader sees each event as it happens. With an ``outbox`` it
    drains it (each event written is acknowledged there); without one it writes the event
    it is given.

    State, stats and snapshots are not written: stdout carries only the event stream (the
    daemon logs stats to stderr), so ``edge-face run | jq`` stays a clean event feed.
    """

    def __init__(self, stream: TextIO | None = None, outbox: Outbox | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self.outbox = outbox

    @property
    def status(self) -> dict[str, Any]:
        return {}  # no connection

    def set_command_handler(self, handler: CommandHandler) -> None:
        pass  # no commands arrive on stdout

    def start(self, wait_first: bool = True) -> None:
        pass  # nothing to connect

    def publish_event(self, event: Event | None) -> None:
        """Write ``event``, or with an outbox everything waiting in it (``event`` may then be None)."""
        if self.outbox is None:
            if event is not None:
                self._write(event.to_json())
            return
        while entries := self.outbox.take(self, limit=64):
            for entry in entries:
                self._write(entry.payload)
                self.outbox.ack(entry.sequence)

    def _write(self, payload: bytes) -> None:
        try:
            self._stream.write(payload.decode("utf-8") + "\n")
            self._stream.flush()
        except BrokenPipeError:
            self._discard_output()
            raise SinkClosed("stdout was closed by its reader") from None

    def publish_state(self, state: PresenceState) -> None:
        pass

    def publish_stats(self, stats: dict[str, Any]) -> None:
        pass

    def publish_snapshot(self, jpeg: bytes, placeholder: bool = False) -> None:
        pass

    def set_snapshots(self, enabled: bool) -> None:
        pass

    def publish_controls(self, state: dict[str, Any]) -> None:
        pass

    def reannounce(self) -> None:
        pass

    def set_people(self, people: tuple[str, ...] | None) -> None:
        pass

    def detach(self) -> None:
        self.close(0.0)

    def wait_detached(self) -> bool:
        return True

    def close(self, timeout: float, abandon: threading.Event | None = None) -> None:
        with contextlib.suppress(OSError, ValueError):  # closed pipe or stream: nothing left to flush into
            self._stream.flush()

    def _discard_output(self) -> None:
        """Point the stream's file descriptor at /dev/null: what is still buffered (and
        Python's flush at exit) then goes nowhere instead of failing again."""
        try:
            descriptor = self._stream.fileno()
        except (OSError, ValueError, AttributeError):  # not backed by a file: nothing to redirect
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, descriptor)
        os.close(devnull)
