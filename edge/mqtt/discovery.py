"""Home Assistant MQTT discovery as data: one declarative list of entities (:data:`ENTITIES`)
and the pure functions that turn it into the retained device-discovery message.

Pure functions only: they build topic strings and JSON-able dicts; ``edge.mqtt.sink`` publishes
them. One device-based discovery message (``<prefix>/device/<device_id>/config``, HA
2024.11+) carries the device, the origin and every component, so HA sets up the whole device
from one retained message.

Lifecycle rules learned from Home Assistant itself (see the real-HA check, tools/ha/):

* HA passes only availability, ``state_topic`` and ``command_topic`` from the top level down
  to components: ``qos`` must sit inside every component or HA subscribes at QoS 0.
* HA removes a component only when its entry holds just the platform (``{"p": "image"}``);
  leaving it out keeps the entity (a snapshot entity whose proxy then answers 500). So an
  entity whose feature is off is *always* listed as a removal entry: turning the feature off
  at any time, across restarts, cleans up; a removal for an entity HA never had is a no-op.
* The whole device goes away with an empty retained payload on its discovery topic
  (:func:`removal_messages`, used when HA is disabled, the device id changes, and by
  ``edge-face forget``).

Field names follow https://www.home-assistant.io/integrations/mqtt/#device-discovery-payload:
the top level uses the documented short keys ``dev``, ``o``, ``cmps`` and each component
names its platform with ``p``; every other option is spelled out for whoever debugs the
payload with ``mosquitto_sub``.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Self

from edge.scene.event_types import EVENT_TYPES

ORIGIN_NAME = "edge-face"
MANUFACTURER = "edge-face"
MODEL = "edge-face int8 face detector"
# HA's default birth/LWT payloads on <discovery_prefix>/status.
HA_ONLINE = "online"
# What a device's own status topic says: "online" while running, "offline" (the broker's last
# will: the daemon vanished), "stopped" (a clean exit).
STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"
STATUS_STOPPED = "stopped"
# HA's availability only understands two payloads, so the template folds "stopped" (and
# anything unexpected) into "offline": a stopped daemon must not look available.
AVAILABILITY_TEMPLATE = f"{{{{ '{STATUS_ONLINE}' if value == '{STATUS_ONLINE}' else '{STATUS_OFFLINE}' }}}}"
DIAGNOSTIC, CONFIG = "diagnostic", "config"
# What the face count is counted in: HA keeps long-term statistics for a measurement with a
# unit, and shows "2 faces" rather than a bare "2".
FACE_COUNT_UNIT = "faces"
# The Score threshold number's range and step: the detector accepts (0, 1) exclusive.
SCORE_THRESHOLD_MIN, SCORE_THRESHOLD_MAX, SCORE_THRESHOLD_STEP = 0.05, 0.95, 0.05
# Switch payloads: HA's defaults, so the discovery payload and the command parser agree.
ON, OFF = "ON", "OFF"
PRESS = "PRESS"
# Features an entity may depend on; an entity whose feature is off is announced as removed.
# RECOGNITION: ``[recognition] enabled``; ENROLMENT: recognition with the controls on (the
# entities that send enrol / forget commands).
SNAPSHOT, CONTROLS, CPU_TEMPERATURE = "snapshot", "controls", "cpu_temperature"
RECOGNITION, ENROLMENT = "recognition", "enrolment"
# The longest person name, in characters (the gallery's rule: edge.recognize.gallery.NAME_PATTERN).
# Stated here, numpy-free, for HA's text entity; tests check that the gallery agrees.
MAX_NAME_CHARS = 64
# A person's component id: "person_" + an ASCII slug of the name (readable in HA's entity
# registry) + a hash of the exact name (two names with one slug stay two entities).
PERSON_PREFIX = "person_"
_PERSON_SLUG_CHARS = 24
_PERSON_HASH_HEX = 10
_PERSON_COMPONENT = re.compile(rf"{PERSON_PREFIX}[a-z0-9_]{{1,{_PERSON_SLUG_CHARS + _PERSON_HASH_HEX + 1}}}")
# Person components that went away (forgotten, or left in an old config on the broker) and
# are still announced as removed in this run; beyond this, the oldest are dropped.
MAX_RETIRED_PEOPLE = 256


# The stats keys copied into the retained ``health`` summary (each stats interval): what
# ``edge-face fleet`` shows, readable at once instead of after a whole stats interval.
HEALTH_KEYS = (
    "time",
    "uptime_seconds",
    "fps",
    "invoke_ms_p50",
    "cpu_temperature_c",
    "events_dropped",
    "source_state",
    "detection",
)


@dataclass(frozen=True)
class DeviceTopics:
    """Every topic of one device, under its validated prefix (``edge-face/<device_id>``).

    ``controls`` holds the retained JSON state of the controls; commands arrive on
    ``command_prefix/<control>`` (:func:`command_topic`)."""

    status: str
    events: str
    state: str
    snapshot: str
    stats: str
    health: str
    controls: str
    command_prefix: str

    @classmethod
    def under(cls, prefix: str) -> Self:
        return cls(
            status=f"{prefix}/status",
            events=f"{prefix}/events",
            state=f"{prefix}/state",
            snapshot=f"{prefix}/snapshot",
            stats=f"{prefix}/stats",
            health=f"{prefix}/health",
            controls=f"{prefix}/controls",
            command_prefix=f"{prefix}/set",
        )

    def command(self, control: str) -> str:
        return f"{self.command_prefix}/{control}"

    @property
    def command_filter(self) -> str:
        """The subscription that receives every control command."""
        return f"{self.command_prefix}/+"

    @property
    def retained(self) -> tuple[str, ...]:
        """The topics the daemon leaves retained on the broker (cleared by ``forget``)."""
        return (self.status, self.state, self.snapshot, self.health, self.controls)


@dataclass(frozen=True)
class Entity:
    """One Home Assistant entity of the device: ``key`` is its component id (and the tail of
    its unique_id), ``topic`` names the :class:`DeviceTopics` field its state comes from,
    ``command`` the control it sends to (``None``: read-only), ``needs`` the feature
    without which it is announced as removed. ``options``: platform-specific fields."""

    key: str
    platform: str
    name: str
    topic: str | None = None
    template: str | None = None
    device_class: str | None = None
    unit: str | None = None
    state_class: str | None = None
    category: str | None = None
    icon: str | None = None
    command: str | None = None
    needs: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


_SWITCH_PAYLOADS = {"payload_on": ON, "payload_off": OFF, "state_on": ON, "state_off": OFF}


def _control(
    key: str,
    platform: str,
    name: str,
    icon: str,
    options: dict[str, Any],
    shows_state: bool = True,
    needs: str = CONTROLS,
    template: str | None = None,
) -> Entity:
    """An entity that sends to the control ``key`` (a configuration entity, there while
    ``needs`` is on) and, unless ``shows_state`` is False (a button), shows that control's
    value from the retained controls topic (``template``: how, when not the plain value)."""
    return Entity(
        key,
        platform,
        name,
        "controls" if shows_state else None,
        (template or f"{{{{ value_json.{key} }}}}") if shows_state else None,
        category=CONFIG,
        icon=icon,
        command=key,
        needs=needs,
        options=dict(options),
    )


# The declarative list: what Home Assistant shows, in the order it shows it.
ENTITIES: tuple[Entity, ...] = (
    Entity(
        "face_present",
        "binary_sensor",
        "Face present",
        "state",
        "{{ 'ON' if value_json.present else 'OFF' }}",
        device_class="occupancy",
        options={
            "payload_on": ON,
            "payload_off": OFF,
            "json_attributes_topic": "state",
            "json_attributes_template": "{{ {'detection': value_json.detection} | tojson }}",
        },
    ),
    Entity(
        "face_count",
        "sensor",
        "Face count",
        "state",
        "{{ value_json.count }}",
        unit=FACE_COUNT_UNIT,
        state_class="measurement",
        icon="mdi:account-multiple",
    ),
    # HA's MQTT sensor reads the string "None" as "no value" (never seen yet).
    Entity(
        "last_seen", "sensor", "Last seen", "state", "{{ value_json.last_seen or 'None' }}", device_class="timestamp"
    ),
    Entity(
        "face_event",
        "event",
        "Face event",
        "events",
        "{{ {'event_type': value_json.type, 'count': value_json.face_count, "
        "'sequence': value_json.sequence, 'person': value_json.person | default(None)} | tojson }}",
        icon="mdi:face-recognition",
        options={"event_types": list(EVENT_TYPES)},
    ),
    Entity(
        "snapshot",
        "image",
        "Last face",
        needs=SNAPSHOT,
        options={"image_topic": "snapshot", "content_type": "image/jpeg"},
    ),
    _control("detection", "switch", "Detection", "mdi:cctv", _SWITCH_PAYLOADS),
    _control("snapshots", "switch", "Snapshots", "mdi:image-outline", _SWITCH_PAYLOADS),
    _control(
        "score_threshold",
        "number",
        "Score threshold",
        "mdi:tune-vertical",
        {"min": SCORE_THRESHOLD_MIN, "max": SCORE_THRESHOLD_MAX, "step": SCORE_THRESHOLD_STEP, "mode": "box"},
    ),
    _control("reannounce", "button", "Re-announce", "mdi:bullhorn", {"payload_press": PRESS}, shows_state=False),
    # Recognition (opt-in): who was recognised last, and enrolment from HA. The person
    # sensors and the "Person to forget" select depend on who is enrolled: person_entities().
    Entity(
        "last_person",
        "sensor",
        "Last person",
        "state",
        "{{ value_json.last_person or 'None' }}",
        icon="mdi:account-search",
        needs=RECOGNITION,
    ),
    # min 0: HA refuses to show a text state shorter than min, and no name is "".
    _control(
        "enrol_name",
        "text",
        "Enrol as",
        "mdi:form-textbox",
        {"min": 0, "max": MAX_NAME_CHARS, "mode": "text"},
        needs=ENROLMENT,
        template="{{ value_json.enrol_name | default('', true) }}",
    ),
    _control(
        "enrol",
        "button",
        "Enrol current face",
        "mdi:account-plus",
        {"payload_press": PRESS},
        shows_state=False,
        needs=ENROLMENT,
    ),
    _control(
        "forget",
        "button",
        "Forget person",
        "mdi:account-remove",
        {"payload_press": PRESS},
        shows_state=False,
        needs=ENROLMENT,
    ),
    Entity(
        "enrolment",
        "sensor",
        "Last enrolment",
        "controls",
        "{{ value_json.enrolment | default('None', true) }}",
        category=DIAGNOSTIC,
        icon="mdi:account-check",
        needs=ENROLMENT,
    ),
    Entity(
        "fps",
        "sensor",
        "Frame rate",
        "stats",
        "{{ value_json.fps }}",
        unit="fps",
        state_class="measurement",
        category=DIAGNOSTIC,
        icon="mdi:speedometer",
    ),
    Entity(
        "inference_ms",
        "sensor",
        "Inference time",
        "stats",
        "{{ value_json.invoke_ms_p50 }}",
        device_class="duration",
        unit="ms",
        state_class="measurement",
        category=DIAGNOSTIC,
    ),
    Entity(
        "dropped_frames",
        "sensor",
        "Dropped frames",
        "stats",
        "{{ value_json.dropped_frames }}",
        unit="frames",
        state_class="total_increasing",
        category=DIAGNOSTIC,
        icon="mdi:filmstrip-off",
    ),
    Entity(
        "source_state",
        "sensor",
        "Camera state",
        "stats",
        "{{ value_json.source_state }}",
        category=DIAGNOSTIC,
        icon="mdi:camera",
    ),
    Entity(
        "outbox_depth",
        "sensor",
        "MQTT outbox",
        "stats",
        "{{ value_json.queue_depth }}",
        unit="events",
        state_class="measurement",
        category=DIAGNOSTIC,
        icon="mdi:tray-full",
    ),
    Entity(
        "cpu_temperature",
        "sensor",
        "CPU temperature",
        "stats",
        "{{ value_json.cpu_temperature_c }}",
        device_class="temperature",
        unit="°C",
        state_class="measurement",
        category=DIAGNOSTIC,
        needs=CPU_TEMPERATURE,
    ),
    Entity(
        "uptime",
        "sensor",
        "Uptime",
        "stats",
        "{{ value_json.uptime_seconds }}",
        device_class="duration",
        unit="s",
        category=DIAGNOSTIC,
    ),
)


def zone_entities(zone: str) -> tuple[Entity, ...]:
    """The entities of one ``[[scene.zones]]`` zone (its name is ``[a-z0-9_]{1,32}``, safe in
    a template, a component id and a unique_id): its presence and its face count."""
    zone_state = f"(value_json.zones | default({{}})).get('{zone}', {{}})"
    return (
        Entity(
            f"zone_{zone}_present",
            "binary_sensor",
            f"Face present {zone}",
            "state",
            f"{{{{ 'ON' if {zone_state}.get('present') else 'OFF' }}}}",
            device_class="occupancy",
            options={"payload_on": ON, "payload_off": OFF},
        ),
        Entity(
            f"zone_{zone}_count",
            "sensor",
            f"Face count {zone}",
            "state",
            f"{{{{ {zone_state}.get('count', 0) }}}}",
            unit=FACE_COUNT_UNIT,
            state_class="measurement",
            icon="mdi:account-multiple",
        ),
    )


def person_component(name: str) -> str:
    """The component id (and unique_id tail) of ``name``'s presence sensor: ``[a-z0-9_]``
    only, whatever the name holds, so a name never reaches a topic or an id; the hash of the
    exact name keeps "Zoë" and "Zoe" (one slug) apart."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "_", ascii_name.lower()).strip("_")[:_PERSON_SLUG_CHARS].strip("_")
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:_PERSON_HASH_HEX]
    return f"{PERSON_PREFIX}{slug}_{digest}" if slug else f"{PERSON_PREFIX}{digest}"


def jinja_string(text: str) -> str:
    """``text`` as a Jinja string literal that holds only ``[A-Za-z0-9 ]`` and escapes: a
    name with a quote, a brace or a backslash cannot end the literal or the template."""
    escaped = "".join(
        char if (char.isascii() and char.isalnum()) or char == " " else f"\\U{ord(char):08x}" for char in text
    )
    return f"'{escaped}'"


def person_entity(name: str) -> Entity:
    """The occupancy sensor of one enrolled person: on while the state's ``people`` says
    they are present; ``last_seen`` as an attribute. The name is the entity's label only."""
    person = f"(value_json.people | default({{}})).get({jinja_string(name)}, {{}})"
    return Entity(
        person_component(name),
        "binary_sensor",
        name,
        "state",
        f"{{{{ 'ON' if {person}.get('present') else 'OFF' }}}}",
        device_class="occupancy",
        icon="mdi:account",
        options={
            "payload_on": ON,
            "payload_off": OFF,
            "json_attributes_topic": "state",
            "json_attributes_template": f"{{{{ {{'last_seen': {person}.get('last_seen')}} | tojson }}}}",
        },
    )


def forget_choice_entity(people: Iterable[str]) -> Entity:
    """The "Person to forget" select: its options are the enrolled names (sorted), its state
    the choice the daemon holds, "None" (HA's "no option") when there is none or it is not
    an option: HA logs an error for a state outside the options, which a retained choice may
    be for a moment while a forgotten person's config is replaced."""
    options = sorted(people)
    literals = ", ".join(map(jinja_string, options))
    return _control(
        "forget_name",
        "select",
        "Person to forget",
        "mdi:account-question",
        {"options": options},
        needs=ENROLMENT,
        template=f"{{{{ value_json.forget_name if value_json.forget_name in [{literals}] else 'None' }}}}",
    )


def stale_person_components(retained_config: bytes, current: Iterable[str]) -> tuple[str, ...]:
    """The person components a discovery config found retained on our own discovery topic
    announces that ``current`` (component ids) does not: a gallery changed while the daemon
    was stopped, or recognition turned off. Anything on that topic may come from anyone:
    only keys shaped like :func:`person_component` are taken, at most :data:`MAX_RETIRED_PEOPLE`."""
    try:
        components = json.loads(retained_config.decode("utf-8")).get("cmps")
    except (UnicodeDecodeError, ValueError, AttributeError, RecursionError):
        return ()
    if not isinstance(components, dict):
        return ()
    wanted = set(current)
    stale = [
        key for key in components if isinstance(key, str) and _PERSON_COMPONENT.fullmatch(key) and key not in wanted
    ]
    return tuple(sorted(stale)[:MAX_RETIRED_PEOPLE])


# Fields of an Entity spelled as HA's discovery option of the same meaning.
_FIELD_OPTIONS = (
    ("device_class", "device_class"),
    ("unit", "unit_of_measurement"),
    ("state_class", "state_class"),
    ("category", "entity_category"),
    ("icon", "icon"),
)
# Entity options that name one of our topics rather than carry a literal value.
_TOPIC_OPTIONS = ("json_attributes_topic", "image_topic")


def discovery_topic(discovery_prefix: str, device_id: str) -> str:
    """Where the device-based discovery message for ``device_id`` is published (retained)."""
    return f"{discovery_prefix}/device/{device_id}/config"


def ha_status_topic(discovery_prefix: str) -> str:
    """Where Home Assistant announces itself ("online" after it starts): re-send discovery then."""
    return f"{discovery_prefix}/status"


def unique_id(device_id: str, component: str) -> str:
    return f"edge-face-{device_id}-{component}"


def component_config(entity: Entity, device_id: str, topics: DeviceTopics, qos: int) -> dict[str, Any]:
    """The discovery entry of one entity (its feature is on)."""
    config: dict[str, Any] = {"p": entity.platform, "unique_id": unique_id(device_id, entity.key), "name": entity.name}
    for attribute, option in _FIELD_OPTIONS:
        value = getattr(entity, attribute)
        if value is not None:
            config[option] = value
    if entity.topic is not None:
        config["state_topic"] = getattr(topics, entity.topic)
        config["value_template"] = entity.template
    if entity.command is not None:
        config["command_topic"] = topics.command(entity.command)
    for option, value in entity.options.items():
        config[option] = getattr(topics, value) if option in _TOPIC_OPTIONS else value
    config["qos"] = qos
    return config


def build_discovery_payload(
    device_id: str,
    topics: DeviceTopics,
    sw_version: str,
    model_id: str,
    features: frozenset[str] = frozenset(),
    device_name: str | None = None,
    qos: int = 1,
    zones: tuple[str, ...] = (),
    retired_zones: tuple[str, ...] = (),
    people: tuple[str, ...] = (),
    retired_people: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The device-based discovery payload (a JSON-able dict) for one edge-face device.

    ``features``: which of :data:`SNAPSHOT`, :data:`CONTROLS`, :data:`CPU_TEMPERATURE`,
    :data:`RECOGNITION`, :data:`ENROLMENT` are on; an entity that needs one that is off is
    listed as ``{"p": platform}`` (removed). ``zones``: the configured zones, each with
    :func:`zone_entities`; ``retired_zones``: zones configured before (a reload removed
    them), listed as removed. ``people``: the enrolled names (with recognition on), each with
    :func:`person_entity`; ``retired_people``: person component ids announced before and no
    longer enrolled (:func:`person_component`), listed as removed."""
    entities = (*ENTITIES, forget_choice_entity(people))
    components = {
        entity.key: (
            component_config(entity, device_id, topics, qos)
            if entity.needs is None or entity.needs in features
            else {"p": entity.platform}
        )
        for entity in entities
    }
    components.update({key: {"p": "binary_sensor"} for key in retired_people})
    if RECOGNITION in features:
        components.update(
            {entity.key: component_config(entity, device_id, topics, qos) for entity in map(person_entity, people)}
        )
    for zone in retired_zones:
        components.update({entity.key: {"p": entity.platform} for entity in zone_entities(zone)})
    for zone in zones:
        components.update(
            {entity.key: component_config(entity, device_id, topics, qos) for entity in zone_entities(zone)}
        )
    return {
        "dev": {
            "identifiers": [f"edge-face-{device_id}"],
            "name": device_name or f"edge-face {device_id}",
            "manufacturer": MANUFACTURER,
            "model": MODEL,
            "model_id": model_id,
            "sw_version": sw_version,
        },
        "o": {"name": ORIGIN_NAME, "sw_version": sw_version},
        "availability_topic": topics.status,
        "availability_template": AVAILABILITY_TEMPLATE,
        "payload_available": "online",
        "payload_not_available": "offline",
        "cmps": components,
    }


def removal_messages(discovery_prefix: str | None, device_id: str, topics: DeviceTopics) -> list[tuple[str, bytes]]:
    """(topic, empty payload) pairs that remove a device: its discovery config (HA deletes
    the device and its entities; skipped when ``discovery_prefix`` is None), every retained
    topic it left on the broker, and its command topics (a retained command left by any
    client must not outlive the device). Publish them retained."""
    messages = [] if discovery_prefix is None else [(discovery_topic(discovery_prefix, device_id), b"")]
    entities = (*ENTITIES, forget_choice_entity(()))
    commands = [topics.command(entity.command) for entity in entities if entity.command is not None]
    return messages + [(topic, b"") for topic in (*topics.retained, *commands)]
