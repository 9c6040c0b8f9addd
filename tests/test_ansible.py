"""ansible/: lint, syntax, and a real apply of the edge_face role against localhost.

The apply uses connection=local into a scratch root (edge_face_root), where the role manages
files only: no apt, no users (the existing nobody/nogroup stand in), no systemd (it is not
PID 1 here). Everything else is real: the wheel is built on the "controller" from a snapshot
of this checkout (tools/build_wheel.sh, the model inside), copied, installed into a
virtualenv made from the OS Python (without its dependencies, so no download), and the model
shipped in the package is deployed with its checksum, with the role's defaults: no
TensorFlow, no model build. A second run must report changed=0.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from deploy_support import VENV_BIN, ansible_env, assert_package_runs_from_venv, other_model, sha256

from edge.models import PACKAGED_MODEL_NAME

pytestmark = pytest.mark.slow

MQTT_PASSWORD = "s3cret \"quoted\" 'pw' \\ with backslash"
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class Recap:
    ok: int
    changed: int
    unreachable: int
    failed: int


def ansible_tool(name: str) -> str:
    path = VENV_BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: pip install ansible-core ansible-lint into {VENV_BIN.parent}")
    return str(path)


def documented_vault_password(project_root: Path) -> str:
    readme = (project_root / "ansible/inventory/example/README.md").read_text()
    match = re.search(r"published test\s+password `([^`]+)`", readme)
    assert match, "the example inventory README must state the example vault password"
    return match.group(1)


def parse_recap(output: str) -> dict[str, Recap]:
    return {m.group(1): Recap(*map(int, m.groups()[1:])) for m in RECAP.finditer(output)}


class Playbook:
    """ansible-playbook site.yml against localhost, with the role's test-friendly switches."""

    def __init__(self, project_root: Path, workdir: Path, project_snapshot: Path) -> None:
        self.project_root, self.workdir, self.project_snapshot = project_root, workdir, project_snapshot
        self.root = workdir / "root"
        self.root.mkdir(exist_ok=True)
        self.inventory = workdir / "inventory.yml"
        self.inventory.write_text(
            yaml.safe_dump(
                {
                    "edge_face": {
                        "hosts": {
                            "pi-test": {
                                "ansible_connection": "local",
                                "ansible_python_interpreter": sys.executable,
                            }
                        }
                    },
                }
            )
        )
        self.variables = {
            "ansible_become": False,  # already root; no sudo on a test machine
            "edge_face_root": str(self.root),
            "edge_face_project_dir": str(project_snapshot),
            "edge_face_wheel_dir": str(workdir / "dist"),
            "edge_face_manage_packages": False,
            "edge_face_manage_user": False,
            "edge_face_user": "nobody",
            "edge_face_group": "nogroup",
            "edge_face_pip_no_deps": True,
            "edge_face_python": "/usr/bin/python3",
            "edge_face_device_id": "pi-test",
            "edge_face_camera": {
                "source": "picamera2",
                "width": 640,
                "height": 480,
                "fps": 7.5,
                "picamera2_stream": "lores",
            },
            "edge_face_detector": {"score_threshold": 0.75, "num_threads": 2},
            "edge_face_mqtt": {
                "host": "127.0.0.1",
                "port": 1884,
                "username": "edge-face",
                "topic_prefix": "sensors/{device_id}",
                "client_id": None,
            },
            "edge_face_mqtt_password": MQTT_PASSWORD,
            "edge_face_homeassistant": {"enabled": True, "device_name": 'Test "hall" Pi'},
            "edge_face_log": {"level": "debug"},
        }
        self.vars_file = workdir / "vars.yml"
        self.vars_file.write_text(yaml.safe_dump(self.variables))

    def copy_to(self, workdir: Path) -> Playbook:
        """The same inventory and variables over a copy of the installed root, for tests that change it."""
        shutil.copytree(self.root, workdir / "root", symlinks=True)
        return Playbook(self.project_root, workdir, self.project_snapshot)

    @property
    def shipped_model(self) -> Path:
        """What the role deploys by default: the model in the package's sources."""
        return self.project_snapshot / "edge" / "models" / PACKAGED_MODEL_NAME

    def run(self, *args: str) -> tuple[subprocess.CompletedProcess, Recap]:
        result = subprocess.run(
            [
                ansible_tool("ansible-playbook"),
                "-i",
                str(self.inventory),
                "site.yml",
                "-e",
                f"@{self.vars_file}",
                *args,
            ],
            cwd=self.project_root / "ansible",
            env=ansible_env(self.workdir),
            capture_output=True,
            text=True,
            timeout=600,
        )
        recap = parse_recap(result.stdout).get("pi-test")
        assert result.returncode == 0 and recap is not None, result.stdout[-6000:] + result.stderr[-3000:]
        return result, recap


def snapshot_sources(project_root: Path, destination: Path) -> Path:
    """What the wheel is built from, frozen: colleagues editing edge/ must not change run 2."""
    destination.mkdir()
    shutil.copytree(project_root / "edge", destination / "edge", ignore=shutil.ignore_patterns("__pycache__"))
    (destination / "tools").mkdir()
    for name in ("pyproject.toml", "README.md", "tools/build_wheel.sh", "tools/script_helpers.sh"):
        shutil.copy2(project_root / name, destination / name)
    return destination


@pytest.fixture(scope="module")
def applied(project_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """The role applied twice to the same scratch root: (playbook, first recap, second recap)."""
    workdir = tmp_path_factory.mktemp("ansible-apply")
    playbook = Playbook(project_root, workdir, snapshot_sources(project_root, workdir / "project"))
    _, first = playbook.run()
    _, second = playbook.run()
    return playbook, first, second


def test_lint_passes_the_production_profile(project_root: Path, tmp_path: Path) -> None:
    password_file = tmp_path / "vault-password"
    password_file.write_text(documented_vault_password(project_root))
    result = subprocess.run(
        [ansible_tool("ansible-lint"), "--offline", "--profile", "production", "--nocolor"],
        cwd=project_root / "ansible",
        env=ansible_env(tmp_path, ANSIBLE_VAULT_PASSWORD_FILE=str(password_file)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Profile 'production' was required, and it passed" in result.stdout + result.stderr


def test_site_playbook_passes_syntax_check(project_root: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [ansible_tool("ansible-playbook"), "-i", "inventory/example/hosts.yml", "site.yml", "--syntax-check"],
        cwd=project_root / "ansible",
        env=ansible_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_site_playbook_rolls_out_in_batches(project_root: Path) -> None:
    (play,) = yaml.safe_load((project_root / "ansible/site.yml").read_text())
    # Variables with defaults, so one run may change them (-e); tests/test_fleet_bench.py
    # proves what they do on booted hosts.
    serial = re.fullmatch(r"\{\{ edge_face_serial \| default\((\[.*\])\) \}\}", play["serial"])
    assert serial and yaml.safe_load(serial.group(1))[0] == 1, "a canary device first"
    max_fail = re.fullmatch(r"\{\{ edge_face_max_fail_percentage \| default\((\d+)\) \}\}", play["max_fail_percentage"])
    assert max_fail and 0 <= int(max_fail.group(1)) < 100


def test_example_vault_opens_with_the_documented_password(project_root: Path, tmp_path: Path) -> None:
    password_file = tmp_path / "vault-password"
    password_file.write_text(documented_vault_password(project_root))
    vault = project_root / "ansible/inventory/example/group_vars/edge_face/vault.yml"
    assert vault.read_text().startswith("$ANSIBLE_VAULT;")
    result = subprocess.run(
        [ansible_tool("ansible-vault"), "view", "--vault-password-file", str(password_file), str(vault)],
        env=ansible_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "vault_edge_face_mqtt_password" in yaml.safe_load(result.stdout)


def test_first_run_changes_the_host_and_second_run_changes_nothing(applied) -> None:
    _, first, second = applied
    assert first.failed == 0 and first.changed > 0
    assert second == Recap(ok=second.ok, changed=0, unreachable=0, failed=0)


def test_config_carries_the_inventory_values_and_passes_the_daemon_validator(applied) -> None:
    playbook, _, _ = applied
    path = playbook.root / "etc/edge-face/edge-face.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    config = tomllib.loads(path.read_text())
    variables = playbook.variables
    assert config["device"] == {"id": "pi-test"}
    assert config["camera"] == variables["edge_face_camera"]
    assert config["detector"] == {
        **variables["edge_face_detector"],
        "model": "/opt/edge-face/models/current/version-slim-320-int8.tflite",
    }
    # null means "daemon default": the key is left out, TOML having no null.
    assert config["mqtt"] == {k: v for k, v in variables["edge_face_mqtt"].items() if v is not None}
    assert config["homeassistant"] == variables["edge_face_homeassistant"]
    assert config["log"] == {"level": "debug"}
    assert "password" not in path.read_text()
    assert set(config) == {"device", "camera", "detector", "mqtt", "homeassistant", "log"}

    # The daemon's own validator accepts it (model path moved into the scratch root).
    from edge.config import parse_config

    config["detector"]["model"] = str(playbook.root) + config["detector"]["model"]
    parsed = parse_config(config, base_dir=path.parent, environ={})
    assert parsed.mqtt.topic_prefix == "sensors/pi-test"
    assert parsed.camera.picamera2_stream == "lores"


def test_credential_is_private_and_exact(applied) -> None:
    playbook, _, _ = applied
    credential = playbook.root / "etc/edge-face/mqtt_password"
    info = credential.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == 0 and info.st_gid == 0
    assert credential.read_text() == MQTT_PASSWORD


def test_unit_is_the_shipped_unit(applied, project_root: Path) -> None:
    playbook, _, _ = applied
    rendered = (playbook.root / "etc/systemd/system/edge-face.service").read_text()
    # The only inventory value that reaches the unit here is the stand-in user and group.
    shipped = (project_root / "systemd/edge-face.service").read_text()
    expected = shipped.replace("\nUser=edge-face\n", "\nUser=nobody\n").replace(
        "\nGroup=edge-face\n", "\nGroup=nogroup\n"
    )
    assert rendered == expected


def test_model_arrives_intact_behind_the_current_link(applied) -> None:
    playbook, _, _ = applied
    source = playbook.shipped_model
    models = playbook.root / "opt/edge-face/models"
    release = os.readlink(models / "current")
    assert release == sha256(source)[:16]
    deployed = models / release / source.name
    assert sha256(deployed) == sha256(source)
    assert json.loads(deployed.with_suffix(".json").read_text())["tflite_sha256"] == sha256(source)


def test_package_is_installed_in_a_venv_that_sees_the_os_packages(applied) -> None:
    playbook, _, _ = applied
    assert_package_runs_from_venv(playbook.root / "opt/edge-face/venv", "edge.config", cwd=playbook.workdir)
    assert [p.name for p in (playbook.root / "opt/edge-face/dist").iterdir()] == [
        p.name for p in (playbook.workdir / "dist").iterdir()
    ]


def test_model_tag_ships_a_new_model_and_rolls_it_back(applied, tmp_path: Path) -> None:
    playbook = applied[0].copy_to(tmp_path)
    models = playbook.root / "opt/edge-face/models"
    first_release = os.readlink(models / "current")
    newer = other_model(playbook.shipped_model, tmp_path / "newer")

    _, shipped = playbook.run("--tags", "edge_face_model", "-e", f"edge_face_model_src={newer}")
    assert shipped.changed > 0 and shipped.failed == 0
    assert (os.readlink(models / "current"), os.readlink(models / "previous")) == (sha256(newer)[:16], first_release)

    _, rolled_back = playbook.run("--tags", "edge_face_model", "-e", "edge_face_model_rollback=true")
    assert rolled_back.changed > 0 and rolled_back.failed == 0
    assert (os.readlink(models / "current"), os.readlink(models / "previous")) == (first_release, sha256(newer)[:16])


# --- the online check: `edge-face fleet --device`, from the controller or from the device ------

ONLINE_CHECK_PLAY = [
    {
        "name": "The role's online checks alone",
        "hosts": "pi-test",
        "gather_facts": False,
        "tasks": [
            {
                "name": "Run tasks/online.yml",
                "ansible.builtin.include_role": {"name": "edge_face", "tasks_from": "online.yml"},
            }
        ],
    }
]


def argv_recorder(path: Path, program: str, log: Path) -> Path:
    """An executable at ``path`` that appends its arguments to ``log``, then runs ``program``
    with them: what a process list on the controller or the device would show."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\nexec "{program}" "$@"\n')
    path.chmod(0o755)
    return path


def run_online_check(project_root: Path, workdir: Path, broker, on_device: bool) -> subprocess.CompletedProcess:
    """tasks/online.yml for device pi-test on ``broker`` (password protected), asked from the
    controller or from the device (here both are this machine; the argv of each is logged)."""
    workdir.mkdir()
    argv_log = workdir / "argv.log"
    credential = workdir / "mqtt_password"
    credential.write_text(MQTT_PASSWORD + "\n")
    credential.chmod(0o600)
    variables = {
        "edge_face_device_id": "pi-test",
        "edge_face_project_dir": str(project_root),
        "edge_face_controller_python": str(argv_recorder(workdir / "python", sys.executable, argv_log)),
        "edge_face_mqtt": {"host": broker.host, "port": broker.port, "username": "edge-face"},
        "edge_face_mqtt_password": MQTT_PASSWORD,
        "edge_face_wait_online_timeout": 5,
        # Role internals, as the fleet bench sets them: the broker is on this machine, which
        # plays the controller or the device.
        "edge_face__broker_on_device": on_device,
        "edge_face__venv": str(workdir / "venv"),
        "edge_face__credential_file": str(credential),
    }
    argv_recorder(workdir / "venv" / "bin" / "edge-face", str(VENV_BIN / "edge-face"), argv_log)
    (workdir / "vars.yml").write_text(yaml.safe_dump(variables))
    (workdir / "play.yml").write_text(yaml.safe_dump(ONLINE_CHECK_PLAY, sort_keys=False))
    inventory = {
        "all": {"hosts": {"pi-test": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}
    }
    (workdir / "inventory.yml").write_text(yaml.safe_dump(inventory))
    return subprocess.run(
        [ansible_tool("ansible-playbook"), "-i", "inventory.yml", "play.yml", "-e", "@vars.yml"],
        cwd=workdir,
        env=ansible_env(workdir, ANSIBLE_ROLES_PATH=str(project_root / "ansible" / "roles")),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("on_device", [False, True], ids=["from-the-controller", "from-the-device"])
def test_online_check_asks_edge_face_fleet_with_the_password_off_argv(
    project_root: Path, tmp_path: Path, on_device: bool
) -> None:
    import paho.mqtt.client as mqtt
    from broker import MosquittoBroker

    with MosquittoBroker(tmp_path / "broker", users={"edge-face": MQTT_PASSWORD}) as broker:

        def retain_status(payload: str) -> None:
            client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
            client.username_pw_set("edge-face", MQTT_PASSWORD)
            client.connect(broker.host, broker.port)
            client.loop_start()
            client.publish("edge-face/pi-test/status", payload, qos=1, retain=True).wait_for_publish(5)
            client.loop_stop()
            client.disconnect()

        retain_status("online")
        online = run_online_check(project_root, tmp_path / "online", broker, on_device)
        assert online.returncode == 0, online.stdout[-4000:] + online.stderr[-2000:]
        argv = (tmp_path / "online" / "argv.log").read_text()
        assert "fleet --broker 127.0.0.1" in argv and "--device pi-test" in argv, argv
        assert MQTT_PASSWORD not in argv and MQTT_PASSWORD not in online.stdout, argv

        retain_status("stopped")
        stopped = run_online_check(project_root, tmp_path / "stopped", broker, on_device)
        assert stopped.returncode != 0 and "failed=1" in stopped.stdout, stopped.stdout[-4000:]
        assert MQTT_PASSWORD not in stopped.stdout + stopped.stderr
