"""Step 3: post-training full-integer quantization, calibrated on real photos."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator

import numpy as np

from edge.detect.preprocess import normalize


def convert_int8(model, calibration_images: np.ndarray) -> bytes:
    """Full-integer int8 conversion (int8 in/out, per-channel weights) calibrated on
    (n, H, W, 3) uint8 images, fed in their given order."""
    import tensorflow as tf

    def representative_dataset() -> Iterator[list[np.ndarray]]:
        for image in calibration_images:
            yield [normalize(image)[None]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    # Keras prints its temporary SavedModel's signature; the converter warns about input
    # statistics that the representative dataset provides. Neither is for the user.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return converter.convert()
