"""The offline model build: float Keras graph vs upstream ONNX, the int8 contract, the sidecar,
face-level parity, determinism, and failing loudly without leaving files behind."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from edge.detect.decode import Int8Postprocessor, PostprocessOptions, face_scores, select_faces
from edge.detect.preprocess import normalize_nchw, resize_bilinear
from edge.detect.priors import PriorConfig
from edge.detect.sidecar import SIDECAR_FORMAT, canonical_digest, read_sidecar
from edge.sources.imageio import load_image
from tools import quantize
from tools.metrics import match_boxes
from tools.weights import load_manifest, sha256_file

pytestmark = pytest.mark.slow


def _photos(photo_paths: list[Path], count: int, width: int = 320, height: int = 240) -> list[np.ndarray]:
    return [resize_bilinear(load_image(path), width, height) for path in photo_paths[:count]]


def _onnx_session(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _interpreter(model_path: Path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path), num_threads=1)
    interpreter.allocate_tensors()
    return interpreter


def _outputs_by_width(interpreter) -> dict[int, dict]:
    return {int(d["shape"][-1]): d for d in interpreter.get_output_details()}


def _run_int8(interpreter, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    (input_details,) = interpreter.get_input_details()
    interpreter.set_tensor(input_details["index"], (rgb ^ np.uint8(0x80)).view(np.int8)[None])
    interpreter.invoke()
    outputs = _outputs_by_width(interpreter)
    return interpreter.get_tensor(outputs[2]["index"])[0], interpreter.get_tensor(outputs[4]["index"])[0]


# --- pure parts ---------------------------------------------------------------------------


def test_folded_batchnorm_equals_conv_then_batchnorm():
    from tools.slim_keras import fold_batchnorm

    rng = np.random.default_rng(0)
    weight = rng.normal(size=(8, 5, 1, 1)).astype(np.float32)
    gamma, beta, mean = (rng.normal(size=8).astype(np.float32) for _ in range(3))
    var = rng.uniform(0.01, 2.0, size=8).astype(np.float32)
    x = rng.normal(size=(100, 5)).astype(np.float64)
    conv_then_bn = (x @ weight[:, :, 0, 0].T.astype(np.float64) - mean) / np.sqrt(var + 1e-5) * gamma + beta
    folded_weight, folded_bias = fold_batchnorm(weight, gamma, beta, mean, var)
    folded = x @ folded_weight[:, :, 0, 0].T.astype(np.float64) + folded_bias
    np.testing.assert_allclose(folded, conv_then_bn, rtol=1e-5, atol=1e-5)


def test_calibration_range_is_pinned_to_full_pixel_range():
    dim = np.full((2, 4, 4, 3), 100, np.uint8)
    pinned = quantize.with_full_input_range(dim)
    assert pinned.min() == 0 and pinned.max() == 255
    assert (dim == 100).all(), "the photos themselves are not modified"
    assert np.count_nonzero(pinned != dim) == 6  # two pixels x three channels
    full = dim.copy()
    full[1, 2, 2] = (0, 255, 9)
    np.testing.assert_array_equal(quantize.with_full_input_range(full), full)


# --- float graph --------------------------------------------------------------------------


def test_float_keras_graph_matches_upstream_onnx(upstream_dir, photo_paths):
    from tools.pth_reader import read_state_dict
    from tools.slim_keras import build_slim_model

    model = build_slim_model(read_state_dict(upstream_dir / "models" / "version-slim-320.pth"), 320, 240)
    session = _onnx_session(upstream_dir / "models" / quantize.REFERENCE_ONNX)
    for rgb in _photos(photo_paths, 4):
        logits, regressions = (np.asarray(t)[0] for t in model(((rgb.astype(np.float32) - 127) / 128)[None]))
        scores, boxes = session.run(["scores", "boxes"], {"input": normalize_nchw(rgb)})
        assert logits.shape == (PriorConfig().num_priors, 2) and regressions.shape == (PriorConfig().num_priors, 4)
        assert np.abs(face_scores(logits) - scores[0][:, 1]).max() <= quantize.FLOAT_TOLERANCE
        assert np.abs(regressions - boxes[0]).max() <= quantize.FLOAT_TOLERANCE


def test_float_self_check_fails_on_wrong_weights_and_writes_nothing(tmp_path, upstream_dir):
    # 640 weights in the 320 graph: valid shapes, wrong numbers; the ONNX check must catch it.
    with pytest.raises(quantize.BuildError, match="float graph differs from onnxruntime"):
        quantize.build(
            "slim-320",
            weights=upstream_dir / "models" / "version-slim-640.pth",
            calibration_dir=upstream_dir / "images",
            out_dir=tmp_path / "out",
            calibration_limit=1,
        )
    assert not (tmp_path / "out").exists()


# --- the int8 model -----------------------------------------------------------------------


def test_int8_model_contract(int8_model_path):
    from ai_edge_litert import schema_py_generated as schema

    interpreter = _interpreter(int8_model_path)
    (input_details,) = interpreter.get_input_details()
    assert input_details["dtype"] == np.int8
    assert tuple(input_details["shape"]) == (1, 240, 320, 3)
    assert input_details["quantization"] == (1.0 / 128.0, -1)
    outputs = _outputs_by_width(interpreter)
    assert tuple(outputs[2]["shape"]) == (1, 4420, 2) and tuple(outputs[4]["shape"]) == (1, 4420, 4)
    assert all(d["dtype"] == np.int8 for d in outputs.values())
    assert {np.dtype(d["dtype"]) for d in interpreter.get_tensor_details()} <= {np.dtype(np.int8), np.dtype(np.int32)}

    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(int8_model_path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    seen, per_channel_weights = set(), 0
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = op_names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        seen.add(name)
        for j in range(op.OutputsLength()):
            assert graph.Tensors(op.Outputs(j)).Type() == schema.TensorType.INT8, name
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            weights = graph.Tensors(op.Inputs(1))
            assert weights.Type() == schema.TensorType.INT8
            out_channels = weights.Shape(0) if name == "CONV_2D" else weights.Shape(3)
            if out_channels > 1:
                assert weights.Quantization().ScaleLength() == out_channels, "weights must be per-channel"
                per_channel_weights += 1
    assert not seen & {"QUANTIZE", "DEQUANTIZE", "SOFTMAX", "LOGISTIC"}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D"} <= seen
    assert per_channel_weights > 20


def test_sidecar_matches_the_interpreter(int8_model_path, upstream_dir):
    sidecar = json.loads(int8_model_path.with_suffix(".json").read_text())
    interpreter = _interpreter(int8_model_path)
    (input_details,) = interpreter.get_input_details()
    assert sidecar["format"] == SIDECAR_FORMAT == "edge-face-model/2"
    assert sidecar["model_id"] == "ulfd-slim-320-int8"
    assert sidecar["input"] == {
        "width": 320,
        "height": 240,
        "channels": 3,
        "channel_order": "RGB",
        "layout": "NHWC",
        "dtype": "int8",
        "scale": input_details["quantization"][0],
        "zero_point": input_details["quantization"][1],
    }
    outputs = _outputs_by_width(interpreter)
    for key, width in (("logits", 2), ("regressions", 4)):
        described, actual = sidecar["outputs"][key], outputs[width]
        assert described["shape"] == [int(d) for d in actual["shape"]]
        assert (described["scale"], described["zero_point"]) == actual["quantization"]
        assert described["index"] == actual["index"]
    assert read_sidecar(int8_model_path).prior_config == PriorConfig(320, 240)
    assert sidecar["tflite_sha256"] == hashlib.sha256(int8_model_path.read_bytes()).hexdigest()
    assert sidecar["sidecar_sha256"] == canonical_digest(sidecar)
    assert read_sidecar(int8_model_path).sidecar == sidecar, "the loader accepts what the quantizer writes"
    assert sidecar["source"] == {
        "file": "version-slim-320.pth",
        "sha256": load_manifest()["version-slim-320.pth"].sha256,
    }
    calibration = sidecar["calibration"]
    assert "/" not in calibration["folder"] and calibration["images"] >= 1 and len(calibration["sha256"]) == 64
    parity = sidecar["parity"]
    assert parity["images"] == calibration["images"]
    assert parity["faces_matched"] <= min(parity["faces_float"], parity["faces_int8"])


def test_int8_faces_agree_with_upstream_float_graph(int8_model_path, upstream_dir, photo_paths):
    """Faces from the int8 model (device pipeline: XOR input, Int8Postprocessor) vs faces from
    upstream's own ONNX graph with in-graph box decoding."""
    info = read_sidecar(int8_model_path)
    postprocess = Int8Postprocessor(info.prior_config, info.logits_quant, info.regressions_quant, PostprocessOptions())
    session = _onnx_session(upstream_dir / "models" / "version-slim-320.onnx")
    interpreter = _interpreter(int8_model_path)
    faces_float = faces_int8 = matched = 0
    for rgb in _photos(photo_paths, 6):
        scores, boxes = session.run(["scores", "boxes"], {"input": normalize_nchw(rgb)})
        reference = select_faces(boxes[0], scores[0][:, 1], PostprocessOptions())
        found = postprocess(*_run_int8(interpreter, rgb))
        faces_float, faces_int8 = faces_float + len(reference), faces_int8 + len(found)
        matched += len(match_boxes(reference.boxes, found.boxes, min_iou=0.5))
    assert faces_float >= 20, "the photos have faces: the float reference must find them"
    assert 2 * matched / (faces_float + faces_int8) >= 0.9


# --- whole builds -------------------------------------------------------------------------


def test_build_is_deterministic(tmp_path, upstream_dir):
    built = []
    for run in ("a", "b"):
        path = quantize.build(
            model_name="slim-320",
            weights=upstream_dir / "models" / "version-slim-320.pth",
            calibration_dir=upstream_dir / "images",
            out_dir=tmp_path / run,
            calibration_limit=2,
        ).tflite_path
        assert sorted(p.name for p in path.parent.iterdir()) == [
            "version-slim-320-int8.json",
            "version-slim-320-int8.tflite",
        ], "no temp files left behind"
        built.append((path.read_bytes(), path.with_suffix(".json").read_bytes()))
    assert built[0][0] == built[1][0], "tflite bytes differ between identical builds"
    assert built[0][1] == built[1][1], "sidecar bytes differ between identical builds"
    sidecar = json.loads(built[0][1])
    assert sidecar["calibration"]["images"] == 2
    assert sidecar["tflite_sha256"] == hashlib.sha256(built[0][0]).hexdigest()


def test_slim_640_build(tmp_path, upstream_dir, photo_paths):
    path = quantize.build(
        model_name="slim-640",
        calibration_dir=upstream_dir / "images",
        out_dir=tmp_path,
        calibration_limit=2,
    ).tflite_path
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["source"]["sha256"] == sha256_file(upstream_dir / "models" / "version-slim-640.pth")
    assert read_sidecar(path).num_priors == 17640
    interpreter = _interpreter(path)
    (input_details,) = interpreter.get_input_details()
    assert tuple(input_details["shape"]) == (1, 480, 640, 3)
    assert input_details["quantization"] == (1.0 / 128.0, -1)
    logits, regressions = _run_int8(interpreter, _photos(photo_paths, 1, 640, 480)[0])
    assert logits.shape == (17640, 2) and regressions.shape == (17640, 4)
    assert logits.dtype == np.int8 and regressions.dtype == np.int8


def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    assert quantize.main(["--calibration", str(tmp_path / "empty"), "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert (
        error.count("\n") == 1
        and "calibration photos:" in error
        and "no images" in error
        and str(tmp_path / "empty") in error
    )
    assert not out.exists()
