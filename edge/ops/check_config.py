"""``edge-face check-config [--as-user USER] FILE``: the loader's verdict on a config file, as
the service would reach it.

The loader (:mod:`edge.config`) decides what a config means; this command adds what only an
operator command can: re-running the check as the service user (:mod:`edge.ops.asuser`) and
checking the state directory the MQTT controls keep (:mod:`edge.mqtt.controls`).
"""

from __future__ import annotations

import os
import sys

from edge.config import ConfigError, describe, load_config
from edge.exitcodes import ExitCode
from edge.mqtt.controls import state_dir_problem
from edge.ops.asuser import run_as_user


def check_config_main(path: str | os.PathLike[str], as_user: str | None = None) -> int:
    """``edge-face check-config [--as-user USER] FILE``: 0 and "ok: <summary>" on stdout, or
    2 and one error line on stderr. With ``as_user`` the check runs in a child process with
    that user's uid, gid and groups (needs root), so every path is opened as the service
    will open it."""
    if as_user is None:
        return _check_and_report(path, "")
    # Everything the check uses is imported with this module, as root: the service user may not
    # be able to read the interpreter's own files (a Python under /root, say).
    absolute = os.path.abspath(path)  # the service starts from /, not from our folder
    return run_as_user(as_user, lambda: _check_and_report(absolute, f" (as user {as_user!r})"), what="check-config")


def _check_and_report(path: str | os.PathLike[str], who: str) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"error{who}: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    # The state directory keeps the controls and the announced identity, both MQTT's.
    problem = state_dir_problem(config.device.state_dir) if config.mqtt.host is not None else None
    if problem is not None:
        print(f"error{who}: {problem}", file=sys.stderr)
        return ExitCode.CONFIG
    print(f"ok{who}: {describe(config)}")
    return ExitCode.OK
