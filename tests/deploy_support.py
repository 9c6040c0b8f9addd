"""Helpers shared by the deployment tests (installer and Ansible role)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from edge.sidecar import canonical_digest


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
    import shutil
    import subprocess
    import sys

    folder = cache / ("wheelhouse-" + hashlib.sha256("\n".join(sorted(requirements)).encode()).hexdigest()[:16])
    if not folder.is_dir():
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--dest", str(partial),
             *requirements],
            capture_output=True, text=True, timeout=900,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pip download {' '.join(requirements)} failed: {result.stderr[-2000:]}")
        partial.rename(folder)
    return folder


def cache_folder(project_root: Path) -> Path:
    """$EDGE_FACE_TEST_CACHE, else .cache/ of the checkout (git-ignored)."""
    import os

    return Path(os.environ.get("EDGE_FACE_TEST_CACHE", project_root / ".cache"))
