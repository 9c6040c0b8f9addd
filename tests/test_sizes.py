"""The size rule of edge/ (issue 20, docs/architecture.md): no class over 250 lines, no function
over 60. A class or function that grows past them is a room with two jobs: cut it along its seam
(as the daemon's loop, reload and stats were cut) rather than raise the limit.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

EDGE = Path(__file__).resolve().parent.parent / "edge"
MAX_CLASS_LINES = 250
MAX_FUNCTION_LINES = 60


def _oversized(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        lines = (node.end_lineno or node.lineno) - node.lineno + 1 if isinstance(node, ast.stmt) else 0
        if isinstance(node, ast.ClassDef) and lines > MAX_CLASS_LINES:
            found.append(f"class {node.name} ({lines} lines, limit {MAX_CLASS_LINES})")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and lines > MAX_FUNCTION_LINES:
            found.append(f"function {node.name} ({lines} lines, limit {MAX_FUNCTION_LINES})")
    return found


def test_no_class_or_function_in_edge_is_over_its_limit() -> None:
    problems = [
        f"{path.relative_to(EDGE.parent)}: {what}"
        for path in sorted(EDGE.rglob("*.py"))
        for what in _oversized(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    ]
    assert problems == []


def test_the_rule_sees_an_oversized_function_and_class() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    source = f"def long():\n{body}\n\nclass Big:\n" + "\n".join(f"    y{i} = {i}" for i in range(MAX_CLASS_LINES))
    assert _oversized(ast.parse(source)) == [
        f"function long ({MAX_FUNCTION_LINES + 1} lines, limit {MAX_FUNCTION_LINES})",
        f"class Big ({MAX_CLASS_LINES + 1} lines, limit {MAX_CLASS_LINES})",
    ]
