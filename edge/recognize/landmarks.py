"""Five face landmarks (eye corners and the bottom of the nose) from a face box, in pure numpy.

The model is dlib's 5-point shape predictor (``shape_predictor_5_face_landmarks.dat``, CC0):
a cascade of 15 stages of 500 regression trees of depth 4 (Kazemi and Sullivan's ensemble of
regression trees). ``tools.recognize_build`` turns dlib's file into the arrays of
:class:`ShapeModel` (``shape-predictor-5.npz`` beside this package's sidecar); the arithmetic
below follows dlib's ``shape_predictor::operator()`` step for step (float32 where dlib uses
float, float64 where it uses double, its rounding of pixel positions), so the landmarks are
dlib's within rounding. What is vectorized: each stage reads its 800 feature pixels in one
gather and runs its 500 trees side by side, one tree level per step.

Boxes are dlib rectangles: ``(left, top, right, bottom)`` in pixels, right and bottom
inclusive (a 100 px wide box is ``(0, 0, 99, 99)``). :class:`BoxMapping` turns a detector's
box into that convention.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.detect.sidecar import LANDMARKS_KIND, BoxMapping, LandmarkModelInfo, ModelError, read_recognition_sidecar
from edge.recognize.align import similarity_transform

# dlib's order of the 5 points, as seen in the image: the outer and inner corner of the eye on
# the right, the outer and inner corner of the eye on the left, the bottom of the nose.
LANDMARK_NAMES = ("right_eye_outer", "right_eye_inner", "left_eye_outer", "left_eye_inner", "nose")
# The arrays of a ShapeModel as stored in the .npz (one array each, same names).
MODEL_ARRAYS = ("initial_shape", "anchor", "deltas", "split_pixels", "split_thresholds", "leaf_values")


@dataclass(frozen=True)
class ShapeModel:
    """The arrays of one cascade of regression-tree forests (C stages, T trees each, depth D,
    F feature pixels per stage, P landmarks).

    ``initial_shape`` (2P,) float32, x0 y0 x1 y1 ... in the unit box; ``anchor`` (C, F) intp:
    the landmark each feature pixel hangs on; ``deltas`` (C, F, 2) float32: its offset from
    that landmark in the initial shape; ``split_pixels`` (C, T, 2**D - 1, 2) intp: the two
    feature pixels each split node compares; ``split_thresholds`` (C, T, 2**D - 1) float32;
    ``leaf_values`` (C, T, 2**D, 2P) float32: what each leaf adds to the shape.
    """

    initial_shape: np.ndarray
    anchor: np.ndarray
    deltas: np.ndarray
    split_pixels: np.ndarray
    split_thresholds: np.ndarray
    leaf_values: np.ndarray

    @property
    def depth(self) -> int:
        return int(self.split_thresholds.shape[2] + 1).bit_length() - 1

    def check(self, where: str) -> None:
        """Raise ValueError naming ``where`` when the arrays do not fit together."""
        stages, trees, nodes = self.split_thresholds.shape
        points = self.initial_shape.shape[0]
        expected = {
            "initial_shape": (points,),
            "anchor": (stages, self.anchor.shape[1]),
            "deltas": (stages, self.anchor.shape[1], 2),
            "split_pixels": (stages, trees, nodes, 2),
            "leaf_values": (stages, trees, nodes + 1, points),
        }
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"{where}: {name} has shape {getattr(self, name).shape}, expected {shape}")
        if points % 2 or (nodes + 1) & nodes:
            raise ValueError(f"{where}: {points} shape values, {nodes} split nodes: not a full binary tree of points")
        features = self.anchor.shape[1]
        if self.split_pixels.min() < 0 or self.split_pixels.max() >= features:
            raise ValueError(f"{where}: split_pixels outside the {features} feature pixels")
        if self.anchor.min() < 0 or self.anchor.max() >= points // 2:
            raise ValueError(f"{where}: anchor outside the {points // 2} landmarks")


def _round_half_up(values: np.ndarray) -> np.ndarray:
    """dlib's conversion of a floating point to an integer pixel: floor(x + 0.5)."""
    return np.floor(values + 0.5).astype(np.intp)


class ShapePredictor:
    """Landmarks of faces in images with one :class:`ShapeModel` (stateless between calls)."""

    def __init__(self, model: ShapeModel) -> None:
        model.check("shape model")
        self.model = model
        self._points = model.initial_shape.reshape(-1, 2).astype(np.float64)
        stages, trees, nodes = model.split_thresholds.shape
        # Flat per-stage tables: one np.take per tree level instead of 2-D fancy indexing.
        self._node_base = np.arange(trees, dtype=np.intp) * nodes
        self._leaf_base = np.arange(trees, dtype=np.intp) * (nodes + 1) - nodes
        self._split_a = model.split_pixels[..., 0].reshape(stages, -1)
        self._split_b = model.split_pixels[..., 1].reshape(stages, -1)
        self._thresholds = model.split_thresholds.reshape(stages, -1)
        self._leaves = model.leaf_values.reshape(stages, trees * (nodes + 1), -1)

    def unit_shape(self, image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """The landmarks in the unit box (dlib's ``current_shape``), (2P,) float32.

        ``image``: (H, W, 3) uint8 RGB or (H, W) uint8 gray; ``box``: (left, top, right,
        bottom) pixels, right/bottom inclusive.
        """
        _check_image(image)
        model = self.model
        left, top, right, bottom = (float(v) for v in box)
        width, height = right - left, bottom - top
        rows, cols = image.shape[:2]
        # (H * W, C) rows, read by flat index (one take per stage); a copy only when the
        # frame is a strided view.
        pixels = image.reshape(rows * cols, -1)
        shape = model.initial_shape.copy()
        depth = model.depth
        for stage in range(model.split_thresholds.shape[0]):
            current = shape.reshape(-1, 2)
            # dlib: the similarity from the initial shape to the current one, its 2x2 part as float.
            m = similarity_transform(self._points, current.astype(np.float64))[0].astype(np.float32)
            deltas = model.deltas[stage]
            # float32 as dlib: tform * delta + location(current_shape, anchor).
            x = deltas[:, 0] * m[0, 0] + deltas[:, 1] * m[0, 1] + current[model.anchor[stage], 0]
            y = deltas[:, 0] * m[1, 0] + deltas[:, 1] * m[1, 1] + current[model.anchor[stage], 1]
            # Unit box -> pixels in float64 (dlib's point_transform_affine), rounded to a pixel.
            px = _round_half_up(left + x.astype(np.float64) * width)
            py = _round_half_up(top + y.astype(np.float64) * height)
            inside = (px >= 0) & (px < cols) & (py >= 0) & (py < rows)
            # Outside the image a feature pixel reads 0: read a clamped pixel, then zero it.
            flat = np.clip(py, 0, rows - 1) * cols + np.clip(px, 0, cols - 1)
            features = _intensity_at(pixels, flat) * inside
            # Node i's children are 2i + 1 (difference above the threshold) and 2i + 2.
            node = np.zeros(self._node_base.shape, dtype=np.intp)
            split_a, split_b, thresholds = self._split_a[stage], self._split_b[stage], self._thresholds[stage]
            for _ in range(depth):
                flat = self._node_base + node
                above = features.take(split_a.take(flat)) - features.take(split_b.take(flat)) > thresholds.take(flat)
                node = 2 * node + 2 - above
            leaves = self._leaves[stage].take(self._leaf_base + node, axis=0)
            # dlib adds the trees' leaves one after another in float32; a cumulative sum keeps
            # that order (a plain sum would pair them up and round differently).
            shape = np.cumsum(np.concatenate([shape[None], leaves]), axis=0, dtype=np.float32)[-1]
        return shape

    def predict(self, image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """(P, 2) float64 landmark positions (x, y) in pixels of ``image`` ((H, W, 3) uint8
        RGB or (H, W) uint8 gray) for the face in ``box`` (see the module docstring).
        dlib rounds these to whole pixels; they are kept fractional here."""
        unit = self.unit_shape(image, box).reshape(-1, 2).astype(np.float64)
        left, top, right, bottom = (float(v) for v in box)
        return np.stack([left + unit[:, 0] * (right - left), top + unit[:, 1] * (bottom - top)], axis=1)


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"image must be (H, W) or (H, W, 3), got shape {image.shape}")


def _intensity_at(pixels: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """dlib's intensity of rows ``flat`` of ``pixels`` ((H * W, C) uint8, C 1 or 3) as
    float32: (r + g + b) // 3 for RGB (only the sampled pixels are converted, not the frame)."""
    sampled = pixels.take(flat, axis=0)
    if sampled.shape[1] == 1:
        return sampled[:, 0].astype(np.float32)
    gray: np.ndarray = (sampled.sum(axis=1, dtype=np.uint16) // 3).astype(np.float32)
    return gray


def round_like_dlib(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks rounded to whole pixels as dlib's shape predictor returns them."""
    return _round_half_up(landmarks)


def predictor_box(box: tuple[float, float, float, float], mapping: BoxMapping) -> tuple[float, float, float, float]:
    """A detector's face box (x1, y1, x2, y2 pixels) as the box the shape predictor was
    trained on (left, top, right, bottom; see :class:`edge.detect.sidecar.BoxMapping`)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    width, height = x2 - x1, y2 - y1
    center_x = (x1 + x2) / 2 + mapping.center_x * width
    center_y = (y1 + y2) / 2 + mapping.center_y * height
    half_w, half_h = mapping.width * width / 2, mapping.height * height / 2
    return center_x - half_w, center_y - half_h, center_x + half_w, center_y + half_h


def load_shape_model(path: str | os.PathLike[str]) -> tuple[ShapeModel, LandmarkModelInfo]:
    """The shape model in ``path`` (.npz) and its checked sidecar; raises ModelError (one line)."""
    path = Path(path)
    info = read_recognition_sidecar(path, LANDMARKS_KIND)
    assert isinstance(info, LandmarkModelInfo)
    try:
        with np.load(path, allow_pickle=False) as arrays:
            model = ShapeModel(**{name: arrays[name] for name in MODEL_ARRAYS})
        model.check(f"model '{path}'")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelError(f"model '{path}': not a shape model ({exc})") from None
    sizes = (model.split_thresholds.shape[0], model.split_thresholds.shape[1], model.depth, model.anchor.shape[1])
    if sizes != (info.stages, info.trees, info.depth, info.features):
        raise ModelError(f"model '{path}': arrays of {sizes} do not match the sidecar's stages, trees, depth, features")
    return model, info
