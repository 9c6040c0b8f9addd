"""Where the tools find the project and the shared data read by path (never copied in).

``$EDGE_FACE_UPSTREAM_DIR``: a local copy of the upstream repository's data (``models/``,
``images/``, ``images-masked/``, ``widerface-ground-truth/``), default
``<project>/../shared/upstream``. ``$EDGE_FACE_WIDER_SUBSET``: the 200-image WIDER val subset,
default ``<project>/../shared/wider-val-subset``. ``$EDGE_FACE_IDENTITY_DIR``: labelled face
chips for the recognition tests, default ``<project>/../shared/faces-identity``. Any may not
exist; callers say what is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

from edge.models import PACKAGED_MODEL_NAME

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = PROJECT_ROOT / "models" / "build"
DEFAULT_INT8_MODEL = BUILD_DIR / PACKAGED_MODEL_NAME
UPSTREAM_DIR_ENV = "EDGE_FACE_UPSTREAM_DIR"
WIDER_SUBSET_ENV = "EDGE_FACE_WIDER_SUBSET"
IDENTITY_ENV = "EDGE_FACE_IDENTITY_DIR"


def upstream_dir() -> Path:
    """``$EDGE_FACE_UPSTREAM_DIR``, else ``<project root>/../shared/upstream``."""
    return Path(os.environ.get(UPSTREAM_DIR_ENV) or PROJECT_ROOT.parent / "shared" / "upstream")


def wider_subset_dir() -> Path:
    """``$EDGE_FACE_WIDER_SUBSET``, else ``<project root>/../shared/wider-val-subset``."""
    return Path(os.environ.get(WIDER_SUBSET_ENV) or PROJECT_ROOT.parent / "shared" / "wider-val-subset")


def identity_dir() -> Path:
    """``$EDGE_FACE_IDENTITY_DIR``, else ``<project root>/../shared/faces-identity``."""
    return Path(os.environ.get(IDENTITY_ENV) or PROJECT_ROOT.parent / "shared" / "faces-identity")
