"""systemd/edge-face.service: it loads cleanly, stays hardened, and still reaches the camera.

Runs the real `systemd-analyze` (Debian package `systemd`); no running systemd is needed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

MAX_EXPOSURE = 2.5
UNIT_NAME = "edge-face.service"
INSTALLED_EXEC = "/opt/edge-face/venv/bin/edge-face"


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze not found: install the Debian package 'systemd' (apt-get install -y systemd)")
    return path


@pytest.fixture(scope="module")
def unit_path(project_root: Path) -> Path:
    return project_root / "systemd" / UNIT_NAME


def unit_settings(text: str) -> dict[str, list[str]]:
    """Directive -> every value it is given, in order (systemd allows repeats such as DeviceAllow=)."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def verify_output(systemd_analyze: str, unit_text: str, workdir: Path) -> str:
    """Everything `systemd-analyze verify` says about a copy of the unit.

    verify checks that ExecStart= points at an executable, and /opt/edge-face/venv only exists
    on an installed device. `--root=` is no way out: a root needs all of systemd's own units and
    /bin/kill too. So the copy points ExecStart= at a stub script in workdir and keeps every
    other line as shipped; verify then judges the real directives. It exits 0 even for unknown
    keys or bad values (it only warns), so the caller asserts that the output is empty.
    """
    stub = workdir / "edge-face"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    assert f"ExecStart={INSTALLED_EXEC} " in unit_text
    copy = workdir / UNIT_NAME
    copy.write_text(unit_text.replace(f"ExecStart={INSTALLED_EXEC} ", f"ExecStart={stub} "))
    result = subprocess.run(
        [systemd_analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return (result.stdout + result.stderr).strip()


def test_unit_verifies_without_any_warning(systemd_analyze: str, unit_path: Path, tmp_path: Path) -> None:
    assert verify_output(systemd_analyze, unit_path.read_text(), tmp_path) == ""


def test_verify_check_notices_a_misspelt_directive(systemd_analyze: str, unit_path: Path, tmp_path: Path) -> None:
    # The check above is only worth something if a broken unit makes it speak.
    broken = unit_path.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes")
    assert "Unknown key 'NoNewPrivilege'" in verify_output(systemd_analyze, broken, tmp_path)


def test_security_exposure_is_at_most_2_5(systemd_analyze: str, unit_path: Path) -> None:
    result = subprocess.run(
        [systemd_analyze, "security", "--offline=yes", "--no-pager", str(unit_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(rf"Overall exposure level for {re.escape(UNIT_NAME)}: (\d+(?:\.\d+)?)", result.stdout)
    assert match, result.stdout + result.stderr
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, result.stdout


def test_camera_devices_stay_reachable_inside_the_sandbox(unit_path: Path) -> None:
    settings = unit_settings(unit_path.read_text())
    # PrivateDevices= would hide /dev/video*, /dev/media* and /dev/dma_heap/* from libcamera.
    assert "PrivateDevices" not in settings
    assert settings["DevicePolicy"] == ["closed"]
    allowed = {value.split()[0]: value.split()[1] for value in settings["DeviceAllow"]}
    for device_class in ("char-video4linux", "char-media", "char-dma_heap"):
        assert allowed.get(device_class) == "rw", device_class
    assert settings["SupplementaryGroups"] == ["video"]
    # libcamera's udev device enumerator needs netlink.
    assert "AF_NETLINK" in settings["RestrictAddressFamilies"][0].split()


def test_service_runs_unprivileged_and_notifies(unit_path: Path) -> None:
    settings = unit_settings(unit_path.read_text())
    assert settings["User"] == ["edge-face"]
    assert settings["Type"] == ["notify"]
    assert settings["NotifyAccess"] == ["main"]
    assert settings["WatchdogSec"] and settings["Restart"] == ["on-failure"]
    assert settings["CapabilityBoundingSet"] == [""] and settings["AmbientCapabilities"] == [""]
    assert settings["ExecStart"] == [f"{INSTALLED_EXEC} run --config /etc/edge-face/edge-face.toml"]


def test_mqtt_password_arrives_as_a_credential_not_an_argument(unit_path: Path) -> None:
    settings = unit_settings(unit_path.read_text())
    assert settings["LoadCredential"] == ["mqtt_password:/etc/edge-face/mqtt_password"]
    assert not any("password" in value for value in settings["ExecStart"] + settings.get("Environment", []))


def test_unit_never_restarts_on_the_exit_codes_a_retry_cannot_fix(project_root):
    from edge.exitcodes import NOT_RETRYABLE

    unit = (project_root / "systemd" / "edge-face.service").read_text()
    lines = [line for line in unit.splitlines() if line.startswith("RestartPreventExitStatus=")]
    assert len(lines) == 1
    listed = {int(code) for code in lines[0].split("=", 1)[1].split()}
    assert listed == {int(code) for code in NOT_RETRYABLE}
