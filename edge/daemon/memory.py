"""The daemon process gives freed frame buffers back to the system (glibc's malloc settings).

glibc serves a request of 128 KiB or more with its own mmap and unmaps it when it is freed,
but after the first such free it raises that threshold to the size freed (up to 32 MiB, and
the trim threshold to twice that): from then on frame-sized buffers are carved out of its
heaps, one heap per thread that allocates (the frame reader decodes, the loop resizes and
encodes snapshots). A heap returns memory only from its top, so frames of changing sizes
leave resident holes behind: measured with ``tools/bench_daemon.py --sizes 40`` (a replay of
40 photo sizes), 8-12 MB of a 105 MB peak.

:func:`return_freed_frame_buffers` fixes both thresholds: a buffer of
:data:`MMAP_THRESHOLD_BYTES` or more that the heap cannot serve from free memory gets its own
mapping, unmapped when freed, and a heap gives back what is free at its top past
:data:`TRIM_THRESHOLD_BYTES`. The price is paid in page faults when a frame larger than the
heap keeps free is allocated: measured on x86, about 0.3 ms CPU per MB (a 1280x720 frame
copy 0.2 -> 1.1 ms; a 640x480 frame fits the kept megabyte: no change). The numpy resize
keeps its temporaries under the threshold for that reason (edge.detect.preprocess).
"""

from __future__ import annotations

import ctypes

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 256 * 1024
TRIM_THRESHOLD_BYTES = 1024 * 1024


def return_freed_frame_buffers() -> bool:
    """Set glibc's mmap and trim thresholds for this process (see the module docstring).
    False where the C library has no ``mallopt`` or refuses it (not glibc): nothing changes."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success, 0 on error (musl's stub always 0).
    mapped: bool = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    trimmed: bool = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    return mapped and trimmed
