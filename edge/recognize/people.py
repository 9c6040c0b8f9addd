"""``edge-face enroll`` and ``edge-face people``: the gallery from the command line.

    edge-face enroll NAME IMAGE... [--gallery FILE]   # one face per photo, added to NAME
    edge-face people [--gallery FILE] [--remove NAME] [--json]

Enrolling reads every photo first and writes the gallery once, only if every photo gave
exactly one face: a photo with none or several is named on one line and nothing is written
(a half-enrolled person would be matched on a partial set without anyone knowing).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from edge.exitcodes import ExitCode
from edge.recognize.settings import GALLERY_FILE_NAME

if TYPE_CHECKING:
    from edge.detect.sidecar import ModelError
    from edge.recognize.gallery import GalleryError

# Stdlib only at import (edge.recognize.settings is too): `edge-face --help` and check-config
# start without numpy; the gallery and the models are imported by the commands that use them.


def default_gallery_path(environ: dict[str, str] | None = None) -> Path:
    """``$STATE_DIRECTORY/gallery.json`` (systemd's StateDirectory), else the default state
    folder's."""
    from edge.config import DEFAULT_STATE_DIR

    env = os.environ if environ is None else environ
    return Path(env.get("STATE_DIRECTORY", "").split(":")[0] or DEFAULT_STATE_DIR) / GALLERY_FILE_NAME


def add_arguments(enroll: argparse.ArgumentParser, people: argparse.ArgumentParser) -> None:
    for parser in (enroll, people):
        parser.add_argument(
            "--gallery",
            type=Path,
            default=None,
            help=f"gallery file (default: {default_gallery_path()}, from $STATE_DIRECTORY when set)",
        )
    enroll.add_argument("name", metavar="NAME", help="the person's name (what events will say)")
    enroll.add_argument("images", nargs="+", metavar="IMAGE", help="photos with exactly one face each")
    people.add_argument("--remove", metavar="NAME", help="forget NAME: their descriptors are deleted")
    people.add_argument("--json", action="store_true", help="one JSON object: name -> number of descriptors")


def _fail(message: str) -> None:
    print(f"edge-face: {message}", file=sys.stderr, flush=True)


def report_unusable(exc: GalleryError | ModelError) -> ExitCode:
    """Name on one line why the gallery or a model cannot be used; the exit code: CONFIG for
    the gallery (the operator's file), MODEL for a model."""
    from edge.recognize.gallery import GalleryError

    _fail(str(exc))
    return ExitCode.CONFIG if isinstance(exc, GalleryError) else ExitCode.MODEL


def enroll_main(args: argparse.Namespace) -> int:
    from edge.detect.detector import FaceDetector
    from edge.detect.sidecar import ModelError
    from edge.models import PACKAGED_MODEL_PATH
    from edge.recognize.describe import FaceDescriber
    from edge.recognize.gallery import GalleryError, check_name, load_gallery, save_gallery
    from edge.sources.imageio import ImageError, load_image

    path = args.gallery or default_gallery_path()
    try:
        check_name(args.name)
        describer = FaceDescriber()
        gallery = load_gallery(path, describer.model_id, describer.dimensions)
        detector = FaceDetector(PACKAGED_MODEL_PATH)
    except (GalleryError, ModelError) as exc:
        return report_unusable(exc)
    descriptors, failures = [], 0
    for image_path in args.images:
        try:
            frame = load_image(image_path)
        except ImageError as exc:
            _fail(str(exc))
            failures += 1
            continue
        height, width = frame.shape[:2]
        boxes = detector.detect(frame).pixel_boxes(width, height)
        if len(boxes) != 1:
            _fail(f"{image_path}: {len(boxes)} faces found, enrolling needs exactly one")
            failures += 1
            continue
        descriptors.append(describer.describe(frame, boxes[0]).descriptor)
    if failures:
        _fail(f"{args.name}: nothing enrolled ({failures} of {len(args.images)} photos unusable)")
        return ExitCode.FAILURE
    try:
        count = gallery.add(args.name, descriptors)  # type: ignore[arg-type]
        save_gallery(path, gallery)
    except GalleryError as exc:
        _fail(str(exc))
        return ExitCode.FAILURE
    print(f"{args.name}: {len(descriptors)} added, {count} in all ({path})")
    return ExitCode.OK


def people_main(args: argparse.Namespace) -> int:
    from edge.detect.sidecar import EMBEDDING_KIND, EmbeddingModelInfo, ModelError, read_recognition_sidecar
    from edge.recognize.gallery import GalleryError, load_gallery, save_gallery
    from edge.recognize.models import EMBEDDING_MODEL_PATH

    path = args.gallery or default_gallery_path()
    try:
        # The descriptor model's sidecar says which gallery fits; the network is not loaded.
        info = read_recognition_sidecar(EMBEDDING_MODEL_PATH, EMBEDDING_KIND)
        assert isinstance(info, EmbeddingModelInfo)
        gallery = load_gallery(path, info.model_id, info.dimensions)
        if args.remove is not None:
            gallery.remove(args.remove)
            save_gallery(path, gallery)
    except (GalleryError, ModelError) as exc:
        return report_unusable(exc)
    counts = {name: len(gallery.people[name]) for name in sorted(gallery.people)}
    if args.json:
        print(json.dumps(counts))
    else:
        for name, count in counts.items():
            print(f"{name}: {count} descriptor{'s' if count != 1 else ''}")
        if not counts:
            print(f"nobody enrolled ({path})")
    return ExitCode.OK
