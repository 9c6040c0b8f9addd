"""The on-device daemon: the one place where source, detector, presence tracker and sink are
assembled (:func:`build_daemon`) and the frame loop runs (:meth:`Daemon.run`).

One frame (:class:`~edge.daemon.pipeline.FramePipeline`): newest frame from the grabber ->
motion gate -> FaceDetector (pre-process, int8 invoke, decode) -> scene rules and presence
trackers (:class:`SceneStage`) -> events to the sink (+ state, + optional snapshot). Between
frames: a reload and Home Assistant's commands (:class:`~edge.daemon.live.LiveSetup`). Around
it: periodic stats (:mod:`edge.daemon.stats`), sd_notify (READY after the model is loaded and the first frame processed, WATCHDOG
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
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar, Protocol, runtime_checkable

from edge.common.redact import redact_url
from edge.config import SHUTDOWN_RESERVE_SECONDS, STOP_BUDGET_SECONDS, Config, ConfigError, describe, load_config
from edge.daemon.camera import Camera
from edge.daemon.live import LiveSetup
from edge.daemon.memory import return_freed_frame_buffers
from edge.daemon.parts import StartupError, build_detector, build_sink, outbox_bounds
from edge.daemon.pipeline import FramePipeline, detect_timed
from edge.daemon.reload import Setup
from edge.daemon.retained import absent_state
from edge.daemon.sdnotify import SystemdNotifier
from edge.daemon.sink_switch import SinkSwitch
from edge.daemon.startup_signals import StartupSignals
from edge.daemon.stats import (
    DROP_LOG_INTERVAL_S,
    FrameTimes,
    StatsInputs,
    log_stop_summary,
    percentile_ms,
    stats_message,
    status_line,
)
from edge.detect.detector import FaceDetector
from edge.exitcodes import ExitCode
from edge.mqtt.command_intake import CommandIntake
from edge.mqtt.controls import Controls
from edge.mqtt.outbox import Outbox
from edge.mqtt.sinks import EventSink, SinkClosed
from edge.ops.device_identity import retired_zones
from edge.scene.events import PresenceState
from edge.sources.auto import build_source
from edge.sources.base import Frame, FrameSource, SourceError
from edge.sources.grabber import FrameGrabber, SourceHealth

# Names that lived here before the daemon was cut into parts; importers keep working.
__all__ = [
    "DROP_LOG_INTERVAL_S",
    "STOP_BUDGET_S",
    "Daemon",
    "DaemonControls",
    "FrameTimes",
    "StartupError",
    "build_daemon",
    "build_detector",
    "build_sink",
    "detect_timed",
    "outbox_bounds",
    "percentile_ms",
    "run_main",
    "status_line",
]

# How long the loop waits for a frame before it looks at its flags and the stats clock.
_POLL_SECONDS = 0.25
# The whole stop must fit the unit's TimeoutStopSec (STOP_BUDGET_SECONDS, validated against
# mqtt.flush_timeout by the config). What a stop needs besides the flush is the reserve: the
# frame reader's join (5 s), "stopped" and the disconnect (STOPPED_GRACE_S + a tick), logging,
# the interpreter's exit; the flush gets the rest.
STOP_BUDGET_S = STOP_BUDGET_SECONDS
_STOP_RESERVE_S = SHUTDOWN_RESERVE_SECONDS

log = logging.getLogger("edge.daemon")


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
    if sink is None:
        in_use = retired_zones(config, logging.getLogger("edge.forget")) if config.mqtt.host else ()
        sink = build_sink(config, detector.model_id, outbox, controls.crashed, retired_zones=in_use)
    return _wire(
        Setup(file_config, config, detector, ha_controls),
        source,
        sink,
        outbox,
        notifier=notifier if notifier is not None else SystemdNotifier(),
        config_path=Path(config_path) if config_path is not None else None,
        controls=controls,
    )


def _wire(
    setup: Setup,
    source: FrameSource,
    sink: EventSink,
    outbox: Outbox,
    *,
    notifier: SystemdNotifier,
    config_path: Path | None,
    controls: DaemonControls,
) -> Daemon:
    """The daemon's parts, connected: ``sink`` drains ``outbox``; commands from the broker go
    through one intake, kept across reloads and sink swaps."""
    config = setup.config
    commands = CommandIntake(logging.getLogger("edge.controls"))
    camera = Camera(
        source,
        config.camera,
        setup.detector.input_size,
        paused=not setup.controls.detection,
        on_crash=controls.crashed,
        on_lost=lambda: controls.fail(ExitCode.SOURCE),
    )
    sinks = SinkSwitch(sink, outbox, commands, controls.crashed)
    pipeline = FramePipeline(config, setup.detector, outbox, sinks)
    live = LiveSetup(setup, config_path=config_path, camera=camera, sinks=sinks, pipeline=pipeline, notifier=notifier)
    return Daemon(
        live=live,
        camera=camera,
        sinks=sinks,
        pipeline=pipeline,
        commands=commands,
        notifier=notifier,
        controls=controls,
    )


class DaemonControls:
    """What other threads, signal handlers and parts may ask of the daemon: stop, reload,
    "this thread died" (:meth:`crashed`) and "this part can never work again" (:meth:`fail`).
    Made before the daemon, so signals are routed while the model loads."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.hurry = threading.Event()  # a second stop request: do not wait for the flush
        self.reload = threading.Event()
        self._lock = threading.Lock()
        self.crash: tuple[str, BaseException] | None = None
        self.exit_code: int = ExitCode.OK  # what a requested stop returns

    def request_stop(self) -> None:
        """SIGTERM/SIGINT: the first stops (with a flush), the next one cuts the flush short."""
        if self.stop.is_set():
            self.hurry.set()
        self.stop.set()

    def fail(self, exit_code: int) -> None:
        """A part that can never work again (e.g. no source opens): stop with ``exit_code``."""
        self.exit_code = exit_code
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
    thread, :meth:`request_stop` / :meth:`request_reload` from any thread or signal handler.
    Its parts: :class:`FramePipeline` (one frame), :class:`LiveSetup` (reload, commands, pause,
    between frames), :class:`Camera` (grabber, privacy pause, source swap), :class:`SinkSwitch`
    (transport, its swap, the identity record); :mod:`edge.daemon.stats` for the stats."""

    def __init__(
        self,
        *,
        live: LiveSetup,
        camera: Camera,
        sinks: SinkSwitch,
        pipeline: FramePipeline,
        commands: CommandIntake,
        notifier: SystemdNotifier,
        controls: DaemonControls,
    ) -> None:
        """The parts, as :func:`build_daemon` wired them."""
        self.live, self.camera, self.sinks, self.pipeline = live, camera, sinks, pipeline
        self.commands, self.notifier, self.controls = commands, notifier, controls
        self.outbox = pipeline.outbox
        self.frames_processed = 0
        self.started_monotonic = time.monotonic()
        self._ready = False

    @property
    def setup(self) -> Setup:
        return self.live.setup

    @property
    def config(self) -> Config:
        return self.setup.config

    @property
    def detector(self) -> FaceDetector:
        return self.setup.detector

    @property
    def sink(self) -> EventSink:
        return self.sinks.sink

    @property
    def grabber(self) -> FrameGrabber:
        return self.camera.grabber

    @property
    def times(self) -> FrameTimes:
        return self.pipeline.times

    # --- control, from any thread ---------------------------------------------------------

    def request_stop(self) -> None:
        self.controls.stop.set()

    def request_reload(self) -> None:
        self.controls.reload.set()

    def report_crash(self, thread_name: str, exc: BaseException) -> None:
        """For ``threading.excepthook`` and worker threads: see :meth:`DaemonControls.crashed`."""
        self.controls.crashed(thread_name, exc)

    # --- the loop -------------------------------------------------------------------------

    def run(self, max_frames: int | None = None) -> int:
        """Run until stopped, a finite source ends, or ``max_frames`` frames are processed;
        returns the exit code (0; 1 after an unexpected error in any thread; 2 when the broker
        cannot be used as configured; 3 if a finite source can never work)."""
        log.info("starting: %s; interpreter %s", redact_url(describe(self.config)), self.detector.interpreter_name)
        if self.controls.stop.is_set():
            log.info("stopped during start-up: 0 event(s) delivered, 0 lost")
            return ExitCode.OK
        try:
            if self.camera.paused:
                log.info("detection is OFF (switched off from Home Assistant): the camera stays closed")
            else:
                self.grabber.start()
        except SourceError as exc:
            log.error("%s", exc)
            return ExitCode.SOURCE
        try:
            self.sinks.announce_identity(self.config)
            self.sinks.start(self.setup.controls.enabled)
        except StartupError as exc:
            log.error("%s", exc)
            self.grabber.stop()
            return exc.exit_code
        self.live.publish_retained(self.config, self.setup.controls)
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
        self.setup.controls.store()  # a control changed within the store interval
        self.pipeline.recognition.end_all()
        # Nobody is watching any more: the retained state must not say someone is there.
        self.sink.publish_state(absent_state(self.presence_state()))
        self.grabber.stop()
        self.pipeline.drops.log_due(force=True)
        self.sink.close(self.flush_timeout(), abandon=self.controls.hurry)
        self.sinks.stop_retiring()
        self.notifier.close()
        log_stop_summary(log, self.frames_processed, self.outbox.stats)
        return code

    def flush_timeout(self) -> float:
        """``mqtt.flush_timeout``, capped so that the whole stop fits :data:`STOP_BUDGET_S`."""
        return max(0.0, min(self.config.mqtt.flush_timeout, STOP_BUDGET_S - _STOP_RESERVE_S))

    def _loop(self, max_frames: int | None) -> int:
        next_stats = time.monotonic() + self.config.stats.interval_seconds
        while not self.controls.stop.is_set():
            self._between_frames()
            frame = self._next_frame()
            if frame is not None:
                try:
                    self.pipeline.process(frame)
                except SinkClosed as exc:
                    log.info("%s; stopping", exc)
                    return ExitCode.OK
                self._processed(frame)
                if max_frames is not None and self.frames_processed >= max_frames:
                    return ExitCode.OK
            elif not self.camera.paused and self.grabber.finished:
                return self._source_ended()
            now, health = time.monotonic(), self.grabber.health
            if self._source_health_changed(now, health) or now >= next_stats:
                self._report_stats(now, health)
                next_stats = now + self.config.stats.interval_seconds
            self.pipeline.drops.log_due()
        return ExitCode.FAILURE if self.controls.crash is not None else self.controls.exit_code

    def _between_frames(self) -> None:
        """Requests from other threads, applied where no part is in use: reload, commands."""
        if self.controls.reload.is_set():
            self.controls.reload.clear()
            self.live.reload()
        for command in self.commands.take():
            self.live.apply_command(command)
        self.setup.controls.store_if_due()

    def _next_frame(self) -> Frame | None:
        if not self.camera.paused:
            return self.grabber.get(_POLL_SECONDS)
        # Privacy mode: no frame is read, the watchdog still hears from us.
        self._ready_once("detection paused from Home Assistant")
        self.commands.wait(_POLL_SECONDS)
        self.notifier.watchdog_if_due()
        return None

    def _processed(self, frame: Frame) -> None:
        self.frames_processed += 1
        if self.frames_processed == 1:
            self._ready = True
            self.notifier.ready(f"first frame processed ({frame.width}x{frame.height})")
            log.info("ready: first frame processed (%dx%d)", frame.width, frame.height)
        self.notifier.watchdog_if_due()

    def _ready_once(self, status: str) -> None:
        if not self._ready:
            self._ready = True
            self.notifier.ready(status)

    def _source_ended(self) -> int:
        if self.controls.crash is not None:
            return ExitCode.FAILURE
        if self.grabber.error is not None:
            log.error("%s", self.grabber.error)
            return ExitCode.SOURCE
        log.info("%s: end of stream", self.grabber.source.name)
        return ExitCode.OK

    def _source_health_changed(self, now: float, health: SourceHealth) -> bool:
        """Keep the watchdog fed while the reader waits for its camera; True when the source
        state changed (a camera going away or coming back is reported at once, not at the
        next interval)."""
        if self.camera.paused:
            return False
        if health.state in ("waiting", "reopening"):
            # The reader is alive and retrying: the service is up, waiting for its camera.
            self._ready_once(f"waiting for camera: {health.last_error}")
            self.notifier.watchdog_if_due(now)
        return health.state != self.camera.reported_state and health.state in ("ok", "reopening", "waiting")

    def presence_state(self) -> PresenceState:
        """The whole frame's presence with each zone's, and whether detection is paused."""
        return self.live.presence_state()

    # --- stats ----------------------------------------------------------------------------

    def stats(self, now: float, health: SourceHealth) -> dict[str, Any]:
        """The periodic stats message; starts a new measuring interval."""
        return stats_message(
            StatsInputs(
                now=now,
                started=self.started_monotonic,
                frames_processed=self.frames_processed,
                window=self.times.take_window(now),
                health=health,
                paused=self.camera.paused,
                outbox=self.outbox.stats,
                sink_status=self.sink.status,
                presence=self.presence_state(),
                scene=self.pipeline.take_stats(),
            )
        )

    def _report_stats(self, now: float, health: SourceHealth) -> None:
        self.camera.reported_state = health.state
        stats = self.stats(now, health)
        line = status_line(stats, health)
        log.info("stats: %s", line)
        self.commands.report_unlogged()
        self.notifier.status(line)
        self.sink.publish_stats(stats)


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
