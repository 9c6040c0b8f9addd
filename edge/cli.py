"""`edge-face` command line: argument parsing and exit codes only; the work lives elsewhere.

Exit codes: 0 success; 1 some inputs failed (the others were still processed);
2 usage or configuration error; 3 camera/source unavailable; 4 model error; 5 (fleet) a
device is not online.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from edge.exitcodes import ExitCode

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_SOURCE, EXIT_MODEL = (
    ExitCode.OK,
    ExitCode.FAILURE,
    ExitCode.CONFIG,
    ExitCode.SOURCE,
    ExitCode.MODEL,
)
DEFAULT_MODEL = Path("models/build/version-slim-320-int8.tflite")


def default_model_path() -> Path:
    """$EDGE_FACE_MODEL, else the build output of a source checkout, else the installed copy."""
    if os.environ.get("EDGE_FACE_MODEL"):
        return Path(os.environ["EDGE_FACE_MODEL"])
    from edge.config import DEFAULT_MODEL_PATH  # where tools/install.sh and Ansible put it

    for candidate in (DEFAULT_MODEL, DEFAULT_MODEL_PATH):
        if candidate.is_file():
            return candidate
    return DEFAULT_MODEL


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-face", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    detect = commands.add_parser("detect", help="find faces in image files")
    detect.add_argument("images", nargs="+", metavar="IMAGE")
    detect.add_argument("--model", type=Path, default=None, help="int8 .tflite (default: %(default)s)")
    detect.add_argument("--score-threshold", type=_probability, default=0.7)
    detect.add_argument("--iou-threshold", type=_probability, default=0.3)
    detect.add_argument("--threads", type=int, default=None, help="interpreter threads")
    detect.add_argument("--interpreter", default=None, help="ai_edge_litert | tflite_runtime | tensorflow")
    detect.add_argument("--json", action="store_true", help="one JSON line per image")
    detect.add_argument("--annotate", type=Path, metavar="DIR", help="write copies with boxes drawn into DIR")

    run = commands.add_parser("run", help="run the face-event daemon")
    run.add_argument("--config", required=True, type=Path)
    run.add_argument("--max-frames", type=int, default=None, help="stop after N frames (tests, demos)")

    check = commands.add_parser("check-config", help="validate a config file without running")
    check.add_argument("config", type=Path)

    from edge.fleet import add_arguments as add_fleet_arguments

    add_fleet_arguments(commands.add_parser("fleet", help="one status line per device, read from the MQTT broker"))
    return parser


def _face_record(box, score) -> dict:
    return {"box": [round(float(v), 2) for v in box], "score": round(float(score), 4)}


def detect_command(args: argparse.Namespace) -> int:
    from edge.detector import FaceDetector
    from edge.imageio import ImageError, draw_detections, load_image, save_image
    from edge.model import ModelError

    try:
        detector = FaceDetector(
            args.model or default_model_path(),
            score_threshold=args.score_threshold,
            iou_threshold=args.iou_threshold,
            num_threads=args.threads,
            interpreter=args.interpreter,
        )
    except ModelError as exc:
        print(f"edge-face: {exc}", file=sys.stderr)
        return EXIT_MODEL
    if args.annotate:
        args.annotate.mkdir(parents=True, exist_ok=True)
    if not args.json:
        print(f"model {detector.model_id} on {detector.interpreter_name}", file=sys.stderr)

    failures = 0
    for image_path in args.images:
        try:
            rgb = load_image(image_path)
        except ImageError as exc:
            print(f"edge-face: {exc}", file=sys.stderr)
            failures += 1
            continue
        height, width = rgb.shape[:2]
        detections = detector.detect(rgb)
        faces = [_face_record(b, s) for b, s in zip(detections.pixel_boxes(width, height), detections.scores)]
        if args.json:
            print(json.dumps({"image": image_path, "width": width, "height": height, "faces": faces}), flush=True)
        else:
            print(f"{image_path}: {len(faces)} face{'s' if len(faces) != 1 else ''} ({width}x{height})")
            for face in faces:
                x1, y1, x2, y2 = face["box"]
                print(f"  score {face['score']:.3f}  box ({x1:.0f}, {y1:.0f}) - ({x2:.0f}, {y2:.0f})")
        if args.annotate:
            try:
                save_image(draw_detections(rgb, detections), args.annotate / (Path(image_path).stem + ".jpg"))
            except ImageError as exc:
                print(f"edge-face: {exc}", file=sys.stderr)
                failures += 1
    return EXIT_PARTIAL if failures else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "detect":
        return detect_command(args)
    if args.command == "run":
        from edge.daemon import run_main

        return run_main(str(args.config), max_frames=args.max_frames)
    if args.command == "check-config":
        from edge.config import check_config_main

        return check_config_main(str(args.config))
    if args.command == "fleet":
        from edge.fleet import fleet_main

        return fleet_main(args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
