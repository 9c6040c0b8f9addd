"""The guest half of tools.arm_cost: runs inside the emulated aarch64 Python, under the
insn_regions plugin, and marks the edges of each stage it runs with a marker system call.

    python -m tools.arm64.cost_guest detector --interpreter PKG --int8 M --float F IMAGE...
    python -m tools.arm64.cost_guest daemon --config TOML --frames N
    python -m tools.arm64.cost_guest ops --interpreter PKG MODEL...
    python -m tools.arm64.cost_guest stems --interpreter PKG OPTION=MODEL... --images IMAGE...
    python -m tools.arm64.cost_guest race --interpreter PKG --threads N [--edge LABEL=M]... [--blazeface NAME=M]... IMAGE...
    python -m tools.arm64.cost_guest recognize --interpreter PKG --int8 M --landmarks L --embedding E IMAGE...

Prints one JSON object on stdout: the regions, each ``{"stage", "frame", "start", "end"}``
where start and end are marker labels (or ``"spans": [[start, end], ...]`` for a region
made of several stretches); the plugin's log has the instruction counters at each label. Every run also holds "empty" regions (two marks back to back): their count is
the cost of one mark, which the host subtracts from every region.

Everything runs with one interpreter thread. Stages (detector mode), per photo:
preprocess_320 / preprocess_640 (the detector's own path from a 320x240 or 640x480 RGB
frame into the input tensor), int8_invoke and float_invoke (the bare interpreter invoke of
our int8 model and of upstream's float TFLite), decode_nms (ours) and upstream_post
(upstream-style post-processing of the same int8 outputs). Daemon mode: the daemon's own
loop on a replay, with its detector's prepare, invoke and postprocess wrapped in marks:
daemon_invoke, daemon_prepare, daemon_postprocess, daemon_loop (the rest: events, sink,
stats, the frame hand-over from the grabber thread) and daemon_outside_invoke (the sum of
the last three: everything from the end of one invoke to the start of the next, all threads).
Ops mode: one invoke of each single-operator model (tools/arm64/split_ops.py), stage "op",
frame = the model's file name; a model whose op cannot run on its own (a RESHAPE fed by a
computed shape) is listed under "skipped".
Stems mode: each first-layer option of tools/arm64/stem_options.py, its own pre-process from
a 320x240 frame into its input tensor and the invoke of its model: stages "<option>/pre",
"<option>/invoke" and "<option>/frame" (both as spans); the heads and their decode are the
same for every option and are not counted.
Race mode: a whole frame of each model, from a frame at the model's own width (a camera
scales for free): each edge-face model (FaceDetector's pre-process, invoke, decode + NMS) and
each BlazeFace model (tools.blazeface: letterbox + normalize into the input tensor, invoke,
decode + weighted NMS), all with ``--threads`` interpreter threads. Stages
"<model>/pre", "<model>/invoke", "<model>/decode" and "<model>/frame" (the three as spans).
Recognize mode: per photo (as a 640x480 camera frame), the bare int8 detector invoke on its
320x240 frame (detector_invoke), and one recognition of the largest face the detector finds,
from the 640x480 frame: landmarks (box mapping + the 5-point trees), chip (the 150x150 warp),
descriptor (the network: input copy, invoke, output) and recognition (the three as spans).
Photos without a face give no recognition stages and are listed under "faceless";
"face_widths" has the width in pixels of each photo's recognized face, "descriptors" its
descriptor (the host compares them with its own).
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import json
import os
import sys
from functools import partial

import numpy as np

# Kept in step with MARKER_SYSCALL in tools/arm64/insn_regions.c.
MARKER_SYSCALL = 0xEEEE
EMPTY_REGIONS = 8
# The daemon's first frames carry lazy set-up (first invoke, first event, first log line).
DAEMON_WARMUP_FRAMES = 2


class Marks:
    """Marker system calls with increasing labels, and the regions they delimit."""

    def __init__(self) -> None:
        syscall = ctypes.CDLL(None, use_errno=True).syscall
        syscall.restype = ctypes.c_long
        syscall.argtypes = [ctypes.c_long, ctypes.c_long]
        self._syscall = syscall
        self._next = 0
        self.regions: list[dict] = []

    def mark(self) -> int:
        label = self._next
        self._next += 1
        self._syscall(MARKER_SYSCALL, label)
        return label

    def region(self, stage: str, frame: str, fn):
        """Run ``fn()`` between two marks; returns its result."""
        start = self.mark()
        result = fn()
        end = self.mark()
        self.regions.append({"stage": stage, "frame": frame, "start": start, "end": end})
        return result

    def chain(self, frame: str, whole: str, steps: list):
        """Run ``steps`` ((stage, fn), ...) back to back between marks, each fn given the
        previous one's result (the first nothing); records a region per stage and ``whole``
        made of them all; returns the last result."""
        labels = [self.mark()]
        result = steps[0][1]()
        labels.append(self.mark())
        for _stage, step in steps[1:]:
            result = step(result)
            labels.append(self.mark())
        spans = list(itertools.pairwise(labels))
        for (stage, _step), span in zip(steps, spans, strict=True):
            self.regions.append({"stage": stage, "frame": frame, "spans": [span]})
        self.regions.append({"stage": whole, "frame": frame, "spans": spans})
        return result

    def empty_regions(self) -> None:
        for number in range(EMPTY_REGIONS):
            self.region("empty", str(number), lambda: None)


def _loaded(interpreter_class, path: str, threads: int = 1):
    """(the model's interpreter with its tensors allocated, the index of its first input)."""
    interpreter = interpreter_class(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter, interpreter.get_input_details()[0]["index"]


class _ShippedDetector:
    """The int8 model twice, one thread each: FaceDetector (its pre-process, detect, decode)
    and a bare interpreter (its invoke alone, fed by camera_frames)."""

    def __init__(self, args: argparse.Namespace) -> None:
        from edge.detect.detector import DetectorOptions, FaceDetector
        from edge.detect.model import load_interpreter_class

        self.detector = FaceDetector(args.int8, DetectorOptions(num_threads=1, interpreter=args.interpreter))
        self.interpreter_class, self.interpreter_name = load_interpreter_class(args.interpreter)
        self.int8, self._int8_input = _loaded(self.interpreter_class, args.int8)

    def camera_frames(self, path: str):
        """The photo as a 640x480 camera frame and at the model's input size; the bare
        interpreter's input is set from the latter."""
        from edge.detect.preprocess import resize_bilinear
        from edge.sources.imageio import load_image

        info = self.detector.info
        frame_640 = resize_bilinear(load_image(path), 640, 480)
        frame_320 = resize_bilinear(frame_640, info.input_width, info.input_height)
        self.int8.set_tensor(self._int8_input, (frame_320 ^ np.uint8(0x80)).view(np.int8)[None])
        return frame_640, frame_320


def run_detector(args: argparse.Namespace, marks: Marks) -> dict:
    from edge.detect.preprocess import normalize
    from tools.upstream_postprocess import upstream_postprocess_for

    shipped = _ShippedDetector(args)
    detector, int8, name = shipped.detector, shipped.int8, shipped.interpreter_name
    float_model, float_input = _loaded(shipped.interpreter_class, args.float)

    faces, identical = {}, True
    marks.empty_regions()
    for index, path in enumerate(args.images):
        frame = os.path.basename(path)
        frame_640, frame_320 = shipped.camera_frames(path)
        float_model.set_tensor(float_input, normalize(frame_320)[None])  # NHWC, as upstream's TFLite takes it
        if index == 0:  # lazy set-up (weight packing, first-touch allocations) stays out of the counts
            detector.detect(frame_320)
            detector.detect(frame_640)
            int8.invoke()
            float_model.invoke()
        # The detector's own pre-process stage: it has no public entry of its own (detect and
        # raw_outputs run it with the invoke), so the count calls it by name.
        marks.region("preprocess_640", frame, partial(detector._prepare, frame_640, "RGB"))
        marks.region("preprocess_320", frame, partial(detector._prepare, frame_320, "RGB"))
        logits, regressions = detector.raw_outputs(frame_320)
        marks.region("int8_invoke", frame, int8.invoke)
        ours = marks.region("decode_nms", frame, partial(detector.postprocess, logits, regressions))
        upstream = partial(upstream_postprocess_for, detector, logits, regressions)
        theirs = marks.region("upstream_post", frame, upstream)
        marks.region("float_invoke", frame, float_model.invoke)
        faces[frame] = len(ours.scores)
        identical &= np.array_equal(ours.boxes, theirs.boxes) and np.array_equal(ours.scores, theirs.scores)
    marks.empty_regions()
    return {"interpreter": name, "faces": faces, "identical_to_upstream_post": bool(identical)}


def run_daemon(args: argparse.Namespace, marks: Marks) -> dict:
    from edge.config import load_config
    from edge.daemon.loop import build_daemon
    from edge.daemon.sdnotify import SystemdNotifier
    from edge.mqtt.sinks import StdoutSink
    from edge.sources.replay import ReplaySource

    config = load_config(args.config)
    if config.camera.path is None:
        raise SystemExit(f"{args.config}: camera.path is not set")
    source = ReplaySource(config.camera.path, loop=True, preload=True)
    # Per frame: the marks at the start and end of prepare, invoke and postprocess, in order.
    cycle: list[int] = []

    def marked(fn):
        def call(*fn_args):
            cycle.append(marks.mark())
            result = fn(*fn_args)
            cycle.append(marks.mark())
            return result

        return call

    with open(os.devnull, "w") as devnull:
        daemon = build_daemon(config, source=source, sink=StdoutSink(devnull), notifier=SystemdNotifier(environ={}))
        # Instrumentation of this detector instance only: FaceDetector.detect_timed, which the
        # daemon calls, runs these three stages by these names (tests/test_arm64_tool.py fails
        # if that changes).
        detector = daemon.detector
        detector._prepare = marked(detector._prepare)  # type: ignore[method-assign]  # the instrumentation
        detector._model.invoke = marked(detector._model.invoke)  # type: ignore[method-assign]
        detector._postprocess = marked(detector._postprocess)
        marks.empty_regions()
        code = daemon.run(max_frames=args.frames)
        marks.empty_regions()
    if code != 0:
        raise SystemExit(f"cost_guest: the daemon exited with {code}")
    if len(cycle) != 6 * args.frames:
        raise SystemExit(f"cost_guest: {len(cycle)} marks for {args.frames} frames (expected 6 per frame)")
    frames = [cycle[i : i + 6] for i in range(0, len(cycle), 6)]
    for number in range(DAEMON_WARMUP_FRAMES, len(frames) - 1):
        _pre_s, _pre_e, inv_s, inv_e, post_s, post_e = frames[number]
        next_pre_s, next_pre_e, next_inv_s = frames[number + 1][:3]
        frame = str(number)
        regions = {
            "daemon_invoke": [(inv_s, inv_e)],
            "daemon_postprocess": [(post_s, post_e)],
            "daemon_prepare": [(next_pre_s, next_pre_e)],
            # The rest of the cycle from one invoke to the next: events, sink, stats, the
            # frame hand-over between the grabber thread and the loop.
            "daemon_loop": [(inv_e, post_s), (post_e, next_pre_s), (next_pre_e, next_inv_s)],
        }
        regions["daemon_outside_invoke"] = (
            regions["daemon_postprocess"] + regions["daemon_prepare"] + regions["daemon_loop"]
        )
        for stage, spans in regions.items():
            marks.regions.append({"stage": stage, "frame": frame, "spans": spans})
    return {
        "interpreter": daemon.detector.interpreter_name,
        "frames": len(frames),
        "events": daemon.outbox.stats.enqueued,
    }


def run_ops(args: argparse.Namespace, marks: Marks) -> dict:
    from edge.detect.model import load_interpreter_class

    interpreter_class, name = load_interpreter_class(args.interpreter)
    random = np.random.default_rng(0)
    skipped = []
    marks.empty_regions()
    for path in args.models:
        model, _input = _loaded(interpreter_class, path)
        for detail in model.get_input_details():
            if np.issubdtype(detail["dtype"], np.integer):
                info = np.iinfo(detail["dtype"])
                values = random.integers(info.min, info.max, size=detail["shape"], endpoint=True)
            else:
                values = random.standard_normal(detail["shape"])
            model.set_tensor(detail["index"], values.astype(detail["dtype"]))
        try:
            model.invoke()  # lazy set-up (weight packing) stays out of the count
        except (RuntimeError, ValueError):
            skipped.append(os.path.basename(path))
            continue
        marks.region("op", os.path.basename(path), model.invoke)
    marks.empty_regions()
    return {"interpreter": name, "skipped": skipped}


def _whole_frame(marks: Marks, model: str, frame: str, prepare, invoke, decode):
    """Run prepare(), invoke() -> outputs, decode(outputs) -> faces between marks; records the
    stages "<model>/pre", "/invoke", "/decode" and "/frame" (all three); returns the faces."""
    steps = [(f"{model}/pre", prepare), (f"{model}/invoke", lambda _none: invoke()), (f"{model}/decode", decode)]
    return marks.chain(frame, f"{model}/frame", steps)


class _BlazeFaceFrame:
    """A BlazeFace model in the interpreter, with the three stages of its frame."""

    def __init__(self, model, path: str, interpreter_class, threads: int) -> None:
        from tools import blazeface

        self.model = model
        self.size = (model.input_size, model.input_size * 3 // 4)  # a 4:3 frame at the model's width
        self.interpreter, self._input = _loaded(interpreter_class, path, threads)
        # regressors (1, N, 16) first, classificators (1, N, 1) second
        self._outputs = [
            d["index"] for d in sorted(self.interpreter.get_output_details(), key=lambda d: -d["shape"][-1])
        ]
        self._centres = blazeface.anchors(model)
        self._blazeface = blazeface

    def prepare(self, frame) -> None:
        self._blazeface.preprocess(self.model, frame, self.interpreter.tensor(self._input)())

    def invoke(self):
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(index) for index in self._outputs]

    def decode(self, outputs):
        return self._blazeface.decode(self.model, self._centres, *outputs, *self.size)


def run_race(args: argparse.Namespace, marks: Marks) -> dict:
    from edge.detect.detector import DetectorOptions, FaceDetector
    from edge.detect.model import load_interpreter_class
    from edge.detect.preprocess import resize_bilinear
    from edge.sources.imageio import load_image
    from tools import blazeface

    options = DetectorOptions(num_threads=args.threads, interpreter=args.interpreter)
    detectors = {}
    for entry in args.edge:
        label, _, path = entry.partition("=")
        detectors[label] = FaceDetector(path, options)
    interpreter_class, name = load_interpreter_class(args.interpreter)
    by_name = {model.name: model for model in blazeface.MODELS}
    baselines = []
    for entry in args.blazeface:
        model_name, _, path = entry.partition("=")
        baselines.append(_BlazeFaceFrame(by_name[model_name], path, interpreter_class, args.threads))

    faces: dict[str, dict[str, int]] = {}
    marks.empty_regions()
    for index, path in enumerate(args.images):
        frame_name = os.path.basename(path)
        photo = load_image(path)
        for label, detector in detectors.items():
            frame = resize_bilinear(photo, *detector.input_size)
            if index == 0:  # lazy set-up (weight packing, first-touch allocations) stays out of the counts
                detector.detect(frame)
            found = _whole_frame(
                marks,
                label,
                frame_name,
                partial(detector._prepare, frame, "RGB"),  # no public entry of its own, as in run_detector
                detector._model.invoke,
                lambda outputs, detector=detector: detector.postprocess(*outputs),
            )
            faces.setdefault(label, {})[frame_name] = len(found.scores)
        for baseline in baselines:
            frame = resize_bilinear(photo, *baseline.size)
            if index == 0:
                baseline.prepare(frame)
                baseline.decode(baseline.invoke())
            found = _whole_frame(
                marks,
                baseline.model.name,
                frame_name,
                partial(baseline.prepare, frame),
                baseline.invoke,
                baseline.decode,
            )
            faces.setdefault(baseline.model.name, {})[frame_name] = len(found.scores)
    marks.empty_regions()
    return {"interpreter": name, "threads": args.threads, "faces": faces}


def run_stems(args: argparse.Namespace, marks: Marks) -> dict:
    from edge.detect.model import load_interpreter_class
    from edge.detect.preprocess import resize_bilinear
    from edge.sources.imageio import load_image
    from tools.arm64.stem_options import INPUT_HEIGHT, INPUT_WIDTH, prepare

    interpreter_class, name = load_interpreter_class(args.interpreter)
    models = {}
    for entry in args.models:
        option, _, path = entry.partition("=")
        models[option] = _loaded(interpreter_class, path)
    marks.empty_regions()
    for index, path in enumerate(args.images):
        frame_name = os.path.basename(path)
        frame = resize_bilinear(load_image(path), INPUT_WIDTH, INPUT_HEIGHT)
        for option, (interpreter, input_index) in models.items():

            def fill(option=option, interpreter=interpreter, input_index=input_index, frame=frame) -> None:
                prepare(option, frame, interpreter.tensor(input_index)())

            if index == 0:  # lazy set-up stays out of the counts
                fill()
                interpreter.invoke()
            steps = [(f"{option}/pre", fill), (f"{option}/invoke", lambda _none, run=interpreter.invoke: run())]
            marks.chain(frame_name, f"{option}/frame", steps)
    marks.empty_regions()
    return {"interpreter": name}


def run_recognize(args: argparse.Namespace, marks: Marks) -> dict:
    from edge.recognize.align import face_chip
    from edge.recognize.embed import FaceEmbedder
    from edge.recognize.landmarks import ShapePredictor, load_shape_model, predictor_box

    shipped = _ShippedDetector(args)
    detector, int8, name = shipped.detector, shipped.int8, shipped.interpreter_name
    shape_model, landmark_info = load_shape_model(args.landmarks)
    predictor = ShapePredictor(shape_model)
    embedder = FaceEmbedder(args.embedding, num_threads=1, interpreter=args.interpreter)

    def landmarks_of(frame, box):
        return predictor.predict(frame, predictor_box(box, landmark_info.box_mapping))

    faces, faceless, widths, descriptors = {}, [], {}, {}
    marks.empty_regions()
    for index, path in enumerate(args.images):
        frame_name = os.path.basename(path)
        frame_640, frame_320 = shipped.camera_frames(path)
        boxes = detector.detect(frame_320).pixel_boxes(640, 480)
        faces[frame_name] = len(boxes)
        if index == 0:  # lazy set-up (weight packing, first-touch allocations) stays out of the counts
            int8.invoke()
            if len(boxes):
                embedder.descriptor(face_chip(frame_640, landmarks_of(frame_640, tuple(boxes[0]))))
        marks.region("detector_invoke", frame_name, int8.invoke)
        if not len(boxes):
            faceless.append(frame_name)
            continue
        x1, y1, x2, y2 = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
        box = (float(x1), float(y1), float(x2), float(y2))
        widths[frame_name] = round(box[2] - box[0])
        steps = [
            ("landmarks", partial(landmarks_of, frame_640, box)),
            ("chip", partial(face_chip, frame_640)),
            ("descriptor", lambda chip: embedder.descriptor(chip).tolist()),
        ]
        descriptors[frame_name] = marks.chain(frame_name, "recognition", steps)
    marks.empty_regions()
    return {
        "interpreter": name,
        "faces": faces,
        "faceless": faceless,
        "face_widths": widths,
        "descriptors": descriptors,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.arm64.cost_guest")
    modes = parser.add_subparsers(dest="mode", required=True)
    detector = modes.add_parser("detector")
    detector.add_argument("--interpreter", required=True)
    detector.add_argument("--int8", required=True)
    detector.add_argument("--float", required=True)
    detector.add_argument("images", nargs="+")
    daemon = modes.add_parser("daemon")
    daemon.add_argument("--config", required=True)
    daemon.add_argument("--frames", type=int, required=True)
    ops = modes.add_parser("ops")
    ops.add_argument("--interpreter", required=True)
    ops.add_argument("models", nargs="+")
    stems = modes.add_parser("stems")
    stems.add_argument("--interpreter", required=True)
    stems.add_argument("models", nargs="+")
    stems.add_argument("--images", nargs="+", required=True)
    race = modes.add_parser("race")
    race.add_argument("--interpreter", required=True)
    race.add_argument("--threads", type=int, required=True)
    race.add_argument("--edge", action="append", default=[])
    race.add_argument("--blazeface", action="append", default=[])
    race.add_argument("images", nargs="+")
    recognize = modes.add_parser("recognize")
    recognize.add_argument("--interpreter", required=True)
    recognize.add_argument("--int8", required=True)
    recognize.add_argument("--landmarks", required=True)
    recognize.add_argument("--embedding", required=True)
    recognize.add_argument("images", nargs="+")
    args = parser.parse_args(argv)
    marks = Marks()
    run = {
        "detector": run_detector,
        "daemon": run_daemon,
        "ops": run_ops,
        "race": run_race,
        "stems": run_stems,
        "recognize": run_recognize,
    }[args.mode]
    summary = run(args, marks)
    print(json.dumps({**summary, "regions": marks.regions}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
