"""The upstream "version-slim" face detector rebuilt as a Keras graph from a PyTorch state dict.

Mirrors upstream ``vision/nn/mb_tiny.py`` (``Mb_Tiny``: one conv_bn block and twelve
depthwise-separable conv_dw blocks) and ``vision/ssd/mb_tiny_fd.py`` (one extra stride-2
block, four SSD heads fed by backbone blocks 7, 10, 12 and the extra block). Layout is NHWC
and BatchNorm is folded into the preceding convolution, so the graph is only Conv2D,
DepthwiseConv2D (ReLU fused), ZeroPadding2D, Reshape and Concatenate: ops that quantize to
int8 without float fallbacks.

Outputs are exactly upstream's training-mode outputs: class LOGITS (1, N, 2) and raw SSD
REGRESSIONS (1, N, 4), each head permuted to NHWC and flattened row-major, heads
concatenated level by level, so prior i of ``edge.detect.priors.generate_priors`` belongs to row i.
No softmax and no box decoding in the graph.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from tensorflow import keras

# Upstream's nn.BatchNorm2d default.
BATCHNORM_EPS = 1e-5

# Stride of each Mb_Tiny block (block 0 is conv_bn, 1..12 are conv_dw); channel counts come
# from the weights themselves.
BACKBONE_STRIDES: tuple[int, ...] = (2, 1, 2, 1, 2, 1, 1, 1, 2, 1, 1, 2, 1)
# Upstream ``source_layer_indexes``: the backbone is cut before these blocks, and the output
# of each cut feeds one SSD head; the last head is fed by the extra block.
HEAD_SOURCE_ENDS: tuple[int, ...] = (8, 11, 13)
NUM_CLASSES = 2


class WeightsMismatchError(ValueError):
    """The state dict does not have the tensors of the version-slim network."""


def fold_batchnorm(
    weight: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    eps: float = BATCHNORM_EPS,
) -> tuple[np.ndarray, np.ndarray]:
    """Fold an inference-mode BatchNorm into the bias-free conv before it.

    ``weight`` is a PyTorch conv kernel (O, I/groups, kh, kw) float32; the four BatchNorm
    vectors are (O,). Returns the folded kernel (same shape) and bias (O,), float32.
    Folding is done in float64 so the only rounding is the final cast.
    """
    scale = gamma.astype(np.float64) / np.sqrt(running_var.astype(np.float64) + eps)
    folded_weight = weight.astype(np.float64) * scale[:, None, None, None]
    folded_bias = beta.astype(np.float64) - running_mean.astype(np.float64) * scale
    return folded_weight.astype(np.float32), folded_bias.astype(np.float32)


class _Builder:
    """Adds PyTorch-initialised conv layers to a Keras functional graph."""

    def __init__(self, state_dict: Mapping[str, np.ndarray]) -> None:
        self._state = state_dict
        self.used: set[str] = set()

    def tensor(self, name: str) -> np.ndarray:
        if name not in self._state:
            raise WeightsMismatchError(f"state dict has no tensor {name!r}")
        self.used.add(name)
        return np.asarray(self._state[name], dtype=np.float32)

    def batchnorm_folded(self, conv: str, batchnorm: str) -> tuple[np.ndarray, np.ndarray]:
        # num_batches_tracked only matters for training; mark it used so the completeness
        # check below does not flag it.
        self.used.add(f"{batchnorm}.num_batches_tracked")
        return fold_batchnorm(
            self.tensor(f"{conv}.weight"),
            self.tensor(f"{batchnorm}.weight"),
            self.tensor(f"{batchnorm}.bias"),
            self.tensor(f"{batchnorm}.running_mean"),
            self.tensor(f"{batchnorm}.running_var"),
        )

    def with_bias(self, conv: str) -> tuple[np.ndarray, np.ndarray]:
        return self.tensor(f"{conv}.weight"), self.tensor(f"{conv}.bias")

    @staticmethod
    def conv(x, weight: np.ndarray, bias: np.ndarray, stride: int, relu: bool, name: str):
        """Apply a PyTorch-style conv (padding k//2, groups 1 or depthwise) to NHWC ``x``."""
        out_channels, in_per_group, kernel_h, kernel_w = weight.shape
        in_channels = x.shape[-1]
        depthwise = in_per_group == 1 and in_channels > 1 and out_channels == in_channels
        if not depthwise and in_per_group != in_channels:
            raise WeightsMismatchError(f"{name}: kernel {weight.shape} does not fit {in_channels} input channels")
        padding = "valid"
        if kernel_h > 1:
            if stride == 1:
                # Odd kernel, stride 1: TF 'same' pads symmetrically, exactly like PyTorch.
                padding = "same"
            else:
                # Strided: TF 'same' would pad only bottom/right; PyTorch pads (1, 1).
                x = keras.layers.ZeroPadding2D(padding=(kernel_h // 2, kernel_w // 2), name=f"{name}_pad")(x)
        activation = "relu" if relu else None
        if depthwise:
            layer = keras.layers.DepthwiseConv2D(
                (kernel_h, kernel_w), strides=stride, padding=padding, activation=activation, name=name
            )
            kernel = weight.transpose(2, 3, 0, 1)  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        else:
            layer = keras.layers.Conv2D(
                out_channels, (kernel_h, kernel_w), strides=stride, padding=padding, activation=activation, name=name
            )
            kernel = weight.transpose(2, 3, 1, 0)  # (O, I, kh, kw) -> (kh, kw, I, O)
        y = layer(x)
        layer.set_weights([kernel, bias])
        return y

    def separable(self, x, prefix: str, stride: int, relu_after: bool, name: str):
        """Upstream ``SeperableConv2d``: depthwise (bias) + ReLU + pointwise (bias)."""
        x = self.conv(x, *self.with_bias(f"{prefix}.0"), stride=stride, relu=True, name=f"{name}_dw")
        return self.conv(x, *self.with_bias(f"{prefix}.2"), stride=1, relu=relu_after, name=f"{name}_pw")

    def head(self, x, kind: str, level: int, values_per_box: int, is_last: bool):
        prefix = f"{kind}_headers.{level}"
        name = f"{kind}_head_{level}"
        if is_last:
            y = self.conv(x, *self.with_bias(prefix), stride=1, relu=False, name=name)
        else:
            y = self.separable(x, prefix, stride=1, relu_after=False, name=name)
        # NHWC already matches upstream's permute(0, 2, 3, 1); flatten row-major per box.
        return keras.layers.Reshape((-1, values_per_box), name=f"{name}_flat")(y)


def build_slim_model(state_dict: Mapping[str, np.ndarray], input_width: int = 320, input_height: int = 240):
    """Build the float version-slim detector for a (1, input_height, input_width, 3) input.

    ``state_dict`` maps upstream parameter names to arrays (``tools.pth_reader``). The
    input is the normalized image (pixel - 127) / 128, float32, RGB, NHWC. Returns a
    ``keras.Model`` with outputs ``[logits (1, N, 2), regressions (1, N, 4)]`` float32.
    Raises ``WeightsMismatchError`` when a tensor is missing, misshapen or left unused.
    """
    build = _Builder(state_dict)
    image = keras.Input(shape=(input_height, input_width, 3), batch_size=1, name="image")
    x = image
    head_inputs = []
    for block, stride in enumerate(BACKBONE_STRIDES):
        prefix = f"base_net.{block}"
        if block == 0:
            x = build.conv(x, *build.batchnorm_folded(f"{prefix}.0", f"{prefix}.1"), stride, True, f"base_{block}")
        else:
            x = build.conv(x, *build.batchnorm_folded(f"{prefix}.0", f"{prefix}.1"), stride, True, f"base_{block}_dw")
            x = build.conv(x, *build.batchnorm_folded(f"{prefix}.3", f"{prefix}.4"), 1, True, f"base_{block}_pw")
        if block + 1 in HEAD_SOURCE_ENDS:
            head_inputs.append(x)
    x = build.conv(x, *build.with_bias("extras.0.0"), stride=1, relu=True, name="extra_reduce")
    x = build.separable(x, "extras.0.2", stride=2, relu_after=True, name="extra")
    head_inputs.append(x)

    logits, regressions = [], []
    for level, features in enumerate(head_inputs):
        is_last = level == len(head_inputs) - 1
        logits.append(build.head(features, "classification", level, NUM_CLASSES, is_last))
        regressions.append(build.head(features, "regression", level, 4, is_last))
    outputs = [
        keras.layers.Concatenate(axis=1, name="logits")(logits),
        keras.layers.Concatenate(axis=1, name="regressions")(regressions),
    ]
    unused = sorted(set(state_dict) - build.used)
    if unused:
        raise WeightsMismatchError(f"state dict tensors not used by version-slim: {', '.join(unused[:5])}")
    return keras.Model(image, outputs, name=f"version_slim_{input_width}x{input_height}")
