"""``edge-face forget --config FILE``: remove a device from the broker and Home Assistant.

Publishes an empty retained message on the device's discovery topic (Home Assistant deletes
the device and its entities) and on every retained topic the daemon leaves (status, state,
snapshot, controls), then deletes the stored controls, the announced identity and the face
gallery (biometric data: the ``[recognition] gallery`` file and the state directory's
``gallery.json``, whether recognition is on or not). The
installer's ``--uninstall`` / ``--purge`` and the Ansible role's ``state: absent`` run it
after stopping the service; the daemon removes its own old names itself
(:class:`edge.ops.device_identity.Retirer`, with :func:`forget_device`).

Its own short-lived MQTT client (client id ``edge-face-forget-<device_id>``) so it never
kicks a running daemon off the broker. Exit codes: 0 done, 1 the broker could not be reached
or did not acknowledge every removal within the timeout, 2 config error.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.config import DEVICE_ID_PATTERN, Config, ConfigError, load_config
from edge.exitcodes import ExitCode
from edge.mqtt.client import ClientSettings, max_packet_size, new_client, on_connack
from edge.mqtt.controls import state_path
from edge.mqtt.discovery import DeviceTopics, removal_messages
from edge.ops.device_identity import record_path
from edge.recognize.settings import GALLERY_FILE_NAME

log = logging.getLogger("edge.forget")
DEFAULT_TIMEOUT_S = 10.0
# The largest retained message a look at an old identity takes (a status is a few bytes).
LOOK_MAX_BYTES = 4096


def config_for(config: Config, identity: dict[str, Any]) -> Config | None:
    """``config`` with the broker and names of a stored identity (None if it is malformed)."""
    try:
        device_id, prefix, discovery = identity["device_id"], identity["topic_prefix"], identity["discovery_prefix"]
        host, port = identity["host"], identity["port"]
    except (KeyError, TypeError):
        return None
    strings = all(isinstance(v, str) and v and "#" not in v and "+" not in v for v in (prefix, discovery or "x"))
    if not (
        isinstance(device_id, str)
        and DEVICE_ID_PATTERN.fullmatch(device_id)
        and strings
        and (host is None or isinstance(host, str))
        and isinstance(port, int)
        and not isinstance(port, bool)
    ):
        return None
    ha = config.homeassistant
    return dataclasses.replace(
        config,
        device=dataclasses.replace(config.device, id=device_id),
        mqtt=dataclasses.replace(config.mqtt, host=host, port=port, topic_prefix=prefix),
        homeassistant=dataclasses.replace(
            ha, enabled=discovery is not None, discovery_prefix=discovery or ha.discovery_prefix
        ),
    )


def read_retained(config: Config, topic: str, logger: logging.Logger, timeout: float) -> tuple[str, bytes | None]:
    """The retained payload of ``topic`` on ``config``'s broker: ("ok", payload or None when
    nothing is retained) or ("unreachable", None). What arrives is untrusted: at most
    :data:`LOOK_MAX_BYTES` (MQTT 5 maximum packet size), only compared, never printed."""
    mqtt = config.mqtt
    assert mqtt.host is not None
    done = threading.Condition()
    seen: dict[str, Any] = {}

    def on_connect(client: paho.Client, reason_code: ReasonCode) -> None:
        if reason_code.is_failure:
            with done:
                seen["refused"] = True
                done.notify_all()
        else:
            client.subscribe(topic, qos=0)

    def on_subscribe(client: paho.Client, userdata: Any, mid: int, codes: Any, properties: Any) -> None:
        with done:
            seen["subscribed"] = True
            done.notify_all()

    def on_message(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        with done:
            if message.retain:
                seen["payload"] = bytes(message.payload)
            done.notify_all()

    try:
        client = new_client(ClientSettings.from_config(mqtt, ""))
    except ConfigError as exc:
        logger.error("cannot look at device '%s': %s", config.device.id, exc)
        return "unreachable", None
    on_connack(client, on_connect)
    client.on_subscribe, client.on_message = on_subscribe, on_message
    properties = max_packet_size(LOOK_MAX_BYTES) if mqtt.protocol == "5" else None
    try:
        client.connect(mqtt.host, mqtt.port, keepalive=mqtt.keepalive, properties=properties)
    except OSError:
        return "unreachable", None
    client.loop_start()
    try:
        with done:
            # Retained messages follow the SUBACK at once: a short settle after it.
            done.wait_for(lambda: bool(seen.keys() & {"payload", "refused", "subscribed"}), timeout)
            if "payload" not in seen and "subscribed" in seen:
                done.wait_for(lambda: "payload" in seen, 0.5)
            if "refused" in seen or ("subscribed" not in seen and "payload" not in seen):
                return "unreachable", None
            return "ok", seen.get("payload")
    finally:
        client.disconnect()
        client.loop_stop()


@dataclasses.dataclass
class _Progress:
    """What paho's thread reports during one removal (its callbacks), guarded by ``done``."""

    connected: bool = False
    refused: str | None = None
    acked: set[int] = dataclasses.field(default_factory=set)
    done: threading.Condition = dataclasses.field(default_factory=threading.Condition)

    def on_connect(self, client: paho.Client, reason_code: ReasonCode) -> None:
        with self.done:
            if reason_code.is_failure:
                self.refused = str(reason_code)
            else:
                self.connected = True
            self.done.notify_all()

    def on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason_code: ReasonCode, properties: Properties
    ) -> None:
        with self.done:
            self.acked.add(mid)
            self.done.notify_all()


def forget_device(
    config: Config,
    logger: logging.Logger,
    timeout: float = DEFAULT_TIMEOUT_S,
    discovery: bool = True,
    keep: frozenset[str] = frozenset(),
) -> bool:
    """Publish the removal messages of ``config``'s device (retained, QoS 1) and wait for every
    acknowledgement; True when the broker acknowledged all of them within ``timeout`` s.
    ``discovery`` False leaves the discovery topic alone (HA warns about removing a device
    it does not know, so the daemon clears it only when it had announced one). ``keep``:
    topics left alone (the device's new identity publishes there)."""
    mqtt = config.mqtt
    if mqtt.host is None:
        logger.info("no [mqtt] host: nothing to remove from a broker")
        return True
    topics = DeviceTopics.under(mqtt.topic_prefix)
    # The CLI clears the discovery topic even with HA disabled now: it may have been on before.
    prefix = config.homeassistant.discovery_prefix if discovery else None
    messages = [
        (topic, payload) for topic, payload in removal_messages(prefix, config.device.id, topics) if topic not in keep
    ]
    broker = f"{mqtt.host}:{mqtt.port}"
    progress = _Progress()
    try:
        client = new_client(ClientSettings.from_config(mqtt, f"edge-face-forget-{config.device.id}"))
    except ConfigError as exc:  # a password or TLS file that cannot be used (changed since load)
        logger.error("cannot remove device '%s': %s", config.device.id, exc)
        return False
    on_connack(client, progress.on_connect)
    client.on_publish = progress.on_publish
    try:
        client.connect(mqtt.host, mqtt.port, keepalive=mqtt.keepalive)
    except OSError as exc:  # ssl.SSLError is an OSError
        logger.error("cannot remove device '%s': broker %s unreachable (%s)", config.device.id, broker, exc)
        return False
    client.loop_start()
    try:
        return _publish_removals(client, progress, messages, broker, config, logger, timeout)
    finally:
        client.disconnect()
        client.loop_stop()


def _publish_removals(
    client: paho.Client,
    progress: _Progress,
    messages: list[tuple[str, bytes]],
    broker: str,
    config: Config,
    logger: logging.Logger,
    timeout: float,
) -> bool:
    """Once connected, publish ``messages`` and wait for every acknowledgement (each wait
    bounded by ``timeout`` s); False, the cause logged, when ``broker`` (host:port) refuses or
    is silent."""
    done = progress.done
    with done:
        done.wait_for(lambda: progress.connected or progress.refused, timeout)
        if not progress.connected:
            reason = progress.refused or f"no answer within {timeout:g} s"
            logger.error("cannot remove device '%s': broker %s: %s", config.device.id, broker, reason)
            return False
    mids = {client.publish(topic, payload, qos=1, retain=True).mid for topic, payload in messages}
    with done:
        if not done.wait_for(lambda: mids <= progress.acked, timeout):
            logger.error(
                "broker %s did not acknowledge every removal of device '%s' within %g s",
                broker,
                config.device.id,
                timeout,
            )
            return False
    logger.info(
        "removed device '%s' from broker %s (%d retained topics cleared, Home Assistant discovery under '%s')",
        config.device.id,
        broker,
        len(messages),
        config.homeassistant.discovery_prefix,
    )
    return True


def forget_main(config_path: str, timeout: float = DEFAULT_TIMEOUT_S) -> int:
    """``edge-face forget --config FILE``; returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="edge-face forget: %(message)s", stream=sys.stderr)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    removed = forget_device(config, log, timeout)
    galleries = {config.recognition.gallery_path(config.device.state_dir), config.device.state_dir / GALLERY_FILE_NAME}
    for stored in (state_path(config.device.state_dir), record_path(config), *sorted(galleries)):
        try:
            stored.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.error("cannot delete '%s': %s", stored, exc.strerror or exc)
            return ExitCode.FAILURE
        if stored in galleries:
            log.info("deleted the face gallery '%s' (every enrolled person's descriptors)", stored)
    return ExitCode.OK if removed else ExitCode.FAILURE
