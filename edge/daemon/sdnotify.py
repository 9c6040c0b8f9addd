"""systemd's sd_notify protocol, stdlib only: datagrams to the socket in ``$NOTIFY_SOCKET``.

Without ``$NOTIFY_SOCKET`` (not started by systemd with ``Type=notify``) every call is a
no-op. A name starting with '@' is a Linux abstract socket ('@' stands for the leading NUL).
Send failures are logged once and otherwise ignored: a monitoring channel must never stop
the service it monitors.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping


class SystemdNotifier:
    """Sends READY/STATUS/WATCHDOG/STOPPING to systemd.

    The watchdog is enabled when ``$WATCHDOG_USEC`` is set (and ``$WATCHDOG_PID``, if set,
    is this process); :meth:`watchdog_if_due` then pings at half that interval at most. It
    is meant to be called once per processed frame, so pings stop when frames stop.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, logger: logging.Logger | None = None) -> None:
        environ = os.environ if environ is None else environ
        self.log = logger or logging.getLogger("edge.sdnotify")
        self.address = _socket_address(environ.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval = _watchdog_interval(environ)
        self._socket: socket.socket | None = None
        self._last_ping: float | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, message: str) -> bool:
        """Send ``message`` (newline-separated KEY=value lines); True if it was sent."""
        if self.address is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto(message.encode("utf-8"), self.address)
            return True
        except OSError as exc:
            if not self._failed:
                self.log.warning("sd_notify to %r failed: %s", self.address, exc)
                self._failed = True
            return False

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> bool:
        # STATUS is one line: a newline would start a new (unintended) assignment.
        return self.notify("STATUS=" + " ".join(text.splitlines()))

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def watchdog_if_due(self, now: float | None = None) -> bool:
        """Ping the watchdog if it is enabled and half its interval has passed since the last ping."""
        if self.watchdog_interval is None:
            return False
        now = time.monotonic() if now is None else now
        if self._last_ping is not None and now - self._last_ping < self.watchdog_interval / 2:
            return False
        self._last_ping = now
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _socket_address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode("utf-8")
    if value.startswith("/"):
        return value
    return None  # vsock and other forms are not used for a service on a Pi


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """The watchdog timeout in seconds, or None when systemd did not enable it for us."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000
