"""The daemon's transport: starting the sink that drains the outbox, replacing it on a reload,
and retiring the device identity a reload or a copied state directory left behind.

In: the sink and the outbox it drains, the command intake (Home Assistant's commands are routed
to it when the controls are on), the running and the new :class:`Config`. Out: :attr:`SinkSwitch.sink`
(the frame loop publishes through it). The frame loop never waits on the network here: a
replaced transport hands its in-flight events back to the outbox and the new one connects in a
thread of its own.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable

from edge.config import Config, ConfigError
from edge.daemon.parts import StartupError, build_sink
from edge.exitcodes import ExitCode
from edge.mqtt.command_intake import CommandIntake
from edge.mqtt.outbox import Outbox
from edge.mqtt.sinks import EventSink, SinkError
from edge.ops.device_identity import Retirer

log = logging.getLogger("edge.daemon")


class SinkSwitch:
    """The running sink, the handover to its replacement, and the identity record."""

    def __init__(
        self,
        sink: EventSink,
        outbox: Outbox,
        commands: CommandIntake,
        on_crash: Callable[[str, BaseException], None],
    ) -> None:
        self.sink, self._outbox, self._commands, self._on_crash = sink, outbox, commands, on_crash
        self._retirer: Retirer | None = None  # removes the names the device no longer uses
        self._handover: threading.Thread | None = None  # the latest reload's sink handover

    def start(self, routes_commands: bool, sink: EventSink | None = None, wait_first: bool = True) -> None:
        """Connect ``sink`` (None: the running one; stdout needs nothing), routing Home
        Assistant's commands to the intake when ``routes_commands``. A broker that cannot be
        used as configured (e.g. its certificate is rejected) is a config error (StartupError,
        exit 2); one that is merely unreachable is retried by the sink in the background.
        ``wait_first`` False: not even the first attempt in this thread (a reload in the frame loop)."""
        sink = sink if sink is not None else self.sink
        if routes_commands:
            sink.set_command_handler(self._commands.receive)
        try:
            sink.start(wait_first=wait_first)
        except (SinkError, ConfigError) as exc:  # e.g. a rejected certificate, an unreadable CA file
            raise StartupError(str(exc), ExitCode.CONFIG) from None

    def announce_identity(self, config: Config, running: Config | None = None, wait: bool = True) -> None:
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

    def swap(
        self,
        new: Config,
        old: Config,
        model_id: str,
        routes_commands: bool,
        publish_retained: Callable[[Config], None],
    ) -> Config:
        """Replace the transport, keep the outbox; returns ``new``, or ``new`` with the old sink
        settings if the new ones cannot be used (an unreadable password or CA file).
        ``publish_retained`` announces the retained state through the new sink (already
        :attr:`sink` when called). Never waits on the network: the old transport gives its
        in-flight events back to the outbox and disconnects in its own thread, the new one
        connects in its own thread."""
        try:
            sink = build_sink(new, model_id, self._outbox, self._on_crash, retired_zones=old.scene.zone_names)
        except StartupError as exc:
            log.error("reload: new [mqtt] settings unusable (%s); keeping the previous ones", exc)
            return dataclasses.replace(new, device=old.device, mqtt=old.mqtt, homeassistant=old.homeassistant)
        previous = self.sink
        previous.detach()
        self.sink = sink
        publish_retained(new)
        sink.publish_event(None)  # wake it: events may be waiting in the outbox
        # The old session ends (clean DISCONNECT) before the new one connects with the same
        # client id, and a renamed or moved device is removed under its old name first (they
        # may share topics); both wait on the network, so not in this thread.
        # Handovers run one after the other: in a reload storm a sink detached before it
        # started returns at once, and the next one must still wait for the last live one.
        self._handover = threading.Thread(
            target=self._retire_then_start,
            args=(self._handover, previous, sink, new, old, routes_commands),
            name="retire-identity",
            daemon=True,
        )
        self._handover.start()
        return new

    def stop_retiring(self) -> None:
        """At stop: what is left to retire stays in the record for the next start."""
        if self._retirer is not None:
            self._retirer.stop()

    def _retire_then_start(
        self,
        earlier: threading.Thread | None,
        previous: EventSink,
        sink: EventSink,
        new: Config,
        old: Config,
        routes_commands: bool,
    ) -> None:
        try:
            if earlier is not None:
                earlier.join()  # bounded: its own waits are
            if not previous.wait_detached():
                log.warning("reload: the previous MQTT session did not end in time; connecting the new one anyway")
            self.announce_identity(new, running=old)
            self.start(routes_commands, sink, wait_first=False)
        except StartupError as exc:  # not expected without a first attempt; kept for safety
            log.error("reload: the new MQTT transport did not start: %s", exc)
        except BaseException as exc:  # handed on, never swallowed: the daemon exits 1
            self._on_crash(threading.current_thread().name, exc)
