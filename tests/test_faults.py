"""Fault injection: the real daemon (`python -m edge.cli run --config`) as a process, a real
Mosquitto, real signals, a real NOTIFY_SOCKET. Everything is asserted from the outside: exit
codes, what the broker delivered (sequences contiguous, none lost), the log lines (one line
per failure, naming its cause, no traceback unless the error is genuinely unexpected).

Run alone with ``pytest -m faults``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from broker import MosquittoBroker, SilentServer, Subscriber, make_test_pki
from cli_support import EDGE_CLI
from daemon_support import bomb_png, build_scene, truncated_jpeg, write_config
from test_sdnotify import NotifyListener

from edge.config import MAX_FLUSH_TIMEOUT_SECONDS, STOP_BUDGET_SECONDS

pytestmark = [pytest.mark.faults, pytest.mark.integration]

DEVICE = "faults"
PREFIX = f"edge-face/{DEVICE}"
FAST_EVENTS = {"debounce_frames": 1, "clear_after_seconds": 0.1}
EVENT_LINE = re.compile(r"event (\d+) (?:face_detected|face_cleared|count_changed)")
LAST_LINE = re.compile(
    r"stopped after \d+ frames: (\d+) event\(s\) made, (\d+) delivered, (\d+) lost "
    r"\((\d+) dropped from a full outbox, (\d+) rejected by the broker, (\d+) undelivered at stop\)$"
)
# The unit's TimeoutStopSec (tested against the unit in test_config): every stop must fit in it.
STOP_BUDGET_S = STOP_BUDGET_SECONDS


class Daemon:
    """One daemon process; stderr goes to a file that the test reads while it runs."""

    def __init__(self, config: Path, project_root: Path, env: dict | None = None, code: str | None = None) -> None:
        self.config = config
        self.stderr_path = config.parent / f"stderr-{uuid.uuid4().hex[:6]}.txt"
        # Open for the daemon's whole life (its stderr), closed in stop(): no with-block fits.
        self._stderr = open(self.stderr_path, "w")  # noqa: SIM115
        command = [sys.executable, "-c", code, str(config)] if code else [*EDGE_CLI, "run", "--config", str(config)]
        self.process = subprocess.Popen(
            command,
            cwd=project_root,
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )

    @property
    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = 60.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while len(re.findall(pattern, self.log)) < count:
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited ({self.process.returncode}) before {pattern!r}:\n{self.log}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} x{count} within {timeout} s:\n{self.log[-4000:]}")
            time.sleep(0.05)

    def wait_more_events(self, count: int) -> None:
        """Until ``count`` more events than the log shows now have been made."""
        self.wait_log(r"event \d+ ", count=len(EVENT_LINE.findall(self.log)) + count)

    def events_made(self) -> int:
        return max((int(n) for n in EVENT_LINE.findall(self.log)), default=0)

    def send(self, signum: int) -> None:
        self.process.send_signal(signum)

    def finish(self, timeout: float = 60.0) -> tuple[int, str]:
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            self.kill()
        return code, self.log

    def kill(self) -> None:
        """Gone for sure (a no-op once it has exited), its stderr file closed."""
        self.process.kill()
        self.process.wait()
        self._stderr.close()

    def stop(self, timeout: float = STOP_BUDGET_S) -> tuple[int, str, float]:
        started = time.monotonic()
        self.send(signal.SIGTERM)
        code, log = self.finish(timeout)
        return code, log, time.monotonic() - started


def last_line(log: str) -> tuple[int, ...]:
    match = LAST_LINE.search(log.strip().splitlines()[-1])
    assert match, f"the last line does not count delivered and lost events:\n{log[-2000:]}"
    return tuple(int(n) for n in match.groups())


def unique_sequences(subscriber: Subscriber) -> list[int]:
    seen, order = set(), []
    for message in subscriber.on(f"{PREFIX}/events"):
        event = json.loads(message.payload)
        if (event["boot_id"], event["sequence"]) not in seen:
            seen.add((event["boot_id"], event["sequence"]))
            order.append(event["sequence"])
    return order


def config_file(tmp_path: Path, model: Path, camera: dict, mqtt: dict | None = None, **sections) -> Path:
    tables = {
        "device": {"id": DEVICE},
        "camera": camera,
        "detector": {"model": model},
        "events": FAST_EVENTS,
        "stats": {"interval_seconds": 1.0},
    }
    if mqtt is not None:
        tables["mqtt"] = {"keepalive": 5, "reconnect_min_delay": 0.1, "reconnect_max_delay": 0.5, **mqtt}
    tables.update(sections)
    return write_config(tmp_path / "edge-face.toml", tables)


@pytest.fixture
def scene(tmp_path, photo_paths, blank):
    """A looping scene at 20 fps that makes an event every few frames."""
    folder = build_scene(tmp_path / "frames", blank, [(photo_paths[0], 2), ("blank", 3)]).folder
    return {"source": "replay", "path": folder, "fps": 20.0, "loop": True}


@pytest.fixture
def daemon_config(tmp_path, int8_model_path, request):
    """Writes (again, for a reload) the test's config file: the int8 model, ``camera`` or else the
    looping scene, ``mqtt`` as [mqtt] (none: no MQTT), other tables as keywords."""

    def write(mqtt: dict | None = None, camera: dict | None = None, model: Path | None = None, **sections) -> Path:
        # The scene is asked for only here: a test with a camera of its own builds none.
        camera = camera if camera is not None else request.getfixturevalue("scene")
        return config_file(tmp_path, model or int8_model_path, camera, mqtt, **sections)

    return write


@pytest.fixture
def start_daemon(project_root):
    """Starts daemons on a config file; any still running when the test ends, passed or failed,
    is killed then, so a test needs no try/finally of its own."""
    started: list[Daemon] = []

    def start(config: Path, env: dict | None = None, code: str | None = None) -> Daemon:
        started.append(Daemon(config, project_root, env=env, code=code))
        return started[-1]

    yield start
    for daemon in started:
        daemon.kill()


@pytest.fixture
def notify_socket():
    """A systemd notify listener on an abstract socket, and the environment that points a daemon at it."""
    name = f"edge-face-faults-{uuid.uuid4().hex}"
    listener = NotifyListener(b"\0" + name.encode())
    yield listener, {"NOTIFY_SOCKET": "@" + name}
    listener.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def persistent_broker(tmp_path):
    """A broker whose store survives stop and kill, and a subscriber whose session lives in it:
    every event the daemon hands over while the subscriber is away is kept for it."""
    broker = MosquittoBroker(tmp_path / "broker", persistence=True).start()
    subscriber = Subscriber(broker, [f"{PREFIX}/events"], persistent=True, client_id=f"faults-{uuid.uuid4().hex[:6]}")
    try:
        yield broker, subscriber.start()
    finally:
        subscriber.stop()
        broker.stop()


def stop_and_assert_all_delivered_in_order(
    daemon: Daemon, subscriber: Subscriber, timeout: float = 20
) -> tuple[int, str]:
    """SIGTERM exits 0 and every event made reached the subscriber once, in order: (made, log)."""
    code, log, _took = daemon.stop()
    assert code == 0, log
    made = max(int(n) for n in EVENT_LINE.findall(log))
    subscriber.wait_until(lambda: len(unique_sequences(subscriber)) >= made, timeout, f"all {made} events")
    assert unique_sequences(subscriber) == list(range(1, made + 1))
    return made, log


# --- the outbox survives reloads and outages; the loop never waits on the network ----------------


def test_reload_during_an_outage_loses_nothing_and_the_watchdog_keeps_pinging(
    daemon_config, start_daemon, persistent_broker, notify_socket
):
    broker, subscriber = persistent_broker
    listener, notify_env = notify_socket
    mqtt = {"host": broker.host, "port": broker.port, "flush_timeout": MAX_FLUSH_TIMEOUT_SECONDS}
    daemon = start_daemon(daemon_config(mqtt), env={**notify_env, "WATCHDOG_USEC": "2000000"})
    subscriber.wait_for(f"{PREFIX}/events", 3, timeout=60)
    broker.stop()
    before = daemon.events_made()
    daemon.wait_more_events(8)  # queued in the outbox
    daemon_config({**mqtt, "client_id": "after-reload"})
    daemon.send(signal.SIGHUP)
    daemon.wait_log(r"configuration reloaded \(changed: mqtt\)")
    daemon.wait_more_events(4)  # still flowing
    assert daemon.events_made() >= before + 12
    time.sleep(3.0)  # the outage lasts three watchdog periods at least, however fast the replay
    broker.start()
    subscriber.wait_until(lambda: len(unique_sequences(subscriber)) >= before + 12, 30, "the queued events")
    made, log = stop_and_assert_all_delivered_in_order(daemon, subscriber, timeout=10)
    assert last_line(log) == (made, made, 0, 0, 0, 0)
    assert "Traceback" not in log
    # Pings about 1 s apart (half of WATCHDOG_USEC) through the outage and the reload: the
    # frame loop never waited for the old session's flush (flush_timeout 20 s, 10 watchdog periods).
    pings = [at for at, text in listener.messages if text == "WATCHDOG=1"]
    assert len(pings) >= 3 and max(b - a for a, b in itertools.pairwise(pings)) < 2.0


def test_sighup_storm_while_events_flow_loses_nothing(daemon_config, start_daemon, persistent_broker):
    broker, subscriber = persistent_broker
    mqtt = {"host": broker.host, "port": broker.port}
    daemon = start_daemon(daemon_config(mqtt))
    subscriber.wait_for(f"{PREFIX}/events", 3, timeout=60)
    for number in range(10):  # 10 SIGHUPs in 1 s, half of them changing the MQTT client
        daemon_config({**mqtt, "client_id": f"storm-{number % 2}"})
        daemon.send(signal.SIGHUP)
        time.sleep(0.1)
    daemon.wait_more_events(5)
    made, log = stop_and_assert_all_delivered_in_order(daemon, subscriber)
    assert last_line(log)[:3] == (made, made, 0)
    assert "configuration reloaded" in log and "Traceback" not in log


def test_broker_killed_with_sigkill_then_restarted_loses_nothing(daemon_config, start_daemon, persistent_broker):
    broker, subscriber = persistent_broker
    daemon = start_daemon(daemon_config({"host": broker.host, "port": broker.port}))
    subscriber.wait_for(f"{PREFIX}/events", 4, timeout=60)
    broker.kill()
    daemon.wait_log(r"MQTT broker \S+ lost the connection")
    daemon.wait_more_events(5)
    broker.start()
    daemon.wait_log(r"MQTT: connected to \S+ \(reconnect")
    daemon.wait_more_events(3)
    made, log = stop_and_assert_all_delivered_in_order(daemon, subscriber)
    assert last_line(log)[:3] == (made, made, 0)


def test_sigterm_mid_outage_exits_0_within_the_budget_and_counts_the_loss(
    daemon_config, start_daemon, persistent_broker
):
    broker, subscriber = persistent_broker
    # The longest flush the config allows: the whole stop must still fit the unit's budget.
    mqtt = {"host": broker.host, "port": broker.port, "flush_timeout": MAX_FLUSH_TIMEOUT_SECONDS, "queue_size": 5}
    daemon = start_daemon(daemon_config(mqtt))
    subscriber.wait_for(f"{PREFIX}/events", 2, timeout=60)
    broker.stop()
    daemon.wait_more_events(8)  # past queue_size
    code, log, took = daemon.stop()
    assert code == 0, log
    assert took < STOP_BUDGET_S - 2, took
    print(f"stop took {took:.1f} s")
    made, delivered, lost, dropped, rejected, undelivered = last_line(log)
    assert made == max(int(n) for n in EVENT_LINE.findall(log))
    assert made == delivered + lost and lost == dropped + rejected + undelivered
    assert dropped >= 3 and undelivered == 5  # the outbox was full when the stop came
    assert delivered == len(unique_sequences(subscriber))
    drops = [line for line in log.splitlines() if "outbox full" in line]
    assert drops and "dropped" in drops[0] and "Traceback" not in log


def test_a_second_sigterm_cuts_the_flush_short(tmp_path, daemon_config, start_daemon):
    closed = MosquittoBroker(tmp_path / "never").port
    daemon = start_daemon(
        daemon_config({"host": "127.0.0.1", "port": closed, "flush_timeout": MAX_FLUSH_TIMEOUT_SECONDS})
    )
    daemon.wait_log(r"event \d+ ", count=3)
    started = time.monotonic()
    daemon.send(signal.SIGTERM)
    time.sleep(1.0)
    daemon.send(signal.SIGTERM)  # an impatient operator
    code, log = daemon.finish(timeout=STOP_BUDGET_S)
    took = time.monotonic() - started
    assert code == 0, log
    assert took < 10, (took, log[-3000:])  # not the 20 s flush a single SIGTERM allows
    made, delivered, lost, _dropped, _rejected, undelivered = last_line(log)
    assert made >= 3 and delivered == 0 and lost == undelivered == made
    assert "Traceback" not in log


def test_sigterm_during_start_up_is_a_clean_stop(daemon_config, start_daemon):
    daemon = start_daemon(daemon_config())
    deadline = time.monotonic() + 60
    # As soon as the handler is in place (before the model is loaded), not before: the
    # kernel's default action for a signal that comes earlier is not ours to change.
    while not int(
        re.search(r"SigCgt:\s*([0-9a-f]+)", Path(f"/proc/{daemon.process.pid}/status").read_text())[1], 16
    ) & (1 << (signal.SIGTERM - 1)):
        assert time.monotonic() < deadline
        time.sleep(0.005)
    code, log, took = daemon.stop()
    assert code == 0, log
    assert "Traceback" not in log and took < STOP_BUDGET_S


# --- bad frame-source items -----------------------------------------------------------------------


def test_a_looping_replay_with_every_kind_of_bad_file_skips_each_once(
    tmp_path, daemon_config, start_daemon, photo_paths
):
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "00.jpg").symlink_to(photo_paths[0])
    bad = {
        "01-bomb.png": lambda p: bomb_png(p),
        "02-truncated.jpg": lambda p: truncated_jpeg(p, photo_paths[1]),
        "03-empty.jpg": lambda p: p.write_bytes(b""),
        "04-fifo.jpg": lambda p: os.mkfifo(p),
        "05-dir.jpg": lambda p: p.mkdir(),
        "06-loop.jpg": lambda p: p.symlink_to(p),
        "07-text.jpg": lambda p: p.write_text("not an image"),
    }
    for name, make in bad.items():
        make(folder / name)
    (folder / "08.jpg").symlink_to(photo_paths[1])
    daemon = start_daemon(daemon_config(camera={"source": "replay", "path": folder, "fps": 20.0, "loop": True}))
    daemon.wait_log(r"ready: first frame")
    daemon.wait_log(r"stats: ", count=3)  # a few passes over the folder
    code, log, _ = daemon.stop()
    assert code == 0, log
    for name in bad:
        lines = [line for line in log.splitlines() if name in line]
        assert len(lines) == 1 and " WARNING edge.sources: replay: skipping " in lines[0], (name, lines)
    assert "01-bomb.png" in log and "Traceback" not in log and " ERROR " not in log


def test_a_looping_replay_of_only_a_bomb_exits_3_instead_of_spinning(tmp_path, daemon_config, start_daemon):
    folder = tmp_path / "frames"
    folder.mkdir()
    bomb_png(folder / "bomb.png")
    code, log = start_daemon(daemon_config(camera={"source": "replay", "path": folder, "loop": True})).finish(
        timeout=60
    )
    assert code == 3, log
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "none of its 1 image file(s) can be read" in errors[0] and "bomb.png" in errors[0]
    assert "Traceback" not in log


# --- no silent exits --------------------------------------------------------------------------------

INJECT = textwrap.dedent(
    """
    import sys
    import {module} as target
    original = target.{cls}.{method}
    calls = []

    def broken(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > {after}:
            raise RuntimeError("injected fault")
        return original(self, *args, **kwargs)

    target.{cls}.{method} = broken
    from edge.daemon.loop import run_main
    sys.exit(run_main(sys.argv[1]))
    """
)


@pytest.mark.parametrize(
    "module, cls, method, after, thread",
    [
        ("edge.sources.replay", "ReplaySource", "read", 5, "frame-grabber"),
        ("edge.mqtt.sink", "MqttSink", "_take_work", 3, "mqtt-transport"),
        ("edge.daemon.pipeline", None, "encode_snapshot", 0, "MainThread"),
    ],
    ids=["frame-grabber", "mqtt-transport", "frame-loop"],
)
def test_an_unexpected_error_in_any_thread_exits_1_with_one_traceback(
    tmp_path, daemon_config, start_daemon, module, cls, method, after, thread
):
    if cls is None:  # a function the frame loop calls (the snapshot encoder)
        code = (
            INJECT.replace("target.{cls}.{method}", "target.{method}")
            .replace("(self, *args", "(*args")
            .format(module=module, method=method, after=after)
        )
    else:
        code = INJECT.format(module=module, cls=cls, method=method, after=after)
    with MosquittoBroker(tmp_path / "broker") as broker:
        config = daemon_config({"host": broker.host, "port": broker.port}, snapshot={"enabled": True})
        exit_code, log = start_daemon(config, code=code).finish(timeout=60)
    assert exit_code == 1, log
    assert log.count("Traceback") == 1 and "RuntimeError: injected fault" in log
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and f"unexpected error in thread {thread}" in errors[0]
    assert "end of stream" not in log
    last_line(log)  # and it still says what was delivered and lost


# --- every MQTT failure explained within one keep-alive ---------------------------------------------


@pytest.fixture
def explained(daemon_config, start_daemon):
    """Runs the daemon with [mqtt] ``mqtt`` (``before`` called once it is up) and checks that the
    failure is logged as ``expected`` within one keep-alive, once and not per retry; the log."""

    def explain(mqtt: dict, expected: str, before=None) -> str:
        daemon = start_daemon(daemon_config(mqtt))
        daemon.wait_log(r"ready: first frame")
        if before is not None:
            before()
        started = time.monotonic()
        daemon.wait_log(expected, timeout=5 + 2)  # keepalive 5 s (+ scheduling slack)
        assert time.monotonic() - started < 5 + 2
        time.sleep(2.0)  # more failed attempts: not logged again
        code, log, _ = daemon.stop()
        assert code == 0, log
        mqtt_lines = [line for line in log.splitlines() if " edge.mqtt: " in line]
        assert len([line for line in mqtt_lines if re.search(expected, line)]) == 1, log  # once, not per retry
        assert "Traceback" not in log
        return log

    return explain


def test_connection_refused_is_explained(tmp_path, explained):
    closed = MosquittoBroker(tmp_path / "never").port
    explained(
        {"host": "127.0.0.1", "port": closed}, rf"MQTT broker 127\.0\.0\.1:{closed} unreachable: connection refused"
    )


def test_a_server_that_never_sends_connack_is_explained(explained):
    with SilentServer() as silent:
        explained(
            {"host": silent.host, "port": silent.port}, r"accepted the connection but sent no CONNACK within 3\.75 s"
        )


def test_tls_client_to_a_plain_port_is_explained(tmp_path, explained, pki):
    with MosquittoBroker(tmp_path / "plain") as broker:
        explained(
            {"host": "localhost", "port": broker.port, "tls": True, "ca_file": pki.ca_file},
            r"TLS handshake failed \(.*\): port \d+ does not seem to speak TLS",
        )


def test_plain_client_to_a_tls_port_is_explained(tmp_path, explained, pki):
    with MosquittoBroker(tmp_path / "tls", tls=(pki.server_cert, pki.server_key, pki.ca_file)) as broker:
        explained(
            {"host": broker.host, "port": broker.port},
            r"closed the connection before its CONNACK \(a TLS port\? then set mqtt\.tls = true\)",
        )


def test_bad_credentials_are_explained(tmp_path, explained):
    password = tmp_path / "password"
    password.write_text("wrong-secret\n")
    with MosquittoBroker(tmp_path / "auth", users={"edge": "right-secret"}) as broker:
        log = explained(
            {"host": broker.host, "port": broker.port, "username": "edge", "password_file": password},
            r"refused the connection: Not authorized \(check mqtt\.username and mqtt\.password_file\)",
        )
    assert "wrong-secret" not in log and "right-secret" not in log


def test_a_tls_broker_that_comes_later_with_a_wrong_name_is_explained(tmp_path, explained, pki):
    broker = MosquittoBroker(tmp_path / "late", tls=(pki.wrong_name_cert, pki.wrong_name_key, pki.ca_file))
    try:
        explained(
            {"host": "localhost", "port": broker.port, "tls": True, "ca_file": pki.ca_file},
            r"TLS certificate verify failed \(Hostname mismatch",
            before=broker.start,
        )
    finally:
        broker.stop()


def test_publishes_rejected_by_the_broker_are_counted_and_logged_rate_limited(tmp_path, daemon_config, start_daemon):
    acl = (
        "topic readwrite edge-face/+/status\ntopic readwrite edge-face/+/state\ntopic readwrite edge-face/+/stats\n"
        "topic readwrite edge-face/+/snapshot\ntopic readwrite homeassistant/#\ntopic read edge-face/+/events\n"
    )
    with MosquittoBroker(tmp_path / "acl", acl=acl) as broker:
        daemon = start_daemon(daemon_config({"host": broker.host, "port": broker.port}))
        daemon.wait_log(r"rejected \d+ message\(s\)")
        daemon.wait_more_events(5)
        code, log, _ = daemon.stop()
    assert code == 0, log
    rejections = [line for line in log.splitlines() if "rejected" in line and "MQTT broker" in line]
    assert len(rejections) == 1 and "Not authorized" in rejections[0]  # not one line per event
    made, delivered, lost, _dropped, rejected, _undelivered = last_line(log)
    # >= 5: the first rejection may be logged before the loop logs its event.
    assert made >= 5 and rejected == made and delivered == 0 and lost == made


# --- reloads that must be refused -----------------------------------------------------------------


def test_a_reload_to_a_broken_config_keeps_the_running_one(daemon_config, start_daemon):
    config = daemon_config()
    daemon = start_daemon(config)
    daemon.wait_log(r"ready: first frame")
    config.write_text(config.read_text() + "\n[mqtt]\nport = 70000\n")
    daemon.send(signal.SIGHUP)
    daemon.wait_log(r"reload failed")
    config.unlink()
    config.mkdir()  # a config path that cannot be read as a file
    daemon.send(signal.SIGHUP)
    daemon.wait_log(r"reload failed", count=2)
    daemon.wait_more_events(3)  # still running on the old config
    code, log, _ = daemon.stop()
    assert code == 0, log
    failures = [line for line in log.splitlines() if "reload failed" in line]
    assert len(failures) == 2 and "'mqtt.port'" in failures[0] and "70000" in failures[0]
    assert str(config) in failures[1]
    assert "Traceback" not in log


@pytest.mark.parametrize("sidecar", ["null", "[1, 2]", "zero-stride"])
def test_a_reload_to_a_model_with_a_bad_sidecar_keeps_the_old_model(
    tmp_path, int8_model_path, daemon_config, start_daemon, sidecar
):
    other = tmp_path / "model" / int8_model_path.name
    other.parent.mkdir()
    other.symlink_to(int8_model_path)
    meta = other.with_suffix(".json")
    if sidecar == "zero-stride":
        data = json.loads(int8_model_path.with_suffix(".json").read_text())
        data["priors"]["strides"] = [0] * len(data["priors"]["strides"])
        meta.write_text(json.dumps(data))
    else:
        meta.write_text(sidecar)
    daemon = start_daemon(daemon_config())
    daemon.wait_log(r"ready: first frame")
    daemon_config(model=other)
    daemon.send(signal.SIGHUP)
    daemon.wait_log(r"reload failed")
    daemon.wait_more_events(3)
    code, log, _ = daemon.stop()
    assert code == 0, log
    failures = [line for line in log.splitlines() if "reload failed" in line]
    assert len(failures) == 1 and str(meta) in failures[0]
    assert "Traceback" not in log


# --- boot order and secrets -------------------------------------------------------------------------


def test_a_camera_url_with_a_password_is_waited_for_and_never_printed(daemon_config, start_daemon, notify_socket):
    listener, notify_env = notify_socket
    camera = {
        "source": "opencv",
        "device": "rtsp://admin:hunter2@127.0.0.1:9/stream",
        "reopen_min_delay": 0.1,
        "reopen_max_delay": 0.4,
    }
    daemon = start_daemon(daemon_config(camera=camera), env={**notify_env, "WATCHDOG_USEC": "1000000"})
    daemon.wait_log(r"waiting for camera: ")
    assert listener.wait_for(lambda texts: any(t.startswith("READY=1\nSTATUS=waiting for camera: ") for t in texts), 10)
    time.sleep(2.0)  # retries with backoff, pings the watchdog meanwhile
    code, log, _ = daemon.stop()
    assert code == 0, log
    assert "hunter2" not in log and "admin:***@127.0.0.1:9" in log
    assert "hunter2" not in "".join(listener.texts())
    assert listener.texts().count("WATCHDOG=1") >= 2
    starting = next(line for line in log.splitlines() if "starting:" in line)
    assert "***" in starting
