"""Changes to a running daemon, applied between frames: a reload (SIGHUP, or a stored control
changed from Home Assistant), Home Assistant's commands, and the privacy pause.

In: the running :class:`Setup`, a :class:`Command` or a reload request. Out: a new setup, the
camera paused or resumed (:class:`Camera`), the frame pipeline reconfigured
(:class:`FramePipeline`), the retained state and the control state published through the running
sink (:class:`SinkSwitch`). New commands: :meth:`LiveSetup.command_routes`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edge.config import Config
from edge.daemon.camera import Camera
from edge.daemon.commands import Action, CommandRoutes, apply_command
from edge.daemon.parts import outbox_bounds
from edge.daemon.people import PeopleControls
from edge.daemon.pipeline import FramePipeline
from edge.daemon.reload import Reloader, Setup
from edge.daemon.retained import RetainedState, announce_retained
from edge.daemon.sdnotify import SystemdNotifier
from edge.daemon.sink_switch import SinkSwitch
from edge.mqtt.controls import PEOPLE_CONTROLS, REANNOUNCE, Command, Controls, control_state
from edge.scene.events import PresenceState

log = logging.getLogger("edge.daemon")


class LiveSetup:
    """The running :attr:`setup` and what changes it. Used from the frame loop's thread only."""

    def __init__(
        self,
        setup: Setup,
        *,
        config_path: Path | None,
        camera: Camera,
        sinks: SinkSwitch,
        pipeline: FramePipeline,
        notifier: SystemdNotifier,
    ) -> None:
        self.setup = setup
        self._camera, self._sinks, self._pipeline, self._notifier = camera, sinks, pipeline, notifier
        self.reloader = Reloader(
            config_path=config_path,
            notifier=notifier,
            camera=camera,
            sinks=sinks,
            publish_retained=self.publish_retained,
        )
        pipeline.recognition.on_people_changed(self.publish_people)
        # Enrol / forget from Home Assistant; the first sink learns who is enrolled before it
        # starts, so its first discovery message holds their entities.
        self.people = PeopleControls(pipeline.recognition, logging.getLogger("edge.controls"))
        self.people.announce(sinks.sink)

    def presence_state(self) -> PresenceState:
        """The whole frame's presence with each zone's, and whether detection is paused."""
        return self._pipeline.presence_state(self._camera.paused)

    def reload(self, file_config: Config | None = None) -> None:
        """Apply a reload (see :mod:`edge.daemon.reload`); then the loop's own parts follow
        the new setup."""
        reloaded = self.reloader.reload(self.setup, file_config)
        if reloaded is None:
            return
        self.setup = new = reloaded.setup
        if reloaded.plan.controls_replaced:
            self.set_paused(not new.controls.detection)
        self._pipeline.outbox.set_bounds(*outbox_bounds(new.config))
        self._pipeline.reconfigure(new.config, new.detector, reread_gallery=file_config is None)
        self.people.announce(self._sinks.sink)  # recognition turned on or off: its entities follow
        logging.getLogger("edge").setLevel(new.config.log.level.upper())
        log.info("configuration reloaded (changed: %s)", ", ".join(reloaded.plan.changed) or "nothing")
        self._notifier.ready()

    def command_routes(self) -> CommandRoutes:
        """How Home Assistant's commands are answered. A new action command (one that stores
        nothing, e.g. enrol or forget a person) is one more entry in ``actions``."""
        actions: dict[str, Action] = {REANNOUNCE: self._reannounce}
        actions.update(dict.fromkeys(PEOPLE_CONTROLS, self._people_command))
        return CommandRoutes(
            actions=actions,
            set_detection=lambda on: self.set_paused(not on),
            reapply=lambda: self.reload(self.setup.file_config),
            echo=self._echo_controls,
        )

    def apply_command(self, command: Command) -> None:
        """A command from Home Assistant, applied between frames without a restart."""
        apply_command(command, self.setup.controls, self.command_routes())

    def publish_retained(self, config: Config, controls: Controls) -> None:
        """What a (new) sink announces: see :func:`announce_retained`."""
        state = self.people.control_state(control_state(config, not self._camera.paused)) if controls.enabled else None
        self.people.announce(self._sinks.sink)  # a new sink (a swap): before it starts
        announce_retained(self._sinks.sink, RetainedState(self.presence_state(), state, config.snapshot.enabled))

    def publish_people(self) -> None:
        """Enrolled, forgotten, or the gallery read again: the state lists the names anew, and
        the sink announces each person's entity (or removes it)."""
        self._sinks.sink.publish_state(self.presence_state())
        self.people.announce(self._sinks.sink)

    def set_paused(self, paused: bool) -> None:
        """Detection switched off (the camera is released, presence cleared) or on again."""
        if paused == self._camera.paused:
            return
        if paused:
            self._camera.pause()  # releases the camera
            self._pipeline.clear_presence()
            log.info("detection paused from Home Assistant: camera released, no frame is processed")
        else:
            if not self._camera.resume():
                return
            log.info("detection resumed from Home Assistant")
        self._sinks.sink.publish_state(self.presence_state())

    def _echo_controls(self) -> None:
        """The control state (HA shows what is true, even when a command changed nothing)."""
        state = control_state(self.setup.config, not self._camera.paused)
        self._sinks.sink.publish_controls(self.people.control_state(state))

    def _people_command(self, command: Command) -> None:
        """Enrol as / Enrol current face / Person to forget / Forget person: to the recognition,
        the choice and the outcome echoed."""
        self.people.apply(command)
        self._echo_controls()

    def _reannounce(self, command: Command) -> None:
        log.info("re-announcing discovery and retained state (requested over MQTT)")
        self._sinks.sink.reannounce()
