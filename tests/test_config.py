"""edge.config: TOML -> typed config; every rule gives one line naming key, value and what is allowed."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from edge.config import (
    MAX_FLUSH_TIMEOUT_SECONDS,
    SECTIONS,
    STOP_BUDGET_SECONDS,
    Choice,
    ConfigError,
    Integer,
    load_config,
    parse_config,
    read_secret,
    sanitize_device_id,
    schema,
)
from edge.ops.check_config import check_config_main

pytestmark = pytest.mark.integration


@pytest.fixture()
def model_file(tmp_path: Path) -> Path:
    # Config validation only checks that the file exists; loading it is the detector's job.
    path = tmp_path / "model.tflite"
    path.write_bytes(b"x")
    return path


def write_config(folder: Path, text: str) -> Path:
    path = folder / "edge-face.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_for(tmp_path: Path, model_file: Path, text: str, environ: dict | None = None) -> str:
    detector = f'[detector]\nmodel = "{model_file}"\n'
    # Top-level keys must come before the first [table] header to stay top-level.
    path = write_config(tmp_path, detector + text if text.startswith("[") else text + detector)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ or {})
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- the shipped example ----------------------------------------------------------------------


def example_text(project_root: Path) -> str:
    return (project_root / "examples" / "edge-face.toml").read_text(encoding="utf-8")


def test_example_config_is_valid_once_the_model_exists(project_root, model_file, tmp_path):
    data = tomllib.loads(example_text(project_root))
    data["detector"]["model"] = str(model_file)
    config = parse_config(data, base_dir=tmp_path, environ={}, hostname="Pi-Kitchen.local")
    assert config.device.id == "pi-kitchen"
    assert config.camera.source == "auto"
    assert config.mqtt.host is None  # no broker configured: the stdout sink
    assert config.mqtt.topic_prefix == "edge-face/pi-kitchen"
    assert config.snapshot.enabled is False


def test_example_config_documents_every_key(project_root):
    """Each field of each section appears in the example, set or commented out, under its
    own [section] header, with an explaining comment above it (keys documented together,
    like width/height, share one)."""
    lines = example_text(project_root).splitlines()
    key_line = re.compile(r"#? ?(\w+) = ")
    section, seen = None, {}
    for number, line in enumerate(lines):
        header = re.fullmatch(r"\[(\w+)\]", line.strip())
        if header:
            section = header.group(1)
            continue
        key = key_line.match(line)
        if key and section:
            above = number - 1
            while key_line.match(lines[above]):
                above -= 1
            assert lines[above].startswith("# "), f"[{section}] {key.group(1)} has no comment above it"
            seen.setdefault(section, set()).add(key.group(1))
    for name, section_class in SECTIONS.items():
        fields = {f.name for f in dataclasses.fields(section_class)}
        assert fields == seen.get(name, set()), f"[{name}] documented keys differ from the config fields"


def test_example_states_each_keys_limits_from_the_schema(project_root):
    """The limits in the example's comments are the schema's: an integer key's comment gives
    its range as "min-max", a choice key's comment quotes every choice."""
    lines = example_text(project_root).splitlines()
    for section, name, rule, _default in schema():
        index = next(
            i for i, line in enumerate(lines) if re.match(rf"#? ?{name} = ", line) and _in_section(lines, i, section)
        )
        start = index
        while start > 0 and lines[start - 1].startswith("#"):
            start -= 1
        comment = " ".join(lines[start:index])
        if isinstance(rule, Integer):
            assert re.search(rf"(?<!\d){rule.minimum}-{rule.maximum}(?!\d)", comment), (
                f"{section}.{name}: range not in '{comment}'"
            )
        if isinstance(rule, Choice):
            missing = [choice for choice in rule.choices if f'"{choice}"' not in comment]
            assert not missing, f"{section}.{name}: {missing} not in '{comment}'"


def _in_section(lines: list[str], index: int, section: str) -> bool:
    headers = [line.strip() for line in lines[:index] if re.fullmatch(r"\[\w+\]", line.strip())]
    return bool(headers) and headers[-1] == f"[{section}]"


def test_example_defaults_match_the_code_defaults(project_root, model_file, tmp_path):
    """Uncommented values in the example are the defaults: deleting them changes nothing."""
    data = tomllib.loads(example_text(project_root))
    data["detector"]["model"] = str(model_file)
    written = parse_config(data, base_dir=tmp_path, environ={}, hostname="pi")
    bare = parse_config({"detector": {"model": str(model_file)}}, base_dir=tmp_path, environ={}, hostname="pi")
    assert written == bare


# --- defaults and parsing ----------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.tflite").write_bytes(b"x")
    (tmp_path / "frames").mkdir()
    path = write_config(
        tmp_path, '[detector]\nmodel = "models/m.tflite"\n[camera]\nsource = "replay"\npath = "frames"\n'
    )
    config = load_config(path, environ={})
    assert config.detector.model == tmp_path / "models" / "m.tflite"
    assert config.camera.path == tmp_path / "frames"


def test_tls_changes_the_default_port(tmp_path, model_file):
    path = write_config(tmp_path, f'[detector]\nmodel = "{model_file}"\n[mqtt]\nhost = "broker"\ntls = true\n')
    assert load_config(path, environ={}).mqtt.port == 8883
    path = write_config(tmp_path, f'[detector]\nmodel = "{model_file}"\n[mqtt]\nhost = "broker"\n')
    assert load_config(path, environ={}).mqtt.port == 1883


def test_protocol_accepts_the_integer_five(tmp_path, model_file):
    path = write_config(tmp_path, f'[detector]\nmodel = "{model_file}"\n[mqtt]\nprotocol = 5\n')
    assert load_config(path, environ={}).mqtt.protocol == "5"


@pytest.mark.parametrize(
    ("hostname", "expected"),
    [("raspberrypi", "raspberrypi"), ("Pi 4.Home.Lan", "pi-4"), ("--", "edge-face"), ("a" * 80, "a" * 64)],
)
def test_device_id_defaults_to_the_sanitized_hostname(hostname, expected):
    assert sanitize_device_id(hostname) == expected


# --- secrets -------------------------------------------------------------------------------------


def test_read_secret_strips_exactly_one_trailing_newline(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n\n")
    assert read_secret(secret) == "s3cret\n"
    secret.write_text("s3cret\r\n")
    assert read_secret(secret) == "s3cret"
    secret.write_text(" spaced ")
    assert read_secret(secret) == " spaced "


def test_password_comes_from_the_systemd_credential_when_no_file_is_set(tmp_path, model_file):
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "mqtt_password").write_text("s3cret\n")
    path = write_config(tmp_path, f'[detector]\nmodel = "{model_file}"\n[mqtt]\nhost = "b"\nusername = "u"\n')
    config = load_config(path, environ={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert config.mqtt.password_file == credentials / "mqtt_password"
    assert read_secret(config.mqtt.password_file) == "s3cret"
    assert "s3cret" not in repr(config)


def test_an_empty_credential_means_no_password(tmp_path, model_file):
    # The unit always loads the credential; the role writes an empty one for brokers without auth.
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "mqtt_password").write_text("")
    path = write_config(tmp_path, f'[detector]\nmodel = "{model_file}"\n[mqtt]\nhost = "b"\n')
    assert load_config(path, environ={"CREDENTIALS_DIRECTORY": str(credentials)}).mqtt.password_file is None


def test_a_password_needs_a_username(tmp_path, model_file):
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "mqtt_password").write_text("s3cret")
    message = error_for(
        tmp_path, model_file, '[mqtt]\nhost = "b"\n', environ={"CREDENTIALS_DIRECTORY": str(credentials)}
    )
    assert message.startswith("config key 'mqtt.username' is missing")
    assert "s3cret" not in message


# --- every rule: one line naming key, value, what is allowed ---------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[mqtt]\nport = 70000\n", "config key 'mqtt.port': 70000 is not allowed (an integer 1-65535)"),
        ('[mqtt]\nport = "1883"\n', "config key 'mqtt.port': \"1883\" is not allowed (an integer 1-65535)"),
        ("[mqtt]\nhots = 1\n", "config key 'mqtt.hots' is not allowed (unknown key in [mqtt]; did you mean 'host'?)"),
        ("[mqttt]\n", "config key 'mqttt' is not allowed (unknown section; did you mean 'mqtt'?)"),
        (
            '[device]\nid = "Living Room"\n',
            "config key 'device.id': \"Living Room\" is not allowed (1-64 characters of a-z, 0-9, '_' and '-')",
        ),
        ('[device]\nid = "a/b"\n', "config key 'device.id': \"a/b\" is not allowed"),
        ('[mqtt]\nprotocol = "4"\n', 'config key \'mqtt.protocol\': "4" is not allowed (one of "5", "3.1.1")'),
        (
            '[mqtt]\ntransport = "udp"\n',
            'config key \'mqtt.transport\': "udp" is not allowed (one of "tcp", "websockets")',
        ),
        ('[mqtt]\ntopic_prefix = "home/#"\n', "config key 'mqtt.topic_prefix': \"home/#\" is not allowed"),
        ('[mqtt]\ntopic_prefix = "home//x"\n', "config key 'mqtt.topic_prefix': \"home//x\" is not allowed"),
        ('[mqtt]\ntopic_prefix = "home/{host}"\n', "is not allowed (only the placeholder {device_id})"),
        ("[mqtt]\nkeepalive = 0\n", "config key 'mqtt.keepalive': 0 is not allowed (an integer 5-65535)"),
        ("[mqtt]\nqueue_size = 0\n", "config key 'mqtt.queue_size': 0 is not allowed"),
        (
            "[mqtt]\nreconnect_min_delay = 10\nreconnect_max_delay = 5\n",
            "config key 'mqtt.reconnect_max_delay': 5.0 is not allowed (a number >= mqtt.reconnect_min_delay (10))",
        ),
        (
            '[mqtt]\nhost = "mqtt://broker"\n',
            "config key 'mqtt.host': \"mqtt://broker\" is not allowed (a host name or IP address",
        ),
        ('[mqtt]\nca_file = "ca.pem"\n', "config key 'mqtt.ca_file'"),
        (
            "[mqtt]\ntls_insecure = true\n",
            "config key 'mqtt.tls_insecure': true is not allowed (only with mqtt.tls = true)",
        ),
        (
            '[homeassistant]\ndiscovery_prefix = "ha/+"\n',
            "config key 'homeassistant.discovery_prefix': \"ha/+\" is not allowed",
        ),
        ("[homeassistant]\nenabled = 1\n", "config key 'homeassistant.enabled': 1 is not allowed (true or false)"),
        (
            '[camera]\nsource = "usb"\n',
            'config key \'camera.source\': "usb" is not allowed (one of "auto", "picamera2", "opencv", "replay")',
        ),
        (
            '[camera]\nsource = "replay"\n',
            "config key 'camera.path' is missing (camera.source = \"replay\" needs a folder of images or one image)",
        ),
        (
            '[camera]\npath = "no-such-folder"\n',
            "config key 'camera.path': \"no-such-folder\" is not allowed (an existing file or folder;",
        ),
        (
            "[camera]\nwidth = 320\n",
            "config key 'camera.height' is missing (set camera.width and camera.height together, or neither)",
        ),
        ("[camera]\nwidth = 8\nheight = 8\n", "config key 'camera.width': 8 is not allowed (an integer 16-8192)"),
        ("[camera]\nfps = 0\n", "config key 'camera.fps': 0 is not allowed (a number > 0 and <= 1000)"),
        (
            '[camera]\npicamera2_stream = "raw"\n',
            'config key \'camera.picamera2_stream\': "raw" is not allowed (one of "main", "lores")',
        ),
        (
            "[camera]\nreopen_min_delay = 0\n",
            "config key 'camera.reopen_min_delay': 0 is not allowed (a number > 0 and <= 3600)",
        ),
        ('[camera]\nloop = "yes"\n', "config key 'camera.loop': \"yes\" is not allowed (true or false)"),
        (
            "[detector]\nscore_threshold = 1.5\n",
            "config key 'detector.score_threshold': 1.5 is not allowed (a number > 0 and < 1)",
        ),
        (
            "[detector]\niou_threshold = nan\n",
            "config key 'detector.iou_threshold': NaN is not allowed (a number > 0 and < 1)",
        ),
        ("[detector]\nnum_threads = 0\n", "config key 'detector.num_threads': 0 is not allowed (an integer 1-64)"),
        (
            "[detector]\nthreads = 2\n",
            "config key 'detector.threads' is not allowed (unknown key in [detector]; did you mean 'num_threads'?)",
        ),
        (
            "[events]\ndebounce_frames = 0\n",
            "config key 'events.debounce_frames': 0 is not allowed (an integer 1-1000)",
        ),
        (
            "[events]\ndebounce_frames = 2.5\n",
            "config key 'events.debounce_frames': 2.5 is not allowed (an integer 1-1000)",
        ),
        (
            "[events]\nclear_after_seconds = -1\n",
            "config key 'events.clear_after_seconds': -1 is not allowed (a number > 0 and <= 86400)",
        ),
        ("[snapshot]\nquality = 100\n", "config key 'snapshot.quality': 100 is not allowed (an integer 10-95)"),
        (
            "[snapshot]\nmax_bytes = 10\n",
            "config key 'snapshot.max_bytes': 10 is not allowed (an integer 2000-10000000)",
        ),
        (
            "[stats]\ninterval_seconds = 0.5\n",
            "config key 'stats.interval_seconds': 0.5 is not allowed (a number >= 1 and <= 86400)",
        ),
        (
            '[log]\nlevel = "verbose"\n',
            'config key \'log.level\': "verbose" is not allowed (one of "debug", "info", "warning", "error")',
        ),
        ("camera = 1\n", "config key 'camera': 1 is not allowed (a table: write it as [camera])"),
    ],
)
def test_each_rule_names_key_value_and_what_is_allowed(tmp_path, model_file, text, expected):
    # Sections given twice would be a TOML error: merge the test's [detector] keys into ours.
    if text.startswith("[detector]\n"):
        path = write_config(tmp_path, f'[detector]\nmodel = "{model_file}"\n' + text.removeprefix("[detector]\n"))
        with pytest.raises(ConfigError) as caught:
            load_config(path, environ={})
        message = str(caught.value)
    else:
        message = error_for(tmp_path, model_file, text)
    assert message.startswith(expected) if expected.startswith("config key") else expected in message


def test_missing_model_file_names_the_key(tmp_path):
    path = write_config(tmp_path, '[detector]\nmodel = "missing.tflite"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    absolute = write_config(tmp_path, f'[detector]\nmodel = "{tmp_path}"\n')
    with pytest.raises(ConfigError, match=r"\(an existing file; it is a folder\)$"):
        load_config(absolute, environ={})
    assert str(caught.value) == (
        f"config key 'detector.model': \"missing.tflite\" is not allowed "
        f"(an existing file; '{tmp_path / 'missing.tflite'}' does not exist)"
    )


def test_client_certificate_needs_its_key(tmp_path, model_file):
    message = error_for(tmp_path, model_file, f'[mqtt]\ntls = true\ncert_file = "{model_file}"\n')
    assert message == (
        "config key 'mqtt.key_file' is missing (a client certificate needs both mqtt.cert_file and mqtt.key_file)"
    )


def test_file_level_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"^config file '.*nope.toml': no such file$"):
        load_config(tmp_path / "nope.toml")
    bad = write_config(tmp_path, "[mqtt\nhost = 1\n")
    with pytest.raises(ConfigError, match=r"^config file '.*edge-face.toml': not valid TOML \(.*line 1"):
        load_config(bad)


# --- check-config --------------------------------------------------------------------------------


@pytest.fixture
def check_config(tmp_path, model_file, capsys):
    """Runs check-config on a config file of ``text`` and a [detector] table naming the test
    model: (exit code, stdout, stderr)."""

    def run(text: str) -> tuple[int, str, str]:
        code = check_config_main(str(write_config(tmp_path, f'{text}[detector]\nmodel = "{model_file}"\n')))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_check_config_prints_ok_and_a_summary(check_config):
    code, out, err = check_config('[device]\nid = "hall"\n[mqtt]\nhost = "broker.lan"\ntls = true\n')
    assert code == 0
    assert out.startswith("ok: device 'hall'")
    assert "mqtts://broker.lan:8883" in out
    assert err == ""


def test_check_config_prints_one_error_line_and_exits_2(check_config):
    code, out, err = check_config("[mqtt]\nport = 0\n")
    assert code == 2
    assert out == ""
    assert err == "error: config key 'mqtt.port': 0 is not allowed (an integer 1-65535)\n"


# --- what run needs is checked by the loader, so check-config agrees with run ---------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[mqtt]\ntopic_prefix = "$SYS/x"\n',
            "config key 'mqtt.topic_prefix': \"$SYS/x\" is not allowed (topic levels",
        ),
        (
            '[homeassistant]\ndiscovery_prefix = "$SYS"\n',
            "config key 'homeassistant.discovery_prefix': \"$SYS\" is not allowed",
        ),
        ('[mqtt]\ntopic_prefix = "a/\\u0001/b"\n', "config key 'mqtt.topic_prefix': \"a/\\u0001/b\" is not allowed"),
        ('[mqtt]\nhost = "br\\u00f6ker.lan"\n', "config key 'mqtt.host': \"br\\u00f6ker.lan\" is not allowed"),
        ('[mqtt]\nhost = "a..b"\n', "config key 'mqtt.host': \"a..b\" is not allowed"),
        ('[mqtt]\nhost = "user:pw@broker"\n', "config key 'mqtt.host': \"user:pw@broker\" is not allowed"),
        (
            "[mqtt]\nqueue_size = 1000000\n",
            "config key 'mqtt.queue_size': 1000000 is not allowed (an integer 1-100000)",
        ),
        ("[mqtt]\nqueue_bytes = 1\n", "config key 'mqtt.queue_bytes': 1 is not allowed (an integer 65536-67108864)"),
        (
            "[camera]\nmax_pixels = 100\n",
            "config key 'camera.max_pixels': 100 is not allowed (an integer 65536-50000000)",
        ),
        (
            "[mqtt]\nflush_timeout = 45\n",
            "config key 'mqtt.flush_timeout': 45 is not allowed (a number >= 0 and <= 20: the unit's stop budget TimeoutStopSec=30s minus 10 s",
        ),
        ("[mqtt]\nflush_timeout = inf\n", "config key 'mqtt.flush_timeout': Infinity is not allowed"),
        (
            "[events]\ndebounce_frames = 99999999999999999999\n",
            "config key 'events.debounce_frames': 99999999999999999999 is not allowed",
        ),
        (
            '[camera]\npath = "a\\u0000b"\n',
            "config key 'camera.path': \"a\\u0000b\" is not allowed (a non-empty path string)",
        ),
        ('[camera]\ndevice = "x\\ny"\n', "config key 'camera.device': \"x\\ny\" is not allowed"),
        ("[mqtt]\nprotocol = true\n", "config key 'mqtt.protocol': true is not allowed"),
        ("[mqtt.tls]\nx = 1\n", "config key 'mqtt.tls': a table {'x': 1} is not allowed (true or false)"),
    ],
)
def test_run_time_rules_are_config_rules(tmp_path, model_file, text, expected):
    assert error_for(tmp_path, model_file, text).startswith(expected)


def test_values_in_errors_are_cut_and_redacted(tmp_path, model_file):
    message = error_for(tmp_path, model_file, '[camera]\ndevice = "rtsp://admin:hunter2@cam/' + "x" * 5000 + '\\n"\n')
    assert "hunter2" not in message and "rtsp://admin:***@cam/" in message
    assert len(message) < 400


def test_a_password_file_must_be_readable_utf8_text(tmp_path, model_file):
    secret = tmp_path / "pw"
    secret.write_bytes(b"caf\xe9\n")  # Latin-1, as an old editor may save it
    message = error_for(tmp_path, model_file, f'[mqtt]\nhost = "b"\nusername = "u"\npassword_file = "{secret}"\n')
    assert message == f"config key 'mqtt.password_file': \"{secret}\" is not allowed (a UTF-8 text file)"
    secret.unlink()
    os.mkfifo(secret)  # a FIFO must not hang the check
    message = error_for(tmp_path, model_file, f'[mqtt]\nhost = "b"\nusername = "u"\npassword_file = "{secret}"\n')
    assert message.startswith("config key 'mqtt.password_file'") and "not a regular file" in message


def test_an_unreadable_credential_is_a_config_error(tmp_path, model_file):
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "mqtt_password").write_bytes(b"\xff\xfe")
    message = error_for(
        tmp_path, model_file, '[mqtt]\nhost = "b"\n', environ={"CREDENTIALS_DIRECTORY": str(credentials)}
    )
    assert message.startswith("config key 'mqtt.password_file (credential)'") and message.endswith(
        "(a UTF-8 text file)"
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    from broker import make_test_pki

    return make_test_pki(tmp_path_factory.mktemp("pki"))


def test_tls_files_are_loaded_as_the_client_will(tmp_path, model_file, pki):
    tls = '[mqtt]\nhost = "b"\ntls = true\n'
    good = f'{tls}ca_file = "{pki.ca_file}"\ncert_file = "{pki.server_cert}"\nkey_file = "{pki.server_key}"\n'
    path = write_config(tmp_path, f'[detector]\nmodel = "{model_file}"\n' + good)
    assert load_config(path, environ={}).mqtt.cert_file == pki.server_cert
    # A certificate with another certificate's key.
    mismatch = f'{tls}cert_file = "{pki.server_cert}"\nkey_file = "{pki.wrong_name_key}"\n'
    message = error_for(tmp_path, model_file, mismatch)
    assert message.startswith(
        f"config key 'mqtt.cert_file': \"{pki.server_cert}\" is not allowed (a PEM certificate matching"
    )
    # A CA file that holds no certificate.
    message = error_for(tmp_path, model_file, f'{tls}ca_file = "{model_file}"\n')
    assert message.startswith("config key 'mqtt.ca_file'") and "no certificate" in message


def test_an_encrypted_key_fails_instead_of_prompting(tmp_path, model_file, pki):
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(
        ["openssl", "pkey", "-in", str(pki.server_key), "-aes256", "-passout", "pass:secret", "-out", str(encrypted)],
        check=True,
        capture_output=True,
    )
    text = f'[mqtt]\nhost = "b"\ntls = true\ncert_file = "{pki.server_cert}"\nkey_file = "{encrypted}"\n'
    message = error_for(tmp_path, model_file, text)  # OpenSSL would otherwise read a passphrase from the tty
    assert message.startswith("config key 'mqtt.cert_file'") and "key without passphrase" in message


def test_an_unreadable_model_sidecar_is_named(tmp_path, model_file):
    sidecar = model_file.with_suffix(".json")
    sidecar.mkdir()  # exists but cannot be read as a file
    message = error_for(tmp_path, model_file, "")
    assert message.startswith(
        f"config key 'detector.model': \"{model_file}\" is not allowed (a model whose sidecar is readable;"
    )


def test_a_replay_path_that_is_a_fifo_is_refused_without_blocking(tmp_path, model_file):
    fifo = tmp_path / "frames"
    os.mkfifo(fifo)
    message = error_for(tmp_path, model_file, f'[camera]\nsource = "replay"\npath = "{fifo}"\n')
    assert message.startswith("config key 'camera.path'") and "not a regular file" in message


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'[device]\nid = "caf\xe9"\n', r"not UTF-8 text \(byte 0xe9 at offset 18\)"),
        (b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", r"not valid TOML \(nested too deeply\)"),
        (b"x = " + b"9" * 5000 + b"\n", r"not valid TOML \(Exceeds the limit"),
        (b"# padding\n" * 120_000, r"cannot be read \(is larger than 1048576 bytes\)"),
    ],
)
def test_file_level_errors_are_one_line(tmp_path, content, reason):
    path = tmp_path / "edge-face.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert re.match(rf"^config file '{re.escape(str(path))}': {reason}", message) and "\n" not in message


def test_a_folder_or_fifo_as_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^config file '.*': is a folder, not a TOML file$"):
        load_config(tmp_path)
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r"^config file '.*fifo.toml': is not a regular file .*, not a TOML file$"):
        load_config(fifo)


def test_a_byte_order_mark_is_tolerated(tmp_path, model_file):
    path = tmp_path / "edge-face.toml"
    path.write_bytes(b"\xef\xbb\xbf" + f'[device]\nid = "bom"\n[detector]\nmodel = "{model_file}"\n'.encode())
    assert load_config(path, environ={}).device.id == "bom"


def test_check_config_redacts_camera_credentials(check_config):
    code, out, err = check_config('[camera]\nsource = "opencv"\ndevice = "rtsp://admin:hunter2@cam/stream"\n')
    assert code == 0
    assert "hunter2" not in out + err and "rtsp://admin:***@cam/stream" in out


def test_the_stop_budget_matches_the_unit(project_root):
    unit = (project_root / "systemd" / "edge-face.service").read_text()
    assert f"TimeoutStopSec={STOP_BUDGET_SECONDS:g}s" in unit
    assert 0 < MAX_FLUSH_TIMEOUT_SECONDS < STOP_BUDGET_SECONDS


# --- [detector] input: the packaged model of each input profile --------------------------------


def _model_with_sidecar(folder: Path, width: int, height: int) -> Path:
    """A model file whose sidecar states its input size (validation reads only that)."""
    model = folder / f"m{width}.tflite"
    model.write_bytes(b"x")
    model.with_suffix(".json").write_text(json.dumps({"input": {"width": width, "height": height}}), encoding="utf-8")
    return model


def test_input_chooses_the_packaged_model_of_that_size(tmp_path):
    from edge.models import PACKAGED_MODELS, packaged_model_path

    default = parse_config({}, base_dir=tmp_path, environ={}, hostname="pi").detector
    assert (default.input, default.model) == ("320x240", packaged_model_path(PACKAGED_MODELS["320x240"]))
    small = parse_config({"detector": {"input": "160x120"}}, base_dir=tmp_path, environ={}, hostname="pi").detector
    assert small.model == packaged_model_path(PACKAGED_MODELS["160x120"]) and small.model.is_file()
    assert json.loads(small.model.with_suffix(".json").read_text())["input"]["width"] == 160


def test_an_input_without_a_packaged_model_needs_a_model(tmp_path):
    with pytest.raises(ConfigError) as caught:
        parse_config({"detector": {"input": "640x480"}}, base_dir=tmp_path, environ={}, hostname="pi")
    assert str(caught.value).startswith(
        "config key 'detector.input': \"640x480\" is not allowed (160x120 or 256x192 or 320x240"
    )
    assert "set detector.model" in str(caught.value)
    model = _model_with_sidecar(tmp_path, 640, 480)
    config = parse_config(
        {"detector": {"input": "640x480", "model": str(model)}}, base_dir=tmp_path, environ={}, hostname="pi"
    )
    assert config.detector.model == model


def test_a_model_of_another_size_than_the_written_input_is_refused(tmp_path):
    model = _model_with_sidecar(tmp_path, 160, 120)
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {"detector": {"input": "320x240", "model": str(model)}}, base_dir=tmp_path, environ={}, hostname="pi"
        )
    assert str(caught.value) == (
        "config key 'detector.input': \"320x240\" is not allowed (the input size of detector.model, "
        "whose sidecar says 160x120)"
    )
    # Without a written input, the input follows the model.
    config = parse_config({"detector": {"model": str(model)}}, base_dir=tmp_path, environ={}, hostname="pi")
    assert config.detector.input == "160x120"


@pytest.mark.parametrize("value", ["320X240", "320x240 ", 320, "1x1"])
def test_an_unknown_input_names_the_profiles(tmp_path, value):
    with pytest.raises(ConfigError, match=r'one of "160x120", "256x192", "320x240", "640x480"'):
        parse_config({"detector": {"input": value}}, base_dir=tmp_path, environ={}, hostname="pi")
