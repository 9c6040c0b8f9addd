"""MediaPipe's BlazeFace face detectors as baselines: the model files, pinned, and the whole
frame each needs (pre-process, invoke, decode + weighted NMS) in plain numpy.

The models are not shipped and not a dependency: they come out of the mediapipe wheel
(Apache-2.0), fetched with pip by pinned version, file name and sha256, and each model file is
checked against its own sha256 before it is used. mediapipe itself is not installed (it pins
numpy<2 and an old protobuf); the numpy here reproduces what its graphs do around the model
(mediapipe/modules/face_detection/face_detection.pbtxt and the short-range / full-range
options), so the ARM cost tool can count a whole BlazeFace frame with the same interpreter
as edge-face's.

    python -m tools.blazeface [--dest DIR]     # fetch and check, print the model paths

Pure numpy below the fetch; the guest of tools.arm_cost imports it under emulation.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.common.atomic import write_atomic

MEDIAPIPE_VERSION = "0.10.18"
# One wheel of that release, named exactly: the model files are the same in every wheel.
MEDIAPIPE_WHEEL = "mediapipe-0.10.18-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
MEDIAPIPE_WHEEL_SHA256 = "12db0f7b1cc18e2e3f604f6e95020b82c214c470d7d94ff32eeb8f8729a45ec3"
MEDIAPIPE_WHEEL_PLATFORM = ("--platform", "manylinux_2_17_x86_64", "--python-version", "3.11")
DEFAULT_DEST = Path(__file__).resolve().parent.parent / "models" / "cache" / "blazeface"


class BlazeFaceError(Exception):
    """The models could not be fetched or failed their check; one line."""


@dataclass(frozen=True)
class BlazeFaceModel:
    """One BlazeFace model and the options of MediaPipe's graph around it.

    Anchors (SsdAnchorsCalculator): ``strides`` per layer, layers of equal stride share a
    feature map; each layer puts one anchor per cell, plus one more when
    ``interpolated_anchors``; fixed anchor size (w = h = 1). Decode (TensorsToDetections):
    boxes are (x, y, w, h) offsets over ``input_size``, scores a sigmoid of logits clipped to
    +-100, kept above ``min_score``; then weighted NMS at IoU ``nms_iou``.
    """

    name: str
    member: str  # path inside the wheel
    sha256: str
    input_size: int
    strides: tuple[int, ...]
    interpolated_anchors: bool
    min_score: float
    nms_iou: float = 0.3

    @property
    def file_name(self) -> str:
        return self.member.rsplit("/", 1)[-1]


SHORT_RANGE = BlazeFaceModel(
    name="BlazeFace short-range",
    member="mediapipe/modules/face_detection/face_detection_short_range.tflite",
    sha256="bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    input_size=128,
    strides=(8, 16, 16, 16),
    interpolated_anchors=True,
    min_score=0.5,
)
FULL_RANGE = BlazeFaceModel(
    name="BlazeFace full-range sparse",
    member="mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
    sha256="2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
    input_size=192,
    strides=(4,),
    interpolated_anchors=False,
    min_score=0.6,
)
MODELS = (SHORT_RANGE, FULL_RANGE)


# ---- fetch (host side) -----------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_models(dest: Path = DEFAULT_DEST) -> dict[str, Path]:
    """Model name -> path of its checked ``.tflite`` in ``dest``; downloads the pinned wheel
    with pip only when a file is missing or does not match its sha256."""
    wanted = {model.name: dest / model.file_name for model in MODELS}
    if all(
        path.is_file() and _sha256(path.read_bytes()) == model.sha256
        for model, path in zip(MODELS, wanted.values(), strict=True)
    ):
        return wanted
    wheel = dest / MEDIAPIPE_WHEEL
    if not (wheel.is_file() and _sha256(wheel.read_bytes()) == MEDIAPIPE_WHEEL_SHA256):
        dest.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
            *MEDIAPIPE_WHEEL_PLATFORM, "--dest", str(dest), f"mediapipe=={MEDIAPIPE_VERSION}",
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0 or not wheel.is_file():
            raise BlazeFaceError(
                f"pip download mediapipe=={MEDIAPIPE_VERSION} into '{dest}' failed: {done.stderr.strip()[-300:]}"
            )
        if _sha256(wheel.read_bytes()) != MEDIAPIPE_WHEEL_SHA256:
            wheel.unlink()
            raise BlazeFaceError(f"'{wheel}': sha256 differs from the pinned {MEDIAPIPE_WHEEL_SHA256}; removed")
    with zipfile.ZipFile(wheel) as archive:
        for model, path in zip(MODELS, wanted.values(), strict=True):
            data = archive.read(model.member)
            if _sha256(data) != model.sha256:
                raise BlazeFaceError(f"'{wheel}': {model.member} has sha256 {_sha256(data)}, pinned {model.sha256}")
            write_atomic(path, data)
    wheel.unlink()  # 36 MB for two files of 0.9 MB together
    return wanted


# ---- the frame around the model (pure numpy) -------------------------------------------------


def anchors(model: BlazeFaceModel) -> np.ndarray:
    """(N, 2) float32 anchor centres [x, y], normalized, in the model's output order: per
    group of layers with the same stride, cells row-major, that group's anchors innermost."""
    centres = []
    layer = 0
    while layer < len(model.strides):
        stride = model.strides[layer]
        group = 0
        while layer < len(model.strides) and model.strides[layer] == stride:
            group += 2 if model.interpolated_anchors else 1
            layer += 1
        cells = -(-model.input_size // stride)
        y, x = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        grid = np.stack([x, y], axis=-1).reshape(-1, 1, 2)
        centres.append(np.broadcast_to(grid, (grid.shape[0], group, 2)).reshape(-1, 2))
    return np.concatenate(centres).astype(np.float32)


def letterbox_rows(model: BlazeFaceModel, frame_width: int, frame_height: int) -> tuple[int, int]:
    """(top padding rows, image rows) of a frame ``frame_width`` wide scaled into the square input."""
    rows = round(frame_height * model.input_size / frame_width)
    return (model.input_size - rows) // 2, rows


def preprocess(model: BlazeFaceModel, frame: np.ndarray, tensor: np.ndarray) -> None:
    """(rows, S, 3) uint8 RGB ``frame``, already at the model's width (a camera scales for
    free, as for edge-face) -> ``tensor`` (1, S, S, 3) float32 in [-1, 1], letterboxed with
    black rows, as MediaPipe's ImageToTensor with keep_aspect_ratio."""
    top, rows = letterbox_rows(model, frame.shape[1], frame.shape[0])
    tensor[0, :top] = -1.0
    tensor[0, top + rows :] = -1.0
    np.multiply(frame, np.float32(2.0 / 255.0), out=tensor[0, top : top + rows])
    tensor[0, top : top + rows] -= 1.0


@dataclass(frozen=True)
class Faces:
    """``boxes`` (K, 4) float32 [x1, y1, x2, y2] normalized to the frame, ``scores`` (K,), best first."""

    boxes: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def decode(
    model: BlazeFaceModel,
    centres: np.ndarray,
    regressors: np.ndarray,
    classificators: np.ndarray,
    frame_width: int,
    frame_height: int,
) -> Faces:
    """Raw outputs ``regressors`` (1, N, 16) and ``classificators`` (1, N, 1) float32 -> faces:
    sigmoid scores over ``min_score``, boxes decoded on candidates only, weighted NMS (each kept
    face is the score-weighted mean of the boxes it suppresses), letterbox removed."""
    logits = classificators.reshape(-1)
    threshold = np.log(model.min_score / (1.0 - model.min_score))  # sigmoid(x) > s  <=>  x > logit(s)
    keep = np.flatnonzero(logits > threshold)
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits[keep], -100.0, 100.0)))
    raw = regressors[0, keep, :4] / np.float32(model.input_size)
    centre = centres[keep] + raw[:, :2]
    half = raw[:, 2:] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    order = np.argsort(-scores, kind="stable")
    boxes, scores = boxes[order], scores[order]
    kept_boxes, kept_scores = [], []
    remaining = np.arange(len(scores))
    while remaining.size:
        top, rest = boxes[remaining[0]], boxes[remaining]
        width = np.clip(np.minimum(top[2], rest[:, 2]) - np.maximum(top[0], rest[:, 0]), 0, None)
        height = np.clip(np.minimum(top[3], rest[:, 3]) - np.maximum(top[1], rest[:, 1]), 0, None)
        inter = width * height
        areas = (rest[:, 2] - rest[:, 0]) * (rest[:, 3] - rest[:, 1])
        union = (top[2] - top[0]) * (top[3] - top[1]) + areas - inter
        overlapping = inter > model.nms_iou * union  # IoU > threshold, without a division by zero
        members = remaining[overlapping]
        weights = scores[members]
        kept_boxes.append((boxes[members] * weights[:, None]).sum(axis=0) / weights.sum())
        kept_scores.append(scores[remaining[0]])
        remaining = remaining[~overlapping]
    if not kept_boxes:
        return Faces(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    out = np.asarray(kept_boxes, dtype=np.float32)
    top_rows, rows = letterbox_rows(model, frame_width, frame_height)
    out[:, [1, 3]] = (out[:, [1, 3]] * model.input_size - top_rows) / rows
    return Faces(out, np.asarray(kept_scores, dtype=np.float32))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.blazeface", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="cache folder (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        paths = fetch_models(args.dest)
    except BlazeFaceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
