"""Test helpers: a real Mosquitto broker on a free 127.0.0.1 port, a test PKI, a subscriber.

* :class:`MosquittoBroker` writes a mosquitto.conf into a temp folder and runs the real
  ``mosquitto`` binary: plain or TLS listener, optional password file (hashed by
  ``mosquitto_passwd -U``, so no password appears in any argv), optional persistence (so a
  subscriber's session and its queued messages survive ``stop()`` + ``start()``). ``stop()``
  then ``start()`` reuses the same port.
* :func:`make_test_pki` makes a throw-away CA and server certificates with the ``openssl``
  CLI: one valid for localhost/127.0.0.1, one for another name (hostname-check tests), and a
  second unrelated CA (wrong-CA tests).
* :class:`Subscriber` is a plain paho client that records every message it receives.
* :class:`CuttableProxy` sits between a client and the broker and can swallow the client's
  bytes (so what it sends is "in flight" forever) and cut the connection: a network failure
  with a known set of unacknowledged messages, which stopping the broker cannot give.

Every wait is bounded: helpers raise ``TimeoutError`` rather than hang a test run.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0


def require_mosquitto() -> None:
    """Fail (not skip) with a clear line when the broker binaries are missing: the MQTT
    tests are part of the product's contract and the set-up script installs them."""
    missing = [name for name in ("mosquitto", "mosquitto_passwd", "openssl") if shutil.which(name) is None]
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} not found on PATH: install mosquitto, mosquitto-clients and openssl "
            "(the project's set-up script does: apt-get install mosquitto mosquitto-clients)"
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


# --- test PKI --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca_file: Path  # the CA that signed both server certificates
    server_cert: Path  # SAN DNS:localhost, IP:127.0.0.1
    server_key: Path
    wrong_name_cert: Path  # same CA, SAN DNS:elsewhere.invalid only
    wrong_name_key: Path
    other_ca_file: Path  # an unrelated CA: the broker's chain does not verify against it


CERT_DAYS = "2"  # every test certificate: the PKI is made anew for each test session


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {result.stderr.strip()}")


def _new_key_and_request(folder: Path, key: Path, out: Path, subject: str, *options: str) -> None:
    """``openssl req`` with a fresh unencrypted P-256 key written to ``key``: a certificate
    request in ``out``, or with ``-x509`` among ``options`` a self-signed certificate."""
    _openssl(
        "req",
        *options,  # first: they name the command in _openssl's error ("req -x509", "req -new")
        *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
        *("-keyout", key.name, "-out", out.name, "-subj", subject),
        cwd=folder,
    )


def _make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    _new_key_and_request(
        folder,
        key,
        cert,
        f"/CN=edge-face test {name}",
        *("-x509", "-days", CERT_DAYS),
        *("-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
        *("-addext", "subjectKeyIdentifier=hash"),
    )
    return cert, key


def _make_server_cert(folder: Path, name: str, ca: tuple[Path, Path], san: str) -> tuple[Path, Path]:
    cert, key, csr, ext = (folder / f"{name}{suffix}" for suffix in (".pem", ".key", ".csr", ".ext"))
    _new_key_and_request(folder, key, csr, f"/CN={name}", "-new")
    ext.write_text(
        f"subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    _openssl(
        "x509",
        *("-req", "-in", csr.name, "-out", cert.name, "-days", CERT_DAYS, "-extfile", ext.name),
        *("-CA", ca[0].name, "-CAkey", ca[1].name, "-CAcreateserial"),
        cwd=folder,
    )
    return cert, key


def make_test_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    ca = _make_ca(folder, "ca")
    other_ca = _make_ca(folder, "other-ca")
    server = _make_server_cert(folder, "server", ca, "DNS:localhost,IP:127.0.0.1")
    wrong_name = _make_server_cert(folder, "wrong-name", ca, "DNS:elsewhere.invalid")
    return Pki(
        ca_file=ca[0],
        server_cert=server[0],
        server_key=server[1],
        wrong_name_cert=wrong_name[0],
        wrong_name_key=wrong_name[1],
        other_ca_file=other_ca[0],
    )


# --- broker ----------------------------------------------------------------------------------


class MosquittoBroker:
    """A real mosquitto on 127.0.0.1:``port`` configured from the arguments.

    ``users``: {name: password} -> password file and ``allow_anonymous false``; without it
    anonymous clients are allowed. ``tls``: (cert, key, ca) of the server -> a TLS listener.
    ``host``: the address to listen on (the fleet bench's bridge; ``port`` must then be given).
    ``persistence``: keep sessions and queued QoS 1 messages across ``stop()``/``start()``
    (and across ``kill()`` too: the store is saved at every change). ``acl``: the text of a
    mosquitto ACL file (e.g. to deny publishing on one topic).
    """

    def __init__(
        self,
        workdir: Path,
        users: dict[str, str] | None = None,
        tls: tuple[Path, Path, Path] | None = None,
        persistence: bool = False,
        port: int | None = None,
        host: str = HOST,
        acl: str | None = None,
    ) -> None:
        require_mosquitto()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = host
        self.log_file = self.workdir / "mosquitto.log"
        self.config_file = self.workdir / "mosquitto.conf"
        self._process: subprocess.Popen | None = None
        self._write_config(users, tls, persistence, acl)

    def _write_config(self, users, tls, persistence, acl=None) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            # mosquitto drops root privileges to user 'mosquitto' unless told otherwise;
            # it must stay who we are to read the temp files the tests wrote.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            "log_dest stderr",
            "log_type all",
            "connection_messages true",
        ]
        if users:
            password_file = self.workdir / "passwords"
            password_file.write_text("".join(f"{name}:{password}\n" for name, password in users.items()))
            password_file.chmod(0o600)
            result = subprocess.run(
                ["mosquitto_passwd", "-U", str(password_file)], capture_output=True, text=True, timeout=30
            )
            if result.returncode != 0:
                raise RuntimeError(f"mosquitto_passwd -U failed: {result.stderr.strip()}")
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        else:
            lines.append("allow_anonymous true")
        if tls:
            cert, key, ca = tls
            lines += [f"certfile {cert}", f"keyfile {key}", f"cafile {ca}", "require_certificate false"]
        if persistence:
            store = self.workdir / "store"
            store.mkdir(exist_ok=True)
            lines += [
                "persistence true",
                f"persistence_location {store}/",
                "autosave_on_changes true",
                "autosave_interval 1",
            ]
        if acl is not None:
            acl_file = self.workdir / "acl"
            acl_file.write_text(acl)
            lines.append(f"acl_file {acl_file}")
        self.config_file.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> MosquittoBroker:
        if self.running:
            raise RuntimeError("broker already running")
        with open(self.log_file, "ab") as log:
            self._process = subprocess.Popen(
                ["mosquitto", "-c", str(self.config_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self._process.returncode}:\n{self.log_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"mosquitto did not listen on {self.host}:{self.port} within {START_TIMEOUT_S} s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (mosquitto saves its persistence file then) and wait for the exit."""
        if not self.running:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.running:
            self._process.kill()
            self._process.wait(timeout=10)

    def restart(self) -> MosquittoBroker:
        self.stop()
        return self.start()

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --- proxy -----------------------------------------------------------------------------------


def _accept_in_background(handle: Callable[[socket.socket], None], name: str) -> socket.socket:
    """A socket listening on HOST at a free port; a daemon thread hands each connection it
    accepts to ``handle``, until the socket is closed."""
    listener = socket.create_server((HOST, 0))

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:  # closed
                return
            handle(connection)

    threading.Thread(target=accept, name=name, daemon=True).start()
    return listener


class CuttableProxy:
    """TCP proxy 127.0.0.1:``port`` -> ``broker``. ``swallow_client_bytes()``: the client's
    data is read and dropped from now on (the broker never sees it, so never acknowledges
    it); ``cut()``: close every proxied connection and forward normally again for new ones."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.target = (broker.host, broker.port)
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._swallow = False
        self._closed = False
        self._listener = _accept_in_background(self._forward, "proxy-accept")
        self.host, self.port = HOST, self._listener.getsockname()[1]

    def _forward(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.target, timeout=5)
        upstream.settimeout(None)
        with self._lock:
            self._sockets += [client, upstream]
        threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_client and self._swallow:
                    continue
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def swallow_client_bytes(self) -> None:
        self._swallow = True

    def cut(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
            self._swallow = False
        for end in sockets:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def close(self) -> None:
        self._listener.close()
        self.cut()

    def __enter__(self) -> CuttableProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts connections and never says a word (a hung
    broker, or something that is not a broker): a client must give up on its own."""

    def __init__(self) -> None:
        self.accepted: list[socket.socket] = []
        self.listener = _accept_in_background(self.accepted.append, "silent-accept")
        self.host, self.port = HOST, self.listener.getsockname()[1]

    def close(self) -> None:
        self.listener.close()
        for connection in self.accepted:
            connection.close()

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- subscriber ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Subscriber:
    """A paho client that records what it receives (thread-safe) and can wait for it.

    ``persistent=True``: a fixed client id and a non-clean MQTT 3.1.1 session, so a broker
    with persistence queues QoS 1 messages for it while either side is away.
    """

    def __init__(
        self,
        broker: MosquittoBroker,
        topics: list[str],
        persistent: bool = False,
        username: str | None = None,
        password: str | None = None,
        ca_file: Path | None = None,
        client_id: str | None = None,
    ) -> None:
        self.broker = broker
        self.topics = topics
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self._subscribed = 0
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-sub-{uuid.uuid4().hex[:8]}",
            clean_session=not persistent,
            protocol=paho.MQTTv311,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca_file is not None:
            self.client.tls_set(ca_certs=str(ca_file))
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe([(topic, 2) for topic in self.topics])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._cond:
            self._subscribed += 1
            self._cond.notify_all()

    def _on_message(self, client, userdata, message) -> None:
        with self._cond:
            self.messages.append(Received(message.topic, bytes(message.payload), message.qos, bool(message.retain)))
            self._cond.notify_all()

    def start(self, timeout: float = 10.0) -> Subscriber:
        """Connect and return once the subscription is acknowledged."""
        self.client.connect(self.broker.host, self.broker.port, keepalive=10)
        self.client.loop_start()
        self.wait_until(lambda: self._subscribed > 0, timeout, "the SUBACK")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Subscriber:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no {what} within {timeout} s; received: {self.summary()}")
                self._cond.wait(remaining)

    def on(self, topic: str) -> list[Received]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, topic: str, count: int = 1, timeout: float = 10.0) -> list[Received]:
        """The first ``count`` messages on ``topic``, waiting up to ``timeout`` s for them."""
        self.wait_until(
            lambda: len([m for m in self.messages if m.topic == topic]) >= count,
            timeout,
            f"{count} message(s) on {topic!r}",
        )
        return self.on(topic)[:count]

    def wait_for_payload(self, topic: str, payload: bytes, timeout: float = 10.0) -> Received:
        self.wait_until(
            lambda: any(m.topic == topic and m.payload == payload for m in self.messages),
            timeout,
            f"{payload!r} on {topic!r}",
        )
        return next(m for m in self.on(topic) if m.payload == payload)

    def clear(self) -> None:
        with self._cond:
            self.messages.clear()

    def summary(self) -> str:
        return ", ".join(f"{m.topic}={m.payload[:40]!r}" for m in self.messages[-20:]) or "nothing"


def try_connect(
    broker: MosquittoBroker,
    username: str | None = None,
    password: str | None = None,
    ca_file: Path | None = None,
    protocol: int = paho.MQTTv5,
    timeout: float = 10.0,
):
    """One connection attempt; returns the CONNACK reason code (paho ReasonCode)."""
    result: list = []
    done = threading.Event()
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=protocol)
    if username is not None:
        client.username_pw_set(username, password)
    if ca_file is not None:
        client.tls_set(ca_certs=str(ca_file))

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        result.append(reason_code)
        done.set()

    client.on_connect = on_connect
    client.connect(broker.host, broker.port, keepalive=10)
    client.loop_start()
    try:
        if not done.wait(timeout):
            raise TimeoutError(f"no CONNACK from {broker.host}:{broker.port} within {timeout} s")
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0]
