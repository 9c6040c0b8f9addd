import pytest

from edge.common.redact import redact_url

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("shown", "expected"),
    [
        ("rtsp://admin:hunter2@cam.local/stream", "rtsp://admin:***@cam.local/stream"),
        ("RTSPS://admin:p%40ss@10.0.0.2:322/s", "RTSPS://admin:***@10.0.0.2:322/s"),
        ("https://tok3n@host/x.mjpg", "https://***@host/x.mjpg"),
        ("source opencv 'rtsp://a:b@h/1' and http://c:d@e/2", "source opencv 'rtsp://a:***@h/1' and http://c:***@e/2"),
        ("rtsp://cam.local/stream", "rtsp://cam.local/stream"),
        ("/dev/video0", "/dev/video0"),
        ("user@example.com", "user@example.com"),
    ],
)
def test_credentials_in_urls_are_hidden_and_nothing_else_changes(shown, expected):
    assert redact_url(shown) == expected


def test_a_password_with_colons_is_hidden_whole():
    assert "x:y:z" not in redact_url("rtsp://admin:x:y:z@cam/s")


def test_redaction_is_linear_in_the_text_length():
    # A long word used to be rescanned from every position (quadratic: 20 s for 70,000 characters).
    # Compared against a same-run baseline: 16x the text may take at most ~16x (+ slack), not 256x.
    import time

    def cost(text: str) -> float:
        started = time.perf_counter()
        for _ in range(5):
            redact_url(text)
        return time.perf_counter() - started

    short, long = cost("x" * 4_000 + " rtsp://a:b@h/"), cost("x" * 64_000 + " rtsp://a:b@h/")
    assert long < 16 * 4 * short + 0.05
    assert redact_url("x" * 64_000 + " rtsp://a:b@h/").endswith(" rtsp://a:***@h/")
