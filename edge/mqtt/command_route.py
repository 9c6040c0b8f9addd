"""Where the MQTT sink's command messages arrive and who takes them.

Commands arrive on ``<prefix>/set/<control>`` (one subscription, ``<prefix>/set/+``), only
when Home Assistant and its controls are enabled and the daemon gave a handler. The route
hands each message on as it came, unchecked: the handler
(:class:`edge.mqtt.command_intake.CommandIntake`) is the gate, and only queues. A new command
(a new control name) needs nothing here: it is one more name the gate accepts.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.mqtt.command_intake import CommandMessage
from edge.mqtt.sinks import CommandHandler


@dataclass(frozen=True)
class CommandRoute:
    """``prefix``: the topic level commands arrive under (without the trailing "/")."""

    prefix: str
    handler: CommandHandler

    def route(self, topic: str, payload: bytes | bytearray, retained: bool) -> bool:
        """Hand a message received on ``topic`` to the handler if it is a command topic; False
        when it is not one (someone else's message)."""
        control = topic.removeprefix(self.prefix + "/")
        if control == topic:
            return False
        # paho types payload bytes | bytearray; a received message's is bytes, so bytes() does not copy it.
        self.handler(CommandMessage(topic, control, bytes(payload), retained))
        return True
