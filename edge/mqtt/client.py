"""The paho-mqtt 2.x client, made in one place.

Three parts of edge-face talk to a broker: the daemon's sink (:mod:`edge.mqtt.sink`),
``edge-face forget`` (:mod:`edge.ops.forget`) and ``edge-face fleet`` (:mod:`edge.ops.fleet`). They
share how a client is made from the broker settings (protocol, clean start, credentials,
TLS) and how the broker's CONNACK reaches them: paho 2's ``on_connect`` has five
parameters, of which every caller here needs the reason code only.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import paho.mqtt.client as paho
from paho.mqtt.client import ConnectFlags
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.config import (
    MQTT_PROTOCOLS,
    ConfigError,
    MqttConfig,
    MqttTransport,
    build_tls_context,
    validate_password_file,
)

# The values of mqtt.protocol, as paho numbers them.
PROTOCOLS = dict(zip(MQTT_PROTOCOLS, (paho.MQTTv5, paho.MQTTv311), strict=True))

# Called on each CONNACK, in paho's thread: the client and the broker's reason code.
ConnackHandler = Callable[[paho.Client, ReasonCode], None]
# The largest packet the daemon's client reads from the broker. It receives commands (a few
# bytes), Home Assistant's status and, with discovery off, its own old discovery config
# (about 30 KB with every zone): 256 KiB is ample, and far from what the unit's MemoryMax
# cares about (paho holds a packet several times over while it reads it).
MAX_INCOMING_PACKET_BYTES = 256 * 1024
# Room for a PUBLISH packet's topic and properties around a payload.
PACKET_HEADROOM_BYTES = 4 * 1024


def incoming_packet_limit(own_retained_bytes: int) -> int:
    """The largest packet the daemon reads: :data:`MAX_INCOMING_PACKET_BYTES`, or more where
    it looks at a retained message of its own that may be bigger (its last-face snapshot, up
    to ``snapshot.max_bytes``): below that, its own picture would be refused and replaced by
    the placeholder at every start (MQTT 5), or end the connection (3.1.1)."""
    return max(MAX_INCOMING_PACKET_BYTES, own_retained_bytes + PACKET_HEADROOM_BYTES)


_C = TypeVar("_C", bound=paho.Client)


@dataclass(frozen=True)
class ClientSettings:
    """How a client presents itself to the broker. ``protocol``: a key of :data:`PROTOCOLS`;
    ``password``: the secret itself, read from its file beforehand; ``tls``: None for a
    plain connection."""

    client_id: str
    protocol: str = "5"
    transport: MqttTransport = "tcp"
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    tls_insecure: bool = False

    @classmethod
    def from_config(cls, mqtt: MqttConfig, client_id: str) -> ClientSettings:
        """The settings of the ``[mqtt]`` section, its password file read and its TLS files
        loaded now, so that a reconnect never fails on a file changed since. Raises
        ConfigError naming the key at fault."""
        if mqtt.protocol not in PROTOCOLS:
            raise ConfigError("mqtt.protocol", mqtt.protocol, " or ".join(f'"{p}"' for p in PROTOCOLS))
        return cls(
            client_id=client_id,
            protocol=mqtt.protocol,
            transport=mqtt.transport,
            username=mqtt.username,
            password=(
                validate_password_file(mqtt.password_file) if mqtt.username is not None and mqtt.password_file else None
            ),
            tls=build_tls_context(mqtt) if mqtt.tls else None,
            tls_insecure=mqtt.tls_insecure,
        )


class SizeCappedClient(paho.Client):
    """A paho client that never reads an incoming packet bigger than ``max_incoming_bytes``.

    paho reads a whole packet into memory before anyone sees it, so one huge (retained)
    message on a subscribed topic would cost the process several times its size, again at
    every reconnect. With MQTT 5 the limit goes to the broker in CONNECT (Maximum Packet
    Size, :meth:`connect_properties`) and the broker drops bigger messages for this client.
    MQTT 3.1.1 cannot say so (and a broker may not care): this client looks at each packet's
    announced length before reading its body and, if too big, ends the connection instead
    (paho sees a lost connection); ``refused_bytes`` then holds that length.
    """

    max_incoming_bytes = MAX_INCOMING_PACKET_BYTES
    refused_bytes: int | None = None

    def connect_properties(self) -> Properties | None:
        """The CONNECT properties that tell an MQTT 5 broker our limit (None for 3.1.1)."""
        if self.protocol != paho.MQTTv5:
            return None
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call,unused-ignore]  # untyped in paho
        properties.MaximumPacketSize = self.max_incoming_bytes
        return properties

    def _sock_recv(self, bufsize: int) -> bytes:
        # paho's reader state: the remaining length is known once have_remaining is set, and
        # the body is read only after that (paho 2.x's _packet_read).
        incoming = self._in_packet
        if incoming["have_remaining"] and incoming["remaining_length"] > self.max_incoming_bytes:
            self.refused_bytes = incoming["remaining_length"]
            return b""  # paho: connection lost; nothing of the body was read
        return super()._sock_recv(bufsize)


def new_client(settings: ClientSettings, *, reconnect_on_failure: bool = True) -> paho.Client:
    """A paho client for ``settings`` (callbacks not set). MQTT 5 gets a clean start on every
    connection (paho's default: the first one only), matching 3.1.1's clean session."""
    return _configured(paho.Client, settings, reconnect_on_failure)


def new_capped_client(settings: ClientSettings, *, reconnect_on_failure: bool = True) -> SizeCappedClient:
    """:func:`new_client`, reading no incoming packet over :data:`MAX_INCOMING_PACKET_BYTES`:
    connect it with ``properties=client.connect_properties()``."""
    return _configured(SizeCappedClient, settings, reconnect_on_failure)


def _configured(kind: type[_C], settings: ClientSettings, reconnect_on_failure: bool) -> _C:
    protocol = PROTOCOLS[settings.protocol]
    client = kind(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=settings.client_id,
        clean_session=True if protocol == paho.MQTTv311 else None,
        protocol=protocol,
        transport=settings.transport,
        reconnect_on_failure=reconnect_on_failure,
    )
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls is not None:
        client.tls_set_context(settings.tls)
        client.tls_insecure_set(settings.tls_insecure)
    return client


def max_packet_size(limit: int) -> Properties:
    """CONNECT properties (MQTT 5) asking the broker never to send us a packet over ``limit``
    bytes: it drops a larger message for us instead, so it never reaches our memory."""
    make: Callable[[int], Properties] = Properties  # paho's constructor is untyped
    properties = make(PacketTypes.CONNECT)
    properties.MaximumPacketSize = limit
    return properties


def on_connack(client: paho.Client, handler: ConnackHandler) -> None:
    """Have ``client`` call ``handler(client, reason_code)`` on each CONNACK."""

    def on_connect(
        client: paho.Client, userdata: Any, flags: ConnectFlags, reason_code: ReasonCode, properties: Properties | None
    ) -> None:
        handler(client, reason_code)

    client.on_connect = on_connect
