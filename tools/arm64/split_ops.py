"""Cut a TFLite model into single-operator models, to count the instructions of each op.

XNNPACK turns the whole graph into one delegate node, so nothing inside an invoke can be
told apart from Python. A model holding one operator (its non-constant inputs become the
model's inputs, its outputs the model's outputs, weights and quantization kept) runs the
same XNNPACK operator on the same shapes; the per-op counts add up to the whole invoke
within the per-invoke overhead (checked in tools.arm_cost's per-op report).

Host side only (needs TensorFlow's flatbuffer helpers, from the project's tools extra).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SingleOp:
    index: int  # position of the operator in the original graph
    op: str  # builtin operator name, e.g. CONV_2D
    path: Path
    detail: str  # e.g. "1x242x322x3 -> 1x120x160x16, k3x3 s2" (shapes, kernel size, strides)


def _builtin_names() -> dict[int, str]:
    from tensorflow.lite.python import schema_py_generated as schema

    return {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}


def _describe(op, tensors, opcode_name: str) -> str:
    shapes = [tensors[t].shape for t in op.inputs if t >= 0][:1] + [tensors[t].shape for t in op.outputs]
    text = " -> ".join("x".join(str(int(d)) for d in shape) for shape in shapes)
    options = op.builtinOptions
    if opcode_name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        weights = tensors[op.inputs[1]].shape
        kernel = f"k{int(weights[1])}x{int(weights[2])}"
        text += f", {kernel} s{options.strideH}"
        text += ", pad same" if options.padding == 0 else ", pad valid"
    return text


def _is_constant(model, graph, tensor: int) -> bool:
    """Whether ``tensor`` of ``graph`` has its data in the model (weights, shapes)."""
    buffer = model.buffers[graph.tensors[tensor].buffer]
    return buffer.data is not None and len(buffer.data) > 0


def single_op_models(model_path: Path, out_dir: Path) -> list[SingleOp]:
    """Write one model per operator of ``model_path``'s main graph into ``out_dir``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up banner is not for this report
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(model_path))
    names = _builtin_names()
    graph = model.subgraphs[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index, op in enumerate(graph.operators):
        code = model.operatorCodes[op.opcodeIndex]
        name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
        single = copy.deepcopy(model)
        sub = single.subgraphs[0]
        kept = sub.operators[index]
        sub.operators = [kept]

        sub.inputs = [t for t in kept.inputs if t >= 0 and not _is_constant(single, sub, t)]
        sub.outputs = list(kept.outputs)
        single.signatureDefs = []
        path = out_dir / f"op{index:03d}-{name.lower()}.tflite"
        flatbuffer_utils.write_model(single, str(path))
        written.append(SingleOp(index, name, path, _describe(op, graph.tensors, name)))
    return written
