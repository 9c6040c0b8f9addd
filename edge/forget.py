"""``edge-face forget --config FILE``: remove a device from the broker and Home Assistant.

Publishes an empty retained message on the device's discovery topic (Home Assistant deletes
the device and its entities) and on every retained topic the daemon leaves (status, state,
snapshot, controls), then deletes the stored controls. The installer's ``--uninstall`` /
``--purge`` and the Ansible role's ``state: absent`` run it after stopping the service; the
daemon runs :func:`forget_device` itself for its old identity when a reload renames it.

Its own short-lived MQTT client (client id ``edge-face-forget-<device_id>``) so it never
kicks a running daemon off the broker. Exit codes: 0 done, 1 the broker could not be reached
or did not acknowledge every removal within the timeout, 2 config error.
"""

from __future__ import annotations

import logging
import ssl
import sys
import threading
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import Config, ConfigError, load_config, read_secret
from edge.controls import state_path
from edge.discovery import DeviceTopics, removal_messages
from edge.exitcodes import ExitCode

log = logging.getLogger("edge.forget")
DEFAULT_TIMEOUT_S = 10.0


def forget_device(
    config: Config, logger: logging.Logger, timeout: float = DEFAULT_TIMEOUT_S, discovery: bool = True
) -> bool:
    """Publish the removal messages of ``config``'s device (retained, QoS 1) and wait for every
    acknowledgement; True when the broker acknowledged all of them within ``timeout`` s.
    ``discovery`` False leaves the discovery topic alone (HA warns about removing a device
    it does not know, so the daemon clears it only when it had announced one)."""
    mqtt = config.mqtt
    if mqtt.host is None:
        logger.info("no [mqtt] host: nothing to remove from a broker")
        return True
    topics = DeviceTopics.under(mqtt.topic_prefix)
    # The CLI clears the discovery topic even with HA disabled now: it may have been on before.
    prefix = config.homeassistant.discovery_prefix if discovery else None
    messages = removal_messages(prefix, config.device.id, topics)
    broker = f"{mqtt.host}:{mqtt.port}"
    done = threading.Condition()
    state = {"connected": False, "refused": None, "acked": set()}

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        with done:
            if reason_code.is_failure:
                state["refused"] = str(reason_code)
            else:
                state["connected"] = True
            done.notify_all()

    def on_publish(client, userdata, mid, reason_code, properties) -> None:
        with done:
            state["acked"].add(mid)
            done.notify_all()

    client = _client(config)
    client.on_connect, client.on_publish = on_connect, on_publish
    try:
        client.connect(mqtt.host, mqtt.port, keepalive=mqtt.keepalive)
    except (OSError, ssl.SSLError) as exc:
        logger.error("cannot remove device '%s': broker %s unreachable (%s)", config.device.id, broker, exc)
        return False
    client.loop_start()
    try:
        with done:
            done.wait_for(lambda: state["connected"] or state["refused"], timeout)
            if not state["connected"]:
                reason = state["refused"] or f"no answer within {timeout:g} s"
                logger.error("cannot remove device '%s': broker %s: %s", config.device.id, broker, reason)
                return False
        mids = {client.publish(topic, payload, qos=1, retain=True).mid for topic, payload in messages}
        with done:
            if not done.wait_for(lambda: mids <= state["acked"], timeout):
                logger.error("broker %s did not acknowledge every removal of device '%s' within %g s",
                             broker, config.device.id, timeout)
                return False
        logger.info("removed device '%s' from broker %s (%d retained topics cleared, Home Assistant "
                    "discovery under '%s')", config.device.id, broker, len(messages),
                    config.homeassistant.discovery_prefix)
        return True
    finally:
        client.disconnect()
        client.loop_stop()


def _client(config: Config) -> paho.Client:
    """A paho client with the daemon's broker settings (credentials, TLS, transport)."""
    mqtt = config.mqtt
    protocol = paho.MQTTv5 if mqtt.protocol == "5" else paho.MQTTv311
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"edge-face-forget-{config.device.id}",
        clean_session=True if protocol == paho.MQTTv311 else None,
        protocol=protocol,
        transport=mqtt.transport,
    )
    if mqtt.username is not None:
        password = read_secret(mqtt.password_file) if mqtt.password_file is not None else None
        client.username_pw_set(mqtt.username, password)
    if mqtt.tls:
        context = ssl.create_default_context(cafile=str(mqtt.ca_file) if mqtt.ca_file else None)
        if mqtt.cert_file is not None:
            context.load_cert_chain(str(mqtt.cert_file), str(mqtt.key_file))
        client.tls_set_context(context)
        client.tls_insecure_set(mqtt.tls_insecure)
    return client


def forget_main(config_path: str, timeout: float = DEFAULT_TIMEOUT_S) -> int:
    """``edge-face forget --config FILE``; returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="edge-face forget: %(message)s", stream=sys.stderr)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    try:
        removed = forget_device(config, log, timeout)
    except (OSError, ssl.SSLError, UnicodeDecodeError) as exc:  # unreadable password/cert files
        log.error("cannot remove device '%s': %s", config.device.id, exc)
        removed = False
    stored = state_path(config.device.state_dir)
    try:
        Path(stored).unlink(missing_ok=True)
    except OSError as exc:
        log.error("cannot delete the stored controls '%s': %s", stored, exc.strerror or exc)
        return ExitCode.FAILURE
    return ExitCode.OK if removed else ExitCode.FAILURE
