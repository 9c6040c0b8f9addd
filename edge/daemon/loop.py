"""The on-device daemon: the one place where source, detector, presence tracker and sink are
assembled (:func:`build_daemon`) and the frame loop runs (:meth:`Daemon.run`).

One frame: newest frame from the grabber -> motion gate -> FaceDetector (pre-process, int8
invoke, decode) -> scene rules and presence trackers (:class:`SceneStage`) -> events to the
sink (+ state, + optional snapshot). Around it: periodic
stats, sd_notify (READY after the model is loaded and the first frame processed, WATCHDOG
per processed frame so a stuck camera stops the pings, STATUS, STOPPING), SIGTERM/SIGINT
for a graceful stop (the sink flushes) and SIGHUP to reload the config file.

Signal handlers only set flags; the loop acts on them between frames, so no part is ever
torn down while it is in use. They are installed before the model is loaded, and
``edge-face run`` holds SIGHUP and SIGTERM even before that (:mod:`edge.daemon.startup_signals`),
so a signal at any moment of start-up is a clean stop or a reload, never a silent death.

Events are numbered and kept in the daemon's :class:`edge.mqtt.outbox.Outbox`; the sink is only a
transport draining it, so a reload that replaces the MQTT client loses nothing, and the
frame loop never waits on the network (the watchdog keeps being pinged through reloads and
broker outages). A live camera that is missing is waited for ("waiting for camera: ...").
An unexpected exception in any thread is logged once with its traceback and ends the
daemon with ExitCode.FAILURE, so systemd restarts it; it is never mistaken for a clean end.
The last line of a stop says how many events were delivered and how many were lost.

Exit codes of :func:`run_main` (:class:`edge.exitcodes.ExitCode`): 0 clean stop or end of a
finite replay, 1 unexpected failure, 2 config error, 3 source that can never work, 4 model error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from edge.common.redact import redact_url
from edge.common.sysinfo import count_open_fds, read_cpu_temperature
from edge.config import (
    OPTION_SECTIONS,
    SECTIONS,
    SHUTDOWN_RESERVE_SECONDS,
    STOP_BUDGET_SECONDS,
    Config,
    ConfigError,
    describe,
    load_config,
)
from edge.daemon.memory import return_freed_frame_buffers
from edge.daemon.people import PeopleControls
from edge.daemon.recognition import DaemonRecognition
from edge.daemon.sdnotify import SystemdNotifier
from edge.daemon.snapshot import encode_snapshot, placeholder_jpeg
from edge.daemon.startup_signals import StartupSignals
from edge.detect.decode import Detections
from edge.detect.detector import DetectorOptions, FaceDetector
from edge.detect.model import ModelError
from edge.exitcodes import ExitCode
from edge.mqtt.command_intake import CommandIntake
from edge.mqtt.controls import DETECTION, PEOPLE_CONTROLS, REANNOUNCE, Command, Controls, control_state
from edge.mqtt.outbox import Outbox
from edge.mqtt.sinks import EventSink, SinkClosed, SinkError, StdoutSink
from edge.ops.device_identity import Retirer, retired_zones
from edge.scene.events import (
    Event,
    EventIdentity,
    PresenceSettings,
    PresenceState,
    iso_utc,
    new_boot_id,
)
from edge.scene.stage import SceneStage
from edge.sources.auto import build_source
from edge.sources.base import Frame, FrameSource, SourceError
from edge.sources.grabber import FrameGrabber, SourceHealth

# How long the loop waits for a frame before it looks at its flags and the stats clock.
_POLL_SECONDS = 0.25
# The whole stop must fit the unit's TimeoutStopSec (STOP_BUDGET_SECONDS, validated against
# mqtt.flush_timeout by the config). What a stop needs besides the flush is the reserve: the
# frame reader's join (5 s), "stopped" and the disconnect (STOPPED_GRACE_S + a tick), logging,
# the interpreter's exit; the flush gets the rest.
STOP_BUDGET_S = STOP_BUDGET_SECONDS
_STOP_RESERVE_S = SHUTDOWN_RESERVE_SECONDS
# A full outbox drops an event per event in the worst case: say so when it starts, then at
# most this often with the running count.
DROP_LOG_INTERVAL_S = 30.0

log = logging.getLogger("edge.daemon")


class StartupError(Exception):
    """A part that cannot be built or started; ``exit_code`` says which kind (config 2, source 3, model 4)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


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


def detect_timed(detector: FaceDetector, frame: Frame) -> tuple[Detections, float]:
    """``detector.detect(frame)`` with the interpreter's share: (detections, invoke seconds).
    Stats and the loop-overhead benchmark need it."""
    result = detector.detect_timed(frame.pixels, frame.color_order)
    return result.detections, result.times.invoke_s


def _model_settings(config: Config) -> tuple[Path, int | None]:
    """What loading the model depends on (the thresholds do not)."""
    return config.detector.model, config.detector.num_threads


def build_detector(config: Config) -> FaceDetector:
    settings = config.detector
    try:
        return FaceDetector(
            settings.model,
            DetectorOptions(
                score_threshold=settings.score_threshold,
                iou_threshold=settings.iou_threshold,
                num_threads=settings.num_threads,
            ),
        )
    except ModelError as exc:
        raise StartupError(str(exc), ExitCode.MODEL) from None
    except OSError as exc:
        raise StartupError(f"model '{settings.model}': cannot be read ({exc.strerror})", ExitCode.MODEL) from None


def outbox_bounds(config: Config) -> tuple[int, int]:
    """(max events, max bytes) of the outbox for ``config``."""
    return config.mqtt.queue_size, config.mqtt.queue_bytes


def build_sink(
    config: Config,
    model_id: str,
    outbox: Outbox | None = None,
    on_crash: Callable[[str, BaseException], None] | None = None,
    retired_zones: tuple[str, ...] = (),
) -> EventSink:
    """The transport draining ``outbox`` (None: a new one bounded by ``config``): stdout JSON
    lines without ``[mqtt] host``; the MQTT transport (not yet started) with it. Raises
    StartupError (exit 2) when the sink rejects its settings."""
    outbox = outbox if outbox is not None else Outbox(*outbox_bounds(config))
    if config.mqtt.host is None:
        return StdoutSink(outbox=outbox)
    from edge.mqtt.sink import MqttSink  # paho is loaded only when MQTT is configured

    try:
        return MqttSink(
            config.mqtt,
            config.homeassistant,
            config.device.id,
            model_id,
            config.snapshot.enabled,
            logging.getLogger("edge.mqtt"),
            outbox,
            on_crash=on_crash,
            zones=config.scene.zone_names,
            retired_zones=retired_zones,
            snapshot_max_bytes=config.snapshot.max_bytes,
        )
    except ConfigError as exc:
        raise StartupError(str(exc), ExitCode.CONFIG) from None


def build_daemon(
    config: Config,
    *,
    config_path: str | os.PathLike[str] | None = None,
    source: FrameSource | None = None,
    sink: EventSink | None = None,
    notifier: SystemdNotifier | None = None,
    controls: DaemonControls | None = None,
) -> Daemon:
    """Assemble a daemon from ``config``: loads the model (StartupError exit 4) and picks the
    source; nothing is opened or connected yet. ``source`` / ``sink`` / ``notifier`` replace
    the configured ones (a given ``sink`` drains the outbox it was made with, or, made with
    none, the one the daemon gives it). ``controls``: stop and reload flags that may already
    be set (signals during start-up). ``config_path`` is re-read on SIGHUP (None: reload is
    refused). Controls stored from Home Assistant are merged over ``config`` first."""
    ha_controls = Controls.for_config(config, logging.getLogger("edge.controls"))
    file_config, config = config, ha_controls.effective(config)
    detector = build_detector(config)
    if source is None:
        try:
            source = build_source(config.camera, detector.input_size)
        except SourceError as exc:
            raise StartupError(str(exc), ExitCode.SOURCE) from None
    # A given sink may bring its own outbox (an empty Outbox is falsy: test for None).
    outbox = sink.outbox if sink is not None else None
    if outbox is None:
        outbox = Outbox(*outbox_bounds(config))
        if isinstance(sink, _TakesOutbox):
            sink.outbox = outbox
    controls = controls if controls is not None else DaemonControls()
    return Daemon(
        config=config,
        detector=detector,
        source=source,
        sink=sink
        if sink is not None
        else build_sink(
            config,
            detector.model_id,
            outbox,
            controls.crashed,
            retired_zones=retired_zones(config, logging.getLogger("edge.forget")) if config.mqtt.host else (),
        ),
        notifier=notifier if notifier is not None else SystemdNotifier(),
        config_path=Path(config_path) if config_path is not None else None,
        controls=controls,
        outbox=outbox,
        ha_controls=ha_controls,
        file_config=file_config,
    )


class DaemonControls:
    """What other threads and signal handlers may ask of the daemon: stop, reload, and
    "this thread died" (:meth:`crashed`). Made before the daemon, so signals are routed
    while the model loads."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.hurry = threading.Event()  # a second stop request: do not wait for the flush
        self.reload = threading.Event()
        self._lock = threading.Lock()
        self.crash: tuple[str, BaseException] | None = None

    def request_stop(self) -> None:
        """SIGTERM/SIGINT: the first stops (with a flush), the next one cuts the flush short."""
        if self.stop.is_set():
            self.hurry.set()
        self.stop.set()

    def crashed(self, thread_name: str, exc: BaseException) -> None:
        """A thread failed unexpectedly: the first one is kept (and logged by the loop),
        and the daemon stops with ExitCode.FAILURE."""
        with self._lock:
            if self.crash is None:
                self.crash = (thread_name, exc)
        self.stop.set()


@runtime_checkable
class _TakesOutbox(Protocol):
    """A sink whose ``outbox`` the daemon may set: one made without one holds None."""

    outbox: Outbox | None


class Daemon:
    """The frame loop and its lifecycle. Use :func:`build_daemon`; then :meth:`run` in one
    thread, :meth:`request_stop` / :meth:`request_reload` from any thread or signal handler."""

    def __init__(
        self,
        *,
        config: Config,
        file_config: Config,
        config_path: Path | None,
        detector: FaceDetector,
        source: FrameSource,
        sink: EventSink,
        outbox: Outbox,
        notifier: SystemdNotifier,
        controls: DaemonControls,
        ha_controls: Controls,
    ) -> None:
        """The parts, as :func:`build_daemon` made them. ``config``: ``file_config`` (the
        file as read) with the Home Assistant ``ha_controls`` merged over it; ``sink``
        drains ``outbox``."""
        self.config, self.file_config, self.config_path = config, file_config, config_path
        self.detector, self.sink, self.outbox, self.notifier = detector, sink, outbox, notifier
        self.controls, self.ha_controls = controls, ha_controls
        # Commands from the broker, through the gate; kept across reloads and sink swaps.
        self.commands = CommandIntake(logging.getLogger("edge.controls"))
        self._paused = not self.ha_controls.detection
        self.grabber = self._grabber_for(source, config)
        self.boot_id = new_boot_id()
        self.scene = SceneStage(
            config.motion,
            config.scene,
            EventIdentity(config.device.id, self.boot_id, detector.model_id),
            PresenceSettings(config.events.debounce_frames, config.events.clear_after_seconds),
        )
        try:  # recognition (issue 19): tracks always, who they are with [recognition] enabled
            self.recognition = DaemonRecognition(config, self.scene, self._emit, self._people_changed)
        except ModelError as exc:
            raise StartupError(str(exc), ExitCode.MODEL) from None
        # Enrol / forget from Home Assistant; the enrolled names the sink announces.
        self.people_controls = PeopleControls(self.recognition, logging.getLogger("edge.controls"))
        self.times = FrameTimes()
        self.frames_processed = 0
        self.started_monotonic = time.monotonic()
        self._stop, self._reload = self.controls.stop, self.controls.reload
        self._exit_code = ExitCode.OK  # what a requested stop returns
        self._source_state = "ok"
        self._ready = False
        self._drops_unlogged: list[int] = []
        self._last_drop_log = float("-inf")
        self._retirer: Retirer | None = None  # removes the names the device no longer uses
        self._handover: threading.Thread | None = None  # the latest reload's sink handover

    # --- control, from any thread ---------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    def report_crash(self, thread_name: str, exc: BaseException) -> None:
        """For ``threading.excepthook`` and worker threads: see :meth:`DaemonControls.crashed`."""
        self.controls.crashed(thread_name, exc)

    # --- the loop -------------------------------------------------------------------------

    def run(self, max_frames: int | None = None) -> int:
        """Run until stopped, a finite source ends, or ``max_frames`` frames are processed;
        returns the exit code (0; 1 after an unexpected error in any thread; 2 when the broker
        cannot be used as configured; 3 if a finite source can never work)."""
        log.info("starting: %s; interpreter %s", redact_url(describe(self.config)), self.detector.interpreter_name)
        if self._stop.is_set():
            log.info("stopped during start-up: 0 event(s) delivered, 0 lost")
            return ExitCode.OK
        try:
            if self._paused:
                log.info("detection is OFF (switched off from Home Assistant): the camera stays closed")
            else:
                self.grabber.start()
        except SourceError as exc:
            log.error("%s", exc)
            return ExitCode.SOURCE
        try:
            self._announce_identity(self.config)
            self.people_controls.announce(self.sink)  # before the start: the first discovery holds them
            self._start_sink(self.sink)
        except StartupError as exc:
            log.error("%s", exc)
            self.grabber.stop()
            return exc.exit_code
        self._publish_retained()
        self.started_monotonic = self.times.window_start = time.monotonic()
        code: int = ExitCode.FAILURE
        try:
            code = self._loop(max_frames)
        except Exception as exc:
            self.controls.crashed(threading.current_thread().name, exc)
        finally:
            code = self._shutdown(code)
        return code

    def _shutdown(self, code: int) -> int:
        """Stop within STOP_BUDGET_S: reader, then flush and "stopped", then the last line:
        how many events were delivered and how many lost. Returns the exit code."""
        self.notifier.stopping()
        crash = self.controls.crash
        if crash is not None:
            name, exc = crash
            log.error(
                "unexpected error in thread %s: %s: %s; exiting with %d so that systemd restarts the daemon",
                name,
                type(exc).__name__,
                exc,
                ExitCode.FAILURE,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
            code = ExitCode.FAILURE
        self.ha_controls.store()  # a control changed within the store interval
        self.recognition.end_all()
        # Nobody is watching any more: the retained state must not say someone is there.
        self.sink.publish_state(self._absent_state())
        self.grabber.stop()
        self._log_drops(force=True)
        self.sink.close(self.flush_timeout(), abandon=self.controls.hurry)
        if self._retirer is not None:
            self._retirer.stop()  # what is left stays in the record for the next start
        self.notifier.close()
        stats = self.outbox.stats
        lost = stats.dropped + stats.rejected + stats.depth
        (log.warning if lost else log.info)(
            "stopped after %d frames: %d event(s) made, %d delivered, %d lost "
            "(%d dropped from a full outbox, %d rejected by the broker, %d undelivered at stop)",
            self.frames_processed,
            stats.enqueued,
            stats.delivered,
            lost,
            stats.dropped,
            stats.rejected,
            stats.depth,
        )
        return code

    def flush_timeout(self) -> float:
        """``mqtt.flush_timeout``, capped so that the whole stop fits :data:`STOP_BUDGET_S`."""
        return max(0.0, min(self.config.mqtt.flush_timeout, STOP_BUDGET_S - _STOP_RESERVE_S))

    def _loop(self, max_frames: int | None) -> int:
        next_stats = time.monotonic() + self.config.stats.interval_seconds
        while not self._stop.is_set():
            if self._reload.is_set():
                self._reload.clear()
                self._apply_reload()
            for command in self.commands.take():
                self._apply_control(command)
            self.ha_controls.store_if_due()
            if self._paused:  # privacy mode: no frame is read, the watchdog still hears from us
                if not self._ready:
                    self._ready = True
                    self.notifier.ready("detection paused from Home Assistant")
                self.commands.wait(_POLL_SECONDS)
                self.notifier.watchdog_if_due()
                frame = None
            else:
                frame = self.grabber.get(_POLL_SECONDS)
            if frame is not None:
                try:
                    self._process(frame)
                except SinkClosed as exc:
                    log.info("%s; stopping", exc)
                    return ExitCode.OK
                self.frames_processed += 1
                if self.frames_processed == 1:
                    self._ready = True
                    self.notifier.ready(f"first frame processed ({frame.width}x{frame.height})")
                    log.info("ready: first frame processed (%dx%d)", frame.width, frame.height)
                self.notifier.watchdog_if_due()
                if max_frames is not None and self.frames_processed >= max_frames:
                    return ExitCode.OK
            elif not self._paused and self.grabber.finished:
                if self.controls.crash is not None:
                    return ExitCode.FAILURE
                if self.grabber.error is not None:
                    log.error("%s", self.grabber.error)
                    return ExitCode.SOURCE
                log.info("%s: end of stream", self.grabber.source.name)
                return ExitCode.OK
            now = time.monotonic()
            health = self.grabber.health
            if not self._paused and health.state in ("waiting", "reopening"):
                # The reader is alive and retrying: the service is up, waiting for its camera.
                if not self._ready:
                    self._ready = True
                    self.notifier.ready(f"waiting for camera: {health.last_error}")
                self.notifier.watchdog_if_due(now)
            # A camera going away or coming back is reported at once, not at the next interval.
            source_changed = (
                not self._paused
                and health.state != self._source_state
                and health.state in ("ok", "reopening", "waiting")
            )
            if now >= next_stats or source_changed:
                self._source_state = health.state
                self._report_stats(now, health)
                next_stats = now + self.config.stats.interval_seconds
            self._log_drops()
        return ExitCode.FAILURE if self.controls.crash is not None else self._exit_code

    def _process(self, frame: Frame) -> None:
        # A still scene with nobody in it is detected only every motion.idle_interval.
        if not self.scene.should_detect(frame):
            self.times.add_skipped()
            return
        started = time.perf_counter()
        detections, invoke = detect_timed(self.detector, frame)
        kept = self.scene.apply(detections, frame.height)
        detections = kept.detections
        track_ids, identities = self.recognition.frame(frame, kept)
        detected = time.perf_counter()
        # Events carry the capture time, not the (later) time the frame was processed.
        wall_time = time.time() - (time.monotonic() - frame.t_monotonic)
        events = self.scene.update_presence(
            kept, frame.width, frame.height, frame.t_monotonic, wall_time, track_ids, identities
        )
        self._emit(events)
        if events:
            self.sink.publish_state(self.presence_state())
            # The snapshot is the last face seen: an empty room does not replace it.
            if self.config.snapshot.enabled and len(detections):
                self._publish_snapshot(frame, detections)
        self.times.add(invoke, detected - started)

    def presence_state(self) -> PresenceState:
        """The whole frame's presence with each zone's and each enrolled person's, and whether
        detection is paused."""
        return self.scene.presence_state(self._detection_word(), self.recognition.people())

    def _people_changed(self) -> None:
        """Enrolled, forgotten, or the gallery reloaded: the state lists the names anew, and
        the sink announces each person's entity (or removes it)."""
        self.sink.publish_state(self.presence_state())
        self.people_controls.announce(self.sink)

    def _emit(self, events: list[Event]) -> None:
        """Number ``events`` in the outbox and wake the sink."""
        for event in events:
            event, dropped = self.outbox.add(event)
            self._drops_unlogged += dropped
            log.info("event %d %s: %d face(s)", event.sequence, event.type, event.face_count)
            self.sink.publish_event(event)

    def _publish_snapshot(self, frame: Frame, detections: Detections) -> None:
        settings = self.config.snapshot
        jpeg = encode_snapshot(frame.pixels, frame.color_order, detections, settings.max_bytes, settings.quality)
        if jpeg is None:
            log.warning(
                "snapshot skipped: %dx%d does not fit into snapshot.max_bytes = %d",
                frame.width,
                frame.height,
                settings.max_bytes,
            )
            return
        self.sink.publish_snapshot(jpeg)

    def _log_drops(self, force: bool = False) -> None:
        """Drops from a full outbox: the first at once, then a summary at most every
        DROP_LOG_INTERVAL_S (``force``: now, at stop) with the running total."""
        if not self._drops_unlogged:
            return
        now = time.monotonic()
        if not force and now - self._last_drop_log < DROP_LOG_INTERVAL_S:
            return
        self._last_drop_log = now
        dropped, self._drops_unlogged = self._drops_unlogged, []
        stats = self.outbox.stats
        log.warning(
            "outbox full (%d event(s), %d bytes; limits %d events / %d bytes; broker away or slow): dropped %d "
            "oldest event(s) (sequence %d-%d); %d dropped in total",
            stats.depth,
            stats.bytes,
            self.outbox.max_events,
            self.outbox.max_bytes,
            len(dropped),
            dropped[0],
            dropped[-1],
            stats.dropped,
        )

    # --- stats ----------------------------------------------------------------------------

    def stats(self, now: float, health: SourceHealth) -> dict[str, Any]:
        """The periodic stats message; starts a new measuring interval."""
        window, frames, invoke, detect = self.times.take_window(now)
        status = self.sink.status
        outbox = self.outbox.stats
        state = self.presence_state()
        return {
            "time": iso_utc(time.time()),
            "uptime_seconds": round(now - self.started_monotonic, 1),
            "fps": round(frames / window, 2) if window > 0 else 0.0,
            "frames": self.frames_processed,
            "invoke_ms_p50": percentile_ms(invoke, 50),
            "invoke_ms_p95": percentile_ms(invoke, 95),
            "detect_ms_p50": percentile_ms(detect, 50),
            "detect_ms_p95": percentile_ms(detect, 95),
            "dropped_frames": health.dropped_frames,
            "source_state": "paused" if self._paused else health.state,
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
            "present": state.present,
            "face_count": state.count,
            "detection": self._detection_word(),
            "cpu_temperature_c": read_cpu_temperature(),
            "open_fds": count_open_fds(),
            **self.scene.take_stats(),
            **self.recognition.take_stats(),
        }

    def _report_stats(self, now: float, health: SourceHealth) -> None:
        stats = self.stats(now, health)
        line = status_line(stats, health)
        log.info("stats: %s", line)
        self.commands.report_unlogged()
        self.notifier.status(line)
        self.sink.publish_stats(stats)

    # --- parts ----------------------------------------------------------------------------

    def _source_after(self, stopped: FrameGrabber) -> FrameSource:
        """The source for a grabber that replaces ``stopped``: the same object when its reader
        has let go of it, else a new one from the running config (a reader still blocked in
        the driver may use it yet; a source is never used by two threads)."""
        if stopped.released:
            return stopped.source
        log.warning("%s: its reader is still blocked; opening a new source object", stopped.source.name)
        return build_source(self.config.camera, self.detector.input_size)

    def _grabber_for(self, source: FrameSource, config: Config) -> FrameGrabber:
        return FrameGrabber(
            source,
            reopen_min_delay=config.camera.reopen_min_delay,
            reopen_max_delay=config.camera.reopen_max_delay,
            logger=logging.getLogger("edge.sources"),
            on_crash=self.controls.crashed,
        )

    def _start_sink(self, sink: EventSink, wait_first: bool = True) -> None:
        """Connect a network sink (stdout needs nothing), routing Home Assistant's commands to
        the controls' inbox when they are on. A broker that cannot be used as configured (e.g.
        its certificate is rejected) is a config error; one that is merely unreachable is
        retried by the sink in the background. ``wait_first`` False: not even the first
        attempt in this thread (a reload in the frame loop)."""
        if self.ha_controls.enabled:
            sink.set_command_handler(self.commands.receive)
        try:
            sink.start(wait_first=wait_first)
        except (SinkError, ConfigError) as exc:  # e.g. a rejected certificate, an unreadable CA file
            raise StartupError(str(exc), ExitCode.CONFIG) from None

    def _apply_reload(self, file_config: Config | None = None) -> None:
        """Re-read the config file (or take ``file_config``: a control changed), merge the
        controls over it and rebuild only the parts whose sections changed. A file that does
        not validate, a model that does not load, or a camera that does not open keeps the
        running configuration."""
        if self.config_path is None and file_config is None:
            log.warning("reload requested, but the daemon was not started from a config file")
            return
        self.notifier.notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        old, rereading = self.config, file_config is None
        try:
            if file_config is None:
                assert self.config_path is not None  # returned above when there is neither
                file_config = load_config(self.config_path)
            ha_controls = self.ha_controls
            if Controls.for_config(file_config, log, load=False).enabled != ha_controls.enabled:
                ha_controls = Controls.for_config(file_config, logging.getLogger("edge.controls"))
            elif file_config.device.state_dir != ha_controls.state_dir:
                ha_controls = ha_controls.moved_to(file_config.device.state_dir)
            new = ha_controls.effective(file_config, announce=rereading)
            # The thresholds only steer decoding: a new one does not load the model again.
            same_model = _model_settings(new) == _model_settings(old)
            detector = self.detector if same_model else build_detector(new)
            if new.camera != old.camera or detector.input_size != self.detector.input_size:
                self._swap_source(new, detector)
        except (ConfigError, StartupError, ModelError) as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            self.notifier.ready()
            return
        except OSError as exc:  # e.g. a config file the service user cannot read
            log.error(
                "reload failed, keeping the running configuration: config file '%s': cannot be read (%s)",
                self.config_path,
                exc.strerror or exc,
            )
            self.notifier.ready()
            return
        changed = [name for name in (*SECTIONS, *OPTION_SECTIONS) if getattr(new, name) != getattr(old, name)]
        # The Snapshots switch is applied to the running session (set_snapshots): replacing
        # the connection for it would only cost a reconnect.
        sink_changed = (
            any(name in changed for name in ("mqtt", "homeassistant"))
            or new.device.id != old.device.id
            or detector.model_id != self.detector.model_id
            or new.scene.zone_names != old.scene.zone_names  # zones have their own entities
        )
        if detector is self.detector and new.detector != old.detector:
            detector.set_postprocess(new.detector.score_threshold, new.detector.iou_threshold)
        controls_replaced = ha_controls.enabled != self.ha_controls.enabled  # turned on or off by the file
        if ha_controls is not self.ha_controls:  # replaced, or moved to a new state_dir
            self.ha_controls.store()  # what the replaced controls have not stored yet
        self.ha_controls = ha_controls  # before the sink swap: the new sink routes their commands
        if sink_changed:
            new = self._swap_sink(new, old, detector.model_id)
        else:
            if new.snapshot.enabled != old.snapshot.enabled:  # on the same connection: no command is missed
                self.sink.set_snapshots(new.snapshot.enabled)
                if new.snapshot.enabled:
                    self.sink.publish_snapshot(placeholder_jpeg(), placeholder=True)
            if new.device.state_dir != old.device.state_dir:
                # The announced identity moves with the folder (the sink swap records it otherwise).
                self._announce_identity(new, running=old, wait=False)
        if new.device.state_dir != old.device.state_dir:
            log.info(
                "device.state_dir changed: controls and the announced identity are kept in '%s' from now on "
                "(the previous folder '%s' is left as it is)",
                new.device.state_dir,
                old.device.state_dir,
            )
        self.detector, self.config, self.file_config = detector, new, file_config
        if controls_replaced:
            self._set_paused(not ha_controls.detection)
        self.outbox.set_bounds(*outbox_bounds(new))
        self.scene.reconfigure(
            new.motion,
            new.scene,
            EventIdentity(new.device.id, self.boot_id, detector.model_id),
            PresenceSettings(new.events.debounce_frames, new.events.clear_after_seconds),
        )
        self._reload_recognition(new, reread_gallery=rereading)
        self.people_controls.announce(self.sink)  # recognition turned on or off: its entities follow
        logging.getLogger("edge").setLevel(new.log.level.upper())
        log.info("configuration reloaded (changed: %s)", ", ".join(changed) or "nothing")
        self.notifier.ready()

    def _reload_recognition(self, new: Config, reread_gallery: bool) -> None:
        """Recognition follows the new config; a SIGHUP reads the gallery file again. Models
        that cannot be loaded leave recognition as it was, with the cause logged."""
        try:
            self.recognition.reconfigure(new, reread_gallery=reread_gallery)
        except ModelError as exc:
            log.error("reload: recognition models cannot be loaded, recognition left as it was: %s", exc)

    def _swap_source(self, new: Config, detector: FaceDetector) -> None:
        """Stop the camera, open the newly configured one; if it fails, reopen the old one
        (a camera cannot be opened twice, so the old one must be released first)."""
        try:
            source = build_source(new.camera, detector.input_size)
        except SourceError as exc:
            raise StartupError(str(exc), ExitCode.SOURCE) from None
        if self._paused:  # privacy mode: the new camera is opened when detection is switched on
            self.grabber = self._grabber_for(source, new)
            return
        old_grabber = self.grabber
        old_grabber.stop()
        grabber = self._grabber_for(source, new)
        try:
            grabber.start(wait_for_live=False)
        except SourceError as exc:
            try:
                self.grabber = self._grabber_for(self._source_after(old_grabber), self.config)
                self.grabber.start()
            except SourceError as again:
                log.error("the previous source cannot be reopened either: %s", again)
                self._exit_code = ExitCode.SOURCE
                self._stop.set()
            raise StartupError(str(exc), ExitCode.SOURCE) from None
        self.grabber, self._source_state = grabber, "ok"

    def _swap_sink(self, new: Config, old: Config, model_id: str) -> Config:
        """Replace the transport, keep the outbox; returns ``new``, or ``new`` with the old sink
        settings if the new ones cannot be used (an unreadable password or CA file). Never
        waits on the network: the old transport gives its in-flight events back to the outbox
        and disconnects in its own thread, the new one connects in its own thread."""
        try:
            sink = build_sink(new, model_id, self.outbox, self.controls.crashed, retired_zones=old.scene.zone_names)
            self.people_controls.announce(sink)  # here, in the frame loop's thread; it starts in another
        except StartupError as exc:
            log.error("reload: new [mqtt] settings unusable (%s); keeping the previous ones", exc)
            return dataclasses.replace(new, device=old.device, mqtt=old.mqtt, homeassistant=old.homeassistant)
        previous = self.sink
        previous.detach()
        self.sink = sink
        self._publish_retained(new)
        sink.publish_event(None)  # wake it: events may be waiting in the outbox
        # The old session ends (clean DISCONNECT) before the new one connects with the same
        # client id, and a renamed or moved device is removed under its old name first (they
        # may share topics); both wait on the network, so not in this thread.
        # Handovers run one after the other: in a reload storm a sink detached before it
        # started returns at once, and the next one must still wait for the last live one.
        self._handover = threading.Thread(
            target=self._retire_then_start,
            args=(self._handover, previous, sink, new, old),
            name="retire-identity",
            daemon=True,
        )
        self._handover.start()
        return new

    def _retire_then_start(
        self, earlier: threading.Thread | None, previous: EventSink, sink: EventSink, new: Config, old: Config
    ) -> None:
        try:
            if earlier is not None:
                earlier.join()  # bounded: its own waits are
            if not previous.wait_detached():
                log.warning("reload: the previous MQTT session did not end in time; connecting the new one anyway")
            self._announce_identity(new, running=old)
            self._start_sink(sink, wait_first=False)
        except StartupError as exc:  # not expected without a first attempt; kept for safety
            log.error("reload: the new MQTT transport did not start: %s", exc)
        except BaseException as exc:  # handed on, never swallowed: the daemon exits 1
            self.controls.crashed(threading.current_thread().name, exc)

    # --- Home Assistant controls ----------------------------------------------------------

    def _detection_word(self) -> str:
        return "paused" if self._paused else "active"

    def _absent_state(self) -> PresenceState:
        """What a clean stop leaves retained: nobody, in the frame or any zone (last_seen kept)."""
        state = self.presence_state()
        zones = {name: dataclasses.replace(zone, present=False, count=0) for name, zone in state.zones.items()}
        people = state.people.absent() if state.people is not None else None
        return dataclasses.replace(state, present=False, count=0, zones=zones, people=people)

    def _publish_retained(self, config: Config | None = None) -> None:
        """What a (new) sink announces: the presence state, the control state, and, with
        snapshots on, a placeholder so the image entity is never empty while we run."""
        config = config if config is not None else self.config
        self.sink.publish_state(self.presence_state())
        if self.ha_controls.enabled:
            self.sink.publish_controls(self.people_controls.control_state(control_state(config, not self._paused)))
        if config.snapshot.enabled:
            self.sink.publish_snapshot(placeholder_jpeg(), placeholder=True)

    def _apply_control(self, command: Command) -> None:
        """A command from Home Assistant, applied between frames without a restart."""
        if not self.ha_controls.enabled:  # taken before a reload turned the controls off
            return
        if command.control == REANNOUNCE:
            log.info("re-announcing discovery and retained state (requested over MQTT)")
            self.sink.reannounce()
            return
        if command.control in PEOPLE_CONTROLS:
            self.people_controls.apply(command)
        elif self.ha_controls.apply(command):
            if command.control == DETECTION:
                self._set_paused(not command.value)
            else:
                self._apply_reload(self.file_config)
        # Echoed even when unchanged: HA shows what is true.
        self.sink.publish_controls(self.people_controls.control_state(control_state(self.config, not self._paused)))

    def _set_paused(self, paused: bool) -> None:
        if paused == self._paused:
            return
        if paused:
            self._paused = True
            self.grabber.stop()  # releases the camera
            self._emit(self.scene.clear_presence(time.time()))
            self.recognition.end_all()
            log.info("detection paused from Home Assistant: camera released, no frame is processed")
        else:
            try:
                grabber = self._grabber_for(self._source_after(self.grabber), self.config)
                grabber.start()  # a live camera that is gone meanwhile is waited for
            except SourceError as exc:
                log.error("detection resumed, but the source can never be opened: %s", exc)
                self._exit_code = ExitCode.SOURCE
                self._stop.set()
                return
            self.grabber, self._paused, self._source_state = grabber, False, "ok"
            log.info("detection resumed from Home Assistant")
        self.sink.publish_state(self.presence_state())

    def _announce_identity(self, config: Config, running: Config | None = None, wait: bool = True) -> None:
        """Record who the device is now; an identity it replaced (renamed or moved by a
        reload, while stopped, or a copied state directory) is removed in the background,
        tried once first (up to mqtt.flush_timeout) when ``wait``: not in the frame loop."""
        if config.mqtt.host is None:
            return
        if self._retirer is None:
            self._retirer = Retirer(config, logging.getLogger("edge.forget"))
        self._retirer.announce(config, running)
        if wait:
            self._retirer.wait_tried(config.mqtt.flush_timeout)


# --- entry point ----------------------------------------------------------------------------


class _JournalFormatter(logging.Formatter):
    """Prefixes lines with the syslog priority ``<N>`` that journald reads from stderr."""

    _PRIORITIES: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7,
        logging.INFO: 6,
        logging.WARNING: 4,
        logging.ERROR: 3,
        logging.CRITICAL: 2,
    }

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self._PRIORITIES.get(record.levelno, 6)}>" + super().format(record)


@contextlib.contextmanager
def _logging_to_stderr(level: str) -> Iterator[None]:
    """Send the ``edge`` loggers to stderr for the daemon's lifetime (the journal under systemd)."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):  # journald adds its own timestamps
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("edge")
    previous_level, previous_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
        logger.propagate = previous_propagate


@contextlib.contextmanager
def _signals_routed_to(controls: DaemonControls) -> Iterator[None]:
    """SIGTERM/SIGINT stop the daemon, SIGHUP reloads it, an exception that ends any thread
    stops it with exit 1 (``threading.excepthook``); the old handlers come back after."""
    previous_hook = threading.excepthook

    def crashed(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        # exc_value is None only in hand-made ExceptHookArgs (a thread that raised has one).
        exc = (
            args.exc_value if args.exc_value is not None else RuntimeError(f"{args.exc_type.__name__} without a value")
        )
        controls.crashed(args.thread.name if args.thread is not None else "?", exc)

    threading.excepthook = crashed
    if threading.current_thread() is not threading.main_thread():
        try:
            yield  # signal handlers can only be set from the main thread
        finally:
            threading.excepthook = previous_hook
        return
    routes = {
        signal.SIGTERM: controls.request_stop,
        signal.SIGINT: controls.request_stop,
        signal.SIGHUP: controls.reload.set,
    }

    def calling(act: Callable[[], None]) -> Callable[[int, FrameType | None], None]:
        def handle(signum: int, frame: FrameType | None) -> None:
            act()

        return handle

    previous = {signum: signal.signal(signum, calling(act)) for signum, act in routes.items()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        threading.excepthook = previous_hook


def run_main(config_path: str, *, max_frames: int | None = None, early: StartupSignals | None = None) -> int:
    """``edge-face run --config FILE``: load, build, run; returns the process exit code.
    ``early``: the signals the command line held while it started (acted on here, once
    this process's own handlers are in place)."""
    return_freed_frame_buffers()  # the whole process is the daemon's: see edge.daemon.memory
    controls = DaemonControls()
    with _signals_routed_to(controls):
        early_reloads = 0
        for signum in early.take() if early is not None else ():
            if signum == signal.SIGHUP:
                early_reloads += 1
            else:
                controls.request_stop()
        try:
            config = load_config(config_path)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return ExitCode.CONFIG
        with _logging_to_stderr(config.log.level):
            if early_reloads:
                log.info(
                    "SIGHUP during start-up, before the config file was read: nothing to reload "
                    "(the file read now is the current one)"
                )
            try:
                daemon = build_daemon(config, config_path=config_path, controls=controls)
            except StartupError as exc:
                log.error("%s", exc)
                return exc.exit_code
            return daemon.run(max_frames=max_frames)
