"""The MQTT sink's connection to its broker: one transport thread that connects (with a CONNACK
timeout), runs paho's loop, reconnects with backoff, and ends with a clean DISCONNECT.

The thread owns the paho client: it makes every call into paho and runs paho's callbacks, so
nothing waits on the network in the caller's thread except the first connection attempt of
:meth:`Session.start` (a certificate problem is a config error at start-up). Each connection
is a fresh client. What goes over it is the sink's business, through :class:`SessionHooks`;
why a connection failed is :mod:`edge.mqtt.failures`'. An unexpected exception in the thread
is handed to ``on_crash`` (the daemon exits non-zero), never swallowed.

A replaced session never shows the device offline: :meth:`Session.stop` without "stopped"
ends with a clean DISCONNECT (the broker discards the will), and :meth:`Session.wait_ended`
says when a successor with the same client id may connect.
"""

from __future__ import annotations

import contextlib
import logging
import select
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.client import DisconnectFlags
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.config import MqttConfig
from edge.mqtt.client import ClientSettings, SizeCappedClient, new_capped_client, on_connack
from edge.mqtt.delivery import EVENT_WINDOW, Outgoing
from edge.mqtt.discovery import STATUS_OFFLINE, STATUS_STOPPED
from edge.mqtt.failures import ConnectionReport, FailureExplainer, MqttError, not_tls

# paho's own in-flight cap: room for the event window plus status, state, snapshot and
# discovery messages, so paho never has to hold anything back in its "queued" state.
PAHO_MAX_INFLIGHT = EVENT_WINDOW + 16
# How long a connection may take from TCP connect to CONNACK (TLS handshake included) before
# it is given up and logged; never longer than the keep-alive (a broker that accepts and says
# nothing must be explained within one keep-alive).
CONNACK_TIMEOUT_S = 10.0
# How long the transport thread waits in paho's network loop before looking for new work:
# the latency an event can have on a quiet connection.
LOOP_TICK_S = 0.05
# "stopped" still gets this long after the flush used up close()'s timeout: without it a
# subscriber could not tell a clean stop from a hang.
STOPPED_GRACE_S = 1.0


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect: ``host`` (checked), ``config`` the ``[mqtt]`` section,
    ``will_topic`` the status topic (the broker says "offline" there when we vanish),
    ``incoming_limit`` the largest packet read, ``connack_timeout`` (s, below the keep-alive)."""

    host: str
    config: MqttConfig
    settings: ClientSettings
    will_topic: str
    incoming_limit: int
    connack_timeout: float

    @property
    def broker(self) -> str:
        return f"{self.host}:{self.config.port}"

    def new_client(self, log: logging.Logger) -> SizeCappedClient:
        """A fresh client for one connection (paho's callbacks not set)."""
        client = new_capped_client(self.settings, reconnect_on_failure=False)  # the session reconnects
        client.max_incoming_bytes = self.incoming_limit
        if log.isEnabledFor(logging.DEBUG):
            # paho's log is protocol detail, and it reports routine states of its reconnect
            # loop as ERROR ("Client is not connected"): useful when debugging, noise otherwise.
            client.enable_logger(log.getChild("paho"))
        client.connect_timeout = self.connack_timeout
        client.max_inflight_messages_set(PAHO_MAX_INFLIGHT)
        client.max_queued_messages_set(0)  # the sink's outbox is the bound
        client.will_set(self.will_topic, STATUS_OFFLINE, qos=1, retain=True)
        return client

    def connect(self, client: SizeCappedClient) -> None:
        """The connection attempt (TCP, TLS, CONNECT sent); raises OSError (ssl.SSLError is one)."""
        client.connect(
            self.host, self.config.port, keepalive=self.config.keepalive, properties=client.connect_properties()
        )


@dataclass(frozen=True)
class SessionHooks:
    """The sink's side of the session. "lock held": called with the session's lock held.

    ``take_work``: what to send now (lock held; connected, not closing). ``send``: hand one
    item to paho, its mid when an acknowledgement will come. ``awaiting(mid)``: not yet
    acknowledged (lock held). ``connected``: a CONNACK accepted the connection (lock held).
    ``ended``: a connection or attempt is over, what paho held is gone (lock held).
    ``on_publish(mid, reason)`` and ``on_message(message)``: paho's callbacks."""

    take_work: Callable[[], list[Outgoing]]
    send: Callable[[paho.Client, Outgoing], int | None]
    awaiting: Callable[[int], bool]
    connected: Callable[[], None]
    ended: Callable[[], None]
    on_publish: Callable[[int, ReasonCode], None]
    on_message: Callable[[paho.MQTTMessage], None]


class _SessionEnded(Exception):
    """A connection attempt or a connection ended; ``str()`` says why, for the log;
    ``was_connected``: it got as far as a CONNACK (the backoff starts again from the minimum)."""

    def __init__(self, why: str, was_connected: bool) -> None:
        super().__init__(why)
        self.was_connected = was_connected


class Session:
    """The transport thread of one sink (see the module docs). ``lock`` guards the session's
    state and is the one the hooks expect to be held."""

    def __init__(
        self,
        endpoint: Endpoint,
        hooks: SessionHooks,
        lock: threading.Condition,
        report: ConnectionReport,
        log: logging.Logger,
        on_crash: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self._endpoint, self._hooks, self._cond, self._report, self._log = endpoint, hooks, lock, report, log
        self._on_crash = on_crash
        self._explain = FailureExplainer(endpoint.config, endpoint.settings.tls is not None, endpoint.connack_timeout)
        # Guarded by the lock:
        self.connected = False
        self.connections = 0  # CONNACKs accepted, in all
        self.closing = False  # no new work for the thread after the flush
        self._stop = False  # the thread ends its session now
        self._say_stopped = True  # stop(): "stopped", or a silent clean disconnect
        self._refusal: str | None = None  # the CONNACK's failure reason, this connection
        self._disconnect_reason: str | None = None  # the broker's DISCONNECT reason, this connection
        self._wake = threading.Event()
        self._first_client: SizeCappedClient | None = None
        self._thread: threading.Thread | None = None

    # --- the sink's thread ---------------------------------------------------------------------

    def start(self, wait_first: bool) -> None:
        """Start the transport thread; with ``wait_first`` make the first connection attempt
        here first (TCP and TLS; the CONNACK comes in the thread). Raises MqttError when the
        broker's certificate is rejected or the TLS handshake fails for a reason other than
        the port not speaking TLS (a config problem)."""
        if self._thread is not None:
            raise RuntimeError("MqttSink.start() called twice")
        if wait_first:
            client = self._make_client()
            try:
                self._endpoint.connect(client)
            except ssl.SSLError as exc:
                message = self._explain.attempt(exc)
                if not not_tls(exc):
                    raise MqttError(f"MQTT broker {self._endpoint.broker}: {message}") from None
                self._report.failed(message)
            except OSError as exc:
                self._report.failed(self._explain.attempt(exc))
            else:
                self._first_client = client
        with self._cond:
            # Against stop() + wait_ended() in other threads: a session stopped before it
            # starts never connects, and one that starts is always the thread they wait for.
            first, stopped = self._first_client, self._stop
            if not stopped:
                self._thread = threading.Thread(target=self._run, name="mqtt-transport", daemon=True)
                self._thread.start()
        if stopped and first is not None:
            self._first_client = None
            self._finish(first, connected=False)

    def wake(self) -> None:
        """New work: the thread looks for it now rather than at its next loop tick."""
        self._wake.set()

    def flush(self, flushed: Callable[[], bool], timeout: float, abandon: threading.Event | None) -> bool:
        """Wait (up to ``timeout`` s, or until ``abandon`` is set) while the thread runs and
        ``flushed()`` (lock held) is False, then stop with "stopped" and wait for the thread
        (bounded). False when the session was stopped already."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            if self._stop:
                return False
            while self._thread is not None and self._thread.is_alive() and not flushed():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (abandon is not None and abandon.is_set()):
                    break
                self._cond.wait(min(remaining, LOOP_TICK_S))
            self.stop(say_stopped=True)
        if self._thread is not None:
            # "stopped" and the DISCONNECT take at most STOPPED_GRACE_S; a thread still stuck
            # in a connection attempt is left behind (daemon thread): the stop has a budget.
            self._thread.join(STOPPED_GRACE_S + 0.5)
        return True

    def stop(self, say_stopped: bool) -> None:
        """End the session now: with ``say_stopped`` "stopped" then a DISCONNECT, otherwise a
        DISCONNECT alone (the broker discards the will either way)."""
        with self._cond:
            self.closing = self._stop = True
            self._say_stopped = self._say_stopped and say_stopped
            self._cond.notify_all()
        self._wake.set()

    def wait_ended(self) -> bool:
        """After :meth:`stop`: wait for the thread's end (the clean DISCONNECT sent). True
        when it ended. Bounded: a thread in a connection attempt notices the stop within the
        CONNACK timeout, then needs a loop tick."""
        with self._cond:
            thread = self._thread
        if thread is None:
            return True
        thread.join(self._endpoint.connack_timeout + STOPPED_GRACE_S)
        return not thread.is_alive()

    # --- the transport thread ----------------------------------------------------------------

    def _make_client(self) -> SizeCappedClient:
        client = self._endpoint.new_client(self._log)
        on_connack(client, self._on_connack)
        client.on_disconnect = self._on_disconnect
        client.on_publish = lambda _client, _userdata, mid, reason, _props: self._hooks.on_publish(mid, reason)
        client.on_message = lambda _client, _userdata, message: self._hooks.on_message(message)
        return client

    def _run(self) -> None:
        try:
            delay = self._endpoint.config.reconnect_min_delay
            client, self._first_client = self._first_client, None
            while not self._stopping():
                if client is None:
                    client = self._make_client()
                    try:
                        self._endpoint.connect(client)
                    except OSError as exc:  # ssl.SSLError is an OSError
                        self._report.failed(self._explain.attempt(exc))
                        client = None
                try:
                    if client is not None:
                        self._session(client)
                        return  # ended by stop()
                except _SessionEnded as ended:
                    self._report.failed(str(ended))
                    if ended.was_connected:
                        delay = self._endpoint.config.reconnect_min_delay
                finally:
                    if client is not None:
                        _drop_socket(client)
                    with self._cond:
                        self.connected = False
                        self._hooks.ended()
                        self._cond.notify_all()
                    client = None
                    self._refusal = self._disconnect_reason = None
                self._back_off(delay)
                delay = min(delay * 2, self._endpoint.config.reconnect_max_delay)
        except BaseException as exc:  # handed on to on_crash, never swallowed
            with self._cond:
                self._stop = True
                self._cond.notify_all()
            if self._on_crash is None:
                raise
            self._on_crash("mqtt-transport", exc)

    def _back_off(self, delay: float) -> None:
        """Wait ``delay`` s before the next attempt, or less if stopped."""
        self._wake.clear()
        deadline = time.monotonic() + delay
        while not self._stopping() and time.monotonic() < deadline:
            self._wake.wait(min(LOOP_TICK_S * 4, max(0.0, deadline - time.monotonic())))
            self._wake.clear()

    def _stopping(self) -> bool:
        with self._cond:
            return self._stop

    def _session(self, client: SizeCappedClient) -> None:
        """Run one connection until it fails (raises _SessionEnded) or we stop (returns)."""
        connack_deadline = time.monotonic() + self._endpoint.connack_timeout
        was_connected = False
        while True:
            with self._cond:
                stop, connected = self._stop, self.connected
                work = self._hooks.take_work() if connected and not self.closing else []
            if stop:
                self._finish(client, connected)
                return
            try:
                for item in work:
                    self._hooks.send(client, item)
                rc = client.loop(timeout=LOOP_TICK_S)
            except OSError as exc:  # a socket or TLS error paho did not turn into a code
                raise _SessionEnded(self._explain.attempt(exc), was_connected) from None
            with self._cond:
                connected, refusal, disconnect_reason = self.connected, self._refusal, self._disconnect_reason
                was_connected = was_connected or connected
            if refusal is not None:
                raise _SessionEnded(refusal, was_connected)
            if client.refused_bytes is not None:
                # Not a network failure: reconnecting at once would get the same message
                # (a retained one) again, so the backoff is not reset.
                raise _SessionEnded(self._explain.oversized(client.refused_bytes, client.max_incoming_bytes), False)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise _SessionEnded(self._explain.lost(rc, was_connected, disconnect_reason), was_connected)
            if not was_connected and time.monotonic() > connack_deadline:
                raise _SessionEnded(self._explain.no_connack(), False)

    def _finish(self, client: paho.Client, connected: bool) -> None:
        """End the session asked to stop: "stopped" (close) or nothing (detach), then a clean
        DISCONNECT so the broker does not publish our LWT. The connection may die meanwhile:
        then there is nothing left to tell (OSError)."""
        broker = self._endpoint.broker
        with contextlib.suppress(OSError):
            if connected and self._say_stopped:
                mid = self._hooks.send(client, Outgoing.retained(self._endpoint.will_topic, STATUS_STOPPED.encode()))
                if mid is not None and not _loop_until(client, lambda: self._settled(mid)):
                    self._log.warning("MQTT: broker %s did not acknowledge the 'stopped' status", broker)
            if connected or client.socket() is not None:
                # Also before the CONNACK: the broker may have taken the CONNECT (and our will).
                _drain(client, STOPPED_GRACE_S)
                client.disconnect()  # paho closes the socket once the DISCONNECT is written
            if self._say_stopped:
                self._log.info("MQTT: disconnected from %s" if connected else "MQTT: stopped retrying %s", broker)

    def _settled(self, mid: int) -> bool:
        """``mid`` acknowledged, or no connection left to acknowledge it."""
        with self._cond:
            return not self._hooks.awaiting(mid) or not self.connected

    # --- paho callbacks (the transport thread, inside client.loop) -------------------------------

    def _on_connack(self, client: paho.Client, reason_code: ReasonCode) -> None:
        if reason_code.is_failure:
            with self._cond:
                self._refusal = self._explain.refused(reason_code)
            return
        with self._cond:
            self.connected = True
            self.connections += 1
            self._report.connected()
            self._refusal = self._disconnect_reason = None
            self._hooks.connected()
            reconnect = self.connections > 1
            self._cond.notify_all()
        self._report.log_connected(reconnect)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._cond:
            self.connected = False
            self._disconnect_reason = self._explain.disconnected(reason_code)
            self._cond.notify_all()


def _loop_until(client: paho.Client, done: Callable[[], bool]) -> bool:
    """Run paho's loop until ``done()`` or the connection ends (True), or for at most
    :data:`STOPPED_GRACE_S` (False)."""
    wait_until = time.monotonic() + STOPPED_GRACE_S
    while time.monotonic() < wait_until:
        if done() or client.loop(timeout=LOOP_TICK_S) != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return True
    return False


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
        if not pending and not select.select([sock], [], [], LOOP_TICK_S)[0]:
            return
        if client.loop(timeout=0) != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return


def _drop_socket(client: paho.Client) -> None:
    """Close a finished client's socket: the client is never used again."""
    sock = client.socket()
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()
