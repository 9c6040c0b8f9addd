"""Property: any TOML document either validates or yields exactly one ConfigError whose text is one
line naming a key (or the file), never another exception; and check-config and `edge-face run`
(run_main, in-process) give the same verdict and the same error line for every document.

Documents are generated from the schema itself (every section and key, values at and beyond
each rule's limits) plus garbage: unknown sections and keys, random types, unicode, huge
integers, NaN and infinities, nested tables, arrays, dates. Deterministic (derandomize)."""

from __future__ import annotations

import contextlib
import datetime
import io
import logging
import math
import os
import re
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edge.config import (
    SECTIONS,
    Boolean,
    Choice,
    ConfigError,
    FilePath,
    FolderPath,
    Integer,
    Number,
    Text,
    Topic,
    describe,
    load_config,
    read_secret,
    schema,
)
from edge.daemon.loop import run_main
from edge.exitcodes import ExitCode
from edge.ops.check_config import check_config_main

pytestmark = pytest.mark.integration

FUZZ_SETTINGS = settings(
    max_examples=int(os.environ.get("EDGE_FACE_FUZZ_EXAMPLES", "1000")),
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Paths the generated documents point at: usable ones and every kind of unusable one."""
    from broker import make_test_pki

    root = tmp_path_factory.mktemp("fuzz")
    pki = make_test_pki(root / "pki")
    (root / "model.tflite").write_bytes(b"x")
    (root / "frames").mkdir()
    (root / "pw").write_text("s3cret\n")
    (root / "pw-latin1").write_bytes(b"caf\xe9")
    os.mkfifo(root / "fifo")
    (root / "loop").symlink_to(root / "loop")
    return {
        "model": root / "model.tflite",
        "folder": root / "frames",
        "password": root / "pw",
        "latin1": root / "pw-latin1",
        "fifo": root / "fifo",
        "loop": root / "loop",
        "missing": root / "missing",
        "ca": pki.ca_file,
        "cert": pki.server_cert,
        "key": pki.server_key,
        "other_key": pki.wrong_name_key,
        "config": root / "edge-face.toml",
    }


# --- values ---------------------------------------------------------------------------------------

GARBAGE = st.recursive(
    st.one_of(
        st.booleans(),
        st.integers(),
        st.sampled_from([2**63, -(2**63) - 1, 10**40, 0, -1]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=12),
        st.sampled_from(["", " ", "\n", "\x00", "é", "日本", "$SYS", "{device_id}", "rtsp://admin:hunter2@cam/s"]),
        st.just(datetime.datetime(1979, 5, 27, 7, 32, tzinfo=datetime.UTC)),
        st.just(datetime.date(2024, 2, 29)),
    ),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(string.ascii_lowercase, min_size=1, max_size=4), children, max_size=3)
    ),
    max_leaves=6,
)


def values_for(rule, files: dict[str, Path]) -> st.SearchStrategy:
    """Values a user might write for a key with ``rule``: mostly valid ones (so that documents
    get deep into validation), values just outside each limit, and garbage of every type."""
    if isinstance(rule, Integer):
        valid = st.integers(rule.minimum, rule.maximum) | st.sampled_from([rule.minimum, rule.maximum])
        wrong = st.sampled_from([rule.minimum - 1, rule.maximum + 1, float(rule.minimum), str(rule.minimum)])
    elif isinstance(rule, Number):
        valid = st.floats(
            rule.minimum, rule.maximum, exclude_min=rule.exclusive_minimum, exclude_max=rule.exclusive_maximum
        )
        wrong = st.sampled_from(
            [
                math.nextafter(rule.maximum, math.inf),
                math.nextafter(rule.minimum, -math.inf),
                math.nan,
                math.inf,
                -math.inf,
                str(rule.maximum),
            ]
        )
    elif isinstance(rule, Choice):
        valid = st.sampled_from(rule.choices)
        wrong = st.sampled_from(["", rule.choices[0].upper(), 5, "5.0", [rule.choices[0]]])
    elif isinstance(rule, Boolean):
        valid = st.booleans()
        wrong = st.sampled_from([1, 0, "true", "yes"])
    elif isinstance(rule, Topic):
        valid = st.sampled_from(["edge-face/{device_id}", "home", "ha/{device_id}/x", "ü/ok"])
        wrong = st.sampled_from(
            ["$SYS/x", "$SYS", "a//b", "a/+/b", "a/#", "/a", "a/", "{host}", "a b", "a/\x01", "x" * 1100]
        )
    elif isinstance(rule, FilePath):
        good = (
            ["model", "folder", "password", "ca", "cert", "key"]
            if rule.kind == "file-or-folder"
            else ["model", "password", "ca", "cert", "key"]
        )
        valid = st.sampled_from([str(files[name]) for name in good])
        wrong = st.sampled_from(
            [str(files[name]) for name in ("latin1", "fifo", "loop", "missing", "other_key", "folder")]
            + ["", "relative/missing", "~nosuchuser/x", "a\x00b"]
        )
    elif isinstance(rule, FolderPath):  # written to by the daemon, created when missing
        valid = st.sampled_from([str(files["folder"]), str(files["missing"]), "relative/state", "~/state"])
        wrong = st.sampled_from(["", "a\x00b"])
    elif isinstance(rule, Text):
        valid = st.sampled_from(
            ["broker.lan", "10.0.0.2", "::1", "edge-face", "rtsp://admin:hunter2@cam/s", "0", "localhost"]
        )
        wrong = st.sampled_from(
            ["a..b", "br\u00f6ker", "user:pw@host", "x" * 70_000, "Living Room", "tab\there", "", "\n"]
        )
    else:
        raise AssertionError(rule)
    # One key in ten wrong, one in twenty garbage: most documents then fail on one key, deep
    # into validation, instead of all on the first section.
    return st.integers(0, 19).flatmap(lambda pick: GARBAGE if pick == 0 else wrong if pick < 3 else valid)


@st.composite
def documents(draw, files: dict[str, Path]) -> dict:
    keys: dict[str, list] = {}
    for section, name, rule, _default in schema():
        keys.setdefault(section, []).append((name, rule))
    document: dict = {}
    garbage_sections = ["mqttt", "extra", "Device"] if draw(st.integers(0, 9)) == 0 else []
    section_names = draw(st.lists(st.sampled_from([*SECTIONS, *garbage_sections]), max_size=7, unique=True))
    for section in section_names:
        if draw(st.integers(0, 30)) == 0:  # a section written as a value
            document[section] = draw(GARBAGE)
            continue
        table: dict = {}
        for name, rule in keys.get(section, []):
            if draw(st.integers(0, 2)) == 0:
                table[name] = draw(values_for(rule, files))
        if draw(st.integers(0, 15)) == 0:
            table[draw(st.sampled_from(["hots", "threads", "x", "é", "a b", ""]))] = draw(GARBAGE)
        document[section] = table
    # Often a coherent broker block (TLS files that belong together), so that documents reach
    # the password, certificate and topic checks; random keys may still spoil it.
    if isinstance(document.get("mqtt"), dict) and draw(st.booleans()):
        coherent: dict = {"host": "broker.lan", "username": "u", "password_file": str(files["password"])}
        if draw(st.booleans()):
            key_file = files["key"] if draw(st.integers(0, 3)) else files["other_key"]
            coherent |= {
                "tls": True,
                "ca_file": str(files["ca"]),
                "cert_file": str(files["cert"]),
                "key_file": str(key_file),
            }
        document["mqtt"] = coherent | (dict(list(document["mqtt"].items())[:1]) if draw(st.booleans()) else {})
    # Usually a model that exists, so validation goes on past [detector].
    if draw(st.integers(0, 19)) and isinstance(document.get("detector", {}), dict):
        document.setdefault("detector", {}).setdefault("model", str(files["model"]))
    return document


# --- a TOML writer for generated documents --------------------------------------------------------


def toml_string(text: str) -> str:
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_string(key)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise AssertionError(type(value))


def to_toml(document: dict) -> str:
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in document.items() if not isinstance(v, dict)]
    for section, table in document.items():
        if isinstance(table, dict):
            lines.append(f"[{toml_key(section)}]")
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


# --- the property ---------------------------------------------------------------------------------


KEY_OR_FILE = re.compile(r"^config (key (?P<key>'[^']*'|\"[^\"]*\")( is |: )|file '.*': )")


def captured(command, path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = command(str(path))
    return code, out.getvalue(), err.getvalue()


def run_time_consumers_accept(config) -> None:
    """What the daemon does with a loaded config before its loop: the MQTT sink's own checks
    (topics, protocol) and reading the secret must not refuse what the loader accepted."""
    if config.mqtt.password_file is not None:
        read_secret(config.mqtt.password_file)
    if config.mqtt.host is not None:
        from edge.mqtt.sink import MqttSink

        MqttSink(
            config.mqtt,
            config.homeassistant,
            config.device.id,
            "model",
            config.snapshot.enabled,
            logging.getLogger("fuzz"),
        )


@FUZZ_SETTINGS
@given(data=st.data())
def test_any_document_validates_or_names_one_key(files, data, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    document = data.draw(documents(files))
    detector = document.setdefault("detector", {})
    if isinstance(detector, dict):
        # The default is the real packaged model: `run` would go on to open a camera.
        detector.setdefault("model", str(files["model"]))
    text = to_toml(document)
    if data.draw(st.integers(0, 19)) == 0:  # sometimes not TOML at all
        text += data.draw(st.sampled_from(["[mqtt\n", "x = \n", "= 1\n", "[[a]]\n[a]\n", "x = 1\nx = 2\n"]))
    path = files["config"]
    path.write_text(text, encoding="utf-8")

    try:
        config = load_config(path, environ={})
    except ConfigError as exc:
        message = str(exc)
        assert len(message.splitlines()) == 1 and "\n" not in message, message
        match = KEY_OR_FILE.match(message)
        assert match, message
        if match.group("key"):
            section = match.group("key")[1:-1].split(".")[0]
            assert section in SECTIONS or section in document, message
        assert "hunter2" not in message and "s3cret" not in message
        event(
            "error: " + (match.group("key") or "file").split(".")[0].strip("'\"")
        )  # coverage, --hypothesis-show-statistics
        assert captured(check_config_main, path) == (ExitCode.CONFIG, "", f"error: {message}\n")
        # `edge-face run` refuses it with the same line, before anything starts.
        assert captured(run_main, path) == (ExitCode.CONFIG, "", f"error: {message}\n")
    else:
        event("valid" + (" with MQTT" if config.mqtt.host else ""))
        run_time_consumers_accept(config)
        assert captured(check_config_main, path) == (ExitCode.OK, f"ok: {describe(config)}\n", "")
        # `edge-face run` accepts it: it gets as far as loading the model, which here is a
        # one-byte stand-in, so it stops there with the model's exit code, not the config's.
        code, _, err = captured(run_main, path)
        assert code == ExitCode.MODEL and "Traceback" not in err, err
