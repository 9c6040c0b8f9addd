"""Helpers for the Home Assistant identity tests: the real daemon on a looping replay of a
real face photo, with HA discovery and controls on, talking to a real Mosquitto; and a look
at what the broker retains (what Home Assistant would see after a restart)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from broker import MosquittoBroker, Subscriber
from cli_support import start_run


class Running:
    """The daemon as a subprocess; its stderr goes to a file the test can read while it runs."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        self._handle = open(log, "a", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self.process = start_run(config, stdout=subprocess.DEVNULL, stderr=self._handle)

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_log(self, needle: str, count: int = 1, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.text().count(needle) < count:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise TimeoutError(f"{needle!r} x{count} not logged within {timeout} s:\n{self.text()[-3000:]}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=30)
        finally:
            self.process.kill()
            self._handle.close()
        return self.process.returncode, self.text()


def retained(broker: MosquittoBroker, topics: list[str], settle: float = 1.0) -> dict[str, bytes]:
    """What a new subscriber receives as retained on ``topics`` (filters allowed)."""
    with Subscriber(broker, topics) as late:
        time.sleep(settle)
        return {m.topic: m.payload for m in late.messages if m.retain}


def latest_json(live: Subscriber, topic: str) -> dict:
    messages = live.on(topic)
    return json.loads(messages[-1].payload) if messages and messages[-1].payload else {}


def wait_json(live: Subscriber, topic: str, predicate, what: str, timeout: float = 15.0) -> dict:
    live.wait_until(lambda: predicate(latest_json(live, topic)), timeout, what)
    return latest_json(live, topic)
