"""The daemon's statistics: per-frame timings of one interval, the periodic stats message and
its one-line summary, the outbox's drops and the last line of a stop.

In: timings from the frame loop, the grabber's :class:`SourceHealth`, the outbox's
:class:`OutboxStats`, the sink's status and the presence state (a :class:`StatsInputs`). Out:
the stats message (a JSON-ready dict, the keys ``edge-face fleet`` reads), the status line for
the journal and ``systemctl status``, and log lines. No state besides the interval's timings
(:class:`FrameTimes`) and the drops not yet logged (:class:`DropLog`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.common.sysinfo import count_open_fds, read_cpu_temperature
from edge.mqtt.outbox import Outbox, OutboxStats
from edge.scene.events import PresenceState, iso_utc
from edge.sources.grabber import SourceHealth

# A full outbox drops an event per event in the worst case: say so when it starts, then at
# most this often with the running count.
DROP_LOG_INTERVAL_S = 30.0


@dataclass
class FrameTimes:
    """Per-frame timings of one stats interval (seconds) of the frames the detector saw, and
    how many frames the motion gate let pass without it. Bounded by the interval:
    :meth:`take_window` starts a new one."""

    invoke: list[float] = field(default_factory=list)
    detect: list[float] = field(default_factory=list)
    skipped: int = 0
    window_start: float = field(default_factory=time.monotonic)

    def add(self, invoke: float, detect: float) -> None:
        self.invoke.append(invoke)
        self.detect.append(detect)

    def add_skipped(self) -> None:
        self.skipped += 1

    def take_window(self, now: float) -> tuple[float, int, list[float], list[float]]:
        """(window seconds, frames handled, invoke times, detect times) of the interval so
        far; starts a new one."""
        window = (now - self.window_start, len(self.invoke) + self.skipped, self.invoke, self.detect)
        self.invoke, self.detect, self.skipped, self.window_start = [], [], 0, now
        return window


def percentile_ms(seconds: list[float], q: float) -> float | None:
    """The ``q``-th percentile of ``seconds`` in milliseconds, rounded to 0.01; None if empty."""
    if not seconds:
        return None
    return round(float(np.percentile(np.asarray(seconds), q)) * 1000.0, 2)


@dataclass(frozen=True)
class StatsInputs:
    """Everything one stats message says, gathered by the loop at ``now`` (monotonic seconds).
    ``window``: :meth:`FrameTimes.take_window` of the interval; ``sink_status``: the sink's
    ``status`` (keys ``state``, ``last_error``, ``reconnects``, any may be absent);
    ``scene``: the per-frame stages' counters of the interval (scene and recognition, merged in
    as they are)."""

    now: float
    started: float
    frames_processed: int
    window: tuple[float, int, list[float], list[float]]
    health: SourceHealth
    paused: bool
    outbox: OutboxStats
    sink_status: Mapping[str, Any]
    presence: PresenceState
    scene: Mapping[str, Any]


def stats_message(inputs: StatsInputs) -> dict[str, Any]:
    """The periodic stats message (the wall clock, CPU temperature and open descriptors are
    read now)."""
    window, frames, invoke, detect = inputs.window
    health, outbox, status = inputs.health, inputs.outbox, inputs.sink_status
    return {
        "time": iso_utc(time.time()),
        "uptime_seconds": round(inputs.now - inputs.started, 1),
        "fps": round(frames / window, 2) if window > 0 else 0.0,
        "frames": inputs.frames_processed,
        "invoke_ms_p50": percentile_ms(invoke, 50),
        "invoke_ms_p95": percentile_ms(invoke, 95),
        "detect_ms_p50": percentile_ms(detect, 50),
        "detect_ms_p95": percentile_ms(detect, 95),
        "dropped_frames": health.dropped_frames,
        "source_state": "paused" if inputs.paused else health.state,
        "source_reopens": health.reopens,
        "source_error": health.last_error,
        "queue_depth": outbox.depth,
        "outbox_bytes": outbox.bytes,
        "events_delivered": outbox.delivered,
        "events_dropped": outbox.dropped,
        "events_rejected": outbox.rejected,
        "mqtt_state": status.get("state"),
        "mqtt_error": status.get("last_error"),
        "reconnects": status.get("reconnects"),
        "present": inputs.presence.present,
        "face_count": inputs.presence.count,
        "detection": detection_word(inputs.paused),
        "cpu_temperature_c": read_cpu_temperature(),
        "open_fds": count_open_fds(),
        **inputs.scene,
    }


def detection_word(paused: bool) -> str:
    """How the stats and the state payload say whether detection runs."""
    return "paused" if paused else "active"


def status_line(stats: dict[str, Any], health: SourceHealth) -> str:
    """The one-line summary of a stats message, for the journal and ``systemctl status``.
    Values the message holds as null (no frame timed in the interval, no error) are said in
    words or left out: a user never reads ``None``."""
    invoke_ms = stats["invoke_ms_p50"]
    timing = "no frame timed" if invoke_ms is None else f"invoke p50 {invoke_ms} ms"
    line = (
        f"{stats['fps']:.1f} fps, {stats['face_count']} face(s), {timing}, "
        f"dropped {stats['dropped_frames']}, source {stats['source_state']}"
    )
    if health.last_error is not None:
        if health.state == "waiting":
            line += f" (waiting for camera: {health.last_error})"
        elif health.state == "reopening":
            line += f" ({health.last_error})"
    if stats["mqtt_state"] not in (None, "connected"):
        cause = f" ({stats['mqtt_error']})" if stats["mqtt_error"] is not None else ""
        line += f", mqtt {stats['mqtt_state']}{cause}, {stats['queue_depth']} event(s) waiting"
    return line


class DropLog:
    """Events a full outbox dropped, logged without flooding: the first at once, then a
    summary at most every ``interval`` seconds (or when forced, at stop) with the running total."""

    def __init__(self, outbox: Outbox, log: logging.Logger, interval: float = DROP_LOG_INTERVAL_S) -> None:
        self._outbox, self._log, self._interval = outbox, log, interval
        self._unlogged: list[int] = []
        self._last_logged = float("-inf")

    def add(self, dropped: list[int]) -> None:
        """The sequence numbers :meth:`Outbox.add` dropped for one event (often none)."""
        self._unlogged += dropped

    def log_due(self, force: bool = False) -> None:
        if not self._unlogged:
            return
        now = time.monotonic()
        if not force and now - self._last_logged < self._interval:
            return
        self._last_logged = now
        dropped, self._unlogged = self._unlogged, []
        stats = self._outbox.stats
        self._log.warning(
            "outbox full (%d event(s), %d bytes; limits %d events / %d bytes; broker away or slow): dropped %d "
            "oldest event(s) (sequence %d-%d); %d dropped in total",
            stats.depth,
            stats.bytes,
            self._outbox.max_events,
            self._outbox.max_bytes,
            len(dropped),
            dropped[0],
            dropped[-1],
            stats.dropped,
        )


def log_stop_summary(log: logging.Logger, frames_processed: int, stats: OutboxStats) -> None:
    """The last line of a stop: how many events were made, delivered and lost, and why lost."""
    lost = stats.dropped + stats.rejected + stats.depth
    (log.warning if lost else log.info)(
        "stopped after %d frames: %d event(s) made, %d delivered, %d lost "
        "(%d dropped from a full outbox, %d rejected by the broker, %d undelivered at stop)",
        frames_processed,
        stats.enqueued,
        stats.delivered,
        lost,
        stats.dropped,
        stats.rejected,
        stats.depth,
    )
