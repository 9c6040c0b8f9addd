"""MQTT sink: face events, presence state, stats and snapshots to a broker (paho-mqtt 2.x).

Topics under the prefix (default ``edge-face/<device_id>``):

==========  =====  ========  ==========================================================
topic       QoS    retained  payload
==========  =====  ========  ==========================================================
status      1      yes       "online"; "offline" (the broker's LWT when we vanish);
                             "stopped" after a clean close
events      1      no        one JSON :class:`edge.events.Event` per message
state       1      yes       JSON {"present": bool, "count": int, "last_seen": str|null}
snapshot    1      yes       JPEG bytes; only when snapshots are on, otherwise cleared
stats       0      no        JSON dict from the daemon (fps, timings, queue depth, ...)
controls    1      yes       JSON state of the Home Assistant controls (edge.controls)
set/<name>  1      (in)      control commands we subscribe to (HA enabled, controls on)
==========  =====  ========  ==========================================================

How an event is never lost (short of a full queue or a dead process):

* While the connection is down, events wait in our bounded :class:`DropOldestQueue`
  (``mqtt.queue_size``); when it is full the oldest is dropped, counted and logged. They are
  not handed to paho then, because paho would keep them in an unbounded dict.
* While connected, at most :data:`EVENT_WINDOW` events are handed to paho and not yet
  acknowledged (PUBACK). paho keeps those across a reconnect and re-sends them (DUP set) right
  after the CONNACK; new events wait until every re-sent one is acknowledged, so the broker
  receives events in sequence order. QoS 1 is at-least-once: a re-sent event may arrive
  twice, and a subscriber de-duplicates on (boot_id, sequence).
* :meth:`MqttSink.close` waits (up to its timeout) for the queue to drain and every event
  to be acknowledged before publishing "stopped" and disconnecting.

Threads: one publisher thread makes every publish call, in order; paho's callbacks (its
network thread) only record facts under our lock. paho runs ``on_publish`` while holding its
own message lock, so calling into paho while holding ours could deadlock.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Generic, TypeVar

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from edge import __version__
from edge.config import ConfigError, HomeAssistantConfig, MqttConfig, read_secret
from edge.discovery import (
    CONTROLS,
    CPU_TEMPERATURE,
    HA_ONLINE,
    SNAPSHOT,
    DeviceTopics,
    build_discovery_payload,
    discovery_topic,
    ha_status_topic,
)
from edge.sysinfo import read_cpu_temperature

if TYPE_CHECKING:
    from edge.events import Event, PresenceState

STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"
STATUS_STOPPED = "stopped"
# Events handed to paho and not yet acknowledged. Bounded so that a connection that died
# silently (noticed only after 1.5 keepalives) piles events up in our bounded queue, not in
# paho; 16 keeps a LAN round trip from throttling bursts.
EVENT_WINDOW = 16
# paho's own in-flight cap: room for the event window plus status, state, snapshot and
# discovery messages, so paho never has to hold anything back in its "queued" state.
PAHO_MAX_INFLIGHT = EVENT_WINDOW + 16
# A full queue drops an event per frame in the worst case: log the running count at most
# this often instead of flooding the journal.
DROP_LOG_INTERVAL_S = 30.0
# "stopped" still gets this long after the flush used up close()'s timeout: without it a
# subscriber could not tell a clean stop from a hang.
STOPPED_GRACE_S = 1.0

_DEVICE_ID = re.compile(r"[a-z0-9_-]{1,64}")
_TOPIC_LEVEL = re.compile(r"[^/+#\x00\s]+")
_PROTOCOLS = {"5": paho.MQTTv5, "3.1.1": paho.MQTTv311}
# CONNACK reasons that mean the credentials, not the network, are wrong.
_CREDENTIAL_REASONS = {"Bad user name or password", "Not authorized"}
_UNSPECIFIED_ERROR = 0x80


class MqttError(Exception):
    """The broker cannot be used as configured (e.g. its TLS certificate is rejected).

    ``str(error)`` is one line for the user."""


def validate_device_id(device_id: str) -> str:
    """``device_id`` if it is safe as one topic level ([a-z0-9_-], 1-64), else ConfigError."""
    if not isinstance(device_id, str) or not _DEVICE_ID.fullmatch(device_id):
        raise ConfigError("device.id", device_id, "1-64 characters of a-z, 0-9, '_' and '-'")
    return device_id


def validate_topic_prefix(prefix: str, key: str) -> str:
    """``prefix`` if it is a literal topic we may publish under, else ConfigError naming ``key``.

    No wildcards (a subscriber's '+'/'#' would match other devices' topics), no empty levels
    ('a//b' and a leading or trailing '/' are different topics from what users mean), no
    leading '$' (reserved for the broker, e.g. $SYS)."""
    levels = prefix.split("/") if isinstance(prefix, str) else [""]
    if not all(_TOPIC_LEVEL.fullmatch(level) for level in levels) or prefix.startswith("$"):
        raise ConfigError(
            key, prefix, "topic levels separated by '/', no '+', '#', spaces or empty levels, not starting with '$'"
        )
    return prefix


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


def encode_event(event: Event) -> bytes:
    return encode_json(event.to_dict())


def encode_state(state: PresenceState) -> bytes:
    return encode_json(state.to_dict())


T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """A FIFO of at most ``capacity`` items; pushing onto a full queue evicts the oldest.

    Not thread-safe: :class:`MqttSink` guards it with its lock."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: collections.deque[T] = collections.deque()

    def push(self, item: T) -> T | None:
        """Append ``item``; returns the evicted oldest item when the queue was full, else None."""
        evicted = self._items.popleft() if len(self._items) >= self.capacity else None
        self._items.append(item)
        return evicted

    def pop(self) -> T:
        return self._items.popleft()

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class _QueuedEvent:
    sequence: int
    payload: bytes


@dataclass(frozen=True)
class _Outgoing:
    """One call into paho. ``kind``: "event", "retained" (status/state/snapshot/discovery),
    "stats" or "subscribe"; ``generation``: the connection it was handed over on."""

    kind: str
    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    generation: int = 0


class MqttSink:
    """:class:`edge.events.EventSink` that publishes to an MQTT broker (see the module docs).

    ``start()`` connects (first attempt in the caller, so TLS and certificate problems raise
    :class:`MqttError` at start-up; an unreachable broker only logs and is retried in the
    background with backoff) and starts paho's network thread and our publisher thread.
    ``publish_*`` never block on the network. ``close(timeout)`` flushes and says "stopped".
    """

    def __init__(
        self,
        mqtt: MqttConfig,
        ha: HomeAssistantConfig,
        device_id: str,
        model_id: str,
        snapshot_enabled: bool,
        logger: logging.Logger,
    ) -> None:
        if mqtt.host is None:
            raise ConfigError("mqtt.host", None, "a host name or IP address for the MQTT sink")
        if mqtt.protocol not in _PROTOCOLS:
            raise ConfigError("mqtt.protocol", mqtt.protocol, 'one of "5", "3.1.1"')
        self._config = mqtt
        self._ha = ha
        self._device_id = device_id
        self._model_id = model_id
        self._snapshot_enabled = snapshot_enabled
        self._log = logger
        self.topics = Topics.for_device(mqtt.topic_prefix, device_id)
        if ha.enabled:
            validate_topic_prefix(ha.discovery_prefix, "homeassistant.discovery_prefix")
        self._broker = f"{mqtt.host}:{mqtt.port}"

        self._cond = threading.Condition()
        # Everything below is guarded by self._cond.
        self._backlog: DropOldestQueue[_QueuedEvent] = DropOldestQueue(mqtt.queue_size)
        self._unacked: dict[int, _Outgoing] = {}  # mid -> what paho holds for us
        # Acks (with their reason) that arrived before _send registered their mid.
        self._early_acks: dict[int, ReasonCode] = {}
        self._events_unacked = 0
        self._unacked_generations: collections.Counter[int] = collections.Counter()
        self._connected = False
        self._generation = 0
        self._reconnects = 0
        self._dropped = 0
        self._rejected = 0
        self._last_error: str | None = None
        self._last_drop_log = float("-inf")
        self._unreachable_logged = False
        self._announce_pending = False
        self._discovery_pending = False
        self._latest_state: bytes | None = None
        self._state_dirty = False
        self._latest_snapshot: bytes | None = None
        self._snapshot_dirty = False
        self._pending_stats: bytes | None = None
        # Home Assistant controls: the retained control state, and who gets the commands.
        self._latest_controls: bytes | None = None
        self._controls_dirty = False
        self._command_handler: Callable[[str, bytes], None] | None = None
        self._discovery_removal_pending = False
        self._closing = False
        self._stop_publisher = False

        self._client: paho.Client | None = None
        self._publisher: threading.Thread | None = None

    # --- EventSink ---------------------------------------------------------------------------

    def publish_event(self, event: Event) -> None:
        queued = _QueuedEvent(event.sequence, encode_event(event))
        with self._cond:
            if self._closing:
                raise RuntimeError("MqttSink.publish_event called after close()")
            evicted = self._backlog.push(queued)
            if evicted is not None:
                self._dropped += 1
                now = time.monotonic()
                if now - self._last_drop_log >= DROP_LOG_INTERVAL_S:
                    self._last_drop_log = now
                    self._log.warning(
                        "MQTT event queue full (mqtt.queue_size = %d; broker %s unreachable or slow): dropped "
                        "the oldest event (sequence %d); %d event(s) dropped so far",
                        self._backlog.capacity, self._broker, evicted.sequence, self._dropped,
                    )
            self._cond.notify_all()

    def publish_state(self, state: PresenceState) -> None:
        with self._cond:
            self._latest_state = encode_state(state)
            self._state_dirty = True
            self._cond.notify_all()

    def publish_snapshot(self, jpeg: bytes) -> None:
        if not self._snapshot_enabled:
            # Privacy: with snapshots off no image leaves the device, whoever calls this.
            return
        with self._cond:
            self._latest_snapshot = bytes(jpeg)
            self._snapshot_dirty = True
            self._cond.notify_all()

    def publish_stats(self, stats: dict) -> None:
        payload = encode_json(stats)
        with self._cond:
            if self._connected:  # stats are periodic: a stale one after a reconnect is noise
                self._pending_stats = payload
                self._cond.notify_all()

    # --- Home Assistant controls and lifecycle -------------------------------------------------

    def set_command_handler(self, handler: Callable[[str, bytes], None]) -> None:
        """Before :meth:`start`: subscribe to the control command topics (when HA and its
        controls are enabled) and call ``handler(control, payload)`` on paho's network thread
        for each command; it must only queue the command."""
        self._command_handler = handler

    def publish_controls(self, state: dict) -> None:
        """The control state (retained, re-sent after every reconnect) the switches read."""
        with self._cond:
            self._latest_controls = encode_json(state)
            self._controls_dirty = True
            self._cond.notify_all()

    def reannounce(self) -> None:
        """Re-send discovery and every retained message (the Re-announce button)."""
        with self._cond:
            self._discovery_pending = self._ha.enabled
            self._state_dirty = self._latest_state is not None
            self._snapshot_dirty = self._latest_snapshot is not None
            self._controls_dirty = self._latest_controls is not None
            self._cond.notify_all()

    def _own_discovery_topic(self) -> str:
        return discovery_topic(self._ha.discovery_prefix, self._device_id)

    def _accepts_commands(self) -> bool:
        return self._ha.enabled and self._ha.controls and self._command_handler is not None

    def close(self, timeout: float) -> None:
        """Flush queued and in-flight events (and the latest state and snapshot) for up to
        ``timeout`` s, publish "stopped" (retained; a clean disconnect also makes the broker
        discard our LWT), disconnect and stop both threads."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            if self._closing:
                return
            self._closing = True
            while self._client is not None and not self._flushed():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            undelivered = len(self._backlog) + self._events_unacked
            self._stop_publisher = True
            connected = self._connected
            self._cond.notify_all()
        if self._publisher is not None:
            self._publisher.join(timeout=5.0)
        if undelivered:
            self._log.warning(
                "MQTT: %d event(s) were not acknowledged by broker %s within %g s: lost unless it got them",
                undelivered, self._broker, timeout,
            )
        client = self._client
        if client is None:
            return
        if connected:
            stopped = _Outgoing("retained", self.topics.status, STATUS_STOPPED.encode(), qos=1, retain=True)
            mid = self._send(client, stopped)
            wait_until = max(deadline, time.monotonic() + STOPPED_GRACE_S)
            with self._cond:
                while mid is not None and mid in self._unacked and self._connected:
                    remaining = wait_until - time.monotonic()
                    if remaining <= 0:
                        self._log.warning("MQTT: broker %s did not acknowledge the 'stopped' status", self._broker)
                        break
                    self._cond.wait(remaining)
        client.disconnect()  # also ends paho's reconnect attempts
        client.loop_stop()
        self._log.info("MQTT: %s %s", "disconnected from" if connected else "stopped retrying", self._broker)

    # --- control -----------------------------------------------------------------------------

    def start(self) -> None:
        """Connect and start the network and publisher threads; see the class docstring.

        Raises ConfigError (credential or certificate files unusable) or MqttError (the
        broker's certificate is rejected, or the TLS handshake fails)."""
        if self._client is not None:
            raise RuntimeError("MqttSink.start() called twice")
        client = self._make_client()
        cfg = self._config
        try:
            client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive)
        except ssl.SSLCertVerificationError as exc:
            raise MqttError(
                f"MQTT broker {self._broker}: TLS certificate verify failed ({exc.verify_message}); "
                f"check mqtt.ca_file ({cfg.ca_file or 'system CAs'}) and that mqtt.host matches the certificate"
            ) from None
        except ssl.SSLError as exc:
            raise MqttError(f"MQTT broker {self._broker}: TLS handshake failed ({exc.reason or exc})") from None
        except OSError as exc:
            self._unreachable_logged = True
            self._log.warning(
                "MQTT broker %s unreachable (%s); retrying every %g-%g s, events queue meanwhile (up to %d)",
                self._broker, exc.strerror or exc, cfg.reconnect_min_delay, cfg.reconnect_max_delay, cfg.queue_size,
            )
            client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive)
        self._client = client
        self._publisher = threading.Thread(target=self._run_publisher, name="mqtt-publisher", daemon=True)
        self._publisher.start()
        client.loop_start()

    @property
    def status(self) -> dict:
        """connected, reconnects, queued (events not yet acknowledged: waiting + in flight),
        in_flight, dropped (evicted from a full queue), rejected (refused by the broker),
        last_error (the last connection refusal, or None)."""
        with self._cond:
            return {
                "connected": self._connected,
                "reconnects": self._reconnects,
                "queued": len(self._backlog) + self._events_unacked,
                "in_flight": self._events_unacked,
                "dropped": self._dropped,
                "rejected": self._rejected,
                "last_error": self._last_error,
            }

    # --- client set-up -----------------------------------------------------------------------

    def _make_client(self) -> paho.Client:
        cfg = self._config
        protocol = _PROTOCOLS[cfg.protocol]
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id or f"edge-face-{self._device_id}",
            # MQTT 5 sets clean start per connection (paho's default: first connect only).
            clean_session=True if protocol == paho.MQTTv311 else None,
            protocol=protocol,
            transport=cfg.transport,
        )
        if self._log.isEnabledFor(logging.DEBUG):
            # paho's log is protocol detail, and it reports routine states of its reconnect
            # loop as ERROR ("Client is not connected"): useful when debugging, noise otherwise.
            client.enable_logger(self._log.getChild("paho"))
        client.max_inflight_messages_set(PAHO_MAX_INFLIGHT)
        client.max_queued_messages_set(0)  # unbounded in paho: our own queue is the bound
        client.reconnect_delay_set(cfg.reconnect_min_delay, cfg.reconnect_max_delay)
        client.will_set(self.topics.status, STATUS_OFFLINE, qos=1, retain=True)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, self._read_password())
        if cfg.tls:
            client.tls_set_context(self._tls_context())
            client.tls_insecure_set(cfg.tls_insecure)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _read_password(self) -> str | None:
        path = self._config.password_file
        if path is None:
            return None
        try:
            return read_secret(path)
        except OSError as exc:
            raise ConfigError("mqtt.password_file", str(path), f"a readable file ({exc.strerror or exc})") from None
        except UnicodeDecodeError:
            raise ConfigError("mqtt.password_file", str(path), "a UTF-8 text file") from None

    def _tls_context(self) -> ssl.SSLContext:
        """Verify the broker's chain against ``mqtt.ca_file`` (system CAs when unset) and its
        name against ``mqtt.host``; present the client certificate when configured."""
        cfg = self._config
        ca_file = _readable_file(cfg.ca_file, "mqtt.ca_file")
        try:
            context = ssl.create_default_context(cafile=ca_file)
        except ssl.SSLError as exc:
            raise ConfigError("mqtt.ca_file", ca_file, f"a PEM file of CA certificates ({exc.reason or exc})") from None
        cert_file = _readable_file(cfg.cert_file, "mqtt.cert_file")
        key_file = _readable_file(cfg.key_file, "mqtt.key_file")
        if (cert_file is None) != (key_file is None):
            missing = "mqtt.key_file" if key_file is None else "mqtt.cert_file"
            raise ConfigError(missing, None, "required: a client certificate needs both mqtt.cert_file and mqtt.key_file")
        if cert_file is not None:
            try:
                context.load_cert_chain(cert_file, key_file)
            except ssl.SSLError as exc:
                raise ConfigError(
                    "mqtt.cert_file", cert_file,
                    f"a PEM certificate matching mqtt.key_file, key without passphrase ({exc.reason or exc})",
                ) from None
        return context

    # --- paho callbacks (network thread): record facts, never call paho ----------------------

    def _on_connect(self, client, userdata, flags, reason_code: ReasonCode, properties) -> None:
        if reason_code.is_failure:
            error = f"connection refused: {reason_code}"
            with self._cond:
                repeated, self._last_error = self._last_error == error, error
            if not repeated:  # paho retries with backoff; the same refusal once is enough
                hint = " (check mqtt.username and mqtt.password_file)" if str(reason_code) in _CREDENTIAL_REASONS else ""
                self._log.error("MQTT broker %s refused the connection: %s%s; retrying", self._broker, reason_code, hint)
            return
        with self._cond:
            self._connected = True
            self._generation += 1
            if self._generation > 1:
                self._reconnects += 1
            self._last_error = None
            self._unreachable_logged = False
            self._announce_pending = True
            self._state_dirty = self._latest_state is not None
            self._snapshot_dirty = self._latest_snapshot is not None
            self._controls_dirty = self._latest_controls is not None
            # paho drops unsent QoS 0 packets on reconnect: their acks will never come.
            for mid in [mid for mid, item in self._unacked.items() if item.qos == 0]:
                del self._unacked[mid]
            waiting = len(self._backlog) + self._events_unacked
            self._cond.notify_all()
        self._log.info(
            "MQTT: connected to %s%s", self._broker,
            f" (reconnect, {waiting} event(s) to deliver)" if self._generation > 1 else "",
        )

    def _on_connect_fail(self, client, userdata) -> None:
        with self._cond:
            first = not self._unreachable_logged
            self._unreachable_logged = True
        if first:
            self._log.warning(
                "MQTT broker %s unreachable; retrying every %g-%g s, events queue meanwhile (up to %d)",
                self._broker, self._config.reconnect_min_delay, self._config.reconnect_max_delay,
                self._config.queue_size,
            )

    def _on_disconnect(self, client, userdata, flags, reason_code: ReasonCode, properties) -> None:
        with self._cond:
            was_connected, self._connected = self._connected, False
            closing = self._closing
            self._cond.notify_all()
        if was_connected and not closing:
            # paho reports a dropped socket as "Unspecified error": only a real reason is news.
            reason = "" if reason_code.value == _UNSPECIFIED_ERROR else f" ({reason_code})"
            self._log.warning(
                "MQTT: lost the connection to %s%s; reconnecting, events queue meanwhile (up to %d)",
                self._broker, reason, self._config.queue_size,
            )

    def _on_publish(self, client, userdata, mid: int, reason_code: ReasonCode, properties) -> None:
        with self._cond:
            item = self._unacked.pop(mid, None)
            if item is None:
                self._early_acks[mid] = reason_code
            else:
                self._acknowledged(item, reason_code)

    def _on_message(self, client, userdata, message: paho.MQTTMessage) -> None:
        if not self._ha.enabled and message.topic == self._own_discovery_topic():
            if message.payload:
                with self._cond:
                    self._discovery_removal_pending = True
                    self._cond.notify_all()
            return
        command_prefix = self.topics.command_prefix + "/"
        if message.topic.startswith(command_prefix) and self._accepts_commands():
            self._command_handler(message.topic[len(command_prefix):], message.payload)
            return
        # Home Assistant restarted: it forgets non-retained discovery, so announce again.
        if message.topic == ha_status_topic(self._ha.discovery_prefix) and message.payload == HA_ONLINE.encode():
            with self._cond:
                self._discovery_pending = True
                self._cond.notify_all()

    # --- bookkeeping (caller holds self._cond) -----------------------------------------------

    def _acknowledged(self, item: _Outgoing, reason_code: ReasonCode | None) -> None:
        if item.kind == "event":
            self._events_unacked -= 1
            self._unacked_generations[item.generation] -= 1
            if not self._unacked_generations[item.generation]:
                del self._unacked_generations[item.generation]
        if reason_code is not None and reason_code.is_failure:
            self._rejected += 1
            self._log.error("MQTT broker %s rejected a message on '%s': %s", self._broker, item.topic, reason_code)
        self._cond.notify_all()

    def _flushed(self) -> bool:
        """Nothing left to deliver: no queued or unacknowledged event, no unsent state or
        snapshot, no connect-time announcement (online status, discovery, the clearing of an old
        snapshot) still waiting for the publisher, no QoS 1 message waiting for its PUBACK."""
        return not (
            len(self._backlog) or self._events_unacked or self._state_dirty or self._snapshot_dirty
            or self._controls_dirty or self._discovery_removal_pending
            or (self._connected and (self._announce_pending or self._discovery_pending))
            or any(item.qos for item in self._unacked.values())
        )

    def _resending_older_events(self) -> bool:
        """True while paho re-sends events handed over on an earlier connection: newer events
        must wait behind them to reach the broker in order."""
        return any(generation < self._generation for generation in self._unacked_generations)

    def _take_work(self) -> list[_Outgoing]:
        if not self._connected:
            return []
        work: list[_Outgoing] = []
        retained = dict(kind="retained", qos=1, retain=True)
        if self._announce_pending:
            self._announce_pending = False
            work.append(_Outgoing(topic=self.topics.status, payload=STATUS_ONLINE.encode(), **retained))
            if self._ha.enabled:
                work.append(_Outgoing("subscribe", ha_status_topic(self._ha.discovery_prefix), b"", qos=1))
                self._discovery_pending = True
            else:
                # HA turned off: look for a config announced before (retained) to remove it.
                work.append(_Outgoing("subscribe", self._own_discovery_topic(), b"", qos=1))
            if self._accepts_commands():
                work.append(_Outgoing("subscribe", self.topics.command_filter, b"", qos=1))
            if not self._snapshot_enabled:
                # An empty retained message deletes a snapshot left by an earlier run with
                # snapshots on: turning them off must not leave a face image on the broker.
                work.append(_Outgoing(topic=self.topics.snapshot, payload=b"", **retained))
        if self._discovery_pending:
            self._discovery_pending = False
            if self._ha.enabled:
                work.append(_Outgoing(
                    topic=discovery_topic(self._ha.discovery_prefix, self._device_id),
                    payload=encode_json(self._discovery_payload()), **retained,
                ))
        if self._state_dirty:
            self._state_dirty = False
            work.append(_Outgoing(topic=self.topics.state, payload=self._latest_state, **retained))
        if self._snapshot_dirty:
            self._snapshot_dirty = False
            work.append(_Outgoing(topic=self.topics.snapshot, payload=self._latest_snapshot, **retained))
        if self._discovery_removal_pending:
            self._discovery_removal_pending = False
            # An empty retained config: HA deletes the device (only sent when one exists, as
            # HA warns about removing a device it does not know).
            work.append(_Outgoing(topic=self._own_discovery_topic(), payload=b"", **retained))
        if self._controls_dirty:
            self._controls_dirty = False
            work.append(_Outgoing(topic=self.topics.controls, payload=self._latest_controls, **retained))
        if self._pending_stats is not None:
            work.append(_Outgoing("stats", self.topics.stats, self._pending_stats, qos=0))
            self._pending_stats = None
        while len(self._backlog) and self._events_unacked < EVENT_WINDOW and not self._resending_older_events():
            queued = self._backlog.pop()
            # Counted as in flight from here: close() must not see an event in neither place.
            self._events_unacked += 1
            self._unacked_generations[self._generation] += 1
            work.append(_Outgoing("event", self.topics.events, queued.payload, qos=1, generation=self._generation))
        return work

    def _discovery_payload(self) -> dict:
        features = {
            SNAPSHOT: self._snapshot_enabled,
            CONTROLS: self._ha.controls and self._command_handler is not None,
            CPU_TEMPERATURE: read_cpu_temperature() is not None,
        }
        return build_discovery_payload(
            self._device_id, self.topics, sw_version=__version__, model_id=self._model_id,
            features=frozenset(name for name, on in features.items() if on), device_name=self._ha.device_name,
        )

    # --- publisher thread --------------------------------------------------------------------

    def _run_publisher(self) -> None:
        client = self._client
        while True:
            with self._cond:
                while not self._stop_publisher and not (work := self._take_work()):
                    self._cond.wait()
                if self._stop_publisher:
                    return
            for item in work:
                self._send(client, item)

    def _send(self, client: paho.Client, item: _Outgoing) -> int | None:
        """Hand ``item`` to paho and track its mid until acknowledged; returns the mid."""
        if item.kind == "subscribe":
            client.subscribe(item.topic, qos=item.qos)
            return None
        try:
            info = client.publish(item.topic, item.payload, qos=item.qos, retain=item.retain)
        except ValueError as exc:  # payload over MQTT's 256 MB limit: nothing paho will ever send
            self._log.error("MQTT: cannot publish on '%s': %s", item.topic, exc)
            with self._cond:
                self._acknowledged(item, None)
            return None
        with self._cond:
            if item.qos == 0 and info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return None  # not sent and not kept by paho: no ack will come
            # QoS 1 with rc NO_CONN: the connection dropped under us; paho keeps the
            # message and re-sends it after the reconnect, so it stays tracked.
            if info.mid in self._early_acks:
                self._acknowledged(item, self._early_acks.pop(info.mid))
            else:
                self._unacked[info.mid] = item
        return info.mid


def _readable_file(path: Path | None, key: str) -> str | None:
    if path is None:
        return None
    if not Path(path).is_file():
        raise ConfigError(key, str(path), "an existing file")
    return str(path)
