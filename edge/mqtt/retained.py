"""What the MQTT sink leaves retained on the broker, and what it must clear there.

A retained topic holds the newest payload the broker should keep; it is sent when it changes
and again on every new connection (a broker restarted without persistence has lost it). A
topic that is no longer ours (an entity removed at run time) is *retired*: one empty retained
message clears it, then the book forgets it. :class:`EntityRoster` keeps the names of a group
of run-time entities (zones, later people) and the names retired from it, which the discovery
message lists as removed so that Home Assistant deletes their entities.

Nothing here locks or talks to the network: the sink holds its lock around every call and
publishes what :meth:`RetainedTopics.take` returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from edge.mqtt.delivery import Outgoing

# What clears a retained message on the broker.
CLEARED = b""
# How long after subscribing to its own snapshot topic the sink waits for a retained picture
# before it publishes the placeholder (retained messages follow the SUBACK at once).
PLACEHOLDER_WAIT_S = 1.0


@dataclass
class RetainedTopic:
    """The newest payload of one retained topic, and whether the broker still lacks it."""

    topic: str
    payload: bytes | None = None
    unsent: bool = False

    def update(self, payload: bytes) -> None:
        self.payload, self.unsent = payload, True

    def forget(self) -> None:
        """Nothing to send, nothing to re-send (the broker's copy is someone else's concern)."""
        self.payload, self.unsent = None, False

    def resend(self) -> None:
        """A new connection (or a re-announce): send the newest payload again, if any."""
        self.unsent = self.payload is not None

    def take(self) -> bytes | None:
        """The payload to send now, or None when the broker has it already."""
        if not self.unsent:
            return None
        self.unsent = False
        return self.payload


class RetainedTopics:
    """The retained topics re-sent on every connection, in the order they go out (the order
    of :meth:`track`), and those retired and waiting for their clearing message."""

    def __init__(self) -> None:
        self._topics: dict[str, RetainedTopic] = {}
        self._clearing: dict[str, None] = {}  # retired topics not cleared yet, in retirement order

    def track(self, topic: str) -> RetainedTopic:
        """Keep ``topic`` retained from now on (its first payload comes through the returned
        :class:`RetainedTopic`); a topic retired but not cleared yet is no longer cleared."""
        self._clearing.pop(topic, None)
        return self._topics.setdefault(topic, RetainedTopic(topic))

    def retire(self, topic: str) -> None:
        """``topic`` is no longer ours: clear it on the broker (at once, or on the next
        connection) and forget it. Retiring a topic never tracked clears it too (a restart
        may have forgotten what an earlier run published)."""
        self._topics.pop(topic, None)
        self._clearing[topic] = None

    def __contains__(self, topic: str) -> bool:
        return topic in self._topics

    def resend_all(self) -> None:
        """A new connection or a re-announce: every newest payload goes out again."""
        for latest in self._topics.values():
            latest.resend()

    @property
    def unsent(self) -> bool:
        """Something the broker does not have yet (a payload or a clearing)."""
        return bool(self._clearing) or any(latest.unsent for latest in self._topics.values())

    def take(self) -> list[tuple[str, bytes]]:
        """(topic, payload) pairs to publish retained now: the tracked topics in order, then
        the clearings (each sent once)."""
        messages = []
        for latest in self._topics.values():
            payload = latest.take()
            if payload is not None:
                messages.append((latest.topic, payload))
        messages += [(topic, CLEARED) for topic in self._clearing]
        self._clearing.clear()
        return messages


@dataclass(frozen=True)
class EntityRoster:
    """The names of one group of run-time entities (e.g. zones) and the names retired from it
    since the device was announced, which discovery lists as removed (a removal for an entity
    Home Assistant never had is a no-op, so a retired name is never dropped)."""

    active: tuple[str, ...] = ()
    retired: tuple[str, ...] = ()

    @classmethod
    def of(cls, active: tuple[str, ...], retired: tuple[str, ...] = ()) -> EntityRoster:
        return cls(tuple(dict.fromkeys(active)), tuple(name for name in dict.fromkeys(retired) if name not in active))

    def replaced(self, active: tuple[str, ...]) -> EntityRoster:
        """The roster after the group became ``active``: names no longer there are retired,
        names back again are active."""
        dropped = tuple(name for name in self.active if name not in active)
        return EntityRoster.of(active, self.retired + dropped)


class LastFace:
    """The retained last-face snapshot: the Snapshots switch, and the placeholder (a picture
    for an image entity that has none yet) published only where the broker holds no picture,
    so a restart does not replace the last real face.

    How the placeholder goes out, on each connection: subscribe to our own snapshot topic,
    wait up to :data:`PLACEHOLDER_WAIT_S` for a retained picture (:meth:`picture_seen`),
    unsubscribe, and publish the placeholder only if none came and no real one was published."""

    def __init__(self, latest: RetainedTopic, enabled: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.latest, self.enabled, self._clock = latest, enabled, clock
        self._placeholder: bytes | None = None
        self._look_pending = False
        self._deadline: float | None = None  # when the look at the retained snapshot ends (None: no look)

    @property
    def topic(self) -> str:
        return self.latest.topic

    def publish(self, jpeg: bytes, placeholder: bool) -> None:
        """A new picture, or a ``placeholder``. With snapshots off nothing is kept (privacy:
        no image leaves the device, whoever calls this)."""
        if not self.enabled:
            return
        if placeholder:
            if self.latest.payload is None:
                self._placeholder = bytes(jpeg)
                self._look_pending = True
        else:
            self._placeholder = None
            self.latest.update(bytes(jpeg))

    def set_enabled(self, enabled: bool) -> bool:
        """The Snapshots switch; True when it changed. Off clears the retained picture."""
        if enabled == self.enabled:
            return False
        self.enabled = enabled
        self._placeholder, self._look_pending = None, False
        self.latest.forget()
        if not enabled:
            self.latest.update(CLEARED)
        return True

    def connected(self) -> None:
        """A new connection: look at the broker's snapshot again before a placeholder goes out."""
        self._look_pending = self._placeholder is not None
        self._deadline = None

    def picture_seen(self) -> None:
        """The broker holds a picture (a real one from before): the placeholder is not needed."""
        self._placeholder = None

    def take(self) -> list[Outgoing]:
        """The look (subscribe), then, unless a picture turned up within the wait, the
        placeholder (connected)."""
        if self._look_pending:
            self._look_pending = False
            self._deadline = self._clock() + PLACEHOLDER_WAIT_S
            return [Outgoing.subscribe(self.topic, qos=0)]
        if self._deadline is None or self._clock() < self._deadline:
            return []
        self._deadline = None
        work = [Outgoing.unsubscribe(self.topic)]
        if self._placeholder is not None and self.latest.payload is None and self.enabled:
            self.latest.update(self._placeholder)
            payload = self.latest.take()
            assert payload is not None  # just updated
            work.append(Outgoing.retained(self.topic, payload))
        self._placeholder = None
        return work
