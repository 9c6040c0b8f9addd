"""Who is there by name (edge.scene.persons): person_arrived / person_left per enrolled name and
for everyone not enrolled, the leave timer in frame time, clearing and forgetting, the state,
and the event payloads; and the scene stage feeding it the tracked, identified faces."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.detect.decode import Detections
from edge.mqtt.outbox import Outbox
from edge.scene.events import EventIdentity, Face, PresenceSettings
from edge.scene.motion import MotionOptions
from edge.scene.persons import PersonPresence
from edge.scene.rules import SceneOptions, make_zone
from edge.scene.stage import SceneStage
from edge.sources.base import Frame

pytestmark = pytest.mark.unit

WALL = 1_714_564_800.0  # 2024-05-01T12:00:00Z
IDENTITY = EventIdentity("hall", "b" * 32, "m")


def face(track: int, person: str | None = None, decided: bool = True, distance: float | None = 0.3) -> Face:
    return Face((0.1, 0.1, 0.3, 0.4), 0.9, track_id=track, person=person, distance=distance, decided=decided)


def feed(presence: PersonPresence, frames: list[list[Face]], start: float = 0.0, step: float = 1.0):
    """[(frame time, [(type, person, track_id), ...]) per frame]."""
    out = []
    for index, faces in enumerate(frames):
        t = start + index * step
        events = presence.update(faces, 640, 480, t, WALL + t)
        out.append((t, [(e.type, e.person, e.track_id) for e in events]))
    return out


def test_a_named_person_arrives_once_and_leaves_after_the_clear_time():
    presence = PersonPresence(IDENTITY, clear_after_seconds=2.0)
    got = feed(presence, [[face(1, "alice")], [face(1, "alice")], [], [], [], []])
    assert [events for _, events in got] == [
        [("person_arrived", "alice", 1)],
        [],
        [],  # 1 s unseen: not yet
        [("person_left", "alice", 1)],  # 2 s unseen
        [],
        [],
    ]
    assert presence.state(["alice", "bob"]).people["alice"].present is False


def test_strangers_are_one_presence_with_a_null_person_and_pending_faces_count_for_nobody():
    presence = PersonPresence(IDENTITY, clear_after_seconds=1.0)
    got = feed(
        presence,
        [
            [face(1, decided=False, distance=None)],  # still pending: no event
            [face(1, None), face(2, None)],  # two strangers: one arrival
            [face(2, None), face(3, "bob")],
            [face(3, "bob")],
            [],
        ],
    )
    assert [events for _, events in got] == [
        [],
        [("person_arrived", None, 1)],
        [("person_arrived", "bob", 3)],
        [("person_left", None, 2)],  # the last stranger's track
        [("person_left", "bob", 3)],
    ]


def test_a_face_seen_again_within_the_clear_time_keeps_the_presence_even_on_a_new_track():
    presence = PersonPresence(IDENTITY, clear_after_seconds=3.0)
    got = feed(presence, [[face(1, "alice")], [], [face(4, "alice")], [], [], []])
    assert [e for _, events in got for e in events] == [("person_arrived", "alice", 1), ("person_left", "alice", 4)]


def test_clear_ends_everyone_at_once_and_forget_ends_one_name():
    presence = PersonPresence(IDENTITY, clear_after_seconds=60.0)
    feed(presence, [[face(1, "alice"), face(2, "bob"), face(3, None)]])
    forgotten = presence.forget("bob", WALL + 5)
    assert [(e.type, e.person, e.frame_width) for e in forgotten] == [("person_left", "bob", 0)]
    assert presence.forget("nobody-here", WALL + 5) == []
    assert list(presence.state(["alice"]).people) == ["alice"]
    cleared = presence.clear(WALL + 6)
    assert [(e.type, e.person) for e in cleared] == [("person_left", "alice"), ("person_left", None)]
    assert presence.clear(WALL + 7) == []
    state = presence.state(["alice"])
    assert state.people["alice"].present is False and state.people["alice"].last_seen == "2024-05-01T12:00:00.000Z"


def test_the_state_lists_every_enrolled_name_and_the_last_person_who_arrived():
    presence = PersonPresence(IDENTITY, clear_after_seconds=60.0)
    assert presence.state(["alice", "bob"]).last_person is None
    feed(presence, [[face(1, "alice")], [face(1, "alice"), face(2, "bob")], [face(3, None)]], step=2.0)
    state = presence.state(["alice", "bob", "carol"])
    assert {name: (s.present, s.last_seen) for name, s in state.people.items()} == {
        "alice": (True, "2024-05-01T12:00:02.000Z"),
        "bob": (True, "2024-05-01T12:00:02.000Z"),
        "carol": (False, None),
    }
    assert state.last_person == "bob"  # a stranger is not a last person


def test_person_events_carry_person_and_track_id_and_face_events_do_not():
    presence = PersonPresence(IDENTITY, clear_after_seconds=1.0)
    arrived = presence.update([face(7, "alice", distance=0.31234)], 640, 480, 0.0, WALL)
    left = presence.update([], 640, 480, 2.0, WALL + 2)
    numbered = [Outbox().add(e)[0] for e in arrived + left]
    payloads = [json.loads(e.to_json()) for e in numbered]
    assert payloads[0]["type"] == "person_arrived" and (payloads[0]["person"], payloads[0]["track_id"]) == ("alice", 7)
    assert payloads[0]["faces"] == [
        {"box": [0.1, 0.1, 0.3, 0.4], "score": 0.9, "track_id": 7, "person": "alice", "distance": 0.3123}
    ]
    assert (payloads[1]["type"], payloads[1]["person"], payloads[1]["face_count"]) == ("person_left", "alice", 0)
    assert "decided" not in payloads[0]["faces"][0]  # internal, not published


# --- the scene stage: tracks, identities on the faces, person events after the face events ----------


class _Who:
    """An identity as recognition hands it over (structural, like TrackIdentity)."""

    def __init__(self, person: str | None, distance: float | None, decided: bool) -> None:
        self.person, self.distance, self.decided = person, distance, decided


def _frame(t: float) -> Frame:
    return Frame(np.full((240, 320, 3), 120, np.uint8), "RGB", t, int(t * 10))


def test_the_scene_stage_tracks_faces_and_publishes_who_they_are_in_face_zone_and_person_events():
    door = make_zone("door", [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]], "scene.zones[0]")
    stage = SceneStage(MotionOptions(enabled=False), SceneOptions(zones=(door,)), IDENTITY, PresenceSettings(1, 1.0))
    detections = Detections(
        np.array([[0.1, 0.1, 0.3, 0.5], [0.6, 0.1, 0.8, 0.5]], np.float32), np.array([0.9, 0.8], np.float32)
    )
    all_events = []
    for step in range(3):
        t = step * 0.1
        kept = stage.apply(detections, 240)
        tracks = stage.track(kept, _frame(t), recognizable=np.array([True, False]))
        assert tracks.track_ids.tolist() == [1, 2]
        assert tracks.to_recognize() == ((0,) if step == 0 else ())  # the small face is never a view
        who = [_Who("alice", 0.25, True), _Who(None, None, False)]
        all_events += stage.update_presence(kept, 320, 240, t, WALL + t, tracks.track_ids, who)
    first = [e.to_dict() for e in all_events]
    assert [(e["type"], e["zone"], e.get("person")) for e in first] == [
        ("face_detected", None, None),
        ("face_detected", "door", None),
        ("person_arrived", None, "alice"),
    ]
    assert [(f["track_id"], f["person"], f["distance"]) for f in first[0]["faces"]] == [
        (1, "alice", 0.25),
        (2, None, None),
    ]
    assert [f["track_id"] for f in first[1]["faces"]] == [1]  # only the face in the zone
    state = stage.presence_state("active", ["alice", "bob"]).to_dict()
    assert state["people"] == {
        "alice": {"present": True, "last_seen": "2024-05-01T12:00:00.200Z"},
        "bob": {"present": False, "last_seen": None},
    }
    assert state["last_person"] == "alice" and "people" not in state["zones"]["door"]
    cleared = stage.clear_presence(WALL + 1)
    assert [(e.type, e.zone, e.person) for e in cleared] == [
        ("face_cleared", None, None),
        ("face_cleared", "door", None),
        ("person_left", None, "alice"),
    ]
    assert stage.tracks.live_ids == ()  # paused: every track ended; a face afterwards is a new track
    again = stage.track(stage.apply(detections, 240), _frame(2.0))
    assert again.track_ids.tolist() == [3, 4]
