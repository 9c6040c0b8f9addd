"""Signals that come while ``edge-face run`` starts, before the daemon can route them.

The kernel's default for SIGHUP and SIGTERM ends a process silently: a SIGHUP (a reload
asked too early, a closed terminal) would end it with status 129 and no log line, and
systemd does not restart a death by SIGHUP. The daemon's own handlers
(:func:`edge.daemon.loop.run_main`) exist only once its modules are imported, a few tenths of a
second in (more on a Pi). So the command line holds these signals first, before anything
heavy is imported (stdlib ``signal`` only here): each is recorded, and the daemon acts on
the record as soon as its own handlers are in place. A stop is a stop; a reload asked
before the config file was read changes nothing (the file read is the current one) and is
logged as such.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

HELD = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)


class StartupSignals:
    """The held signals received so far, in order."""

    def __init__(self) -> None:
        self._received: list[int] = []

    def note(self, signum: int, frame: FrameType | None) -> None:
        self._received.append(signum)

    def take(self) -> list[int]:
        """The signals received since the last take (the daemon's handlers now take over)."""
        received, self._received = self._received, []
        return received


@contextlib.contextmanager
def held_signals() -> Iterator[StartupSignals]:
    """Record SIGHUP, SIGTERM and SIGINT instead of dying of them; the previous handlers
    come back after. Outside the main thread (an embedding test) nothing is held."""
    held = StartupSignals()
    previous = {}
    try:
        for signum in HELD:
            previous[signum] = signal.signal(signum, held.note)
    except ValueError:  # not the main thread: signal handlers cannot be set here
        pass
    try:
        yield held
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
