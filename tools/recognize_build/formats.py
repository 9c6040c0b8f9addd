"""Which weight format the descriptor network ships in: each of
:data:`tools.recognize_build.resnet_graph.WEIGHT_FORMATS` converted and measured in one run
against dlib-bin on ../shared/faces-identity/johns (55 chips; 275 same-person and 1,210
different-person pairs).

    python -m tools.recognize_build.formats [--formats float32,float16,int8-float16,int8-weights,int8]
    python -m tools.recognize_build.formats --per-layer

Per format: the .tflite size, the descriptor distance to dlib's on the same chip (mean, max;
target <= 0.02), verification accuracy and false-accept rate at the shipped threshold
(L2-normalised), and the invoke time per chip (one thread, median of 3 passes). Full int8 is
calibrated on chips cut from the upstream photos (never on the johns it is tested on).

``--per-layer``: which layers int8 weights hurt (how ``int8-float16`` was chosen): each
convolution and the fully connected layer int8 alone, every other layer float16, its descriptor
distance to dlib's on the upstream photos' chips (not the johns), with the layer's weights.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tools.recognize_build.resnet_graph import WEIGHT_FORMATS, convert


def _descriptors(model: bytes, chips: list[np.ndarray]) -> tuple[np.ndarray, float]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model, num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    passes: list[float] = []
    results: list[np.ndarray] = []
    for _ in range(3):
        results = []
        started = time.perf_counter()
        for chip in chips:
            values = chip[None].astype(np.float32)
            if inp["dtype"] == np.int8:
                scale, zero = inp["quantization"]
                values = np.clip(np.round(values / scale + zero), -128, 127).astype(np.int8)
            interpreter.set_tensor(inp["index"], values)
            interpreter.invoke()
            result = interpreter.get_tensor(out["index"])[0].astype(np.float32)
            if out["dtype"] == np.int8:
                scale, zero = out["quantization"]
                result = (result - zero) * scale
            results.append(result)
        passes.append((time.perf_counter() - started) / len(chips) * 1e3)
    return np.array(results), statistics.median(passes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.recognize_build.formats", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--formats", default=",".join(WEIGHT_FORMATS), help="comma-separated (default: all)")
    parser.add_argument("--per-layer", action="store_true", help="int8 weights one layer at a time instead")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import dlib

    from edge.recognize.align import face_chip
    from edge.recognize.embed import FaceEmbedder, normalized
    from edge.recognize.landmarks import ShapePredictor
    from edge.recognize.models import EMBEDDING_MODEL_PATH
    from edge.sources.imageio import load_image
    from tools import weights
    from tools.recognize_build.build import (
        RESNET_FILE,
        SHAPE_PREDICTOR_FILE,
        WHEEL_NAME,
        face_pairs,
        load_photos,
        read_wheel_files,
    )
    from tools.recognize_build.dlib_files import read_resnet, read_shape_predictor
    from tools.shared_data import identity_dir, upstream_dir

    files = read_wheel_files(weights.locate(WHEEL_NAME))
    network = read_resnet(files[RESNET_FILE], RESNET_FILE)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "resnet.dat"
        path.write_bytes(files[RESNET_FILE])
        dlib_network = dlib.face_recognition_model_v1(str(path))
    paths = sorted((identity_dir() / "johns").glob("*/*.jpg"))
    chips = [load_image(p) for p in paths]
    names = np.array([p.parent.name for p in paths])
    reference = np.array([dlib_network.compute_face_descriptor(chip) for chip in chips])
    threshold = FaceEmbedder(EMBEDDING_MODEL_PATH).info.match_threshold

    photos = load_photos(upstream_dir() / "images")
    predictor = ShapePredictor(read_shape_predictor(files[SHAPE_PREDICTOR_FILE], SHAPE_PREDICTOR_FILE))
    calibration = np.array(
        [face_chip(photos[p.photo][1], predictor.predict(photos[p.photo][1], p.dlib_box)) for p in face_pairs(photos)]
    )

    if args.per_layer:
        from tools.recognize_build.resnet_graph import mixed_weights, weighted_ops

        float16 = convert(network, "float16")
        photo_reference = np.array([dlib_network.compute_face_descriptor(chip) for chip in calibration])
        print(f"int8 weights in one layer, float16 elsewhere; vs dlib on {len(calibration)} upstream photo chips")
        print(f"{'layer':>5} {'kernel':>18} {'weights':>8} {'mean':>8} {'max':>8}")
        for layer, (kernel, _) in enumerate(weighted_ops(network)):
            ours, _ = _descriptors(mixed_weights(float16, network, {layer}), list(calibration))
            gaps = np.linalg.norm(ours - photo_reference, axis=1)
            shape = "x".join(str(n) for n in kernel.shape)
            print(f"{layer:>5} {shape:>18} {kernel.size:>8} {gaps.mean():>8.5f} {gaps.max():>8.5f}")
        return 0

    first, second = np.triu_indices(len(chips), 1)
    same = names[first] == names[second]
    print(f"johns: {len(chips)} chips, {same.sum()} same / {(~same).sum()} different pairs; threshold {threshold}")
    print(
        f"{'format':<13} {'bytes':>10} {'vs dlib mean':>13} {'max':>8} {'accuracy':>9} {'false acc':>9} {'ms/chip':>8}"
    )
    for weight_format in args.formats.split(","):
        model = convert(network, weight_format, calibration if weight_format == "int8" else None)
        ours, ms = _descriptors(model, chips)
        gaps = np.linalg.norm(ours - reference, axis=1)
        unit = normalized(ours)
        accepted = np.linalg.norm(unit[first] - unit[second], axis=1) < threshold
        accuracy = (accepted == same).mean()
        false_accepts = (accepted & ~same).sum() / (~same).sum()
        print(
            f"{weight_format:<13} {len(model):>10} {gaps.mean():>13.5f} {gaps.max():>8.5f} "
            f"{accuracy:>9.4f} {false_accepts:>9.4f} {ms:>8.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
