"""`edge-face` command line: argument parsing and exit codes only; the work lives elsewhere.

Exit codes (edge.exitcodes.ExitCode): 0 success; 1 some inputs failed (each named on one
stderr line, the others were still processed; `enroll` then writes nothing); 2 usage or
configuration error, or an unusable gallery (one line naming the option, key or file);
3 camera/source unavailable; 4 model error;
5 (fleet) a device is not online.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from edge import __version__
from edge.daemon.startup_signals import StartupSignals, held_signals
from edge.exitcodes import ExitCode
from edge.models import PACKAGED_MODEL_NAME, PACKAGED_MODEL_PATH  # stdlib only: no numpy at start

# edge.config and everything heavier are imported where used: `run` holds its signals before
# they load (edge.daemon.startup_signals), and the device-free commands start without numpy.

if TYPE_CHECKING:
    import numpy as np

    from edge.detect.detector import FaceDetector
    from edge.sources.imageio import DecodedImage

# A source checkout's build output (`make model`), relative to where the CLI runs.
DEFAULT_MODEL = Path("models/build") / PACKAGED_MODEL_NAME
ANNOTATED_SUFFIX = ".jpg"


def default_model_path() -> Path:
    """$EDGE_FACE_MODEL, else the build output of a source checkout, else the installed copy."""
    if os.environ.get("EDGE_FACE_MODEL"):
        return Path(os.environ["EDGE_FACE_MODEL"])
    for candidate in (DEFAULT_MODEL, PACKAGED_MODEL_PATH):
        if candidate.is_file():
            return candidate
    return DEFAULT_MODEL


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (exit 2) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.CONFIG, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _by_rule(section: type, name: str, convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type that accepts what config key ``section.name`` accepts: one limit,
    stated once, for the option and the key."""
    from edge.config import key_rule

    rule = key_rule(section, name)

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not rule.contains(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed ({rule.allowed})")
        return value

    return parse


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed (an integer >= 1)")
    return value


def _interpreter(text: str) -> str:
    from edge.detect.model import INTERPRETER_MODULES

    if text not in INTERPRETER_MODULES:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed (one of {', '.join(INTERPRETER_MODULES)})")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edge-face", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"edge-face {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_detect_arguments(commands.add_parser("detect", help="find faces in image files"))
    _add_device_commands(commands.add_parser)

    from edge.ops.fleet import add_arguments as add_fleet_arguments

    add_fleet_arguments(commands.add_parser("fleet", help="one status line per device, read from the MQTT broker"))

    from edge.recognize.people import add_arguments as add_people_arguments

    add_people_arguments(
        commands.add_parser("enroll", help="add a person's face descriptors to the gallery (face recognition)"),
        commands.add_parser("people", help="list or remove the people in the gallery (face recognition)"),
    )
    return parser


def _add_detect_arguments(detect: argparse.ArgumentParser) -> None:
    from edge.config import CameraConfig, DetectorConfig, key_default

    detect.add_argument("images", nargs="+", metavar="IMAGE")
    detect.add_argument("--model", type=Path, default=None, help="int8 .tflite (default: the built or installed one)")
    detect.add_argument("--score-threshold", type=_by_rule(DetectorConfig, "score_threshold", float), default=0.7)
    detect.add_argument("--iou-threshold", type=_by_rule(DetectorConfig, "iou_threshold", float), default=0.3)
    detect.add_argument(
        "--threads", type=_by_rule(DetectorConfig, "num_threads", int), default=None, help="interpreter threads"
    )
    detect.add_argument(
        "--interpreter", type=_interpreter, default=None, help="ai_edge_litert | tflite_runtime | tensorflow"
    )
    detect.add_argument(
        "--max-pixels",
        type=_by_rule(CameraConfig, "max_pixels", int),
        default=key_default(CameraConfig, "max_pixels"),
        help="decoded-pixel limit per image; bigger JPEGs are decoded at reduced scale (default: %(default)s)",
    )
    detect.add_argument("--json", action="store_true", help="one JSON line per image")
    detect.add_argument(
        "--gallery",
        type=Path,
        default=None,
        metavar="FILE",
        help="also say who each face is: the nearest enrolled person of this gallery (edge-face enroll)",
    )
    detect.add_argument(
        "--annotate",
        type=Path,
        metavar="DIR",
        help="write copies with boxes drawn into DIR; never overwrites (a taken name gets -1, -2, ...)",
    )


def _add_device_commands(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """The commands that read a device's config file: run, check-config, preview, forget
    (``add_parser``: the subcommands' ``add_parser``)."""
    run = add_parser("run", help="run the face-event daemon")
    run.add_argument("--config", required=True, type=Path)
    run.add_argument(
        "--max-frames", type=_positive_int, default=None, metavar="N", help="stop after N >= 1 frames (tests, demos)"
    )

    check = add_parser("check-config", help="validate a config file without running")
    check.add_argument("config", type=Path)
    check.add_argument(
        "--as-user",
        metavar="USER",
        default=None,
        help="check as USER (e.g. the service user edge-face) that every file it names is readable; needs root",
    )

    preview = add_parser(
        "preview", help="one camera frame with the masks, zones and detected faces drawn on it (.jpg or .png)"
    )
    preview.add_argument("--config", required=True, type=Path)
    preview.add_argument("out", type=Path, metavar="OUT", help="the picture to write (replaced atomically)")

    forget = add_parser("forget", help="remove the device from the MQTT broker and Home Assistant")
    forget.add_argument("--config", required=True, type=Path)


def _face_record(box: np.ndarray, score: float) -> dict[str, Any]:
    return {"box": [round(float(v), 2) for v in box], "score": round(float(score), 4)}


def _fail(message: str) -> None:
    print(f"edge-face: {message}", file=sys.stderr)


class _Identifier:
    """``detect --gallery``: each face's descriptor against the enrolled people."""

    def __init__(self, path: Path, threads: int | None, interpreter: str | None) -> None:
        from edge.config import quote_path
        from edge.recognize.describe import FaceDescriber
        from edge.recognize.gallery import GalleryError, load_gallery

        # load_gallery takes a missing file for an empty gallery (enroll starts one); asked
        # for by name, a missing file is a typo that would make every face "nobody".
        if not path.exists():
            raise GalleryError(f"gallery '{quote_path(path)}': no such file")
        self._describer = FaceDescriber(num_threads=threads, interpreter=interpreter)
        self._gallery = load_gallery(path, self._describer.model_id, self._describer.dimensions)

    def identify(self, pixels: np.ndarray, boxes: np.ndarray) -> list[dict[str, Any]]:
        """``{"person", "distance"}`` of each face of ``boxes`` ((N, 4) pixels of ``pixels``)."""
        from edge.recognize.gallery import identify

        fields = []
        for box in boxes:
            descriptor = self._describer.describe(pixels, box).descriptor
            match = identify(self._gallery, descriptor, self._describer.match_threshold)
            distance = None if match.distance is None else round(match.distance, 4)
            fields.append({"person": match.person, "distance": distance})
        return fields


def _model_problem(model: Path) -> str | None:
    """One line if ``model`` (or its sidecar, when present) cannot be read; loading it is the
    detector's job (checksum, format), this only turns OS errors into a clear line."""
    from edge.config import path_problem, quote_path

    problem = path_problem(model)
    if problem is not None:
        return f"model '{quote_path(model)}': {problem}"
    sidecar = model.with_suffix(".json")
    if sidecar.exists() and (problem := path_problem(sidecar)) is not None:
        return f"model sidecar '{quote_path(sidecar)}': {problem}"
    return None


def detect_command(args: argparse.Namespace) -> int:
    if args.annotate is not None and not _annotate_folder_ready(args.annotate):
        return ExitCode.CONFIG
    detector = _open_detector(args)
    if detector is None:
        return ExitCode.MODEL
    identifier = None
    if args.gallery is not None:
        from edge.detect.model import ModelError
        from edge.recognize.gallery import GalleryError
        from edge.recognize.people import report_unusable

        try:
            identifier = _Identifier(args.gallery, args.threads, args.interpreter)
        except (GalleryError, ModelError) as exc:
            return report_unusable(exc)
    if not args.json:
        print(f"model {detector.model_id} on {detector.interpreter_name}", file=sys.stderr)

    failures = 0
    given_out: set[str] = set()  # annotated names this run has written
    for image_path in args.images:
        failures += _detect_image(image_path, args, detector, identifier, given_out)
    return ExitCode.FAILURE if failures else ExitCode.OK


def _annotate_folder_ready(folder: Path) -> bool:
    """``--annotate DIR`` made where missing; False (the problem said on one line) when it
    cannot be."""
    from edge.config import quote_path

    if folder.exists() and not folder.is_dir():
        _fail(f"--annotate: '{quote_path(folder)}' exists and is not a folder")
        return False
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"--annotate: cannot create folder '{quote_path(folder)}' ({exc.strerror or exc})")
        return False
    return True


def _open_detector(args: argparse.Namespace) -> FaceDetector | None:
    """The detector ``--model`` and its options ask for; None (the problem said on one line)
    when the model cannot be used."""
    from edge.config import quote_path
    from edge.detect.detector import DetectorOptions, FaceDetector
    from edge.detect.model import ModelError

    model_path = args.model or default_model_path()
    problem = _model_problem(model_path)
    if problem is not None:
        _fail(problem)
        return None
    options = DetectorOptions(
        score_threshold=args.score_threshold,
        iou_threshold=args.iou_threshold,
        num_threads=args.threads,
        interpreter=args.interpreter,
    )
    try:
        return FaceDetector(model_path, options)
    except ModelError as exc:
        _fail(str(exc))
    except OSError as exc:  # e.g. the file changed between the check and the load
        _fail(f"model '{quote_path(model_path)}': cannot be read ({exc.strerror or exc})")
    return None


def _detect_image(
    image_path: str,
    args: argparse.Namespace,
    detector: FaceDetector,
    identifier: _Identifier | None,
    given_out: set[str],
) -> int:
    """Find, identify, annotate and report the faces of one image; the number of failures
    (0 or 1: each named on one stderr line). ``given_out``: annotated names written so far."""
    from edge.sources.imageio import ImageError, decode_image, draw_detections, save_new_image

    try:
        image = decode_image(image_path, args.max_pixels)
    except ImageError as exc:
        _fail(str(exc))
        return 1
    width, height = image.source_width, image.source_height
    detections = detector.detect(image.pixels)
    # Boxes are normalized: scale them to the stored image, even if it was decoded smaller.
    faces = [_face_record(b, s) for b, s in zip(detections.pixel_boxes(width, height), detections.scores, strict=True)]
    if identifier is not None:  # described from the decoded pixels, which may be smaller
        decoded_boxes = detections.pixel_boxes(image.pixels.shape[1], image.pixels.shape[0])
        for face, who in zip(faces, identifier.identify(image.pixels, decoded_boxes), strict=True):
            face.update(who)
    annotated, failures = None, 0
    if args.annotate is not None:
        try:
            annotated = save_new_image(
                draw_detections(image.pixels, detections),
                args.annotate,
                Path(image_path).stem,
                ANNOTATED_SUFFIX,
                frozenset(given_out),
            )
            given_out.add(annotated.name)
        except ImageError as exc:
            _fail(str(exc))
            failures = 1
    _report(image_path, image, faces, annotated, args.json)
    return failures


def _report(
    image_path: str, image: DecodedImage, faces: list[dict[str, Any]], annotated: Path | None, as_json: bool
) -> None:
    width, height = image.source_width, image.source_height
    if as_json:
        record: dict[str, Any] = {"image": image_path, "width": width, "height": height, "faces": faces}
        if image.reduced:
            record["decoded_size"] = [image.pixels.shape[1], image.pixels.shape[0]]
        if annotated is not None:
            record["annotated"] = str(annotated)
        print(json.dumps(record), flush=True)
        return
    reduced = f", decoded at {image.pixels.shape[1]}x{image.pixels.shape[0]}" if image.reduced else ""
    print(f"{image_path}: {len(faces)} face{'s' if len(faces) != 1 else ''} ({width}x{height}{reduced})")
    for face in faces:
        x1, y1, x2, y2 = face["box"]
        who = ""
        if "person" in face:
            distance = "no one enrolled" if face["distance"] is None else f"distance {face['distance']:.3f}"
            who = f"  {face['person'] or 'unknown'} ({distance})"
        print(f"  score {face['score']:.3f}  box ({x1:.0f}, {y1:.0f}) - ({x2:.0f}, {y2:.0f}){who}")
    if annotated is not None:
        print(f"  annotated copy: {annotated}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:  # the daemon: its signals are held before anything heavy loads
        with held_signals() as early:
            return _main(argv, early)
    return _main(argv, None)


def _main(argv: list[str], early: StartupSignals | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "detect":
            return detect_command(args)
        if args.command == "run":
            from edge.daemon.loop import run_main

            return run_main(str(args.config), max_frames=args.max_frames, early=early)
        if args.command == "check-config":
            from edge.ops.check_config import check_config_main

            return check_config_main(str(args.config), as_user=args.as_user)
        if args.command == "preview":
            from edge.daemon.preview import preview_main

            return preview_main(str(args.config), args.out)
        if args.command == "forget":
            from edge.ops.forget import forget_main

            return forget_main(str(args.config))
        if args.command == "fleet":
            from edge.ops.fleet import fleet_main

            return fleet_main(args)
        if args.command in ("enroll", "people"):
            from edge.recognize.people import enroll_main, people_main

            return enroll_main(args) if args.command == "enroll" else people_main(args)
    except BrokenPipeError:  # `edge-face detect ... | head`: the reader left, nothing to report to
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.FAILURE
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
