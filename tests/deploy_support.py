"""Helpers shared by the deployment tests (installer and Ansible role)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from edge.detect.sidecar import canonical_digest

# The ansible tools are installed beside the interpreter running the tests.
VENV_BIN = Path(sys.executable).parent


def ansible_env(workdir: Path, **extra: str) -> dict[str, str]:
    """The environment for ansible-playbook and friends: this venv's tools first, no colour,
    state and temporary files under ``workdir``, then ``extra``."""
    env = dict(os.environ)
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_PIPELINING="1",
        ANSIBLE_HOME=str(workdir / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(workdir / "ansible-tmp"),
        ANSIBLE_RETRY_FILES_ENABLED="0",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    env.update(extra)
    return env


def assert_package_runs_from_venv(venv: Path, module: str, cwd: Path) -> None:
    """The deployed virtualenv sees the OS's site packages (picamera2 comes from apt) and its
    python imports ``module`` from the venv itself. ``cwd`` must not be a checkout: its edge/
    would shadow the installed one."""
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    result = subprocess.run(
        [str(venv / "bin/python"), "-c", f"import {module}; print({module}.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )
    assert result.returncode == 0 and result.stdout.startswith(str(venv)), result.stderr


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def other_model(source: Path, folder: Path) -> Path:
    """A second release: different bytes, with a sidecar whose tflite_sha256 matches them."""
    folder.mkdir()
    model = folder / source.name
    model.write_bytes(source.read_bytes() + b"\0")
    sidecar = json.loads(source.with_suffix(".json").read_text())
    sidecar["tflite_sha256"] = sha256(model)
    sidecar["sidecar_sha256"] = canonical_digest(sidecar)
    model.with_suffix(".json").write_text(json.dumps(sidecar))
    return model


def pinned(names: list[str]) -> list[str]:
    """``name==version`` of each distribution as installed here, so a second environment gets
    the very same builds (and the same numbers out of them)."""
    from importlib.metadata import version

    return sorted(f"{name}=={version(name)}" for name in names)


def wheelhouse(cache: Path, requirements: list[str]) -> Path:
    """A folder of wheels for ``requirements`` (and their dependencies), downloaded with pip
    once and kept in ``cache`` under a name derived from the list; later installs from it use
    ``pip install --no-index --find-links``, without network."""
    folder = cache / ("wheelhouse-" + hashlib.sha256("\n".join(sorted(requirements)).encode()).hexdigest()[:16])
    if not folder.is_dir():
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
                "--dest",
                str(partial),
                *requirements,
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pip download {' '.join(requirements)} failed: {result.stderr[-2000:]}")
        partial.rename(folder)
    return folder


def cache_folder(project_root: Path) -> Path:
    """$EDGE_FACE_TEST_CACHE, else .cache/ of the checkout (git-ignored)."""
    return Path(os.environ.get("EDGE_FACE_TEST_CACHE", project_root / ".cache"))
