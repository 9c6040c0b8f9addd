"""One frame through the daemon: motion gate -> FaceDetector (pre-process, int8 invoke, decode)
-> scene rules -> face tracks and, opt-in, who they are (:class:`DaemonRecognition`) ->
presence trackers -> events into the outbox and to the sink (+ state, + optional snapshot).

In: a :class:`Frame` from the grabber. Out: numbered events in the :class:`Outbox`, the
presence state and the snapshot through the running sink (:class:`SinkSwitch`), per-frame
timings (:class:`FrameTimes`). A new per-frame stage (e.g. recognition) goes into
:meth:`FramePipeline.process`, where the comment says, and is reconfigured with the others in
:meth:`FramePipeline.reconfigure`.
"""

from __future__ import annotations

import logging
import time

from edge.config import Config
from edge.daemon.parts import StartupError
from edge.daemon.recognition import DaemonRecognition
from edge.daemon.sink_switch import SinkSwitch
from edge.daemon.snapshot import encode_snapshot
from edge.daemon.stats import DropLog, FrameTimes, detection_word
from edge.detect.decode import Detections
from edge.detect.detector import FaceDetector
from edge.detect.model import ModelError
from edge.exitcodes import ExitCode
from edge.mqtt.outbox import Outbox
from edge.scene.events import Event, EventIdentity, PresenceSettings, PresenceState, new_boot_id
from edge.scene.stage import SceneStage
from edge.sources.base import Frame

log = logging.getLogger("edge.daemon")


def detect_timed(detector: FaceDetector, frame: Frame) -> tuple[Detections, float]:
    """``detector.detect(frame)`` with the interpreter's share: (detections, invoke seconds).
    Stats and the loop-overhead benchmark need it."""
    result = detector.detect_timed(frame.pixels, frame.color_order)
    return result.detections, result.times.invoke_s


class FramePipeline:
    """The per-frame stages and where their results go. ``boot_id`` numbers this run's events."""

    def __init__(self, config: Config, detector: FaceDetector, outbox: Outbox, sinks: SinkSwitch) -> None:
        self.config, self.detector, self.outbox, self._sinks = config, detector, outbox, sinks
        self.boot_id = new_boot_id()
        self.scene = SceneStage(
            config.motion, config.scene, self._identity(config, detector), self._presence_settings(config)
        )
        self.times = FrameTimes()
        self.drops = DropLog(outbox, log)
        try:  # tracks always; who they are with [recognition] enabled
            self.recognition = DaemonRecognition(config, self.scene, self.emit)
        except ModelError as exc:
            raise StartupError(str(exc), ExitCode.MODEL) from None

    def reconfigure(self, config: Config, detector: FaceDetector, reread_gallery: bool = False) -> None:
        """After a reload: the stages follow the new config and detector (presence is kept);
        ``reread_gallery`` (a SIGHUP): recognition reads its gallery file again. Recognition
        models that cannot be loaded leave recognition as it was, with the cause logged."""
        self.config, self.detector = config, detector
        self.scene.reconfigure(
            config.motion, config.scene, self._identity(config, detector), self._presence_settings(config)
        )
        try:
            self.recognition.reconfigure(config, reread_gallery=reread_gallery)
        except ModelError as exc:
            log.error("reload: recognition models cannot be loaded, recognition left as it was: %s", exc)

    def process(self, frame: Frame) -> None:
        # A still scene with nobody in it is detected only every motion.idle_interval.
        if not self.scene.should_detect(frame):
            self.times.add_skipped()
            return
        started = time.perf_counter()
        detections, invoke = detect_timed(self.detector, frame)
        kept = self.scene.apply(detections, frame.height)
        # A new per-frame stage goes here: it takes ``kept`` (the faces the scene rules kept)
        # and the frame, before presence is updated, as recognition does.
        track_ids, identities = self.recognition.frame(frame, kept)
        detections = kept.detections
        detected = time.perf_counter()
        # Events carry the capture time, not the (later) time the frame was processed.
        wall_time = time.time() - (time.monotonic() - frame.t_monotonic)
        events = self.scene.update_presence(
            kept, frame.width, frame.height, frame.t_monotonic, wall_time, track_ids, identities
        )
        self.emit(events)
        if events:
            self._sinks.sink.publish_state(self.presence_state(paused=False))
            # The snapshot is the last face seen: an empty room does not replace it.
            if self.config.snapshot.enabled and len(detections):
                self._publish_snapshot(frame, detections)
        self.times.add(invoke, detected - started)

    def presence_state(self, paused: bool) -> PresenceState:
        """The whole frame's presence with each zone's and each enrolled person's, and whether
        detection is paused."""
        return self.scene.presence_state(detection_word(paused), self.recognition.people())

    def clear_presence(self) -> None:
        """Detection paused: whoever was present is gone (events say so); every track ends."""
        self.emit(self.scene.clear_presence(time.time()))
        self.recognition.end_all()

    def take_stats(self) -> dict[str, object]:
        """The per-frame stages' counters of one stats interval (and starts the next)."""
        return {**self.scene.take_stats(), **self.recognition.take_stats()}

    def emit(self, events: list[Event]) -> None:
        """Number ``events`` in the outbox and wake the sink."""
        for event in events:
            event, dropped = self.outbox.add(event)
            self.drops.add(dropped)
            log.info("event %d %s: %d face(s)", event.sequence, event.type, event.face_count)
            self._sinks.sink.publish_event(event)

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
        self._sinks.sink.publish_snapshot(jpeg)

    def _identity(self, config: Config, detector: FaceDetector) -> EventIdentity:
        return EventIdentity(config.device.id, self.boot_id, detector.model_id)

    @staticmethod
    def _presence_settings(config: Config) -> PresenceSettings:
        return PresenceSettings(config.events.debounce_frames, config.events.clear_after_seconds)
