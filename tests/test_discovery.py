"""Home Assistant MQTT discovery: payload checked against HA's documented required fields,
and its publication (retained, re-sent when HA says "online") through a real broker.

The required-field lists below are written from Home Assistant's documentation:
* https://www.home-assistant.io/integrations/mqtt/#device-discovery-payload
  "The shared options at the root level of the JSON message must include: device mapping
  (abbreviated as dev), origin mapping (abbreviated as o)"; "A platform (p) config option is
  required for each component config ... Also required is a unique_id for entity-based
  components"; "must have at least one component specific config option".
* https://www.home-assistant.io/integrations/mqtt/#adding-information-about-the-origin-of-a-discovery-message
  origin "name: ... (Required)".
* The device mapping: "At least one of identifiers or connections must be present to
  identify the device" (e.g. https://www.home-assistant.io/integrations/image.mqtt/).
* Per platform: binary_sensor.mqtt and sensor.mqtt list ``state_topic`` as required;
  image.mqtt requires exactly one of ``image_topic`` / ``url_topic`` ("required: exclusive").
* The discovery topic: ``<discovery_prefix>/<component>/[<node_id>/]<object_id>/config`` with
  ids of ``[a-zA-Z0-9_-]``; the regex is HA's TOPIC_MATCHER (homeassistant/components/mqtt/discovery.py).
"""

from __future__ import annotations

import json
import logging
import re
import time

import jinja2
import pytest
from broker import MosquittoBroker, Subscriber

from edge import __version__
from edge.config import HomeAssistantConfig, MqttConfig
from edge.mqtt.discovery import (
    CONTROLS,
    CPU_TEMPERATURE,
    ENROLMENT,
    RECOGNITION,
    SNAPSHOT,
    DeviceTopics,
    build_discovery_payload,
    discovery_topic,
    removal_messages,
)
from edge.mqtt.sink import MqttSink, encode_json, encode_state
from edge.scene.events import Event, PresenceState

pytestmark = pytest.mark.integration

DEVICE = "porch_cam-2"
PREFIX = f"edge-face/{DEVICE}"
TOPICS = DeviceTopics.under(PREFIX)

# Documented abbreviations used by our payload (the "Supported abbreviations" tables).
ABBREVIATIONS = {"dev": "device", "o": "origin", "cmps": "components", "p": "platform"}
DEVICE_ABBREVIATIONS = {
    "ids": "identifiers",
    "cns": "connections",
    "mf": "manufacturer",
    "mdl": "model",
    "sw": "sw_version",
    "hw": "hw_version",
    "name": "name",
}
ORIGIN_ABBREVIATIONS = {"sw": "sw_version", "url": "support_url", "name": "name"}
REQUIRED_ROOT = {"device", "origin", "components"}
REQUIRED_ORIGIN = {"name"}
REQUIRED_COMPONENT = {"platform", "unique_id"}  # unique_id: every platform we use is an entity
REQUIRED_BY_PLATFORM = {
    "binary_sensor": {"state_topic"},
    "sensor": {"state_topic"},
    # text.mqtt, select.mqtt and button.mqtt: "command_topic ... required"; select: "options ... required".
    "text": {"command_topic"},
    "select": {"command_topic", "options"},
    "button": {"command_topic"},
}
EXCLUSIVE_BY_PLATFORM = {"image": {"image_topic", "url_topic"}}
HA_TOPIC_MATCHER = re.compile(
    r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config"
)


def expand(mapping: dict, table: dict) -> dict:
    return {table.get(key, key): value for key, value in mapping.items()}


def expanded(payload: dict) -> dict:
    """The payload as HA reads it after replacing the documented abbreviations."""
    root = expand(payload, ABBREVIATIONS)
    root["device"] = expand(root["device"], DEVICE_ABBREVIATIONS)
    root["origin"] = expand(root["origin"], ORIGIN_ABBREVIATIONS)
    root["components"] = {cid: expand(c, ABBREVIATIONS) for cid, c in root["components"].items()}
    return root


def assert_meets_documented_requirements(payload: dict) -> None:
    json.dumps(payload)  # must be plain JSON
    root = expanded(payload)
    assert set(root) >= REQUIRED_ROOT, REQUIRED_ROOT - set(root)
    assert set(root["origin"]) >= REQUIRED_ORIGIN
    assert root["device"].get("identifiers") or root["device"].get("connections")
    assert all(isinstance(i, str) for i in root["device"]["identifiers"])
    unique_ids = []
    for component_id, component in root["components"].items():
        assert re.fullmatch(r"[a-zA-Z0-9_-]+", component_id)
        if set(component) == {"platform"}:  # HA's documented removal of a component
            continue
        assert set(component) >= REQUIRED_COMPONENT, (component_id, REQUIRED_COMPONENT - set(component))
        platform = component["platform"]
        assert set(component) - {"platform"}, f"{component_id}: needs a component specific option"
        assert REQUIRED_BY_PLATFORM.get(platform, set()) <= set(component), component_id
        if platform in EXCLUSIVE_BY_PLATFORM:
            assert len(EXCLUSIVE_BY_PLATFORM[platform] & set(component)) == 1, component_id
        unique_ids.append(component["unique_id"])
    assert len(unique_ids) == len(set(unique_ids))


ALL_FEATURES = frozenset({SNAPSHOT, CONTROLS, CPU_TEMPERATURE, RECOGNITION, ENROLMENT})


def render(template: str, payload: bytes):
    """Render an HA value template as HA does (Jinja2; ``value`` the text, ``value_json`` the JSON)."""
    environment = jinja2.Environment()
    environment.filters["tojson"] = json.dumps
    text = payload.decode()
    return environment.from_string(template).render(value=text, value_json=json.loads(text))


def test_discovery_payload_has_every_documented_required_field():
    payload = build_discovery_payload(DEVICE, TOPICS, sw_version=__version__, model_id="m", features=ALL_FEATURES)
    assert_meets_documented_requirements(payload)
    components = expanded(payload)["components"]
    assert {cid: c["platform"] for cid, c in components.items()} == {
        "face_present": "binary_sensor",
        "face_count": "sensor",
        "last_seen": "sensor",
        "face_event": "event",
        "snapshot": "image",
        "detection": "switch",
        "snapshots": "switch",
        "score_threshold": "number",
        "reannounce": "button",
        "last_person": "sensor",
        "enrol_name": "text",
        "enrol": "button",
        "forget": "button",
        "enrolment": "sensor",
        "forget_name": "select",
        "fps": "sensor",
        "inference_ms": "sensor",
        "dropped_frames": "sensor",
        "source_state": "sensor",
        "outbox_depth": "sensor",
        "cpu_temperature": "sensor",
        "uptime": "sensor",
    }
    assert components["face_present"]["device_class"] == "occupancy"
    assert components["face_present"]["state_topic"] == TOPICS.state
    assert (components["face_count"]["state_class"], components["face_count"]["unit_of_measurement"]) == (
        "measurement",
        "faces",
    )
    assert components["last_seen"]["device_class"] == "timestamp"
    assert components["face_event"]["event_types"] == [
        "face_detected",
        "count_changed",
        "face_cleared",
        "person_arrived",
        "person_left",
    ]
    assert components["snapshot"]["image_topic"] == TOPICS.snapshot
    assert components["cpu_temperature"]["unit_of_measurement"] == "°C"
    diagnostics = {cid for cid, c in components.items() if c.get("entity_category") == "diagnostic"}
    assert diagnostics == {
        "fps",
        "inference_ms",
        "dropped_frames",
        "source_state",
        "outbox_depth",
        "cpu_temperature",
        "uptime",
        "enrolment",
    }
    for control in ("detection", "snapshots", "score_threshold", "reannounce"):
        assert components[control]["command_topic"] == f"{PREFIX}/set/{control}"
        assert components[control]["entity_category"] == "config"
    assert payload["availability_topic"] == TOPICS.status
    assert (payload["payload_available"], payload["payload_not_available"]) == ("online", "offline")


def test_qos_sits_in_every_component_because_home_assistant_drops_it_at_the_top():
    payload = build_discovery_payload(DEVICE, TOPICS, sw_version="1", model_id="m", features=ALL_FEATURES, qos=1)
    assert "qos" not in payload
    assert all(component["qos"] == 1 for component in payload["cmps"].values())


def test_features_that_are_off_are_announced_as_removed_components():
    payload = build_discovery_payload(DEVICE, TOPICS, sw_version="1", model_id="m", device_name="Porch")
    assert_meets_documented_requirements(payload)
    removed = {cid: c for cid, c in payload["cmps"].items() if set(c) == {"p"}}
    assert removed == {
        "snapshot": {"p": "image"},
        "detection": {"p": "switch"},
        "snapshots": {"p": "switch"},
        "score_threshold": {"p": "number"},
        "reannounce": {"p": "button"},
        "cpu_temperature": {"p": "sensor"},
        "last_person": {"p": "sensor"},
        "enrol_name": {"p": "text"},
        "enrol": {"p": "button"},
        "forget": {"p": "button"},
        "enrolment": {"p": "sensor"},
        "forget_name": {"p": "select"},
    }
    assert payload["dev"]["name"] == "Porch"
    other = build_discovery_payload("other", TOPICS, sw_version="1", model_id="m")
    ours = {c.get("unique_id") for c in payload["cmps"].values()} - {None} | set(payload["dev"]["identifiers"])
    theirs = {c.get("unique_id") for c in other["cmps"].values()} - {None} | set(other["dev"]["identifiers"])
    assert not ours & theirs


def test_templates_render_the_payloads_the_daemon_publishes():
    components = build_discovery_payload(DEVICE, TOPICS, "1", "m", features=ALL_FEATURES)["cmps"]
    seen = encode_state(PresenceState(True, 2, "2026-02-01T10:00:00.250Z"))
    never = encode_state(PresenceState(False, 0, None, detection="paused"))
    assert render(components["face_present"]["value_template"], seen) == "ON"
    assert render(components["face_present"]["value_template"], never) == "OFF"
    assert json.loads(render(components["face_present"]["json_attributes_template"], never)) == {"detection": "paused"}
    assert render(components["face_count"]["value_template"], seen) == "2"
    assert render(components["last_seen"]["value_template"], seen) == "2026-02-01T10:00:00.250Z"
    assert render(components["last_seen"]["value_template"], never) == "None"  # HA's "no value"
    event = Event("count_changed", DEVICE, "b", 7, "t", 3, (), 640, 480, "m")
    assert json.loads(render(components["face_event"]["value_template"], encode_json(event.to_dict()))) == {
        "event_type": "count_changed",
        "count": 3,
        "sequence": 7,
        "person": None,
    }
    arrived = Event("person_arrived", DEVICE, "b", 8, "t", 1, (), 640, 480, "m", person="O'Brien", track_id=4)
    assert json.loads(render(components["face_event"]["value_template"], encode_json(arrived.to_dict()))) == {
        "event_type": "person_arrived",
        "count": 1,
        "sequence": 8,
        "person": "O'Brien",
    }
    controls = encode_json({"detection": "OFF", "snapshots": "ON", "score_threshold": 0.55})
    assert render(components["detection"]["value_template"], controls) == "OFF"
    assert render(components["snapshots"]["value_template"], controls) == "ON"
    assert render(components["score_threshold"]["value_template"], controls) == "0.55"


def test_each_zone_has_its_presence_and_count_entities_and_a_removed_zone_is_retired():
    payload = build_discovery_payload(DEVICE, TOPICS, "1", "m", zones=("door", "sofa"), retired_zones=("hall",))
    assert_meets_documented_requirements(payload)
    components = payload["cmps"]
    for zone in ("door", "sofa"):
        present, count = components[f"zone_{zone}_present"], components[f"zone_{zone}_count"]
        assert (present["p"], present["device_class"], present["state_topic"], present["qos"]) == (
            "binary_sensor",
            "occupancy",
            TOPICS.state,
            1,
        )
        assert (count["p"], count["unit_of_measurement"], count["state_topic"]) == ("sensor", "faces", TOPICS.state)
    assert components["zone_hall_present"] == {"p": "binary_sensor"}
    assert components["zone_hall_count"] == {"p": "sensor"}
    door, nobody = PresenceState(True, 1, "t"), PresenceState(False, 0, None)
    state = encode_state(PresenceState(True, 1, "t", zones={"door": door, "sofa": nobody}))
    assert render(components["zone_door_present"]["value_template"], state) == "ON"
    assert render(components["zone_door_count"]["value_template"], state) == "1"
    assert render(components["zone_sofa_present"]["value_template"], state) == "OFF"
    assert render(components["zone_sofa_count"]["value_template"], state) == "0"
    before_zones = encode_state(PresenceState(False, 0, None))  # a state without this zone yet
    assert render(components["zone_door_present"]["value_template"], before_zones) == "OFF"


def test_removal_messages_clear_the_device_and_every_retained_topic():
    messages = removal_messages("ha-test", DEVICE, TOPICS)
    assert messages == [
        (f"ha-test/device/{DEVICE}/config", b""),
        (TOPICS.status, b""),
        (TOPICS.state, b""),
        (TOPICS.snapshot, b""),
        (TOPICS.health, b""),
        (TOPICS.controls, b""),
        *(
            (TOPICS.command(control), b"")
            for control in (
                "detection",
                "snapshots",
                "score_threshold",
                "reannounce",
                "enrol_name",
                "enrol",
                "forget",
                "forget_name",
            )
        ),
    ]


def test_discovery_topic_matches_home_assistants_topic_pattern():
    topic = discovery_topic("homeassistant", DEVICE)
    assert topic == f"homeassistant/device/{DEVICE}/config"
    match = HA_TOPIC_MATCHER.fullmatch(topic.removeprefix("homeassistant/"))
    assert match and match["component"] == "device" and match["object_id"] == DEVICE


# --- through the broker ----------------------------------------------------------------------


@pytest.fixture
def broker(tmp_path):
    with MosquittoBroker(tmp_path / "broker") as running:
        yield running


def start_sink(broker, ha: HomeAssistantConfig, snapshot: bool = False) -> MqttSink:
    config = MqttConfig(
        host=broker.host, port=broker.port, keepalive=5, reconnect_min_delay=0.1, reconnect_max_delay=0.5
    )
    sink = MqttSink(config, ha, DEVICE, "ulfd-slim-320-int8", snapshot, logging.getLogger("test.discovery"))
    sink.start()
    return sink


def test_discovery_is_retained_and_republished_when_home_assistant_comes_online(broker):
    ha = HomeAssistantConfig(discovery_prefix="ha-test", device_name="Porch camera")
    topic = f"ha-test/device/{DEVICE}/config"
    with Subscriber(broker, [topic]) as live:
        sink = start_sink(broker, ha, snapshot=True)
        try:
            payload = json.loads(live.wait_for(topic)[0].payload)
            assert_meets_documented_requirements(payload)
            assert payload["dev"]["name"] == "Porch camera" and "snapshot" in payload["cmps"]
            with Subscriber(broker, [topic]) as late:  # joins later: gets the retained copy
                message = late.wait_for(topic)[0]
                assert message.retain and message.qos == 1 and json.loads(message.payload) == payload

            live.client.publish("ha-test/status", "offline").wait_for_publish(5)
            time.sleep(0.5)
            assert len(live.on(topic)) == 1  # "offline" is no reason to re-announce
            live.client.publish("ha-test/status", "online").wait_for_publish(5)
            again = live.wait_for(topic, 2)[1]
            assert json.loads(again.payload) == payload
        finally:
            sink.close(2.0)


def test_discovery_disabled_removes_a_device_announced_before(broker):
    topic = f"homeassistant/device/{DEVICE}/config"
    announced = start_sink(broker, HomeAssistantConfig())
    with Subscriber(broker, [topic]) as before:
        assert json.loads(before.wait_for(topic)[0].payload)["cmps"]
    announced.close(2.0)
    with Subscriber(broker, [topic]) as live:
        sink = start_sink(broker, HomeAssistantConfig(enabled=False))
        try:
            live.wait_for_payload(topic, b"")  # the empty retained config: HA deletes the device
            with Subscriber(broker, [topic]) as late:
                late.client.publish("homeassistant/status", "online").wait_for_publish(5)
                time.sleep(0.5)
                assert late.on(topic) == []  # nothing retained, nothing re-announced
            assert [m.payload for m in live.on(topic)][-1] == b""
        finally:
            sink.close(2.0)
