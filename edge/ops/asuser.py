"""Run a check as another user: ``edge-face check-config --as-user edge-face FILE``.

Run as root, check-config can read every file; the service cannot (it runs as its own user,
and its password file, certificates or model may sit where only root can read). A forked
child drops to the user's uid, gid and supplementary groups, the way systemd starts the
service (``User=``/``Group=``), and runs the same check there, so every path is opened with
the service's rights.
"""

from __future__ import annotations

import os
import pwd
import sys
from collections.abc import Callable

from edge.exitcodes import ExitCode


def run_as_user(user: str, check: Callable[[], int], what: str) -> int:
    """``check()`` in a child process running as ``user``; returns its exit code.

    Needs root (switching users does); any other caller or an unknown user gets one error
    line and ExitCode.CONFIG. The child's output goes straight to our stdout/stderr.
    """
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        print(f"error: {what} --as-user: no such user {user!r}", file=sys.stderr)
        return ExitCode.CONFIG
    if os.geteuid() != 0:
        print(f"error: {what} --as-user {user}: needs root to switch to that user (run it with sudo)", file=sys.stderr)
        return ExitCode.CONFIG
    groups = os.getgrouplist(entry.pw_name, entry.pw_gid)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        code: int = ExitCode.FAILURE
        try:
            os.setgroups(groups)
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            code = check()
        except BaseException as exc:  # the child must end here whatever happens
            print(f"error: {what} as user {user!r} failed: {exc}", file=sys.stderr)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(int(code))
    _, status = os.waitpid(pid, 0)
    child_code = os.waitstatus_to_exitcode(status)
    return child_code if child_code >= 0 else ExitCode.FAILURE  # killed by a signal
