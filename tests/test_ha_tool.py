"""The real-Home-Assistant check's own parts, without running Home Assistant.

The check itself (tools/ha_check.sh: a Debian trixie root, Home Assistant, minutes on its
first run, root) runs from `make ha-check` / `make test`. Here: the script parses and refuses
bad arguments before touching anything, and the websocket client speaks RFC 6455 framing to
a real socket server (the project has no websocket package to lean on).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tools.ha.client import HomeAssistant, HomeAssistantError, StateChanges

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def script(project_root: Path) -> Path:
    return project_root / "tools" / "ha_check.sh"


def test_script_parses(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_script_passes_shellcheck(script: Path) -> None:
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("args", "code", "named"),
    [
        (["--help"], 0, "--cache"),
        (["--frobnicate"], 2, "--frobnicate"),
        (["--cache"], 2, "--cache"),
    ],
)
def test_help_and_bad_arguments(script: Path, args: list[str], code: int, named: str) -> None:
    result = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == code
    if code:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and named in lines[0] and result.stdout == ""
    else:
        assert named in result.stdout


# --- the websocket client against a minimal server ------------------------------------------------

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _read_frame(connection: socket.socket) -> dict:
    _, second = connection.recv(2, socket.MSG_WAITALL)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", connection.recv(2, socket.MSG_WAITALL))
    elif length == 127:
        (length,) = struct.unpack("!Q", connection.recv(8, socket.MSG_WAITALL))
    assert second & 0x80, "a client frame must be masked (RFC 6455 5.3)"
    mask = connection.recv(4, socket.MSG_WAITALL)
    payload = connection.recv(length, socket.MSG_WAITALL)
    return json.loads(bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def _send_frames(connection: socket.socket, message: dict, pieces: int = 1) -> None:
    """Send ``message`` as ``pieces`` frames (a first frame, then continuations)."""
    data = json.dumps(message).encode()
    size = -(-len(data) // pieces)
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    for number, chunk in enumerate(chunks):
        opcode = 0x1 if number == 0 else 0x0
        fin = 0x80 if number == len(chunks) - 1 else 0
        if len(chunk) < 126:
            header = struct.pack("!BB", fin | opcode, len(chunk))
        else:
            header = struct.pack("!BBQ", fin | opcode, 127, len(chunk))
        connection.sendall(header + chunk)


def _upgrade(connection: socket.socket) -> None:
    """Answer the client's HTTP upgrade to a WebSocket, then ask for its token, as HA does."""
    request = b""
    while b"\r\n\r\n" not in request:
        request += connection.recv(4096)
    key = next(line.split(b": ")[1] for line in request.split(b"\r\n") if line.startswith(b"Sec-WebSocket-Key"))
    accept = base64.b64encode(hashlib.sha1(key + _GUID.encode()).digest()).decode()
    connection.sendall(
        (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
        ).encode()
    )
    _send_frames(connection, {"type": "auth_required"})


def _fake_home_assistant(server: socket.socket, token: str, result: object) -> None:
    connection, _ = server.accept()
    with connection:
        _upgrade(connection)
        auth = _read_frame(connection)
        if auth != {"type": "auth", "access_token": token}:
            _send_frames(connection, {"type": "auth_invalid"})
            return
        _send_frames(connection, {"type": "auth_ok"})
        command = _read_frame(connection)
        _send_frames(connection, {"id": 99, "type": "event"})  # something else first: skipped
        _send_frames(connection, {"id": command["id"], "type": "result", "success": True, "result": result}, pieces=3)


@pytest.mark.parametrize("token, ok", [("right", True), ("wrong", False)])
def test_websocket_command_round_trip(token: str, ok: bool) -> None:
    big = [{"entity_id": f"sensor.s{i}", "unique_id": "x" * 50} for i in range(200)]  # long frames, in pieces
    with socket.create_server(("127.0.0.1", 0)) as server:
        worker = threading.Thread(target=_fake_home_assistant, args=(server, "right", big), daemon=True)
        worker.start()
        ha = HomeAssistant(f"http://127.0.0.1:{server.getsockname()[1]}", timeout=10)
        ha.token = token
        if ok:
            assert ha.entity_registry() == big
        else:
            with pytest.raises(HomeAssistantError, match="authentication refused"):
                ha.entity_registry()
        worker.join(10)


def _fake_state_stream(server: socket.socket, changes: list[tuple[str, str]], done: threading.Event) -> None:
    """Accept a state_changed subscription and send ``changes`` (entity_id, state) at once."""
    connection, _ = server.accept()
    with connection:
        _upgrade(connection)
        _read_frame(connection)
        _send_frames(connection, {"type": "auth_ok"})
        subscribe = _read_frame(connection)
        assert subscribe == {"id": 1, "type": "subscribe_events", "event_type": "state_changed"}
        _send_frames(connection, {"id": 1, "type": "result", "success": True, "result": None})
        for entity_id, state in changes:
            data = {"entity_id": entity_id, "new_state": {"entity_id": entity_id, "state": state, "attributes": {}}}
            _send_frames(connection, {"id": 1, "type": "event", "event": {"event_type": "state_changed", "data": data}})
        done.wait(10)  # open until the client closes


def test_state_changes_keeps_every_state_of_the_watched_entities_even_within_a_millisecond() -> None:
    sent = [("event.e", "t1"), ("sensor.other", "x"), ("event.e", "t2"), ("binary_sensor.p", "on"), ("event.e", "t3")]
    done = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as server:
        worker = threading.Thread(target=_fake_state_stream, args=(server, sent, done), daemon=True)
        worker.start()
        ha = HomeAssistant(f"http://127.0.0.1:{server.getsockname()[1]}", timeout=10)
        ha.token = "t"
        with StateChanges(ha, {"event.e", "binary_sensor.p"}) as stream:
            deadline = time.monotonic() + 10
            while len(stream.states("event.e")) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert [s["state"] for s in stream.states("event.e")] == ["t1", "t2", "t3"]
            assert [s["state"] for s in stream.states("binary_sensor.p")] == ["on"]
            assert stream.states("sensor.other") == []
        done.set()
        worker.join(10)
