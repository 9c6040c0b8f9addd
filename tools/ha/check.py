"""The real-Home-Assistant check, run by tools/ha_check.sh once HA and mosquitto are started.

    python -m tools.ha.check --ha-url URL --ha-pid PID --ha-log FILE --mqtt-port N \
        --model MODEL --photos DIR --work DIR

Sets HA up as a new user would (onboarding, the MQTT config flow, over REST), runs the real
daemon (``python -m edge.cli run``) on a looping replay of a real photo and a blank frame,
and checks from HA's REST and websocket APIs: every entity with the device class, unit and
category HA gives it; states following the scene; the event entity; the controls (Detection
off pauses the daemon, Score threshold, Re-announce, Snapshots off removes the image);
HA disabled removes the device; recognition (on from the start): enrolment from HA (the
"Enrol as" text and the "Enrol current face" button, a press without a name refused and shown)
while a face of ../shared/faces-identity is replayed, that person's presence sensor appearing,
turning on and off with the face, "Last person", the person event, and "Forget person" removing
the sensor; a clean stop; ``edge-face forget``; no WARNING or ERROR about MQTT or the device in
HA's log. Prints the entity table and the timings. Exit 0 PASS, 1 FAIL.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge.common.sysinfo import read_cpu_temperature
from edge.detect.detector import FaceDetector
from edge.mqtt.discovery import (
    CONTROLS,
    CPU_TEMPERATURE,
    ENROLMENT,
    ENTITIES,
    RECOGNITION,
    SNAPSHOT,
    discovery_topic,
    forget_choice_entity,
    person_component,
    zone_entities,
)
from edge.sources.imageio import load_image
from tools import shared_data
from tools.ha.client import HomeAssistant, StateChanges

DEVICE = "ha-check"
PREFIX = f"edge-face/{DEVICE}"
FPS = 6.0
DEBOUNCE, CLEAR_AFTER = 2, 1.0
# A zone over the whole frame: its presence must follow the frame's, through its own entities.
ZONE = "door"
# HA's entity ids come from its registry, found by our unique ids.
UNIQUE_PREFIX = f"edge-face-{DEVICE}-"
# Who is enrolled from HA: a name with an apostrophe and a letter outside ASCII, which must
# reach HA's templates escaped and its entity ids never.
PERSON = "Renée O'Hara"
# Whose face is replayed for the enrolment (a folder of ../shared/faces-identity/johns).
PERSON_CHIPS = "John_Simm"


class CheckFailed(AssertionError):
    pass


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise CheckFailed(what)


def wait_for(predicate: Callable[[], object], timeout: float, what: str | Callable[[], str], interval: float = 0.2):
    """``predicate()``'s first true value, polled every ``interval`` s for up to ``timeout`` s;
    ``what`` (or what it returns, at the failure) names what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise CheckFailed(f"timed out after {timeout:g} s waiting for: {what if isinstance(what, str) else what()}")
        time.sleep(interval)


def changes(stream: StateChanges, entity_id: str) -> list[str]:
    """The states ``entity_id`` went through, repeats folded."""
    seen: list[str] = []
    for state in stream.states(entity_id):
        if not seen or seen[-1] != state["state"]:
            seen.append(state["state"])
    return seen


class Timer:
    def __init__(self) -> None:
        self.started = self.last = time.monotonic()
        self.figures: list[tuple[str, float]] = []

    def step(self, name: str) -> None:
        now = time.monotonic()
        self.figures.append((name, now - self.last))
        print(f"  ok  {name} ({now - self.last:.1f} s)", flush=True)
        self.last = now


# --- the scene and the daemon ---------------------------------------------------------------


def pick_photo(photos: Path, model: Path) -> tuple[Path, int]:
    """The first photo (in name order) in which the detector finds 1-5 faces: the count HA
    must show is what the detector finds, not a number written here."""
    detector = FaceDetector(model)
    for photo in sorted(photos.glob("*.jpg"), key=lambda p: p.name):
        count = len(detector.detect(load_image(photo)).scores)
        if 1 <= count <= 5:
            return photo, count
    raise CheckFailed(f"no photo in {photos} with 1-5 faces")


def build_scene(work: Path, photo: Path) -> Path:
    """A looping replay: 2 s of an empty room, 2 s of the photo, 3 s empty again."""
    import numpy as np
    from PIL import Image

    folder = work / "scene"
    folder.mkdir(parents=True)
    blank = work / "blank.png"
    ramp = np.linspace(90, 160, 640, dtype=np.float32)[None, :, None]
    Image.fromarray(np.broadcast_to(ramp, (480, 640, 3)).astype(np.uint8)).save(blank)
    frames = [blank] * 12 + [photo] * 12 + [blank] * 18
    for number, target in enumerate(frames):
        (folder / f"{number:04d}{target.suffix.lower()}").symlink_to(target)
    return folder


def build_person_scene(work: Path, chips: Path) -> Path:
    """A looping replay of one person: 2 s empty, 4 s of their face (the chips of one person,
    each pasted at the same place of a grey 640x480 frame, about 100 px tall), 3 s empty."""
    from PIL import Image

    folder = work / "person-scene"
    folder.mkdir(parents=True)
    faces = sorted(chips.glob("*.jpg"))
    if not faces:
        raise CheckFailed(f"no face chips (*.jpg) in {chips}")
    frames = []
    for index, chip in enumerate(faces[:6]):
        frame = Image.new("RGB", (640, 480), (96, 104, 112))
        frame.paste(Image.open(chip).convert("RGB"), (245, 165))
        frames.append(work / f"person-{index}.png")
        frame.save(frames[-1])
    blank = work / "blank.png"
    sequence = [blank] * 12 + [frames[i % len(frames)] for i in range(24)] + [blank] * 18
    for number, target in enumerate(sequence):
        (folder / f"{number:04d}.png").symlink_to(target)
    return folder


def write_config(
    path: Path, work: Path, model: Path, mqtt_port: int, ha_enabled: bool = True, scene: str = "scene"
) -> None:
    path.write_text(
        f"""[device]
id = "{DEVICE}"
state_dir = "{work / "state"}"
[camera]
source = "replay"
path = "{work / scene}"
fps = {FPS}
loop = true
[detector]
model = "{model}"
[events]
debounce_frames = {DEBOUNCE}
clear_after_seconds = {CLEAR_AFTER}
[snapshot]
enabled = true
[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
[homeassistant]
enabled = {"true" if ha_enabled else "false"}
device_name = "Hall camera"
[stats]
interval_seconds = 1.0
[recognition]
enabled = true
[[scene.zones]]
name = "{ZONE}"
polygon = [[0, 0], [1, 0], [1, 1], [0, 1]]
""",
        encoding="utf-8",
    )


class Daemon:
    def __init__(self, config: Path, log: Path) -> None:
        self.log_path = log
        with open(log, "w", encoding="utf-8") as log_file:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edge.cli", "run", "--config", str(config)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def text(self) -> str:
        return self.log_path.read_text(encoding="utf-8")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise CheckFailed(f"the daemon did not stop within {timeout:g} s after SIGTERM") from None


class Retained:
    """What the broker keeps retained under some topics: subscribe, collect for a moment."""

    def __init__(self, port: int, topics: list[str], settle: float = 1.0) -> None:
        self.messages: dict[str, bytes] = {}
        self.live: list[tuple[str, bytes, bool]] = []
        self._ready = threading.Event()
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"ha-check-{os.getpid()}-{time.monotonic_ns()}"
        )

        def on_connect(c: paho.Client, u: object, f: object, rc: object, p: object) -> None:
            c.subscribe([(t, 1) for t in topics])
            self._ready.set()

        client.on_connect = on_connect
        client.on_message = self._on_message
        client.connect("127.0.0.1", port)
        client.loop_start()
        self.client = client
        self._ready.wait(10)
        time.sleep(settle)

    def _on_message(self, client, userdata, message) -> None:
        self.live.append((message.topic, message.payload, message.retain))
        if message.retain:
            self.messages[message.topic] = message.payload

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- the check ------------------------------------------------------------------------------


def our_entities(ha: HomeAssistant) -> dict[str, dict]:
    """unique_id key (face_count, ...) -> entity registry entry, for our device's entities."""
    return {
        entry["unique_id"][len(UNIQUE_PREFIX) :]: entry
        for entry in ha.entity_registry()
        if entry["platform"] == "mqtt" and entry["unique_id"].startswith(UNIQUE_PREFIX)
    }


def our_device(ha: HomeAssistant) -> dict | None:
    for device in ha.device_registry():
        if ["mqtt", f"edge-face-{DEVICE}"] in device.get("identifiers", []):
            return device
    return None


def state_of(ha: HomeAssistant, entities: dict, key: str) -> dict:
    state = ha.state(entities[key]["entity_id"])
    if state is None:
        raise CheckFailed(f"{entities[key]['entity_id']} has no state")
    return state


def check(args: argparse.Namespace) -> list[list[str]]:
    timer = Timer()
    ha = HomeAssistant(args.ha_url)
    started = ha.wait_until_up(300, lambda: _alive(args.ha_pid))
    timer.step(f"Home Assistant answers ({started:.1f} s after start)")
    ha.onboard("edge-face", "check-" + os.urandom(8).hex())
    timer.step("onboarding over REST (user, token, core config, analytics, integration)")
    ha.add_mqtt("127.0.0.1", args.mqtt_port)
    timer.step("MQTT config flow over REST, discovery on")

    work = Path(args.work)
    work.mkdir(parents=True)
    photo, faces = pick_photo(Path(args.photos), Path(args.model))
    build_scene(work, photo)
    config = work / "edge-face.toml"
    write_config(config, work, Path(args.model), args.mqtt_port)
    daemon = Daemon(config, work / "daemon.log")
    try:
        rows = run_with_daemon(ha, daemon, timer, work, config, args, photo, faces)
    except BaseException:
        if daemon.process.poll() is None:
            daemon.process.kill()
        print("--- daemon log (tail) ---\n" + "\n".join(daemon.text().splitlines()[-30:]), file=sys.stderr)
        _print_what_ha_has(ha, args.mqtt_port)
        raise
    log_problems = [
        line
        for line in Path(args.ha_log).read_text(encoding="utf-8", errors="replace").splitlines()
        if re.search(r"\b(WARNING|ERROR|CRITICAL)\b", line)
        and re.search(r"mqtt|edge.face|ha.check|hall.camera", line, re.IGNORECASE)
    ]
    expect(
        not log_problems, "Home Assistant's log has warnings about MQTT or the device:\n  " + "\n  ".join(log_problems)
    )
    timer.step("no WARNING or ERROR about MQTT or the device in home-assistant.log")
    print(
        f"\nha check timings: total {time.monotonic() - timer.started:.1f} s since Home Assistant's start was requested"
        " (add the shell's own set-up)"
    )
    return rows


def run_with_daemon(ha, daemon, timer, work, config, args, photo, faces) -> list[list[str]]:
    device = wait_for(lambda: our_device(ha), 30, "the device in HA's device registry")
    expect(device["name"] == "Hall camera" and device["manufacturer"] == "edge-face", f"device: {device}")
    with_temperature = read_cpu_temperature() is not None
    recognition = (forget_choice_entity(()),)  # its options are the enrolled people
    wanted = {
        e.key
        for e in (*ENTITIES, *recognition)
        if e.needs in (None, SNAPSHOT, CONTROLS, RECOGNITION, ENROLMENT)
        or (e.needs == CPU_TEMPERATURE and with_temperature)
    }
    wanted |= {e.key for e in zone_entities(ZONE)}
    entities = wait_for(
        lambda: (found := our_entities(ha)) and set(found) >= wanted and found, 30, f"entities {sorted(wanted)}"
    )
    expect(set(entities) == wanted, f"unexpected entities: {sorted(set(entities) - wanted)}")
    timer.step(f"device and its {len(entities)} entities registered")

    # Every entity as HA shows it: device class, unit and category must be what we declared.
    rows = []
    declared = {e.key: e for e in (*ENTITIES, *recognition, *zone_entities(ZONE))}
    image = None
    for key, entry in entities.items():
        entity = declared[key]
        state = state_of(ha, entities, key) if entity.platform != "button" else ha.state(entry["entity_id"])
        attributes = state["attributes"]
        expect(
            attributes.get("device_class") == entity.device_class,
            f"{entry['entity_id']}: device_class {attributes.get('device_class')!r}, want {entity.device_class!r}",
        )
        expect(
            attributes.get("unit_of_measurement") == entity.unit,
            f"{entry['entity_id']}: unit {attributes.get('unit_of_measurement')!r}, want {entity.unit!r}",
        )
        expect(
            entry["entity_category"] == entity.category,
            f"{entry['entity_id']}: category {entry['entity_category']!r}, want {entity.category!r}",
        )
        if entity.platform == "image":
            image = state
        rows.append(
            [
                entry["entity_id"],
                attributes.get("friendly_name", ""),
                entity.device_class or "",
                entity.unit or "",
                entity.category or "",
                state["state"],
            ]
        )
    timer.step("every entity has the device class, unit and category declared in edge/mqtt/discovery.py")

    # The image is there before any face: the placeholder (the proxy answers, never a 500)
    # once the entity is available (HA takes in the retained status and picture right after
    # the discovery message).
    if image is None:
        raise CheckFailed("no image entity among the registered ones")
    image_id = image["entity_id"]
    image = wait_for(
        lambda: (s := ha.state(image_id)) and s["state"] not in ("unknown", "unavailable") and s,
        5,
        "the placeholder image",
    )
    picture = ha.get(image["attributes"]["entity_picture"])
    expect(
        picture.headers.get("Content-Type", "").startswith("image/jpeg") and picture.content[:2] == b"\xff\xd8",
        "the image proxy does not serve a JPEG before the first face",
    )
    timer.step("the Last face image serves a JPEG from the start")

    # States follow the scene: off -> on with the detector's count -> off; the event fires.
    present, count, event = (entities[k]["entity_id"] for k in ("face_present", "face_count", "face_event"))
    zone_present = entities[f"zone_{ZONE}_present"]["entity_id"]
    with StateChanges(ha, {present, count, event, zone_present}) as stream:

        def fired() -> dict[str, dict]:
            """event type -> the attributes of its first firing"""
            first: dict[str, dict] = {}
            for state in stream.states(event):
                first.setdefault(state["attributes"].get("event_type"), state["attributes"])
            return first

        def followed() -> bool:
            return (
                "on,off" in ",".join(changes(stream, present))
                and "on,off" in ",".join(changes(stream, zone_present))
                and {"face_detected", "face_cleared"} <= set(fired())
            )

        wait_for(
            followed,
            30,
            lambda: (
                f"face present on then off, in the frame and zone {ZONE!r}, and both events (timeline "
                f"{changes(stream, present)}, zone {changes(stream, zone_present)}, events {sorted(fired())})"
            ),
        )
        counts = [c for c in changes(stream, count) if c != "0"]  # the first: when presence turned on
        expect(counts[:1] == [str(faces)], f"face counts {counts} while present, the detector finds {faces}")
        seen_events = fired()
    detected = seen_events["face_detected"]
    expect(
        detected.get("count") == faces and isinstance(detected.get("sequence"), int),
        f"face_detected event attributes {detected}",
    )
    last_seen = state_of(ha, entities, "last_seen")["state"]
    expect(re.match(r"\d{4}-\d\d-\d\dT", last_seen) is not None, f"last seen {last_seen!r} is not a timestamp")
    timer.step(f"states follow the scene ({faces} faces in {photo.name}), also zone {ZONE!r}'s; the event entity fires")

    diagnostics = {k: state_of(ha, entities, k)["state"] for k in ("fps", "uptime", "source_state", "outbox_depth")}
    expect(float(diagnostics["fps"]) > 0 and float(diagnostics["uptime"]) > 0, f"diagnostics {diagnostics}")
    expect(diagnostics["source_state"] == "ok" and diagnostics["outbox_depth"] == "0", f"diagnostics {diagnostics}")
    timer.step("diagnostics from the stats topic")
    for row in rows:  # the table shows states of a running device
        row[-1] = (ha.state(row[0]) or {"state": "(gone)"})["state"]

    # Detection off from HA: the daemon pauses (privacy mode) and the switch follows.
    detection = entities["detection"]["entity_id"]
    ha.call_service("switch", "turn_off", {"entity_id": detection})
    wait_for(lambda: ha.state(detection)["state"] == "off", 10, "the Detection switch to turn off")
    wait_for(lambda: ha.state(present)["attributes"].get("detection") == "paused", 10, "presence to say paused")
    source = entities["source_state"]["entity_id"]
    wait_for(lambda: ha.state(source)["state"] == "paused", 10, "the camera state sensor to say paused")
    expect("detection paused from Home Assistant" in daemon.text(), "the daemon did not log the pause")
    fps = entities["fps"]["entity_id"]
    wait_for(lambda: float(ha.state(fps)["state"]) == 0.0, 10, "the frame rate to drop to 0 while paused")
    stored = json.loads((work / "state" / "controls.json").read_text())
    expect(stored.get("detection") is False, f"controls.json after Detection off: {stored}")
    ha.call_service("switch", "turn_on", {"entity_id": detection})
    wait_for(lambda: ha.state(detection)["state"] == "on", 10, "the Detection switch to turn on")
    wait_for(lambda: ha.state(source)["state"] == "ok", 10, "the camera state to be ok again")
    timer.step("Detection off from HA pauses the daemon (no frame processed, stored), on resumes it")

    threshold = entities["score_threshold"]["entity_id"]
    ha.call_service("number", "set_value", {"entity_id": threshold, "value": 0.55})
    wait_for(lambda: ha.state(threshold)["state"] == "0.55", 10, "the Score threshold to read 0.55")
    wait_for(
        lambda: json.loads((work / "state" / "controls.json").read_text()).get("score_threshold") == 0.55,
        5,
        "score_threshold 0.55 stored",
    )
    timer.step("Score threshold set from HA, echoed and stored")

    watcher = Retained(args.mqtt_port, [discovery_topic("homeassistant", DEVICE)], settle=0.5)
    try:
        before = len(watcher.live)
        ha.call_service("button", "press", {"entity_id": entities["reannounce"]["entity_id"]})
        wait_for(lambda: len(watcher.live) > before, 10, "discovery re-sent after Re-announce")
    finally:
        watcher.close()
    timer.step("Re-announce re-sends discovery")

    snapshots = entities["snapshots"]["entity_id"]
    image_id = entities["snapshot"]["entity_id"]
    ha.call_service("switch", "turn_off", {"entity_id": snapshots})
    wait_for(
        lambda: ha.state(image_id) is None and "snapshot" not in our_entities(ha),
        15,
        "the image entity to be removed after Snapshots off",
    )
    wait_for(lambda: (s := ha.state(snapshots)) is not None and s["state"] == "off", 10, "the Snapshots switch off")
    timer.step("Snapshots off removes the image entity")

    # A SIGHUP with the file unchanged keeps the controls (and says so in the log).
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "overrides the config file: snapshots OFF" in daemon.text(), 10, "the reload to log the override")
    time.sleep(1.0)
    expect(ha.state(image_id) is None and ha.state(threshold)["state"] == "0.55", "a reload undid a control")
    timer.step("SIGHUP keeps the controls and logs each override")

    write_config(config, work, Path(args.model), args.mqtt_port, ha_enabled=False)
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: our_device(ha) is None and not our_entities(ha), 20, "HA disabled: the device to be removed")
    timer.step("HA disabled by a reload removes the device and its entities")

    write_config(config, work, Path(args.model), args.mqtt_port, ha_enabled=True)
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: our_device(ha) is not None, 20, "HA enabled again: the device back")
    wait_for(
        lambda: ha.state(present) is not None and ha.state(present)["state"] in ("on", "off"),
        20,
        "the presence sensor available again",
    )
    timer.step("HA enabled again brings the device back")

    check_enrolment(ha, daemon, timer, work, config, args)

    code = daemon.stop()
    expect(code == 0, f"the daemon exited {code} on SIGTERM")
    wait_for(lambda: ha.state(present)["state"] == "unavailable", 10, "entities unavailable after a clean stop")
    retained = Retained(args.mqtt_port, [f"{PREFIX}/#"])
    try:
        state = json.loads(retained.messages.get(f"{PREFIX}/state", b"{}") or b"{}")
        expect(state.get("present") is False, f"retained state after a clean stop: {state}")
        expect(retained.messages.get(f"{PREFIX}/status") == b"stopped", "status after a clean stop")
    finally:
        retained.close()
    timer.step("a clean stop: entities unavailable, retained state not present")

    forget = subprocess.run(
        [sys.executable, "-m", "edge.cli", "forget", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    expect(forget.returncode == 0, f"edge-face forget exited {forget.returncode}: {forget.stderr.strip()}")
    wait_for(lambda: our_device(ha) is None and not our_entities(ha), 20, "forget: the device to be removed")
    retained = Retained(args.mqtt_port, [f"{PREFIX}/#", "homeassistant/device/#"])
    try:
        expect(not retained.messages, f"retained after forget: {sorted(retained.messages)}")
    finally:
        retained.close()
    expect(not (work / "state" / "controls.json").exists(), "forget left the stored controls")
    timer.step("edge-face forget removes the device, every retained topic and the stored controls")
    return rows


def check_enrolment(ha, daemon, timer, work: Path, config: Path, args: argparse.Namespace) -> None:
    """Enrol a person from HA while their face is replayed, watch their sensor, forget them."""
    build_person_scene(work, Path(args.identity) / "johns" / PERSON_CHIPS)
    write_config(config, work, Path(args.model), args.mqtt_port, scene="person-scene")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "changed: camera" in daemon.text(), 20, "the reload to the replay of one person")
    entities = our_entities(ha)
    present, enrolment = entities["face_present"]["entity_id"], entities["enrolment"]["entity_id"]
    enrol, enrol_name = entities["enrol"]["entity_id"], entities["enrol_name"]["entity_id"]
    gallery = work / "state" / "gallery.json"

    requests = daemon.text().count("requested from Home Assistant")
    ha.call_service("button", "press", {"entity_id": enrol})
    wait_for(
        lambda: ha.state(enrolment)["state"] == "enrol refused: no name chosen (set 'Enrol as' first)",
        10,
        "a press without a name refused, and the reason shown in Last enrolment",
    )
    expect(not gallery.exists() and daemon.text().count("requested from Home Assistant") == requests, "enrolled")
    timer.step("Enrol current face without a name: refused, the reason shown in HA")

    ha.call_service("text", "set_value", {"entity_id": enrol_name, "value": PERSON})
    wait_for(lambda: ha.state(enrol_name)["state"] == PERSON, 10, f"Enrol as to show {PERSON!r}")
    key = person_component(PERSON)
    for attempt in range(5):  # pressed while the face is in view, as a user would
        wait_for(lambda: ha.state(present)["state"] == "off", 20, "the empty room")
        wait_for(lambda: ha.state(present)["state"] == "on", 20, "the face in view")
        time.sleep(1.5)  # its first views are described
        refusals = daemon.text().count("enrol refused")

        def answered(refused_before: int = refusals) -> bool:
            return PERSON in _enrolled(gallery) or daemon.text().count("enrol refused") > refused_before

        ha.call_service("button", "press", {"entity_id": enrol})
        wait_for(answered, 15, "the press to enrol or be refused")
        if PERSON in _enrolled(gallery):
            break
        print(f"  ..  press {attempt + 1} refused: {daemon.text().splitlines()[-1]}", flush=True)
    else:
        raise CheckFailed("5 presses with the face in view did not enrol (see the daemon log)")
    wait_for(lambda: ha.state(enrolment)["state"].startswith("enrolled"), 10, "Last enrolment to say enrolled")
    outcome = ha.state(enrolment)["state"]
    expect(f"enrolled {PERSON!r}" in outcome, f"Last enrolment after the press: {outcome!r}")
    wait_for(lambda: ha.state(enrol_name)["state"] == "", 10, "Enrol as cleared once used")
    sensor = wait_for(lambda: our_entities(ha).get(key), 20, f"the presence sensor of {PERSON!r} in the registry")
    expect(re.fullmatch(r"binary_sensor\.[a-z0-9_]+", sensor["entity_id"]) is not None, f"entity id {sensor}")
    person = sensor["entity_id"]
    state = wait_for(lambda: ha.state(person), 10, f"{person} to have a state")
    expect(state["attributes"].get("friendly_name") == f"Hall camera {PERSON}", f"{person}: {state['attributes']}")
    expect(state["attributes"].get("device_class") == "occupancy", f"{person}: {state['attributes']}")
    timer.step(f"Enrol as {PERSON!r} + Enrol current face: enrolled, its presence sensor {person} appears")

    last_person, event = entities["last_person"]["entity_id"], entities["face_event"]["entity_id"]
    with StateChanges(ha, {person, event}) as stream:

        def arrived() -> bool:
            return any(
                s["attributes"].get("event_type") == "person_arrived" and s["attributes"].get("person") == PERSON
                for s in stream.states(event)
            )

        wait_for(
            lambda: "on,off,on" in ",".join(changes(stream, person)) and arrived(),
            40,
            lambda: (
                f"{person} on, off and on again with the face ({changes(stream, person)}), a person_arrived "
                f"naming her ({arrived()})"
            ),
        )
    expect(ha.state(last_person)["state"] == PERSON, f"Last person: {ha.state(last_person)['state']!r}")
    timer.step(f"{person} follows the face, Last person says {PERSON!r}, the person_arrived event names her")

    forget_name = our_entities(ha)["forget_name"]["entity_id"]
    wait_for(lambda: ha.state(forget_name)["attributes"].get("options") == [PERSON], 10, "the select to list her")
    ha.call_service("select", "select_option", {"entity_id": forget_name, "option": PERSON})
    wait_for(lambda: ha.state(forget_name)["state"] == PERSON, 10, f"Person to forget to show {PERSON!r}")
    ha.call_service("button", "press", {"entity_id": our_entities(ha)["forget"]["entity_id"]})
    wait_for(
        lambda: key not in our_entities(ha) and ha.state(person) is None,
        20,
        f"{person} to be removed after Forget person",
    )
    expect(f"forgot {PERSON!r}" in ha.state(enrolment)["state"], f"Last enrolment: {ha.state(enrolment)['state']!r}")
    wait_for(lambda: ha.state(forget_name)["attributes"].get("options") == [], 10, "the select to list nobody")
    expect(ha.state(forget_name)["state"] == "unknown", f"Person to forget: {ha.state(forget_name)['state']!r}")
    kept = _enrolled(gallery)
    expect(gallery.exists() and kept == {}, f"the gallery after Forget person still holds {sorted(kept)}")
    timer.step("Person to forget + Forget person: the sensor is removed from HA, the gallery holds nobody")


def _print_what_ha_has(ha: HomeAssistant, mqtt_port: int) -> None:
    """After a failure: our entities as HA has them (registry and state), and the discovery
    config the broker keeps (which components it announces as removed)."""
    try:
        states = ha.states()
        print("--- our entities in HA (registry -> state) ---", file=sys.stderr)
        for key, entry in sorted(our_entities(ha).items()):
            state = states.get(entry["entity_id"])
            print(f"  {key}: {entry['entity_id']} -> {state and state['state']!r}", file=sys.stderr)
        kept = Retained(mqtt_port, [discovery_topic("homeassistant", DEVICE)], settle=0.5)
        kept.close()
        config = json.loads(kept.messages.get(discovery_topic("homeassistant", DEVICE)) or b"{}")
        removed = sorted(key for key, c in config.get("cmps", {}).items() if set(c) == {"p"})
        print(f"--- retained discovery: {len(config.get('cmps', {}))} components, removed {removed}", file=sys.stderr)
    except Exception as exc:  # a diagnosis only: the failure itself is reported by the caller
        print(f"(could not read what HA has: {exc})", file=sys.stderr)


def _enrolled(gallery: Path) -> dict:
    """The people of the gallery file ({} while there is none)."""
    try:
        return json.loads(gallery.read_text(encoding="utf-8"))["people"]
    except FileNotFoundError:
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ha-url", required=True)
    parser.add_argument("--ha-pid", required=True, type=int)
    parser.add_argument("--ha-log", required=True)
    parser.add_argument("--mqtt-port", required=True, type=int)
    parser.add_argument("--model", required=True)
    parser.add_argument("--photos", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument(
        "--identity", default=str(shared_data.identity_dir()), help="faces-identity folder (johns/NAME/*.jpg)"
    )
    args = parser.parse_args(argv)
    try:
        rows = check(args)
    except CheckFailed as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return 1
    widths = [max(len(str(row[i])) for row in [*rows, HEADER]) for i in range(len(HEADER))]
    print("\nwhat Home Assistant shows:")
    for row in [HEADER, *sorted(rows)]:
        print("  " + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    return 0


HEADER = ["entity id", "name", "device class", "unit", "category", "state"]

if __name__ == "__main__":
    sys.exit(main())
