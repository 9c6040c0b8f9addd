"""Step 4: the converted model checked against the int8 contract, read from the flatbuffer
itself and from the real interpreter."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.decode import QuantParams
from tools.quantize.variants import BuildError, ModelVariant

# The int8 input contract: real = (q + 1) / 128 with q = pixel XOR 0x80 viewed as int8,
# i.e. (pixel - 127) / 128, upstream's normalization, with no arithmetic on the device.
INPUT_SCALE = 1.0 / 128.0
INPUT_ZERO_POINT = -1

# Ops the int8 graph may contain, and which of their inputs are legitimately not int8
# (int32 biases, int32 shape/padding operands). Anything else is a failed build.
INT32_OPERANDS: dict[str, frozenset[int]] = {
    "CONV_2D": frozenset({2}),
    "DEPTHWISE_CONV_2D": frozenset({2}),
    "PAD": frozenset({1}),
    "RESHAPE": frozenset({1}),
    "CONCATENATION": frozenset(),
}


@dataclass(frozen=True)
class OutputTensor:
    """One int8 output head: interpreter output index, tensor name, shape, quantization."""

    index: int
    name: str
    shape: tuple[int, ...]
    quant: QuantParams


@dataclass(frozen=True)
class Int8Layout:
    """What the verified int8 model looks like from outside."""

    input_shape: tuple[int, ...]
    input_quant: QuantParams
    logits: OutputTensor
    regressions: OutputTensor
    op_types: tuple[str, ...]



def _enum_names(enum_class) -> dict[int, str]:
    return {value: name for name, value in vars(enum_class).items() if not name.startswith("_")}


def graph_op_types(tflite_model: bytes) -> list[tuple[str, list[str], list[str]]]:
    """(op type, input tensor types, output tensor types) of every operator, in graph order,
    read from the flatbuffer itself (not from what an interpreter chooses to report)."""
    from ai_edge_litert import schema_py_generated as schema

    op_names = _enum_names(schema.BuiltinOperator)
    type_names = _enum_names(schema.TensorType)
    model = schema.Model.GetRootAs(tflite_model, 0)
    ops = []
    for subgraph_index in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(subgraph_index)

        def tensor_type(index: int) -> str:
            return "none" if index < 0 else type_names[subgraph.Tensors(index).Type()]

        for op_index in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(op_index)
            code = model.OperatorCodes(op.OpcodeIndex())
            # Builtin codes above 127 live only in BuiltinCode; old ones only in the deprecated field.
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            ops.append(
                (
                    op_names.get(builtin, f"CUSTOM_{builtin}"),
                    [tensor_type(op.Inputs(i)) for i in range(op.InputsLength())],
                    [tensor_type(op.Outputs(i)) for i in range(op.OutputsLength())],
                )
            )
    return ops


def interpreter_for(model_content: bytes):
    from ai_edge_litert.interpreter import Interpreter

    # One thread: parity figures must not depend on scheduling.
    interpreter = Interpreter(model_content=model_content, num_threads=1)
    interpreter.allocate_tensors()
    return interpreter


def _quant(details: dict) -> QuantParams:
    scale, zero_point = details["quantization"]
    return QuantParams(float(scale), int(zero_point))


def inspect_int8_model(tflite_model: bytes, variant: ModelVariant) -> Int8Layout:
    """Check the converted model against the int8 contract and describe its interface.

    Raises BuildError when an op is not integer-only, an operand has an unexpected type,
    the input quantization is not exactly (1/128, -1), or the heads have the wrong shape.
    """
    op_types = []
    for op_type, input_types, output_types in graph_op_types(tflite_model):
        if op_type not in INT32_OPERANDS:
            raise BuildError(f"int8 model contains op {op_type}, expected only {', '.join(INT32_OPERANDS)}")
        int32_operands = INT32_OPERANDS[op_type]
        for position, dtype in enumerate(input_types):
            expected = "INT32" if position in int32_operands else "INT8"
            if dtype not in (expected, "none"):
                raise BuildError(f"int8 model: {op_type} input {position} is {dtype}, expected {expected}")
        if any(dtype != "INT8" for dtype in output_types):
            raise BuildError(f"int8 model: {op_type} produces {output_types}, expected INT8")
        op_types.append(op_type)

    interpreter = interpreter_for(tflite_model)
    (input_details,) = interpreter.get_input_details()
    input_shape = tuple(int(d) for d in input_details["shape"])
    input_quant = _quant(input_details)
    if input_details["dtype"] != np.int8 or input_quant != QuantParams(INPUT_SCALE, INPUT_ZERO_POINT):
        raise BuildError(
            f"int8 model input is {np.dtype(input_details['dtype']).name} scale {input_quant.scale!r} zero point "
            f"{input_quant.zero_point}, expected int8 scale {INPUT_SCALE} zero point {INPUT_ZERO_POINT}"
        )
    if input_shape != (1, variant.input_height, variant.input_width, 3):
        raise BuildError(f"int8 model input shape {input_shape}, expected (1, {variant.input_height}, {variant.input_width}, 3)")

    num_priors = variant.prior_config.num_priors
    heads = {}
    for details in interpreter.get_output_details():
        shape = tuple(int(d) for d in details["shape"])
        if details["dtype"] != np.int8 or shape not in ((1, num_priors, 2), (1, num_priors, 4)):
            raise BuildError(f"int8 model output {details['name']} is {shape}, expected (1, {num_priors}, 2|4) int8")
        heads[shape[-1]] = OutputTensor(int(details["index"]), str(details["name"]), shape, _quant(details))
    if set(heads) != {2, 4}:
        raise BuildError("int8 model must have exactly one logits (..., 2) and one regressions (..., 4) output")
    return Int8Layout(input_shape, input_quant, heads[2], heads[4], tuple(sorted(set(op_types))))
