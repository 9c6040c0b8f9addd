"""`edge-face` as a real process: every failure is one stderr line naming the file, option or key,
with its documented exit code; the other inputs are still reported; annotated copies never
overwrite anything. `check-config --as-user` checks with a real throw-away system user."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from cli_support import EDGE_CLI, run_cli
from daemon_support import bomb_png

from edge.exitcodes import ExitCode

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path = PROJECT_ROOT, as_user: str | None = None) -> subprocess.CompletedProcess:
    command = [*EDGE_CLI, *args]
    if as_user is not None:  # run the whole CLI unprivileged
        command = ["setpriv", f"--reuid={as_user}", f"--regid={as_user}", "--clear-groups", *command]
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=180)


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    # The interpreter library prints its own INFO line; ours all start with the program name.
    return [line for line in done.stderr.splitlines() if line.startswith(("edge-face", "error"))]


@pytest.fixture()
def open_dir():
    """A folder any user can traverse (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="edge-face-cli-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# --- detect ------------------------------------------------------------------------------------


def test_bad_files_among_good_photos_are_named_and_the_rest_reported(int8_model_path, photo_paths, tmp_path):
    bomb = bomb_png(tmp_path / "bomb.png")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(photo_paths[3].read_bytes()[:3000])
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    images = [
        str(photo_paths[0]),
        str(bomb),
        str(photo_paths[1]),
        str(corrupt),
        str(fifo),
        str(tmp_path),
        str(photo_paths[2]),
    ]
    done = cli("detect", "--json", "--model", str(int8_model_path), *images)
    assert done.returncode == ExitCode.FAILURE
    reported = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["image"] for r in reported] == [images[0], images[2], images[6]]
    assert all(r["faces"] for r in reported)
    errors = error_lines(done)
    assert len(errors) == 4, done.stderr
    assert errors[0] == (
        f"edge-face: image '{bomb}': refused as a decompression bomb "
        "(Image size (400000000 pixels) exceeds limit of 178956970 pixels)"
    )
    assert errors[1].startswith(f"edge-face: image '{corrupt}': corrupt or truncated (image file is truncated")
    assert errors[2] == f"edge-face: image '{fifo}': is not a regular file (a FIFO, socket or device)"
    assert errors[3] == f"edge-face: image '{tmp_path}': is a folder"
    assert "Traceback" not in done.stderr


def test_a_big_jpeg_is_reported_in_its_own_coordinates(int8_model_path, photo_paths, tmp_path):
    from PIL import Image

    big = tmp_path / "big.jpg"
    with Image.open(photo_paths[1]) as photo:
        width, height = photo.size
        photo.resize((width * 4, height * 4)).save(big, quality=92)
    done = cli(
        "detect",
        "--json",
        "--max-pixels",
        str(width * height * 4),
        "--model",
        str(int8_model_path),
        str(photo_paths[1]),
        str(big),
    )
    assert done.returncode == 0, done.stderr
    small_result, big_result = (json.loads(line) for line in done.stdout.splitlines())
    assert (big_result["width"], big_result["height"]) == (width * 4, height * 4)
    assert big_result["decoded_size"] == [width * 2, height * 2]  # 1/2 scale fits the limit
    assert len(big_result["faces"]) == len(small_result["faces"]) > 0
    # The same faces, in the big image's pixels: four times the small image's boxes.
    for small_face, big_face in zip(small_result["faces"], big_result["faces"], strict=True):
        assert all(abs(b - 4 * s) <= 12 for s, b in zip(small_face["box"], big_face["box"], strict=True))


def test_annotated_copies_never_overwrite(int8_model_path, photo_paths, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    existing = out / "group.jpg"
    existing.write_bytes(b"someone else's file")
    for folder in ("a", "b"):  # two inputs with the same stem
        (tmp_path / folder).mkdir()
        shutil.copy(photo_paths[2], tmp_path / folder / "group.jpg")
    inputs = [str(tmp_path / "a" / "group.jpg"), str(tmp_path / "b" / "group.jpg")]
    done = cli("detect", "--json", "--annotate", str(out), "--model", str(int8_model_path), *inputs)
    assert done.returncode == 0, done.stderr
    written = {json.loads(line)["image"]: json.loads(line)["annotated"] for line in done.stdout.splitlines()}
    assert written == {inputs[0]: str(out / "group-1.jpg"), inputs[1]: str(out / "group-2.jpg")}
    assert existing.read_bytes() == b"someone else's file"
    assert all((out / name).stat().st_mode & 0o777 == 0o644 for name in ("group-1.jpg", "group-2.jpg"))
    assert sorted(p.name for p in out.iterdir()) == ["group-1.jpg", "group-2.jpg", "group.jpg"]  # no temp files
    # Text mode says which copy went where, too.
    again = cli("detect", "--annotate", str(out), "--model", str(int8_model_path), inputs[0])
    assert f"  annotated copy: {out / 'group-3.jpg'}" in again.stdout.splitlines()


def test_annotate_onto_a_file_is_a_usage_error(int8_model_path, photo_paths, tmp_path):
    target = tmp_path / "not-a-folder"
    target.write_text("keep me")
    done = cli("detect", "--annotate", str(target), "--model", str(int8_model_path), str(photo_paths[0]))
    assert done.returncode == ExitCode.CONFIG
    assert error_lines(done) == [f"edge-face: --annotate: '{target}' exists and is not a folder"]
    assert target.read_text() == "keep me"


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["detect", "--threads", "0", "x.jpg"], "--threads: '0' is not allowed (an integer 1-64)"),
        (["detect", "--threads", "-2", "x.jpg"], "--threads: '-2' is not allowed (an integer 1-64)"),
        (["detect", "--threads", "two", "x.jpg"], "--threads: 'two' is not allowed (an integer 1-64)"),
        (
            ["detect", "--score-threshold", "1.5", "x.jpg"],
            "--score-threshold: '1.5' is not allowed (a number > 0 and < 1)",
        ),
        (["detect", "--max-pixels", "10", "x.jpg"], "--max-pixels: '10' is not allowed (an integer 65536-50000000)"),
        (["detect", "--interpreter", "onnx", "x.jpg"], "--interpreter: 'onnx' is not allowed (one of ai_edge_litert"),
        (["run", "--config", "x.toml", "--max-frames", "0"], "--max-frames: '0' is not allowed (an integer >= 1)"),
        (["detect"], "the following arguments are required: IMAGE"),
        (["launch"], "argument command: invalid choice: 'launch'"),
    ],
)
def test_usage_errors_exit_2_naming_the_option(args, option):
    done = cli(*args)
    assert done.returncode == ExitCode.CONFIG
    assert len(done.stderr.splitlines()) == 1 and option in done.stderr, done.stderr


def test_model_problems_exit_4_with_one_line(photo_paths, open_dir, int8_model_path):
    folder_model = cli("detect", "--model", str(open_dir), str(photo_paths[0]))
    assert folder_model.returncode == ExitCode.MODEL
    assert error_lines(folder_model) == [f"edge-face: model '{open_dir}': is a folder"]
    # A model only root may read, used by an unprivileged user: no PermissionError traceback.
    private = open_dir / "private"
    private.mkdir(mode=0o700)
    shutil.copy(int8_model_path, private / "m.tflite")
    done = cli("detect", "--model", str(private / "m.tflite"), str(photo_paths[0]), as_user="65534", cwd=open_dir)
    assert done.returncode == ExitCode.MODEL, done.stderr
    assert done.stderr == f"edge-face: model '{private / 'm.tflite'}': cannot be read (permission denied)\n"


# --- check-config --as-user ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def service_user():
    """A throw-away system user, like the installer's edge-face."""
    name = f"ef-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    yield name
    subprocess.run(["userdel", name], check=False)


def write_config(folder: Path, model: Path, extra: str = "") -> Path:
    path = folder / "edge-face.toml"
    path.write_text(f'[device]\nid = "hall"\nstate_dir = "{folder / "state"}"\n[detector]\nmodel = "{model}"\n{extra}')
    path.chmod(0o644)
    return path


def test_as_user_passes_when_the_service_can_read_everything(open_dir, service_user):
    model = open_dir / "m.tflite"
    model.write_bytes(b"x")
    model.chmod(0o644)
    done = cli("check-config", "--as-user", service_user, str(write_config(open_dir, model)))
    assert done.returncode == ExitCode.OK, done.stderr
    assert done.stdout.startswith(f"ok (as user '{service_user}'): device 'hall'")


def test_as_user_names_the_key_and_the_path_the_service_cannot_read(open_dir, service_user):
    model = open_dir / "m.tflite"
    model.write_bytes(b"x")
    model.chmod(0o644)
    private = open_dir / "root-only"
    private.mkdir(mode=0o700)
    secret = private / "mqtt_password"
    secret.write_text("s3cret\n")
    config = write_config(open_dir, model, f'[mqtt]\nhost = "broker"\nusername = "u"\npassword_file = "{secret}"\n')
    as_root = cli("check-config", str(config))
    assert as_root.returncode == ExitCode.OK, as_root.stderr  # root can read it: the trap the issue fell into
    done = cli("check-config", "--as-user", service_user, str(config))
    assert done.returncode == ExitCode.CONFIG
    assert done.stderr == (
        f"error (as user '{service_user}'): config key 'mqtt.password_file': \"{secret}\" is not allowed "
        f"(a readable file; it cannot be read (permission denied))\n"
    )
    assert "s3cret" not in done.stdout + done.stderr
    # The config file itself out of the user's reach.
    hidden = write_config(private, model)
    done = cli("check-config", "--as-user", service_user, str(hidden))
    assert done.returncode == ExitCode.CONFIG
    assert (
        done.stderr == f"error (as user '{service_user}'): config file '{hidden}': cannot be read (permission denied)\n"
    )


def test_as_user_checks_that_the_service_can_keep_its_controls_in_the_state_dir(open_dir, service_user):
    model = open_dir / "m.tflite"
    model.write_bytes(b"x")
    model.chmod(0o644)
    config = write_config(open_dir, model, '[mqtt]\nhost = "broker"\n')  # the state is MQTT's
    state = open_dir / "state"
    state.mkdir(mode=0o755)  # root's: the service could read it but not store a switch-off
    done = cli("check-config", "--as-user", service_user, str(config))
    assert done.returncode == ExitCode.CONFIG
    assert done.stderr == (
        f"error (as user '{service_user}'): device.state_dir '{state}': cannot be written (permission denied)\n"
    )
    shutil.chown(state, service_user, service_user)
    (state / "controls.json").write_text('{"detection": false}')
    (state / "controls.json").chmod(0o600)  # root's, unreadable to the service: it would fail closed
    done = cli("check-config", "--as-user", service_user, str(config))
    assert done.returncode == ExitCode.CONFIG
    assert done.stderr == (
        f"error (as user '{service_user}'): control state '{state / 'controls.json'}': cannot be read "
        "(permission denied); the daemon would keep detection OFF\n"
    )
    shutil.chown(state / "controls.json", service_user, service_user)
    assert cli("check-config", "--as-user", service_user, str(config)).returncode == ExitCode.OK


def test_as_user_needs_root_and_a_real_user(open_dir):
    model = open_dir / "m.tflite"
    model.write_bytes(b"x")
    model.chmod(0o644)
    config = write_config(open_dir, model)
    done = cli("check-config", "--as-user", "root", str(config), as_user="65534", cwd=open_dir)
    assert done.returncode == ExitCode.CONFIG
    assert done.stderr == "error: check-config --as-user root: needs root to switch to that user (run it with sudo)\n"
    done = cli("check-config", "--as-user", "no-such-user-here", str(config))
    assert done.returncode == ExitCode.CONFIG
    assert done.stderr == "error: check-config --as-user: no such user 'no-such-user-here'\n"


def test_check_config_file_problems_are_one_line(open_dir):
    done = cli("check-config", str(open_dir))
    assert (done.returncode, done.stderr) == (
        ExitCode.CONFIG,
        f"error: config file '{open_dir}': is a folder, not a TOML file\n",
    )
    (open_dir / "latin1.toml").write_bytes(b'[device]\nid = "caf\xe9"\n')
    done = cli("check-config", str(open_dir / "latin1.toml"))
    assert done.returncode == ExitCode.CONFIG and "not UTF-8 text" in done.stderr and done.stderr.count("\n") == 1
    done = cli("run", "--config", str(open_dir / "missing.toml"))
    assert (done.returncode, done.stderr) == (
        ExitCode.CONFIG,
        f"error: config file '{open_dir / 'missing.toml'}': no such file\n",
    )


def test_as_user_finds_an_unreadable_model_sidecar(open_dir, service_user):
    model = open_dir / "m.tflite"
    model.write_bytes(b"x")
    model.chmod(0o644)
    sidecar = model.with_suffix(".json")
    sidecar.write_text("{}")
    sidecar.chmod(0o600)  # root's umask-less copy: the service could not load the model
    done = cli("check-config", "--as-user", service_user, str(write_config(open_dir, model)))
    assert done.returncode == ExitCode.CONFIG
    assert done.stderr == (
        f"error (as user '{service_user}'): config key 'detector.model': \"{model}\" is not allowed "
        f"(a model whose sidecar is readable; '{sidecar}' cannot be read (permission denied))\n"
    )


def test_version_prints_the_installed_package_version_and_exits_0():
    from importlib.metadata import version

    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"edge-face {version('edge-face')}"
