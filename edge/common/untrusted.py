"""Text and JSON that came from the broker, made safe to hold and to print.

Anyone who may publish on the broker decides what a retained message holds, so what
``edge-face fleet`` (or the daemon, looking at an old identity) reads is untrusted: it may be
megabytes long, not UTF-8, not JSON, JSON of the wrong shape, or carry terminal escape
sequences meant for the operator's terminal. Pure functions only.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

# Unicode categories that never print as themselves: control (Cc: ESC, BEL, CR, ...), format
# (Cf: bidirectional overrides, zero-width), surrogates, private use, unassigned, and the
# line and paragraph separators.
_HIDDEN_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")
ELLIPSIS = "..."


def printable(text: str, limit: int = 80) -> str:
    """``text`` with every character that does not print as itself shown escaped (``\\x1b``,
    ``\\u202e``), cut to ``limit`` characters (ending in ``...``): one harmless line."""
    shown: list[str] = []
    length = 0
    for char in text:
        if unicodedata.category(char) in _HIDDEN_CATEGORIES:
            code = ord(char)
            piece = f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
        else:
            piece = char
        if length + len(piece) > limit:
            while shown and length + len(ELLIPSIS) > limit:  # whole pieces: never half an escape
                length -= len(shown.pop())
            return "".join(shown) + ELLIPSIS
        shown.append(piece)
        length += len(piece)
    return "".join(shown)


def decoded(payload: bytes) -> str:
    """A payload as text: invalid UTF-8 becomes U+FFFD (never an exception)."""
    return payload.decode("utf-8", "replace")


def json_object(payload: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(the JSON object, None), or (None, why not) for a payload that is not one: not UTF-8,
    not JSON, nested too deep for the parser, or JSON of another type."""
    try:
        # Decoded here: json.loads would take a byte order mark for UTF-16 or UTF-32.
        value = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not UTF-8"
    except RecursionError:
        return None, "JSON nested too deep"
    except ValueError:  # json.JSONDecodeError, or an integer with too many digits
        return None, "not JSON"
    if not isinstance(value, dict):
        return None, f"JSON {type(value).__name__}, not an object"
    return value, None
