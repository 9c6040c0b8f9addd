"""edge.mqtt.outbox: numbering, order, acknowledgement, release, drop-oldest by count and bytes,
and the accounting invariant, driven directly (no thread, no network)."""

from __future__ import annotations

import json
import random
import threading

import pytest

from edge.mqtt.outbox import Outbox, OutboxStats
from edge.scene.events import Event, Face

pytestmark = pytest.mark.unit


def event(faces: int = 1, kind: str = "face_detected") -> Event:
    return Event(
        type=kind,
        device_id="hall",
        boot_id="b" * 32,
        sequence=0,
        time="2024-05-01T12:00:00.000Z",
        face_count=faces,
        faces=tuple(Face((0.1, 0.1, 0.2, 0.2), 0.9) for _ in range(faces)),
        frame_width=640,
        frame_height=480,
        model_id="m",
    )


def outbox_with(count: int, **bounds: int) -> Outbox:
    """An Outbox (``bounds``: max_events, max_bytes) holding ``count`` events, numbered 1 to ``count``."""
    outbox = Outbox(**bounds)
    for _ in range(count):
        outbox.add(event())
    return outbox


def balanced(stats: OutboxStats) -> bool:
    return stats.enqueued == stats.delivered + stats.dropped + stats.rejected + stats.depth


def test_add_numbers_events_from_one_without_gaps_and_stores_their_json():
    outbox = Outbox()
    numbered = [outbox.add(event())[0] for _ in range(5)]
    assert [e.sequence for e in numbered] == [1, 2, 3, 4, 5]
    entries = outbox.take("t", limit=10)
    assert [json.loads(entry.payload) for entry in entries] == [e.to_dict() for e in numbered]
    assert outbox.stats.bytes == sum(len(entry.payload) for entry in entries)


def test_take_hands_out_in_order_up_to_the_limit_and_ack_removes():
    outbox = outbox_with(5)
    assert [e.sequence for e in outbox.take("t", limit=2)] == [1, 2]
    assert [e.sequence for e in outbox.take("t", limit=3)] == [3]  # 2 still in flight: room for 1
    assert outbox.ack(1) and outbox.ack(2)
    assert not outbox.ack(2)  # a duplicate acknowledgement changes nothing
    assert [e.sequence for e in outbox.take("t", limit=3)] == [4, 5]
    stats = outbox.stats
    assert (stats.delivered, stats.depth, stats.in_flight) == (2, 3, 3) and balanced(stats)


def test_release_puts_in_flight_events_back_in_front_and_blocks_others_until_then():
    outbox = outbox_with(6)
    assert [e.sequence for e in outbox.take("old", limit=3)] == [1, 2, 3]
    outbox.ack(1)
    assert outbox.take("new", limit=10) == []  # 2 and 3 are still with "old": order first
    assert outbox.release("old") == 2
    assert [e.sequence for e in outbox.take("new", limit=10)] == [2, 3, 4, 5, 6]
    assert outbox.ack(3)  # a late acknowledgement from the old session still counts
    stats = outbox.stats
    assert (stats.delivered, stats.depth) == (2, 4) and balanced(stats)


def test_a_full_outbox_drops_the_oldest_by_count():
    outbox = Outbox(max_events=3)
    dropped = [outbox.add(event())[1] for _ in range(5)]
    assert dropped == [[], [], [], [1], [2]]
    assert [e.sequence for e in outbox.take("t", limit=10)] == [3, 4, 5]
    stats = outbox.stats
    assert (stats.enqueued, stats.dropped, stats.depth) == (5, 2, 3) and balanced(stats)


def test_the_byte_bound_drops_the_oldest_too():
    size = len(Outbox().add(event(faces=2))[0].to_json())
    outbox = Outbox(max_events=1000, max_bytes=3 * size)
    for _ in range(3):
        assert outbox.add(event(faces=2))[1] == []
    assert outbox.add(event(faces=2))[1] == [1]
    # A bigger event needs more room: as many of the oldest go as it takes.
    dropped = outbox.add(event(faces=6))[1]
    assert len(dropped) >= 2 and dropped == list(range(2, 2 + len(dropped)))
    stats = outbox.stats
    assert stats.bytes <= 3 * size and balanced(stats)


def test_an_event_larger_than_the_byte_bound_is_dropped_itself():
    outbox = Outbox(max_bytes=10)
    numbered, dropped = outbox.add(event())
    assert dropped == [numbered.sequence] and len(outbox) == 0
    assert outbox.stats.dropped == 1 and balanced(outbox.stats)


def test_an_in_flight_event_can_be_dropped_and_its_late_ack_is_ignored():
    outbox = outbox_with(2, max_events=2)
    outbox.take("t", limit=2)
    assert outbox.add(event())[1] == [1]
    assert not outbox.ack(1)
    stats = outbox.stats
    assert (stats.dropped, stats.delivered, stats.in_flight) == (1, 0, 1) and balanced(stats)


def test_rejected_events_are_counted_and_not_offered_again():
    outbox = outbox_with(3)
    outbox.take("t", limit=3)
    assert outbox.reject(2)
    outbox.release("t")
    assert [e.sequence for e in outbox.take("t", limit=3)] == [1, 3]
    stats = outbox.stats
    assert (stats.rejected, stats.lost) == (1, 1) and balanced(stats)


@pytest.mark.parametrize("bad", [dict(max_events=0), dict(max_bytes=0)])
def test_bounds_are_checked(bad):
    with pytest.raises(ValueError):
        Outbox(**bad)


def test_random_operations_keep_order_and_the_invariant():
    rng = random.Random(8)
    outbox = Outbox(max_events=20, max_bytes=20_000)
    delivered: list[int] = []
    for _ in range(5000):
        action = rng.random()
        if action < 0.4:
            outbox.add(event(faces=rng.randint(0, 5)))
        elif action < 0.7:
            entries = outbox.take("t", limit=rng.randint(1, 8))
            for entry in entries:
                if rng.random() < 0.8 and outbox.ack(entry.sequence):
                    delivered.append(entry.sequence)
        elif action < 0.75:
            outbox.release("t")
        assert balanced(outbox.stats)
    assert delivered == sorted(delivered) or len(set(delivered)) == len(delivered)
    assert len(set(delivered)) == len(delivered)  # nothing delivered twice


def test_a_loop_thread_and_a_transport_thread_share_it_without_loss():
    outbox = Outbox(max_events=100_000, max_bytes=10**9)
    received: list[int] = []
    done = threading.Event()

    def transport() -> None:
        while not done.is_set() or len(outbox):
            for entry in outbox.take("t", limit=16):
                received.append(entry.sequence)
                outbox.ack(entry.sequence)

    thread = threading.Thread(target=transport)
    thread.start()
    for _ in range(3000):
        outbox.add(event())
    done.set()
    thread.join(30)
    assert received == list(range(1, 3001))
    assert outbox.stats.delivered == 3000 and balanced(outbox.stats)
