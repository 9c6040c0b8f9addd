"""What can be built: the model variants, and the one error type every build step raises."""

from __future__ import annotations

from dataclasses import dataclass

from edge.detect.priors import PriorConfig


class BuildError(Exception):
    """The build cannot proceed or its result failed a check; the message is one line."""


@dataclass(frozen=True)
class ModelVariant:
    """One buildable model: upstream weights file and input size. The network is fully
    convolutional and its priors follow the input size, so one set of weights can be built
    for several inputs (edge.models.INPUT_PROFILES names the shipped ones)."""

    name: str
    weights_file: str
    input_width: int
    input_height: int

    @property
    def model_id(self) -> str:
        return f"ulfd-{self.name}-int8"

    @property
    def file_stem(self) -> str:
        return f"version-{self.name}-int8"

    @property
    def prior_config(self) -> PriorConfig:
        return PriorConfig(input_width=self.input_width, input_height=self.input_height)


MODEL_VARIANTS: dict[str, ModelVariant] = {
    "slim-320": ModelVariant("slim-320", "version-slim-320.pth", 320, 240),
    "slim-640": ModelVariant("slim-640", "version-slim-640.pth", 640, 480),
    # slim-320's weights run at a quarter of the pixels: for a door or a desk, where faces are large.
    "slim-320-160x120": ModelVariant("slim-320-160x120", "version-slim-320.pth", 160, 120),
    # 0.64x the pixels: the only 4:3 input under 512x384 with whole feature maps at every stride,
    # and the one that takes a Pi 4's frame under 1.5x BlazeFace short-range's.
    "slim-320-256x192": ModelVariant("slim-320-256x192", "version-slim-320.pth", 256, 192),
    # Measured against 256x192 and not shipped (README, "Why 256x192"): 288x216 costs a Pi 4
    # more than 1.5x BlazeFace short-range's frame; 240x180, whose maps are not whole, loses
    # far more faces than its pixels would say.
    "slim-320-288x216": ModelVariant("slim-320-288x216", "version-slim-320.pth", 288, 216),
    "slim-320-240x180": ModelVariant("slim-320-240x180", "version-slim-320.pth", 240, 180),
}
