"""MqttSink against a real Mosquitto broker and a real paho subscriber (tests/broker.py).

What is proven here: topics, payloads, QoS and retained flags; the LWT of a process killed
with SIGKILL; no QoS 1 event lost or reordered across a broker restart; the bounded queue
dropping the oldest; TLS with hostname checking, password files and refused credentials;
clear one-line errors for a wrong CA and missing files; topic-injection guards.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest
from broker import CuttableProxy, MosquittoBroker, Subscriber, make_test_pki, try_connect

from edge.config import ConfigError, HomeAssistantConfig, MqttConfig
from edge.mqtt.sink import (
    STATUS_OFFLINE,
    STATUS_ONLINE,
    STATUS_STOPPED,
    MqttError,
    MqttSink,
    Topics,
    validate_device_id,
)
from edge.scene.events import Event, Face, PresenceState

pytestmark = pytest.mark.integration

DEVICE = "hall-cam_1"
BOOT = "0123456789abcdef0123456789abcdef"
PREFIX = f"edge-face/{DEVICE}"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# MQTT 5 CONNACK reasons for refused credentials: mosquitto 2.0 answers "Not authorized"
# (0x87) for both a missing and a wrong password; 0x86 is "Bad user name or password".
AUTH_REFUSALS = {0x86, 0x87}


def publish(sink: MqttSink, event: Event) -> None:
    """What the daemon does: number the event in the outbox, then tell the transport."""
    numbered, _ = sink.outbox.add(event)
    assert numbered.sequence == event.sequence  # the tests publish 1, 2, 3, ... in order
    sink.publish_event(numbered)


def make_event(sequence: int, kind: str = "face_detected", faces: int = 1) -> Event:
    return Event(
        type=kind,
        device_id=DEVICE,
        boot_id=BOOT,
        sequence=sequence,
        time="2024-05-01T12:00:00.250Z",
        face_count=faces,
        faces=tuple(Face(box=(0.1 * i, 0.2, 0.1 * i + 0.05, 0.3), score=0.91) for i in range(faces)),
        frame_width=640,
        frame_height=480,
        model_id="ulfd-slim-320-int8",
    )


def mqtt_config(broker: MosquittoBroker, **overrides) -> MqttConfig:
    base = MqttConfig(
        host=broker.host,
        port=broker.port,
        keepalive=5,
        reconnect_min_delay=0.1,
        reconnect_max_delay=0.5,
        flush_timeout=5.0,
    )
    return replace(base, **overrides)


@pytest.fixture
def sinks():
    """Factory of MqttSinks that are closed at teardown whatever the test did."""
    made: list[MqttSink] = []

    def make(config: MqttConfig, ha: HomeAssistantConfig | None = None, snapshot: bool = False) -> MqttSink:
        sink = MqttSink(
            config,
            ha or HomeAssistantConfig(enabled=False),
            DEVICE,
            "ulfd-slim-320-int8",
            snapshot,
            logging.getLogger("test.mqtt"),
        )
        made.append(sink)
        return sink

    yield make
    for sink in made:
        sink.close(0.5)


@pytest.fixture
def broker(tmp_path):
    with MosquittoBroker(tmp_path / "broker") as running:
        yield running


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def wait_status(sink: MqttSink, predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate(sink.status):
        if time.monotonic() > deadline:
            raise TimeoutError(f"sink status not as expected within {timeout} s: {sink.status}")
        time.sleep(0.01)


def wait_connected(sink: MqttSink, timeout: float = 10.0) -> None:
    wait_status(sink, lambda status: status["connected"], timeout)


def first_sequences(messages) -> tuple[list[int], int]:
    """Sequence numbers in arrival order with QoS 1 re-deliveries removed, and how many
    duplicates were removed (at-least-once: a subscriber de-duplicates on (boot, seq))."""
    seen, order = set(), []
    for message in messages:
        event = json.loads(message.payload)
        key = (event["boot_id"], event["sequence"])
        if key not in seen:
            seen.add(key)
            order.append(event["sequence"])
    return order, len(messages) - len(order)


# --- pure parts ------------------------------------------------------------------------------


@pytest.mark.parametrize("device_id", ["Hall", "a/b", "a+b", "a#", "", "x" * 65, "caf\u00e9", "a b"])
def test_device_ids_that_could_inject_topics_are_rejected(device_id):
    with pytest.raises(ConfigError) as error:
        validate_device_id(device_id)
    assert "device.id" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("prefix", ["a//b", "/a", "a/", "a/+/b", "a/#", "$SYS/x", "a b", ""])
def test_topic_prefixes_with_wildcards_or_empty_levels_are_rejected(prefix):
    with pytest.raises(ConfigError) as error:
        Topics.for_device(prefix, DEVICE)
    assert "mqtt.topic_prefix" in str(error.value)


def test_topics_substitute_the_device_id():
    topics = Topics.for_device("home/{device_id}/faces", DEVICE)
    assert topics.events == f"home/{DEVICE}/faces/events"
    assert topics.status == f"home/{DEVICE}/faces/status"


# --- topics, payloads, flags -----------------------------------------------------------------


def test_topics_payloads_qos_and_retained_flags(broker, sinks):
    with Subscriber(broker, [f"{PREFIX}/#"]) as live:
        sink = sinks(mqtt_config(broker), snapshot=True)
        sink.start()
        wait_connected(sink)
        events = [make_event(1), make_event(2, "count_changed", faces=2), make_event(3, "face_cleared", faces=0)]
        for event in events:
            publish(sink, event)
        state = PresenceState(present=True, count=2, last_seen="2024-05-01T12:00:00.250Z")
        sink.publish_state(state)
        jpeg = b"\xff\xd8\xff\xe0fake-jpeg-bytes\xff\xd9"
        sink.publish_snapshot(jpeg)
        sink.publish_stats({"fps": 7.5, "invoke_ms_p50": 41.0, "queue_depth": 0})

        received = live.wait_for(f"{PREFIX}/events", 3)
        assert [json.loads(m.payload) for m in received] == [e.to_dict() for e in events]
        assert all(m.qos == 1 and not m.retain for m in received)
        assert json.loads(live.wait_for(f"{PREFIX}/state")[0].payload) == {
            "present": True,
            "count": 2,
            "last_seen": "2024-05-01T12:00:00.250Z",
            "zones": {},
            "detection": "active",
        }
        stats = live.wait_for(f"{PREFIX}/stats")[0]
        assert json.loads(stats.payload)["fps"] == 7.5 and stats.qos == 0
        assert live.wait_for(f"{PREFIX}/snapshot")[0].payload == jpeg
        assert live.wait_for(f"{PREFIX}/status")[0].payload == STATUS_ONLINE.encode()

    # A subscriber arriving later gets exactly the retained topics, flagged as retained.
    with Subscriber(broker, [f"{PREFIX}/#"]) as late:
        expected = {f"{PREFIX}/status", f"{PREFIX}/state", f"{PREFIX}/snapshot", f"{PREFIX}/health"}
        late.wait_until(lambda: expected <= {m.topic for m in late.messages}, 10, "the retained topics")
        time.sleep(0.3)  # anything else retained (events, stats) would have come in the same burst
        retained = {m.topic: m for m in late.messages}
        assert set(retained) == expected
        assert all(m.retain and m.qos == 1 for m in retained.values())
        assert retained[f"{PREFIX}/status"].payload == STATUS_ONLINE.encode()
        assert retained[f"{PREFIX}/snapshot"].payload == jpeg
        # The health summary: the stats keys fleet shows, nothing else (queue_depth is not one).
        assert json.loads(retained[f"{PREFIX}/health"].payload) == {"fps": 7.5, "invoke_ms_p50": 41.0}


def test_snapshots_off_publishes_no_image_and_clears_an_old_one(broker, sinks):
    old = sinks(mqtt_config(broker, client_id="old-run"), snapshot=True)
    old.start()
    wait_connected(old)
    old.publish_snapshot(b"\xff\xd8old-face\xff\xd9")
    old.close(2.0)  # flushes the snapshot too
    with Subscriber(broker, [f"{PREFIX}/snapshot"]) as before:
        assert before.wait_for(f"{PREFIX}/snapshot")[0].payload == b"\xff\xd8old-face\xff\xd9"
    sink = sinks(mqtt_config(broker), snapshot=False)
    sink.start()
    wait_connected(sink)
    sink.publish_snapshot(b"\xff\xd8new-face\xff\xd9")
    sink.close(2.0)
    with Subscriber(broker, [f"{PREFIX}/#"]) as late:
        late.wait_for(f"{PREFIX}/status")
        time.sleep(0.3)
        assert late.on(f"{PREFIX}/snapshot") == []


def test_clean_close_flushes_and_says_stopped(broker, sinks):
    with Subscriber(broker, [f"{PREFIX}/#"]) as live:
        sink = sinks(mqtt_config(broker))
        sink.start()
        for sequence in range(1, 21):  # published before the CONNACK: queued, then sent
            publish(sink, make_event(sequence))
        sink.publish_state(PresenceState(present=False, count=0, last_seen="2024-05-01T12:00:09.000Z"))
        sink.close(5.0)
        order, _ = first_sequences(live.wait_for(f"{PREFIX}/events", 20))
        assert order == list(range(1, 21))
        live.wait_for_payload(f"{PREFIX}/status", STATUS_STOPPED.encode())
        assert STATUS_OFFLINE.encode() not in [m.payload for m in live.on(f"{PREFIX}/status")]
    with Subscriber(broker, [f"{PREFIX}/status", f"{PREFIX}/state"]) as late:
        status = late.wait_for(f"{PREFIX}/status")[0]
        assert status.payload == STATUS_STOPPED.encode() and status.retain
        assert json.loads(late.wait_for(f"{PREFIX}/state")[0].payload)["present"] is False


# --- last will -------------------------------------------------------------------------------

LWT_SCRIPT = textwrap.dedent(
    """
    import logging, sys, time
    from edge.config import HomeAssistantConfig, MqttConfig
    from edge.mqtt.sink import MqttSink
    config = MqttConfig(host="127.0.0.1", port=int(sys.argv[1]), keepalive=5)
    sink = MqttSink(config, HomeAssistantConfig(enabled=False), sys.argv[2], "m", False, logging.getLogger())
    sink.start()
    print("started", flush=True)
    time.sleep(60)
    """
)


def test_killed_process_leaves_offline_via_the_last_will(broker):
    with Subscriber(broker, [f"{PREFIX}/status"]) as live:
        process = subprocess.Popen(
            [sys.executable, "-c", LWT_SCRIPT, str(broker.port), DEVICE],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            live.wait_for_payload(f"{PREFIX}/status", STATUS_ONLINE.encode(), timeout=20)
        finally:
            process.kill()  # SIGKILL: no chance to say goodbye; the broker must
            process.wait(timeout=10)
        offline = live.wait_for_payload(f"{PREFIX}/status", STATUS_OFFLINE.encode(), timeout=10)
        assert offline.qos == 1
    with Subscriber(broker, [f"{PREFIX}/status"]) as late:
        status = late.wait_for(f"{PREFIX}/status")[0]
        assert status.payload == STATUS_OFFLINE.encode() and status.retain


# --- no loss across broker restarts and while offline ----------------------------------------


def test_broker_restart_mid_stream_loses_no_event_and_keeps_order(tmp_path, sinks):
    broker = MosquittoBroker(tmp_path / "broker", persistence=True).start()
    # A persistent session: the restarted broker still holds what arrived while the
    # subscriber was reconnecting, so every loss seen here is the sink's.
    subscriber = Subscriber(broker, [f"{PREFIX}/events"], persistent=True, client_id="restart-sub").start()
    try:
        sink = sinks(mqtt_config(broker))
        sink.start()
        wait_connected(sink)
        total = 150
        for sequence in range(1, 51):  # a burst: part of it is in flight when the broker stops
            publish(sink, make_event(sequence))
        broker.stop()
        for sequence in range(51, 101):  # broker away: these wait in the sink's queue
            publish(sink, make_event(sequence))
            time.sleep(0.002)
        assert not sink.status["connected"]
        broker.start()
        for sequence in range(101, total + 1):  # racing the reconnect and the re-sends
            publish(sink, make_event(sequence))
            time.sleep(0.002)
        sink.close(10.0)
        status = sink.status
        subscriber.wait_until(
            lambda: len(first_sequences(subscriber.on(f"{PREFIX}/events"))[0]) >= total, 20, f"{total} events"
        )
        order, duplicates = first_sequences(subscriber.on(f"{PREFIX}/events"))
        assert order == list(range(1, total + 1))
        outbox = sink.outbox.stats
        assert (outbox.dropped, outbox.depth, outbox.delivered) == (0, 0, total) and status["reconnects"] >= 1
        assert duplicates <= 50  # only re-sends of what was in flight at the stop
    finally:
        subscriber.stop()
        broker.stop()


def test_events_in_flight_when_the_connection_dies_are_resent_in_order(broker, sinks):
    with CuttableProxy(broker) as proxy, Subscriber(broker, [f"{PREFIX}/events"]) as live:
        sink = sinks(mqtt_config(broker, port=proxy.port))
        sink.start()
        for sequence in range(1, 6):
            publish(sink, make_event(sequence))
        live.wait_for(f"{PREFIX}/events", 5)
        wait_status(sink, lambda status: status["in_flight"] == 0)  # 1-5 acknowledged
        proxy.swallow_client_bytes()  # from here the broker sees nothing the sink sends
        for sequence in range(6, 13):
            publish(sink, make_event(sequence))
        wait_status(sink, lambda status: status["in_flight"] == 7)  # handed to paho
        time.sleep(0.2)
        assert sink.status["in_flight"] == 7  # and no PUBACK can come
        assert len(live.on(f"{PREFIX}/events")) == 5
        proxy.cut()
        for sequence in range(13, 21):  # while reconnecting, and while 6-12 are re-sent
            publish(sink, make_event(sequence))
        sink.close(5.0)
        assert sink.status["reconnects"] == 1 and sink.outbox.stats.depth == 0
        order, duplicates = first_sequences(live.wait_for(f"{PREFIX}/events", 20))
        assert order == list(range(1, 21)) and duplicates == 0


def test_a_replaced_transport_hands_its_in_flight_events_to_the_next_one_in_order(broker, sinks):
    """A reload: the old client's unacknowledged events go back to the shared outbox and the
    new client sends them first; detach() never waits on the network."""
    with CuttableProxy(broker) as proxy, Subscriber(broker, [f"{PREFIX}/events"]) as live:
        old = sinks(mqtt_config(broker, port=proxy.port))
        old.start()
        wait_connected(old)
        for sequence in range(1, 4):
            publish(old, make_event(sequence))
        live.wait_for(f"{PREFIX}/events", 3)
        proxy.swallow_client_bytes()  # 4-9 reach paho, never the broker
        for sequence in range(4, 10):
            publish(old, make_event(sequence))
        wait_status(old, lambda status: status["in_flight"] == 6)
        new = MqttSink(
            mqtt_config(broker, client_id="after-reload"),
            HomeAssistantConfig(enabled=False),
            DEVICE,
            "ulfd-slim-320-int8",
            False,
            logging.getLogger("test.mqtt"),
            old.outbox,
        )
        started = time.monotonic()
        old.detach()
        assert time.monotonic() - started < 0.1
        assert old.outbox.stats.in_flight == 0  # all given back
        new.start(wait_first=False)
        try:
            for sequence in range(10, 13):
                publish(new, make_event(sequence))
            order, _ = first_sequences(live.wait_for(f"{PREFIX}/events", 12))
            assert order == list(range(1, 13))
            new.close(5.0)
        finally:
            new.close(0.5)
        stats = new.outbox.stats
        assert (stats.delivered, stats.depth, stats.dropped) == (12, 0, 0)


def test_full_outbox_drops_the_oldest_and_counts(tmp_path, sinks, caplog):
    broker = MosquittoBroker(tmp_path / "broker", persistence=True).start()
    subscriber = Subscriber(broker, [f"{PREFIX}/events"], persistent=True, client_id="overflow-sub").start()
    try:
        broker.stop()  # the subscriber's session survives in the broker's store
        sink = sinks(mqtt_config(broker, queue_size=5))
        with caplog.at_level(logging.WARNING, logger="test.mqtt"):
            sink.start()  # broker down: starts anyway, retries in the background
            for sequence in range(1, 13):
                publish(sink, make_event(sequence))
        outbox = sink.outbox.stats
        assert (outbox.depth, outbox.dropped, sink.status["connected"]) == (5, 7, False)
        assert "unreachable: connection refused" in caplog.text
        broker.start()
        received = subscriber.wait_for(f"{PREFIX}/events", 5, timeout=20)
        assert first_sequences(received)[0] == [8, 9, 10, 11, 12]
        sink.close(5.0)
        outbox = sink.outbox.stats
        assert (outbox.dropped, outbox.depth, outbox.delivered) == (7, 0, 5)
    finally:
        subscriber.stop()
        broker.stop()


def test_events_published_before_the_broker_exists_are_delivered(tmp_path, sinks):
    broker = MosquittoBroker(tmp_path / "broker", persistence=True).start()
    subscriber = Subscriber(broker, [f"{PREFIX}/events"], persistent=True, client_id="late-broker").start()
    try:
        broker.stop()
        sink = sinks(mqtt_config(broker))
        sink.start()
        for sequence in range(1, 4):
            publish(sink, make_event(sequence))
        time.sleep(0.5)  # a few failed reconnect attempts
        broker.start()
        order, _ = first_sequences(subscriber.wait_for(f"{PREFIX}/events", 3, timeout=20))
        assert order == [1, 2, 3]
    finally:
        subscriber.stop()
        broker.stop()


# --- TLS and credentials ---------------------------------------------------------------------


@pytest.fixture
def tls_broker(tmp_path, pki):
    users = {"edge": "correct horse battery", "ha": "ha-secret"}
    with MosquittoBroker(tmp_path / "tls", users=users, tls=(pki.server_cert, pki.server_key, pki.ca_file)) as b:
        yield b


def write_password(tmp_path: Path, secret: str) -> Path:
    path = tmp_path / "mqtt_password"
    path.write_text(secret + "\n")  # editors add the newline; read_secret strips it
    path.chmod(0o600)
    return path


def test_tls_and_password_file_connect_with_hostname_checked(tls_broker, pki, sinks, tmp_path, caplog):
    config = mqtt_config(
        tls_broker,
        host="localhost",
        tls=True,
        ca_file=pki.ca_file,
        username="edge",
        password_file=write_password(tmp_path, "correct horse battery"),
    )
    with Subscriber(tls_broker, [f"{PREFIX}/#"], username="ha", password="ha-secret", ca_file=pki.ca_file) as live:
        sink = sinks(config)
        with caplog.at_level(logging.DEBUG):
            sink.start()
            publish(sink, make_event(1))
            live.wait_for_payload(f"{PREFIX}/status", STATUS_ONLINE.encode())
            assert json.loads(live.wait_for(f"{PREFIX}/events")[0].payload)["sequence"] == 1
    assert "correct horse battery" not in caplog.text


@pytest.mark.parametrize("protocol", [5, 4], ids=["mqtt5", "mqtt311"])
@pytest.mark.parametrize("username, password", [(None, None), ("edge", "wrong"), ("nobody", "x")])
def test_clients_without_valid_credentials_are_refused(tls_broker, pki, username, password, protocol):
    reason = try_connect(tls_broker, username, password, ca_file=pki.ca_file, protocol=protocol)
    assert reason.is_failure and reason.value in AUTH_REFUSALS, str(reason)
    assert try_connect(tls_broker, "edge", "correct horse battery", ca_file=pki.ca_file, protocol=protocol) == 0


def test_sink_with_wrong_password_reports_the_refusal(tls_broker, pki, sinks, tmp_path, caplog):
    config = mqtt_config(
        tls_broker,
        tls=True,
        ca_file=pki.ca_file,
        username="edge",
        password_file=write_password(tmp_path, "not-the-password"),
    )
    sink = sinks(config)
    with caplog.at_level(logging.ERROR, logger="test.mqtt"):
        sink.start()
        publish(sink, make_event(1))
        deadline = time.monotonic() + 10
        while "refused" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.02)
    assert "Not authorized" in sink.status["last_error"] or "password" in sink.status["last_error"]
    assert "check mqtt.username and mqtt.password_file" in caplog.text
    assert "not-the-password" not in caplog.text
    assert sink.outbox.stats.depth == 1 and not sink.status["connected"]


def test_wrong_ca_is_one_clear_error(tls_broker, pki, sinks):
    sink = sinks(mqtt_config(tls_broker, tls=True, ca_file=pki.other_ca_file, username="edge"))
    with pytest.raises(MqttError) as error:
        sink.start()
    message = str(error.value)
    assert "\n" not in message and "mqtt.ca_file" in message and "certificate verify failed" in message.lower()


def test_hostname_mismatch_is_refused_unless_tls_insecure(tmp_path, pki, sinks):
    users = {"edge": "pw"}
    tls = (pki.wrong_name_cert, pki.wrong_name_key, pki.ca_file)
    with MosquittoBroker(tmp_path / "wrong-name", users=users, tls=tls) as broker:
        password = write_password(tmp_path, "pw")
        strict = sinks(mqtt_config(broker, tls=True, ca_file=pki.ca_file, username="edge", password_file=password))
        with pytest.raises(MqttError) as error:
            strict.start()
        assert "mismatch" in str(error.value).lower() or "hostname" in str(error.value).lower()
        insecure = sinks(
            mqtt_config(
                broker,
                tls=True,
                ca_file=pki.ca_file,
                username="edge",
                password_file=password,
                tls_insecure=True,
                client_id="insecure",
            )
        )
        insecure.start()
        wait_connected(insecure)


@pytest.mark.parametrize("key", ["ca_file", "cert_file", "password_file"])
def test_missing_files_name_their_config_key(broker, sinks, tmp_path, key):
    missing = tmp_path / "nope.pem"
    overrides = {"tls": key != "password_file", key: missing}
    if key == "cert_file":
        overrides["key_file"] = missing
    if key == "password_file":
        overrides["username"] = "edge"
    with pytest.raises(ConfigError) as error:  # files are read when the sink is made
        sinks(mqtt_config(broker, **overrides))
    assert f"mqtt.{key}" in str(error.value) and str(missing) in str(error.value)


def test_mqtt_311_is_selectable(broker, sinks):
    with Subscriber(broker, [f"{PREFIX}/#"]) as live:
        sink = sinks(mqtt_config(broker, protocol="3.1.1"))
        sink.start()
        publish(sink, make_event(1))
        live.wait_for_payload(f"{PREFIX}/status", STATUS_ONLINE.encode())
        assert json.loads(live.wait_for(f"{PREFIX}/events")[0].payload)["sequence"] == 1
        sink.close(2.0)
        live.wait_for_payload(f"{PREFIX}/status", STATUS_STOPPED.encode())
