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

Threads: one transport thread per sink owns the paho client: it connects (with a CONNACK
timeout), runs paho's loop, makes every publish call and runs paho's callbacks, so nothing
here waits on the network in the caller's thread except the first connection attempt of
:meth:`MqttSink.start` (a certificate problem is a config error at start-up). Every failure
is logged with its cause when the connection state changes, then as a reminder every
:data:`REMINDER_INTERVAL_S` while it lasts. An unexpected exception in the thread is handed
to ``on_crash`` (the daemon exits non-zero), never swallowed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
from paho.mqtt.client import DisconnectFlags
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge import __version__
from edge.common.sysinfo import read_cpu_temperature
from edge.config import (
    ConfigError,
    HomeAssistantConfig,
    MqttConfig,
    validate_device_id,
    validate_topic_prefix,
)
from edge.mqtt.client import ClientSettings, SizeCappedClient, incoming_packet_limit, new_capped_client, on_connack
from edge.mqtt.command_intake import CommandMessage
from edge.mqtt.discovery import (
    CONTROLS,
    CPU_TEMPERATURE,
    ENROLMENT,
    HA_ONLINE,
    HEALTH_KEYS,
    MAX_RETIRED_PEOPLE,
    RECOGNITION,
    SNAPSHOT,
    STATUS_OFFLINE,
    STATUS_ONLINE,
    STATUS_STOPPED,
    DeviceTopics,
    build_discovery_payload,
    discovery_topic,
    ha_status_topic,
    person_component,
    stale_person_components,
)
from edge.mqtt.outbox import Outbox
from edge.mqtt.sinks import CommandHandler, SinkError

if TYPE_CHECKING:
    from edge.scene.events import Event, PresenceState

# Events handed to paho and not yet acknowledged. Bounded so that a connection that died
# silently (noticed only after 1.5 keepalives) piles events up in our bounded queue, not in
# paho; 16 keeps a LAN round trip from throttling bursts.
EVENT_WINDOW = 16
# paho's own in-flight cap: room for the event window plus status, state, snapshot and
# discovery messages, so paho never has to hold anything back in its "queued" state.
PAHO_MAX_INFLIGHT = EVENT_WINDOW + 16
# While a failure lasts (broker away, publishes rejected), it is logged when it starts and
# then at most this often, with the outbox depth: the journal shows it without flooding.
REMINDER_INTERVAL_S = 60.0
# How long a connection may take from TCP connect to CONNACK (TLS handshake included) before
# it is given up and logged; never longer than the keep-alive (a broker that accepts and says
# nothing must be explained within one keep-alive).
CONNACK_TIMEOUT_S = 10.0
# How long the transport thread waits in paho's network loop before looking for new work:
# the latency an event can have on a quiet connection.
_LOOP_TICK_S = 0.05
# Discovery goes out again when Home Assistant says it is back online: at once, then at
# most this often however often that is said.
HA_BIRTH_INTERVAL_S = 2.0
# "stopped" still gets this long after the flush used up close()'s timeout: without it a
# subscriber could not tell a clean stop from a hang.
STOPPED_GRACE_S = 1.0

# How long after subscribing to its own snapshot topic the sink waits for a retained picture
# before it publishes the placeholder (retained messages follow the SUBACK at once).
PLACEHOLDER_WAIT_S = 1.0

# CONNACK reasons that mean the credentials, not the network, are wrong.
_CREDENTIAL_REASONS = {"Bad user name or password", "Not authorized"}
_UNSPECIFIED_ERROR = 0x80
# ssl reasons that mean "the other side does not speak TLS" rather than a bad certificate.
_NOT_TLS_REASONS = {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNEXPECTED_EOF_WHILE_READING", "HTTP_REQUEST"}


class MqttError(SinkError):
    """The broker cannot be used as configured (e.g. its TLS certificate is rejected).

    ``str(error)`` is one line for the user."""


@dataclass(frozen=True)
class Topics(DeviceTopics):
    """The device's topics, all under one validated prefix."""

    @classmethod
    def for_device(cls, topic_prefix: str, device_id: str) -> Topics:
        """Topics for ``device_id``; ``topic_prefix`` may still hold the ``{device_id}`` placeholder."""
        validate_device_id(device_id)
        prefix = topic_prefix.replace("{device_id}", device_id)
        return cls.under(validate_topic_prefix(prefix, "mqtt.topic_prefix"))


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON; numpy scalars (stats often hold them) become plain numbers."""
    return json.dumps(value, separators=(",", ":"), default=_plain_number).encode("utf-8")


def _plain_number(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode_state(state: PresenceState) -> bytes:
    return encode_json(state.to_dict())


@dataclass
class _Retained:
    """The newest payload of one retained topic, and whether the broker still lacks it
    (guarded by the sink's condition)."""

    topic: str
    payload: bytes | None = None
    unsent: bool = False

    def update(self, payload: bytes) -> None:
        self.payload, self.unsent = payload, True

    def resend(self) -> None:
        """A new connection (or a re-announce): send the newest payload again, if any."""
        self.unsent = self.payload is not None

    def take(self) -> bytes | None:
        """The payload to send now, or None when the broker has it already."""
        if not self.unsent:
            return None
        self.unsent = False
        return self.payload


@dataclass(frozen=True)
class _Outgoing:
    """One call into paho. ``kind``: "event" (``sequence`` set), "retained"
    (status/state/snapshot/controls/discovery), "stats" or "subscribe"."""

    kind: str  # also "unsubscribe"
    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    sequence: int = 0


class _SessionEnded(Exception):
    """A connection attempt or a connection ended; ``str()`` says why, for the log;
    ``was_connected``: it got as far as a CONNACK (the backoff starts again from the minimum)."""

    def __init__(self, why: str, was_connected: bool) -> None:
        super().__init__(why)
        self.was_connected = was_connected


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
        self._config = mqtt
        self._host: str = mqtt.host  # checked above: the config's type allows None (MQTT off)
        # Zone entities in discovery: the configured zones, and those a reload removed.
        self._zones, self._retired_zones = zones, tuple(z for z in retired_zones if z not in zones)
        self._ha = ha
        self._device_id = device_id
        self._model_id = model_id
        self._snapshot_enabled = snapshot_enabled
        # The sink reads its own retained snapshot back (the placeholder's look): the client's
        # size cap must let the largest picture it may have published through.
        self._incoming_limit = incoming_packet_limit(snapshot_max_bytes)
        self._log = logger
        self.topics = Topics.for_device(mqtt.topic_prefix, device_id)
        if ha.enabled:
            validate_topic_prefix(ha.discovery_prefix, "homeassistant.discovery_prefix")
        self._broker = f"{mqtt.host}:{mqtt.port}"
        self.outbox = outbox if outbox is not None else Outbox(mqtt.queue_size, mqtt.queue_bytes)
        self._on_crash = on_crash
        # Below the keep-alive: paho itself drops a connection that is silent for that long.
        self._connack_timeout = min(connack_timeout, 0.75 * mqtt.keepalive)
        self._reminder_interval = reminder_interval
        self._client_settings = ClientSettings.from_config(mqtt, mqtt.client_id or f"edge-face-{device_id}")

        self._cond = threading.Condition()
        # Everything below is guarded by self._cond.
        self._unacked: dict[int, _Outgoing] = {}  # mid -> what paho holds for us
        self._early_acks: dict[int, ReasonCode] = {}  # acks that came before _send saw the mid
        self._events_unacked = 0
        self._connected = False
        self._connections = 0
        self._state = "connecting"
        self._last_error: str | None = None
        self._last_state_log = float("-inf")
        self._rejected = 0
        self._rejections_unlogged = 0
        self._last_reject_log = float("-inf")
        self._announce_pending = False
        self._discovery_pending = False
        self._ha_birth_pending = False  # Home Assistant said "online": discovery is due
        self._next_birth_announce = float("-inf")
        # The retained topics whose newest payload is re-sent on every connection, in the order
        # they go out: controls before state, so that a switch's echo precedes the state that
        # follows from it, even when both wait in the same batch (a loaded transport thread).
        self._controls = _Retained(self.topics.controls)
        self._presence = _Retained(self.topics.state)
        self._snapshot = _Retained(self.topics.snapshot)
        self._health = _Retained(self.topics.health)
        self._retained = (self._controls, self._presence, self._snapshot, self._health)
        self._pending_stats: bytes | None = None
        # The "last face" placeholder: published only where the broker holds no picture, so a
        # restart does not replace the last real face. _placeholder_deadline: monotonic time
        # the look at the retained snapshot ends (None: no look under way).
        self._placeholder: bytes | None = None
        self._placeholder_look_pending = False
        self._placeholder_deadline: float | None = None
        self._command_handler: CommandHandler | None = None
        self._bad_topic_logged = False  # the transport thread's own
        self._discovery_removal_pending = False
        # Recognition: the enrolled names (None: recognition off) and the person components
        # announced before that are listed as removed (set_people, and the readback of our
        # own retained discovery config at each connection).
        self._people: tuple[str, ...] | None = None
        self._retired_people: tuple[str, ...] = ()
        self._refusal: str | None = None  # the CONNACK's failure reason, this connection
        self._disconnect_reason: str | None = None  # the broker's DISCONNECT reason, this connection
        self._closing = False  # no new work for the thread after the flush
        self._stop = False  # the thread ends its session now
        self._say_stopped = True  # close(): "stopped"; detach(): a silent clean disconnect
        self._wake = threading.Event()

        self._first_client: SizeCappedClient | None = None
        self._thread: threading.Thread | None = None

    # --- EventSink ---------------------------------------------------------------------------

    def publish_event(self, event: Event | None) -> None:
        """``event`` is in the outbox: the transport thread sends it when connected."""
        self._wake.set()

    def publish_state(self, state: PresenceState) -> None:
        with self._cond:
            self._presence.update(encode_state(state))
        self._wake.set()

    def publish_snapshot(self, jpeg: bytes, placeholder: bool = False) -> None:
        """The last face (retained). ``placeholder``: a picture for an image entity that has
        none yet; sent only if the broker holds no snapshot (a real one from a previous run
        is kept) and no real one was published since."""
        with self._cond:
            if not self._snapshot_enabled:
                # Privacy: with snapshots off no image leaves the device, whoever calls this.
                return
            if placeholder:
                if self._snapshot.payload is None:
                    self._placeholder = bytes(jpeg)
                    self._placeholder_look_pending = True
            else:
                self._placeholder = None
                self._snapshot.update(bytes(jpeg))
        self._wake.set()

    def set_snapshots(self, enabled: bool) -> None:
        """The Snapshots switch, applied to the running session (no new connection): the image
        entity is announced or removed, and turning snapshots off clears the retained picture."""
        with self._cond:
            if enabled == self._snapshot_enabled:
                return
            self._snapshot_enabled = enabled
            self._discovery_pending = self._ha.enabled
            self._placeholder, self._placeholder_look_pending = None, False
            self._snapshot.payload, self._snapshot.unsent = None, False
            if not enabled:
                self._snapshot.update(b"")  # an empty retained message deletes the picture
        self._wake.set()

    def publish_stats(self, stats: dict[str, Any]) -> None:
        payload = encode_json(stats)
        health = encode_json({key: stats[key] for key in HEALTH_KEYS if key in stats})
        with self._cond:
            self._health.update(health)  # retained: the latest is worth sending after a reconnect
            if self._connected:  # stats are periodic: a stale one after a reconnect is noise
                self._pending_stats = payload
        self._wake.set()

    # --- Home Assistant controls and lifecycle -------------------------------------------------

    def set_command_handler(self, handler: CommandHandler) -> None:
        """Before :meth:`start`: subscribe to the control command topics (when HA and its
        controls are enabled) and call ``handler(message)`` in the transport thread for each
        message received there, unchecked; it must only queue it."""
        self._command_handler = handler

    def publish_controls(self, state: dict[str, Any]) -> None:
        """The control state (retained, re-sent after every reconnect) the switches read."""
        with self._cond:
            self._controls.update(encode_json(state))
        self._wake.set()

    def reannounce(self) -> None:
        """Re-send discovery and every retained message (the Re-announce button)."""
        with self._cond:
            self._discovery_pending = self._ha.enabled
            for latest in self._retained:
                latest.resend()
        self._wake.set()

    def set_people(self, people: tuple[str, ...] | None) -> None:
        """The enrolled names (None: recognition off): each gets its presence sensor; a person
        no longer enrolled (forgotten, or a gallery reload) is announced as removed, so HA
        drops the entity. Call before :meth:`start` for the first announcement to hold them."""
        with self._cond:
            current = None if people is None else tuple(sorted(set(people)))
            if current == self._people:
                return
            gone = set(map(person_component, self._people or ())) - set(map(person_component, current or ()))
            self._people = current
            self._retire_people(gone)
            self._discovery_pending = self._ha.enabled
        self._wake.set()

    def _retire_people(self, components: set[str]) -> None:
        """(caller holds self._cond) Announce ``components`` as removed from now on."""
        kept = set(map(person_component, self._people or ()))
        retired = [key for key in self._retired_people if key not in components] + sorted(components)
        self._retired_people = tuple(key for key in retired if key not in kept)[-MAX_RETIRED_PEOPLE:]

    def _retire_stale_people(self, retained_config: bytes) -> None:
        """(transport thread) Person sensors in the config HA was told before that are not
        enrolled now: announce them as removed."""
        with self._cond:
            current = set(map(person_component, self._people or ())) | set(self._retired_people)
            stale = stale_person_components(retained_config, current)
            if stale:
                self._retire_people(set(stale))
                self._discovery_pending = True

    def _own_discovery_topic(self) -> str:
        return discovery_topic(self._ha.discovery_prefix, self._device_id)

    def _accepts_commands(self) -> bool:
        return self._ha.enabled and self._ha.controls and self._command_handler is not None

    def close(self, timeout: float, abandon: threading.Event | None = None) -> None:
        """Flush the outbox (and the latest state and snapshot) for up to ``timeout`` s (or
        until ``abandon`` is set: a second SIGTERM), publish "stopped" (retained; a clean
        disconnect also makes the broker discard our LWT) within :data:`STOPPED_GRACE_S`
        more, disconnect and end the thread. What is not delivered stays in the outbox (the
        daemon reports it)."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            if self._stop:
                return
            while self._thread is not None and self._thread.is_alive() and not self._flushed():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (abandon is not None and abandon.is_set()):
                    break
                self._cond.wait(min(remaining, _LOOP_TICK_S))
            self._closing = self._stop = True
            self._cond.notify_all()
        self._wake.set()
        if self._thread is not None:
            # "stopped" and the DISCONNECT take at most STOPPED_GRACE_S; a thread still stuck
            # in a connection attempt is left behind (daemon thread): the stop has a budget.
            self._thread.join(STOPPED_GRACE_S + 0.5)
        self.outbox.release(self)

    def detach(self) -> None:
        """Stop taking events now and give back the ones in flight (they go out again, first,
        through the next transport); the thread disconnects cleanly in the background.
        Never waits on the network: for a reload in the frame loop's thread."""
        with self._cond:
            self._closing = self._stop = True
            self._say_stopped = False
            self.outbox.release(self)
            self._cond.notify_all()
        self._wake.set()

    def wait_detached(self) -> bool:
        """After :meth:`detach`: wait for the clean DISCONNECT to be sent (the thread's end).
        True when it ended: a successor with the same client id may connect now without the
        broker publishing our will. Bounded: a thread in a connection attempt notices the
        stop within the CONNACK timeout, then needs a loop tick (usually it takes one tick)."""
        with self._cond:
            thread = self._thread
        if thread is None:
            return True
        thread.join(self._connack_timeout + STOPPED_GRACE_S)
        return not thread.is_alive()

    # --- control -----------------------------------------------------------------------------

    def start(self, wait_first: bool = True) -> None:
        """Start the transport thread; with ``wait_first`` make the first connection attempt
        here first (TCP and TLS; the CONNACK comes in the thread).

        Raises MqttError when the broker's certificate is rejected or the TLS handshake fails
        for a reason other than the port not speaking TLS (a config problem: exit 2). Any
        other failure is logged and retried in the background."""
        if self._thread is not None:
            raise RuntimeError("MqttSink.start() called twice")
        if wait_first:
            client = self._make_client()
            try:
                client.connect(
                    self._host,
                    self._config.port,
                    keepalive=self._config.keepalive,
                    properties=client.connect_properties(),
                )
            except ssl.SSLError as exc:
                message = self._explain(exc)
                if not _not_tls(exc):
                    raise MqttError(f"MQTT broker {self._broker}: {message}") from None
                self._note_failure(message)
            except OSError as exc:
                self._note_failure(self._explain(exc))
            else:
                self._first_client = client
        with self._cond:
            # Against detach() + wait_detached() in other threads: a sink detached before it
            # starts never connects, and one that starts is always the thread they wait for.
            first, stopped = self._first_client, self._stop
            if not stopped:
                self._thread = threading.Thread(target=self._run, name="mqtt-transport", daemon=True)
                self._thread.start()
        if stopped and first is not None:
            self._first_client = None
            self._finish(first, connected=False)

    @property
    def status(self) -> dict[str, Any]:
        """state ("connecting", "connected", "disconnected"), connected, reconnects, last_error
        (why the last attempt or connection failed, None while connected), rejected (publishes
        refused by the broker), in_flight (events handed to paho, not yet acknowledged)."""
        with self._cond:
            return {
                "state": self._state,
                "connected": self._connected,
                "reconnects": max(0, self._connections - 1),
                "last_error": self._last_error,
                "rejected": self._rejected,
                "in_flight": self._events_unacked,
            }

    # --- client set-up -----------------------------------------------------------------------

    def _make_client(self) -> SizeCappedClient:
        client = new_capped_client(self._client_settings, reconnect_on_failure=False)  # our thread reconnects
        client.max_incoming_bytes = self._incoming_limit
        if self._log.isEnabledFor(logging.DEBUG):
            # paho's log is protocol detail, and it reports routine states of its reconnect
            # loop as ERROR ("Client is not connected"): useful when debugging, noise otherwise.
            client.enable_logger(self._log.getChild("paho"))
        client.connect_timeout = self._connack_timeout
        client.max_inflight_messages_set(PAHO_MAX_INFLIGHT)
        client.max_queued_messages_set(0)  # our outbox is the bound
        client.will_set(self.topics.status, STATUS_OFFLINE, qos=1, retain=True)
        on_connack(client, self._on_connack)
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    # --- failures: explained, logged on change, then reminded ---------------------------------

    def _explain(self, exc: BaseException) -> str:
        """One line saying why a connection attempt failed, naming what to check."""
        cfg = self._config
        if isinstance(exc, ssl.SSLCertVerificationError):
            return (
                f"TLS certificate verify failed ({exc.verify_message}); check mqtt.ca_file "
                f"({cfg.ca_file or 'system CAs'}) and that mqtt.host matches the certificate"
            )
        if isinstance(exc, ssl.SSLError) or (
            self._client_settings.tls is not None and isinstance(exc, ConnectionResetError)
        ):
            if _not_tls(exc):
                return (
                    f"TLS handshake failed ({getattr(exc, 'reason', None) or exc}): port {cfg.port} does not "
                    "seem to speak TLS; check mqtt.port and mqtt.tls"
                )
            return f"TLS handshake failed ({getattr(exc, 'reason', None) or exc})"
        if isinstance(exc, socket.gaierror):
            return f"unreachable: host name {cfg.host!r} not found ({exc.strerror or exc})"
        if isinstance(exc, ConnectionRefusedError):
            return "unreachable: connection refused (no broker listening on that port)"
        if isinstance(exc, (TimeoutError, socket.timeout)):
            stage = "TCP connect or TLS handshake" if self._client_settings.tls is not None else "TCP connect"
            return f"unreachable: no answer to the {stage} within {self._connack_timeout:g} s"
        if isinstance(exc, OSError):
            return f"unreachable ({exc.strerror or exc})"
        return str(exc)

    def _note_failure(self, why: str) -> None:
        """Record a failed attempt or a lost connection: logged when the cause changes, then
        as a reminder every ``reminder_interval`` s with what waits in the outbox."""
        now = time.monotonic()
        with self._cond:
            changed = why != self._last_error or self._state == "connected"
            due = now - self._last_state_log >= self._reminder_interval
            self._state, self._last_error = "disconnected", why
            if not (changed or due):
                return
            self._last_state_log = now
        stats = self.outbox.stats
        if changed:
            self._log.error(
                "MQTT broker %s %s; retrying every %g-%g s, events wait in the outbox (%d now, up to %d)",
                self._broker,
                why,
                self._config.reconnect_min_delay,
                self._config.reconnect_max_delay,
                stats.depth,
                self.outbox.max_events,
            )
        else:
            self._log.warning(
                "MQTT broker %s still failing: %s; %d event(s) (%d bytes) waiting, %d dropped so far",
                self._broker,
                why,
                stats.depth,
                stats.bytes,
                stats.dropped,
            )

    # --- the transport thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            delay = self._config.reconnect_min_delay
            client, self._first_client = self._first_client, None
            while not self._stopping():
                if client is None:
                    client = self._make_client()
                    try:
                        client.connect(
                            self._host,
                            self._config.port,
                            keepalive=self._config.keepalive,
                            properties=client.connect_properties(),
                        )
                    except OSError as exc:  # ssl.SSLError is an OSError
                        self._note_failure(self._explain(exc))
                        client = None
                try:
                    if client is not None:
                        self._session(client)
                        return  # ended by close() or detach()
                except _SessionEnded as ended:
                    self._note_failure(str(ended))
                    if ended.was_connected:
                        delay = self._config.reconnect_min_delay
                finally:
                    if client is not None:
                        _drop_socket(client)
                    with self._cond:
                        self._connected = False
                        self._unacked.clear()
                        self._early_acks.clear()
                        self._events_unacked = 0
                        self.outbox.release(self)
                        self._cond.notify_all()
                    client = None
                    self._refusal = self._disconnect_reason = None
                self._wake.clear()
                deadline = time.monotonic() + delay
                while not self._stopping() and time.monotonic() < deadline:
                    self._wake.wait(min(_LOOP_TICK_S * 4, max(0.0, deadline - time.monotonic())))
                    self._wake.clear()
                delay = min(delay * 2, self._config.reconnect_max_delay)
        except BaseException as exc:  # handed on to on_crash, never swallowed
            with self._cond:
                self._stop = True
                self._cond.notify_all()
            if self._on_crash is None:
                raise
            self._on_crash("mqtt-transport", exc)

    def _stopping(self) -> bool:
        with self._cond:
            return self._stop

    def _session(self, client: SizeCappedClient) -> None:
        """Run one connection until it fails (raises _SessionEnded) or we stop (returns)."""
        connack_deadline = time.monotonic() + self._connack_timeout
        was_connected = False
        while True:
            with self._cond:
                stop, connected = self._stop, self._connected
                work = self._take_work() if connected and not self._closing else []
            if stop:
                self._finish(client, connected)
                return
            try:
                for item in work:
                    self._send(client, item)
                rc = client.loop(timeout=_LOOP_TICK_S)
            except OSError as exc:  # a socket or TLS error paho did not turn into a code
                raise _SessionEnded(self._explain(exc), was_connected) from None
            with self._cond:
                connected, refusal = self._connected, self._refusal
                was_connected = was_connected or connected
            if refusal is not None:
                raise _SessionEnded(refusal, was_connected)
            if client.refused_bytes is not None:
                # Not a network failure: reconnecting at once would get the same message
                # (a retained one) again, so the backoff is not reset.
                raise _SessionEnded(self._oversized(client.refused_bytes), False)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise _SessionEnded(self._lost_reason(rc, was_connected), was_connected)
            if not was_connected and time.monotonic() > connack_deadline:
                raise _SessionEnded(
                    f"accepted the connection but sent no CONNACK within {self._connack_timeout:g} s "
                    "(not an MQTT broker, or a hung one?)",
                    False,
                )

    def _oversized(self, size: int) -> str:
        return (
            f"closed the connection: the broker sent a {size}-byte packet, over the "
            f"{SizeCappedClient.max_incoming_bytes}-byte limit (a huge retained message on a topic we "
            'subscribe to?); it was not read. With mqtt.protocol = "5" the broker drops such messages itself'
        )

    def _lost_reason(self, rc: MQTTErrorCode, was_connected: bool) -> str:
        with self._cond:
            reason = self._disconnect_reason
        if was_connected:
            detail = f" ({reason})" if reason else ""
            return f"lost the connection{detail}"
        hint = "" if self._client_settings.tls is not None else " (a TLS port? then set mqtt.tls = true)"
        detail = (
            ""
            if rc in (MQTTErrorCode.MQTT_ERR_CONN_LOST, MQTTErrorCode.MQTT_ERR_NO_CONN)
            else f": {paho.error_string(rc)}"
        )
        return f"closed the connection before its CONNACK{hint}{detail}"

    def _finish(self, client: paho.Client, connected: bool) -> None:
        """End the session asked to stop: "stopped" (close) or nothing (detach), then a clean
        DISCONNECT so the broker does not publish our LWT."""
        with contextlib.suppress(OSError):  # the connection died while we were leaving: nothing left to tell
            self._say_goodbye(client, connected)

    def _say_goodbye(self, client: paho.Client, connected: bool) -> None:
        if connected and self._say_stopped:
            stopped = _Outgoing("retained", self.topics.status, STATUS_STOPPED.encode(), qos=1, retain=True)
            mid = self._send(client, stopped)
            wait_until = time.monotonic() + STOPPED_GRACE_S
            while mid is not None and time.monotonic() < wait_until:
                with self._cond:
                    if mid not in self._unacked or not self._connected:
                        break
                if client.loop(timeout=_LOOP_TICK_S) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
            else:
                if mid is not None:
                    self._log.warning("MQTT: broker %s did not acknowledge the 'stopped' status", self._broker)
        if connected or client.socket() is not None:
            # Also before the CONNACK: the broker may have taken the CONNECT (and our will).
            _drain(client, STOPPED_GRACE_S)
            client.disconnect()  # paho closes the socket once the DISCONNECT is written
        if connected:
            if self._say_stopped:
                self._log.info("MQTT: disconnected from %s", self._broker)
        elif self._say_stopped:
            self._log.info("MQTT: stopped retrying %s", self._broker)

    # --- paho callbacks (the transport thread, inside client.loop) -------------------------------

    def _on_connack(self, client: paho.Client, reason_code: ReasonCode) -> None:
        if reason_code.is_failure:
            hint = " (check mqtt.username and mqtt.password_file)" if str(reason_code) in _CREDENTIAL_REASONS else ""
            with self._cond:
                self._refusal = f"refused the connection: {reason_code}{hint}"
            return
        with self._cond:
            self._connected = True
            self._connections += 1
            self._state, self._last_error = "connected", None
            self._refusal = self._disconnect_reason = None
            self._last_state_log = float("-inf")
            self._announce_pending = True
            for latest in self._retained:
                latest.resend()
            self._placeholder_look_pending = self._placeholder is not None
            self._placeholder_deadline = None
            reconnect = self._connections > 1
            self._cond.notify_all()
        stats = self.outbox.stats
        self._log.info(
            "MQTT: connected to %s%s",
            self._broker,
            f" ({'reconnect, ' if reconnect else ''}{stats.depth} event(s) to deliver)"
            if reconnect or stats.depth
            else "",
        )

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._cond:
            self._connected = False
            # paho reports a dropped socket as "Unspecified error": only a real reason is news.
            self._disconnect_reason = None if reason_code.value == _UNSPECIFIED_ERROR else str(reason_code)
            self._cond.notify_all()

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason_code: ReasonCode, properties: Properties
    ) -> None:
        with self._cond:
            item = self._unacked.pop(mid, None)
            if item is None:
                self._early_acks[mid] = reason_code
                return
        self._acknowledged(item, reason_code)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:  # a broker that does not check topics: nothing of ours
            if not self._bad_topic_logged:
                self._bad_topic_logged = True
                self._log.warning("MQTT: ignored a message whose topic is not UTF-8 (broker %s)", self._broker)
            return
        if topic == self.topics.snapshot:
            if message.payload:  # a picture is there (a real one from before): keep it
                with self._cond:
                    self._placeholder = None
            return
        if topic == self._own_discovery_topic():
            if not self._ha.enabled and message.payload:  # a config announced while HA was on: remove it
                with self._cond:
                    self._discovery_removal_pending = True
            elif self._ha.enabled and message.retain:  # what HA was told before this connection
                self._retire_stale_people(bytes(message.payload))
            return
        command_prefix = self.topics.command_prefix + "/"
        handler = self._command_handler
        if topic.startswith(command_prefix) and handler is not None and self._accepts_commands():
            # Unchecked: the handler is the gate. paho types payload bytes | bytearray; a
            # received message's is bytes, so bytes() does not copy it.
            handler(CommandMessage(topic, topic[len(command_prefix) :], bytes(message.payload), bool(message.retain)))
            return
        # Home Assistant restarted: it forgets non-retained discovery, so announce again (at
        # most every HA_BIRTH_INTERVAL_S: anyone can publish "online" there, a thousand times).
        if topic == ha_status_topic(self._ha.discovery_prefix) and message.payload == HA_ONLINE.encode():
            with self._cond:
                self._ha_birth_pending = True

    # --- bookkeeping ---------------------------------------------------------------------------

    def _acknowledged(self, item: _Outgoing, reason_code: ReasonCode | None) -> None:
        """A PUBACK (or a local refusal, ``reason_code`` None with a failure) for ``item``."""
        failed = reason_code is None or reason_code.is_failure
        if item.kind == "event":
            with self._cond:
                self._events_unacked -= 1
            if failed:
                self.outbox.reject(item.sequence)
            else:
                self.outbox.ack(item.sequence)
        if failed:
            self._rejection(item, reason_code)
        with self._cond:
            self._cond.notify_all()

    def _rejection(self, item: _Outgoing, reason_code: ReasonCode | None) -> None:
        """Count a refused publish; log the first at once, then a summary at most every
        ``reminder_interval`` s (a broker that refuses every event must not flood the journal)."""
        now = time.monotonic()
        with self._cond:
            self._rejected += 1
            self._rejections_unlogged += 1
            if now - self._last_reject_log < self._reminder_interval:
                return
            count, self._rejections_unlogged, self._last_reject_log = self._rejections_unlogged, 0, now
        reason = reason_code if reason_code is not None else "too large for MQTT"
        self._log.error(
            "MQTT broker %s rejected %d message(s) (latest on '%s': %s); rejected events are lost (%d in total)",
            self._broker,
            count,
            item.topic,
            reason,
            self._rejected,
        )

    def _flushed(self) -> bool:
        """Nothing left to deliver (caller holds self._cond): the outbox is empty, no state
        or snapshot unsent, no connect-time announcement waiting, no QoS 1 message unacknowledged."""
        return not (
            len(self.outbox)
            or any(latest.unsent for latest in self._retained)
            or self._discovery_removal_pending
            or (self._connected and (self._announce_pending or self._discovery_pending))
            or any(item.qos for item in self._unacked.values())
        )

    def _take_work(self) -> list[_Outgoing]:
        """What to send now (caller holds self._cond and is connected)."""
        work: list[_Outgoing] = []

        def retained(topic: str, payload: bytes) -> _Outgoing:
            return _Outgoing("retained", topic, payload, qos=1, retain=True)

        if self._announce_pending:
            self._announce_pending = False
            work.append(retained(self.topics.status, STATUS_ONLINE.encode()))
            if self._ha.enabled:
                work.append(_Outgoing("subscribe", ha_status_topic(self._ha.discovery_prefix), b"", qos=1))
                # Before our config goes out: the broker answers with the config it holds, whose
                # person sensors may be ghosts (a gallery changed while we were stopped).
                work.append(_Outgoing("subscribe", self._own_discovery_topic(), b"", qos=1))
                self._discovery_pending = True
            else:
                # HA turned off: look for a config announced before (retained) to remove it.
                work.append(_Outgoing("subscribe", self._own_discovery_topic(), b"", qos=1))
            if self._accepts_commands():
                work.append(_Outgoing("subscribe", self.topics.command_filter, b"", qos=1))
            if not self._snapshot_enabled:
                # An empty retained message deletes a snapshot left by an earlier run with
                # snapshots on: turning them off must not leave a face image on the broker.
                work.append(retained(self.topics.snapshot, b""))
        if self._ha_birth_pending and time.monotonic() >= self._next_birth_announce:
            self._ha_birth_pending, self._discovery_pending = False, True
            self._next_birth_announce = time.monotonic() + HA_BIRTH_INTERVAL_S
        if self._discovery_pending:
            self._discovery_pending = False
            if self._ha.enabled:
                work.append(retained(self._own_discovery_topic(), encode_json(self._discovery_payload())))
        for latest in self._retained:
            payload = latest.take()
            if payload is not None:
                work.append(retained(latest.topic, payload))
        work += self._placeholder_work()
        if self._discovery_removal_pending:
            self._discovery_removal_pending = False
            # An empty retained config: HA deletes the device (only sent when one exists, as
            # HA warns about removing a device it does not know).
            work.append(retained(self._own_discovery_topic(), b""))
        if self._pending_stats is not None:
            work.append(_Outgoing("stats", self.topics.stats, self._pending_stats, qos=0))
            self._pending_stats = None
        for entry in self.outbox.take(self, EVENT_WINDOW):
            self._events_unacked += 1
            work.append(_Outgoing("event", self.topics.events, entry.payload, qos=1, sequence=entry.sequence))
        return work

    def _placeholder_work(self) -> list[_Outgoing]:
        """Look at the retained snapshot (subscribe), then, unless a picture turned up within
        PLACEHOLDER_WAIT_S, publish the placeholder (caller holds self._cond, connected)."""
        if self._placeholder_look_pending:
            self._placeholder_look_pending = False
            self._placeholder_deadline = time.monotonic() + PLACEHOLDER_WAIT_S
            return [_Outgoing("subscribe", self.topics.snapshot, b"", qos=0)]
        if self._placeholder_deadline is None or time.monotonic() < self._placeholder_deadline:
            return []
        self._placeholder_deadline = None
        work = [_Outgoing("unsubscribe", self.topics.snapshot, b"", qos=0)]
        if self._placeholder is not None and self._snapshot.payload is None and self._snapshot_enabled:
            self._snapshot.update(self._placeholder)
            payload = self._snapshot.take()
            assert payload is not None  # just updated
            work.append(_Outgoing("retained", self.topics.snapshot, payload, qos=1, retain=True))
        self._placeholder = None
        return work

    def _discovery_payload(self) -> dict[str, Any]:
        features = {
            SNAPSHOT: self._snapshot_enabled,
            CONTROLS: self._ha.controls and self._command_handler is not None,
            CPU_TEMPERATURE: read_cpu_temperature() is not None,
            RECOGNITION: self._people is not None,
            ENROLMENT: self._people is not None and self._ha.controls and self._command_handler is not None,
        }
        return build_discovery_payload(
            self._device_id,
            self.topics,
            sw_version=__version__,
            model_id=self._model_id,
            features=frozenset(name for name, on in features.items() if on),
            device_name=self._ha.device_name,
            zones=self._zones,
            retired_zones=self._retired_zones,
            people=self._people or (),
            retired_people=self._retired_people,
        )

    def _send(self, client: paho.Client, item: _Outgoing) -> int | None:
        """Hand ``item`` to paho and track its mid until acknowledged; returns the mid."""
        if item.kind == "subscribe":
            client.subscribe(item.topic, qos=item.qos)
            return None
        if item.kind == "unsubscribe":
            client.unsubscribe(item.topic)
            return None
        try:
            info = client.publish(item.topic, item.payload, qos=item.qos, retain=item.retain)
        except ValueError:  # payload over MQTT's 256 MB limit: nothing paho will ever send
            self._acknowledged(item, None)
            return None
        with self._cond:
            if item.qos == 0:
                return None  # no ack will come
            early = self._early_acks.pop(info.mid, None)
            if early is None:
                self._unacked[info.mid] = item
                return info.mid
        self._acknowledged(item, early)
        return info.mid


def _not_tls(exc: BaseException) -> bool:
    """True when a TLS handshake failed because the other side does not speak TLS."""
    if isinstance(exc, (ssl.SSLEOFError, ConnectionResetError)):
        return True
    return isinstance(exc, ssl.SSLError) and (exc.reason or "") in _NOT_TLS_REASONS


def _drain(client: paho.Client, budget: float) -> None:
    """Read what the broker is still sending (up to ``budget`` s, until it is quiet for a
    loop tick). A socket closed with unread data (a retained snapshot on its way to us) is
    reset rather than closed, and a broker that reads the reset before our DISCONNECT drops
    the DISCONNECT and publishes the will after all."""
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        sock = client.socket()
        if sock is None:
            return
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
        if not pending and not select.select([sock], [], [], _LOOP_TICK_S)[0]:
            return
        if client.loop(timeout=0) != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return


def _drop_socket(client: paho.Client) -> None:
    """Close a finished client's socket: the client is never used again."""
    sock = client.socket()
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()
