"""The daemon's outbox: every event of one boot, numbered, kept until a transport delivers it.

The outbox belongs to the daemon, not to a network session, so replacing the MQTT client
(a reload that changes ``[mqtt]``) or losing the broker never loses what is queued here.
It is a plain class: no threads, no network. A transport (:class:`edge.mqtt.sink.MqttSink`,
:class:`edge.mqtt.sinks.StdoutSink`) drains it: :meth:`Outbox.take` hands out the oldest
waiting events in sequence order, :meth:`Outbox.ack` removes a delivered one,
:meth:`Outbox.release` puts what a transport still held back at the front (connection lost,
transport replaced), so the next one re-sends them first and the order is kept.

Bounded by ``max_events`` AND ``max_bytes`` (the encoded payloads): adding past either bound
drops the oldest event, counted. Accounting is exact at every moment::

    enqueued == delivered + dropped + rejected + depth

A lock guards every method: the frame loop adds, a transport thread takes and acknowledges.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Hashable
from dataclasses import dataclass

from edge.config import DEFAULT_QUEUE_BYTES, DEFAULT_QUEUE_SIZE
from edge.scene.events import Event

# The bounds' defaults are the config's (mqtt.queue_size, mqtt.queue_bytes); the daemon passes
# the configured values.
DEFAULT_MAX_EVENTS = DEFAULT_QUEUE_SIZE
DEFAULT_MAX_BYTES = DEFAULT_QUEUE_BYTES


@dataclass(frozen=True)
class OutboxEntry:
    """One numbered event: ``payload`` is its compact UTF-8 JSON (:meth:`Event.to_json`)."""

    sequence: int
    payload: bytes


@dataclass(frozen=True)
class OutboxStats:
    """Totals since the outbox was made (one boot). ``depth``/``bytes``: events not yet
    delivered (waiting + in flight) and their payload bytes; ``in_flight``: of those, handed
    to a transport and not yet acknowledged; ``last_sequence``: the newest number given.
    ``lost``: dropped + rejected (undelivered ones are still in ``depth``)."""

    enqueued: int
    delivered: int
    dropped: int
    rejected: int
    depth: int
    bytes: int
    in_flight: int
    last_sequence: int

    @property
    def lost(self) -> int:
        return self.dropped + self.rejected


class Outbox:
    """See the module docstring. ``max_events`` >= 1, ``max_bytes`` >= 1."""

    def __init__(self, max_events: int = DEFAULT_MAX_EVENTS, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.max_events, self.max_bytes = max_events, max_bytes
        self._lock = threading.Lock()
        # Every undelivered entry in sequence order; _holder says who holds the in-flight ones.
        self._entries: collections.OrderedDict[int, OutboxEntry] = collections.OrderedDict()
        self._holder: dict[int, Hashable] = {}
        self._bytes = 0
        self._sequence = 0
        self._enqueued = self._delivered = self._dropped = self._rejected = 0

    # --- the frame loop ---------------------------------------------------------------------

    def add(self, event: Event) -> tuple[Event, list[int]]:
        """Number ``event`` (the next sequence of this boot, from 1, no gaps) and queue it.

        Returns the numbered event and the sequences dropped to make room (oldest first;
        the new event itself when it alone exceeds ``max_bytes``)."""
        with self._lock:
            self._sequence += 1
            numbered = dataclasses.replace(event, sequence=self._sequence)
            entry = OutboxEntry(self._sequence, numbered.to_json())
            self._entries[entry.sequence] = entry
            self._bytes += len(entry.payload)
            self._enqueued += 1
            dropped = []
            while len(self._entries) > self.max_events or (self._bytes > self.max_bytes and self._entries):
                dropped.append(self._drop_oldest())
            return numbered, dropped

    def set_bounds(self, max_events: int, max_bytes: int) -> None:
        """New bounds (a reload); an outbox over them drops its oldest at the next :meth:`add`."""
        if max_events < 1 or max_bytes < 1:
            raise ValueError(f"bounds must be >= 1, got {max_events} events, {max_bytes} bytes")
        with self._lock:
            self.max_events, self.max_bytes = max_events, max_bytes

    # --- a transport ------------------------------------------------------------------------

    def take(self, holder: Hashable, limit: int) -> list[OutboxEntry]:
        """Up to ``limit`` of the oldest waiting entries (not in flight), in sequence order;
        they are in flight with ``holder`` until acknowledged or released. Waiting entries are
        never handed out past an older one still in flight elsewhere (order is kept)."""
        with self._lock:
            if any(owner != holder for owner in self._holder.values()):
                return []  # another transport still holds older ones: release() first
            taken = []
            room = limit - sum(1 for owner in self._holder.values() if owner == holder)
            for sequence, entry in self._entries.items():
                if room <= 0:
                    break
                if sequence in self._holder:
                    continue
                self._holder[sequence] = holder
                taken.append(entry)
                room -= 1
            return taken

    def ack(self, sequence: int) -> bool:
        """``sequence`` was delivered; False if it is no longer here (dropped, or acked before)."""
        with self._lock:
            found = self._remove(sequence) is not None
            self._delivered += found
            return found

    def reject(self, sequence: int) -> bool:
        """The receiver refused ``sequence`` for good (e.g. an MQTT 5 reason code): it is
        counted as rejected and not offered again."""
        with self._lock:
            found = self._remove(sequence) is not None
            self._rejected += found
            return found

    def release(self, holder: Hashable) -> int:
        """Everything ``holder`` has in flight goes back to waiting, ahead of newer entries
        (sequence order is kept); returns how many."""
        with self._lock:
            released = [sequence for sequence, owner in self._holder.items() if owner == holder]
            for sequence in released:
                del self._holder[sequence]
            return len(released)

    # --- accounting -------------------------------------------------------------------------

    @property
    def stats(self) -> OutboxStats:
        with self._lock:
            return OutboxStats(
                enqueued=self._enqueued,
                delivered=self._delivered,
                dropped=self._dropped,
                rejected=self._rejected,
                depth=len(self._entries),
                bytes=self._bytes,
                in_flight=len(self._holder),
                last_sequence=self._sequence,
            )

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    # --- internals (caller holds the lock) ---------------------------------------------------

    def _drop_oldest(self) -> int:
        sequence, entry = self._entries.popitem(last=False)
        self._holder.pop(sequence, None)
        self._bytes -= len(entry.payload)
        self._dropped += 1
        return sequence

    def _remove(self, sequence: int) -> OutboxEntry | None:
        entry = self._entries.pop(sequence, None)
        if entry is not None:
            self._holder.pop(sequence, None)
            self._bytes -= len(entry.payload)
        return entry
