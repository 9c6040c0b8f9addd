"""Text and JSON from the broker made safe to print and hold (edge.common.untrusted): pure functions."""

from __future__ import annotations

import pytest

from edge.common.untrusted import json_object, printable

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "text, shown",
    [
        ("porch", "porch"),
        ("\x1b[2J\x1b]0;title\x07", "\\x1b[2J\\x1b]0;title\\x07"),
        ("a\u202eb\u200bc", "a\\u202eb\\u200bc"),  # bidi override, zero-width space
        ("line\nbreak\r\u2028", "line\\x0abreak\\x0d\\u2028"),
        ("\x9b31m", "\\x9b31m"),  # the 8-bit CSI
        ("Grüße °C", "Grüße °C"),  # printable non-ASCII stays as it is
    ],
)
def test_printable_escapes_everything_that_does_not_print_as_itself(text, shown):
    assert printable(text) == shown


def test_printable_cuts_to_the_limit_without_splitting_an_escape():
    assert printable("x" * 100, 10) == "xxxxxxx..."
    assert printable("\x1b" * 50, 12) == "\\x1b\\x1b..."


@pytest.mark.parametrize(
    "payload, problem",
    [
        (b"\xff\xfe{}", "not UTF-8"),  # a UTF-16 byte order mark is not taken as one
        (b"{not json", "not JSON"),
        (b"[" * 50_000, "JSON nested too deep"),
        (b"1" * 5000, "not JSON"),  # an integer over Python's digit limit
        (b"[1, 2]", "JSON list, not an object"),
        (b'"text"', "JSON str, not an object"),
    ],
)
def test_json_object_refuses_what_is_not_an_object_and_says_why(payload, problem):
    assert json_object(payload) == (None, problem)


def test_json_object_returns_an_object():
    assert json_object(b'{"fps": 9.5}') == ({"fps": 9.5}, None)
