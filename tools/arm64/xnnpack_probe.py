"""What the interpreter can tell about the kernels it will run, on the (emulated) CPU.

    python -m tools.arm64.xnnpack_probe INTERPRETER MODEL

prints one line, e.g.

    cpu features: asimddp=no fp16=no i8mm=no sve=no; XNNPACK: 1 partition, whole graph (58 ops): int8 kernels NEON without dot product

The CPU features are the kernel's hardware capability bits (what XNNPACK's CPU detection
reads on Linux; under qemu-user they follow -cpu / QEMU_CPU). The partition count comes
from the interpreter's node list after the default delegate is applied: a DELEGATE node
whose inputs are the model's input (and constants) and whose outputs are the model's
outputs took the whole graph. Which micro-kernel variant XNNPACK picks inside is not
visible from Python; the instruction counts of tools.arm_cost (dot-product instructions
among them) show it.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from pathlib import Path

AT_HWCAP, AT_HWCAP2 = 16, 26
# Linux arch/arm64/include/uapi/asm/hwcap.h
HWCAP_BITS = {"fp16": (AT_HWCAP, 10), "asimddp": (AT_HWCAP, 20), "sve": (AT_HWCAP, 22), "i8mm": (AT_HWCAP2, 13)}


def read_hwcaps(auxv: bytes) -> dict[str, bool]:
    """Feature name -> present, from a 64-bit little-endian auxiliary vector."""
    values: dict[int, int] = {}
    for offset in range(0, len(auxv) - 15, 16):
        key, value = struct.unpack_from("<QQ", auxv, offset)
        if key == 0:
            break
        values[key] = value
    return {name: bool(values.get(at, 0) >> bit & 1) for name, (at, bit) in HWCAP_BITS.items()}


@dataclass(frozen=True)
class Delegation:
    partitions: int
    whole_graph: bool
    ops: int  # the model's own ops (delegate nodes not counted)


def delegation(interpreter) -> Delegation:
    """How the interpreter's default delegate took the graph (after allocate_tensors)."""
    ops = interpreter._get_ops_details()  # the only per-node view the Python API offers
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    model_inputs = {d["index"] for d in interpreter.get_input_details()}
    model_outputs = {d["index"] for d in interpreter.get_output_details()}
    produced = {int(t) for op in ops if op["op_name"] != "DELEGATE" for t in op["outputs"]}
    whole = len(delegates) == 1 and (
        set(map(int, delegates[0]["outputs"])) == model_outputs
        and not (set(map(int, delegates[0]["inputs"])) - model_inputs) & produced
    )
    return Delegation(len(delegates), whole, len(ops) - len(delegates))


def describe(features: dict[str, bool], delegated: Delegation) -> str:
    caps = " ".join(f"{name}={'yes' if present else 'no'}" for name, present in features.items())
    if delegated.partitions == 0:
        xnnpack = f"XNNPACK: not applied, {delegated.ops} ops on the built-in kernels"
    else:
        extent = "whole graph" if delegated.whole_graph else "part of the graph"
        kernels = "NEON with dot product (SDOT)" if features["asimddp"] else "NEON without dot product"
        xnnpack = (
            f"XNNPACK: {delegated.partitions} partition(s), {extent} ({delegated.ops} ops): int8 kernels {kernels}"
        )
    return f"cpu features: {caps}; {xnnpack}"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m tools.arm64.xnnpack_probe INTERPRETER MODEL", file=sys.stderr)
        return 2
    from edge.detect.model import load_interpreter_class

    interpreter_class, _ = load_interpreter_class(argv[0])
    interpreter = interpreter_class(model_path=argv[1], num_threads=1)
    interpreter.allocate_tensors()
    print(describe(read_hwcaps(Path("/proc/self/auxv").read_bytes()), delegation(interpreter)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
