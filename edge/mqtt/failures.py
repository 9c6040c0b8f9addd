"""Why an MQTT connection failed, in one line naming what to check, and the journal's view of
the connection: each failure logged when its cause changes, then as a reminder every
reminder interval while it lasts, with what waits in the outbox.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from edge.config import MqttConfig
from edge.mqtt.outbox import Outbox
from edge.mqtt.sinks import SinkError

# CONNACK reasons that mean the credentials, not the network, are wrong.
_CREDENTIAL_REASONS = {"Bad user name or password", "Not authorized"}
# paho reports a dropped socket as "Unspecified error": only a real reason is news.
_UNSPECIFIED_ERROR = 0x80
# ssl reasons that mean "the other side does not speak TLS" rather than a bad certificate.
_NOT_TLS_REASONS = {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNEXPECTED_EOF_WHILE_READING", "HTTP_REQUEST"}


class MqttError(SinkError):
    """The broker cannot be used as configured (e.g. its TLS certificate is rejected).

    ``str(error)`` is one line for the user."""


def not_tls(exc: BaseException) -> bool:
    """True when a TLS handshake failed because the other side does not speak TLS."""
    if isinstance(exc, (ssl.SSLEOFError, ConnectionResetError)):
        return True
    return isinstance(exc, ssl.SSLError) and (exc.reason or "") in _NOT_TLS_REASONS


@dataclass(frozen=True)
class FailureExplainer:
    """Explains failures for one ``[mqtt]`` section: ``tls`` whether the client speaks TLS,
    ``connack_timeout`` how long an attempt may take (s)."""

    config: MqttConfig
    tls: bool
    connack_timeout: float

    def attempt(self, exc: BaseException) -> str:
        """Why a connection attempt (TCP, TLS) failed, naming what to check."""
        cfg = self.config
        if isinstance(exc, ssl.SSLCertVerificationError):
            return (
                f"TLS certificate verify failed ({exc.verify_message}); check mqtt.ca_file "
                f"({cfg.ca_file or 'system CAs'}) and that mqtt.host matches the certificate"
            )
        if isinstance(exc, ssl.SSLError) or (self.tls and isinstance(exc, ConnectionResetError)):
            if not_tls(exc):
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
            stage = "TCP connect or TLS handshake" if self.tls else "TCP connect"
            return f"unreachable: no answer to the {stage} within {self.connack_timeout:g} s"
        if isinstance(exc, OSError):
            return f"unreachable ({exc.strerror or exc})"
        return str(exc)

    @staticmethod
    def refused(reason_code: ReasonCode) -> str:
        """A CONNACK with a failure reason."""
        hint = " (check mqtt.username and mqtt.password_file)" if str(reason_code) in _CREDENTIAL_REASONS else ""
        return f"refused the connection: {reason_code}{hint}"

    @staticmethod
    def disconnected(reason_code: ReasonCode) -> str | None:
        """The broker's DISCONNECT reason, None when paho only saw the socket drop."""
        return None if reason_code.value == _UNSPECIFIED_ERROR else str(reason_code)

    def no_connack(self) -> str:
        return (
            f"accepted the connection but sent no CONNACK within {self.connack_timeout:g} s "
            "(not an MQTT broker, or a hung one?)"
        )

    @staticmethod
    def oversized(size: int, limit: int) -> str:
        return (
            f"closed the connection: the broker sent a {size}-byte packet, over the "
            f"{limit}-byte limit (a huge retained message on a topic we "
            'subscribe to?); it was not read. With mqtt.protocol = "5" the broker drops such messages itself'
        )

    def lost(self, rc: MQTTErrorCode, was_connected: bool, disconnect_reason: str | None) -> str:
        """paho's loop ended the connection with ``rc`` (after or before its CONNACK)."""
        if was_connected:
            detail = f" ({disconnect_reason})" if disconnect_reason else ""
            return f"lost the connection{detail}"
        hint = "" if self.tls else " (a TLS port? then set mqtt.tls = true)"
        detail = (
            ""
            if rc in (MQTTErrorCode.MQTT_ERR_CONN_LOST, MQTTErrorCode.MQTT_ERR_NO_CONN)
            else f": {paho.error_string(rc)}"
        )
        return f"closed the connection before its CONNACK{hint}{detail}"


class ConnectionReport:
    """The connection's state for the stats ("connecting", "connected", "disconnected") and
    its last failure, logged on change and then reminded every ``reminder_interval`` s."""

    def __init__(
        self, broker: str, config: MqttConfig, outbox: Outbox, log: logging.Logger, reminder_interval: float
    ) -> None:
        self._broker, self._config, self._outbox = broker, config, outbox
        self._log, self._reminder_interval = log, reminder_interval
        self._lock = threading.Lock()
        # Guarded by self._lock:
        self.state = "connecting"
        self.last_error: str | None = None  # why the last attempt or connection failed
        self._last_state_log = float("-inf")

    def connected(self) -> None:
        """A CONNACK accepted the connection (then :meth:`log_connected`, outside any lock)."""
        with self._lock:
            self.state, self.last_error = "connected", None
            self._last_state_log = float("-inf")

    def log_connected(self, reconnect: bool) -> None:
        """The connection's start in the journal, with what waits in the outbox."""
        depth = self._outbox.stats.depth
        self._log.info(
            "MQTT: connected to %s%s",
            self._broker,
            f" ({'reconnect, ' if reconnect else ''}{depth} event(s) to deliver)" if reconnect or depth else "",
        )

    def failed(self, why: str) -> None:
        """A failed attempt or a lost connection: logged when the cause changes, then as a
        reminder every ``reminder_interval`` s with what waits in the outbox."""
        now = time.monotonic()
        with self._lock:
            changed = why != self.last_error or self.state == "connected"
            due = now - self._last_state_log >= self._reminder_interval
            self.state, self.last_error = "disconnected", why
            if not (changed or due):
                return
            self._last_state_log = now
        stats = self._outbox.stats
        if changed:
            self._log.error(
                "MQTT broker %s %s; retrying every %g-%g s, events wait in the outbox (%d now, up to %d)",
                self._broker,
                why,
                self._config.reconnect_min_delay,
                self._config.reconnect_max_delay,
                stats.depth,
                self._outbox.max_events,
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
