"""edge.daemon.memory: a daemon process gives freed frame buffers back to the system."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.integration

# Frames of changing sizes, allocated and freed by a reader thread while small objects that
# live on are allocated between them (as the daemon's loop does): what stays resident after.
FRAMES = textwrap.dedent(
    """
    import sys, threading
    import numpy as np
    from edge.daemon.memory import return_freed_frame_buffers

    if sys.argv[1] == "tuned":
        assert return_freed_frame_buffers()

    def rss_mb():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024

    kept = []

    def reader():
        first = np.ones(6 << 20, np.uint8)
        del first
        for number in range(12):
            frame = np.ones((4 << 20) + number * (64 << 10), np.uint8)
            kept.append(np.ones(2000))
            del frame

    before = rss_mb()
    thread = threading.Thread(target=reader)
    thread.start()
    thread.join()
    print(rss_mb() - before)
    """
)


def _held_mb(mode: str, project_root) -> float:
    result = subprocess.run(
        [sys.executable, "-c", FRAMES, mode], cwd=project_root, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return float(result.stdout)


def test_freed_frames_do_not_stay_resident(project_root):
    # glibc's default: after the first large free, frame-sized buffers come from the thread's
    # heap and their holes stay resident (what made a replay of many photo sizes grow).
    assert _held_mb("default", project_root) >= 4.0
    assert _held_mb("tuned", project_root) < 1.0
