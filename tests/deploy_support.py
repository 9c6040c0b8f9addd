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
