"""The reader thread between a frame source and the daemon loop.

Live sources: the thread reads as fast as the camera delivers and keeps only the newest
frame, counting the ones the loop never took, so a slow detector never sees an old frame
(latency cannot build up). A live source that fails is closed and reopened with
exponential backoff, for as long as it takes; one that is missing at start is retried the
same way ("waiting"): boot order never matters. The state is visible in :attr:`health`.

An unexpected exception in the thread (not a :class:`SourceError`) is kept in
:attr:`FrameGrabber.crash` and handed to ``on_crash``: the daemon exits non-zero, it never
mistakes a dead reader for the end of a stream.

Non-live sources (replay, video file): every frame is handed over in order (the thread
waits for the loop), and the stream ends at the source's end or at its first error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from edge.sources.base import Frame, FrameSource, SourceError

# While a live source keeps failing for the same cause, the journal gets that cause once at
# WARNING, then reminders at INFO: the first two longest retry delays after it (a minute by
# default), each next one twice as long after the last, at most this long (the state and stats
# topics carry the state all along).
LONGEST_REMINDER_S = 3600.0


def reminder_interval(reminders_logged: int, first: float, longest: float = LONGEST_REMINDER_S) -> float:
    """Seconds from the last line about an unchanged failure to the next reminder, after
    ``reminders_logged`` reminders: ``first``, doubling each time, at most ``longest``."""
    return min(first * 2.0 ** min(reminders_logged, 64), longest)


@dataclass(frozen=True)
class SourceHealth:
    """``state``: "ok", "waiting" (a live source not opened yet), "reopening", "ended" (finite
    source done), "failed" (non-live error) or "crashed" (unexpected error in the reader)."""

    state: str
    frames_read: int
    dropped_frames: int
    reopens: int
    last_error: str | None


class FrameGrabber:
    def __init__(
        self,
        source: FrameSource,
        reopen_min_delay: float = 1.0,
        reopen_max_delay: float = 30.0,
        keep_latest: bool | None = None,
        logger: logging.Logger | None = None,
        on_crash: Callable[[str, BaseException], None] | None = None,
        first_reminder: float | None = None,
    ) -> None:
        """``keep_latest`` None: True for live sources (drop stale frames), False otherwise.
        ``on_crash(thread_name, exc)``: called once if the reader fails unexpectedly.
        ``first_reminder``: see :func:`reminder_interval` (None: twice ``reopen_max_delay``)."""
        self.source = source
        self.reopen_min_delay, self.reopen_max_delay = reopen_min_delay, reopen_max_delay
        self.first_reminder = 2 * reopen_max_delay if first_reminder is None else first_reminder
        self.keep_latest = source.is_live if keep_latest is None else keep_latest
        self.log = logger or logging.getLogger("edge.sources")
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._pending: Frame | None = None
        self._finished = False
        self._state = "ok"
        self._frames_read = self._dropped = self._reopens = 0
        self._last_error: str | None = None
        self._error: SourceError | None = None
        self._thread: threading.Thread | None = None
        self._on_crash = on_crash
        self.crash: BaseException | None = None

    def start(self, wait_for_live: bool = True) -> None:
        """Open the source and start reading. A finite source is opened in the caller's thread
        (a missing replay folder fails right here with :class:`SourceError`: it can never
        work); a live one that cannot be opened yet is retried by the reader with backoff,
        state "waiting", and its cause logged (``wait_for_live`` False: SourceError too, for
        a reload that can keep the camera it has)."""
        waiting_for: str | None = None  # the cause, when the source could not be opened yet
        try:
            self.source.open()
        except SourceError as exc:
            if not (self.source.is_live and wait_for_live):
                raise
            waiting_for = str(exc)
            with self._cond:
                self._state, self._last_error = "waiting", waiting_for
            self.log.warning("waiting for camera: %s; retrying in %.3g s", exc, self.reopen_min_delay)
        self._thread = threading.Thread(target=self._run, args=(waiting_for,), name="frame-grabber", daemon=True)
        self._thread.start()

    def get(self, timeout: float) -> Frame | None:
        """The newest unread frame, waiting up to ``timeout`` s; None if none came (see :attr:`finished`)."""
        with self._cond:
            self._cond.wait_for(lambda: self._pending is not None or self._finished, timeout)
            frame, self._pending = self._pending, None
            self._cond.notify_all()
            return frame

    @property
    def finished(self) -> bool:
        """True once a finite source has ended or failed and its last frame was taken."""
        with self._cond:
            return self._finished and self._pending is None

    @property
    def error(self) -> SourceError | None:
        """Why a non-live source stopped early (None: it ended normally or is still running)."""
        return self._error

    @property
    def health(self) -> SourceHealth:
        with self._cond:
            return SourceHealth(self._state, self._frames_read, self._dropped, self._reopens, self._last_error)

    @property
    def released(self) -> bool:
        """True when no reader thread uses the source any more (none was started, or it ended
        and closed the source): only then may another grabber use the same source object.
        A reader blocked in the driver (a camera ``close()`` in uninterruptible sleep) may
        still hold it after :meth:`stop` gave up waiting."""
        return self._thread is None or not self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self.log.warning(
                    "%s: reader did not stop within %.0f s (blocked in the driver?)", self.source.name, timeout
                )

    def _run(self, waiting_for: str | None = None) -> None:
        try:
            if waiting_for is not None and not self._retry_open(self.reopen_min_delay, logged=waiting_for):
                return
            while not self._stopping.is_set():
                try:
                    frame = self.source.read()
                except SourceError as exc:
                    if not self.source.is_live:
                        self._finish("failed", exc)
                        return
                    self._reopen(str(exc))
                    continue
                if frame is None:
                    if self.source.is_live:
                        self._reopen(f"{self.source.name}: stream ended")
                        continue
                    self._finish("ended", None)
                    return
                self._deliver(frame)
        except Exception as exc:
            with self._cond:
                self.crash, self._state, self._last_error = exc, "crashed", f"{type(exc).__name__}: {exc}"
            if self._on_crash is not None:
                self._on_crash("frame-grabber", exc)
        finally:
            try:
                self.source.close()
            finally:
                with self._cond:
                    self._finished = True
                    self._cond.notify_all()

    def _deliver(self, frame: Frame) -> None:
        with self._cond:
            self._frames_read += 1
            if self.keep_latest:
                if self._pending is not None:
                    self._dropped += 1
            else:
                self._cond.wait_for(lambda: self._pending is None or self._stopping.is_set())
            self._pending = frame
            self._cond.notify_all()

    def _finish(self, state: str, error: SourceError | None) -> None:
        with self._cond:
            self._state, self._error = state, error
            self._last_error = None if error is None else str(error)

    def _reopen(self, reason: str) -> None:
        """Close, then retry open with delays doubling from min to max until it works or we stop."""
        with self._cond:
            self._state, self._last_error = "reopening", reason
        self.source.close()
        delay = self.reopen_min_delay
        self.log.warning("%s; reopening in %.3g s", reason, delay)
        if self._retry_open(delay, "reopened"):
            with self._cond:
                self._reopens += 1

    def _retry_open(self, delay: float, done: str = "opened", logged: str | None = None) -> bool:
        """Try to open every ``delay`` s (doubling up to the max) until it works (True) or we
        stop (False). A cause (``logged``: the one already told) is logged at WARNING when it
        changes; while it stays the same, a reminder at INFO by :func:`reminder_interval`."""
        # When the cause was first told, when last (told or reminded), how many reminders since.
        since = logged_at = time.monotonic()
        reminders = 0
        while not self._stopping.wait(delay):
            try:
                self.source.open()
            except SourceError as exc:
                delay = min(delay * 2, self.reopen_max_delay)
                with self._cond:
                    self._last_error, state = str(exc), self._state
                now = time.monotonic()
                if str(exc) != logged:
                    logged, since, logged_at, reminders = str(exc), now, now, 0
                    self.log.warning("%s; retrying in %.3g s", exc, delay)
                elif now - logged_at >= reminder_interval(reminders, self.first_reminder):
                    doing = "waiting for camera" if state == "waiting" else f"reopening {self.source.name}"
                    self.log.info("still %s (%s): %s; retrying every %.3g s", doing, _duration(now - since), exc, delay)
                    logged_at, reminders = now, reminders + 1
                continue
            with self._cond:
                self._state = "ok"
            self.log.info("%s: %s", self.source.name, done)
            return True
        return False


def _duration(seconds: float) -> str:
    """``45 s``, ``3 min``, ``2 h``: a reminder's wait, rounded down."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds // 60:.0f} min"
    return f"{seconds // 3600:.0f} h"
