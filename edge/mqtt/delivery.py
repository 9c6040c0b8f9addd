"""The MQTT sink's calls into paho and their acknowledgements.

Every publish with QoS 1 is tracked by its message id until the broker's PUBACK: an event's
PUBACK acknowledges it in the :class:`~edge.mqtt.outbox.Outbox`, an MQTT 5 failure reason
rejects it there. A refusal is counted and logged, the first at once and then as a summary
at most every reminder interval (a broker that refuses every event must not flood the journal).

Threads: :meth:`Delivery.send` runs on the transport thread, :meth:`Delivery.on_publish` in
paho's callbacks on that same thread; both take the sink's lock (a ``threading.Condition``,
notified on each acknowledgement). The methods documented "lock held" expect the caller to
hold it already.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from edge.mqtt.outbox import Outbox

# Events handed to paho and not yet acknowledged. Bounded so that a connection that died
# silently (noticed only after 1.5 keepalives) piles events up in our bounded queue, not in
# paho; 16 keeps a LAN round trip from throttling bursts.
EVENT_WINDOW = 16

OutgoingKind = Literal["event", "retained", "stats", "subscribe", "unsubscribe"]


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON; numpy scalars (stats often hold them) become plain numbers."""
    return json.dumps(value, separators=(",", ":"), default=_plain_number).encode("utf-8")


def _plain_number(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@dataclass(frozen=True)
class Outgoing:
    """One call into paho: a publish ("event" with its outbox ``sequence``, "retained",
    "stats"), or a "subscribe" / "unsubscribe" of ``topic``."""

    kind: OutgoingKind
    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    sequence: int = 0

    @classmethod
    def retained(cls, topic: str, payload: bytes) -> Outgoing:
        return cls("retained", topic, payload, qos=1, retain=True)

    @classmethod
    def subscribe(cls, topic: str, qos: int) -> Outgoing:
        return cls("subscribe", topic, b"", qos=qos)

    @classmethod
    def unsubscribe(cls, topic: str) -> Outgoing:
        return cls("unsubscribe", topic, b"", qos=0)


class Delivery:
    """The publishes paho holds for one sink (``holder``, its key in ``outbox``) until the
    broker acknowledges them, and the count of those it refused."""

    def __init__(
        self,
        lock: threading.Condition,
        outbox: Outbox,
        holder: Hashable,
        broker: str,
        log: logging.Logger,
        reminder_interval: float,
    ) -> None:
        self._cond, self._outbox, self._holder = lock, outbox, holder
        self._broker, self._log, self._reminder_interval = broker, log, reminder_interval
        # Guarded by the lock:
        self._unacked: dict[int, Outgoing] = {}  # mid -> what paho holds for us
        self._early_acks: dict[int, ReasonCode] = {}  # acks that came before send() saw the mid
        self.events_in_flight = 0  # events handed to paho, not yet acknowledged
        self.rejected = 0  # publishes refused by the broker, in all
        self._rejections_unlogged = 0
        self._last_reject_log = float("-inf")

    # --- lock held ---------------------------------------------------------------------------

    def take_events(self, topic: str) -> list[Outgoing]:
        """The outbox's oldest waiting events, as publishes to ``topic``, as far as
        :data:`EVENT_WINDOW` allows (lock held)."""
        events = []
        for entry in self._outbox.take(self._holder, EVENT_WINDOW):
            self.events_in_flight += 1
            events.append(Outgoing("event", topic, entry.payload, qos=1, sequence=entry.sequence))
        return events

    def awaiting(self, mid: int) -> bool:
        """``mid`` is handed to paho and not acknowledged yet (lock held)."""
        return mid in self._unacked

    @property
    def settled(self) -> bool:
        """No QoS 1 publish waits for its acknowledgement (lock held)."""
        return not any(item.qos for item in self._unacked.values())

    def release_events(self) -> None:
        """Give the events in flight back to the outbox, for another transport (lock held)."""
        self._outbox.release(self._holder)

    def connection_ended(self) -> None:
        """What paho held is gone with its client: the events go back to the outbox (lock held)."""
        self._unacked.clear()
        self._early_acks.clear()
        self.events_in_flight = 0
        self._outbox.release(self._holder)

    # --- the transport thread ----------------------------------------------------------------

    def send(self, client: paho.Client, item: Outgoing) -> int | None:
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

    def on_publish(self, mid: int, reason_code: ReasonCode) -> None:
        """paho's PUBACK (or a QoS 0 message written) for ``mid``."""
        with self._cond:
            item = self._unacked.pop(mid, None)
            if item is None:
                self._early_acks[mid] = reason_code
                return
        self._acknowledged(item, reason_code)

    def _acknowledged(self, item: Outgoing, reason_code: ReasonCode | None) -> None:
        """A PUBACK (or a local refusal, ``reason_code`` None with a failure) for ``item``."""
        failed = reason_code is None or reason_code.is_failure
        if item.kind == "event":
            with self._cond:
                self.events_in_flight -= 1
            if failed:
                self._outbox.reject(item.sequence)
            else:
                self._outbox.ack(item.sequence)
        if failed:
            self._rejection(item, reason_code)
        with self._cond:
            self._cond.notify_all()

    def _rejection(self, item: Outgoing, reason_code: ReasonCode | None) -> None:
        """Count a refused publish; log the first at once, then a summary at most every
        ``reminder_interval`` s."""
        now = time.monotonic()
        with self._cond:
            self.rejected += 1
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
            self.rejected,
        )
