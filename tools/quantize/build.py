"""The build: the six steps in order (see the package docstring), and its CLI."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from edge.common.atomic import write_atomic
from edge.detect import sidecar as edge_sidecar
from tools import weights as weights_store
from tools.quantize.calibration import (
    CalibrationSet,
    default_calibration_dir,
    load_calibration_set,
    with_full_input_range,
)
from tools.quantize.convert import convert_int8
from tools.quantize.float_graph import (
    FLOAT_TOLERANCE,
    REFERENCE_ONNX,
    FloatCheck,
    check_float_model,
    load_float_model,
    reference_outputs,
)
from tools.quantize.parity import PARITY_MATCH_IOU, PARITY_SCORE_THRESHOLD, Parity, int8_outputs, measure_parity
from tools.quantize.variants import MODEL_VARIANTS, BuildError, ModelVariant
from tools.quantize.verify import Int8Layout, inspect_int8_model
from tools.shared_data import BUILD_DIR

DEFAULT_OUT_DIR = BUILD_DIR


@dataclass(frozen=True)
class BuildReport:
    tflite_path: Path
    sidecar_path: Path
    variant: ModelVariant
    layout: Int8Layout
    float_check: FloatCheck
    parity: Parity
    calibration_images: int
    tflite_bytes: int
    seconds: float

    def summary(self) -> str:
        p, f, q = self.parity, self.float_check, self.layout
        return "\n".join(
            [
                f"{self.variant.model_id}: {self.tflite_path} ({self.tflite_bytes / 1024:.0f} KiB), "
                f"sidecar {self.sidecar_path.name}, built in {self.seconds:.1f} s",
                f"  float Keras vs {f.reference} on {f.images} photos: max abs diff logits {f.max_logits_diff:.2e}, "
                f"scores {f.max_scores_diff:.2e}, regressions {f.max_regressions_diff:.2e} (limit {FLOAT_TOLERANCE:g})",
                f"  int8: input scale {edge_sidecar.INPUT_QUANT.scale:g} zero point {edge_sidecar.INPUT_QUANT.zero_point}, "
                f"ops {', '.join(q.op_types)}; calibrated on {self.calibration_images} photos",
                f"  int8 vs float on {p.images} photos: logits max {p.logits_max_abs_diff:.4f} mean "
                f"{p.logits_mean_abs_diff:.4f}; regressions max {p.regressions_max_abs_diff:.4f} mean "
                f"{p.regressions_mean_abs_diff:.4f} (on {p.face_anchors} face anchors: max "
                f"{p.face_anchor_regressions_max_abs_diff:.4f} mean {p.face_anchor_regressions_mean_abs_diff:.4f})",
                f"  faces at score > {PARITY_SCORE_THRESHOLD}: float {p.faces_float}, int8 {p.faces_int8}, "
                f"matched {p.faces_matched} (IoU >= {PARITY_MATCH_IOU}, mean IoU {p.mean_matched_iou:.3f}), "
                f"agreement {p.face_agreement:.3f}",
            ]
        )


def sidecar_document(
    variant: ModelVariant,
    layout: Int8Layout,
    weights_path: Path,
    calibration: CalibrationSet,
    parity: Parity,
    tflite_model: bytes,
) -> dict:
    """The sidecar (:mod:`edge.detect.sidecar`) describing the built model and how it was built."""
    import tensorflow as tf

    return edge_sidecar.sidecar_document(
        model_id=variant.model_id,
        model_file=f"{variant.file_stem}.tflite",
        prior_config=variant.prior_config,
        logits=layout.logits,
        regressions=layout.regressions,
        provenance={
            "source": {"file": weights_path.name, "sha256": weights_store.sha256_file(weights_path)},
            "calibration": {
                "folder": calibration.folder_name,
                "images": len(calibration.files),
                "sha256": calibration.sha256,
            },
            "parity": parity.to_dict(),
            "converter": {"tensorflow": tf.__version__, "ops": list(layout.op_types)},
        },
        tflite_sha256=hashlib.sha256(tflite_model).hexdigest(),
    )


def _default_path(name: str, explicit: Path | None) -> Path:
    if explicit is not None:
        if not explicit.is_file():
            raise BuildError(f"{explicit}: no such file")
        return explicit
    try:
        return weights_store.locate(name)
    except weights_store.WeightsError as error:
        raise BuildError(str(error)) from None


def build(
    model_name: str = "slim-320",
    weights: Path | None = None,
    calibration_dir: Path | None = None,
    out_dir: Path | None = None,
    check_onnx: Path | None = None,
    calibration_limit: int | None = None,
) -> BuildReport:
    """Build, verify and write one int8 model; see the module docstring for the steps.

    Defaults: weights and the reference ONNX from ``tools.weights`` (local upstream copy or
    pinned download), calibration photos from ``<upstream>/images`` (else the pinned samples),
    output ``models/build``.
    Raises BuildError (one line) for bad input or a failed check; nothing is written then.
    """
    started = time.perf_counter()
    if model_name not in MODEL_VARIANTS:
        raise BuildError(f"unknown model {model_name!r}, expected one of {', '.join(MODEL_VARIANTS)}")
    variant = MODEL_VARIANTS[model_name]
    weights_path = _default_path(variant.weights_file, Path(weights) if weights else None)
    onnx_path = _default_path(REFERENCE_ONNX, Path(check_onnx) if check_onnx else None)
    calibration_dir = Path(calibration_dir) if calibration_dir else default_calibration_dir()
    out_dir = Path(out_dir) if out_dir else DEFAULT_OUT_DIR
    if calibration_limit is not None and calibration_limit < 1:
        raise BuildError(f"calibration limit must be at least 1, got {calibration_limit}")

    calibration = load_calibration_set(calibration_dir, variant.input_width, variant.input_height, calibration_limit)
    state_dict, model = load_float_model(weights_path, variant)

    reference, reference_scores, description = reference_outputs(onnx_path, state_dict, variant, calibration.images)
    float_check = check_float_model(model, reference, reference_scores, calibration.images, description)

    tflite_model = convert_int8(model, with_full_input_range(calibration.images))
    layout = inspect_int8_model(tflite_model, variant)
    int8_logits, int8_regressions = int8_outputs(tflite_model, layout, calibration.images)
    parity = measure_parity(reference, int8_logits, int8_regressions, layout, variant.prior_config)

    sidecar = sidecar_document(variant, layout, weights_path, calibration, parity, tflite_model)
    tflite_path = out_dir / f"{variant.file_stem}.tflite"
    sidecar_path = out_dir / f"{variant.file_stem}.json"
    # Model first: a sidecar on disk always describes the model next to it.
    write_atomic(tflite_path, tflite_model, make_parents=True)
    write_atomic(sidecar_path, edge_sidecar.encode(sidecar), make_parents=True)
    return BuildReport(
        tflite_path=tflite_path,
        sidecar_path=sidecar_path,
        variant=variant,
        layout=layout,
        float_check=float_check,
        parity=parity,
        calibration_images=len(calibration.files),
        tflite_bytes=len(tflite_model),
        seconds=time.perf_counter() - started,
    )


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.quantize",
        description="Build the full-integer int8 TFLite face detector and its sidecar JSON.",
    )
    parser.add_argument("--model", choices=sorted(MODEL_VARIANTS), default="slim-320")
    parser.add_argument("--weights", type=Path, help="PyTorch .pth state dict (default: pinned upstream file)")
    parser.add_argument("--calibration", type=Path, help="folder of calibration photos (default: <upstream>/images)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="output folder (default: %(default)s)")
    parser.add_argument("--check-onnx", type=Path, help=f"reference ONNX graph (default: pinned {REFERENCE_ONNX})")
    parser.add_argument("--calibration-limit", type=int, help="use only the first N photos (sorted by name)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    # TensorFlow's C++ start-up chatter is noise for a CLI user; must be set before import.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        report = build(args.model, args.weights, args.calibration, args.out, args.check_onnx, args.calibration_limit)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0
