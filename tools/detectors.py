"""Detector backends for evaluation and benchmarking, behind one interface:
``detect(image_rgb: (H, W, 3) uint8) -> edge.detect.decode.Detections`` (normalized boxes, best first).

* :class:`FloatOnnxDetector`: the float reference, onnxruntime on upstream's
  version-slim-320.onnx (box decoding and softmax in the graph), pre-processed as the device
  path does (edge.detect.preprocess: cv2.INTER_LINEAR-style bilinear resize to the model size, as
  upstream evaluated), then (p - 127) / 128, followed by the project's threshold + hard NMS
  (edge.detect.decode.select_faces).
* :class:`Int8Detector`: the device path, edge.detect.detector.FaceDetector on an int8 .tflite.

Both take the same :class:`edge.detect.decode.PostprocessOptions`, so the two models are always
compared under identical post-processing; each evaluation protocol chooses its own.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

import numpy as np

from edge.detect.decode import Detections, PostprocessOptions, select_faces
from edge.detect.preprocess import BilinearResizer, as_three_channels, normalize_nchw

# hard_nms looks at the `candidate_size` best candidates only; this many means "all of them".
ALL_CANDIDATES = 1 << 30


class DetectorError(Exception):
    """A detector that cannot be built; the message names the file and the problem."""


class Detector(Protocol):
    """What evaluation and benchmark need from a backend."""

    name: str

    def detect(self, image_rgb: np.ndarray) -> Detections:
        """(H, W, 3) uint8 RGB -> faces, boxes normalized to the image, best first."""
        ...


class FloatOnnxDetector:
    """Upstream's float ONNX graph (outputs ``scores`` (1, N, 2) softmax and ``boxes`` (1, N, 4)
    normalized xyxy) run by onnxruntime, with the project's threshold + NMS."""

    def __init__(
        self, onnx_path: str | os.PathLike, settings: PostprocessOptions, num_threads: int | None = None
    ) -> None:
        import onnxruntime

        self.path = Path(onnx_path)
        self.settings = settings
        self.name = "float ONNX"
        if not self.path.is_file():
            raise DetectorError(f"float model '{self.path}': no such file")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # the upstream graph warns about unused initializers
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise DetectorError(f"float model '{self.path}': not a loadable ONNX model ({exc})") from None
        inputs = self.session.get_inputs()
        outputs = {output.name for output in self.session.get_outputs()}
        shape = inputs[0].shape if len(inputs) == 1 else []
        if len(shape) != 4 or not all(isinstance(d, int) for d in shape) or not {"scores", "boxes"} <= outputs:
            raise DetectorError(
                f"float model '{self.path}': expected one fixed-size NCHW input and outputs 'scores' and "
                f"'boxes' (upstream version-slim-320.onnx), got inputs {[(i.name, i.shape) for i in inputs]} "
                f"and outputs {sorted(outputs)}"
            )
        self._input_name = inputs[0].name
        _, _, height, width = shape
        self.input_size = (width, height)
        self._resize = BilinearResizer(*self.input_size)
        self._check_boxes_are_decoded()

    def _check_boxes_are_decoded(self) -> None:
        # The _without_postprocessing graph has the same output names but emits raw SSD
        # regressions; decoded corner boxes always have x2 > x1 and y2 > y1, raw ones rarely.
        width, height = self.input_size
        _, boxes = self.raw_outputs(np.full((height, width, 3), 127, dtype=np.uint8))
        if not (np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])):
            raise DetectorError(
                f"float model '{self.path}': its 'boxes' are not decoded corner boxes (raw SSD regressions?); "
                "use upstream's version-slim-320.onnx, which decodes in the graph"
            )

    def raw_outputs(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 RGB -> (face scores (N,) float32, boxes (N, 4) float32 normalized xyxy)."""
        pixels = self._resize(as_three_channels(np.asarray(image_rgb)))
        scores, boxes = self.session.run(["scores", "boxes"], {self._input_name: normalize_nchw(pixels)})
        return scores[0, :, 1], boxes[0]

    def detect(self, image_rgb: np.ndarray) -> Detections:
        scores, boxes = self.raw_outputs(image_rgb)
        return select_faces(boxes, scores, self.settings)


class RetargetedFloatDetector:
    """Upstream's float graph without post-processing (``scores`` softmax, ``boxes`` raw SSD
    regressions) run by onnxruntime at another input size: its input is resized (its reshapes
    are shape-driven) and the boxes decoded here on that size's priors. The float reference of
    an int8 model built from the same weights for another input (the 160x120 profile)."""

    def __init__(
        self,
        onnx_path: str | os.PathLike,
        input_size: tuple[int, int],
        settings: PostprocessOptions,
        num_threads: int | None = None,
    ) -> None:
        import onnx
        import onnxruntime

        from edge.detect.priors import PriorConfig, generate_priors

        self.path = Path(onnx_path)
        self.settings = settings
        self.input_size = input_size
        width, height = input_size
        self.name = f"float ONNX at {width}x{height}"
        if not self.path.is_file():
            raise DetectorError(f"float model '{self.path}': no such file")
        graph_model = onnx.load(str(self.path))
        dims = graph_model.graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_value, dims[3].dim_value = height, width
        for output in graph_model.graph.output:
            output.type.tensor_type.ClearField("shape")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        if num_threads is not None:
            options.intra_op_num_threads, options.inter_op_num_threads = num_threads, 1
        self.session = onnxruntime.InferenceSession(
            graph_model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        self._input_name = graph_model.graph.input[0].name
        self._prior_config = PriorConfig(width, height)
        self._priors = generate_priors(self._prior_config)
        self._resize = BilinearResizer(width, height)

    def detect(self, image_rgb: np.ndarray) -> Detections:
        from edge.detect.decode import decode_boxes

        pixels = self._resize(as_three_channels(np.asarray(image_rgb)))
        scores, regressions = self.session.run(["scores", "boxes"], {self._input_name: normalize_nchw(pixels)})
        config = self._prior_config
        boxes = decode_boxes(regressions[0], self._priors, config.center_variance, config.size_variance)
        return select_faces(boxes, scores[0, :, 1], self.settings)


class Int8Detector:
    """The device path: edge.detect.detector.FaceDetector on an int8 edge-face model, with the
    protocol's post-processing (its NMS candidate limit included) passed straight to it."""

    def __init__(
        self,
        model_path: str | os.PathLike,
        settings: PostprocessOptions,
        num_threads: int | None = None,
        interpreter: str | None = None,
    ) -> None:
        from edge.detect.detector import DetectorOptions, FaceDetector

        self.path = Path(model_path)
        self.settings = settings
        self.detector = FaceDetector(
            self.path,
            DetectorOptions(**asdict(settings), num_threads=num_threads, interpreter=interpreter),
        )
        self.name = f"int8 {self.detector.model_id}"

    @property
    def interpreter_name(self) -> str:
        return self.detector.interpreter_name

    def detect(self, image_rgb: np.ndarray) -> Detections:
        return self.detector.detect(image_rgb, color_order="RGB")
