r"""The MQTT side: events out to the broker, Home Assistant's entities and commands in.

In: the daemon's numbered events (:class:`~edge.mqtt.outbox.Outbox`), presence state, stats and
snapshots; from the broker, untrusted command messages. Out: retained state, events and
discovery messages on the broker; checked :class:`~edge.mqtt.controls.Command`\ s for the
daemon. Modules: :mod:`~edge.mqtt.sinks` (``EventSink``, the daemon's whole view of a
transport, and ``StdoutSink``), :mod:`~edge.mqtt.outbox`, :mod:`~edge.mqtt.client` (the one
place a paho client is made), :mod:`~edge.mqtt.sink` (``MqttSink``, assembled from
:mod:`~edge.mqtt.session`, :mod:`~edge.mqtt.failures`, :mod:`~edge.mqtt.delivery`,
:mod:`~edge.mqtt.retained`, :mod:`~edge.mqtt.announce` and :mod:`~edge.mqtt.command_route`),
:mod:`~edge.mqtt.discovery` (HA entities as data; numpy-free), :mod:`~edge.mqtt.controls`
(commands, stored overrides), :mod:`~edge.mqtt.command_intake` (the one gate between broker
and daemon), :mod:`~edge.mqtt.enrolment` (the enrol / forget choices made in HA).
"""

from edge._moved import moved_name


def __getattr__(name: str) -> object:
    return moved_name(__name__, name)  # this path was a module before; its names still resolve, with a warning
