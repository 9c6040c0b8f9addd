"""The model file format (edge.detect.sidecar): every field checked on load with a one-line error
naming the file and the field, and an edited sidecar refused."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.detect.detector import FaceDetector
from edge.detect.model import Int8Model
from edge.detect.priors import PriorConfig
from edge.detect.sidecar import (
    SIDECAR_FORMAT,
    ModelError,
    OutputHead,
    canonical_digest,
    encode,
    parse_sidecar,
    read_sidecar,
    sidecar_document,
)
from edge.sources.imageio import load_image

pytestmark = pytest.mark.integration

WHERE = "model sidecar 'x.json'"


@pytest.fixture(scope="module")
def built(int8_model_path) -> dict:
    """The sidecar the quantizer wrote for the real model."""
    return json.loads(int8_model_path.with_suffix(".json").read_text())


def _sealed(document: dict) -> dict:
    """``document`` with a digest that matches it: what a buggy writer (not a hand edit) makes."""
    document = copy.deepcopy(document)
    document["sidecar_sha256"] = canonical_digest(document)
    return document


def _refused(document, match: str) -> str:
    with pytest.raises(ModelError, match=match) as caught:
        parse_sidecar(document, WHERE)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(WHERE)
    return message


def _copy_model(src: Path, folder: Path) -> Path:
    dst = folder / src.name
    shutil.copy(src, dst)
    shutil.copy(src.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def test_the_built_sidecar_parses_to_what_the_quantizer_meant(built):
    info = parse_sidecar(built, WHERE)
    assert built["format"] == SIDECAR_FORMAT
    assert info.prior_config == PriorConfig(320, 240)
    assert (info.input_width, info.input_height, info.channel_order) == (320, 240, "RGB")
    assert info.logits_quant.scale == built["outputs"]["logits"]["scale"]
    assert info.regressions_quant.zero_point == built["outputs"]["regressions"]["zero_point"]


def test_writer_and_reader_round_trip(built):
    heads = {
        key: OutputHead(tuple(built["outputs"][key]["shape"]), parse_sidecar(built, WHERE).logits_quant, 7, key)
        for key in ("logits", "regressions")
    }
    document = sidecar_document(
        model_id="m",
        model_file="m.tflite",
        prior_config=PriorConfig(320, 240),
        logits=heads["logits"],
        regressions=heads["regressions"],
        provenance={key: built[key] for key in ("source", "calibration", "parity", "converter")},
        tflite_sha256="0" * 64,
    )
    reread = parse_sidecar(json.loads(encode(document)), WHERE)
    assert reread.model_id == "m" and reread.tflite_sha256 == "0" * 64
    assert encode(document) == encode(json.loads(encode(document))), "encoding is stable"


@pytest.mark.parametrize("document, kind", [(None, "null"), ([1, 2], "a list"), ("edge", "a string"), (3, "a number")])
def test_a_sidecar_that_is_not_an_object(document, kind):
    _refused(document, f"the document must be a JSON object, got {kind}")


@pytest.mark.parametrize(
    "key", ["format", "model_id", "input", "outputs", "priors", "source", "calibration", "tflite_sha256"]
)
def test_every_missing_top_level_key_is_named(built, key):
    document = copy.deepcopy(built)
    del document[key]
    if key == "format":
        _refused(document, "format is missing")
    else:
        _refused(_sealed(document), f"{key} is missing")


@pytest.mark.parametrize(
    "path, value, match",
    [
        (("priors", "strides", 2), 0, r"priors\.strides\[2\] must be >= 1, got 0"),
        (("priors", "strides", 0), -8, r"priors\.strides\[0\] must be >= 1, got -8"),
        (("priors", "strides", 1), 16.5, r"priors\.strides\[1\] must be an integer, got 16.5"),
        (("priors", "strides"), [], r"priors\.strides must be a non-empty list"),
        (("priors", "min_boxes", 1, 0), 0, r"priors\.min_boxes\[1\]\.level\[0\] must be >= 1"),
        (("priors", "min_boxes"), [[10]], r"priors\.min_boxes must be a list of 4 lists"),
        (("priors", "center_variance"), 0, r"priors\.center_variance must be a finite number > 0, got 0"),
        (("priors", "size_variance"), -0.2, r"priors\.size_variance must be a finite number > 0"),
        (("priors", "size_variance"), "0.2", r"priors\.size_variance must be a finite number > 0, got \"0.2\""),
        (("priors", "input_width"), 640, r"priors\.input_width is 640, but the input is 320x240"),
        (("input", "channel_order"), "GRB", r"input\.channel_order is 'GRB', expected one of RGB, BGR"),
        (("input", "width"), True, r"input\.width must be an integer, got true"),
        (("input", "width"), 0, r"input\.width must be >= 1, got 0"),
        (("input", "scale"), 0.5, r"input\.scale and zero_point are .* expected .*pixel XOR 0x80"),
        (("input", "channels"), 4, r"input\.channels is 4, expected 3"),
        (("outputs", "logits", "scale"), 0.0, r"outputs\.logits\.scale must be a finite number > 0, got 0.0"),
        (("outputs", "logits", "scale"), None, r"outputs\.logits\.scale must be a finite number > 0, got null"),
        (("outputs", "regressions", "zero_point"), 300, r"outputs\.regressions\.zero_point must be in \[-128, 127\]"),
        (("outputs", "logits", "shape"), [1, 4421, 2], r"logits\.shape is \[1, 4421, 2\], expected \[1, 4420, 2\]"),
        (("outputs", "regressions"), [1, 2], r"outputs\.regressions must be a JSON object, got a list"),
        (("outputs", "logits"), None, r"outputs\.logits must be a JSON object, got null"),
        (("tflite_sha256",), "abc", r"tflite_sha256 must be 64 lowercase hex digits"),
        (("model_id",), "", r"model_id must be a non-empty string"),
    ],
)
def test_every_field_is_checked_with_one_line_naming_it(built, path, value, match):
    document = copy.deepcopy(built)
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    _refused(_sealed(document), match)


def test_priors_whose_count_disagrees_with_the_outputs(built):
    document = copy.deepcopy(built)
    document["priors"]["min_boxes"][0] = [10, 16]  # 3 -> 2 boxes per cell on the first level
    _refused(_sealed(document), r"outputs\.logits\.shape is \[1, 4420, 2\], expected \[1, 3220, 2\] for 3220 priors")


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["priors"].update(center_variance=0.11),
        lambda d: d["priors"]["min_boxes"][0].__setitem__(0, 12),
        lambda d: d["outputs"]["regressions"].update(scale=d["outputs"]["regressions"]["scale"] * 1.01),
        lambda d: d["parity"].update(faces_matched=999),
        lambda d: d.update(tflite_sha256="f" * 64),
    ],
)
def test_an_edited_sidecar_is_refused(built, edit):
    document = copy.deepcopy(built)
    edit(document)
    _refused(document, "sidecar_sha256 does not match the sidecar's content: it was edited after the build")


def test_the_previous_format_asks_for_a_rebuild(built):
    document = copy.deepcopy(built)
    document["format"] = "edge-face-model/1"
    del document["sidecar_sha256"]
    _refused(document, r"format is \"edge-face-model/1\", expected 'edge-face-model/2' \(rebuild")


def test_reindenting_is_not_an_edit(int8_model_path, tmp_path):
    model = _copy_model(int8_model_path, tmp_path)
    sidecar = model.with_suffix(".json")
    sidecar.write_text(json.dumps(json.loads(sidecar.read_text()), indent=7, sort_keys=True))
    assert read_sidecar(model).prior_config == PriorConfig(320, 240)


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "unreadable JSON"),
        ('{"format": NaN}', "unreadable JSON .*NaN is not valid JSON"),
        ('{"format": "a", "format": "b"}', "unreadable JSON .*key 'format' appears twice"),
        ("null", "the document must be a JSON object, got null"),
        ("[1, 2]", "the document must be a JSON object, got a list"),
    ],
)
def test_bad_sidecar_files_fail_the_model_load_with_one_line(int8_model_path, tmp_path, text, match):
    model = _copy_model(int8_model_path, tmp_path)
    model.with_suffix(".json").write_text(text)
    with pytest.raises(ModelError, match=match) as caught:
        Int8Model(model)
    assert "\n" not in str(caught.value) and str(model.with_suffix(".json")) in str(caught.value)


def test_a_hand_edited_variance_never_reaches_a_frame(int8_model_path, tmp_path):
    model = _copy_model(int8_model_path, tmp_path)
    sidecar = json.loads(model.with_suffix(".json").read_text())
    sidecar["priors"]["center_variance"] = 0.12
    model.with_suffix(".json").write_text(json.dumps(sidecar, indent=2))
    with pytest.raises(ModelError, match=r"model sidecar '.*\.json': sidecar_sha256 does not match"):
        FaceDetector(model)


def test_a_huge_file_is_not_read_as_a_sidecar(int8_model_path, tmp_path):
    model = _copy_model(int8_model_path, tmp_path)
    model.with_suffix(".json").write_bytes(b" " * (2 << 20))
    with pytest.raises(ModelError, match="larger than 1048576 bytes"):
        Int8Model(model)


def test_a_bgr_model_is_fed_bgr(int8_model_path, photo_paths, tmp_path):
    """channel_order is honoured: the same weights declared BGR see an RGB frame flipped, so
    an RGB frame on the BGR model finds what the flipped frame finds on the RGB model."""
    model = _copy_model(int8_model_path, tmp_path)
    sidecar = json.loads(model.with_suffix(".json").read_text())
    sidecar["input"]["channel_order"] = "BGR"
    model.with_suffix(".json").write_text(json.dumps(_sealed(sidecar)))
    rgb_model, bgr_model = FaceDetector(int8_model_path), FaceDetector(model)
    frame = load_image(photo_paths[3])
    flipped = np.ascontiguousarray(frame[:, :, ::-1])
    expected = rgb_model.detect(flipped)
    assert len(expected) > 0
    for found in (bgr_model.detect(frame), bgr_model.detect(flipped, color_order="BGR")):
        np.testing.assert_array_equal(found.boxes, expected.boxes)
    np.testing.assert_array_equal(bgr_model.detect(flipped).boxes, rgb_model.detect(frame).boxes)
