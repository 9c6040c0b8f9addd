"""sd_notify against a real unix datagram socket set as NOTIFY_SOCKET: the notifier alone, the
daemon with a camera that stalls (READY only after the first frame, WATCHDOG only while
frames flow), and the daemon process stopping on SIGTERM (STOPPING=1)."""

from __future__ import annotations

import io
import os
import signal
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest
from cli_support import start_run
from daemon_support import write_config
from fake_picamera2 import FakePicamera2

from edge.config import load_config
from edge.daemon.loop import build_daemon
from edge.daemon.sdnotify import SystemdNotifier
from edge.mqtt.sinks import StdoutSink
from edge.sources.imageio import load_image
from edge.sources.picamera2 import Picamera2Source

pytestmark = pytest.mark.integration


class NotifyListener:
    """The systemd side: a bound AF_UNIX datagram socket that collects (time, message)."""

    def __init__(self, address: str | bytes) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(address)
        self.socket.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.socket.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def texts(self, since: float = 0.0) -> list[str]:
        return [text for at, text in list(self.messages) if at >= since]

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.texts()):
                return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.socket.close()


@pytest.fixture()
def socket_path(tmp_path: Path):
    listener = NotifyListener(str(tmp_path / "notify.sock"))
    yield str(tmp_path / "notify.sock"), listener
    listener.close()


# --- the notifier -----------------------------------------------------------------------------------


def test_messages_arrive_on_a_path_socket(socket_path):
    path, listener = socket_path
    notifier = SystemdNotifier(environ={"NOTIFY_SOCKET": path})
    assert notifier.ready("warming up") and notifier.status("12.5 fps\nsecond line") and notifier.stopping()
    assert listener.wait_for(lambda m: len(m) == 3, timeout=2.0)
    assert listener.texts() == ["READY=1\nSTATUS=warming up", "STATUS=12.5 fps second line", "STOPPING=1"]
    notifier.close()


def test_abstract_socket_names_start_with_at():
    name = f"edge-face-test-{uuid.uuid4().hex}"
    listener = NotifyListener(b"\0" + name.encode())
    try:
        assert SystemdNotifier(environ={"NOTIFY_SOCKET": "@" + name}).notify("READY=1")
        assert listener.wait_for(lambda m: m == ["READY=1"], timeout=2.0)
    finally:
        listener.close()


def test_without_notify_socket_nothing_is_sent():
    notifier = SystemdNotifier(environ={})
    assert not notifier.enabled
    assert notifier.ready() is False and notifier.watchdog_if_due() is False


def test_a_vanished_socket_is_not_fatal(tmp_path):
    notifier = SystemdNotifier(environ={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert notifier.notify("READY=1") is False
    assert notifier.notify("STATUS=x") is False


def test_watchdog_pings_at_half_the_interval_and_only_for_this_pid(socket_path):
    path, listener = socket_path
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}
    notifier = SystemdNotifier(environ=env)
    sent = [notifier.watchdog_if_due(now) for now in (10.0, 10.5, 10.99, 11.0, 11.5, 12.1)]
    assert sent == [True, False, False, True, False, True]
    assert listener.wait_for(lambda m: m == ["WATCHDOG=1"] * 3, timeout=2.0)
    assert SystemdNotifier(environ={**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 2.0
    assert SystemdNotifier(environ={**env, "WATCHDOG_PID": "1"}).watchdog_if_due(0.0) is False
    assert SystemdNotifier(environ={"NOTIFY_SOCKET": path}).watchdog_if_due(0.0) is False


# --- the daemon -------------------------------------------------------------------------------------


def test_ready_after_the_first_frame_and_watchdog_only_while_frames_flow(
    tmp_path, socket_path, int8_model_path, photo_paths
):
    path, listener = socket_path
    camera_class = FakePicamera2.with_scene(load_image(photo_paths[4]))
    camera_class.paused.set()  # the camera starts, but no frame comes yet
    config = load_config(
        write_config(
            tmp_path / "edge-face.toml",
            {
                "device": {"id": "porch"},
                "camera": {"source": "picamera2"},
                "detector": {"model": int8_model_path},
            },
        )
    )
    events = io.StringIO()
    daemon = build_daemon(
        config,
        source=Picamera2Source(320, 240, picamera2_class=camera_class),
        sink=StdoutSink(events),
        notifier=SystemdNotifier(environ={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}),
    )
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(daemon.run()))
    runner.start()
    try:
        # Model loaded and camera open, but no frame processed: not ready, no watchdog.
        time.sleep(0.8)
        assert camera_class.instances and camera_class.instances[0].started
        assert listener.texts() == []

        camera_class.paused.clear()
        assert listener.wait_for(lambda m: "WATCHDOG=1" in m, timeout=10.0)
        texts = listener.texts()
        assert texts[0].startswith("READY=1") and daemon.frames_processed >= 1
        # Pings keep coming while frames flow (every 0.1 s here).
        time.sleep(0.5)
        assert listener.texts().count("WATCHDOG=1") >= 3

        camera_class.paused.set()  # the camera stalls
        time.sleep(0.3)  # let the frame in flight finish
        stalled_at = time.monotonic()
        time.sleep(0.8)
        assert "WATCHDOG=1" not in listener.texts(since=stalled_at)

        resumed_at = time.monotonic()
        camera_class.paused.clear()
        assert listener.wait_for(lambda m: "WATCHDOG=1" in listener.texts(since=resumed_at), timeout=10.0)
    finally:
        camera_class.paused.clear()
        daemon.request_stop()
        runner.join(timeout=30)
    assert codes == [0]
    assert '"type":"face_detected"' in events.getvalue()
    assert listener.wait_for(lambda m: m[-1] == "STOPPING=1", timeout=2.0)
    assert sum(text.startswith("READY=1") for text in listener.texts()) == 1


def test_sigterm_stops_the_process_with_stopping(tmp_path, int8_model_path, photo_paths):
    name = f"edge-face-test-{uuid.uuid4().hex}"
    listener = NotifyListener(b"\0" + name.encode())
    config = write_config(
        tmp_path / "edge-face.toml",
        {
            "device": {"id": "porch"},
            "camera": {"source": "replay", "path": photo_paths[2], "fps": 20.0, "loop": True},
            "detector": {"model": int8_model_path},
            "events": {"debounce_frames": 1},
        },
    )
    env = {**os.environ, "NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "1000000"}
    process = start_run(config, env=env)
    try:
        assert listener.wait_for(lambda m: "WATCHDOG=1" in m, timeout=60.0), listener.texts()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
        listener.close()
    assert process.returncode == 0, err
    texts = listener.texts()
    assert texts[0].startswith("READY=1") and texts[-1] == "STOPPING=1"
    assert out.count('"type":"face_detected"') == 1
    assert "Traceback" not in err
