"""MQTT sink: face events, presence state, stats and snapshots to a broker (paho-mqtt 2.x).

Topics under the prefix (default ``edge-face/<device_id>``):

==========  =====  ========  ==========================================================
topic       QoS    retained  payload
==========  =====  ========  ==========================================================
status      1      yes       "online"; "offline" (the broker's LWT when we vanish);
                             "stopped" after a clean close
events      1      no        one JSON :class:`edge.scene.events.Event` per message
state       1      yes       JSON {"present": bool, "count": int, "last_seen": str|null}
snapshot    1      yes       JPEG bytes of the last face; only when snapshots are on,
                             otherwise cleared. A placeholder (dark grey) only when the
                             broker holds no picture: a restart keeps the last real face
stats       0      no        JSON dict from the daemon (fps, timings, queue depth, ...)
health      1      yes       JSON: the stats keys of edge.mqtt.discovery.HEALTH_KEYS, each interval
controls    1      yes       JSON state of the Home Assistant controls (edge.mqtt.controls)
set/<name>  1      (in)      control commands we subscribe to (HA enabled, controls on);
                             every message goes through edge.mqtt.command_intake's gate
==========  =====  ========  ==========================================================

How an event is never lost (short of a full outbox or a dead process):

* Events live in the daemon's :class:`edge.mqtt.outbox.Outbox`, not here: this class is only a
  transport that drains it. Replacing the transport (a reload changing ``[mqtt]``) or losing
  the connection releases the events it held back to the outbox, in order.
* While connected, at most :data:`EVENT_WINDOW` events are handed to paho and not yet
  acknowledged (PUBACK); a PUBACK acknowledges the event in the outbox, an MQTT 5 failure
  reason rejects it (counted, logged rate-limited). Every connection is a fresh paho client
  that starts again at the oldest unacknowledged event, so the broker receives events in
  sequence order. QoS 1 is at-least-once: a re-sent event may arrive twice, and a subscriber
  de-duplicates on (boot_id, sequence).
* :meth:`MqttSink.close` waits (up to its timeout) for the outbox to drain before publishing
  "stopped" and disconnecting; :meth:`MqttSink.detach` lets go at once (reload).

A replaced session never shows the device offline: the old transport ends with a clean
DISCONNECT (the broker discards its will), and the new one connects only after that
(:meth:`MqttSink.wait_detached`); both use the same client id, so connecting first would
make the broker take the old session over and publish its will ("offline", retained).

The sink is assembled from parts, each in its own module, all guarded by the sink's one lock:

* :mod:`edge.mqtt.session`: the transport thread (connect, CONNACK, reconnect with backoff,
  the clean end); nothing waits on the network in the caller's thread except the first
  connection attempt of :meth:`MqttSink.start` (a certificate problem is a config error).
* :mod:`edge.mqtt.failures`: why a connection failed, logged when the cause changes, then as
  a reminder every :data:`REMINDER_INTERVAL_S` while it lasts.
* :mod:`edge.mqtt.delivery`: the publishes paho holds until acknowledged, refusals counted.
* :mod:`edge.mqtt.retained` and :mod:`edge.mqtt.announce`: what is retained on the broker
  and what must be cleared there; the connect-time announcement and discovery.
* :mod:`edge.mqtt.command_route`: command messages to the daemon's gate.

This module says what is sent when: :meth:`MqttSink._take_work` puts the parts' work in order.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho

from edge.common.sysinfo import read_cpu_temperature
from edge.config import (
    ConfigError,
    HomeAssistantConfig,
    MqttConfig,
    validate_device_id,
    validate_topic_prefix,
)
from edge.mqtt.announce import HA_BIRTH_INTERVAL_S, Announcer
from edge.mqtt.client import ClientSettings, incoming_packet_limit
from edge.mqtt.command_route import CommandRoute
from edge.mqtt.delivery import EVENT_WINDOW, Delivery, Outgoing, encode_json
from edge.mqtt.discovery import (
    HA_ONLINE,
    HEALTH_KEYS,
    STATUS_OFFLINE,
    STATUS_ONLINE,
    STATUS_STOPPED,
    DeviceTopics,
)
from edge.mqtt.failures import ConnectionReport, MqttError
from edge.mqtt.outbox import Outbox
from edge.mqtt.retained import PLACEHOLDER_WAIT_S, EntityRoster, LastFace, RetainedTopics
from edge.mqtt.session import (
    CONNACK_TIMEOUT_S,
    PAHO_MAX_INFLIGHT,
    STOPPED_GRACE_S,
    Endpoint,
    Session,
    SessionHooks,
)
from edge.mqtt.sinks import CommandHandler

if TYPE_CHECKING:
    from edge.scene.events import Event, PresenceState

# While a failure lasts (broker away, publishes rejected), it is logged when it starts and
# then at most this often, with the outbox depth: the journal shows it without flooding.
REMINDER_INTERVAL_S = 60.0

# Names that lived here before the sink was cut into parts (edge.mqtt.* imports keep working).
__all__ = [
    "CONNACK_TIMEOUT_S",
    "EVENT_WINDOW",
    "HA_BIRTH_INTERVAL_S",
    "PAHO_MAX_INFLIGHT",
    "PLACEHOLDER_WAIT_S",
    "REMINDER_INTERVAL_S",
    "STATUS_OFFLINE",
    "STATUS_ONLINE",
    "STATUS_STOPPED",
    "STOPPED_GRACE_S",
    "MqttError",
    "MqttSink",
    "Topics",
    "encode_json",
    "encode_state",
    "validate_device_id",
]


@dataclass(frozen=True)
class Topics(DeviceTopics):
    """The device's topics, all under one validated prefix."""

    @classmethod
    def for_device(cls, topic_prefix: str, device_id: str) -> Topics:
        """Topics for ``device_id``; ``topic_prefix`` may still hold the ``{device_id}`` placeholder."""
        validate_device_id(device_id)
        prefix = topic_prefix.replace("{device_id}", device_id)
        return cls.under(validate_topic_prefix(prefix, "mqtt.topic_prefix"))


def encode_state(state: PresenceState) -> bytes:
    return encode_json(state.to_dict())


def _endpoint(
    mqtt: MqttConfig, host: str, device_id: str, topics: Topics, connack_timeout: float, snapshot_max_bytes: int
) -> Endpoint:
    return Endpoint(
        host=host,
        config=mqtt,
        settings=ClientSettings.from_config(mqtt, mqtt.client_id or f"edge-face-{device_id}"),
        will_topic=topics.status,
        # The sink reads its own retained snapshot back (the placeholder's look): the client's
        # size cap must let the largest picture it may have published through.
        incoming_limit=incoming_packet_limit(snapshot_max_bytes),
        # Below the keep-alive: paho itself drops a connection that is silent for that long.
        connack_timeout=min(connack_timeout, 0.75 * mqtt.keepalive),
    )


class MqttSink:
    """:class:`edge.mqtt.sinks.EventSink` that drains ``outbox`` to an MQTT broker (see the module docs).

    ``start()`` makes the first connection attempt in the caller (TLS and certificate
    problems raise :class:`MqttError` at start-up; ``wait_first=False`` skips that, for a
    reload) and starts the transport thread, which retries with backoff for as long as it
    takes. ``publish_*`` never block on the network. ``close(timeout)`` flushes and says
    "stopped"; ``detach()`` lets go at once, leaving the outbox to the next transport.

    ``outbox`` None: a private one bounded by ``mqtt.queue_size`` (tests, standalone use).
    ``on_crash(thread_name, exc)``: called once if the transport thread fails unexpectedly.
    """

    def __init__(
        self,
        mqtt: MqttConfig,
        ha: HomeAssistantConfig,
        device_id: str,
        model_id: str,
        snapshot_enabled: bool,
        logger: logging.Logger,
        outbox: Outbox | None = None,
        *,
        on_crash: Callable[[str, BaseException], None] | None = None,
        connack_timeout: float = CONNACK_TIMEOUT_S,
        reminder_interval: float = REMINDER_INTERVAL_S,
        zones: tuple[str, ...] = (),
        retired_zones: tuple[str, ...] = (),
        snapshot_max_bytes: int = 0,
    ) -> None:
        if mqtt.host is None:
            raise ConfigError("mqtt.host", None, "a host name or IP address for the MQTT sink")
        self._ha, self._log = ha, logger
        self.topics = Topics.for_device(mqtt.topic_prefix, device_id)
        if ha.enabled:
            validate_topic_prefix(ha.discovery_prefix, "homeassistant.discovery_prefix")
        self.outbox = outbox if outbox is not None else Outbox(mqtt.queue_size, mqtt.queue_bytes)
        endpoint = _endpoint(mqtt, mqtt.host, device_id, self.topics, connack_timeout, snapshot_max_bytes)
        self._broker = endpoint.broker
        self._cond = threading.Condition()  # the sink's one lock: its parts' state is guarded by it
        self._report = ConnectionReport(endpoint.broker, mqtt, self.outbox, logger, reminder_interval)
        self._delivery = Delivery(self._cond, self.outbox, self, endpoint.broker, logger, reminder_interval)
        self._announcer = Announcer(
            self.topics,
            ha,
            device_id,
            model_id,
            EntityRoster.of(zones, retired_zones),  # zone entities: those configured, those a reload removed
            cpu_temperature=lambda: read_cpu_temperature() is not None,
        )
        # The retained topics whose newest payload is re-sent on every connection, in the order
        # they go out: controls before state, so that a switch's echo precedes the state that
        # follows from it, even when both wait in the same batch (a loaded transport thread).
        self._retained = RetainedTopics()
        self._controls = self._retained.track(self.topics.controls)
        self._presence = self._retained.track(self.topics.state)
        self._last_face = LastFace(self._retained.track(self.topics.snapshot), snapshot_enabled)
        self._health = self._retained.track(self.topics.health)
        self._pending_stats: bytes | None = None
        self._commands: CommandRoute | None = None
        self._bad_topic_logged = False  # the transport thread's own
        hooks = SessionHooks(
            take_work=lambda: self._take_work(),  # looked up per call (a test wraps the method)
            send=self._delivery.send,
            awaiting=self._delivery.awaiting,
            connected=self._connected,
            ended=self._delivery.connection_ended,
            on_publish=self._delivery.on_publish,
            on_message=self._on_message,
        )
        self._session = Session(endpoint, hooks, self._cond, self._report, logger, on_crash)

    # --- EventSink ---------------------------------------------------------------------------

    def publish_event(self, event: Event | None) -> None:
        """``event`` is in the outbox: the transport thread sends it when connected."""
        self._session.wake()

    def publish_state(self, state: PresenceState) -> None:
        with self._cond:
            self._presence.update(encode_state(state))
        self._session.wake()

    def publish_snapshot(self, jpeg: bytes, placeholder: bool = False) -> None:
        """The last face (retained). ``placeholder``: a picture for an image entity that has
        none yet; sent only if the broker holds no snapshot (a real one from a previous run
        is kept) and no real one was published since."""
        with self._cond:
            self._last_face.publish(jpeg, placeholder)  # nothing with snapshots off (privacy)
        self._session.wake()

    def set_snapshots(self, enabled: bool) -> None:
        """The Snapshots switch, applied to the running session (no new connection): the image
        entity is announced or removed, and turning snapshots off clears the retained picture."""
        with self._cond:
            if not self._last_face.set_enabled(enabled):
                return
            self._announcer.discovery_changed()
        self._session.wake()

    def publish_stats(self, stats: dict[str, Any]) -> None:
        payload = encode_json(stats)
        health = encode_json({key: stats[key] for key in HEALTH_KEYS if key in stats})
        with self._cond:
            self._health.update(health)  # retained: the latest is worth sending after a reconnect
            if self._session.connected:  # stats are periodic: a stale one after a reconnect is noise
                self._pending_stats = payload
        self._session.wake()

    # --- Home Assistant controls and lifecycle -------------------------------------------------

    def set_command_handler(self, handler: CommandHandler) -> None:
        """Before :meth:`start`: subscribe to the control command topics (when HA and its
        controls are enabled) and call ``handler(message)`` in the transport thread for each
        message received there, unchecked; it must only queue it."""
        if self._ha.enabled and self._ha.controls:
            self._commands = CommandRoute(self.topics.command_prefix, handler)

    def publish_controls(self, state: dict[str, Any]) -> None:
        """The control state (retained, re-sent after every reconnect) the switches read."""
        with self._cond:
            self._controls.update(encode_json(state))
        self._session.wake()

    def set_people(self, people: tuple[str, ...] | None) -> None:
        """The enrolled names (None: recognition off): each gets its presence sensor; a person
        no longer enrolled (forgotten, or a gallery reload) is announced as removed, so HA
        drops the entity. Call before :meth:`start` for the first announcement to hold them."""
        with self._cond:
            if not self._announcer.set_people(people):
                return
        self._session.wake()

    def reannounce(self) -> None:
        """Re-send discovery and every retained message (the Re-announce button)."""
        with self._cond:
            self._announcer.discovery_changed()
            self._retained.resend_all()
        self._session.wake()

    def close(self, timeout: float, abandon: threading.Event | None = None) -> None:
        """Flush the outbox (and the latest state and snapshot) for up to ``timeout`` s (or
        until ``abandon`` is set: a second SIGTERM), publish "stopped" (retained; a clean
        disconnect also makes the broker discard our LWT) within :data:`STOPPED_GRACE_S`
        more, disconnect and end the thread. What is not delivered stays in the outbox (the
        daemon reports it)."""
        if self._session.flush(self._flushed, timeout, abandon):
            self.outbox.release(self)

    def detach(self) -> None:
        """Stop taking events now and give back the ones in flight (they go out again, first,
        through the next transport); the thread disconnects cleanly in the background.
        Never waits on the network: for a reload in the frame loop's thread."""
        with self._cond:
            self._session.stop(say_stopped=False)
            self._delivery.release_events()

    def wait_detached(self) -> bool:
        """After :meth:`detach`: wait for the clean DISCONNECT to be sent (the thread's end).
        True when it ended: a successor with the same client id may connect now without the
        broker publishing our will."""
        return self._session.wait_ended()

    def start(self, wait_first: bool = True) -> None:
        """Start the transport thread; with ``wait_first`` make the first connection attempt
        here first (TCP and TLS; the CONNACK comes in the thread).

        Raises MqttError when the broker's certificate is rejected or the TLS handshake fails
        for a reason other than the port not speaking TLS (a config problem: exit 2). Any
        other failure is logged and retried in the background."""
        self._session.start(wait_first)

    @property
    def status(self) -> dict[str, Any]:
        """state ("connecting", "connected", "disconnected"), connected, reconnects, last_error
        (why the last attempt or connection failed, None while connected), rejected (publishes
        refused by the broker), in_flight (events handed to paho, not yet acknowledged)."""
        with self._cond:
            return {
                "state": self._report.state,
                "connected": self._session.connected,
                "reconnects": max(0, self._session.connections - 1),
                "last_error": self._report.last_error,
                "rejected": self._delivery.rejected,
                "in_flight": self._delivery.events_in_flight,
            }

    # --- the transport thread (lock held where it says so) -------------------------------------

    def _connected(self) -> None:
        """A new connection (lock held): every retained topic and the announcement go out again."""
        self._announcer.connected()
        self._retained.resend_all()
        self._last_face.connected()

    def _flushed(self) -> bool:
        """Nothing left to deliver (lock held): the outbox is empty, no retained payload
        unsent, no announcement waiting, no QoS 1 message unacknowledged."""
        return not (
            len(self.outbox)
            or self._retained.unsent
            or self._announcer.pending(self._session.connected)
            or not self._delivery.settled
        )

    def _take_work(self) -> list[Outgoing]:
        """What to send now, in this order (lock held, connected)."""
        work = self._announcer.take(snapshots=self._last_face.enabled, commands=self._commands is not None)
        work += [Outgoing.retained(topic, payload) for topic, payload in self._retained.take()]
        work += self._last_face.take()
        work += self._announcer.take_removal()
        if self._pending_stats is not None:
            work.append(Outgoing("stats", self.topics.stats, self._pending_stats, qos=0))
            self._pending_stats = None
        return work + self._delivery.take_events(self.topics.events)

    def _on_message(self, message: paho.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:  # a broker that does not check topics: nothing of ours
            if not self._bad_topic_logged:
                self._bad_topic_logged = True
                self._log.warning("MQTT: ignored a message whose topic is not UTF-8 (broker %s)", self._broker)
            return
        if topic == self._last_face.topic:
            if message.payload:  # a picture is there (a real one from before): keep it
                with self._cond:
                    self._last_face.picture_seen()
            return
        if topic == self._announcer.own_discovery_topic:
            with self._cond:
                if not self._ha.enabled and message.payload:  # a config announced while HA was on: remove it
                    self._announcer.old_config_seen()
                elif self._ha.enabled and message.retain:  # what HA was told before this connection
                    self._announcer.old_config_read(bytes(message.payload))
            return
        if self._commands is not None and self._commands.route(topic, message.payload, bool(message.retain)):
            return
        if topic == self._announcer.ha_status_topic and message.payload == HA_ONLINE.encode():
            with self._cond:
                self._announcer.ha_online()
