"""Opening files a user named (config, secrets, certificates, models, images) safely.

A path from a config file or the command line may be anything: a folder, a FIFO that would
block ``open()`` forever, a device such as /dev/zero that never ends, a symlink loop, a
file the service user may not read. :func:`open_regular_file` opens without blocking and
refuses everything but a regular file, and :func:`os_reason` turns the failure into the
few words a one-line error needs.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO


class NotARegularFile(OSError):
    """The path exists but is a folder, FIFO, socket or device."""


def open_regular_file(path: str | os.PathLike[str]) -> BinaryIO:
    """``path`` opened for binary reading; raises OSError (incl. :class:`NotARegularFile`).

    O_NONBLOCK: opening a FIFO with no writer returns at once instead of hanging; it has no
    effect on reads from a regular file, the only kind returned.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a FIFO, socket or device)"
            raise NotARegularFile(errno.EINVAL, f"is {kind}", os.fspath(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bounded(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of regular file ``path``; OSError(EFBIG) when it is larger than ``limit``."""
    with open_regular_file(path) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"is larger than {limit} bytes", os.fspath(path))
    return data


def os_reason(exc: BaseException) -> str:
    """A short lower-case cause for a failed open/read: "no such file", "permission denied"."""
    if isinstance(exc, NotARegularFile) or (isinstance(exc, OSError) and exc.errno == errno.EFBIG):
        return str(exc.strerror)
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "is a folder"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    if isinstance(exc, ValueError):  # e.g. an embedded NUL byte in the path
        return f"not a usable path ({exc})"
    return str(exc) or type(exc).__name__
