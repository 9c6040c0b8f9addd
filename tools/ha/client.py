"""A small client for Home Assistant's REST and websocket APIs (stdlib + requests).

The websocket side is a minimal RFC 6455 client (text frames, client masking, no
extensions): the check needs a handful of registry queries and nothing else, and the
project's environment has no websocket package.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import requests


class HomeAssistantError(RuntimeError):
    pass


class HomeAssistant:
    """``url``: e.g. http://127.0.0.1:8123 (HA's own http server, no proxy in between)."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url, self.timeout = url.rstrip("/"), timeout
        self.token: str | None = None
        self.http = requests.Session()
        self.http.trust_env = False  # loopback: a proxy from the environment must not get it

    # --- REST -----------------------------------------------------------------------------

    def _headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def get(self, path: str, ok: tuple[int, ...] = (200,)) -> requests.Response:
        response = self.http.get(self.url + path, headers=self._headers(), timeout=self.timeout)
        if response.status_code not in ok:
            raise HomeAssistantError(f"GET {path}: HTTP {response.status_code} {response.text[:200]}")
        return response

    def post(self, path: str, body: Any = None, form: dict | None = None) -> Any:
        response = self.http.post(
            self.url + path,
            headers=self._headers(),
            timeout=self.timeout,
            **({"data": form} if form is not None else {"json": body if body is not None else {}}),
        )
        if response.status_code not in (200, 201):
            raise HomeAssistantError(f"POST {path}: HTTP {response.status_code} {response.text[:300]}")
        return response.json() if response.content else None

    def wait_until_up(self, timeout: float, alive: Callable[[], bool]) -> float:
        """Seconds until HA answers on /api/onboarding; raises if ``alive()`` turns False."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if not alive():
                raise HomeAssistantError("Home Assistant exited during start-up (see its log)")
            try:
                if self.http.get(self.url + "/api/onboarding", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise HomeAssistantError(f"Home Assistant did not answer within {timeout:g} s")

    def onboard(self, username: str, password: str) -> None:
        """The onboarding a new user does in the browser, over REST: owner user, token,
        core config, analytics, integration step."""
        client_id = self.url + "/"
        code = self.post(
            "/api/onboarding/users",
            {
                "client_id": client_id,
                "name": "edge-face check",
                "username": username,
                "password": password,
                "language": "en",
            },
        )["auth_code"]
        tokens = self.post(
            "/auth/token", form={"grant_type": "authorization_code", "code": code, "client_id": client_id}
        )
        self.token = tokens["access_token"]
        self.post("/api/onboarding/core_config", {})
        self.post("/api/onboarding/analytics", {})
        self.post(
            "/api/onboarding/integration", {"client_id": client_id, "redirect_uri": client_id + "?auth_callback=1"}
        )

    def add_mqtt(self, host: str, port: int) -> dict:
        """The MQTT integration's config flow (discovery is on by default)."""
        flow = self.post("/api/config/config_entries/flow", {"handler": "mqtt"})
        if flow.get("step_id") != "broker":
            raise HomeAssistantError(f"MQTT config flow: expected the broker step, got {flow}")
        result = self.post(f"/api/config/config_entries/flow/{flow['flow_id']}", {"broker": host, "port": port})
        if result.get("type") != "create_entry" or result["result"]["state"] != "loaded":
            raise HomeAssistantError(f"MQTT config flow did not create a loaded entry: {result}")
        return result["result"]

    def states(self) -> dict[str, dict]:
        return {state["entity_id"]: state for state in self.get("/api/states").json()}

    def state(self, entity_id: str) -> dict | None:
        response = self.get(f"/api/states/{entity_id}", ok=(200, 404))
        return response.json() if response.status_code == 200 else None

    def call_service(self, domain: str, service: str, data: dict) -> None:
        self.post(f"/api/services/{domain}/{service}", data)

    # --- websocket ------------------------------------------------------------------------

    def ws(self, message_type: str, **fields: Any) -> Any:
        """One websocket command (its own connection); returns its result."""
        with _WebSocket(self.url + "/api/websocket", self.timeout) as connection:
            hello = connection.receive()
            if hello.get("type") != "auth_required":
                raise HomeAssistantError(f"websocket: unexpected greeting {hello}")
            connection.send({"type": "auth", "access_token": self.token})
            if connection.receive().get("type") != "auth_ok":
                raise HomeAssistantError("websocket: authentication refused")
            connection.send({"id": 1, "type": message_type, **fields})
            while True:
                reply = connection.receive()
                if reply.get("id") == 1 and reply.get("type") == "result":
                    if not reply.get("success"):
                        raise HomeAssistantError(f"websocket {message_type}: {reply.get('error')}")
                    return reply["result"]

    def entity_registry(self) -> list[dict]:
        return self.ws("config/entity_registry/list")

    def device_registry(self) -> list[dict]:
        return self.ws("config/device_registry/list")


class StateChanges:
    """Every new state Home Assistant gives some entities while it runs (a websocket
    subscription to ``state_changed``, read in a thread): an event entity fires several events
    within a millisecond (``face_cleared`` and ``person_left`` come from one frame), which
    polling its state would miss. A context manager."""

    def __init__(self, ha: HomeAssistant, entity_ids: set[str]) -> None:
        self._entity_ids = set(entity_ids)
        self._lock = threading.Lock()
        self._changes: list[tuple[str, dict]] = []
        self._socket = _WebSocket(ha.url + "/api/websocket", ha.timeout)
        if self._socket.receive().get("type") != "auth_required":
            raise HomeAssistantError("websocket: unexpected greeting")
        self._socket.send({"type": "auth", "access_token": ha.token})
        if self._socket.receive().get("type") != "auth_ok":
            raise HomeAssistantError("websocket: authentication refused")
        self._socket.send({"id": 1, "type": "subscribe_events", "event_type": "state_changed"})
        reply = self._socket.receive()
        if not reply.get("success"):
            raise HomeAssistantError(f"websocket subscribe_events: {reply.get('error')}")
        self._socket.settimeout(None)  # the reader waits for events; close() ends it
        self._thread = threading.Thread(target=self._read, name="ha-state-changes", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while True:
                message = self._socket.receive()
                data = message.get("event", {}).get("data", {}) if message.get("type") == "event" else {}
                if data.get("entity_id") in self._entity_ids and data.get("new_state"):
                    with self._lock:
                        self._changes.append((data["entity_id"], data["new_state"]))
        except (HomeAssistantError, OSError, ValueError):
            return  # closed

    def states(self, entity_id: str) -> list[dict]:
        """The states ``entity_id`` was given since the subscription, oldest first."""
        with self._lock:
            return [state for changed, state in self._changes if changed == entity_id]

    def close(self) -> None:
        self._socket.shutdown()  # wakes the reader blocked in recv
        self._thread.join(5)
        self._socket.__exit__()

    def __enter__(self) -> StateChanges:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _WebSocket:
    def __init__(self, url: str, timeout: float) -> None:
        parsed = urlparse(url)
        self._sock = socket.create_connection((parsed.hostname, parsed.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self._sock.sendall(
            (
                f"GET {parsed.path} HTTP/1.1\r\nHost: {parsed.hostname}:{parsed.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self._sock.recv(4096)
            if not chunk:
                raise HomeAssistantError("websocket: connection closed during the handshake")
            head += chunk
        head, self._buffer = head.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise HomeAssistantError(f"websocket handshake refused: {head.splitlines()[0]!r}")

    def __enter__(self) -> _WebSocket:
        return self

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def shutdown(self) -> None:
        with contextlib.suppress(OSError):  # already closed by the other side
            self._sock.shutdown(socket.SHUT_RDWR)

    def __exit__(self, *exc) -> None:
        self._sock.close()

    def _read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise HomeAssistantError("websocket: connection closed")
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def send(self, message: dict) -> None:
        payload = json.dumps(message).encode()
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x81, 0x80 | length)
        elif length < 1 << 16:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, length)
        mask = os.urandom(4)
        self._sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def receive(self) -> dict:
        message = b""
        while True:
            first, second = self._read(2)
            opcode, length = first & 0x0F, second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self._read(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", self._read(8))
            payload = self._read(length)
            if opcode == 0x8:
                raise HomeAssistantError("websocket: closed by Home Assistant")
            if opcode in (0x9, 0xA):  # ping/pong: HA does not ping within one short command
                continue
            message += payload
            if first & 0x80:
                return json.loads(message)
