"""Build the full-integer int8 TFLite face detector (and its sidecar JSON) from upstream weights.

Steps, one module each:

1. read the PyTorch state dict (``tools.pth_reader``) and rebuild the float graph in Keras
   (``tools.slim_keras``): :mod:`tools.quantize.float_graph`;
2. self-check: the float Keras graph must match upstream's ONNX graph run by onnxruntime on
   real photos within ``FLOAT_TOLERANCE`` (for slim-640, the same ONNX graph re-targeted to
   640x480 and loaded with the 640 weights): :mod:`tools.quantize.float_graph`;
3. convert with post-training full-integer quantization, calibrated on real photos
   (:mod:`tools.quantize.calibration`): :mod:`tools.quantize.convert`;
4. verify the result: input quantization exactly (1/128, -1) so ``pixel XOR 0x80`` is the
   model input, every tensor an op produces int8, no QUANTIZE/DEQUANTIZE:
   :mod:`tools.quantize.verify`;
5. run the int8 model in the real interpreter and measure its parity with the float
   reference (dequantized heads, and faces after decode + NMS): :mod:`tools.quantize.parity`;
6. write ``.tflite`` and sidecar ``.json`` atomically (:mod:`tools.quantize.build`). Same
   inputs give the same bytes.

CLI::

    python -m tools.quantize [--model slim-320|slim-640] [--weights PATH] [--calibration DIR]
                             [--out DIR] [--check-onnx PATH] [--calibration-limit N]
"""

from tools.quantize.build import DEFAULT_OUT_DIR, BuildReport, build, main
from tools.quantize.calibration import with_full_input_range
from tools.quantize.float_graph import FLOAT_TOLERANCE, REFERENCE_ONNX
from tools.quantize.variants import MODEL_VARIANTS, BuildError, ModelVariant

__all__ = [
    "DEFAULT_OUT_DIR",
    "FLOAT_TOLERANCE",
    "MODEL_VARIANTS",
    "REFERENCE_ONNX",
    "BuildError",
    "BuildReport",
    "ModelVariant",
    "build",
    "main",
    "with_full_input_range",
]
