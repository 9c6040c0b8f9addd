"""Who the device is on the broker and in Home Assistant, remembered across runs, and the
retirement of names it no longer uses, so that neither a ghost device stays behind nor a
live one is removed.

The record (``announced.json`` in ``device.state_dir``) holds the identity last announced
(device id, broker, topic prefix, discovery prefix), every zone announced under it, and the
old identities still to be removed ("retiring"). Paths that change the identity:

* a rename or move by reload: the old identity was ours a moment ago; it is removed,
* a rename or move while stopped (an edited config): the same, at the next start,
* a state directory copied from another device (a cloned SD card) with its config edited:
  the stored identity is then the *other* device's. It is removed only if its retained
  status is not "online": a running device is never removed (a warning says what to do),
* the broker away at that moment: the removal is retried in the background with the
  reconnect backoff, across restarts (the record keeps it), never blocking the frame loop,
* zones removed from the config while stopped: announced as removed at the next start.

Removal messages never touch a topic the current identity publishes on the same broker
(a rename under a fixed topic prefix keeps its status, state and discovery topics).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from edge.config import Config
from edge.mqtt.discovery import STATUS_ONLINE, DeviceTopics, discovery_topic

IDENTITY_FILE_NAME = "announced.json"
IDENTITY_KEYS = ("device_id", "host", "port", "topic_prefix", "discovery_prefix")
# Zones remembered per identity (16 may be configured at once; renamed ones accumulate).
MAX_REMEMBERED_ZONES = 64
MAX_RETIRING = 16
# How long a look at an old identity's retained status waits.
LIVENESS_TIMEOUT_S = 3.0


def record_path(config: Config) -> Path:
    return Path(config.device.state_dir) / IDENTITY_FILE_NAME


def identity_of(config: Config) -> dict[str, Any]:
    """What names the device on the broker and in HA; a change leaves a ghost unless the old
    identity is removed. ``discovery_prefix`` None: HA discovery was off."""
    ha = config.homeassistant
    return {
        "device_id": config.device.id,
        "host": config.mqtt.host,
        "port": config.mqtt.port,
        "topic_prefix": config.mqtt.topic_prefix,  # {device_id} substituted by the config loader
        "discovery_prefix": ha.discovery_prefix if ha.enabled else None,
    }


@dataclasses.dataclass
class Record:
    """The stored record. ``retiring``: identities to remove, each with ``verify`` True when
    it may belong to another running device (checked for "online" first)."""

    identity: dict[str, Any] | None
    zones: list[str]
    retiring: list[dict[str, Any]]


def load_record(path: Path, logger: logging.Logger) -> Record:
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Record(None, [], [])
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        logger.warning("announced identity '%s' cannot be read (%s); ignoring it", path, exc)
        return Record(None, [], [])
    if not isinstance(stored, dict):
        logger.warning("announced identity '%s' is not one of ours; ignoring it", path)
        return Record(None, [], [])
    identity = {key: stored.get(key) for key in IDENTITY_KEYS} if "device_id" in stored else None
    zones = [z for z in stored.get("zones", []) if isinstance(z, str)] if isinstance(stored.get("zones"), list) else []
    retiring = stored.get("retiring", [])
    retiring = [r for r in retiring if isinstance(r, dict)] if isinstance(retiring, list) else []
    return Record(identity, zones[:MAX_REMEMBERED_ZONES], retiring[:MAX_RETIRING])


def save_record(path: Path, record: Record) -> None:
    """Atomically; raises OSError."""
    data = {**(record.identity or {}), "zones": record.zones, "retiring": record.retiring}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".announced.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, sort_keys=True)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def retired_zones(config: Config, logger: logging.Logger) -> tuple[str, ...]:
    """Zones announced before under this identity and no longer configured (removed from the
    config while the daemon was stopped): the next announcement lists them as removed."""
    record = load_record(record_path(config), logger)
    if record.identity != identity_of(config):
        return ()
    return tuple(zone for zone in record.zones if zone not in config.scene.zone_names)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(key) == b.get(key) for key in IDENTITY_KEYS)


class Retirer:
    """Removes old identities in a background thread, retrying with the reconnect backoff
    while the broker is away; the record keeps what is left for the next start."""

    def __init__(self, config: Config, logger: logging.Logger) -> None:
        self._lock = threading.Condition()
        self._config = config
        self._log = logger
        self._stop = False
        self._queued = False  # announce() recorded something to remove since the thread looked
        # announce() counts up; the thread counts up to it once it has tried everything queued
        # (done, or waiting for the broker): wait_tried() waits for that.
        self._announced = self._tried = 0
        self._thread: threading.Thread | None = None

    def announce(self, config: Config, running: Config | None = None) -> None:
        """``config`` is what the device announces now (start, or a reload from ``running``):
        record it, queue the identity it replaces for removal, and start removing."""
        path = record_path(config)
        record = load_record(path, self._log)
        current = identity_of(config)
        previous = record.identity
        verify = running is None  # at start the stored identity may be another device's
        if running is not None and (previous is None or not _same(previous, identity_of(running))):
            previous = identity_of(running)  # e.g. the state directory moved by this reload
        retiring = [r for r in record.retiring if not _same(r, current)]
        zones = list(config.scene.zone_names)
        if previous is not None and not _same(previous, current):
            if not any(_same(r, previous) for r in retiring):
                retiring.append({**previous, "verify": verify})
        elif previous is not None:
            zones = sorted(set(record.zones) | set(zones))[:MAX_REMEMBERED_ZONES]
        updated = Record(current, zones, retiring[-MAX_RETIRING:])
        with self._lock:
            self._config = config
            try:
                if updated != record:  # a reload storm must not rewrite the file (an SD card) each time
                    save_record(path, updated)
            except OSError as exc:
                self._log.error(
                    "cannot store the announced identity in '%s' (%s; set device.state_dir): a rename "
                    "while stopped would leave the old device behind",
                    path,
                    exc.strerror or exc,
                )
            self._queued = True
            self._announced += 1
            self._lock.notify_all()
        if retiring and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="retire-identity", daemon=True)
            self._thread.start()

    def wait_tried(self, timeout: float) -> None:
        """Up to ``timeout`` s until every identity queued so far has been tried once (removed,
        or left for a retry because its broker is away): the old names go before the new
        ones are announced, as Home Assistant warns about removing a device twice."""
        with self._lock:
            self._lock.wait_for(lambda: self._stop or self._thread is None or self._tried >= self._announced, timeout)

    def stop(self) -> None:
        with self._lock:
            self._stop = True
            self._lock.notify_all()

    def _run(self) -> None:
        delay = self._config.mqtt.reconnect_min_delay
        while True:
            with self._lock:
                if self._stop:
                    return
                config = self._config
            path = record_path(config)
            record = load_record(path, self._log)
            if not record.retiring:
                with self._lock:  # nothing left: sleep until a reload queues more
                    self._tried = self._announced
                    self._lock.notify_all()
                    self._lock.wait_for(lambda: self._stop or self._queued)
                    self._queued = False
                continue
            entry = record.retiring[0]
            done = self._retire(config, entry, path)
            with self._lock:
                if done:  # recorded even when stopping: the next start must not try it again
                    record = load_record(path, self._log)
                    record.retiring = [r for r in record.retiring if not _same(r, entry)]
                    try:
                        save_record(path, record)
                    except OSError as exc:
                        self._log.error("cannot store the announced identity in '%s' (%s)", path, exc.strerror)
                        return
                    delay = config.mqtt.reconnect_min_delay
                if self._stop:
                    return
                if not done:
                    self._tried = self._announced  # the broker is away: retried in the background
                    self._lock.notify_all()
                    self._lock.wait(delay)
                    delay = min(delay * 2, config.mqtt.reconnect_max_delay)

    def _retire(self, config: Config, entry: dict[str, Any], path: Path) -> bool:
        """Remove the old identity ``entry`` (of the record at ``path``) from its broker, unless
        a device still runs there under it; False when its broker could not be asked (retry)."""
        from edge.ops.forget import config_for, forget_device, read_retained

        old = config_for(config, entry)
        if old is None:
            self._log.warning("announced identity in '%s' is not one of ours; ignoring it", path)
            return True
        if old.mqtt.host is None:
            return True
        status = DeviceTopics.under(entry["topic_prefix"]).status
        live = read_retained(old, status, self._log, LIVENESS_TIMEOUT_S) if entry.get("verify") else None
        if live is not None and live[0] == "unreachable":
            return False
        if live is not None and live[1] == STATUS_ONLINE.encode():
            self._log.warning(
                "device '%s' (stored in '%s') is online on broker %s:%s: not removing it (a state "
                "directory copied from a running device?); `edge-face forget` removes it if it is a ghost",
                old.device.id,
                path,
                old.mqtt.host,
                old.mqtt.port,
            )
            return True
        self._log.info(
            "the device was announced as '%s' (broker %s:%s): removing that one",
            old.device.id,
            old.mqtt.host,
            old.mqtt.port,
        )
        return forget_device(
            old,
            self._log,
            config.mqtt.flush_timeout,
            discovery=entry.get("discovery_prefix") is not None,
            keep=self._kept_topics(config, old),
        )

    @staticmethod
    def _kept_topics(config: Config, old: Config) -> frozenset[str]:
        """The topics ``config`` publishes itself, when it is on ``old``'s broker."""
        if (config.mqtt.host, config.mqtt.port) != (old.mqtt.host, old.mqtt.port):
            return frozenset()
        current = identity_of(config)
        topics = DeviceTopics.under(current["topic_prefix"])
        kept = set(topics.retained)
        if current["discovery_prefix"] is not None:
            kept.add(discovery_topic(current["discovery_prefix"], config.device.id))
        return frozenset(kept)
