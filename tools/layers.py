"""The layers of edge/ and the imports between them, read from the code; the data-flow picture.

The layer rule (docs/architecture.md): a module imports only from its own layer and from layers of
a lower rank. ``tests/test_layers.py`` enforces it with the reader here; ``docs/architecture.svg``
is drawn by :func:`render_svg` from the same reading, so the picture cannot drift from the code
(the test compares them). Standard library only.

    python -m tools.layers --svg docs/architecture.svg    # redraw after adding a module or an import
    python -m tools.layers --check docs/architecture.svg  # exit 1 if the picture is out of date
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable
from html import escape
from pathlib import Path

EDGE = Path(__file__).resolve().parent.parent / "edge"

# (layer, rank, the module prefixes in it). A module may import from its own layer and from any
# layer of a lower rank; never upward, never sideways into another layer of the same rank.
LAYERS: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("base", 0, ("edge.common", "edge.config", "edge.exitcodes", "edge.models", "edge._moved", "edge")),
    ("detect", 1, ("edge.detect",)),
    ("sources", 2, ("edge.sources",)),
    ("scene", 3, ("edge.scene",)),
    ("recognize", 3, ("edge.recognize",)),
    ("mqtt", 4, ("edge.mqtt",)),
    ("ops", 5, ("edge.ops",)),
    ("daemon", 6, ("edge.daemon",)),
    ("cli", 7, ("edge.cli",)),
)

# A stage's settings module (edge/<stage>/settings.py: the config sections it owns, docs/
# architecture.md) is a declaration, not stage code: it belongs to base, so the loader
# (edge.config) and any stage may read it, and it may import only base (never its own stage's
# numpy code). The last part of the module name decides, so a new stage's settings module is
# placed, and checked, without an entry here.
SETTINGS_MODULE = "settings"


def layer_of(module: str) -> tuple[str, int]:
    """The layer of a dotted module name under edge: base for a stage's settings module, else the
    layer with the longest matching prefix."""
    parts = module.split(".")
    if len(parts) == 3 and parts[-1] == SETTINGS_MODULE:
        return LAYERS[0][0], LAYERS[0][1]
    best: tuple[int, str, int] | None = None
    for name, rank, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), name, rank)
    if best is None:
        raise LookupError(module)
    return best[1], best[2]


def module_name(path: Path, edge: Path = EDGE) -> str:
    parts = path.relative_to(edge.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(dotted: str, edge: Path = EDGE) -> bool:
    path = edge.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def edge_imports(path: Path, module: str, edge: Path = EDGE) -> list[tuple[int, str]]:
    """(line, imported module) for every import of an edge module in the file of ``module``:
    top level, inside functions and under TYPE_CHECKING alike (a lazy import is a dependency)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:  # `from edge.x import submodule` depends on the submodule
                target = f"{base}.{alias.name}"
                found.append((node.lineno, target if is_module(target, edge) else base))
    return sorted((line, name) for line, name in found if name == "edge" or name.startswith("edge."))


def modules(edge: Path = EDGE) -> Iterable[tuple[Path, str]]:
    """(file, dotted name) of every module of ``edge``, in path order."""
    for path in sorted(edge.rglob("*.py")):
        yield path, module_name(path, edge)


def layer_arrows(edge: Path = EDGE) -> set[tuple[str, str]]:
    """(importing layer, imported layer) for every pair of layers an import joins."""
    arrows = set()
    for path, importer in modules(edge):
        own = layer_of(importer)[0]
        arrows |= {(own, layer_of(imported)[0]) for _, imported in edge_imports(path, importer, edge)}
    return {(a, b) for a, b in arrows if a != b}


def layer_members(edge: Path = EDGE) -> dict[str, list[str]]:
    """Each layer's modules as short names (``detect/decode``, ``config``), in path order."""
    members: dict[str, list[str]] = {name: [] for name, _, _ in LAYERS}
    for path, module in modules(edge):
        if path.name == "__init__.py":
            continue
        members[layer_of(module)[0]].append(module.removeprefix("edge.").replace(".", "/"))
    return members


# --- the picture --------------------------------------------------------------------------------

# Where each layer stands in the picture: (row, first column, columns spanned) on a grid of
# _COLUMNS. The stages a frame passes stand left to right in the order it passes them.
_PLACES: dict[str, tuple[int, int, int]] = {
    "cli": (0, 0, 5),
    "daemon": (1, 0, 5),
    "sources": (2, 0, 1),
    "detect": (2, 1, 1),
    "scene": (2, 2, 1),
    "mqtt": (2, 3, 1),
    "ops": (2, 4, 1),
    "recognize": (3, 2, 1),
    "base": (4, 0, 5),
}
# What flows between the stages (the interfaces of docs/architecture.md), as the daemon's loop
# hands it on: (from, to, label).
FLOW: tuple[tuple[str, str, str], ...] = (
    ("sources", "detect", "Frame"),
    ("detect", "scene", "Detections"),
    ("scene", "mqtt", "Event"),
    ("scene", "recognize", "track views -> names"),
)
_COLUMNS, _CELL, _GAP, _LINE, _MARGIN, _TOP = 5, 210, 44, 13, 16, 34


def _box_lines(name: str, members: list[str], columns: int) -> list[str]:
    """The text lines of a box: its modules, in as many text columns as the box spans."""
    names = [m.split("/", 1)[1] if "/" in m and m.split("/", 1)[0] == name else m for m in members]
    per_column = -(-len(names) // columns) if names else 0
    return [
        "  ".join(
            f"{names[c * per_column + r]:<24}" for c in range(columns) if c * per_column + r < len(names)
        ).rstrip()
        for r in range(per_column)
    ]


def render_svg(edge: Path = EDGE) -> str:
    """The stages left to right in the order a frame passes them, the daemon that wires them above,
    base below; in each box its modules and the layers it imports (read from the code), and the
    data-flow arrows of :data:`FLOW`. Deterministic: the same code gives the same bytes."""
    members, arrows = layer_members(edge), layer_arrows(edge)
    rank_of = {name: rank for name, rank, _ in LAYERS}
    lines = {name: _box_lines(name, members[name], span) for name, (_, _, span) in _PLACES.items()}
    row_heights: dict[int, int] = {}
    for name, (row, _, _) in _PLACES.items():
        row_heights[row] = max(row_heights.get(row, 0), 44 + len(lines[name]) * _LINE)
    row_tops, y = {}, _TOP
    for row in sorted(row_heights):
        row_tops[row], y = y, y + row_heights[row] + _GAP
    width = 2 * _MARGIN + _COLUMNS * _CELL + (_COLUMNS - 1) * _GAP
    boxes: dict[str, tuple[int, int, int, int]] = {}  # x, y, width, height
    for name, (row, column, span) in _PLACES.items():
        x = _MARGIN + column * (_CELL + _GAP)
        boxes[name] = (x, row_tops[row], span * _CELL + (span - 1) * _GAP, row_heights[row])
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y - _GAP + _MARGIN}" '
        'font-family="monospace" font-size="11">',
        '<defs><marker id="head" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#06c"/></marker></defs>',
        f'<rect width="{width}" height="{y - _GAP + _MARGIN}" fill="white"/>',
        f'<text x="{_MARGIN}" y="{_MARGIN + 6}" font-size="13">edge/: a frame goes left to right; each box '
        "imports only the layers of a lower [rank]. Drawn from the code: python -m tools.layers</text>",
    ]
    for name, (x, top, box_width, height) in boxes.items():
        imports = sorted((b for a, b in arrows if a == name), key=lambda b: (-rank_of[b], b))
        out += [
            f'<rect x="{x}" y="{top}" width="{box_width}" height="{height}" rx="6" fill="#f4f4ee" stroke="#333"/>',
            f'<text x="{x + 8}" y="{top + 16}" font-weight="bold" font-size="12">{escape(name)} [{rank_of[name]}]</text>',
            f'<text x="{x + 8}" y="{top + 30}" fill="#777" font-size="10">imports: {escape(", ".join(imports) or "-")}</text>',
        ]
        out += [
            f'<text x="{x + 8}" y="{top + 44 + i * _LINE}" xml:space="preserve">{escape(line)}</text>'
            for i, line in enumerate(lines[name])
        ]
    for source, target, label in FLOW:
        (x1, y1, w1, h1), (x2, y2, w2, _) = boxes[source], boxes[target]
        if y1 == y2:  # side by side: edge to edge beside the titles, the label over the gap
            start, end = (x1 + w1, y1 + 12), (x2, y2 + 12)
            label_at = ((start[0] + end[0]) // 2, y1 - 6)
        else:  # one under the other: the label beside the arrow
            start, end = (x1 + w1 // 2, y1 + h1), (x2 + w2 // 2, y2)
            label_at = (start[0] + 6 + 4 * len(label), (start[1] + end[1]) // 2 + 4)
        out.append(
            f'<line x1="{start[0]}" y1="{start[1]}" x2="{end[0]}" y2="{end[1]}" stroke="#06c" stroke-width="2" '
            'marker-end="url(#head)"/>'
        )
        out.append(f'<text x="{label_at[0]}" y="{label_at[1]}" fill="#06c" text-anchor="middle">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.layers", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--svg", type=Path, help="write the picture of the layers to this file")
    group.add_argument("--check", type=Path, help="exit 1 if this picture differs from the code's")
    args = parser.parse_args(argv)
    picture = render_svg()
    if args.svg is not None:
        args.svg.write_text(picture, encoding="utf-8")
        return 0
    if args.check.read_text(encoding="utf-8") != picture:
        print(f"{args.check}: out of date with edge/; redraw it with python -m tools.layers --svg {args.check}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
