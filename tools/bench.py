"""Benchmark: per-stage medians of the int8 detector as ratios against baselines timed in the same run.

    python -m tools.bench [--model M] [--frames N] [--repeat R] [--json OUT] [--markdown]

Baselines, on the same frames: upstream's float TFLite (same interpreter package, same
thread count), onnxruntime on upstream's ONNX, upstream-style numpy post-processing of the
same int8 outputs (dequantize + decode all anchors, then greedy hard NMS), and, when
mediapipe is installed, MediaPipe's BlazeFace short-range on the same 640x480 frames.
Every interpreter package that is installed is measured: ai-edge-litert in this
environment, tflite-runtime in ``.venv-tflite`` when that environment exists (it needs
numpy<2, so it runs as a worker subprocess there). mediapipe pins numpy<2 and an old
protobuf, so it lives in ``.venv-mediapipe`` (``python -m venv .venv-mediapipe &&
.venv-mediapipe/bin/pip install mediapipe==0.10.18 ai-edge-litert pillow``) and runs as a
worker there too. The resize table times both pre-processing paths (cv2.resize and the numpy
fallback, bit-identical) at 640x480 and 1280x720. Every measurement runs with the thread
count of its row: the interpreter's, and cv2's (``cv2.setNumThreads``). Frames are real
photos (the upstream photos, then the WIDER subset; see tools.shared_data).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from tools.shared_data import DEFAULT_INT8_MODEL, PROJECT_ROOT, upstream_dir, wider_subset_dir

FLOAT_TFLITE = "version-slim-320_without_postprocessing.tflite"
FLOAT_ONNX = "version-slim-320.onnx"

# Targets from the design issue, for this machine with ai-edge-litert.
TARGET_INVOKE_VS_FLOAT = 0.6
TARGET_DECODE_SPEEDUP = 6.0
TARGET_FRAME_VS_INVOKE = 1.25


@dataclass
class StageMedians:
    """Median milliseconds per frame of one configuration."""

    interpreter: str
    threads: int
    preprocess_ms: float
    invoke_ms: float
    decode_ms: float
    total_ms: float
    total_640_ms: float
    float_tflite_invoke_ms: float
    upstream_decode_ms: float
    identical_boxes: bool
    frames: int


def _median_ms(samples_ns: list[int]) -> float:
    return statistics.median(samples_ns) / 1e6


def _time(fn, repeat: int) -> list[int]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return samples


def load_frames(count: int, size: tuple[int, int] = (640, 480)) -> list[np.ndarray]:
    """``count`` real photos as (height, width, 3) uint8 RGB camera frames of ``size``
    (width, height): the upstream photos first, then WIDER subset images."""
    from edge.detect.preprocess import resize_bilinear
    from edge.sources.base import SourceError
    from edge.sources.imageio import load_image
    from edge.sources.replay import list_images

    paths = []
    for folder in (upstream_dir() / "images", wider_subset_dir() / "images"):
        try:
            paths += list_images(folder)
        except SourceError:
            continue
    if not paths:
        sys.exit(f"bench: no photos under '{upstream_dir() / 'images'}' or '{wider_subset_dir() / 'images'}'")
    return [resize_bilinear(load_image(p), *size) for p in paths[:count]]


def _set_cv2_threads(threads: int) -> None:
    """cv2.resize runs on OpenCV's own thread pool: give it the row's thread count."""
    try:
        import cv2
    except ImportError:
        return
    cv2.setNumThreads(threads)


def measure(
    model_path: Path, interpreter: str, threads: int, frames_640: list[np.ndarray], repeat: int
) -> StageMedians:
    """Time our stages and the same-interpreter baselines on every frame, ``repeat`` times each."""
    from edge.detect.detector import DetectorOptions, FaceDetector
    from edge.detect.model import load_interpreter_class
    from edge.detect.preprocess import normalize, resize_bilinear
    from tools.upstream_postprocess import upstream_postprocess_for

    _set_cv2_threads(threads)
    detector = FaceDetector(model_path, DetectorOptions(num_threads=threads, interpreter=interpreter))
    frames = [resize_bilinear(f, *detector.input_size) for f in frames_640]

    interpreter_class, _ = load_interpreter_class(interpreter)
    float_model = interpreter_class(model_path=str(upstream_dir() / "models" / FLOAT_TFLITE), num_threads=threads)
    float_model.allocate_tensors()
    float_input = float_model.get_input_details()[0]["index"]

    samples: dict[str, list[int]] = {
        k: [] for k in ("pre", "invoke", "decode", "total", "total640", "float", "upstream")
    }
    identical = True
    for frame, frame_640 in zip(frames, frames_640, strict=True):
        for _ in range(2):  # warm caches and the interpreter's lazy set-up
            detector.detect(frame)
        for _ in range(repeat):
            times = detector.detect_timed(frame).times
            samples["pre"].append(round(times.preprocess_s * 1e9))
            samples["invoke"].append(round(times.invoke_s * 1e9))
        logits, regressions = detector.raw_outputs(frame)
        # Decode timed in the same tight loop as its upstream-style baseline, so the ratio is fair.
        samples["decode"] += _time(partial(detector.postprocess, logits, regressions), repeat)
        upstream = partial(upstream_postprocess_for, detector, logits, regressions)
        samples["upstream"] += _time(upstream, repeat)
        ours, theirs = detector.postprocess(logits, regressions), upstream()
        identical &= np.array_equal(ours.boxes, theirs.boxes) and np.array_equal(ours.scores, theirs.scores)
        samples["total"] += _time(partial(detector.detect, frame), repeat)
        samples["total640"] += _time(partial(detector.detect, frame_640), repeat)
        float_model.set_tensor(float_input, normalize(frame)[None])
        samples["float"] += _time(float_model.invoke, repeat)

    return StageMedians(
        interpreter=detector.interpreter_name,
        threads=threads,
        preprocess_ms=_median_ms(samples["pre"]),
        invoke_ms=_median_ms(samples["invoke"]),
        decode_ms=_median_ms(samples["decode"]),
        total_ms=_median_ms(samples["total"]),
        total_640_ms=_median_ms(samples["total640"]),
        float_tflite_invoke_ms=_median_ms(samples["float"]),
        upstream_decode_ms=_median_ms(samples["upstream"]),
        identical_boxes=bool(identical),
        frames=len(frames),
    )


RESIZE_SOURCES = ((640, 480), (1280, 720))


def measure_resize(count: int, threads: int, repeat: int, model_size: tuple[int, int]) -> dict[str, dict[str, float]]:
    """Median ms of resizing real camera frames to the model size, per path and source size:
    ``{"cv2"|"numpy": {"640x480": ms, "1280x720": ms}}`` (no "cv2" without OpenCV). Each
    path's output is checked against the other's (they are bit-identical by design)."""
    from edge.detect.preprocess import BilinearResizer

    _set_cv2_threads(threads)
    paths = {"numpy": BilinearResizer(*model_size, use_cv2=False)}
    if BilinearResizer(*model_size).uses_cv2:
        paths["cv2"] = BilinearResizer(*model_size, use_cv2=True)
    medians: dict[str, dict[str, float]] = {name: {} for name in paths}
    for width, height in RESIZE_SOURCES:
        frames = load_frames(count, (width, height))
        for name, resize in paths.items():
            samples: list[int] = []
            for frame in frames:
                resize(frame)
                samples += _time(partial(resize, frame), repeat)
            medians[name][f"{width}x{height}"] = _median_ms(samples)
        if "cv2" in paths and not all(np.array_equal(paths["cv2"](f), paths["numpy"](f)) for f in frames):
            sys.exit(f"bench: cv2 and numpy resize differ at {width}x{height}")
    return medians


def measure_blazeface(model_path: Path, frames_640: list[np.ndarray], repeat: int) -> dict[str, float] | None:
    """MediaPipe's BlazeFace short-range (the model bundled with mediapipe) and edge-face on
    the same 640x480 RGB frames, interleaved frame by frame in one process so that machine
    load hits both alike; None where mediapipe is not installed. ``detect_ms``: the Tasks
    API's whole frame (its resize, invoke, decode and NMS); ``invoke_1thread_ms``: the same
    .tflite alone in ai-edge-litert with 1 thread (a lower bound: no pre- or post-processing);
    ``edge_face_frame_ms``: FaceDetector.detect, ai-edge-litert, 1 thread."""
    try:
        import mediapipe as mp
    except ImportError:
        return None
    from edge.detect.detector import DetectorOptions, FaceDetector

    ours = FaceDetector(model_path, DetectorOptions(num_threads=1, interpreter="ai_edge_litert"))
    model = Path(mp.__file__).parent / "modules" / "face_detection" / "face_detection_short_range.tflite"
    vision = mp.tasks.vision
    options = vision.FaceDetectorOptions(
        base_options=mp.tasks.BaseOptions(model_asset_path=str(model)), running_mode=vision.RunningMode.IMAGE
    )
    detect_samples: list[int] = []
    ours_samples: list[int] = []
    with vision.FaceDetector.create_from_options(options) as detector:
        for frame in frames_640:
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame))
            detector.detect(image)
            ours.detect(frame)
            for _ in range(repeat):
                detect_samples += _time(partial(detector.detect, image), 1)
                ours_samples += _time(partial(ours.detect, frame), 1)

    from edge.detect.model import load_interpreter_class

    interpreter_class, _ = load_interpreter_class("ai_edge_litert")
    interpreter = interpreter_class(model_path=str(model), num_threads=1)
    interpreter.allocate_tensors()
    interpreter.invoke()
    invoke_samples = _time(interpreter.invoke, repeat * len(frames_640))
    return {
        "detect_ms": _median_ms(detect_samples),
        "invoke_1thread_ms": _median_ms(invoke_samples),
        "edge_face_frame_ms": _median_ms(ours_samples),
    }


def measure_onnxruntime(threads: int, frames_640: list[np.ndarray], repeat: int) -> float | None:
    """Median ms of one onnxruntime run of upstream's ONNX (box decoding in-graph), or None
    where onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    from edge.detect.preprocess import normalize_nchw, resize_bilinear

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(upstream_dir() / "models" / FLOAT_ONNX), options, providers=["CPUExecutionProvider"]
    )
    samples: list[int] = []
    for frame in frames_640:
        feed = {"input": normalize_nchw(resize_bilinear(frame, 320, 240))}
        session.run(None, feed)
        samples += _time(partial(session.run, None, feed), repeat)
    return _median_ms(samples)


def worker(args: argparse.Namespace) -> None:
    """Measure every requested thread count with one interpreter; print JSON to stdout."""
    frames = load_frames(args.frames)
    results = [asdict(measure(args.model, args.interpreter, t, frames, args.repeat)) for t in args.threads]
    onnx = {str(t): measure_onnxruntime(t, frames, args.repeat) for t in args.threads}
    print(json.dumps({"results": results, "onnxruntime_ms": onnx}))


def _run_worker(python: Path, what: str, worker_args: list[str], args: argparse.Namespace) -> dict:
    """This module run by ``python`` with ``worker_args`` and this run's model, frames and
    repeats; its last stdout line is the JSON of its figures. Exits naming ``what`` on failure."""
    sizing = ["--model", str(args.model), "--frames", str(args.frames), "--repeat", str(args.repeat)]
    command = [str(python), "-m", "tools.bench", *worker_args, *sizing]
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"bench: {what} worker failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _interpreters() -> list[tuple[Path, str]]:
    """(python, interpreter package) pairs available on this machine."""
    pairs = []
    try:
        import ai_edge_litert.interpreter  # noqa: F401

        pairs.append((Path(sys.executable), "ai_edge_litert"))
    except ImportError:
        pass
    tflite_python = PROJECT_ROOT / ".venv-tflite" / "bin" / "python"
    if tflite_python.exists():
        pairs.append((tflite_python, "tflite_runtime"))
    else:
        try:
            import tflite_runtime.interpreter  # noqa: F401

            pairs.append((Path(sys.executable), "tflite_runtime"))
        except ImportError:
            pass
    return pairs


def report(runs: list[dict], onnx_ms: dict[str, float | None], markdown: bool) -> list[str]:
    """Print the table; return the list of missed targets (ai-edge-litert only)."""
    header = (
        "| interpreter | threads | pre-process | int8 invoke | decode+NMS | frame 320x240 | frame 640x480 "
        "| float TFLite invoke | int8/float invoke | onnxruntime | int8 frame/ORT | upstream decode | decode speed-up "
        "| frame/invoke | identical boxes |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    missed = []
    for run in runs:
        ort_ms = onnx_ms.get(str(run["threads"]))
        ort_cells = "n/a | n/a" if ort_ms is None else f"{ort_ms:.3f} ms | {run['total_ms'] / ort_ms:.2f}x"
        invoke_ratio = run["invoke_ms"] / run["float_tflite_invoke_ms"]
        speedup = run["upstream_decode_ms"] / run["decode_ms"]
        frame_ratio = run["total_ms"] / run["invoke_ms"]
        lines.append(
            f"| {run['interpreter']} | {run['threads']} | {run['preprocess_ms']:.3f} ms | {run['invoke_ms']:.3f} ms "
            f"| {run['decode_ms']:.3f} ms | {run['total_ms']:.3f} ms | {run['total_640_ms']:.3f} ms "
            f"| {run['float_tflite_invoke_ms']:.3f} ms | {invoke_ratio:.2f}x "
            f"| {ort_cells} "
            f"| {run['upstream_decode_ms']:.3f} ms | {speedup:.1f}x | {frame_ratio:.2f}x "
            f"| {'yes' if run['identical_boxes'] else 'NO'} ({run['frames']} frames) |"
        )
        if not run["identical_boxes"]:
            missed.append(
                f"{run['interpreter']} {run['threads']} thr: boxes differ from upstream-style post-processing"
            )
        if run["interpreter"] == "ai_edge_litert":
            if run["threads"] == 1 and invoke_ratio > TARGET_INVOKE_VS_FLOAT:
                missed.append(f"int8 invoke {invoke_ratio:.2f}x float TFLite (target <= {TARGET_INVOKE_VS_FLOAT})")
            if speedup < TARGET_DECODE_SPEEDUP:
                missed.append(
                    f"{run['threads']} thr: decode speed-up {speedup:.1f}x (target >= {TARGET_DECODE_SPEEDUP})"
                )
            if frame_ratio > TARGET_FRAME_VS_INVOKE:
                missed.append(
                    f"{run['threads']} thr: frame/invoke {frame_ratio:.2f}x (target <= {TARGET_FRAME_VS_INVOKE})"
                )
    _print_table(lines, markdown)
    return missed


def _print_table(lines: list[str], markdown: bool) -> None:
    if not markdown:
        lines = [line.replace("|", " ").strip() for line in lines if not line.startswith("|---")]
    print("\n".join(lines))


def report_resize(resize_ms: dict[str, dict[str, float]], model_size: tuple[int, int], markdown: bool) -> None:
    """The pre-processing table: resize to the model size, per path and camera size (1 thread)."""
    width, height = model_size
    sources = [f"{w}x{h}" for w, h in RESIZE_SOURCES]
    header = "| resize, 1 thread | " + " | ".join(f"{s} -> {width}x{height}" for s in sources) + " |"
    lines = ["", header, "|" + "---|" * (len(sources) + 1)]
    for name in ("cv2", "numpy"):
        if name in resize_ms:
            cells = " | ".join(f"{resize_ms[name][s]:.3f} ms" for s in sources)
            lines.append(f"| {'cv2.resize' if name == 'cv2' else 'numpy (no OpenCV)'} | {cells} |")
    if "cv2" in resize_ms:
        cells = " | ".join(f"{resize_ms['numpy'][s] / resize_ms['cv2'][s]:.1f}x" for s in sources)
        lines.append(f"| numpy/cv2 | {cells} |")
    _print_table(lines, markdown)


def report_blazeface(blazeface: dict[str, float] | None, markdown: bool) -> list[str]:
    """edge-face's whole 640x480 frame (ai-edge-litert, 1 thread) against BlazeFace short-range
    on the same frames, timed interleaved; returns the missed target, if any."""
    if blazeface is None:
        print("\nBlazeFace baseline: skipped (needs mediapipe and ai-edge-litert, e.g. in .venv-mediapipe)")
        return []
    frame = blazeface["edge_face_frame_ms"]
    lines = [
        "",
        "| 640x480 RGB frame, 1 thread | ms | edge-face/this |",
        "|---|---|---|",
        f"| edge-face (pre-process + invoke + decode) | {frame:.3f} ms | 1.00x |",
        f"| BlazeFace short-range, MediaPipe Tasks detect | {blazeface['detect_ms']:.3f} ms "
        f"| {frame / blazeface['detect_ms']:.2f}x |",
        f"| BlazeFace short-range, invoke only (lower bound) | {blazeface['invoke_1thread_ms']:.3f} ms "
        f"| {frame / blazeface['invoke_1thread_ms']:.2f}x |",
    ]
    _print_table(lines, markdown)
    if frame >= blazeface["detect_ms"]:
        return [f"640x480 frame {frame:.3f} ms, not faster than BlazeFace short-range {blazeface['detect_ms']:.3f} ms"]
    return []


def _blazeface_python() -> Path | None:
    """A Python with mediapipe: ``.venv-mediapipe`` when it exists, else this one if it has it."""
    python = PROJECT_ROOT / ".venv-mediapipe" / "bin" / "python"
    if python.exists():
        return python
    try:
        import mediapipe  # noqa: F401
    except ImportError:
        return None
    return Path(sys.executable)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--no-blazeface", action="store_true", help="skip the BlazeFace baseline")
    parser.add_argument("--model", type=Path, default=DEFAULT_INT8_MODEL)
    parser.add_argument("--frames", type=int, default=40, help="number of real photos to use")
    parser.add_argument("--repeat", type=int, default=20, help="timed repetitions per frame and stage")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table (for the README)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--interpreter", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--blazeface-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.blazeface_worker:
        _set_cv2_threads(1)
        print(json.dumps(measure_blazeface(args.model, load_frames(args.frames), args.repeat)))
        return 0
    if not args.model.is_file():
        sys.exit(f"bench: model '{args.model}' not found; build it with: python -m tools.quantize")
    if args.worker:
        worker(args)
        return 0

    runs, onnx_ms = [], {}
    for python, interpreter in _interpreters():
        print(f"measuring {interpreter} ({python}) ...", file=sys.stderr)
        worker_args = ["--worker", "--interpreter", interpreter, "--threads", *map(str, args.threads)]
        result = _run_worker(python, interpreter, worker_args, args)
        runs += result["results"]
        onnx_ms.update({k: v for k, v in result["onnxruntime_ms"].items() if v is not None})
    if not runs:
        sys.exit("bench: no TFLite interpreter installed (ai-edge-litert or tflite-runtime)")
    missed = report(runs, onnx_ms, args.markdown)

    from edge.detect.sidecar import read_sidecar

    info = read_sidecar(args.model)
    model_size = (info.input_width, info.input_height)
    print("measuring the resize paths ...", file=sys.stderr)
    resize_ms = measure_resize(min(args.frames, 16), 1, args.repeat, model_size)
    report_resize(resize_ms, model_size, args.markdown)

    blazeface = None
    blazeface_python = None if args.no_blazeface else _blazeface_python()
    if blazeface_python is not None:
        print(f"measuring BlazeFace short-range ({blazeface_python}) ...", file=sys.stderr)
        blazeface = _run_worker(blazeface_python, "BlazeFace", ["--blazeface-worker"], args)
    missed += report_blazeface(blazeface, args.markdown)
    if args.json:
        figures = {"runs": runs, "onnxruntime_ms": onnx_ms, "resize_ms": resize_ms, "blazeface": blazeface}
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    for line in missed:
        print(f"target missed: {line}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
