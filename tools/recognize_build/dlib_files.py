"""The two dlib model files read without dlib: the 5-point shape predictor and the ResNet
face-recognition network, with :mod:`tools.recognize_build.dlib_format`.

The shape predictor (dlib/image_processing/shape_predictor.h): version 1, the initial shape
(matrix<float,0,1>), the forests (vector of stages, each a vector of trees; a tree is its
split nodes (idx1, idx2, thresh) and its leaves (matrix<float,0,1>)), the anchor index of
every feature pixel per stage and its (dx, dy) delta.

The network (dlib/dnn/core.h): dlib writes a network from the outside in. The loss layer
writes its version and its details, then the network under it: first every nested layer's
version (an ``add_layer`` 2, or 3 for the one over the input; a tag or skip layer 1, which
writes nothing else), then the input layer, then, from the input upwards, each layer's
details followed by its training state (three bools and two or three tensors, empty here).
So the reader must know the architecture; :data:`RESNET_LAYERS` is dlib's ``anet_type`` of
``dnn_face_recognition_ex.cpp``, and every layer name in the file is checked against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.recognize.landmarks import ShapeModel
from tools.recognize_build.dlib_format import DlibReader


def read_shape_predictor(data: bytes, name: str) -> ShapeModel:
    """Parse ``shape_predictor_5_face_landmarks.dat`` (or any dlib shape predictor whose trees
    are all full and of one depth) into the arrays of :class:`ShapeModel`."""
    reader = DlibReader(data, name)
    reader.expect_integer(1)
    initial_shape = reader.column_vector()

    def tree(r: DlibReader) -> tuple[list[tuple[int, int, float]], list[np.ndarray]]:
        splits = r.vector(lambda s: (s.integer(), s.integer(), s.real()))
        leaves = r.vector(lambda s: s.column_vector())
        return splits, leaves

    forests = reader.vector(lambda r: r.vector(tree))
    anchor = reader.vector(lambda r: r.vector(lambda s: s.integer()))
    deltas = reader.vector(lambda r: r.vector(lambda s: (s.real(), s.real())))
    if not reader.at_end:
        raise reader.error("trailing bytes after the shape predictor")
    shapes = {(len(splits), len(leaves)) for stage in forests for splits, leaves in stage}
    if len(shapes) != 1 or len({len(stage) for stage in forests}) != 1:
        raise reader.error(f"trees of several sizes {sorted(shapes)}: not one full depth")
    model = ShapeModel(
        initial_shape=initial_shape,
        anchor=np.array(anchor, dtype=np.intp),
        deltas=np.array(deltas, dtype=np.float32),
        split_pixels=np.array([[[s[:2] for s in splits] for splits, _ in stage] for stage in forests], dtype=np.intp),
        split_thresholds=np.array([[[s[2] for s in splits] for splits, _ in stage] for stage in forests], np.float32),
        leaf_values=np.array([[leaves for _, leaves in stage] for stage in forests], dtype=np.float32),
    )
    model.check(name)
    return model


# --- the ResNet ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One layer of the network, bottom-up. ``kind``: con, affine, relu, max_pool, avg_pool,
    add_prev, fc, tag, skip; ``tag``: the tag a tag layer sets or an add_prev/skip reads;
    ``params``: what the file says (weights as numpy arrays)."""

    kind: str
    tag: int = 0
    params: dict[str, Any] = field(default_factory=dict, compare=False)


def _block(filters: int, stride: int) -> list[tuple[str, dict[str, int]]]:
    """dlib's ``block``: con 3x3 (stride), affine, relu, con 3x3, affine (bottom-up)."""
    return [
        ("con", {"filters": filters, "size": 3, "stride": stride}),
        ("affine", {}),
        ("relu", {}),
        ("con", {"filters": filters, "size": 3, "stride": 1}),
        ("affine", {}),
    ]


def _ares(filters: int) -> list[tuple[str, dict[str, int]]]:
    """relu<add_prev1<block<N,affine,1,tag1<SUBNET>>>>"""
    return [("tag", {"tag": 1}), *_block(filters, 1), ("add_prev", {"tag": 1}), ("relu", {})]


def _ares_down(filters: int) -> list[tuple[str, dict[str, int]]]:
    """relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<SUBNET>>>>>>>"""
    return [
        ("tag", {"tag": 1}),
        *_block(filters, 2),
        ("tag", {"tag": 2}),
        ("skip", {"tag": 1}),
        ("avg_pool", {"size": 2, "stride": 2}),
        ("add_prev", {"tag": 2}),
        ("relu", {}),
    ]


def _anet_type() -> list[tuple[str, dict[str, int]]]:
    """dlib's anet_type (dnn_face_recognition_ex.cpp), bottom-up, without input and loss."""
    layers = [
        ("con", {"filters": 32, "size": 7, "stride": 2}),
        ("affine", {}),
        ("relu", {}),
        ("max_pool", {"size": 3, "stride": 2}),
    ]
    layers += _ares(32) * 3  # alevel4
    layers += _ares_down(64) + _ares(64) * 3  # alevel3
    layers += _ares_down(128) + _ares(128) * 2  # alevel2
    layers += _ares_down(256) + _ares(256) * 2  # alevel1
    layers += _ares_down(256)  # alevel0
    layers += [("avg_pool", {"size": 0, "stride": 1}), ("fc", {"outputs": 128})]
    return layers


RESNET_LAYERS = _anet_type()


@dataclass(frozen=True)
class ResNetFile:
    """What the network file holds: the input layer's mean pixel, the layers bottom-up, and
    the loss layer's settings (its distance threshold is dlib's same-person threshold)."""

    input_size: int
    mean_rgb: tuple[float, float, float]
    layers: list[Layer]
    margin: float
    distance_threshold: float


def _con(reader: DlibReader, expected: dict[str, int]) -> dict[str, Any]:
    version = reader.expect_string("con_4", "con_5", "con_6")
    params = reader.tensor().reshape(-1)
    filters, rows, cols, stride_y, stride_x, pad_y, pad_x = (reader.integer() for _ in range(7))
    filter_shape = reader.alias_tensor()
    reader.alias_tensor()  # the biases: the filters' count, after the filters
    for _ in range(4):  # learning-rate and weight-decay multipliers
        reader.real()
    use_bias = reader.boolean() if version in ("con_5", "con_6") else True
    if version == "con_6":
        reader.boolean()  # use_relu: a fused relu, never set by this network
    if (filters, rows, stride_y) != (expected["filters"], expected["size"], expected["stride"]):
        raise reader.error(f"con {filters} {rows}x{cols}/{stride_y}, expected {expected}")
    if rows != cols or stride_y != stride_x or pad_y != pad_x:
        raise reader.error("a non-square convolution")
    weights = params[: int(np.prod(filter_shape))].reshape(filter_shape)  # (out, in, rows, cols)
    biases = params[weights.size : weights.size + filters] if use_bias else np.zeros(filters, np.float32)
    if weights.size + (filters if use_bias else 0) != params.size:
        raise reader.error(f"con params hold {params.size} values, expected {weights.size} + {filters}")
    return {"weights": weights, "biases": biases, "stride": stride_y, "padding": pad_y}


def _affine(reader: DlibReader) -> dict[str, Any]:
    version = reader.expect_string("affine_", "affine_2", "bn_con2")
    if version == "bn_con2":
        params = reader.tensor().reshape(-1)
        reader.alias_tensor(), reader.alias_tensor()
        for _ in range(2):  # means, invstds of the last training batch
            reader.tensor()
        running_means, running_variances = reader.tensor().reshape(-1), reader.tensor().reshape(-1)
        reader.integer(), reader.integer()
        for _ in range(4):
            reader.real()
        eps = reader.real()
        count = params.size // 2
        gamma = params[:count] / np.sqrt(running_variances + np.float32(eps))
        return {"gamma": gamma, "beta": params[count:] - gamma * running_means}
    params = reader.tensor().reshape(-1)
    reader.alias_tensor(), reader.alias_tensor()
    reader.integer()  # mode: CONV_MODE, one gamma/beta per channel
    if version == "affine_2" and reader.boolean():
        raise reader.error("a disabled affine layer")
    count = params.size // 2
    return {"gamma": params[:count], "beta": params[count:]}


def _pool(reader: DlibReader, name: str, expected: dict[str, int]) -> dict[str, Any]:
    reader.expect_string(f"{name}_2")
    rows, cols, stride_y, stride_x, pad_y, pad_x = (reader.integer() for _ in range(6))
    if (rows, stride_y) != (expected["size"], expected["stride"]) or (rows, stride_y, pad_y) != (cols, stride_x, pad_x):
        raise reader.error(f"{name} {rows}x{cols}/{stride_y} pad {pad_y}, expected {expected}")
    return {"size": rows, "stride": stride_y, "padding": pad_y}


def _fc(reader: DlibReader, expected: dict[str, int]) -> dict[str, Any]:
    version = reader.expect_string("fc_2", "fc_3")
    outputs, inputs = reader.integer(), reader.integer()
    params = reader.tensor().reshape(-1)
    reader.alias_tensor(), reader.alias_tensor()
    bias_mode = reader.integer()
    for _ in range(4):
        reader.real()
    use_bias = reader.boolean() if version == "fc_3" else True
    if outputs != expected["outputs"] or (bias_mode != 1 and use_bias):
        raise reader.error(f"fc with {outputs} outputs and bias mode {bias_mode}, expected fc_no_bias<128>")
    if params.size != inputs * outputs:
        raise reader.error(f"fc params hold {params.size} values, expected {inputs} x {outputs}")
    return {"weights": params.reshape(inputs, outputs)}


def _details(reader: DlibReader, kind: str, expected: dict[str, int]) -> dict[str, Any]:
    if kind == "con":
        return _con(reader, expected)
    if kind == "affine":
        return _affine(reader)
    if kind == "relu":
        if reader.expect_string("relu_", "relu_2") == "relu_2" and reader.boolean():
            raise reader.error("a disabled relu layer")
        return {}
    if kind in ("max_pool", "avg_pool"):
        return _pool(reader, kind, expected)
    if kind == "add_prev":
        reader.expect_string("add_prev_")
        return {}
    return _fc(reader, expected)


def _training_state(reader: DlibReader, version: int, over_input: bool) -> None:
    """What add_layer writes after a layer's details: three bools, then x_grad and the cached
    output (and params_grad, or grad_final and the sample expansion factor over the input)."""
    for _ in range(3):
        reader.boolean()
    reader.tensor(), reader.tensor()
    if over_input:
        reader.tensor()
        if version >= 3:
            reader.integer()
    elif version == 2:
        reader.tensor()


def read_resnet(data: bytes, name: str) -> ResNetFile:
    """Parse ``dlib_face_recognition_resnet_model_v1.dat`` (dlib's anet_type)."""
    reader = DlibReader(data, name)
    reader.expect_integer(1)
    if reader.expect_string("loss_metric_", "loss_metric_2") == "loss_metric_2":
        margin, threshold = reader.real(), reader.real()
    else:
        margin, threshold = 0.1, 0.75
    top_down = list(reversed(RESNET_LAYERS))
    versions = []
    for depth, (kind, _) in enumerate(top_down):
        if kind in ("tag", "skip"):
            versions.append(reader.expect_integer(1))
        elif depth == len(top_down) - 1:
            versions.append(reader.expect_integer(2, 3))
        else:
            versions.append(reader.expect_integer(1, 2))
    reader.expect_string("input_rgb_image_sized")
    mean_rgb = (reader.real(), reader.real(), reader.real())
    rows, cols = reader.integer(), reader.integer()
    if rows != cols:
        raise reader.error(f"input {rows}x{cols}, expected a square chip")
    layers = []
    for position, (kind, expected) in enumerate(RESNET_LAYERS):
        version = versions[len(RESNET_LAYERS) - 1 - position]
        if kind in ("tag", "skip"):
            layers.append(Layer(kind, expected["tag"]))
            continue
        params = _details(reader, kind, expected)
        _training_state(reader, version, over_input=position == 0)
        layers.append(Layer(kind, expected.get("tag", 0), params))
    if not reader.at_end:
        raise reader.error("trailing bytes after the network")
    return ResNetFile(rows, (float(mean_rgb[0]), float(mean_rgb[1]), float(mean_rgb[2])), layers, margin, threshold)
