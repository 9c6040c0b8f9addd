"""Step 4: the converted model checked against the int8 contract, read from the flatbuffer
itself and from the real interpreter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge.detect.model import ModelError, check_io_tensors, tensor_quant
from edge.detect.sidecar import OutputHead
from tools.quantize.variants import BuildError, ModelVariant

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
class Int8Layout:
    """What the verified int8 model looks like from outside, beyond what the contract fixes
    (its input is always :data:`edge.detect.sidecar.INPUT_QUANT`): its heads and the ops it uses."""

    logits: OutputHead
    regressions: OutputHead
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

        for op_index in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(op_index)
            code = model.OperatorCodes(op.OpcodeIndex())
            # Builtin codes above 127 live only in BuiltinCode; old ones only in the deprecated field.
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            ops.append(
                (
                    op_names.get(builtin, f"CUSTOM_{builtin}"),
                    [_tensor_type(subgraph, op.Inputs(i), type_names) for i in range(op.InputsLength())],
                    [_tensor_type(subgraph, op.Outputs(i), type_names) for i in range(op.OutputsLength())],
                )
            )
    return ops


def _tensor_type(subgraph: Any, index: int, type_names: dict[int, str]) -> str:
    """The schema type name of one tensor of a flatbuffer subgraph; "none" for an absent optional input."""
    return "none" if index < 0 else type_names[subgraph.Tensors(index).Type()]


def interpreter_for(model_content: bytes):
    from ai_edge_litert.interpreter import Interpreter

    # One thread: parity figures must not depend on scheduling.
    interpreter = Interpreter(model_content=model_content, num_threads=1)
    interpreter.allocate_tensors()
    return interpreter


def inspect_int8_model(tflite_model: bytes, variant: ModelVariant) -> Int8Layout:
    """Check the converted model against the int8 contract and describe its interface.

    Raises BuildError when an op is not integer-only, an operand has an unexpected type, or
    the interpreter's tensors break the contract :func:`edge.detect.model.check_io_tensors` checks
    on every device (input exactly (1/128, -1), two int8 heads of the right shapes).
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
    try:
        tensors = check_io_tensors(
            interpreter, variant.input_width, variant.input_height, variant.prior_config.num_priors, "int8 model"
        )
    except ModelError as error:
        raise BuildError(str(error)) from None

    def head(detail: dict) -> OutputHead:
        shape = tuple(int(d) for d in detail["shape"])
        return OutputHead(shape, tensor_quant(detail), int(detail["index"]), str(detail["name"]))

    return Int8Layout(
        head(tensors.logits),
        head(tensors.regressions),
        tuple(sorted(set(op_types))),
    )
