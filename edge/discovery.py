"""Home Assistant MQTT discovery: the retained config message that makes the device appear.

Pure functions only: they build topic strings and JSON-able dicts; ``edge.mqtt`` publishes
them. One device-based discovery message (``<prefix>/device/<device_id>/config``, HA
2024.11+) carries the device, the origin and every component, so HA sets up the whole device
from one retained message and removes a component we stop listing (the snapshot image when
snapshots are turned off).

Field names follow https://www.home-assistant.io/integrations/mqtt/#device-discovery-payload:
the top level uses the documented short keys ``dev``, ``o``, ``cmps`` and each component
names its platform with ``p``, as in HA's own example; every other option is spelled out,
since readable names help whoever debugs the payload with ``mosquitto_sub``.
"""

from __future__ import annotations

from dataclasses import dataclass

ORIGIN_NAME = "edge-face"
MANUFACTURER = "edge-face"
MODEL = "edge-face int8 face detector"
# HA's default birth/LWT payloads on <discovery_prefix>/status.
HA_ONLINE = "online"
# Our status topic says "online", "offline" (LWT) or "stopped" (clean exit). HA's
# availability only understands two payloads, so the template folds "stopped" (and
# anything unexpected) into "offline": a stopped daemon must not look available.
AVAILABILITY_TEMPLATE = "{{ 'online' if value == 'online' else 'offline' }}"


@dataclass(frozen=True)
class DiscoveryTopics:
    """The device's own topics that the discovery message points Home Assistant at."""

    status: str
    state: str
    snapshot: str | None  # None: snapshots are off, no image entity


def discovery_topic(discovery_prefix: str, device_id: str) -> str:
    """Where the device-based discovery message for ``device_id`` is published (retained)."""
    return f"{discovery_prefix}/device/{device_id}/config"


def ha_status_topic(discovery_prefix: str) -> str:
    """Where Home Assistant announces itself ("online" after it starts): re-send discovery then."""
    return f"{discovery_prefix}/status"


def unique_id(device_id: str, component: str) -> str:
    return f"edge-face-{device_id}-{component}"


def build_discovery_payload(
    device_id: str,
    topics: DiscoveryTopics,
    sw_version: str,
    model_id: str,
    device_name: str | None = None,
    qos: int = 1,
) -> dict:
    """The device-based discovery payload (a JSON-able dict) for one edge-face device.

    Components: ``face_present`` (binary_sensor, occupancy), ``face_count`` (sensor), and
    ``snapshot`` (image) only when ``topics.snapshot`` is set. Both sensors read the
    retained JSON on ``topics.state`` ({"present": bool, "count": int, "last_seen": ...}).
    """
    components: dict[str, dict] = {
        "face_present": {
            "p": "binary_sensor",
            "unique_id": unique_id(device_id, "face_present"),
            "name": "Face present",
            "device_class": "occupancy",
            "state_topic": topics.state,
            "value_template": "{{ 'ON' if value_json.present else 'OFF' }}",
            "payload_on": "ON",
            "payload_off": "OFF",
        },
        "face_count": {
            "p": "sensor",
            "unique_id": unique_id(device_id, "face_count"),
            "name": "Face count",
            "state_class": "measurement",
            "icon": "mdi:account-multiple",
            "state_topic": topics.state,
            "value_template": "{{ value_json.count }}",
        },
    }
    if topics.snapshot is not None:
        components["snapshot"] = {
            "p": "image",
            "unique_id": unique_id(device_id, "snapshot"),
            "name": "Snapshot",
            "image_topic": topics.snapshot,
            "content_type": "image/jpeg",
        }
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
        "qos": qos,
        "cmps": components,
    }
