"""Recognition in Home Assistant: one presence sensor per enrolled person, "Last person",
enrolment and forgetting from HA, as discovery data (rendered with Jinja as HA renders it)
and through a real Mosquitto (what stays retained when a person is enrolled or forgotten,
also across a restart with the gallery changed meanwhile), and the recognition commands at
the gate, sent as an attacker would.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import signal
import time

import jinja2
import jinja2.sandbox
import pytest
from broker import MosquittoBroker, Subscriber

from edge.config import HomeAssistantConfig, MqttConfig
from edge.mqtt.command_intake import CommandMessage, CommandRefused, admit
from edge.mqtt.controls import (
    ENROL,
    ENROL_NAME,
    FORGET_NAME,
    MAX_NAME_COMMAND_BYTES,
    Command,
    ControlError,
    Overrides,
    load_overrides,
    parse_command,
    state_path,
)
from edge.mqtt.discovery import (
    CONTROLS,
    ENROLMENT,
    MAX_NAME_CHARS,
    RECOGNITION,
    DeviceTopics,
    build_discovery_payload,
    discovery_topic,
    jinja_string,
    person_component,
    removal_messages,
    stale_person_components,
)
from edge.mqtt.sink import MqttSink, encode_json
from edge.recognize.gallery import NAME_PATTERN, GalleryError, check_name

pytestmark = pytest.mark.integration

DEVICE = "porch"
PREFIX = f"edge-face/{DEVICE}"
TOPICS = DeviceTopics.under(PREFIX)
CONFIG_TOPIC = discovery_topic("homeassistant", DEVICE)
# Names the gallery allows that a template or a topic would choke on if pasted in.
AWKWARD_NAMES = ("O'Brien", "Zoë", "Zoe", "Anne-Marie d'Arc", "José María", "李小龍", "Ørjan 2", "a" * MAX_NAME_CHARS)
RECOGNITION_KEYS = {"last_person", "enrol_name", "enrol", "forget_name", "forget", "enrolment"}


def render(template: str, payload: bytes) -> str:
    """Render an HA value template as HA does: Jinja's immutable sandbox, ``value_json``."""
    environment = jinja2.sandbox.ImmutableSandboxedEnvironment()
    environment.filters["tojson"] = json.dumps
    text = payload.decode()
    return environment.from_string(template).render(value=text, value_json=json.loads(text))


def state_with(people: dict[str, dict]) -> bytes:
    return encode_json({"present": True, "count": 1, "last_seen": "t", "people": people, "last_person": None})


# --- names: labels, never ids ---------------------------------------------------------------


def test_a_persons_component_id_is_safe_stable_and_distinct_for_every_allowed_name():
    ids = {}
    for name in AWKWARD_NAMES:
        assert NAME_PATTERN.fullmatch(name)
        component = person_component(name)
        assert re.fullmatch(r"person_[a-z0-9_]+", component), component
        assert component == person_component(name)  # stable across runs: HA keeps the entity
        ids[component] = name
    assert len(ids) == len(AWKWARD_NAMES)  # "Zoë" and "Zoe" share a slug, not an id
    assert person_component("O'Brien").startswith("person_o_brien_")
    assert person_component("李小龍").startswith("person_") and len(person_component("李小龍")) < 40


def test_the_name_limit_of_home_assistants_text_entity_is_the_gallerys():
    check_name("a" * MAX_NAME_CHARS)
    with pytest.raises(GalleryError):
        check_name("a" * (MAX_NAME_CHARS + 1))


@pytest.mark.parametrize("text", ["O'Brien", "a}}{{ 7*7 }}", "x') or ('1", "back\\slash", "Zoë", '"; {% raw %}'])
def test_a_jinja_string_literal_reads_back_as_the_text_whatever_it_holds(text):
    literal = jinja_string(text)
    assert re.fullmatch(r"'[A-Za-z0-9 \\]*'", literal), literal
    assert render("{{ " + literal + " }}", b"{}") == text


# --- discovery as data ------------------------------------------------------------------------


def test_recognition_off_lists_its_entities_as_removed_and_no_person():
    components = build_discovery_payload(DEVICE, TOPICS, "1", "m", features=frozenset({CONTROLS}))["cmps"]
    assert {key: components[key] for key in RECOGNITION_KEYS} == {
        "last_person": {"p": "sensor"},
        "enrol_name": {"p": "text"},
        "enrol": {"p": "button"},
        "forget_name": {"p": "select"},
        "forget": {"p": "button"},
        "enrolment": {"p": "sensor"},
    }
    assert not [key for key in components if key.startswith("person_")]


def test_recognition_on_gives_each_person_a_sensor_and_enrolment_from_home_assistant():
    people = ("Alice", "O'Brien")
    features = frozenset({CONTROLS, RECOGNITION, ENROLMENT})
    payload = build_discovery_payload(DEVICE, TOPICS, "1", "m", features=features, people=people)
    components = payload["cmps"]
    for name in people:
        sensor = components[person_component(name)]
        assert (sensor["p"], sensor["name"], sensor["device_class"], sensor["state_topic"]) == (
            "binary_sensor",
            name,
            "occupancy",
            TOPICS.state,
        )
        assert sensor["unique_id"] == f"edge-face-{DEVICE}-{person_component(name)}"
        assert f".get({jinja_string(name)}, {{}})" in sensor["value_template"]  # escaped, never pasted
    assert "O'Brien" not in components[person_component("O'Brien")]["value_template"]
    text, select = components["enrol_name"], components["forget_name"]
    assert (text["p"], text["command_topic"], text["min"], text["max"]) == (
        "text",
        f"{PREFIX}/set/enrol_name",
        0,
        MAX_NAME_CHARS,
    )
    assert (select["p"], select["options"], select["command_topic"]) == (
        "select",
        ["Alice", "O'Brien"],
        f"{PREFIX}/set/forget_name",
    )
    for button in ("enrol", "forget"):
        assert (components[button]["p"], components[button]["payload_press"]) == ("button", "PRESS")
        assert components[button]["command_topic"] == f"{PREFIX}/set/{button}"
    assert components["enrolment"]["entity_category"] == "diagnostic"
    # Every topic is one of the device's: no name reached a topic.
    topics = {value for c in components.values() for key, value in c.items() if key.endswith("topic")}
    assert all(topic.startswith(PREFIX + "/") for topic in topics), topics


def test_controls_off_keeps_the_person_sensors_but_not_enrolment():
    features = frozenset({RECOGNITION})
    components = build_discovery_payload(DEVICE, TOPICS, "1", "m", features=features, people=("Alice",))["cmps"]
    assert components[person_component("Alice")]["p"] == "binary_sensor"
    assert components["last_person"]["state_topic"] == TOPICS.state
    assert all(components[key] == {"p": components[key]["p"]} for key in RECOGNITION_KEYS - {"last_person"})


def test_a_forgotten_person_is_listed_as_removed():
    gone = person_component("Bob")
    features = frozenset({RECOGNITION})
    components = build_discovery_payload(
        DEVICE, TOPICS, "1", "m", features=features, people=("Alice",), retired_people=(gone,)
    )["cmps"]
    assert components[gone] == {"p": "binary_sensor"}


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_person_templates_render_the_state_the_daemon_publishes(name):
    features = frozenset({RECOGNITION, CONTROLS, ENROLMENT})
    payload = build_discovery_payload(DEVICE, TOPICS, "1", "m", features=features, people=(name, "Other"))
    components = payload["cmps"]
    sensor = components[person_component(name)]
    present = state_with({name: {"present": True, "last_seen": "2026-12-07T11:00:00Z"}, "Other": {"present": False}})
    away = state_with({name: {"present": False, "last_seen": None}})
    assert render(sensor["value_template"], present) == "ON"
    assert render(sensor["value_template"], away) == "OFF"
    assert render(sensor["value_template"], state_with({})) == "OFF"  # enrolled a moment ago
    assert render(sensor["value_template"], encode_json({"present": False})) == "OFF"  # recognition just on
    assert json.loads(render(sensor["json_attributes_template"], present)) == {"last_seen": "2026-12-07T11:00:00Z"}
    last = components["last_person"]["value_template"]
    assert render(last, encode_json({"last_person": name})) == name
    assert render(last, encode_json({"last_person": None})) == "None"  # HA's "no value"
    controls = encode_json({"enrol_name": name, "forget_name": name, "enrolment": f"enrolled {name}"})
    assert render(components["enrol_name"]["value_template"], controls) == name
    assert render(components["forget_name"]["value_template"], controls) == name
    nothing = encode_json({"detection": "ON", "enrol_name": "", "forget_name": None, "enrolment": None})
    assert render(components["enrol_name"]["value_template"], nothing) == ""
    assert render(components["forget_name"]["value_template"], nothing) == "None"  # no option chosen
    forgotten = encode_json({"forget_name": "Someone forgotten"})  # retained a moment longer than the option
    assert render(components["forget_name"]["value_template"], forgotten) == "None"
    assert render(components["enrolment"]["value_template"], nothing) == "None"


@pytest.mark.parametrize(
    "retained",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"cmps": [1]}',
        b'{"cmps": {"person_../../x": {}, "person_": {}, "face_count": {"p": "sensor"}, "PERSON_A": {}}}',
        b"[" * 100_000,
    ],
)
def test_a_hostile_retained_config_names_no_stale_person(retained):
    assert stale_person_components(retained, ()) == ()


def test_the_stale_people_of_a_retained_config_are_those_not_enrolled_now():
    alice, bob = person_component("Alice"), person_component("Bob")
    config = encode_json({"cmps": {alice: {"p": "binary_sensor"}, bob: {"p": "binary_sensor"}, "fps": {}}})
    assert stale_person_components(config, {alice}) == (bob,)


def test_forget_clears_the_recognition_command_topics_too():
    cleared = {topic for topic, payload in removal_messages("homeassistant", DEVICE, TOPICS) if payload == b""}
    assert {TOPICS.command(c) for c in ("enrol_name", "enrol", "forget_name", "forget")} <= cleared


# --- commands at the gate ---------------------------------------------------------------------


def message(control: str, payload: bytes, retained: bool = False) -> CommandMessage:
    return CommandMessage(f"{PREFIX}/set/{control}", control, payload, retained)


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_a_name_the_gallery_allows_passes_the_gate(name):
    assert admit(message(ENROL_NAME, name.encode())) == Command(ENROL_NAME, name)
    assert admit(message(FORGET_NAME, name.encode())) == Command(FORGET_NAME, name)


def test_the_longest_name_in_four_byte_characters_fits_the_size_limit():
    name = "\U0001d49c" * MAX_NAME_CHARS  # MATHEMATICAL SCRIPT CAPITAL A: 4 UTF-8 bytes
    assert len(name.encode()) == MAX_NAME_COMMAND_BYTES and check_name(name)
    assert admit(message(ENROL_NAME, name.encode())).value == name


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"Alice\nINFO forged log line", "not allowed"),
        (b"../../etc", "not allowed"),
        (b"edge-face/+/#", "not allowed"),
        (b"{{ 7*7 }}", "not allowed"),
        (b"_hidden", "not allowed"),
        (b"Al\x00ice", "not allowed"),
        (b"\xff\xfe", "not UTF-8"),
        (b"a" * (MAX_NAME_CHARS + 1), "not allowed"),
        (b"a" * (MAX_NAME_COMMAND_BYTES + 1), "byte payload"),
        (b"", "empty payload"),
    ],
)
def test_a_name_the_gallery_refuses_is_refused_at_the_gate(payload, reason):
    with pytest.raises(CommandRefused, match=reason):
        admit(message(ENROL_NAME, payload))


def test_a_retained_press_or_name_never_becomes_a_command():
    with pytest.raises(CommandRefused, match="retained"):
        admit(message(ENROL, b"PRESS", retained=True))
    with pytest.raises(CommandRefused, match="retained"):
        admit(message(ENROL_NAME, b"Alice", retained=True))


def test_the_buttons_take_only_press():
    assert admit(message(ENROL, b"PRESS")) == Command(ENROL, None)
    with pytest.raises(CommandRefused, match="not allowed"):
        admit(message(ENROL, b"Alice"))
    with pytest.raises(CommandRefused, match="byte payload"):
        admit(message(ENROL, b"P" * 100))  # a button's limit is not a name's


def test_recognition_commands_are_requests_never_stored_overrides(tmp_path):
    overrides = Overrides(detection=True)
    assert overrides.with_command(parse_command(ENROL_NAME, b"Alice")) == overrides
    state_path(tmp_path).write_text(json.dumps({"enrol_name": "Mallory", "enrol": True, "snapshots": True}))
    log = logging.getLogger("test.people")
    assert load_overrides(tmp_path, log) == Overrides(snapshots=True)
    with pytest.raises(ControlError):
        parse_command("enrol_as", b"Alice")  # not one of ours


# --- through the broker ----------------------------------------------------------------------


@pytest.fixture
def broker(tmp_path):
    with MosquittoBroker(tmp_path / "broker") as running:
        yield running


def start_sink(broker, people: tuple[str, ...] | None, controls: bool = True) -> MqttSink:
    config = MqttConfig(
        host=broker.host, port=broker.port, keepalive=5, reconnect_min_delay=0.1, reconnect_max_delay=0.5
    )
    sink = MqttSink(config, HomeAssistantConfig(), DEVICE, "m", False, logging.getLogger("test.people"))
    if controls:
        sink.set_command_handler(lambda message: None)
    sink.set_people(people)
    sink.start()
    return sink


def retained_config(broker, timeout: float = 10.0) -> dict:
    """The discovery config the broker keeps (what HA reads when it starts), once there is one."""
    deadline = time.monotonic() + timeout
    while True:
        with Subscriber(broker, [CONFIG_TOPIC]) as late:
            with contextlib.suppress(TimeoutError):
                late.wait_until(lambda: any(m.retain for m in late.messages), 0.5, "a retained config")
            kept = [m for m in late.on(CONFIG_TOPIC) if m.retain]
        if kept:
            return json.loads(kept[0].payload)
        assert time.monotonic() < deadline, "no retained discovery config"


def persons(config: dict) -> dict[str, dict]:
    return {key: c for key, c in config["cmps"].items() if key.startswith("person_")}


def test_enrolling_and_forgetting_adds_and_removes_the_retained_person_sensor(broker):
    alice, obrien = person_component("Alice"), person_component("O'Brien")
    with Subscriber(broker, [CONFIG_TOPIC]) as live:
        sink = start_sink(broker, ("Alice",))
        try:
            first = json.loads(live.wait_for(CONFIG_TOPIC)[0].payload)
            assert set(persons(first)) == {alice} and first["cmps"]["forget_name"]["options"] == ["Alice"]
            sink.set_people(("Alice", "O'Brien"))  # enrolled from HA
            enrolled = json.loads(live.wait_for(CONFIG_TOPIC, 2)[1].payload)
            assert persons(enrolled)[obrien]["name"] == "O'Brien"
            assert enrolled["cmps"]["forget_name"]["options"] == ["Alice", "O'Brien"]
            assert retained_config(broker) == enrolled
            sink.set_people(("O'Brien",))  # Alice forgotten
            forgotten = json.loads(live.wait_for(CONFIG_TOPIC, 3)[2].payload)
            assert forgotten["cmps"][alice] == {"p": "binary_sensor"}  # HA removes the entity
            assert forgotten["cmps"]["forget_name"]["options"] == ["O'Brien"]
            assert retained_config(broker) == forgotten
            sink.set_people(("O'Brien",))  # the same people: nothing new to announce
            sink.set_people(None)  # recognition turned off by a reload
            off = json.loads(live.wait_for(CONFIG_TOPIC, 4)[3].payload)
            assert persons(off) == {alice: {"p": "binary_sensor"}, obrien: {"p": "binary_sensor"}}
            assert off["cmps"]["last_person"] == {"p": "sensor"}
        finally:
            sink.close(2.0)
        assert len(live.on(CONFIG_TOPIC)) == 4


def test_a_person_removed_while_the_daemon_was_stopped_is_removed_at_the_next_start(broker):
    alice, bob = person_component("Alice"), person_component("Bob")
    before = start_sink(broker, ("Alice", "Bob"))
    assert set(persons(retained_config(broker))) == {alice, bob}
    before.close(2.0)
    # `edge-face people --remove Bob` while stopped: the next start announces Alice only,
    # and removes Bob's sensor, which it learns of from the config the broker kept.
    after = start_sink(broker, ("Alice",))
    try:
        with Subscriber(broker, [CONFIG_TOPIC]) as live:
            live.wait_until(
                lambda: any(json.loads(m.payload)["cmps"].get(bob) == {"p": "binary_sensor"} for m in live.messages),
                10,
                "Bob's sensor announced as removed",
            )
        assert persons(retained_config(broker))[alice]["p"] == "binary_sensor"
    finally:
        after.close(2.0)
    # Recognition off at the next start: every person sensor goes.
    off = start_sink(broker, None)
    try:
        with Subscriber(broker, [CONFIG_TOPIC]) as live:
            live.wait_until(
                lambda: any(persons(json.loads(m.payload)).get(alice) == {"p": "binary_sensor"} for m in live.messages),
                10,
                "Alice's sensor announced as removed",
            )
    finally:
        off.close(2.0)


def test_without_controls_no_enrolment_entity_is_announced(broker):
    sink = start_sink(broker, ("Alice",), controls=False)
    try:
        components = retained_config(broker)["cmps"]
        assert components[person_component("Alice")]["p"] == "binary_sensor"
        assert components["enrol"] == {"p": "button"} and components["enrol_name"] == {"p": "text"}
    finally:
        sink.close(2.0)


# --- the choices held for the daemon, against the real recognition stage -----------------------


@pytest.fixture(scope="module")
def describer():
    from edge.recognize.describe import FaceDescriber

    return FaceDescriber(num_threads=1)


def test_enrolment_from_home_assistant_needs_a_name_and_one_face_and_forgets_only_the_enrolled(
    tmp_path, describer, detector, identity_dir, caplog
):
    from test_recognition_stage import Scene, frame_with

    from edge.mqtt.controls import FORGET
    from edge.mqtt.enrolment import Enrolment
    from edge.recognize.gallery import load_gallery
    from edge.recognize.settings import RecognitionOptions
    from edge.recognize.stage import RecognitionStage

    gallery = tmp_path / "gallery.json"
    stage = RecognitionStage(RecognitionOptions(enabled=True), gallery, logging.getLogger("test.rec"), describer)
    enrolment, scene = Enrolment(logging.getLogger("test.enrolment")), Scene(stage, detector)
    chips = sorted((identity_dir / "johns" / "John_Simm").glob("*.jpg"))
    name = "Renée O'Hara"

    assert not enrolment.handle(Command(ENROL, None), stage)  # a press, no name chosen
    assert enrolment.state() == {
        "enrol_name": "",
        "forget_name": None,
        "enrolment": "enrol refused: no name chosen (set 'Enrol as' first)",
    }
    assert not enrolment.handle(Command(ENROL_NAME, name), stage)
    assert not enrolment.handle(Command(ENROL, None), stage)  # nobody in view
    assert enrolment.state()["enrolment"] == "enrol refused: no face is in view; enrolling takes exactly one"
    assert enrolment.state()["enrol_name"] == name and not gallery.exists()  # kept for the next press

    for chip in chips[:3]:
        scene.show(frame_with([chip]), [1])
    assert enrolment.handle(Command(ENROL, None), stage)  # the people changed
    assert enrolment.state() == {
        "enrol_name": "",  # used: a later press cannot add another face to her
        "forget_name": None,
        "enrolment": f"enrolled {name!r}: 3 view(s) of track 1 added, 3 in all",
    }
    assert stage.people() == (name,) and load_gallery(gallery, stage.describer.model_id, 128).people.keys() == {name}
    assert not enrolment.handle(Command(ENROL, None), stage)  # pressed again: no name

    assert not enrolment.handle(Command(FORGET_NAME, "Bob"), stage)
    assert enrolment.state()["enrolment"] == "forget refused: 'Bob' is not enrolled"
    assert not enrolment.handle(Command(FORGET, None), stage)
    assert enrolment.state()["enrolment"] == "forget refused: no name chosen (choose a 'Person to forget' first)"
    assert stage.people() == (name,)
    assert not enrolment.handle(Command(FORGET_NAME, name), stage)
    assert enrolment.state()["forget_name"] == name
    assert enrolment.handle(Command(FORGET, None), stage)
    assert enrolment.state() == {
        "enrol_name": "",
        "forget_name": None,
        "enrolment": f"forgot {name!r}: 0 enrolled now",
    }
    assert stage.people() == () and load_gallery(gallery, stage.describer.model_id, 128).people == {}
    refusals = [r.getMessage() for r in caplog.records if r.name == "test.enrolment" and r.levelno >= logging.WARNING]
    assert refusals == [
        "enrol refused (from Home Assistant): no name chosen (set 'Enrol as' first)",
        "enrol refused (from Home Assistant): no name chosen (set 'Enrol as' first)",
        "forget refused (from Home Assistant): 'Bob' is not enrolled",
        "forget refused (from Home Assistant): no name chosen (choose a 'Person to forget' first)",
    ]


# --- the real daemon: enrolment over MQTT as Home Assistant sends it ------------------------------


@pytest.fixture
def person_daemon(tmp_path, int8_model_path, identity_dir, project_root, blank):
    """The real daemon (HA and controls on, recognition on) on a looping replay of one
    person's face (3 s) and an empty frame (1 s); yields a function starting it with a broker."""
    from daemon_support import build_scene, write_config
    from PIL import Image
    from test_faults import Daemon

    frames = []
    for index, chip in enumerate(sorted((identity_dir / "johns" / "John_Simm").glob("*.jpg"))[:4]):
        frame = Image.new("RGB", (640, 480), (96, 104, 112))
        frame.paste(Image.open(chip).convert("RGB"), (245, 165))
        frames.append(tmp_path / f"face-{index}.png")
        frame.save(frames[-1])
    scene = build_scene(tmp_path / "scene", blank, [*((face, 3) for face in frames), ("blank", 4)]).folder
    started: list[Daemon] = []

    def start(broker: MosquittoBroker) -> Daemon:
        tables = {
            "device": {"id": DEVICE, "state_dir": tmp_path / "state"},
            "camera": {"source": "replay", "path": scene, "fps": 4.0, "loop": True},
            "detector": {"model": int8_model_path},
            "events": {"debounce_frames": 1, "clear_after_seconds": 0.3},
            "mqtt": {"host": broker.host, "port": broker.port, "keepalive": 5, "reconnect_min_delay": 0.1},
            "recognition": {"enabled": True},
        }
        started.append(Daemon(write_config(tmp_path / "edge-face.toml", tables), project_root))
        return started[-1]

    yield start
    for daemon in started:
        daemon.kill()


def send(client, control: str, payload: str | bytes, retain: bool = False) -> None:
    client.publish(f"{PREFIX}/set/{control}", payload, qos=1, retain=retain).wait_for_publish(30)


def last_json(live: Subscriber, topic: str) -> dict:
    messages = [m for m in live.on(topic) if m.payload]
    return json.loads(messages[-1].payload) if messages else {}


def wait_json(live: Subscriber, topic: str, predicate, what: str, timeout: float = 20.0) -> dict:
    live.wait_until(lambda: predicate(last_json(live, topic)), timeout, what)
    return last_json(live, topic)


def test_enrol_and_forget_from_home_assistant_through_the_broker(tmp_path, broker, person_daemon):
    gallery = tmp_path / "state" / "gallery.json"
    name, sensor = "Renée O'Hara", person_component("Renée O'Hara")
    with Subscriber(broker, [f"{PREFIX}/#", CONFIG_TOPIC]) as live:
        # Left retained by anyone before the start: never a command, so nobody is enrolled.
        send(live.client, ENROL_NAME, "Mallory", retain=True)
        send(live.client, ENROL, "PRESS", retain=True)
        daemon = person_daemon(broker)
        daemon.wait_log("ready: first frame processed")
        daemon.wait_log(r"refused a command on .*set/enrol'?: a retained message")
        daemon.wait_log(r"refused a command on .*set/enrol_name'?: a retained message")
        live.wait_until(lambda: "enrol_name" in last_json(live, CONFIG_TOPIC).get("cmps", {}), 20, "discovery")
        components = last_json(live, CONFIG_TOPIC)["cmps"]
        assert components["enrol"]["command_topic"] == f"{PREFIX}/set/enrol"
        assert components["forget_name"]["options"] == [] and not persons(last_json(live, CONFIG_TOPIC))

        send(live.client, ENROL, "PRESS")  # no name chosen
        live.wait_until(
            lambda: last_json(live, TOPICS.controls).get("enrolment", "") or "",
            20,
            "the refusal in the controls state",
        )
        assert last_json(live, TOPICS.controls)["enrolment"] == "enrol refused: no name chosen (set 'Enrol as' first)"
        send(live.client, ENROL_NAME, "{{ 7*7 }}")  # not a name: refused at the gate
        daemon.wait_log(r"refused a command on .*set/enrol_name.*not allowed")
        send(live.client, ENROL_NAME, name)
        live.wait_until(lambda: last_json(live, TOPICS.controls).get("enrol_name") == name, 20, "the name echoed")
        assert not gallery.exists()

        for _ in range(10):  # pressed while the face is in view, as a user would
            live.wait_until(lambda: last_json(live, TOPICS.state).get("present") is True, 20, "the face in view")
            time.sleep(1.0)
            send(live.client, ENROL, "PRESS")
            live.wait_until(
                lambda: (
                    last_json(live, TOPICS.controls).get("enrolment", "").startswith(("enrolled", "enrol refused:"))
                    and "no name" not in last_json(live, TOPICS.controls)["enrolment"]
                ),
                20,
                "an outcome",
            )
            if last_json(live, TOPICS.controls)["enrolment"].startswith("enrolled"):
                break
        assert last_json(live, TOPICS.controls)["enrolment"].startswith(f"enrolled {name!r}")
        assert last_json(live, TOPICS.controls)["enrol_name"] == ""  # used once
        assert json.loads(gallery.read_text())["people"].keys() == {name}
        assert gallery.stat().st_mode & 0o777 == 0o600
        live.wait_until(lambda: sensor in persons(last_json(live, CONFIG_TOPIC)), 20, "her sensor announced")
        announced = last_json(live, CONFIG_TOPIC)["cmps"]
        assert announced[sensor]["name"] == name and announced["forget_name"]["options"] == [name]
        live.wait_until(
            lambda: last_json(live, TOPICS.state).get("people", {}).get(name, {}).get("present") is True,
            30,
            "her presence in the state",
        )

        # A gallery that breaks (recognition suspended) keeps her entity: HA must not delete it.
        kept, configs = gallery.read_bytes(), len(live.on(CONFIG_TOPIC))
        gallery.write_text("not a gallery")
        daemon.send(signal.SIGHUP)
        daemon.wait_log("recognition suspended")
        live.wait_until(lambda: last_json(live, TOPICS.state).get("people") == {}, 20, "nobody named while suspended")
        time.sleep(1.0)
        assert persons(last_json(live, CONFIG_TOPIC))[sensor]["name"] == name  # still announced, not removed
        gallery.write_bytes(kept)
        daemon.send(signal.SIGHUP)
        daemon.wait_log("usable again")
        live.wait_until(lambda: name in last_json(live, TOPICS.state).get("people", {}), 20, "her back in the state")
        assert all(persons(json.loads(m.payload)).get(sensor, {}).get("name") for m in live.on(CONFIG_TOPIC)[configs:])

        send(live.client, FORGET_NAME, "Bob")  # not enrolled: refused, nothing chosen
        live.wait_until(
            lambda: last_json(live, TOPICS.controls).get("enrolment") == "forget refused: 'Bob' is not enrolled",
            20,
            "the refusal",
        )
        send(live.client, FORGET_NAME, name)
        live.wait_until(lambda: last_json(live, TOPICS.controls).get("forget_name") == name, 20, "the choice echoed")
        send(live.client, "forget", "PRESS")
        live.wait_until(
            lambda: persons(last_json(live, CONFIG_TOPIC)).get(sensor) == {"p": "binary_sensor"},
            20,
            "her sensor announced as removed",
        )
        assert last_json(live, CONFIG_TOPIC)["cmps"]["forget_name"]["options"] == []
        controls = wait_json(live, TOPICS.controls, lambda c: c.get("forget_name") is None, "the choice cleared")
        assert controls["enrolment"].startswith(f"forgot {name!r}")
        assert json.loads(gallery.read_text())["people"] == {}

        # Enrolled and removed from the command line while the daemon runs: the entity follows.
        from cli_support import run_cli

        other = person_component("Zoë")
        enrolled = run_cli("enroll", "--gallery", str(gallery), "Zoë", str(tmp_path / "face-0.png"))
        assert enrolled.returncode == 0, enrolled.stderr
        live.wait_until(lambda: persons(last_json(live, CONFIG_TOPIC)).get(other, {}).get("name") == "Zoë", 20, "Zoë")
        removed = run_cli("people", "--gallery", str(gallery), "--remove", "Zoë")
        assert removed.returncode == 0, removed.stderr
        live.wait_until(
            lambda: persons(last_json(live, CONFIG_TOPIC)).get(other) == {"p": "binary_sensor"}, 20, "Zoë removed"
        )
        code, log, _ = daemon.stop()
        assert code == 0, log[-3000:]
        assert "Traceback" not in log


# --- the announcer's roster of people -----------------------------------------------------------


def people_announcer():
    from edge.mqtt.announce import Announcer
    from edge.mqtt.retained import EntityRoster

    return Announcer(TOPICS, HomeAssistantConfig(), DEVICE, "m", EntityRoster(), cpu_temperature=lambda: False)


def announced_people(announce) -> dict[str, dict]:
    return persons(announce.discovery_payload(snapshots=False, commands=True))


def test_the_announcer_lists_forgotten_people_and_ghosts_read_back_as_removed():
    alice, bob, carol = (person_component(name) for name in ("Alice", "Bob", "Carol"))
    announce = people_announcer()
    assert announce.discovery_payload(False, True)["cmps"]["enrol"] == {"p": "button"}  # recognition off
    assert announce.set_people(("Bob", "Alice")) and not announce.set_people(("Alice", "Bob"))
    assert {key: c["p"] for key, c in announced_people(announce).items()} == {
        alice: "binary_sensor",
        bob: "binary_sensor",
    }
    assert announce.set_people(("Alice",))
    assert announced_people(announce)[bob] == {"p": "binary_sensor"}
    # A config kept by the broker from an earlier run announced Carol: a ghost now.
    announce.old_config_read(encode_json({"cmps": {alice: {}, carol: {}}}))
    assert announced_people(announce)[carol] == {"p": "binary_sensor"}
    assert announced_people(announce)[alice]["p"] == "binary_sensor" and "name" in announced_people(announce)[alice]
    assert announce.set_people(("Alice", "Bob"))  # Bob enrolled again: announced again
    assert announced_people(announce)[bob]["name"] == "Bob"
    assert announce.set_people(None)  # recognition off: everyone announced is removed
    assert all(c == {"p": "binary_sensor"} for c in announced_people(announce).values())
    assert set(announced_people(announce)) == {alice, bob, carol}
