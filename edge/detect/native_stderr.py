"""The TFLite runtime's own chatter, moved from a user's terminal to the debug log.

The interpreter's C++ runtime prints informational lines straight to file descriptor 2
(``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` on every start), past Python's
logging, and neither ai-edge-litert's nor tflite-runtime's minimal logger reads
``TF_CPP_MIN_LOG_LEVEL``. So around the calls that print them, fd 2 goes to an anonymous
file; afterwards the runtime's ``INFO:`` lines are logged at DEBUG and everything else is
written back to fd 2 as it came: a real error from the runtime, and whatever another thread
wrote meanwhile, still reaches the user.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

# The prefix of the runtime's informational lines (tflite::logging_internal::MinimalLogger).
RUNTIME_INFO_PREFIX = b"INFO: "


def split_runtime_info(output: bytes) -> tuple[list[str], bytes]:
    """Split what was written to fd 2 into (the runtime's INFO lines, prefix and line end
    stripped, decoded) and the rest, byte for byte and in order."""
    info: list[str] = []
    rest: list[bytes] = []
    for line in output.splitlines(keepends=True):
        if line.startswith(RUNTIME_INFO_PREFIX):
            info.append(line[len(RUNTIME_INFO_PREFIX) :].rstrip(b"\r\n").decode("utf-8", "replace"))
        else:
            rest.append(line)
    return info, b"".join(rest)


@contextlib.contextmanager
def runtime_info_to_debug(log: logging.Logger) -> Iterator[None]:
    """While inside, fd 2 is captured; on leaving (also by an exception) it is restored, the
    runtime's INFO lines go to ``log`` at DEBUG and the rest back to fd 2. Where there is no
    fd 2, or no scratch file or spare descriptor can be had, nothing is captured."""
    _flush_stderr()
    scratch = _scratch_file()
    if scratch is None:
        yield
        return
    with scratch:
        try:
            saved = os.dup(2)
        except OSError:  # out of file descriptors: the load itself will say so
            saved = None
        if saved is None:
            yield
            return
        os.dup2(scratch.fileno(), 2)
        try:
            yield
        finally:
            _flush_stderr()
            os.dup2(saved, 2)
            os.close(saved)
            scratch.seek(0)
            info, rest = split_runtime_info(scratch.read())
            for line in info:
                log.debug("interpreter: %s", line)
            _write_all(2, rest)


def _scratch_file() -> BinaryIO | None:
    """An anonymous file: in memory where the kernel offers it (no writable folder needed
    under the unit's sandbox), else an unlinked temporary file; None when there is no fd 2
    to capture or no file can be made."""
    try:
        os.fstat(2)
    except OSError:
        return None
    try:
        return open(os.memfd_create("edge-face-stderr", os.MFD_CLOEXEC), "w+b")
    except (AttributeError, OSError):  # not Linux, or refused by a system-call filter
        pass
    try:
        return tempfile.TemporaryFile()
    except OSError:
        return None


def _flush_stderr() -> None:
    """Python's buffered stderr goes out through the fd 2 it was written for."""
    with contextlib.suppress(AttributeError, ValueError, OSError):
        sys.stderr.flush()


def _write_all(fd: int, data: bytes) -> None:
    with contextlib.suppress(OSError):  # stderr gone: nowhere left to tell
        while data:
            data = data[os.write(fd, data) :]
