"""How the daemon answers a command from Home Assistant, between frames, without a restart.

In: a parsed :class:`Command` (through :class:`edge.mqtt.command_intake.CommandIntake`), the
running :class:`Controls`, and the daemon's answers (:class:`CommandRoutes`). Out: calls on
those answers. Two kinds of command: an *action* (a button such as re-announce) is done and
nothing is stored; every other control is a stored setting (:meth:`Controls.apply`), applied by
pausing or resuming detection or by re-applying the config, and echoed back.

A new command that is an action (e.g. enrol or forget a person) is one more entry in
``CommandRoutes.actions``, keyed by its control name (see :meth:`edge.daemon.live.LiveSetup.command_routes`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from edge.mqtt.controls import DETECTION, Command, Controls

Action = Callable[[Command], None]


@dataclass(frozen=True)
class CommandRoutes:
    """The daemon's answers. ``actions``: by control name, commands done without storing
    anything; ``set_detection(on)``: detection switched on or off; ``reapply()``: a stored
    setting changed, apply the config with the controls merged over it; ``echo()``: publish
    the control state (HA shows what is true, even when a command changed nothing)."""

    actions: Mapping[str, Action]
    set_detection: Callable[[bool], None]
    reapply: Callable[[], None]
    echo: Callable[[], None]


def apply_command(command: Command, controls: Controls, routes: CommandRoutes) -> None:
    """Apply ``command`` through ``routes``; ignored when ``controls`` are off (a command taken
    before a reload turned them off)."""
    if not controls.enabled:
        return
    action = routes.actions.get(command.control)
    if action is not None:
        action(command)
        return
    if controls.apply(command):
        if command.control == DETECTION:
            routes.set_detection(bool(command.value))
        else:
            routes.reapply()
    routes.echo()
