"""The reload path (SIGHUP, or a control changed from Home Assistant): re-read the config file,
merge the controls over it, and rebuild only the parts whose sections changed. A file that
does not validate, a model that does not load, or a camera that does not open keeps the
running configuration.

In: the running :class:`Setup` and the config file (or a given file config). Out: a
:class:`Reloaded` (the new setup and the :class:`ReloadPlan` that led there), or None when the
running configuration is kept. The camera and the transport are swapped here (through
:class:`Camera` and :class:`SinkSwitch`); the frame loop's own state (scene, outbox bounds, log
level, pause) follows the result in :meth:`edge.daemon.live.LiveSetup.reload`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.config import OPTION_SECTIONS, SECTIONS, Config, ConfigError, load_config
from edge.daemon.camera import Camera
from edge.daemon.parts import StartupError, build_detector, model_settings
from edge.daemon.sdnotify import SystemdNotifier
from edge.daemon.sink_switch import SinkSwitch
from edge.daemon.snapshot import placeholder_jpeg
from edge.detect.detector import FaceDetector
from edge.detect.model import ModelError
from edge.mqtt.controls import Controls

log = logging.getLogger("edge.daemon")


@dataclass(frozen=True)
class Setup:
    """What the daemon runs with; a reload replaces it as a whole or not at all. ``config``:
    ``file_config`` (the file as read) with the Home Assistant ``controls`` merged over it."""

    file_config: Config
    config: Config
    detector: FaceDetector
    controls: Controls


@dataclass(frozen=True)
class ReloadPlan:
    """What a reload from one :class:`Setup` to the next changes. ``changed``: the config
    sections that differ; ``sink_changed``: the transport must be replaced (the Snapshots
    switch alone is applied to the running session: replacing it would cost a reconnect);
    ``thresholds_changed``: the same model, new decoding thresholds; ``controls_replaced``:
    the file turned the controls on or off."""

    changed: tuple[str, ...]
    sink_changed: bool
    thresholds_changed: bool
    snapshots_changed: bool
    state_dir_moved: bool
    controls_replaced: bool


@dataclass(frozen=True)
class Reloaded:
    setup: Setup
    plan: ReloadPlan


def plan_reload(old: Setup, new: Setup) -> ReloadPlan:
    """What changes from ``old`` to ``new`` (pure)."""
    before, after = old.config, new.config
    return ReloadPlan(
        changed=tuple(name for name in (*SECTIONS, *OPTION_SECTIONS) if getattr(after, name) != getattr(before, name)),
        sink_changed=(
            after.mqtt != before.mqtt
            or after.homeassistant != before.homeassistant
            or after.device.id != before.device.id
            or new.detector.model_id != old.detector.model_id
            or after.scene.zone_names != before.scene.zone_names  # zones have their own entities
        ),
        thresholds_changed=new.detector is old.detector and after.detector != before.detector,
        snapshots_changed=after.snapshot.enabled != before.snapshot.enabled,
        state_dir_moved=after.device.state_dir != before.device.state_dir,
        controls_replaced=new.controls.enabled != old.controls.enabled,
    )


def controls_for(file_config: Config, running: Controls) -> Controls:
    """The controls for ``file_config``: the running ones, moved with ``device.state_dir``, or
    new ones (read from the state folder) when the file turned them on or off."""
    if Controls.for_config(file_config, log, load=False).enabled != running.enabled:
        return Controls.for_config(file_config, logging.getLogger("edge.controls"))
    if file_config.device.state_dir != running.state_dir:
        return running.moved_to(file_config.device.state_dir)
    return running


def next_setup(running: Setup, file_config: Config, announce: bool) -> Setup:
    """The setup for ``file_config``: its controls merged over it, and the running detector
    unless the model or its threads changed (the thresholds only steer decoding: a new one
    does not load the model again). Raises StartupError (exit 4) for a model that does not load."""
    controls = controls_for(file_config, running.controls)
    config = controls.effective(file_config, announce=announce)
    same_model = model_settings(config) == model_settings(running.config)
    detector = running.detector if same_model else build_detector(config)
    return Setup(file_config, config, detector, controls)


class Reloader:
    """Applies a reload to the camera and the transport. ``publish_retained(config, controls)``
    announces the retained state through a new sink."""

    def __init__(
        self,
        *,
        config_path: Path | None,
        notifier: SystemdNotifier,
        camera: Camera,
        sinks: SinkSwitch,
        publish_retained: Callable[[Config, Controls], None],
    ) -> None:
        self.config_path, self._notifier = config_path, notifier
        self._camera, self._sinks, self._publish_retained = camera, sinks, publish_retained

    def reload(self, running: Setup, file_config: Config | None = None) -> Reloaded | None:
        """Re-read the config file (or take ``file_config``: a control changed); None (logged,
        READY again) when the running configuration is kept."""
        if self.config_path is None and file_config is None:
            log.warning("reload requested, but the daemon was not started from a config file")
            return None
        self._notifier.notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        new = self._prepare(running, file_config)
        if new is None:
            self._notifier.ready()
            return None
        plan = plan_reload(running, new)
        return Reloaded(self._apply(running, new, plan), plan)

    def _prepare(self, running: Setup, file_config: Config | None) -> Setup | None:
        """The new setup with its camera open, or None (logged) when anything fails."""
        try:
            rereading = file_config is None
            if file_config is None:
                assert self.config_path is not None  # reload() returned when there is neither
                file_config = load_config(self.config_path)
            new = next_setup(running, file_config, announce=rereading)
            if new.config.camera != running.config.camera or new.detector.input_size != running.detector.input_size:
                self._camera.swap(new.config.camera, new.detector.input_size)
        except (ConfigError, StartupError, ModelError) as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            return None
        except OSError as exc:  # e.g. a config file the service user cannot read
            log.error(
                "reload failed, keeping the running configuration: config file '%s': cannot be read (%s)",
                self.config_path,
                exc.strerror or exc,
            )
            return None
        return new

    def _apply(self, running: Setup, new: Setup, plan: ReloadPlan) -> Setup:
        """Thresholds, controls and transport; returns ``new``, with the running sink settings
        if the new ones cannot be used."""
        config, old = new.config, running.config
        if plan.thresholds_changed:
            new.detector.set_postprocess(config.detector.score_threshold, config.detector.iou_threshold)
        if new.controls is not running.controls:  # replaced, or moved to a new state_dir
            running.controls.store()  # what the replaced controls have not stored yet
        if plan.sink_changed:
            config = self._sinks.swap(
                config,
                old,
                new.detector.model_id,
                routes_commands=new.controls.enabled,  # the new sink routes the new controls' commands
                publish_retained=lambda announced: self._publish_retained(announced, new.controls),
            )
        else:
            if plan.snapshots_changed:  # on the same connection: no command is missed
                self._sinks.sink.set_snapshots(config.snapshot.enabled)
                if config.snapshot.enabled:
                    self._sinks.sink.publish_snapshot(placeholder_jpeg(), placeholder=True)
            if plan.state_dir_moved:
                # The announced identity moves with the folder (the sink swap records it otherwise).
                self._sinks.announce_identity(config, running=old, wait=False)
        if config.device.state_dir != old.device.state_dir:
            log.info(
                "device.state_dir changed: controls and the announced identity are kept in '%s' from now on "
                "(the previous folder '%s' is left as it is)",
                config.device.state_dir,
                old.device.state_dir,
            )
        return dataclasses.replace(new, config=config)
