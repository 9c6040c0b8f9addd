"""edge.scene.events: the presence state machine fed hand-built detections, the event schema; and
edge.mqtt.sinks.StdoutSink on the events it makes."""

from __future__ import annotations

import dataclasses
import io
import json
import random
import re

import numpy as np
import pytest
from daemon_support import EVENT_FIELDS

from edge.detect.decode import Detections
from edge.mqtt.outbox import Outbox
from edge.mqtt.sinks import StdoutSink
from edge.scene.events import (
    Event,
    EventIdentity,
    Face,
    PresenceSettings,
    PresenceTracker,
    faces_from_detections,
    iso_utc,
    new_boot_id,
)

pytestmark = pytest.mark.unit

ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
WALL_START = 1_714_564_800.0  # 2024-05-01T12:00:00Z


def faces(count: int) -> tuple[Face, ...]:
    return tuple(Face(box=(0.1 * i, 0.1, 0.1 * i + 0.05, 0.2), score=0.9) for i in range(count))


def tracker(debounce: int = 3, clear_after: float = 2.0) -> PresenceTracker:
    return PresenceTracker(
        identity=EventIdentity(device_id="hall", boot_id="b" * 32, model_id="ulfd-slim-320-int8"),
        settings=PresenceSettings(debounce_frames=debounce, clear_after_seconds=clear_after),
    )


def feed(
    machine: PresenceTracker, counts: list[int], fps: float = 10.0, start: float = 100.0
) -> list[tuple[int, Event]]:
    """Feed one frame per count at ``fps``; returns (frame number, event) pairs."""
    out = []
    for number, count in enumerate(counts):
        t = start + number / fps
        for event in machine.update(faces(count), 640, 480, t, WALL_START + t):
            out.append((number, event))
    return out


def summary(events: list[tuple[int, Event]]) -> list[tuple[int, str, int]]:
    return [(number, event.type, event.face_count) for number, event in events]


# --- the rules ------------------------------------------------------------------------------------


def test_face_detected_needs_n_consecutive_frames_with_faces():
    # 2 frames with a face, a miss, then 3 in a row: the event is on the 3rd of the run.
    assert summary(feed(tracker(debounce=3), [0, 1, 1, 0, 1, 2, 1, 1])) == [(6, "face_detected", 1)]


def test_debounce_of_one_reacts_on_the_first_face():
    assert summary(feed(tracker(debounce=1), [0, 0, 2])) == [(2, "face_detected", 2)]


def test_count_changed_needs_the_new_count_stable_for_n_frames():
    counts = [*(1, 1, 1), *(2, 2, 1, 2, 2), 2, *(3, 1, 3, 3, 3)]
    assert summary(feed(tracker(debounce=3), counts)) == [
        (2, "face_detected", 1),
        (8, "count_changed", 2),  # the 2-run of frames 6-8 is the first one of length 3
        (13, "count_changed", 3),
    ]


def test_returning_to_the_stable_count_is_not_a_change():
    counts = [2, 2, 2, 3, 3, 2, 2, 2, 2]
    assert summary(feed(tracker(debounce=3), counts)) == [(2, "face_detected", 2)]


def test_frames_without_faces_do_not_change_the_count_and_clear_only_after_t_seconds():
    # 10 fps, clear after 2 s: the clear comes on the first empty frame >= 2 s after the last face.
    counts = [1, 1, 1] + [0] * 5 + [1] + [0] * 25
    events = summary(feed(tracker(debounce=3, clear_after=2.0), counts))
    last_face = 8
    assert events == [(2, "face_detected", 1), (last_face + 20, "face_cleared", 0)]


def test_clear_uses_frame_time_not_frame_count():
    machine = tracker(debounce=1, clear_after=5.0)
    assert [e.type for e in machine.update(faces(1), 640, 480, 10.0, WALL_START)] == ["face_detected"]
    assert machine.update(faces(0), 640, 480, 14.9, WALL_START + 4.9) == []
    cleared = machine.update(faces(0), 640, 480, 15.0, WALL_START + 5.0)
    assert [(e.type, e.face_count, e.faces) for e in cleared] == [("face_cleared", 0, ())]


def test_face_detected_again_after_a_clear():
    counts = [1, 1] + [0] * 12 + [3, 3] + [0] * 12
    assert summary(feed(tracker(debounce=2, clear_after=1.0), counts, fps=10.0)) == [
        (1, "face_detected", 1),
        (11, "face_cleared", 0),
        (15, "face_detected", 3),
        (25, "face_cleared", 0),
    ]


def test_sequence_numbers_are_contiguous_and_rules_hold_on_random_streams():
    rng = random.Random(1234)
    machine = tracker(debounce=2, clear_after=0.5)
    counts = []
    while len(counts) < 3000:  # runs of the same count: a busy room seen at 10 fps
        counts += [rng.choice([0, 0, 1, 2, 3])] * rng.randint(1, 8)
    outbox = Outbox(max_events=10_000)
    events = [outbox.add(event)[0] for _, event in feed(machine, counts)]
    assert len(events) > 100
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    present = False
    for event in events:
        assert event.face_count == len(event.faces)
        if event.type == "face_detected":
            assert not present and event.face_count > 0
            present = True
        elif event.type == "count_changed":
            assert present and event.face_count > 0
        else:
            assert present and event.face_count == 0
            present = False
    assert machine.state.present == present


def test_new_settings_keep_the_sequence_counting():
    machine = tracker(debounce=3)
    outbox = Outbox()
    first = feed(machine, [1, 1, 1])
    machine.settings = PresenceSettings(debounce_frames=1, clear_after_seconds=0.1)
    second = feed(machine, [0, 0], start=200.0)
    assert [outbox.add(e)[0].sequence for _, e in first + second] == [1, 2]
    assert second[0][1].type == "face_cleared"


def test_state_follows_the_events():
    machine = tracker(debounce=1, clear_after=1.0)
    assert machine.state.to_dict() == {
        "present": False,
        "count": 0,
        "last_seen": None,
        "zones": {},
        "detection": "active",
    }
    machine.update(faces(2), 640, 480, 1.0, WALL_START)
    assert machine.state.to_dict() == {
        "present": True,
        "count": 2,
        "last_seen": "2024-05-01T12:00:00.000Z",
        "zones": {},
        "detection": "active",
    }
    machine.update(faces(0), 640, 480, 3.0, WALL_START + 2)
    assert machine.state.to_dict() == {
        "present": False,
        "count": 0,
        "last_seen": "2024-05-01T12:00:00.000Z",
        "zones": {},
        "detection": "active",
    }


def test_clear_ends_a_presence_with_face_cleared_and_restarts_the_debounce():
    machine = tracker(debounce=2, clear_after=60.0)
    outbox = Outbox()  # numbers the events, as in the daemon
    detected = feed(machine, [1, 1])
    assert [e.type for _, e in detected] == ["face_detected"]
    cleared = machine.clear(WALL_START + 10)
    assert [(e.type, e.face_count, e.frame_width) for e in cleared] == [("face_cleared", 0, 0)]
    assert (machine.state.present, machine.state.count) == (False, 0)
    assert machine.clear(WALL_START + 11) == []  # nobody there: nothing to end
    again = feed(machine, [1, 1], start=300.0)
    assert [e.type for _, e in again][-1:] == ["face_detected"]
    numbered = [outbox.add(e)[0] for e in [detected[0][1], *cleared, again[-1][1]]]
    assert [(e.type, e.sequence) for e in numbered] == [("face_detected", 1), ("face_cleared", 2), ("face_detected", 3)]
    assert len(feed(machine, [1], start=400.0)) == 0


def test_clearing_a_zone_tracker_ends_that_zones_presence():
    machine = dataclasses.replace(tracker(debounce=1, clear_after=60.0), zone="door")
    assert [e.zone for _, e in feed(machine, [1])] == ["door"]
    assert [(e.type, e.zone) for e in machine.clear(WALL_START + 5)] == [("face_cleared", "door")]


@pytest.mark.parametrize("bad", [dict(debounce_frames=0), dict(clear_after_seconds=0.0)])
def test_settings_are_checked(bad):
    with pytest.raises(ValueError):
        PresenceSettings(**bad)


# --- schema -----------------------------------------------------------------------------------------


def test_event_schema_is_json_with_the_documented_fields():
    machine = PresenceTracker(
        identity=EventIdentity(device_id="hall", boot_id=new_boot_id(), model_id="m"),
        settings=PresenceSettings(debounce_frames=1),
    )
    detections = Detections(
        boxes=np.array([[-0.01, 0.2, 0.3, 1.02], [0.5, 0.5, 0.6, 0.7]], np.float32),
        scores=np.array([0.98766, 0.75], np.float32),
    )
    (event,) = machine.update(
        faces_from_detections(detections.boxes, detections.scores), 1280, 720, 5.0, WALL_START + 0.25
    )
    event, _ = Outbox().add(event)
    data = json.loads(event.to_json())
    assert list(data) == list(EVENT_FIELDS)
    assert data["type"] == "face_detected" and data["sequence"] == 1 and data["device_id"] == "hall"
    assert re.fullmatch(r"[0-9a-f]{32}", data["boot_id"])
    assert data["time"] == "2024-05-01T12:00:00.250Z"
    assert (data["frame_width"], data["frame_height"], data["face_count"]) == (1280, 720, 2)
    # Who each face is: always the same keys, null without tracks or recognition (one schema).
    assert data["faces"][0] == {
        "box": [0.0, pytest.approx(0.2), pytest.approx(0.3), 1.0],
        "score": 0.9877,
        "track_id": None,
        "person": None,
        "distance": None,
    }
    for face in data["faces"]:
        assert set(face) == {"box", "score", "track_id", "person", "distance"} and len(face["box"]) == 4
        assert all(0.0 <= v <= 1.0 for v in face["box"])


def test_iso_utc_has_milliseconds_and_z():
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(WALL_START + 59.9999) == "2024-05-01T12:00:59.999Z"
    assert ISO_UTC.match(iso_utc(1.5e9))


def test_boot_ids_differ_per_start():
    assert new_boot_id() != new_boot_id()


# --- StdoutSink ---------------------------------------------------------------------------------------


def test_stdout_sink_writes_one_json_line_per_event_and_nothing_else():
    stream = io.StringIO()
    sink = StdoutSink(stream)
    events = [e for _, e in feed(tracker(debounce=1, clear_after=0.1), [1, 0, 0, 2])]
    for event in events:
        sink.publish_event(event)
    sink.publish_state(tracker().state)
    sink.publish_stats({"fps": 1.0})
    sink.publish_snapshot(b"\xff\xd8")
    sink.close(timeout=1.0)
    lines = stream.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == [e.to_dict() for e in events]
    assert [json.loads(line)["type"] for line in lines] == ["face_detected", "face_cleared", "face_detected"]


def test_stdout_sink_drains_the_outbox_and_acknowledges_each_line():
    stream, outbox = io.StringIO(), Outbox()
    sink = StdoutSink(stream, outbox)
    for _, event in feed(tracker(debounce=1, clear_after=0.1), [1, 0, 0, 2]):
        sink.publish_event(outbox.add(event)[0])
    assert [json.loads(line)["sequence"] for line in stream.getvalue().splitlines()] == [1, 2, 3]
    stats = outbox.stats
    assert (stats.enqueued, stats.delivered, stats.depth, stats.bytes) == (3, 3, 0, 0)


def test_stdout_sink_close_survives_a_closed_stream():
    stream = io.StringIO()
    stream.close()
    StdoutSink(stream).close(timeout=0.1)


def test_stdout_sink_has_no_connection_and_takes_no_commands():
    stream = io.StringIO()
    sink = StdoutSink(stream)
    sink.set_command_handler(lambda message: pytest.fail("stdout carries no commands"))
    sink.start(wait_first=True)
    assert sink.status == {}
    sink.publish_controls({"detection": "ON"})
    sink.reannounce()
    sink.detach()
    assert stream.getvalue() == "", "controls and announcements are not events: stdout stays an event feed"
