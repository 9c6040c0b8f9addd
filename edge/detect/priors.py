"""SSD prior (anchor) boxes of the Ultra-Light-Fast-Generic-Face-Detector "slim" family.

Layout, from the upstream configuration: one level per stride (8, 16, 32, 64); each level
is a feature map of ceil(input / stride) cells, walked row-major (y outer, x inner), with
that level's min box sizes innermost. 320x240 gives 4420 priors, 640x480 gives 17640.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_STRIDES: tuple[int, ...] = (8, 16, 32, 64)
DEFAULT_MIN_BOXES: tuple[tuple[int, ...], ...] = ((10, 16, 24), (32, 48), (64, 96), (128, 192, 256))


@dataclass(frozen=True)
class PriorConfig:
    """Everything that fixes the prior layout and the box encoding of one model.

    ``input_width`` / ``input_height`` are the model's input size in pixels. The variances
    are the SSD box-encoding scale factors the model was trained with.
    """

    input_width: int = 320
    input_height: int = 240
    strides: tuple[int, ...] = DEFAULT_STRIDES
    min_boxes: tuple[tuple[int, ...], ...] = DEFAULT_MIN_BOXES
    center_variance: float = 0.1
    size_variance: float = 0.2

    def __post_init__(self) -> None:
        if self.input_width <= 0 or self.input_height <= 0:
            raise ValueError(f"prior input size must be positive, got {self.input_width}x{self.input_height}")
        if len(self.strides) != len(self.min_boxes):
            raise ValueError(
                f"priors need one min-box list per stride: {len(self.strides)} strides, "
                f"{len(self.min_boxes)} min-box lists"
            )
        if not all(stride > 0 for stride in self.strides):
            raise ValueError(f"prior strides must be positive, got {self.strides}")
        if not all(level and all(size > 0 for size in level) for level in self.min_boxes):
            raise ValueError(f"prior min box sizes must be positive, got {self.min_boxes}")
        for name in ("center_variance", "size_variance"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"prior {name} must be finite and > 0, got {value}")

    @property
    def feature_map_sizes(self) -> tuple[tuple[int, int], ...]:
        """(width, height) of each level's feature map."""
        return tuple((math.ceil(self.input_width / s), math.ceil(self.input_height / s)) for s in self.strides)

    @property
    def num_priors(self) -> int:
        return sum(w * h * len(boxes) for (w, h), boxes in zip(self.feature_map_sizes, self.min_boxes, strict=True))

    def to_dict(self) -> dict[str, object]:
        """The sidecar's ``priors`` section (edge.detect.sidecar reads and checks it back)."""
        return {
            "input_width": self.input_width,
            "input_height": self.input_height,
            "strides": list(self.strides),
            "min_boxes": [list(b) for b in self.min_boxes],
            "center_variance": self.center_variance,
            "size_variance": self.size_variance,
        }


def generate_priors(config: PriorConfig) -> np.ndarray:
    """Return the priors of ``config`` as a (N, 4) float32 array of [cx, cy, w, h].

    All four values are normalized to the input size and clipped to [0, 1], exactly as
    upstream's ``generate_priors`` does. Cell centres are (i + 0.5) / feature-map size, the
    size rounded up (240 / 32 -> 8 rows, so that level's rows are spaced 30 px, not 32):
    upstream's ``fd_config`` derives its "shrinkage" from the rounded feature-map sizes, and
    the priors baked into the upstream ONNX graph confirm it.
    """
    levels = []
    for boxes, (fm_w, fm_h) in zip(config.min_boxes, config.feature_map_sizes, strict=True):
        cy, cx = np.meshgrid(
            (np.arange(fm_h, dtype=np.float64) + 0.5) / fm_h,
            (np.arange(fm_w, dtype=np.float64) + 0.5) / fm_w,
            indexing="ij",
        )
        sizes = np.asarray(boxes, dtype=np.float64)
        level = np.empty((fm_h, fm_w, len(boxes), 4), dtype=np.float64)
        level[..., 0] = cx[..., None]
        level[..., 1] = cy[..., None]
        level[..., 2] = sizes / config.input_width
        level[..., 3] = sizes / config.input_height
        levels.append(level.reshape(-1, 4))
    priors = np.concatenate(levels, axis=0)
    return np.clip(priors, 0.0, 1.0).astype(np.float32)
