"""What the MQTT sink says on each new connection, and Home Assistant discovery's life cycle.

On every connection: "online" on the status topic, the subscriptions (Home Assistant's status
topic, or with HA off our own old discovery config, to remove it; the command topics when
commands are taken) and, with snapshots off, an empty retained snapshot (an earlier run with
snapshots on must not leave a face image on the broker). Then the discovery message, again
whenever it changes, on the Re-announce button, and when Home Assistant says it is back online
(at most every :data:`HA_BIRTH_INTERVAL_S`: anyone can publish "online" there, a thousand times).

Run-time entities: :attr:`Announcer.zones` is an :class:`~edge.mqtt.retained.EntityRoster`;
the enrolled people (recognition on) are another (:meth:`Announcer.set_people`), whose retired
names are kept as component ids (:func:`~edge.mqtt.discovery.person_component`): with HA on,
each connection also reads back the discovery config the broker kept, and a person sensor it
announces that is not enrolled now (the gallery changed while the daemon was stopped, or
recognition was turned off) is listed as removed too (:meth:`Announcer.old_config_read`).

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
    ENROLMENT,
    MAX_RETIRED_PEOPLE,
    RECOGNITION,
    SNAPSHOT,
    STATUS_ONLINE,
    DeviceTopics,
    build_discovery_payload,
    discovery_topic,
    ha_status_topic,
    person_component,
    stale_person_components,
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
        self.people: EntityRoster | None = None  # the enrolled names; None: recognition off
        self._stale_people: tuple[str, ...] = ()  # person component ids read back, not enrolled now

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

    def set_people(self, people: tuple[str, ...] | None) -> bool:
        """The enrolled names (None: recognition off); True when that changes the discovery
        message (it goes out again: new people's sensors, removed entries for the others)."""
        before = self.people
        if people is None:  # off: every person announced so far is listed as removed from now on
            if before is not None:
                self._retire_components(set(map(person_component, before.active + before.retired)))
            self.people = None
        else:
            self.people = (before or EntityRoster()).replaced(tuple(sorted(set(people))))
        changed = before != self.people
        if changed:
            self.discovery_changed()
        return changed

    def old_config_read(self, config: bytes) -> None:
        """(HA on) The discovery config the broker kept from before this connection: its person
        sensors that are not enrolled now are listed as removed."""
        active = set(map(person_component, self.people.active if self.people is not None else ()))
        stale = stale_person_components(config, active | set(self._retired_person_components()))
        if stale:
            self._retire_components(set(stale))
            self.discovery_changed()

    def _retire_components(self, components: set[str]) -> None:
        kept = [key for key in self._stale_people if key not in components]
        self._stale_people = (*kept, *sorted(components))[-MAX_RETIRED_PEOPLE:]

    def _retired_person_components(self) -> tuple[str, ...]:
        """Every person component announced as removed: names retired, ids read back."""
        retired = self.people.retired if self.people is not None else ()
        active = set(map(person_component, self.people.active if self.people is not None else ()))
        ids = dict.fromkeys([*map(person_component, retired), *self._stale_people])
        return tuple(key for key in ids if key not in active)[-MAX_RETIRED_PEOPLE:]

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
                # Before our config goes out: the broker answers with the config it holds, whose
                # person sensors may be ghosts (a gallery changed while we were stopped).
                work.append(Outgoing.subscribe(self.own_discovery_topic, qos=1))
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
        recognition = self.people is not None
        features = {
            SNAPSHOT: snapshots,
            CONTROLS: commands,
            CPU_TEMPERATURE: self._cpu_temperature(),
            RECOGNITION: recognition,
            ENROLMENT: recognition and commands,
        }
        return build_discovery_payload(
            self._device_id,
            self._topics,
            sw_version=__version__,
            model_id=self._model_id,
            features=frozenset(name for name, on in features.items() if on),
            device_name=self._ha.device_name,
            zones=self.zones.active,
            retired_zones=self.zones.retired,
            people=self.people.active if self.people is not None else (),
            retired_people=self._retired_person_components(),
        )
