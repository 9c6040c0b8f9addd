"""What the MQTT sink says on each new connection, and Home Assistant discovery's life cycle.

On every connection: "online" on the status topic, the subscriptions (Home Assistant's status
topic, or with HA off our own old discovery config, to remove it; the command topics when
commands are taken) and, with snapshots off, an empty retained snapshot (an earlier run with
snapshots on must not leave a face image on the broker). Then the discovery message, again
whenever it changes, on the Re-announce button, and when Home Assistant says it is back online
(at most every :data:`HA_BIRTH_INTERVAL_S`: anyone can publish "online" there, a thousand times).

Run-time entities: :attr:`Announcer.zones` is an :class:`~edge.mqtt.retained.EntityRoster`;
a group of entities added and removed while running (people) gets its own roster, replaced
through a method that calls :meth:`Announcer.discovery_changed`, and its names passed to
:func:`~edge.mqtt.discovery.build_discovery_payload`.

Nothing here locks or talks to the network: the sink holds its lock around every call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from edge import __version__
from edge.config import HomeAssistantConfig
from edge.mqtt.delivery import Outgoing, encode_json
from edge.mqtt.discovery import (
    CONTROLS,
    CPU_TEMPERATURE,
    SNAPSHOT,
    STATUS_ONLINE,
    DeviceTopics,
    build_discovery_payload,
    discovery_topic,
    ha_status_topic,
)
from edge.mqtt.retained import CLEARED, EntityRoster

# Discovery goes out again when Home Assistant says it is back online: at once, then at
# most this often however often that is said.
HA_BIRTH_INTERVAL_S = 2.0


class Announcer:
    """The connect-time announcement and the discovery message of one device.

    ``cpu_temperature``: whether the board reports its temperature (asked when discovery
    is built: the sensor is announced only where it has a value)."""

    def __init__(
        self,
        topics: DeviceTopics,
        ha: HomeAssistantConfig,
        device_id: str,
        model_id: str,
        zones: EntityRoster,
        cpu_temperature: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._topics, self._ha, self._device_id, self._model_id = topics, ha, device_id, model_id
        self._cpu_temperature, self._clock = cpu_temperature, clock
        self.zones = zones
        self.own_discovery_topic = discovery_topic(ha.discovery_prefix, device_id)
        self.ha_status_topic = ha_status_topic(ha.discovery_prefix)
        self._connect_pending = False
        self._discovery_pending = False
        self._ha_birth_pending = False  # Home Assistant said "online": discovery is due
        self._next_birth_announce = float("-inf")
        self._removal_pending = False  # HA is off and a config of ours is on the broker

    # --- what happened ---------------------------------------------------------------------

    def connected(self) -> None:
        """A new connection: everything is announced again."""
        self._connect_pending = True

    def discovery_changed(self) -> None:
        """An entity appeared or went (a switch, a roster): discovery goes out again (with HA on)."""
        self._discovery_pending = self._ha.enabled

    def ha_online(self) -> None:
        """Home Assistant's birth message: it forgets non-retained discovery, announce again."""
        self._ha_birth_pending = True

    def old_config_seen(self) -> None:
        """With HA off, a discovery config of ours was found retained: remove it."""
        self._removal_pending = True

    def pending(self, connected: bool) -> bool:
        """Something is still to be said (``connected``: announcements count too)."""
        return self._removal_pending or (connected and (self._connect_pending or self._discovery_pending))

    # --- what to send (connected) ------------------------------------------------------------

    def take(self, snapshots: bool, commands: bool) -> list[Outgoing]:
        """The connect-time announcement and the discovery message, when due. ``snapshots``:
        the snapshot entity is on; ``commands``: the command topics are subscribed to."""
        work: list[Outgoing] = []
        if self._connect_pending:
            self._connect_pending = False
            work.append(Outgoing.retained(self._topics.status, STATUS_ONLINE.encode()))
            if self._ha.enabled:
                work.append(Outgoing.subscribe(self.ha_status_topic, qos=1))
                self._discovery_pending = True
            else:
                # HA turned off: look for a config announced before (retained) to remove it.
                work.append(Outgoing.subscribe(self.own_discovery_topic, qos=1))
            if commands:
                work.append(Outgoing.subscribe(self._topics.command_filter, qos=1))
            if not snapshots:
                work.append(Outgoing.retained(self._topics.snapshot, CLEARED))
        if self._ha_birth_pending and self._clock() >= self._next_birth_announce:
            self._ha_birth_pending, self._discovery_pending = False, True
            self._next_birth_announce = self._clock() + HA_BIRTH_INTERVAL_S
        if self._discovery_pending:
            self._discovery_pending = False
            if self._ha.enabled:
                payload = self.discovery_payload(snapshots, commands)
                work.append(Outgoing.retained(self.own_discovery_topic, encode_json(payload)))
        return work

    def take_removal(self) -> list[Outgoing]:
        """An empty retained config, when one of ours was seen with HA off: HA deletes the
        device (only sent when one exists, as HA warns about removing a device it does not know)."""
        if not self._removal_pending:
            return []
        self._removal_pending = False
        return [Outgoing.retained(self.own_discovery_topic, CLEARED)]

    def discovery_payload(self, snapshots: bool, commands: bool) -> dict[str, Any]:
        features = {SNAPSHOT: snapshots, CONTROLS: commands, CPU_TEMPERATURE: self._cpu_temperature()}
        return build_discovery_payload(
            self._device_id,
            self._topics,
            sw_version=__version__,
            model_id=self._model_id,
            features=frozenset(name for name, on in features.items() if on),
            device_name=self._ha.device_name,
            zones=self.zones.active,
            retired_zones=self.zones.retired,
        )
