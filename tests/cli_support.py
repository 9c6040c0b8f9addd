"""The edge-face command line as a real process, the way an operator or systemd runs it:
``python -m edge.cli`` with the interpreter running the tests, from the project root, text
output. One place for the command, so every test runs the CLI the same way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import IO

from tools.shared_data import PROJECT_ROOT

EDGE_CLI = (sys.executable, "-m", "edge.cli")


def run_cli(
    *args: str, timeout: float = 60, cwd: Path = PROJECT_ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``edge-face ARGS`` run to its end, stdout and stderr captured."""
    return subprocess.run([*EDGE_CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def start_run(
    config: Path,
    stdout: int | IO[str] = subprocess.PIPE,
    stderr: int | IO[str] = subprocess.PIPE,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    """``edge-face run --config CONFIG`` started; stdout and stderr are pipes unless given
    (DEVNULL, or a file the test reads while the daemon runs)."""
    return subprocess.Popen(
        [*EDGE_CLI, "run", "--config", str(config)], cwd=PROJECT_ROOT, env=env, stdout=stdout, stderr=stderr, text=True
    )
