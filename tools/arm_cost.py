"""ARM cost, counted: aarch64 instructions per stage on the Pis' CPU models, 1 thread.

    python -m tools.arm_cost [--cpus cortex-a53,cortex-a72,cortex-a76] [--frames N]
                             [--daemon-frames N] [--suite bookworm] [--json OUT] [--markdown]
    python -m tools.arm_cost --per-op [--model M] [--cpus ...]
    python -m tools.arm_cost --race [--threads 1,2,4] [--profile LABEL=MODEL]... [--cpus ...]
    python -m tools.arm_cost --stems [--model M] [--cpus ...]
    python -m tools.arm_cost --recognize [--frames N] [--cpus ...]

Instruction counts are deterministic where emulated time is not: the same program on the
same CPU model retires the same instructions, on any host, under any load. Each stage runs
in the emulated Debian root of the arm64 check (tools/arm64_check.sh builds it, with its
venvs) under a qemu-aarch64 built with TCG plugins (tools/arm64/build_qemu_plugins.sh,
cached beside the root) and the plugin tools/arm64/insn_regions.c, which counts guest
instructions, dot-product instructions among them, and prints the counters whenever the
guest marks a region edge (tools/arm64/cost_guest.py runs the stages between marks).

Per CPU model and interpreter package: the int8 invoke against upstream's float TFLite
invoke, the detector's pre-process from a 320x240 and a 640x480 frame, decode + NMS against
upstream-style post-processing of the same int8 outputs, and (ai-edge-litert) the daemon's
per-frame work outside invoke on a 640x480 replay. Medians over real photos.

--per-op: where an invoke's instructions go. Each operator of the int8 model and of the
float model runs alone as a single-operator model (tools/arm64/split_ops.py) under
ai-edge-litert; the table lists each op and the sums per kind of op (explicit PAD, first
conv, depthwise by stride, pointwise), int8 against float.

--race: a whole frame against a whole frame, each from a camera frame at the model's own
width: every shipped edge-face profile (pre-process, invoke, decode + NMS) against MediaPipe's
BlazeFace short-range and full-range (letterbox + normalize, invoke, decode + weighted NMS;
tools.blazeface, model files fetched from the pinned mediapipe wheel), same interpreter, at
each --threads count: all threads' instructions, and the calling thread's alone.

--stems: the first convolution done each way tools/arm64/stem_options.py builds (per-tensor
weights, a 4-channel input, space-to-depth, a float stem), each with the pre-process its input
needs: pre-process and invoke per option and CPU, against the shipped model's.

--recognize: what recognizing one face costs, against the detector. Per photo (as a 640x480
camera frame), the shipped 320x240 detector's bare int8 invoke, and one recognition of the
largest face it finds: landmarks, chip and descriptor (edge.recognize with the shipped models,
read from this tree's edge/recognize/models/ and passed by path), in the same run; the total
against 10 detector invokes on each CPU.

Counts are not time: see the README's "ARM cost" section for what they do and do not predict.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge.models import PACKAGED_MODELS, packaged_model_path
from tools.shared_data import DEFAULT_INT8_MODEL, PROJECT_ROOT, upstream_dir

FLOAT_TFLITE = "version-slim-320_without_postprocessing.tflite"
DEFAULT_CACHE = Path(os.environ.get("EDGE_FACE_ARM64_CACHE") or Path.home() / ".cache" / "edge-face" / "arm64")
DEFAULT_CPUS = ("cortex-a53", "cortex-a72", "cortex-a76")
# Venv kind in the arm64 check's cache -> interpreter package.
INTERPRETERS = {"litert": "ai_edge_litert", "tflite-runtime": "tflite_runtime"}
DAEMON_INTERPRETER_KIND = "litert"

# Targets (instruction counts, cortex-a72 and cortex-a76, ai-edge-litert).
TARGET_CPUS = ("cortex-a72", "cortex-a76")
TARGET_INT8_VS_FLOAT = 0.5
TARGET_OUTSIDE_VS_INVOKE = 0.05

DETECTOR_STAGES = ("int8_invoke", "float_invoke", "preprocess_320", "preprocess_640", "decode_nms", "upstream_post")
DAEMON_STAGES = ("daemon_invoke", "daemon_prepare", "daemon_postprocess", "daemon_loop", "daemon_outside_invoke")
# Replayed frame sizes: what a USB camera commonly delivers, and the model's own size (a Pi
# camera's ISP scales for free).
DAEMON_FRAME_SIZES = ((640, 480), (320, 240))


class CostError(Exception):
    """A run that cannot be done or read; the message says what and where."""


# ---- the plugin's log and the guest's regions (pure) ----------------------------------------


@dataclass(frozen=True)
class Mark:
    """Counters at one marker: the marking thread's own, and the sums over all threads."""

    insns: int
    dot: int
    all_insns: int
    all_dot: int


def parse_plugin_log(text: str, where: str) -> dict[int, Mark]:
    """Marker label -> counters, from insn_regions' ``mark ...`` lines (other lines ignored)."""
    marks: dict[int, Mark] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.startswith("mark "):
            continue
        fields = line.split()
        try:
            values = dict(zip(fields[0::2], fields[1::2], strict=True))
            label = int(values["mark"])
            mark = Mark(int(values["insns"]), int(values["dot"]), int(values["all_insns"]), int(values["all_dot"]))
        except (KeyError, ValueError):
            raise CostError(f"{where}:{number}: not an insn_regions mark line: {line!r}") from None
        if label in marks:
            raise CostError(f"{where}:{number}: marker {label} appears twice")
        marks[label] = mark
    return marks


@dataclass(frozen=True)
class RegionCount:
    stage: str
    frame: str
    insns: int  # all threads, minus the cost of one mark
    dot: int  # SDOT/UDOT instructions, all threads


def region_counts(regions: list[dict], marks: dict[int, Mark]) -> list[RegionCount]:
    """Instructions inside each region, net of the marker's own cost (the median "empty"
    region: two marks back to back) once per span."""

    def raw(region: dict) -> tuple[int, int, int]:
        """(instructions, dot instructions, number of spans) of a region, marks included."""
        spans = region.get("spans") or [(region["start"], region["end"])]
        insns = dot = 0
        for start_label, end_label in spans:
            try:
                start, end = marks[start_label], marks[end_label]
            except KeyError as exc:
                raise CostError(
                    f"marker {exc.args[0]} of region {region['stage']} {region['frame']} is not in the plugin log"
                ) from None
            insns += end.all_insns - start.all_insns
            dot += end.all_dot - start.all_dot
        return insns, dot, len(spans)

    empties = [raw(r)[0] for r in regions if r["stage"] == "empty"]
    if not empties:
        raise CostError("the guest run has no empty regions to measure the marker's cost")
    marker_cost = int(statistics.median(empties))
    counts = []
    for region in regions:
        if region["stage"] == "empty":
            continue
        insns, dot, spans = raw(region)
        counts.append(RegionCount(region["stage"], region["frame"], max(insns - spans * marker_cost, 0), dot))
    return counts


def stage_medians(counts: list[RegionCount]) -> dict[str, dict[str, float]]:
    """Stage -> {"insns": median, "dot": median, "frames": n}."""
    by_stage: dict[str, list[RegionCount]] = {}
    for count in counts:
        by_stage.setdefault(count.stage, []).append(count)
    return {
        stage: {
            "insns": float(statistics.median(c.insns for c in items)),
            "dot": float(statistics.median(c.dot for c in items)),
            "frames": len(items),
        }
        for stage, items in by_stage.items()
    }


@dataclass
class CpuCost:
    """Median instructions per frame of one CPU model and interpreter package."""

    cpu: str
    interpreter: str
    int8_invoke: float
    int8_dot: float
    float_invoke: float
    preprocess_320: float
    preprocess_640: float
    decode_nms: float
    upstream_post: float
    # "640x480" / "320x240" -> median per frame of the daemon's work outside invoke, and of
    # its loop alone (outside invoke minus pre-process and decode + NMS); empty without a run.
    daemon_outside_invoke: dict[str, float]
    daemon_loop: dict[str, float]
    frames: int
    daemon_frames: int | None

    @property
    def int8_vs_float(self) -> float:
        return self.int8_invoke / self.float_invoke

    @property
    def decode_speedup(self) -> float:
        return self.upstream_post / self.decode_nms

    def outside_vs_invoke(self, size: str) -> float | None:
        """The daemon's per-frame work outside invoke (pre-process, decode + NMS, events, the
        loop) on ``size`` frames, as a share of the int8 invoke."""
        if size not in self.daemon_outside_invoke:
            return None
        return self.daemon_outside_invoke[size] / self.int8_invoke


def cpu_cost(
    cpu: str, interpreter: str, detector: dict[str, dict[str, float]], daemon: dict[str, dict[str, dict[str, float]]]
) -> CpuCost:
    """``detector``: stage medians of a detector run; ``daemon``: frame size -> stage medians
    of a daemon run (empty where none ran)."""
    missing = [s for s in DETECTOR_STAGES if s not in detector]
    if missing:
        raise CostError(f"{cpu} {interpreter}: no counts for {', '.join(missing)}")
    return CpuCost(
        cpu=cpu,
        interpreter=interpreter,
        int8_invoke=detector["int8_invoke"]["insns"],
        int8_dot=detector["int8_invoke"]["dot"],
        float_invoke=detector["float_invoke"]["insns"],
        preprocess_320=detector["preprocess_320"]["insns"],
        preprocess_640=detector["preprocess_640"]["insns"],
        decode_nms=detector["decode_nms"]["insns"],
        upstream_post=detector["upstream_post"]["insns"],
        daemon_outside_invoke={size: stages["daemon_outside_invoke"]["insns"] for size, stages in daemon.items()},
        daemon_loop={size: stages["daemon_loop"]["insns"] for size, stages in daemon.items()},
        frames=int(detector["int8_invoke"]["frames"]),
        daemon_frames=min((int(s["daemon_outside_invoke"]["frames"]) for s in daemon.values()), default=None),
    )


def _millions(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e6:.2f}M"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def format_table(costs: list[CpuCost], markdown: bool) -> str:
    return _column_table(COST_COLUMNS, costs, markdown)


# The detector table: (header, cell of one CpuCost) per column.
COST_COLUMNS: list[tuple[str, Callable[[CpuCost], str]]] = [
    ("-cpu", lambda c: c.cpu),
    ("interpreter", lambda c: c.interpreter),
    ("int8 invoke", lambda c: _millions(c.int8_invoke)),
    ("(sdot/udot)", lambda c: _millions(c.int8_dot)),
    ("float invoke", lambda c: _millions(c.float_invoke)),
    ("int8/float", lambda c: _ratio(c.int8_vs_float)),
    ("pre 320x240", lambda c: _millions(c.preprocess_320)),
    ("pre 640x480", lambda c: _millions(c.preprocess_640)),
    ("decode+NMS", lambda c: _millions(c.decode_nms)),
    ("upstream post", lambda c: _millions(c.upstream_post)),
    ("upstream/ours", lambda c: _ratio(c.decode_speedup)),
    ("daemon loop", lambda c: _millions(c.daemon_loop.get("320x240"))),
    ("outside invoke 640x480", lambda c: _millions(c.daemon_outside_invoke.get("640x480"))),
    ("/int8", lambda c: _share(c.outside_vs_invoke("640x480"))),
    ("outside invoke 320x240", lambda c: _millions(c.daemon_outside_invoke.get("320x240"))),
    ("/int8", lambda c: _share(c.outside_vs_invoke("320x240"))),
]


def check_targets(costs: list[CpuCost]) -> list[str]:
    """Lines "target ...: PASS|MISS" for the target CPUs with ai-edge-litert."""
    lines = []
    for c in costs:
        if c.cpu not in TARGET_CPUS or c.interpreter != INTERPRETERS[DAEMON_INTERPRETER_KIND]:
            continue
        verdict = "PASS" if c.int8_vs_float <= TARGET_INT8_VS_FLOAT else "MISS"
        lines.append(f"target {c.cpu}: int8 invoke <= {TARGET_INT8_VS_FLOAT}x float: {c.int8_vs_float:.2f}x {verdict}")
        for size in c.daemon_outside_invoke:
            share = c.outside_vs_invoke(size)
            assert share is not None  # size is one of the measured ones
            verdict = "PASS" if share <= TARGET_OUTSIDE_VS_INVOKE else "MISS"
            lines.append(
                f"target {c.cpu}: per-frame work outside invoke ({size} frames) <= {TARGET_OUTSIDE_VS_INVOKE:.0%} "
                f"of int8 invoke: {share:.1%} {verdict}"
            )
    return lines


# ---- running the guest under the plugin ------------------------------------------------------


@dataclass(frozen=True)
class Emulator:
    qemu: Path
    plugin: Path
    rootfs: Path
    site_packages: dict[str, Path]  # venv kind -> its site-packages folder


def ensure_emulator(cache: Path, suite: str) -> Emulator:
    """The plugin qemu (built on first use), the suite's root and its venvs from the arm64 check."""
    built = subprocess.run(
        [str(PROJECT_ROOT / "tools" / "arm64" / "build_qemu_plugins.sh"), str(cache)],
        capture_output=True,
        text=True,
    )
    if built.returncode != 0:
        raise CostError(f"building qemu with plugins failed: {built.stderr.strip()[-1500:]}")
    paths = dict(line.split(" ", 1) for line in built.stdout.strip().splitlines())
    roots = sorted(cache.glob(f"rootfs-{suite}-arm64-*"))
    if not roots:
        raise CostError(f"no {suite} arm64 root in {cache}: run tools/arm64_check.sh (make arm64-check) first")
    site_packages = {}
    for kind in INTERPRETERS:
        venvs = [v for v in sorted((cache / f"venvs-arm64-{suite}").glob(f"{kind}-*")) if (v / ".complete").exists()]
        found = [p for v in venvs for p in v.glob("lib/python3*/site-packages")]
        if found:
            site_packages[kind] = found[0]
    if DAEMON_INTERPRETER_KIND not in site_packages:
        raise CostError(
            f"no finished {suite} arm64 litert venv in {cache}: run tools/arm64_check.sh (make arm64-check) first"
        )
    return Emulator(Path(paths["qemu"]), Path(paths["plugin"]), roots[-1], site_packages)


def run_guest(
    emulator: Emulator, cpu: str, kind: str, guest_args: list[str], workdir: Path, log_name: str | None = None
) -> tuple[dict, dict[int, Mark]]:
    """Run tools.arm64.cost_guest in the emulated Python; returns (its JSON, the marks)."""
    log = workdir / f"plugin-{cpu}-{kind}-{log_name or guest_args[0]}.log"
    command = [
        str(emulator.qemu),
        "-cpu",
        cpu,
        "-L",
        str(emulator.rootfs),
        "-plugin",
        str(emulator.plugin),
        "-d",
        "plugin",
        "-D",
        str(log),
        str(emulator.rootfs / "usr" / "bin" / "python3"),
        "-m",
        "tools.arm64.cost_guest",
        *guest_args,
    ]
    environment = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONPATH": f"{PROJECT_ROOT}:{emulator.site_packages[kind]}",
        "PYTHONHASHSEED": "0",  # same dict/set layouts, so the same Python-level work every run
        "PYTHONDONTWRITEBYTECODE": "1",
        "OPENBLAS_NUM_THREADS": "1",  # numpy's BLAS worker would spin as a second vCPU
        "TMPDIR": str(workdir),
    }
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True)
    if done.returncode != 0:
        raise CostError(
            f"{cpu} {kind} {guest_args[0]}: the emulated run failed ({done.returncode}): {done.stderr.strip()[-1500:]}"
        )
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise CostError(f"{cpu} {kind} {guest_args[0]}: no JSON result on stdout: {done.stdout[-500:]!r}") from None
    return result, parse_plugin_log(log.read_text(encoding="utf-8"), str(log))


def run_litert_guest(
    emulator: Emulator,
    cpu: str,
    mode: str,
    mode_args: list[str],
    workdir: Path,
    progress: str | None = None,
    log_name: str | None = None,
) -> tuple[dict, dict[int, Mark]]:
    """run_guest of a cost_guest ``mode`` with the daemon's interpreter package; ``progress``
    says on stderr what runs."""
    if progress is not None:
        print(f"arm-cost: {cpu} {progress}", file=sys.stderr)
    guest_args = [mode, "--interpreter", INTERPRETERS[DAEMON_INTERPRETER_KIND], *mode_args]
    return run_guest(emulator, cpu, DAEMON_INTERPRETER_KIND, guest_args, workdir, log_name)


def guest_medians(result: dict, marks: dict[int, Mark]) -> dict[str, dict[str, float]]:
    """The stage medians of a guest run; its regions are taken out of ``result``."""
    return stage_medians(region_counts(result.pop("regions"), marks))


def upstream_photos(frames: int) -> list[Path]:
    """The first ``frames`` of upstream's photos, in a fixed order (shortest names first)."""
    folder = upstream_dir() / "images"
    photos = sorted(folder.glob("*.jpg"), key=lambda p: (len(p.name), p.name))[:frames]
    if len(photos) < frames:
        raise CostError(f"--frames {frames}: only {len(photos)} photos in {folder}")
    return photos


def require_files(paths: list[Path]) -> None:
    for needed in paths:
        if not needed.is_file():
            raise CostError(f"{needed}: no such file")


def run_details(suite: str, emulator: Emulator) -> dict:
    """The JSON document's head; each guest run is appended to "runs"."""
    return {"suite": suite, "qemu": str(emulator.qemu), "runs": []}


def replay_config(workdir: Path, model: Path, photos: list[Path], size: tuple[int, int], hold: int) -> Path:
    """A daemon config replaying the photos at ``size``, each held for ``hold`` frames."""
    from tools.bench_daemon import make_frames, write_config

    stills, frames = workdir / "stills", workdir / "frames"
    stills.mkdir(parents=True)
    frames.mkdir()
    make_frames(photos, stills, frames, size, hold)
    config = workdir / "daemon.toml"
    # The config sits in the scratch folder, where a relative model path would be looked up.
    write_config(config, frames, model.resolve(), threads=1, mqtt=None)
    return config


def measure(args: argparse.Namespace) -> tuple[list[CpuCost], dict]:
    emulator = ensure_emulator(args.cache, args.suite)
    photos = upstream_photos(args.frames)
    float_model = upstream_dir() / "models" / FLOAT_TFLITE
    require_files([args.model, float_model])
    costs, details = [], run_details(args.suite, emulator)
    with tempfile.TemporaryDirectory(prefix="arm-cost-") as tmp:
        workdir = Path(tmp)
        configs = {
            f"{width}x{height}": replay_config(
                workdir / f"{width}x{height}", args.model, photos, (width, height), hold=3
            )
            for width, height in DAEMON_FRAME_SIZES
        }
        for cpu in args.cpus:
            for kind, interpreter in INTERPRETERS.items():
                if kind not in emulator.site_packages:
                    print(
                        f"arm-cost: {interpreter} is not installed in the {args.suite} root: skipped", file=sys.stderr
                    )
                    continue
                print(f"arm-cost: {cpu} {interpreter}: {len(photos)} photos", file=sys.stderr)
                result, marks = run_guest(
                    emulator,
                    cpu,
                    kind,
                    [
                        "detector",
                        "--interpreter",
                        interpreter,
                        "--int8",
                        str(args.model),
                        "--float",
                        str(float_model),
                        *map(str, photos),
                    ],
                    workdir,
                )
                detector = guest_medians(result, marks)
                daemon = {}
                for size, config in configs.items() if kind == DAEMON_INTERPRETER_KIND else ():
                    print(f"arm-cost: {cpu} daemon: {args.daemon_frames} frames of {size}", file=sys.stderr)
                    daemon_result, daemon_marks = run_guest(
                        emulator,
                        cpu,
                        kind,
                        ["daemon", "--config", str(config), "--frames", str(args.daemon_frames)],
                        workdir,
                        log_name=f"daemon-{size}",
                    )
                    daemon[size] = guest_medians(daemon_result, daemon_marks)
                    result[f"daemon {size}"] = daemon_result
                costs.append(cpu_cost(cpu, interpreter, detector, daemon))
                details["runs"].append(
                    {"cpu": cpu, "kind": kind, **result, "detector": detector, "daemon_stages": daemon}
                )
    return costs, details


# ---- the race: whole frames, edge-face profiles against BlazeFace ----------------------------

RACE_BASELINE = "BlazeFace short-range"
RACE_STAGES = ("pre", "invoke", "decode", "frame")
# Targets, whole frame, ai-edge-litert, 1 thread: (profile, cpu) -> most instructions allowed
# as a multiple of BlazeFace short-range's frame on that CPU. 320x240 misses its two (its
# pointwise layers, README "ARM cost"); 256x192 is the profile built to meet them.
RACE_TARGETS = {
    ("320x240", "cortex-a72"): 1.5,
    ("320x240", "cortex-a53"): 1.2,
    ("256x192", "cortex-a72"): 1.5,
    ("256x192", "cortex-a53"): 1.2,
    ("160x120", "cortex-a53"): 1.0,
    ("160x120", "cortex-a72"): 1.0,
    ("160x120", "cortex-a76"): 1.0,
}


@dataclass(frozen=True)
class FrameCost:
    """Median instructions of one model's whole frame on one CPU model at ``threads``:
    ``stages`` "pre", "invoke", "decode", "frame" (all threads); ``frame_caller`` the frame's
    instructions on the calling thread alone (with workers, roughly the critical path)."""

    cpu: str
    threads: int
    model: str
    stages: dict[str, float]
    frame_caller: float
    frames: int


def race_costs(cpu: str, threads: int, regions: list[dict], marks: dict[int, Mark]) -> list[FrameCost]:
    """The FrameCost of each model of one race run (stages "<model>/<stage>")."""
    counts = stage_medians(region_counts(regions, marks))
    # The calling thread's own counters: the same regions, read from the marking thread's counts.
    own_marks = {label: Mark(m.insns, m.dot, m.insns, m.dot) for label, m in marks.items()}
    own = stage_medians(region_counts(regions, own_marks))
    models = dict.fromkeys(stage.rsplit("/", 1)[0] for stage in counts if "/" in stage)
    costs = []
    for model in models:
        missing = [stage for stage in RACE_STAGES if f"{model}/{stage}" not in counts]
        if missing:
            raise CostError(f"{cpu} {model}: no counts for {', '.join(missing)}")
        costs.append(
            FrameCost(
                cpu=cpu,
                threads=threads,
                model=model,
                stages={stage: counts[f"{model}/{stage}"]["insns"] for stage in RACE_STAGES},
                frame_caller=own[f"{model}/frame"]["insns"],
                frames=int(counts[f"{model}/frame"]["frames"]),
            )
        )
    return costs


def race_ratios(costs: list[FrameCost], baseline: str = RACE_BASELINE) -> dict[tuple[str, str, int], float]:
    """(model, cpu, threads) -> its frame / the baseline's frame on the same CPU and threads."""
    base = {(c.cpu, c.threads): c.stages["frame"] for c in costs if c.model == baseline}
    return {
        (c.model, c.cpu, c.threads): c.stages["frame"] / base[c.cpu, c.threads]
        for c in costs
        if (c.cpu, c.threads) in base
    }


def check_race_targets(costs: list[FrameCost]) -> list[str]:
    """Lines "target ...: PASS|MISS" for the RACE_TARGETS measured at 1 thread."""
    ratios = race_ratios(costs)
    lines = []
    for (profile, cpu), limit in RACE_TARGETS.items():
        ratio = ratios.get((f"edge-face {profile}", cpu, 1))
        if ratio is None:
            continue
        verdict = "PASS" if ratio <= limit else "MISS"
        lines.append(f"target {cpu}: edge-face {profile} frame <= {limit}x {RACE_BASELINE}'s: {ratio:.2f}x {verdict}")
    return lines


def format_race(costs: list[FrameCost], markdown: bool) -> str:
    """Three tables: whole frames per CPU and threads with ratios to the baseline; the stages
    of each frame at 1 thread; and each frame across thread counts (all threads, caller)."""
    models = list(dict.fromkeys(c.model for c in costs))
    by_key = {(c.model, c.cpu, c.threads): c for c in costs}
    runs = list(dict.fromkeys((c.cpu, c.threads) for c in costs))
    ratios = race_ratios(costs)
    others = [m for m in models if m != RACE_BASELINE]
    tables = []
    header = ["-cpu", "threads", *models, *(f"{m} / short-range" for m in others)]
    rows = [
        [cpu, str(threads)]
        + [_millions(by_key[m, cpu, threads].stages["frame"] if (m, cpu, threads) in by_key else None) for m in models]
        + [_ratio(ratios.get((m, cpu, threads))) for m in others]
        for cpu, threads in runs
    ]
    tables.append(_table(header, rows, markdown))
    header = ["-cpu", "model", "pre-process", "invoke", "decode + NMS", "whole frame"]
    rows = [
        [c.cpu, c.model, *(_millions(c.stages[s]) for s in RACE_STAGES)]
        for c in costs
        if c.threads == min(c.threads for c in costs)
    ]
    tables.append(_table(header, rows, markdown))
    thread_counts = sorted({c.threads for c in costs})
    if len(thread_counts) > 1:
        header = ["-cpu", "model", *(f"{t} thr all / caller" for t in thread_counts)]
        rows = []
        for cpu in dict.fromkeys(c.cpu for c in costs):
            for model in models:
                cells = []
                for t in thread_counts:
                    c = by_key.get((model, cpu, t))
                    cells.append("-" if c is None else f"{_millions(c.stages['frame'])} / {_millions(c.frame_caller)}")
                rows.append([cpu, model, *cells])
        tables.append(_table(header, rows, markdown))
    return "\n\n".join(tables)


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]
    )


def _column_table(columns: list[tuple[str, Callable[[Any], str]]], items: list[Any], markdown: bool) -> str:
    """One row per item: (header, cell) per column."""
    header = [name for name, _ in columns]
    return _table(header, [[cell(item) for _, cell in columns] for item in items], markdown)


def race(args: argparse.Namespace) -> tuple[list[FrameCost], dict]:
    from tools.blazeface import BlazeFaceError, fetch_models

    emulator = ensure_emulator(args.cache, args.suite)
    try:
        baselines = fetch_models()
    except BlazeFaceError as error:
        raise CostError(str(error)) from None
    photos = upstream_photos(args.frames)
    profiles = args.profile or [
        f"edge-face {size}={packaged_model_path(name)}" for size, name in PACKAGED_MODELS.items()
    ]
    for entry in profiles:
        label, sep, path = entry.partition("=")
        if not sep or not label or not Path(path).is_file():
            raise CostError(f"--profile {entry!r}: expected LABEL=MODEL with an existing model file")
    costs: list[FrameCost] = []
    details = run_details(args.suite, emulator)
    with tempfile.TemporaryDirectory(prefix="arm-cost-race-") as tmp:
        for cpu in args.cpus:
            for threads in args.threads:
                result, marks = run_litert_guest(
                    emulator,
                    cpu,
                    "race",
                    [
                        "--threads",
                        str(threads),
                        *(f"--edge={entry}" for entry in profiles),
                        *(f"--blazeface={name}={path}" for name, path in baselines.items()),
                        *map(str, photos),
                    ],
                    Path(tmp),
                    progress=f"race, {threads} thread(s): {len(photos)} photos",
                    log_name=f"race-{threads}",
                )
                costs += race_costs(cpu, threads, result.pop("regions"), marks)
                details["runs"].append({"cpu": cpu, **result})
    return costs, details


# ---- the first convolution, done other ways ---------------------------------------------------


def stems_table(medians: dict[str, dict[str, dict[str, float]]], markdown: bool) -> str:
    """``medians``: cpu -> stage medians of a stems run ("<option>/pre", "/invoke", "/frame").
    One row per option and CPU: pre-process, invoke, both, and the change against "baseline"."""
    header = ["option", "-cpu", "pre-process", "invoke", "pre + invoke", "vs shipped"]
    rows = []
    options = list(dict.fromkeys(stage.rsplit("/", 1)[0] for stages in medians.values() for stage in stages))
    for option in options:
        for cpu, stages in medians.items():
            frame = stages[f"{option}/frame"]["insns"]
            change = frame - stages["baseline/frame"]["insns"]
            rows.append(
                [
                    option,
                    cpu,
                    _millions(stages[f"{option}/pre"]["insns"]),
                    _millions(stages[f"{option}/invoke"]["insns"]),
                    _millions(frame),
                    f"{change / 1e6:+.2f}M",
                ]
            )
    return _table(header, rows, markdown)


def stems(args: argparse.Namespace) -> tuple[dict[str, dict[str, dict[str, float]]], dict]:
    from tools.arm64.stem_options import build

    emulator = ensure_emulator(args.cache, args.suite)
    photos = upstream_photos(args.frames)
    medians = {}
    details: dict = {"suite": args.suite, "qemu": str(emulator.qemu)}
    with tempfile.TemporaryDirectory(prefix="arm-cost-stems-") as tmp:
        models = build(args.model, Path(tmp) / "models")
        for cpu in args.cpus:
            result, marks = run_litert_guest(
                emulator,
                cpu,
                "stems",
                [*(f"--{option}={path}" for option, path in models.items()), "--images", *map(str, photos)],
                Path(tmp),
                progress=f"stems: {len(models)} options, {len(photos)} photos",
            )
            medians[cpu] = guest_medians(result, marks)
    return medians, details


# ---- recognition of one face against the detector's invoke ------------------------------------

RECOGNITION_STAGES = ("landmarks", "chip", "descriptor", "recognition")
# Target on every CPU: one recognition of a new face costs less than this many detector invokes.
TARGET_RECOGNITION_INVOKES = 10


@dataclass(frozen=True)
class RecognitionCost:
    """Medians of one CPU model's recognize run: the detector's int8 invoke (320x240) and,
    per face, ``stages`` "landmarks", "chip", "descriptor" and "recognition" (the three)."""

    cpu: str
    detector_invoke: float
    stages: dict[str, float]
    faces: int

    @property
    def invokes(self) -> float:
        """One recognition in detector invokes."""
        return self.stages["recognition"] / self.detector_invoke

    def share(self, stage: str) -> float:
        return self.stages[stage] / self.stages["recognition"]


def recognition_cost(cpu: str, medians: dict[str, dict[str, float]]) -> RecognitionCost:
    """``medians``: stage medians of a recognize run."""
    missing = [s for s in ("detector_invoke", *RECOGNITION_STAGES) if s not in medians]
    if missing:
        raise CostError(f"{cpu} recognize: no counts for {', '.join(missing)} (no face found in any photo?)")
    return RecognitionCost(
        cpu=cpu,
        detector_invoke=medians["detector_invoke"]["insns"],
        stages={stage: medians[stage]["insns"] for stage in RECOGNITION_STAGES},
        faces=int(medians["recognition"]["frames"]),
    )


def format_recognition(costs: list[RecognitionCost], markdown: bool) -> str:
    return _column_table(RECOGNITION_COLUMNS, costs, markdown)


# The recognition table: (header, cell of one RecognitionCost) per column.
RECOGNITION_COLUMNS: list[tuple[str, Callable[[RecognitionCost], str]]] = [
    ("-cpu", lambda c: c.cpu),
    ("detector invoke", lambda c: _millions(c.detector_invoke)),
    *((stage, lambda c, stage=stage: _millions(c.stages[stage])) for stage in RECOGNITION_STAGES),
    (f"/ {TARGET_RECOGNITION_INVOKES} invokes", lambda c: _ratio(c.invokes / TARGET_RECOGNITION_INVOKES)),
    ("descriptor share", lambda c: _share(c.share("descriptor"))),
]


def check_recognition_targets(costs: list[RecognitionCost]) -> list[str]:
    """Lines "target ...: PASS|MISS", one per CPU, naming the stage that costs most."""
    lines = []
    for c in costs:
        verdict = "PASS" if c.invokes < TARGET_RECOGNITION_INVOKES else "MISS"
        heaviest = max(RECOGNITION_STAGES[:-1], key=c.stages.__getitem__)
        lines.append(
            f"target {c.cpu}: one recognition < {TARGET_RECOGNITION_INVOKES} detector invokes: "
            f"{c.invokes:.1f} invokes {verdict} (most: {heaviest}, {c.share(heaviest):.0%})"
        )
    return lines


def recognize(args: argparse.Namespace) -> tuple[list[RecognitionCost], dict]:
    from edge.models import PACKAGED_MODEL_PATH
    from edge.recognize.models import EMBEDDING_MODEL_PATH, LANDMARKS_MODEL_PATH

    emulator = ensure_emulator(args.cache, args.suite)
    photos = upstream_photos(args.frames)
    # The emulated Python imports edge from this tree (PYTHONPATH) before the venv's installed
    # wheel, and the models are passed by path: what runs is this tree's code and files.
    models = {"int8": PACKAGED_MODEL_PATH, "landmarks": LANDMARKS_MODEL_PATH, "embedding": EMBEDDING_MODEL_PATH}
    require_files(list(models.values()))
    costs: list[RecognitionCost] = []
    details = run_details(args.suite, emulator)
    with tempfile.TemporaryDirectory(prefix="arm-cost-recognize-") as tmp:
        for cpu in args.cpus:
            result, marks = run_litert_guest(
                emulator,
                cpu,
                "recognize",
                [*(f"--{option}={path}" for option, path in models.items()), *map(str, photos)],
                Path(tmp),
                progress=f"recognize: {len(photos)} photos",
            )
            costs.append(recognition_cost(cpu, guest_medians(result, marks)))
            details["runs"].append({"cpu": cpu, **result})
    details["host"] = host_recognitions(models, photos)
    return costs, details


def host_recognitions(models: dict[str, Path], photos: list[Path]) -> dict:
    """The guest's recognize run done on this host (its marks are no-ops here: the marker
    system call does not exist), for the emulated descriptors to be compared with."""
    from tools.arm64 import cost_guest

    args = argparse.Namespace(
        interpreter=INTERPRETERS[DAEMON_INTERPRETER_KIND],
        images=[str(photo) for photo in photos],
        **{option: str(path) for option, path in models.items()},
    )
    result: dict = cost_guest.run_recognize(args, cost_guest.Marks())
    return result


def descriptor_gaps(emulated: dict[str, list[float]], host: dict[str, list[float]]) -> dict[str, float]:
    """Photo -> distance between the emulated and the host's descriptor of its recognized face
    (L2-normalised, as matching compares them); photos recognized on one side only are left out."""
    import numpy as np

    from edge.recognize.embed import distances

    return {
        photo: float(distances(np.asarray(emulated[photo]), np.asarray([host[photo]]))[0])
        for photo in emulated
        if photo in host
    }


# ---- per-op counts ---------------------------------------------------------------------------


def op_category(op: str, detail: str) -> str:
    """The kind of an operator for the per-op sums: PAD, depthwise by stride, 1x1 pointwise,
    the first (3-channel) conv, other convs, and the rest by name."""
    if op == "DEPTHWISE_CONV_2D":
        return "depthwise 3x3 s2" if " s2" in detail else "depthwise 3x3 s1"
    if op == "CONV_2D":
        if "k1x1" in detail:
            return "conv 1x1 (pointwise)"
        if detail.split(" -> ")[0].endswith("x3"):
            return "conv 3x3 s2, 3 input channels (first)"
        return "conv 3x3 (heads, extras)"
    if op == "PAD":
        return "PAD (explicit)"
    return "reshape/concat/other"


def per_op_counts(emulator: Emulator, cpu: str, ops: list, workdir: Path) -> tuple[dict[str, float], list[str]]:
    """Model file name -> instructions of its one invoke, and the models that could not run alone."""
    result, marks = run_litert_guest(emulator, cpu, "ops", [str(op.path) for op in ops], workdir)
    counts = {c.frame: float(c.insns) for c in region_counts(result["regions"], marks)}
    return counts, result["skipped"]


def per_op_report(args: argparse.Namespace) -> str:
    from tools.arm64.split_ops import single_op_models

    emulator = ensure_emulator(args.cache, args.suite)
    lines = []
    with tempfile.TemporaryDirectory(prefix="arm-cost-ops-") as tmp:
        workdir = Path(tmp)
        models = {
            "int8": single_op_models(args.model, workdir / "int8"),
            "float": single_op_models(upstream_dir() / "models" / FLOAT_TFLITE, workdir / "float"),
        }
        counts: dict[tuple[str, str], dict[str, float]] = {}
        for cpu in args.cpus:
            for kind, ops in models.items():
                print(f"arm-cost: {cpu} {kind}: {len(ops)} single-op models", file=sys.stderr)
                counts[kind, cpu], skipped = per_op_counts(emulator, cpu, ops, workdir)
                if skipped:
                    lines.append(
                        f"{kind} on {cpu}: not runnable alone (shape computed in-graph, a few hundred instructions): {', '.join(skipped)}"
                    )
        cpus = args.cpus
        for kind, ops in models.items():
            lines.append(f"\n{kind} model, per op (instructions, 1 thread, ai-edge-litert)")
            lines.append("| # | op | shapes | " + " | ".join(cpus) + " |")
            lines.append("|" + " --- |" * (3 + len(cpus)))
            for op in ops:
                cells = [_millions(counts[kind, cpu].get(op.path.name)) for cpu in cpus]
                lines.append(f"| {op.index} | {op.op} | {op.detail} | " + " | ".join(cells) + " |")
        lines.append("\nper kind of op, int8 / float (instructions, sums over the ops of that kind)")
        lines.append("| kind | " + " | ".join(f"{cpu} int8 | {cpu} float" for cpu in cpus) + " |")
        lines.append("|" + " --- |" * (1 + 2 * len(cpus)))
        categories: dict[str, dict[tuple[str, str], float]] = {}
        for kind, ops in models.items():
            for op in ops:
                for cpu in cpus:
                    bucket = categories.setdefault(op_category(op.op, op.detail), {})
                    bucket[kind, cpu] = bucket.get((kind, cpu), 0.0) + counts[kind, cpu].get(op.path.name, 0.0)
        totals = {(kind, cpu): sum(counts[kind, cpu].values()) for kind in models for cpu in cpus}
        for category, sums in sorted(categories.items(), key=lambda item: -item[1].get(("int8", cpus[-1]), 0.0)):
            lines.append(
                f"| {category} | "
                + " | ".join(
                    f"{_millions(sums.get(('int8', cpu)))} | {_millions(sums.get(('float', cpu)))}" for cpu in cpus
                )
                + " |"
            )
        lines.append(
            "| sum of single ops | "
            + " | ".join(f"{_millions(totals['int8', cpu])} | {_millions(totals['float', cpu])}" for cpu in cpus)
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.arm_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpus", default=",".join(DEFAULT_CPUS), help="qemu -cpu models, comma-separated")
    parser.add_argument("--frames", type=int, default=8, help="photos per detector run (default 8)")
    parser.add_argument("--daemon-frames", type=int, default=14, help="daemon frames per run (default 14)")
    parser.add_argument("--suite", default="bookworm", help="which emulated Debian root (default bookworm)")
    parser.add_argument("--model", type=Path, default=DEFAULT_INT8_MODEL)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument(
        "--per-op", action="store_true", help="count each operator alone instead (int8 and float models)"
    )
    parser.add_argument(
        "--race", action="store_true", help="whole frames: each edge-face profile against BlazeFace instead"
    )
    parser.add_argument(
        "--stems", action="store_true", help="the first convolution done each other way, against the shipped model's"
    )
    parser.add_argument(
        "--recognize",
        action="store_true",
        help="one face's recognition (landmarks, chip, descriptor) against the detector's invoke instead",
    )
    parser.add_argument("--threads", default="1", help="--race: interpreter threads, comma-separated (default 1)")
    parser.add_argument(
        "--profile",
        action="append",
        help="--race: LABEL=MODEL, an edge-face model to race (default: every shipped profile)",
    )
    args = parser.parse_args(argv)
    args.cpus = [c for c in args.cpus.split(",") if c]
    try:
        args.threads = [int(t) for t in args.threads.split(",") if t]
    except ValueError:
        parser.error(f"--threads {args.threads!r}: expected comma-separated integers")
    if not args.threads or min(args.threads) < 1:
        parser.error("--threads must list counts >= 1")
    if args.frames < 1 or args.daemon_frames < 4:
        parser.error("--frames must be >= 1 and --daemon-frames >= 4")
    try:
        if args.per_op:
            print(per_op_report(args))
            return 0
        if args.stems:
            stem_medians, details = stems(args)
            print("aarch64 instructions per 320x240 frame (medians; counts, not time), ai-edge-litert, 1 thread")
            print(stems_table(stem_medians, args.markdown))
            if args.json:
                args.json.write_text(json.dumps({"stems": stem_medians, **details}, indent=1), encoding="utf-8")
            return 0
        if args.recognize:
            recognitions, details = recognize(args)
            print(
                "aarch64 instructions per face and per detector invoke (medians; counts, not time), "
                "ai-edge-litert, 1 thread, 640x480 frames"
            )
            print(format_recognition(recognitions, args.markdown))
            widths = sorted(details["runs"][0]["face_widths"].values())
            host = details["host"]["descriptors"]
            for run in details["runs"]:
                gaps = descriptor_gaps(run["descriptors"], host)
                print(
                    f"{run['cpu']}: descriptors of {len(gaps)} of {len(run['descriptors'])} faces also recognized on "
                    f"this host: largest distance from the host's {max(gaps.values(), default=float('nan')):.1e}"
                )
            print(
                f"faces: the largest of each photo, {len(widths)} photos, {widths[0]}-{widths[-1]} px wide "
                f"(median {statistics.median(widths):.0f}) in 640x480"
            )
            for line in check_recognition_targets(recognitions):
                print(line)
            if args.json:
                document = {"recognitions": [asdict(c) for c in recognitions], **details}
                args.json.write_text(json.dumps(document, indent=1), encoding="utf-8")
            return 0
        if args.race:
            frames, details = race(args)
            print(
                "aarch64 instructions per whole frame (medians; counts, not time), ai-edge-litert, qemu "
                + details["qemu"].split("/")[-2]
            )
            print(format_race(frames, args.markdown))
            for line in check_race_targets(frames):
                print(line)
            if args.json:
                args.json.write_text(json.dumps({"frames": [asdict(c) for c in frames], **details}, indent=1))
            return 0
        costs, details = measure(args)
    except CostError as exc:
        print(f"arm-cost: {exc}", file=sys.stderr)
        return 1
    print(
        "aarch64 instructions per frame (medians; counts, not time), 1 thread, qemu " + details["qemu"].split("/")[-2]
    )
    print(format_table(costs, args.markdown))
    for line in check_targets(costs):
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"costs": [asdict(c) for c in costs], **details}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
