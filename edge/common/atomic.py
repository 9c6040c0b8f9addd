"""Whole-or-nothing file writes: a reader sees the old file or the complete new one, never a
partial one, and a failed write leaves no temp file behind.

The bytes go to a temp file in the destination's own folder (``os.replace`` is atomic only
within one file system), are fsynced, and the temp file is renamed over the destination.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

# mkstemp creates 0600; what we write (models, reports, images) is ordinary shared data.
DEFAULT_MODE = 0o644


@contextmanager
def atomic_writer(
    path: str | os.PathLike[str], mode: int = DEFAULT_MODE, make_parents: bool = False
) -> Iterator[BinaryIO]:
    """Yield a binary stream; on a clean exit it becomes ``path`` (permissions ``mode``).

    Any exception inside the block (a failed check included) removes the temp file and
    leaves ``path`` untouched. ``make_parents`` creates missing parent folders first.
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temp_name, mode)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_atomic(
    path: str | os.PathLike[str], content: bytes, mode: int = DEFAULT_MODE, make_parents: bool = False
) -> None:
    """Write ``content`` to ``path`` whole or not at all (see :func:`atomic_writer`)."""
    with atomic_writer(path, mode, make_parents) as stream:
        stream.write(content)
