"""Credentials never reach a log line, check-config's output or a status payload.

Camera URLs (``rtsp://user:secret@host/stream``) and similar strings pass through
``redact_url`` wherever they are shown.
"""

from __future__ import annotations

import re

# The lookbehind lets a scheme start only where a run of scheme characters starts: without
# it every position inside a long word was tried and rescanned to its end, so redacting a
# 70,000-character value took 20 s (quadratic); now it is linear.
_USERINFO = re.compile(r"(?<![a-z0-9+.-])(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<userinfo>[^/@\s]*)@", re.IGNORECASE)


def redact_url(text: str) -> str:
    """Replace the password (or a lone token) in every ``scheme://userinfo@`` with ``***``.

    ``rtsp://admin:hunter2@cam/s`` -> ``rtsp://admin:***@cam/s``;
    ``https://token@host/`` -> ``https://***@host/`` (a lone userinfo is often a token).
    """

    def _hide(match: re.Match[str]) -> str:
        user, sep, _secret = match.group("userinfo").partition(":")
        shown = f"{user}:***" if sep else "***"
        return f"{match.group('scheme')}{shown}@"

    return _USERINFO.sub(_hide, text)
