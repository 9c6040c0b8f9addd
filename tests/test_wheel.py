"""The device wheel (tools/build_wheel.sh, what `make wheel` runs), installed into a fresh
virtualenv with only the device dependencies and run with no model named anywhere: the int8
model inside the wheel is the one that runs, and it finds what the source tree finds.

The virtualenv is cached in .cache/test-wheel/ keyed by the wheel's sha256. Its dependencies
come from a wheelhouse there, downloaded once with pip at exactly
the versions this test environment runs, so the installed detector and the source tree's use
the same interpreter build and must agree to the last digit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from deploy_support import cache_folder, pinned, sha256, wheelhouse
from packaging.requirements import Requirement

from edge.models import PACKAGED_MODEL_NAME, PACKAGED_MODEL_PATH, PACKAGED_MODELS, packaged_model_path
from edge.recognize.models import EMBEDDING_MODEL_PATH, LANDMARKS_MODEL_PATH

pytestmark = pytest.mark.slow

OFFLINE_TOOLS = ("tensorflow", "onnx", "onnxruntime", "tools")
DEVICE_EXTRAS = {"opencv", "tflite-runtime"}
TIMEOUT = 900


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, **kwargs)
    assert result.returncode == 0, (
        f"{command[:4]}...: exit {result.returncode}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    )
    return result


def wheel_metadata(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return archive.read(name).decode().split("\n\n", 1)[0].splitlines()


def device_requirements(wheel: Path) -> list[Requirement]:
    """The wheel's own requirements that apply here (no extra, markers evaluated)."""
    requirements = [
        Requirement(line.split(":", 1)[1].strip())
        for line in wheel_metadata(wheel)
        if line.startswith("Requires-Dist:")
    ]
    return [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]


@pytest.fixture(scope="module")
def wheel(project_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = run([str(project_root / "tools/build_wheel.sh"), "--python", sys.executable, "--out", str(out)])
    path = Path(built.stdout.strip().splitlines()[-1])
    assert path.parent == out and path.is_file()
    return path


@pytest.fixture(scope="module")
def device_venv(wheel: Path, project_root: Path) -> Path:
    cache = cache_folder(project_root) / "test-wheel"
    # Pinned to what runs here: same numpy and interpreter builds, so outputs are comparable.
    house = wheelhouse(cache, pinned([r.name for r in device_requirements(wheel)]))
    venv = cache / ("venv-" + sha256(wheel)[:16])
    if not (venv / ".complete").is_file():
        shutil.rmtree(venv, ignore_errors=True)
        for stale in cache.glob("venv-*"):  # one wheel's venv at a time
            shutil.rmtree(stale, ignore_errors=True)
        run([sys.executable, "-m", "venv", str(venv)])
        run(
            [
                str(venv / "bin/python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-index",
                "--find-links",
                str(house),
                str(wheel),
            ]
        )
        (venv / ".complete").touch()
    return venv


def device_env() -> dict[str, str]:
    """The environment of a fresh shell: no model or interpreter chosen, no source tree on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_FACE_", "PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def test_wheel_carries_the_shipped_model_and_only_device_requirements(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        # Every input profile's model and sidecar, byte for byte ([detector] input chooses one).
        for name in PACKAGED_MODELS.values():
            for suffix in (".tflite", ".json"):
                shipped = packaged_model_path(name).with_suffix(suffix)
                assert archive.read(f"edge/models/{shipped.name}") == shipped.read_bytes()
    assert not {n for n in names if n.startswith(("tools/", "tests/"))}
    # The face-recognition models ship as built (tools.recognize_build); dlib's .dat files never.
    with zipfile.ZipFile(wheel) as archive:
        for shipped in (LANDMARKS_MODEL_PATH, EMBEDDING_MODEL_PATH):
            for path in (shipped, shipped.with_suffix(".json")):
                assert archive.read(f"edge/recognize/models/{path.name}") == path.read_bytes()
    assert not {n for n in names if n.endswith(".dat")}
    metadata = wheel_metadata(wheel)
    extras = {line.split(":", 1)[1].strip() for line in metadata if line.startswith("Provides-Extra:")}
    assert extras == DEVICE_EXTRAS
    named = " ".join(line for line in metadata if line.startswith("Requires-Dist:")).lower()
    assert not [tool for tool in ("tensorflow", "onnx", "scipy", "pytest", "ansible", "dlib") if tool in named]
    assert sorted(r.name for r in device_requirements(wheel)) == ["ai-edge-litert", "numpy", "paho-mqtt", "pillow"]


def test_device_venv_has_no_offline_tools_but_an_interpreter(device_venv: Path, tmp_path: Path) -> None:
    probe = "import importlib.util, sys; print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m)))"
    found = run(
        [str(device_venv / "bin/python"), "-c", probe, *OFFLINE_TOOLS, "ai_edge_litert", "edge"],
        cwd=tmp_path,
        env=device_env(),
    )
    assert found.stdout.split() == ["ai_edge_litert", "edge"]


def test_default_model_is_the_one_inside_the_installed_package(device_venv: Path, tmp_path: Path) -> None:
    probe = "from edge.config import DEFAULT_MODEL_PATH as p; print(p)"
    result = run([str(device_venv / "bin/python"), "-c", probe], cwd=tmp_path, env=device_env())
    installed = Path(result.stdout.strip())
    assert installed.name == PACKAGED_MODEL_NAME
    assert installed.is_relative_to(device_venv) and "site-packages" in installed.parts
    assert sha256(installed) == sha256(PACKAGED_MODEL_PATH)


def test_detect_without_a_model_finds_what_the_source_tree_finds(
    device_venv: Path, project_root: Path, photo_paths: list[Path], tmp_path: Path
) -> None:
    photos = [str(p) for p in photo_paths]
    installed = run([str(device_venv / "bin/edge-face"), "detect", "--json", *photos], cwd=tmp_path, env=device_env())
    source = run(
        [sys.executable, "-m", "edge.cli", "detect", "--json", "--model", str(PACKAGED_MODEL_PATH), *photos],
        cwd=project_root,
        env={**device_env(), "EDGE_FACE_INTERPRETER": "ai_edge_litert"},
    )
    installed_lines = [json.loads(line) for line in installed.stdout.splitlines()]
    assert [line["image"] for line in installed_lines] == photos
    assert all(line["faces"] for line in installed_lines), "every upstream photo shows faces"
    assert installed_lines == [json.loads(line) for line in source.stdout.splitlines()]


def test_run_on_a_replay_config_without_a_model_key_publishes_events(
    device_venv: Path, photo_paths: list[Path], tmp_path: Path
) -> None:
    from edge.detect.detector import DetectorOptions, FaceDetector
    from edge.sources.imageio import load_image

    detector = FaceDetector(PACKAGED_MODEL_PATH, DetectorOptions(interpreter="ai_edge_litert"))

    frames = tmp_path / "frames"
    frames.mkdir()
    first, second = photo_paths[0], photo_paths[1]
    (frames / "a.jpg").symlink_to(first)
    (frames / "b.jpg").symlink_to(second)
    config = tmp_path / "replay.toml"
    config.write_text(
        '[device]\nid = "wheel-test"\n\n'
        f'[camera]\nsource = "replay"\npath = {json.dumps(str(frames))}\n\n'
        "[events]\ndebounce_frames = 1\n"
    )
    result = run(
        [str(device_venv / "bin/edge-face"), "run", "--config", str(config), "--max-frames", "2"],
        cwd=tmp_path,
        env=device_env(),
    )
    events = [json.loads(line) for line in result.stdout.splitlines()]
    expected_counts = [len(detector.detect(load_image(path))) for path in (first, second)]
    assert events[0]["type"] == "face_detected" and events[0]["device_id"] == "wheel-test"
    assert events[0]["face_count"] == expected_counts[0] > 0
    if expected_counts[1] != expected_counts[0]:
        assert [e["type"] for e in events] == ["face_detected", "count_changed"]
        assert events[1]["face_count"] == expected_counts[1]
    else:
        assert len(events) == 1
