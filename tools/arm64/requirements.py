"""Requirement lists of the emulated device venvs, read from pyproject.toml.

Reading them here instead of repeating them in the shell script keeps the arm64 check in
step with the package: a version bump in pyproject.toml rebuilds the cached venvs.

    python -m tools.arm64.requirements PYPROJECT {build|litert|tflite-runtime}

prints one requirement per line.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

VENV_KINDS = ("build", "litert", "tflite-runtime")
# A Pi user who has tflite-runtime typically has no LiteRT wheel, and LiteRT wants numpy 2
# while tflite-runtime 2.14 needs numpy<2: the tflite-runtime venv must not contain it.
LITERT_DISTRIBUTION = "ai-edge-litert"


def _distribution_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"cannot read a distribution name from requirement {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def venv_requirements(pyproject: dict, kind: str) -> list[str]:
    """Requirements (PEP 508 strings, markers kept for pip to evaluate on aarch64) of one venv."""
    if kind == "build":
        return list(pyproject["build-system"]["requires"])
    project = pyproject["project"]
    base = list(project.get("dependencies", []))
    if kind == "litert":
        return base
    if kind == "tflite-runtime":
        without_litert = [r for r in base if _distribution_name(r) != LITERT_DISTRIBUTION]
        return without_litert + list(project["optional-dependencies"]["tflite-runtime"])
    raise ValueError(f"venv kind {kind!r} is unknown (allowed: {', '.join(VENV_KINDS)})")


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in VENV_KINDS:
        print(f"usage: python -m tools.arm64.requirements PYPROJECT {{{'|'.join(VENV_KINDS)}}}", file=sys.stderr)
        return 2
    path = Path(argv[0])
    try:
        pyproject = tomllib.loads(path.read_text(encoding="utf-8"))
        requirements = venv_requirements(pyproject, argv[1])
    except (OSError, tomllib.TOMLDecodeError, KeyError, ValueError) as exc:
        print(f"{path}: cannot read the {argv[1]} requirements ({exc})", file=sys.stderr)
        return 2
    print("\n".join(requirements))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
