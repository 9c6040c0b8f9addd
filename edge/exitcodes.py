"""Process exit codes of every `edge-face` command: the one place they are defined.

The systemd unit's ``RestartPreventExitStatus`` lists the codes that retrying cannot heal
(CONFIG, MODEL); tests check the unit against ``NOT_RETRYABLE``.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    """Clean stop, a finished replay, or every input processed."""
    FAILURE = 1
    """A run-time failure (an unexpected error in any thread, some CLI inputs failed)."""
    CONFIG = 2
    """Usage or configuration error: one line names the option or key."""
    SOURCE = 3
    """The frame source can never work (e.g. a replay folder that does not exist)."""
    MODEL = 4
    """Model missing, unreadable, tampered with, or not an edge-face int8 model."""
    OFFLINE = 5
    """`edge-face fleet`: a device is offline or stopped (or the one asked for has no status)."""


# Exit codes a restart cannot fix: the unit must not loop on them.
NOT_RETRYABLE = (ExitCode.CONFIG, ExitCode.MODEL)
