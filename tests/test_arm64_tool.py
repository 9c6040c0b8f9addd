"""The arm64 check's own parts, without running the check.

The check itself (tools/arm64_check.sh: debootstrap, qemu, two emulated venvs, minutes of
emulation, root) runs in CI as a step of its own, not as a pytest. Here: the script parses
and refuses bad arguments before touching anything, and its helpers read pyproject.toml,
carry pip settings and judge parity the way the check relies on.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tools.arm64.compare import (
    BOX_RELATIVE_TOLERANCE,
    BOX_ROUNDING_STEP,
    SCORE_TOLERANCE,
    format_table,
    read_detect_output,
)
from tools.arm64.pip_settings import chroot_settings, parse_config_list
from tools.arm64.requirements import venv_requirements


@pytest.fixture(scope="module")
def script(project_root: Path) -> Path:
    return project_root / "tools" / "arm64_check.sh"


def _run_script(script: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=60)


# ---- the shell script ------------------------------------------------------------------------


def test_script_parses(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_script_passes_shellcheck(script: Path) -> None:
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_help_names_every_option(script: Path) -> None:
    result = _run_script(script, "--help")
    assert result.returncode == 0
    for option in ("--cache", "--model", "--images", "--qemu"):
        assert option in result.stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--frobnicate"], "--frobnicate"),
        (["--images", "0"], "--images"),
        (["--images=many"], "many"),
        (["--cache"], "--cache"),
        (["--model", "/nonexistent/model.tflite"], "/nonexistent/model.tflite"),
    ],
)
def test_bad_arguments_fail_with_one_line(script: Path, args: list[str], named: str) -> None:
    result = _run_script(script, *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr
    assert result.stdout == ""


def test_model_without_sidecar_is_refused(script: Path, tmp_path: Path) -> None:
    model = tmp_path / "lonely.tflite"
    model.write_bytes(b"not read: the missing sidecar is found first")
    result = _run_script(script, "--model", str(model))
    assert result.returncode == 2
    assert str(tmp_path / "lonely.json") in result.stderr


# ---- requirements of the emulated venvs --------------------------------------------------------


@pytest.fixture(scope="module")
def pyproject(project_root: Path) -> dict:
    return tomllib.loads((project_root / "pyproject.toml").read_text(encoding="utf-8"))


def _names(requirements: list[str]) -> set[str]:
    return {re.match(r"\s*([A-Za-z0-9._-]+)", r).group(1).lower() for r in requirements}


def test_litert_venv_gets_the_base_dependencies(pyproject: dict) -> None:
    requirements = venv_requirements(pyproject, "litert")
    assert requirements == pyproject["project"]["dependencies"]
    assert "ai-edge-litert" in _names(requirements)
    assert "tensorflow" not in _names(requirements) and "tensorflow-cpu" not in _names(requirements)


def test_tflite_runtime_venv_has_no_litert_and_numpy_below_2(pyproject: dict) -> None:
    requirements = venv_requirements(pyproject, "tflite-runtime")
    names = _names(requirements)
    assert "ai-edge-litert" not in names
    assert "tflite-runtime==2.14.0" in requirements
    assert any(r.replace(" ", "").startswith("numpy<2") for r in requirements)
    # Everything else a device needs is still there.
    base = _names(venv_requirements(pyproject, "litert")) - {"ai-edge-litert"}
    assert base <= names


def test_unknown_venv_kind_is_refused(pyproject: dict) -> None:
    with pytest.raises(ValueError, match="'tensorflow'"):
        venv_requirements(pyproject, "tensorflow")


# ---- pip settings carried into the chroot -----------------------------------------------------


def test_environment_wins_over_config_files() -> None:
    options = parse_config_list(
        "global.index-url='https://files.example/simple'\n"
        ":env:.index-url='https://mirror.example/simple'\n"
        "global.cert='/etc/ssl/certs/ca-certificates.crt'\n"
        "global.constraint='/etc/xdg/pip/constraints.txt'\n"
    )
    assert options["index-url"] == "https://mirror.example/simple"
    settings = chroot_settings(options)
    assert settings.environment["PIP_INDEX_URL"] == "https://mirror.example/simple"
    assert settings.host_ca_bundle == "/etc/ssl/certs/ca-certificates.crt"
    # A host constraint file describes the host's disk: it stays behind.
    assert not any("constraint" in name.lower() for name in settings.environment)
    # The chroot ignores its own pip configuration files.
    assert settings.environment["PIP_CONFIG_FILE"] == "/dev/null"


def test_local_index_folders_are_bound_and_missing_ones_dropped(tmp_path: Path) -> None:
    index_root = tmp_path / "pypi" / "simple"
    index_root.mkdir(parents=True)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    settings = chroot_settings(
        {
            "extra-index-url": f"file://{index_root} file://{tmp_path}/gone/simple https://x.example/simple",
            "find-links": f"{wheels} {tmp_path}/no-such-folder",
        }
    )
    assert settings.environment["PIP_EXTRA_INDEX_URL"].split() == [f"file://{index_root}", "https://x.example/simple"]
    assert settings.environment["PIP_FIND_LINKS"] == str(wheels)
    # A simple index links to ../../files/..: the folder above the index root must be visible.
    assert set(settings.bind_paths) == {str(index_root.parent), str(wheels)}


# ---- parity judgement ------------------------------------------------------------------------


def _write_run(path: Path, images: dict[str, list[tuple[list[float], float]]], folder: str) -> str:
    lines = [
        json.dumps({"image": f"{folder}/{name}", "width": 640, "height": 480,
                    "faces": [{"box": box, "score": score} for box, score in faces]})
        for name, faces in images.items()
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


HOST_FACES = {
    "a.jpg": [([100.25, 50.5, 180.75, 150.0], 0.9991), ([300.0, 40.0, 330.5, 80.25], 0.8125)],
    "b.jpg": [([12.5, 8.0, 40.0, 44.0], 0.75)],
}


def _judge(tmp_path: Path, candidate: dict) -> tuple[str, bool]:
    host = read_detect_output(_write_run(tmp_path / "host.jsonl", HOST_FACES, "/work/shared/images"))
    arm64 = read_detect_output(_write_run(tmp_path / "arm64.jsonl", candidate, "/tmp/run/images"))
    return format_table(["host", "arm64"], [host, arm64])


def _shifted(faces: dict, image: str, face: int, coordinate: int, delta: float) -> dict:
    copy = {name: [(list(box), score) for box, score in entries] for name, entries in faces.items()}
    copy[image][face][0][coordinate] += delta
    return copy


def test_identical_runs_pass_although_paths_differ(tmp_path: Path) -> None:
    table, passed = _judge(tmp_path, HOST_FACES)
    assert passed and table.splitlines()[-1].endswith("PASS")


def test_face_order_does_not_matter(tmp_path: Path) -> None:
    swapped = dict(HOST_FACES, **{"a.jpg": list(reversed(HOST_FACES["a.jpg"]))})
    assert _judge(tmp_path, swapped)[1]


def test_one_print_rounding_step_passes(tmp_path: Path) -> None:
    assert _judge(tmp_path, _shifted(HOST_FACES, "b.jpg", 0, 0, BOX_ROUNDING_STEP))[1]


def test_box_beyond_relative_tolerance_fails(tmp_path: Path) -> None:
    # 300 px: 1e-4 relative is 0.03 px; a tenth of a pixel is well beyond it.
    delta = max(10 * BOX_RELATIVE_TOLERANCE * 300.0, 3 * BOX_ROUNDING_STEP)
    table, passed = _judge(tmp_path, _shifted(HOST_FACES, "a.jpg", 1, 0, delta))
    assert not passed
    assert [line for line in table.splitlines() if line.startswith("a.jpg")][0].endswith("FAIL")
    assert [line for line in table.splitlines() if line.startswith("b.jpg")][0].endswith("PASS")


def test_score_beyond_tolerance_fails(tmp_path: Path) -> None:
    changed = dict(HOST_FACES, **{"b.jpg": [(HOST_FACES["b.jpg"][0][0], 0.75 + 3 * SCORE_TOLERANCE)]})
    assert not _judge(tmp_path, changed)[1]


def test_other_face_count_fails(tmp_path: Path) -> None:
    assert not _judge(tmp_path, dict(HOST_FACES, **{"a.jpg": HOST_FACES["a.jpg"][:1]}))[1]


def test_missing_image_fails(tmp_path: Path) -> None:
    assert not _judge(tmp_path, {"a.jpg": HOST_FACES["a.jpg"]})[1]


def test_no_images_at_all_is_not_a_pass(tmp_path: Path) -> None:
    # A host run that printed nothing must not let an equally empty arm64 run pass.
    empty = read_detect_output(_write_run(tmp_path / "empty.jsonl", {}, "/nowhere"))
    assert not format_table(["host", "arm64"], [empty, empty])[1]
