"""The parts MqttSink is assembled from, each on its own: the retained book-keeping (and its
run-time retirement of topics and entities), the last-face placeholder, the connect-time
announcement, the command route, the failure explanations and their journal, the delivery
window, and the session against a real Mosquitto broker."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time

import pytest
from broker import MosquittoBroker, Subscriber, free_port

from edge.config import HomeAssistantConfig, MqttConfig
from edge.mqtt.announce import HA_BIRTH_INTERVAL_S, Announcer
from edge.mqtt.client import ClientSettings
from edge.mqtt.command_intake import CommandMessage
from edge.mqtt.command_route import CommandRoute
from edge.mqtt.delivery import EVENT_WINDOW, Delivery, Outgoing
from edge.mqtt.discovery import DeviceTopics, zone_entities
from edge.mqtt.failures import ConnectionReport, FailureExplainer
from edge.mqtt.outbox import Outbox
from edge.mqtt.retained import CLEARED, PLACEHOLDER_WAIT_S, EntityRoster, LastFace, RetainedTopics
from edge.mqtt.session import Endpoint, Session, SessionHooks
from edge.scene.events import Event

# Pure parts: unit tests; the two that need a real broker are marked integration.
pytestmark = pytest.mark.unit

TOPICS = DeviceTopics.under("edge-face/parts")
HA = HomeAssistantConfig(enabled=True)


class Clock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- retained book-keeping ------------------------------------------------------------------------


def test_retained_topics_go_out_in_order_once_and_again_after_a_reconnect():
    book = RetainedTopics()
    first, second = book.track("a/controls"), book.track("a/state")
    assert book.take() == [] and not book.unsent  # nothing published yet: nothing to send
    second.update(b"s1")
    first.update(b"c1")
    assert book.unsent
    assert book.take() == [("a/controls", b"c1"), ("a/state", b"s1")]  # tracking order, not update order
    assert book.take() == [] and not book.unsent
    second.update(b"s2")
    book.resend_all()  # a new connection: the newest of each, once
    assert book.take() == [("a/controls", b"c1"), ("a/state", b"s2")]
    assert book.take() == []


def test_a_retired_topic_is_cleared_once_and_forgotten():
    book = RetainedTopics()
    book.track("a/state").update(b"s")
    person = book.track("a/person/alice")
    person.update(b"home")
    assert book.take() == [("a/state", b"s"), ("a/person/alice", b"home")]
    book.retire("a/person/alice")
    assert "a/person/alice" not in book and book.unsent
    assert book.take() == [("a/person/alice", CLEARED)]
    book.resend_all()  # a reconnect re-sends what is ours, never the retired topic
    assert book.take() == [("a/state", b"s")]
    book.retire("a/person/bob")  # never tracked in this run (an earlier run may have left it)
    assert book.take() == [("a/person/bob", CLEARED)]


def test_a_topic_tracked_again_before_its_clearing_went_out_is_not_cleared():
    book = RetainedTopics()
    book.track("a/person/alice").update(b"home")
    book.take()
    book.retire("a/person/alice")
    again = book.track("a/person/alice")
    again.update(b"away")
    assert book.take() == [("a/person/alice", b"away")]


def test_an_entity_roster_retires_what_goes_and_revives_what_comes_back():
    roster = EntityRoster.of(("door", "hall", "door"), retired=("hall", "yard"))
    assert roster == EntityRoster(active=("door", "hall"), retired=("yard",))
    roster = roster.replaced(("hall", "porch"))
    assert roster.active == ("hall", "porch") and roster.retired == ("yard", "door")
    roster = roster.replaced(("door",))
    assert roster.active == ("door",) and set(roster.retired) == {"yard", "hall", "porch"}


# --- the last face -----------------------------------------------------------------------------------


def test_the_placeholder_goes_out_only_after_a_look_found_no_picture():
    clock = Clock()
    book = RetainedTopics()
    face = LastFace(book.track(TOPICS.snapshot), enabled=True, clock=clock)
    face.publish(b"grey", placeholder=True)
    face.connected()
    assert face.take() == [Outgoing.subscribe(TOPICS.snapshot, qos=0)]
    assert face.take() == []  # the broker has PLACEHOLDER_WAIT_S to show its retained picture
    clock.now += PLACEHOLDER_WAIT_S
    assert face.take() == [Outgoing.unsubscribe(TOPICS.snapshot), Outgoing.retained(TOPICS.snapshot, b"grey")]
    assert book.take() == []  # sent once, by the placeholder's work


def test_a_picture_on_the_broker_keeps_the_placeholder_back():
    clock = Clock()
    face = LastFace(RetainedTopics().track(TOPICS.snapshot), enabled=True, clock=clock)
    face.publish(b"grey", placeholder=True)
    face.connected()
    face.take()
    face.picture_seen()
    clock.now += PLACEHOLDER_WAIT_S
    assert face.take() == [Outgoing.unsubscribe(TOPICS.snapshot)]


def test_with_snapshots_off_no_picture_is_kept_and_turning_them_off_clears_the_broker():
    book = RetainedTopics()
    face = LastFace(book.track(TOPICS.snapshot), enabled=False)
    face.publish(b"face", placeholder=False)
    assert book.take() == []
    assert face.set_enabled(True) and not face.set_enabled(True)
    face.publish(b"face", placeholder=False)
    assert book.take() == [(TOPICS.snapshot, b"face")]
    assert face.set_enabled(False)
    assert book.take() == [(TOPICS.snapshot, CLEARED)]


# --- the announcement ---------------------------------------------------------------------------------


def announcer(ha: HomeAssistantConfig = HA, zones: EntityRoster | None = None, clock: Clock | None = None) -> Announcer:
    return Announcer(
        TOPICS, ha, "parts", "model-x", zones or EntityRoster(), cpu_temperature=lambda: False, clock=clock or Clock()
    )


def test_each_connection_says_online_subscribes_and_announces_discovery():
    announce = announcer()
    assert announce.take(snapshots=True, commands=True) == [] and not announce.pending(connected=True)
    announce.connected()
    assert announce.pending(connected=True) and not announce.pending(connected=False)
    work = announce.take(snapshots=False, commands=True)
    assert [(item.kind, item.topic) for item in work] == [
        ("retained", TOPICS.status),
        ("subscribe", "homeassistant/status"),
        ("subscribe", "homeassistant/device/parts/config"),  # what HA was told before: ghosts?
        ("subscribe", TOPICS.command_filter),
        ("retained", TOPICS.snapshot),  # snapshots off: an old picture is cleared
        ("retained", "homeassistant/device/parts/config"),
    ]
    assert work[4].payload == CLEARED
    assert not announce.pending(connected=True)


def test_with_ha_off_an_old_config_is_looked_for_and_removed_once():
    announce = announcer(HomeAssistantConfig(enabled=False))
    announce.connected()
    work = announce.take(snapshots=True, commands=False)
    assert [(item.kind, item.topic) for item in work] == [
        ("retained", TOPICS.status),
        ("subscribe", "homeassistant/device/parts/config"),
    ]
    announce.discovery_changed()
    assert announce.take(snapshots=True, commands=False) == []  # HA off: no discovery
    announce.old_config_seen()
    assert announce.pending(connected=False)
    assert announce.take_removal() == [Outgoing.retained("homeassistant/device/parts/config", CLEARED)]
    assert announce.take_removal() == []


def test_home_assistant_births_are_answered_at_most_every_interval():
    clock = Clock()
    announce = announcer(clock=clock)
    announced = 0
    for _ in range(50):  # a flood of "online" on HA's status topic within one interval
        announce.ha_online()
        announced += len(announce.take(snapshots=True, commands=True))
    assert announced == 1
    clock.now += HA_BIRTH_INTERVAL_S
    assert len(announce.take(snapshots=True, commands=True)) == 1  # the births of the interval, once


def test_discovery_lists_the_roster_and_removes_its_retired_entities():
    announce = announcer(zones=EntityRoster.of(("door",)).replaced(("hall",)))
    components = announce.discovery_payload(snapshots=True, commands=True)["cmps"]
    for entity in zone_entities("hall"):
        assert components[entity.key]["p"] == entity.platform and len(components[entity.key]) > 1
    for entity in zone_entities("door"):
        assert components[entity.key] == {"p": entity.platform}  # HA deletes it


# --- the command route ---------------------------------------------------------------------------------


def test_the_route_hands_on_command_topics_only_as_they_came():
    received: list[CommandMessage] = []
    route = CommandRoute(TOPICS.command_prefix, received.append)
    assert route.route(TOPICS.command("detection"), bytearray(b"OFF"), retained=True)
    assert not route.route(TOPICS.command_prefix + "2/detection", b"OFF", retained=False)  # a look-alike prefix
    assert not route.route(TOPICS.state, b"{}", retained=False)
    assert received == [CommandMessage(TOPICS.command("detection"), "detection", b"OFF", True)]
    assert type(received[0].payload) is bytes


# --- failures explained, and their journal ---------------------------------------------------------------


def explainer(**overrides) -> FailureExplainer:
    config = MqttConfig(host="broker.invalid", port=free_port(), **overrides)
    return FailureExplainer(config, tls=bool(overrides.get("tls")), connack_timeout=3.0)


def attempt(host: str, port: int, tls: ssl.SSLContext | None = None) -> OSError:
    """A real connection attempt's error."""
    try:
        with socket.create_connection((host, port), timeout=3) as raw:
            if tls is not None:
                tls.wrap_socket(raw, server_hostname=host)
    except OSError as exc:
        return exc
    raise AssertionError(f"{host}:{port} accepted the connection")


@pytest.mark.integration
def test_real_connection_failures_are_explained_naming_what_to_check(tmp_path):
    explain = explainer()
    refused = attempt("127.0.0.1", free_port())
    assert explain.attempt(refused) == "unreachable: connection refused (no broker listening on that port)"
    unknown = attempt("broker.invalid", 1883)
    assert explain.attempt(unknown).startswith("unreachable: host name 'broker.invalid' not found (")
    with MosquittoBroker(tmp_path / "plain") as plain:
        not_tls = attempt(plain.host, plain.port, ssl.create_default_context())
    message = explainer(tls=True).attempt(not_tls)
    assert (
        message.startswith("TLS handshake failed (")
        and "does not seem to speak TLS; check mqtt.port and mqtt.tls" in message
    )


def test_a_failure_is_logged_when_its_cause_changes_then_only_as_a_reminder(caplog):
    outbox = Outbox(10)
    report = ConnectionReport("b:1883", MqttConfig(host="b"), outbox, logging.getLogger("test.parts"), 3600.0)
    with caplog.at_level(logging.INFO, logger="test.parts"):
        for _ in range(5):
            report.failed("unreachable: connection refused")
        report.failed("refused the connection: Not authorized")
        assert (report.state, report.last_error) == ("disconnected", "refused the connection: Not authorized")
        report.connected()
        report.log_connected(reconnect=True)
        report.failed("lost the connection")
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 4, lines
    assert lines[0].startswith("MQTT broker b:1883 unreachable: connection refused; retrying every")
    assert "Not authorized" in lines[1] and lines[2] == "MQTT: connected to b:1883 (reconnect, 0 event(s) to deliver)"
    assert "lost the connection" in lines[3]


# --- delivery ----------------------------------------------------------------------------------------------


def test_at_most_the_event_window_is_in_flight_and_an_ended_connection_gives_it_back():
    outbox = Outbox(100)
    for _ in range(EVENT_WINDOW + 5):
        outbox.add(Event("face_detected", "parts", "b" * 32, 0, "2024-05-01T12:00:00.000Z", 0, (), 640, 480, "m"))
    lock = threading.Condition()
    delivery = Delivery(lock, outbox, "holder", "b:1883", logging.getLogger("test.parts"), 60.0)
    with lock:
        events = delivery.take_events(TOPICS.events)
        assert [item.sequence for item in events] == list(range(1, EVENT_WINDOW + 1))
        assert delivery.events_in_flight == EVENT_WINDOW and delivery.take_events(TOPICS.events) == []
        delivery.connection_ended()
        assert delivery.events_in_flight == 0
        assert [item.sequence for item in delivery.take_events(TOPICS.events)] == list(range(1, EVENT_WINDOW + 1))


# --- the session, against a real broker ----------------------------------------------------------------------


@pytest.mark.integration
def test_a_session_publishes_what_the_book_holds_clears_what_it_retires_and_ends_cleanly(tmp_path):
    """The path run-time entities take: tracked, published retained, retired, cleared on the broker."""
    book = RetainedTopics()
    alice, bob = book.track("parts/person/alice"), book.track("parts/person/bob")
    alice.update(b"home")
    bob.update(b"away")
    log = logging.getLogger("test.parts")
    lock = threading.Condition()
    outbox = Outbox(10)
    delivery = Delivery(lock, outbox, "holder", "test", log, 60.0)
    connections: list[int] = []

    def connected() -> None:  # as the sink does: a new connection re-sends what is retained
        connections.append(1)
        book.resend_all()

    with MosquittoBroker(tmp_path / "broker") as broker:
        config = MqttConfig(host=broker.host, port=broker.port, keepalive=5, reconnect_min_delay=0.1)
        endpoint = Endpoint(broker.host, config, ClientSettings("parts"), TOPICS.status, 256 * 1024, 3.0)
        hooks = SessionHooks(
            take_work=lambda: [Outgoing.retained(topic, payload) for topic, payload in book.take()],
            send=delivery.send,
            awaiting=delivery.awaiting,
            connected=connected,
            ended=delivery.connection_ended,
            on_publish=delivery.on_publish,
            on_message=lambda message: None,
        )
        session = Session(endpoint, hooks, lock, ConnectionReport("test", config, outbox, log, 60.0), log)
        with Subscriber(broker, ["parts/#", TOPICS.status]) as watcher:
            session.start(wait_first=True)
            watcher.wait_for_payload("parts/person/bob", b"away")
            with lock:
                book.retire("parts/person/bob")
            session.wake()
            watcher.wait_for_payload("parts/person/bob", CLEARED)
            assert session.connected and connections == [1]
            session.flush(lambda: not book.unsent and delivery.settled, 5.0, None)
            watcher.wait_for_payload(TOPICS.status, b"stopped")
        assert session.wait_ended() and not session.connected
        with Subscriber(broker, ["parts/#"]) as later:  # what a newcomer finds retained
            later.wait_for_payload("parts/person/alice", b"home")
            time.sleep(0.3)
            assert [m.topic for m in later.messages] == ["parts/person/alice"]
