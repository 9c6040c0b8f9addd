"""The daemon's face recognition (issue 19, opt-in): the scene's tracks composed with the
recognition stage, so neither package knows the other.

Per detected frame (:meth:`DaemonRecognition.frame`): the kept faces get their tracks
(:meth:`edge.scene.stage.SceneStage.track`; tracking runs with recognition off too, so every
face has a track id), and, with recognition on, the views the tracker picks (a track's first
views, then only bigger or sharper ones: never every frame) go to
:class:`edge.recognize.stage.RecognitionStage`, which says who each face is. The scene then puts
track, person and distance on the faces and makes the person events.

Between frames: :meth:`enrol_current`, :meth:`forget` (the commands from Home Assistant),
:meth:`reload_gallery` (SIGHUP), :meth:`reconfigure` (a config reload, which may turn
recognition on or off). Whenever the enrolled names change, :meth:`on_people_changed`'s callback
is called
(the state, and the per-person entities, are published again); a person forgotten, or every
person when the gallery becomes unusable or recognition is turned off, leaves at once
(``person_left`` through ``emit``).

With ``[recognition] enabled = false`` nothing of recognition is loaded (no models, no
gallery read): faces carry ``"person": null, "distance": null`` and the state ``"people": {}``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

import numpy as np

from edge.config import Config
from edge.recognize.stage import Outcome, RecognitionStage, TrackIdentity
from edge.scene.events import Event
from edge.scene.rules import SceneResult
from edge.scene.stage import SceneStage
from edge.scene.tracks import TrackerOptions
from edge.sources.base import Frame

log = logging.getLogger("edge.recognize")

OFF = "recognition is off ([recognition] enabled = false)"


class DaemonRecognition:
    """Recognition for one daemon; ``stage`` is None while it is off. Not thread-safe: the
    frame loop's. ``emit`` takes person events; :meth:`on_people_changed` sets who hears of
    changed names. Raises :class:`edge.detect.model.ModelError` when the recognition
    models cannot be loaded."""

    def __init__(self, config: Config, scene: SceneStage, emit: Callable[[list[Event]], None]) -> None:
        self.scene, self._emit = scene, emit
        self.stage: RecognitionStage | None = None
        self._recognitions_reported = 0
        self._people_changed: Callable[[], None] = lambda: None  # until the daemon is wired
        self.reconfigure(config)

    def on_people_changed(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever the enrolled names change (the daemon publishes its state
        and the per-person entities again)."""
        self._people_changed = callback

    # --- settings ----------------------------------------------------------------------------

    def reconfigure(self, config: Config, reread_gallery: bool = False) -> None:
        """Follow ``config``'s ``[recognition]``: load the models when it is turned on (raises
        ModelError, the running state is kept), drop them when it is turned off (everyone named
        leaves), otherwise new settings on the running stage, and with ``reread_gallery`` (a
        SIGHUP) the gallery file read again."""
        options = config.recognition
        if not options.enabled:
            if self.stage is not None:
                self.stage = None
                log.info("recognition turned off: models unloaded, nobody is named")
                self._emit(self.scene.end_people(time.time()))
                self._people_changed()
            self.scene.tracks.options = TrackerOptions(max_tracks=self.scene.tracks.options.max_tracks)
            return
        gallery = options.gallery_path(config.device.state_dir)
        before = self.people()
        if self.stage is None:
            self.stage = RecognitionStage(options, gallery, log, num_threads=config.detector.num_threads)
            self._recognitions_reported = 0
            log.info(
                "recognition on: gallery '%s', threshold %.3f, %d view(s) decide, faces from %g px",
                gallery,
                self.stage.threshold,
                options.views,
                options.min_face_size,
            )
        else:
            self.stage.reconfigure(options, gallery)
            if reread_gallery:
                self.stage.reload_gallery()
        initial, most = self.stage.views_per_track
        self.scene.tracks.options = dataclasses.replace(
            self.scene.tracks.options, initial_views=initial, max_views=most
        )
        self._after_gallery_change(before)

    # --- per frame ---------------------------------------------------------------------------

    def frame(self, frame: Frame, kept: SceneResult) -> tuple[np.ndarray, tuple[TrackIdentity, ...] | None]:
        """The kept faces' track ids ((N,) int64) and, with recognition on, who each one is."""
        stage = self.stage
        if stage is None:
            return self.scene.track(kept, frame).track_ids, None
        before = self.people()
        if stage.check_gallery_file():
            self._after_gallery_change(before)
        boxes = kept.detections.pixel_boxes(frame.width, frame.height)
        tracks = self.scene.track(kept, frame, stage.recognizable(boxes[:, 3] - boxes[:, 1]))
        identities = stage.observe(
            frame.pixels, frame.color_order, boxes, tracks.track_ids.tolist(), tracks.to_recognize(), tracks.ended
        )
        return tracks.track_ids, identities

    def end_all(self) -> None:
        """Detection paused or stopping: every track's views are dropped (the scene ends the
        tracks and the presences)."""
        if self.stage is not None:
            self.stage.end_all()

    # --- the gallery -------------------------------------------------------------------------

    def people(self) -> tuple[str, ...]:
        """The enrolled names, sorted; none while recognition is off or its gallery unusable."""
        return self.stage.people() if self.stage is not None else ()

    def enrol_current(self, name: str) -> Outcome:
        """Enrol the one face in view as ``name`` (see :meth:`RecognitionStage.enrol_current`)."""
        return self._change_gallery("enrol", lambda stage: stage.enrol_current(name))

    def forget(self, name: str) -> Outcome:
        """Delete ``name`` from the gallery; ``person_left`` for them at once if present."""
        return self._change_gallery("forget", lambda stage: stage.forget(name))

    def _change_gallery(self, what: str, change: Callable[[RecognitionStage], Outcome]) -> Outcome:
        if self.stage is None:
            log.warning("%s refused: %s", what, OFF)
            return Outcome(False, OFF)
        before = self.people()
        outcome = change(self.stage)
        if outcome.done:
            self._after_gallery_change(before)
        return outcome

    def reload_gallery(self) -> Outcome:
        """Read the gallery file again (SIGHUP); an unusable one suspends recognition."""
        if self.stage is None:
            return Outcome(False, OFF)
        before = self.people()
        outcome = self.stage.reload_gallery()
        self._after_gallery_change(before)
        return outcome

    def take_stats(self) -> dict[str, object]:
        """The stats fields of one interval: ``recognition`` ("off", "on" or "suspended": the
        gallery is unusable), ``enrolled`` and ``recognitions`` (descriptors computed)."""
        stage = self.stage
        if stage is None:
            return {"recognition": "off", "enrolled": 0, "recognitions": 0}
        recognitions, self._recognitions_reported = (
            stage.recognitions - self._recognitions_reported,
            stage.recognitions,
        )
        return {
            "recognition": "on" if stage.usable else "suspended",
            "enrolled": len(stage.people()),
            "recognitions": recognitions,
        }

    def _after_gallery_change(self, before: tuple[str, ...]) -> None:
        """Whoever is no longer enrolled leaves now (all, when the gallery became unusable: the
        strangers too, nobody can be told apart); the names are published when they changed."""
        now = time.time()
        if self.stage is not None and not self.stage.usable:
            self._emit(self.scene.end_people(now))
        else:
            for name in sorted(set(before) - set(self.people())):
                self._emit(self.scene.forget_person(name, now))
        if self.people() != before:
            self._people_changed()
