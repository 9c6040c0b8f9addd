"""The interpreter runtime's own stderr lines: INFO chatter to the debug log, the rest kept.

The mechanism is tested on file descriptor 2 itself (what the C++ runtime writes to), and
end to end on the real interpreter loading the real model in a process of its own.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

import pytest

from edge.detect.native_stderr import runtime_info_to_debug, split_runtime_info
from tools.shared_data import PROJECT_ROOT

XNNPACK_LINE = "Created TensorFlow Lite XNNPACK delegate for CPU."


def test_split_keeps_everything_but_the_info_lines_byte_for_byte():
    output = b"INFO: one\nERROR: a real one\r\nINFO: two\n\xff not utf-8\ntail without newline"
    info, rest = split_runtime_info(output)
    assert info == ["one", "two"]
    assert rest == b"ERROR: a real one\r\n\xff not utf-8\ntail without newline"
    assert split_runtime_info(b"") == ([], b"")


def test_info_lines_become_debug_records_and_errors_still_reach_stderr_also_when_loading_fails(capfd, caplog):
    caplog.set_level(logging.DEBUG, logger="edge.model")
    with pytest.raises(RuntimeError, match="load failed"), runtime_info_to_debug(logging.getLogger("edge.model")):
        os.write(2, f"INFO: {XNNPACK_LINE}\n".encode())
        os.write(2, b"ERROR: Didn't find op for builtin opcode 'PAD' version '99'.\n")
        # Another thread's line in the meantime is held back, not lost.
        writer = threading.Thread(target=os.write, args=(2, b"another thread\n"))
        writer.start()
        writer.join()
        raise RuntimeError("load failed")
    assert capfd.readouterr().err == "ERROR: Didn't find op for builtin opcode 'PAD' version '99'.\nanother thread\n"
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(logging.DEBUG, f"interpreter: {XNNPACK_LINE}")]
    os.write(2, b"after\n")  # fd 2 is the terminal's again
    assert capfd.readouterr().err == "after\n"


def test_loading_the_real_model_prints_nothing_and_logs_the_runtime_chatter_at_debug():
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format='%(levelname)s %(name)s: %(message)s')\n"
        "from edge.detect.model import Int8Model\n"
        "from edge.models import PACKAGED_MODEL_PATH\n"
        "print('interpreter', Int8Model(PACKAGED_MODEL_PATH).interpreter_name)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    if "interpreter ai_edge_litert" in done.stdout:  # LiteRT announces XNNPACK; tflite-runtime on x86 does not
        assert f"DEBUG edge.model: interpreter: {XNNPACK_LINE}" in done.stdout.splitlines()
