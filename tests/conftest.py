"""Shared fixtures: where the upstream data lives, and the int8 model the tests run.

The data in ../shared is read by path and never copied into the project. The int8 model is
built once per checkout by tools.quantize (``make model``) into models/build/; a test
session reuses it, and builds it when missing (only possible where TensorFlow is installed:
the tflite-runtime test environment has none, so ``make test`` builds first).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tools import shared_data

PROJECT_ROOT = shared_data.PROJECT_ROOT


def _data_dir(env_var: str, path: Path) -> Path:
    if not path.is_dir():
        pytest.exit(f"{env_var}: data folder '{path}' not found (expected ../shared beside the project)", returncode=2)
    return path


@pytest.fixture(autouse=True)
def _state_directory(tmp_path_factory, monkeypatch) -> None:
    """Daemons started by a test (and their subprocesses) keep their state (controls, the
    announced identity) in a folder of that test, never in the host's /var/lib/edge-face."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path_factory.mktemp("state")))


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture(scope="session")
def upstream_dir() -> Path:
    return _data_dir(shared_data.UPSTREAM_DIR_ENV, shared_data.upstream_dir())


@pytest.fixture(scope="session")
def subset_dir() -> Path:
    return _data_dir(shared_data.WIDER_SUBSET_ENV, shared_data.wider_subset_dir())


@pytest.fixture(scope="session")
def identity_dir() -> Path:
    """../shared/faces-identity: 5 people x 11 aligned 150x150 chips (johns/NAME/*.jpg)."""
    return _data_dir(shared_data.IDENTITY_ENV, shared_data.identity_dir())


@pytest.fixture(scope="session")
def photo_paths(upstream_dir: Path) -> list[Path]:
    """The 16 real upstream photos with faces, in a fixed order."""
    return sorted((upstream_dir / "images").glob("*.jpg"), key=lambda p: int(p.stem))


def _built_model(name: str, upstream_dir: Path) -> Path:
    path = shared_data.BUILD_DIR / f"version-{name}-int8.tflite"
    if path.is_file() and path.with_suffix(".json").is_file():
        return path
    try:
        from tools.quantize import build
    except ImportError as exc:
        pytest.exit(f"model '{path}' is missing and cannot be built here ({exc}); run `make model` first", returncode=2)
    return build(
        model_name=name,
        weights=upstream_dir / "models" / f"version-{name}.pth",
        calibration_dir=upstream_dir / "images",
        out_dir=path.parent,
    ).tflite_path


@pytest.fixture(scope="session")
def int8_model_path(upstream_dir: Path) -> Path:
    """models/build/version-slim-320-int8.tflite (its sidecar .json beside it)."""
    return _built_model("slim-320", upstream_dir)


@pytest.fixture(scope="session")
def detector(int8_model_path):
    """One FaceDetector for the session, on the interpreter EDGE_FACE_INTERPRETER pins (if any)."""
    from edge.detect.detector import DetectorOptions, FaceDetector

    return FaceDetector(int8_model_path, DetectorOptions(interpreter=os.environ.get("EDGE_FACE_INTERPRETER") or None))


@pytest.fixture(scope="session")
def blank(tmp_path_factory, detector) -> Path:
    """A face-free 640x480 frame (PNG), checked face-free by the model itself."""
    from daemon_support import blank_frame

    from edge.sources.imageio import load_image

    path = blank_frame(tmp_path_factory.mktemp("blank") / "blank.png")
    assert len(detector.detect(load_image(path))) == 0  # precondition: really face-free
    return path
