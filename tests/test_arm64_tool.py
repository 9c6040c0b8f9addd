"""The arm64 check's own parts, without running the check.

The check itself (tools/arm64_check.sh: debootstrap, qemu, emulated venvs on two Debian
roots, minutes of emulation, root) runs in `make test` as a step of its own, not as a
pytest; so does the cost count (tools/arm_cost.py, `make arm-cost`). Here: the script parses
and refuses bad arguments before touching anything, and its helpers read pyproject.toml,
carry pip settings, judge parity, read the XNNPACK facts, parse the counting plugin's log
and compute the cost ratios the way the tools rely on.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import shutil
import struct
import subprocess
import tomllib
from pathlib import Path

import pytest

from tools import arm_cost
from tools.arm64 import xnnpack_probe
from tools.arm64.compare import (
    BOX_RELATIVE_TOLERANCE,
    BOX_ROUNDING_STEP,
    SCORE_TOLERANCE,
    format_table,
    read_detect_output,
    summarize_run,
)
from tools.arm64.pip_settings import chroot_settings, parse_config_list
from tools.arm64.requirements import venv_requirements

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def script(project_root: Path) -> Path:
    return project_root / "tools" / "arm64_check.sh"


def _run_script(script: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=60)


# ---- the shell script ------------------------------------------------------------------------


def test_script_parses(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_script_passes_shellcheck(script: Path) -> None:
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_help_names_every_option(script: Path) -> None:
    result = _run_script(script, "--help")
    assert result.returncode == 0
    for option in ("--cache", "--model", "--images", "--qemu", "--suites", "--cpus"):
        assert option in result.stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--frobnicate"], "--frobnicate"),
        (["--images", "0"], "--images"),
        (["--images=many"], "many"),
        (["--cache"], "--cache"),
        (["--model", "/nonexistent/model.tflite"], "/nonexistent/model.tflite"),
        (["--suites", "bookworm,Trixie 13"], "Trixie 13"),
        (["--cpus", "cortex-a72,a72;rm"], "a72;rm"),
        (["--cpus="], "--cpus"),
    ],
)
def test_bad_arguments_fail_with_one_line(script: Path, args: list[str], named: str) -> None:
    result = _run_script(script, *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr
    assert result.stdout == ""


def test_model_without_sidecar_is_refused(script: Path, tmp_path: Path) -> None:
    model = tmp_path / "lonely.tflite"
    model.write_bytes(b"not read: the missing sidecar is found first")
    result = _run_script(script, "--model", str(model))
    assert result.returncode == 2
    assert str(tmp_path / "lonely.json") in result.stderr


# ---- requirements of the emulated venvs --------------------------------------------------------


@pytest.fixture(scope="module")
def pyproject(project_root: Path) -> dict:
    return tomllib.loads((project_root / "pyproject.toml").read_text(encoding="utf-8"))


def _names(requirements: list[str]) -> set[str]:
    return {re.match(r"\s*([A-Za-z0-9._-]+)", r).group(1).lower() for r in requirements}


def test_litert_venv_gets_the_base_dependencies(pyproject: dict) -> None:
    requirements = venv_requirements(pyproject, "litert")
    assert requirements == pyproject["project"]["dependencies"]
    assert "ai-edge-litert" in _names(requirements)
    assert "tensorflow" not in _names(requirements) and "tensorflow-cpu" not in _names(requirements)


def test_tflite_runtime_venv_has_no_litert_and_numpy_below_2(pyproject: dict) -> None:
    requirements = venv_requirements(pyproject, "tflite-runtime")
    names = _names(requirements)
    assert "ai-edge-litert" not in names
    assert "tflite-runtime==2.14.0" in requirements
    assert any(r.replace(" ", "").startswith("numpy<2") for r in requirements)
    # Everything else a device needs is still there.
    base = _names(venv_requirements(pyproject, "litert")) - {"ai-edge-litert"}
    assert base <= names


def test_unknown_venv_kind_is_refused(pyproject: dict) -> None:
    with pytest.raises(ValueError, match="'tensorflow'"):
        venv_requirements(pyproject, "tensorflow")


# ---- pip settings carried into the chroot -----------------------------------------------------


def test_environment_wins_over_config_files() -> None:
    options = parse_config_list(
        "global.index-url='https://files.example/simple'\n"
        ":env:.index-url='https://mirror.example/simple'\n"
        "global.cert='/etc/ssl/certs/ca-certificates.crt'\n"
        "global.constraint='/etc/xdg/pip/constraints.txt'\n"
    )
    assert options["index-url"] == "https://mirror.example/simple"
    settings = chroot_settings(options)
    assert settings.environment["PIP_INDEX_URL"] == "https://mirror.example/simple"
    assert settings.host_ca_bundle == "/etc/ssl/certs/ca-certificates.crt"
    # A host constraint file describes the host's disk: it stays behind.
    assert not any("constraint" in name.lower() for name in settings.environment)
    # The chroot ignores its own pip configuration files.
    assert settings.environment["PIP_CONFIG_FILE"] == "/dev/null"


def test_local_index_folders_are_bound_and_missing_ones_dropped(tmp_path: Path) -> None:
    index_root = tmp_path / "pypi" / "simple"
    index_root.mkdir(parents=True)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    settings = chroot_settings(
        {
            "extra-index-url": f"file://{index_root} file://{tmp_path}/gone/simple https://x.example/simple",
            "find-links": f"{wheels} {tmp_path}/no-such-folder",
        }
    )
    assert settings.environment["PIP_EXTRA_INDEX_URL"].split() == [f"file://{index_root}", "https://x.example/simple"]
    assert settings.environment["PIP_FIND_LINKS"] == str(wheels)
    # A simple index links to ../../files/..: the folder above the index root must be visible.
    assert set(settings.bind_paths) == {str(index_root.parent), str(wheels)}


# ---- parity judgement ------------------------------------------------------------------------


def _write_run(path: Path, images: dict[str, list[tuple[list[float], float]]], folder: str) -> str:
    lines = [
        json.dumps(
            {
                "image": f"{folder}/{name}",
                "width": 640,
                "height": 480,
                "faces": [{"box": box, "score": score} for box, score in faces],
            }
        )
        for name, faces in images.items()
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


HOST_FACES = {
    "a.jpg": [([100.25, 50.5, 180.75, 150.0], 0.9991), ([300.0, 40.0, 330.5, 80.25], 0.8125)],
    "b.jpg": [([12.5, 8.0, 40.0, 44.0], 0.75)],
}


def _judge(tmp_path: Path, candidate: dict) -> tuple[str, bool]:
    host = read_detect_output(_write_run(tmp_path / "host.jsonl", HOST_FACES, "/srv/shared/images"))
    arm64 = read_detect_output(_write_run(tmp_path / "arm64.jsonl", candidate, "/tmp/run/images"))
    return format_table(["host", "arm64"], [host, arm64])


def _shifted(faces: dict, image: str, face: int, coordinate: int, delta: float) -> dict:
    copy = {name: [(list(box), score) for box, score in entries] for name, entries in faces.items()}
    copy[image][face][0][coordinate] += delta
    return copy


def test_identical_runs_pass_although_paths_differ(tmp_path: Path) -> None:
    table, passed = _judge(tmp_path, HOST_FACES)
    assert passed and table.splitlines()[-1].endswith("PASS")


def test_face_order_does_not_matter(tmp_path: Path) -> None:
    swapped = dict(HOST_FACES, **{"a.jpg": list(reversed(HOST_FACES["a.jpg"]))})
    assert _judge(tmp_path, swapped)[1]


def test_one_print_rounding_step_passes(tmp_path: Path) -> None:
    assert _judge(tmp_path, _shifted(HOST_FACES, "b.jpg", 0, 0, BOX_ROUNDING_STEP))[1]


def test_box_beyond_relative_tolerance_fails(tmp_path: Path) -> None:
    # 300 px: 1e-4 relative is 0.03 px; a tenth of a pixel is well beyond it.
    delta = max(10 * BOX_RELATIVE_TOLERANCE * 300.0, 3 * BOX_ROUNDING_STEP)
    table, passed = _judge(tmp_path, _shifted(HOST_FACES, "a.jpg", 1, 0, delta))
    assert not passed
    assert next(line for line in table.splitlines() if line.startswith("a.jpg")).endswith("FAIL")
    assert next(line for line in table.splitlines() if line.startswith("b.jpg")).endswith("PASS")


def test_score_beyond_tolerance_fails(tmp_path: Path) -> None:
    changed = dict(HOST_FACES, **{"b.jpg": [(HOST_FACES["b.jpg"][0][0], 0.75 + 3 * SCORE_TOLERANCE)]})
    assert not _judge(tmp_path, changed)[1]


def test_other_face_count_fails(tmp_path: Path) -> None:
    assert not _judge(tmp_path, dict(HOST_FACES, **{"a.jpg": HOST_FACES["a.jpg"][:1]}))[1]


def test_missing_image_fails(tmp_path: Path) -> None:
    assert not _judge(tmp_path, {"a.jpg": HOST_FACES["a.jpg"]})[1]


def test_no_images_at_all_is_not_a_pass(tmp_path: Path) -> None:
    # A host run that printed nothing must not let an equally empty arm64 run pass.
    empty = read_detect_output(_write_run(tmp_path / "empty.jsonl", {}, "/nowhere"))
    assert not format_table(["host", "arm64"], [empty, empty])[1]


def test_run_summary_counts_faces_and_names_the_worst_gap(tmp_path: Path) -> None:
    host = read_detect_output(_write_run(tmp_path / "host.jsonl", HOST_FACES, "/h"))
    moved = read_detect_output(_write_run(tmp_path / "arm.jsonl", _shifted(HOST_FACES, "a.jpg", 0, 2, 0.5), "/a"))
    summary = summarize_run("trixie/cortex-a76", host, moved)
    assert (summary.images, summary.faces) == (2, 3)
    assert summary.max_box_difference == pytest.approx(0.5)
    assert not summary.passed
    assert summary.line("host").startswith("trixie/cortex-a76 vs host: 2 images, 3 faces, max |Δbox| 0.5 px")
    assert summary.line("host").endswith("FAIL")
    assert summarize_run("same", host, host).passed


def test_run_summary_of_a_run_missing_an_image_fails(tmp_path: Path) -> None:
    host = read_detect_output(_write_run(tmp_path / "host.jsonl", HOST_FACES, "/h"))
    partial = read_detect_output(_write_run(tmp_path / "arm.jsonl", {"a.jpg": HOST_FACES["a.jpg"]}, "/a"))
    assert not summarize_run("partial", host, partial).passed


# ---- ARM cost: the plugin's log, regions, ratios (tools/arm_cost.py) ---------------------------


def _mark_line(label: int, all_insns: int, all_dot: int = 0, insns: int | None = None) -> str:
    own = all_insns if insns is None else insns
    return f"mark {label} vcpu 0 insns {own} dot {all_dot} all_insns {all_insns} all_dot {all_dot}"


def test_plugin_log_marks_are_read_and_other_lines_ignored() -> None:
    log = "\n".join(
        [
            "some qemu chatter",
            _mark_line(0, 1000),
            _mark_line(1, 5000, all_dot=7, insns=4000),
            "total insns 9000 dot 7",
        ]
    )
    marks = arm_cost.parse_plugin_log(log, "x.log")
    assert marks[1] == arm_cost.Mark(insns=4000, dot=7, all_insns=5000, all_dot=7)
    assert set(marks) == {0, 1}


@pytest.mark.parametrize(
    ("line", "named"),
    [("mark 3 vcpu 0 insns many dot 0 all_insns 1 all_dot 0", "x.log:2"), ("mark 4 vcpu 0", "x.log:2")],
)
def test_a_garbled_mark_line_is_an_error_naming_file_and_line(line: str, named: str) -> None:
    with pytest.raises(arm_cost.CostError, match=named):
        arm_cost.parse_plugin_log(_mark_line(0, 1) + "\n" + line, "x.log")


def test_a_marker_seen_twice_is_an_error() -> None:
    with pytest.raises(arm_cost.CostError, match="marker 0 appears twice"):
        arm_cost.parse_plugin_log(_mark_line(0, 1) + "\n" + _mark_line(0, 2), "x.log")


def _regions_and_marks(stage_sizes: dict[str, list[int]], marker_cost: int) -> tuple[list[dict], dict]:
    """Regions laid end to end as cost_guest lays them: each holds its size plus one mark."""
    regions, marks, label, total = [], {}, 0, 0
    for stage, sizes in {"empty": [0, 0, 0], **stage_sizes}.items():
        for frame, size in enumerate(sizes):
            marks[label] = arm_cost.Mark(total, 0, total, 0)
            total += size + marker_cost
            marks[label + 1] = arm_cost.Mark(total, size // 10, total, size // 10)
            regions.append({"stage": stage, "frame": str(frame), "start": label, "end": label + 1})
            label += 2
    return regions, marks


def test_regions_are_net_of_the_markers_own_cost() -> None:
    regions, marks = _regions_and_marks({"int8_invoke": [41_000, 42_000, 40_000]}, marker_cost=2_500)
    counts = arm_cost.region_counts(regions, marks)
    assert [c.insns for c in counts] == [41_000, 42_000, 40_000]
    assert [c.dot for c in counts] == [4_100, 4_200, 4_000]
    medians = arm_cost.stage_medians(counts)
    assert medians["int8_invoke"] == {"insns": 41_000.0, "dot": 4_100.0, "frames": 3}


def test_a_region_of_several_spans_pays_the_marker_once_per_span() -> None:
    regions, marks = _regions_and_marks({"a": [100], "b": [200], "c": [400]}, marker_cost=1_000)
    spans = [[r["start"], r["end"]] for r in regions if r["stage"] in ("a", "c")]
    counts = arm_cost.region_counts([*regions, {"stage": "a+c", "frame": "0", "spans": spans}], marks)
    assert [c.insns for c in counts if c.stage == "a+c"] == [500]


def test_regions_without_empty_ones_cannot_be_corrected() -> None:
    regions, marks = _regions_and_marks({"decode_nms": [10]}, marker_cost=5)
    with pytest.raises(arm_cost.CostError, match="no empty regions"):
        arm_cost.region_counts([r for r in regions if r["stage"] != "empty"], marks)


def test_a_region_whose_marker_is_missing_from_the_log_is_named() -> None:
    regions, marks = _regions_and_marks({"decode_nms": [10]}, marker_cost=5)
    del marks[regions[-1]["end"]]
    with pytest.raises(arm_cost.CostError, match="decode_nms 0"):
        arm_cost.region_counts(regions, marks)


def _stages(**insns: float) -> dict[str, dict[str, float]]:
    return {stage: {"insns": value, "dot": 0.0, "frames": 8} for stage, value in insns.items()}


DETECTOR = _stages(
    int8_invoke=20e6,
    float_invoke=40e6,
    preprocess_320=0.1e6,
    preprocess_640=0.3e6,
    decode_nms=0.2e6,
    upstream_post=1.2e6,
)


def test_ratios_and_targets_of_a_cpu_cost() -> None:
    daemon = {
        "640x480": _stages(daemon_outside_invoke=9.0e6, daemon_loop=0.5e6),
        "320x240": _stages(daemon_outside_invoke=0.9e6, daemon_loop=0.4e6),
    }
    cost = arm_cost.cpu_cost("cortex-a76", "ai_edge_litert", DETECTOR, daemon)
    assert cost.int8_vs_float == pytest.approx(0.5)
    assert cost.decode_speedup == pytest.approx(6.0)
    assert cost.outside_vs_invoke("320x240") == pytest.approx(0.045)
    assert cost.outside_vs_invoke("1920x1080") is None
    assert arm_cost.check_targets([cost]) == [
        "target cortex-a76: int8 invoke <= 0.5x float: 0.50x PASS",
        "target cortex-a76: per-frame work outside invoke (640x480 frames) <= 5% of int8 invoke: 45.0% MISS",
        "target cortex-a76: per-frame work outside invoke (320x240 frames) <= 5% of int8 invoke: 4.5% PASS",
    ]
    slow = arm_cost.cpu_cost("cortex-a72", "ai_edge_litert", dict(DETECTOR, **_stages(int8_invoke=42e6)), {})
    assert arm_cost.check_targets([slow]) == ["target cortex-a72: int8 invoke <= 0.5x float: 1.05x MISS"]


def test_targets_only_judge_litert_on_the_pi4_and_pi5_cpus() -> None:
    others = [
        arm_cost.cpu_cost("cortex-a53", "ai_edge_litert", DETECTOR, {}),
        arm_cost.cpu_cost("cortex-a72", "tflite_runtime", DETECTOR, {}),
    ]
    assert arm_cost.check_targets(others) == []


def test_a_stage_missing_from_a_run_is_an_error() -> None:
    partial = {k: v for k, v in DETECTOR.items() if k != "float_invoke"}
    with pytest.raises(arm_cost.CostError, match="float_invoke"):
        arm_cost.cpu_cost("cortex-a72", "ai_edge_litert", partial, {})


def test_cost_table_has_one_row_per_cpu_and_interpreter() -> None:
    costs = [
        arm_cost.cpu_cost(
            "cortex-a72",
            "ai_edge_litert",
            DETECTOR,
            {"320x240": _stages(daemon_outside_invoke=0.9e6, daemon_loop=0.4e6)},
        ),
        arm_cost.cpu_cost("cortex-a72", "tflite_runtime", DETECTOR, {}),
    ]
    table = arm_cost.format_table(costs, markdown=True).splitlines()
    assert len(table) == 4 and table[0].startswith("| -cpu | interpreter | int8 invoke")
    assert (
        "| 20.00M |" in table[2] and "| 0.50x |" in table[2] and table[2].endswith("| 0.40M | - | - | 0.90M | 4.5% |")
    )
    assert table[3].endswith("| - | - | - | - | - |")  # no daemon run with tflite-runtime


# ---- the XNNPACK probe ---------------------------------------------------------------------------


def _auxv(hwcap: int, hwcap2: int) -> bytes:
    return struct.pack("<8Q", 6, 4096, 16, hwcap, 26, hwcap2, 0, 0)


def test_hwcaps_are_read_from_the_auxiliary_vector() -> None:
    a72 = xnnpack_probe.read_hwcaps(_auxv(0b11, 0))
    a76 = xnnpack_probe.read_hwcaps(_auxv((1 << 20) | (1 << 10) | 0b11, 0))
    assert a72 == {"fp16": False, "asimddp": False, "sve": False, "i8mm": False}
    assert a76 == {"fp16": True, "asimddp": True, "sve": False, "i8mm": False}
    assert xnnpack_probe.read_hwcaps(_auxv(0, 1 << 13))["i8mm"]


def test_probe_sees_litert_delegate_the_whole_int8_graph(project_root: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(
        model_path=str(project_root / "models" / "build" / "version-slim-320-int8.tflite"), num_threads=1
    )
    interpreter.allocate_tensors()
    delegated = xnnpack_probe.delegation(interpreter)
    assert delegated.partitions == 1 and delegated.whole_graph and delegated.ops > 40
    line = xnnpack_probe.describe(xnnpack_probe.read_hwcaps(_auxv(1 << 20, 0)), delegated)
    assert line.endswith(
        f"XNNPACK: 1 partition(s), whole graph ({delegated.ops} ops): int8 kernels NEON with dot product (SDOT)"
    )


# ---- the guest half, run natively (the marker syscall is a harmless ENOSYS off qemu) -----------


def _guest(project_root: Path, *args: str) -> dict:
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "tools.arm64.cost_guest", *args],
        cwd=project_root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_guest_detector_mode_brackets_every_stage_of_every_photo(
    project_root: Path, upstream_dir: Path, int8_model_path: Path
) -> None:
    photos = sorted((upstream_dir / "images").glob("*.jpg"))[:2]
    result = _guest(
        project_root,
        "detector",
        "--interpreter",
        "ai_edge_litert",
        "--int8",
        str(int8_model_path),
        "--float",
        str(upstream_dir / "models" / arm_cost.FLOAT_TFLITE),
        *map(str, photos),
    )
    assert result["identical_to_upstream_post"] is True
    stages = {(r["stage"], r["frame"]) for r in result["regions"]}
    for photo in photos:
        assert {(stage, photo.name) for stage in arm_cost.DETECTOR_STAGES} <= stages
    labels = [label for r in result["regions"] for label in (r["start"], r["end"])]
    assert len(labels) == len(set(labels))  # every region has marks of its own
    assert all(r["end"] == r["start"] + 1 for r in result["regions"])


def test_guest_daemon_mode_splits_each_frame_cycle(
    project_root: Path, upstream_dir: Path, int8_model_path: Path, tmp_path: Path
) -> None:
    photos = sorted((upstream_dir / "images").glob("*.jpg"))[:2]
    config = arm_cost.replay_config(tmp_path, int8_model_path, photos, (320, 240), hold=2)
    result = _guest(project_root, "daemon", "--config", str(config), "--frames", "6")
    by_stage: dict[str, list[dict]] = {}
    for region in result["regions"]:
        by_stage.setdefault(region["stage"], []).append(region)
    # Frames 0-1 are warm-up, the last frame has no successor: frames 2-4 are counted.
    assert {stage: len(regions) for stage, regions in by_stage.items() if stage != "empty"} == {
        stage: 3 for stage in arm_cost.DAEMON_STAGES
    }
    invoke_ends = {r["spans"][0][1] for r in by_stage["daemon_invoke"]}
    for outside, loop in zip(by_stage["daemon_outside_invoke"], by_stage["daemon_loop"], strict=True):
        spans = sorted(map(tuple, outside["spans"]))
        # From the end of one invoke to the start of the next, in five stretches without a gap.
        assert len(spans) == 5 and all(a[1] == b[0] for a, b in itertools.pairwise(spans))
        assert spans[0][0] in invoke_ends and spans[-1][1] > spans[0][0]
        assert len(loop["spans"]) == 3 and {tuple(s) for s in loop["spans"]} < set(spans)


# ---- single-operator models (tools/arm64/split_ops.py) ------------------------------------------


def test_every_op_of_the_int8_model_runs_alone(int8_model_path: Path, tmp_path: Path) -> None:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from tools.arm64.split_ops import single_op_models

    ops = single_op_models(int8_model_path, tmp_path)
    whole = Interpreter(model_path=str(int8_model_path))
    whole.allocate_tensors()
    assert len(ops) == len([o for o in whole._get_ops_details() if o["op_name"] != "DELEGATE"])
    assert ops[1].op == "CONV_2D" and ops[1].detail == "1x242x322x3 -> 1x120x160x16, k3x3 s2, pad valid"
    for op in ops:
        single = Interpreter(model_path=str(op.path), num_threads=1)
        single.allocate_tensors()
        (only,) = [o for o in single._get_ops_details() if o["op_name"] != "DELEGATE"]
        assert only["op_name"] == op.op
        for detail in single.get_input_details():
            single.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        single.invoke()


# ---- the race: whole frames against BlazeFace ------------------------------------------------


def _race_regions(frames: dict[str, list[int]], worker_spin: int) -> tuple[list[dict], dict]:
    """Regions as the guest's race mode lays them (pre, invoke, decode of each model, and the
    frame as their three spans), with a worker thread adding ``worker_spin`` to every stage
    (not to the empty regions: the workers sleep between invokes)."""
    regions, marks, label, caller, workers = [], {}, 0, 0, 0
    for number in range(3):
        marks[label] = arm_cost.Mark(caller, 0, caller + workers, 0)
        caller += 1_000
        marks[label + 1] = arm_cost.Mark(caller, 0, caller + workers, 0)
        regions.append({"stage": "empty", "frame": str(number), "start": label, "end": label + 1})
        label += 2
    for model, stages in frames.items():
        spans = []
        for stage, size in zip(("pre", "invoke", "decode"), stages, strict=True):
            marks[label] = arm_cost.Mark(caller, 0, caller + workers, 0)
            caller += size + 1_000
            workers += worker_spin
            marks[label + 1] = arm_cost.Mark(caller, 0, caller + workers, 0)
            regions.append({"stage": f"{model}/{stage}", "frame": "1.jpg", "spans": [[label, label + 1]]})
            spans.append([label, label + 1])
            label += 2
        regions.append({"stage": f"{model}/frame", "frame": "1.jpg", "spans": spans})
    return regions, marks


def test_race_counts_each_stage_the_whole_frame_and_the_callers_share() -> None:
    regions, marks = _race_regions(
        {"edge-face 320x240": [100, 30_000, 900], "BlazeFace short-range": [200, 20_000, 300]}, worker_spin=50
    )
    costs = arm_cost.race_costs("cortex-a72", 2, regions, marks)
    ours, theirs = costs
    assert ours.model == "edge-face 320x240" and ours.threads == 2
    # All threads: each stage plus the worker's share; the caller's own counters without it.
    assert ours.stages == {"pre": 150.0, "invoke": 30_050.0, "decode": 950.0, "frame": 31_150.0}
    assert ours.frame_caller == 31_000.0
    assert (theirs.stages["frame"], theirs.frame_caller) == (20_650.0, 20_500.0)
    ratios = arm_cost.race_ratios(costs)
    assert ratios["edge-face 320x240", "cortex-a72", 2] == pytest.approx(31_150 / 20_650)


def test_race_targets_judge_one_thread_runs_against_short_range() -> None:
    def cost(model: str, cpu: str, frame: float, threads: int = 1) -> arm_cost.FrameCost:
        stages = {"pre": 0.0, "invoke": frame, "decode": 0.0, "frame": frame}
        return arm_cost.FrameCost(cpu, threads, model, stages, frame, 8)

    costs = [
        cost("BlazeFace short-range", "cortex-a72", 20e6),
        cost("edge-face 320x240", "cortex-a72", 29e6),
        cost("edge-face 160x120", "cortex-a72", 21e6),
        cost("edge-face 256x192", "cortex-a72", 31e6),
        cost("BlazeFace short-range", "cortex-a72", 30e6, threads=2),
        cost("edge-face 160x120", "cortex-a72", 1e6, threads=2),
    ]
    assert arm_cost.check_race_targets(costs) == [
        "target cortex-a72: edge-face 320x240 frame <= 1.5x BlazeFace short-range's: 1.45x PASS",
        "target cortex-a72: edge-face 256x192 frame <= 1.5x BlazeFace short-range's: 1.55x MISS",
        "target cortex-a72: edge-face 160x120 frame <= 1.0x BlazeFace short-range's: 1.05x MISS",
    ]
    tables = arm_cost.format_race(costs, markdown=True).split("\n\n")
    assert len(tables) == 3  # frames, stages at 1 thread, threads
    assert "| cortex-a72 | 1 | 20.00M | 29.00M | 21.00M | 31.00M | 1.45x | 1.05x | 1.55x |" in tables[0]


def test_guest_race_mode_brackets_every_stage_of_every_model(
    project_root: Path, upstream_dir: Path, int8_model_path: Path
) -> None:
    from tools import blazeface

    models = blazeface.fetch_models()
    photos = [upstream_dir / "images" / "13.jpg", upstream_dir / "images" / "1.jpg"]
    result = _guest(
        project_root,
        "race",
        "--interpreter",
        "ai_edge_litert",
        "--threads",
        "1",
        f"--edge=edge-face 320x240={int8_model_path}",
        *(f"--blazeface={name}={path}" for name, path in models.items()),
        *map(str, photos),
    )
    labels = ["edge-face 320x240", *models]
    assert {(r["stage"], r["frame"]) for r in result["regions"] if r["stage"] != "empty"} == {
        (f"{label}/{stage}", photo.name) for label in labels for stage in arm_cost.RACE_STAGES for photo in photos
    }
    assert all(result["faces"][label]["13.jpg"] == 2 for label in labels)  # two people near the camera
    for region in result["regions"]:
        if region["stage"].endswith("/frame"):
            spans = region["spans"]
            assert len(spans) == 3 and all(a[1] == b[0] for a, b in itertools.pairwise(spans))


# ---- the first convolution done other ways (tools/arm64/stem_options.py) ----------------------


@pytest.fixture(scope="module")
def stem_models(int8_model_path: Path, tmp_path_factory) -> dict[str, Path]:
    from tools.arm64.stem_options import build

    return build(int8_model_path, tmp_path_factory.mktemp("stems"))


def test_stem_options_that_do_the_same_sums_give_the_same_heads(stem_models, upstream_dir) -> None:
    """4-channel input and space-to-depth compute the layer's very sums: the heads are bit
    identical to the shipped model's on real photos. The float stem rounds once more (a few
    steps); per-tensor weights lose the small channels (far more)."""
    from tools.arm64.stem_options import compare

    worst = compare(stem_models["baseline"].parent, sorted((upstream_dir / "images").glob("*.jpg"))[:4])
    assert worst["baseline"] == worst["4-channel"] == worst["space-to-depth"] == 0
    assert 0 < worst["float-stem"] <= 8
    assert worst["per-tensor"] > 4 * worst["float-stem"]


def test_guest_stems_mode_counts_each_options_pre_process_and_invoke(
    project_root: Path, upstream_dir: Path, stem_models: dict[str, Path]
) -> None:
    photo = upstream_dir / "images" / "13.jpg"
    result = _guest(
        project_root,
        "stems",
        "--interpreter",
        "ai_edge_litert",
        *(f"{option}={path}" for option, path in stem_models.items()),
        "--images",
        str(photo),
    )
    stages = {r["stage"] for r in result["regions"] if r["stage"] != "empty"}
    assert stages == {f"{option}/{stage}" for option in stem_models for stage in ("pre", "invoke", "frame")}


def test_stems_table_gives_each_option_against_the_shipped_model() -> None:
    medians = {
        "cortex-a72": {
            **_stages(**{"baseline/pre": 0.1e6, "baseline/invoke": 42e6, "baseline/frame": 42.1e6}),
            **_stages(**{"float-stem/pre": 0.6e6, "float-stem/invoke": 38e6, "float-stem/frame": 38.6e6}),
        }
    }
    table = arm_cost.stems_table(medians, markdown=True).splitlines()
    assert table[2] == "| baseline | cortex-a72 | 0.10M | 42.00M | 42.10M | +0.00M |"
    assert table[3] == "| float-stem | cortex-a72 | 0.60M | 38.00M | 38.60M | -3.50M |"


def _recognition_medians(detector: int, landmarks: int, chip: int, descriptor: int) -> dict:
    regions, marks = _regions_and_marks(
        {"detector_invoke": [detector] * 3, "landmarks": [landmarks], "chip": [chip], "descriptor": [descriptor]},
        marker_cost=700,
    )
    spans = [[r["start"], r["end"]] for r in regions if r["stage"] in ("landmarks", "chip", "descriptor")]
    regions.append({"stage": "recognition", "frame": "0", "spans": spans})
    return arm_cost.stage_medians(arm_cost.region_counts(regions, marks))


def test_recognition_is_the_sum_of_its_stages_in_detector_invokes() -> None:
    cost = arm_cost.recognition_cost("cortex-a53", _recognition_medians(40_000, 20_000, 30_000, 250_000))
    assert cost.stages["recognition"] == 300_000
    assert cost.invokes == 7.5
    assert cost.share("descriptor") == pytest.approx(250 / 300)
    [line] = arm_cost.check_recognition_targets([cost])
    assert line.endswith("7.5 invokes PASS (most: descriptor, 83%)")
    assert "0.75x" in arm_cost.format_recognition([cost], markdown=True)


def test_a_recognition_over_ten_invokes_misses_and_names_the_heaviest_stage() -> None:
    cost = arm_cost.recognition_cost("cortex-a72", _recognition_medians(10_000, 90_000, 5_000, 6_000))
    [line] = arm_cost.check_recognition_targets([cost])
    assert line.endswith("10.1 invokes MISS (most: landmarks, 89%)")


def test_a_recognize_run_without_faces_is_an_error() -> None:
    medians = _recognition_medians(40_000, 1, 1, 1)
    for stage in ("landmarks", "chip", "descriptor", "recognition"):
        del medians[stage]
    with pytest.raises(arm_cost.CostError, match="cortex-a76 recognize: no counts for landmarks"):
        arm_cost.recognition_cost("cortex-a76", medians)


def test_descriptor_gaps_compare_directions_of_faces_seen_on_both_sides() -> None:
    host = {"1.jpg": [1.0, 0.0], "2.jpg": [0.0, 2.0]}
    emulated = {"1.jpg": [3.0, 0.0], "2.jpg": [2.0, 2.0], "3.jpg": [1.0, 1.0]}
    gaps = arm_cost.descriptor_gaps(emulated, host)
    assert gaps.keys() == {"1.jpg", "2.jpg"}
    assert gaps["1.jpg"] == 0.0
    assert gaps["2.jpg"] == pytest.approx(2 * math.sin(math.pi / 8))


def test_replay_config_names_a_relative_model_by_its_absolute_path(
    project_root: Path, upstream_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--model edge/models/...` from the checkout: the daemon's config lives in a scratch
    folder, so a relative model path would be looked up there ("does not exist")."""
    from edge.config import load_config

    monkeypatch.chdir(project_root)
    relative = Path("edge/models/version-slim-320-int8.tflite")
    config = arm_cost.replay_config(tmp_path, relative, [upstream_dir / "images" / "1.jpg"], (320, 240), hold=1)
    assert load_config(config).detector.model == project_root / relative
