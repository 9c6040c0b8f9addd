"""The layer rule of edge/ (docs/architecture.md): a module imports only from layers below its own.

Every import in every module of edge/ is read with ast (top level, inside functions and under
TYPE_CHECKING alike: a lazy import is still a dependency). A frame flows source -> detect ->
scene -> sinks; the packages are ranked so that each one can be read, tested and replaced
without the ones above it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

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

# Known upward imports, each with why it is still there. The test fails when one disappears,
# so this list only shrinks.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}


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


def module_name(path: Path) -> str:
    parts = path.relative_to(EDGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(dotted: str) -> bool:
    path = EDGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def edge_imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import of an edge module in the file of ``module``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:  # `from edge.x import submodule` depends on the submodule
                target = f"{base}.{alias.name}"
                found.append((node.lineno, target if is_module(target) else base))
    return sorted((line, name) for line, name in found if name == "edge" or name.startswith("edge."))


def upward_imports() -> tuple[list[str], set[tuple[str, str]]]:
    """Every import that breaks the rule, as one line each, and the allowed ones that occur."""
    problems, allowed_seen = [], set()
    for path in sorted(EDGE.rglob("*.py")):
        importer = module_name(path)
        own_layer, own_rank = layer_of(importer)
        for line, imported in edge_imports(path, importer):
            layer, rank = layer_of(imported)
            if layer == own_layer or rank < own_rank:
                continue
            if (importer, imported) in ALLOWED_UPWARD:
                allowed_seen.add((importer, imported))
                continue
            way = "sideways" if rank == own_rank else "upward"
            problems.append(
                f"{path.relative_to(EDGE.parent)}:{line}: {importer} ({own_layer}, rank {own_rank}) imports "
                f"{imported} ({layer}, rank {rank}) {way}"
            )
    return problems, allowed_seen


def test_every_module_of_edge_is_in_a_layer():
    # "edge" itself is a prefix of base: a new top-level module lands in base silently, so name them.
    top_level = {module_name(path) for path in EDGE.glob("*.py")} | {
        module_name(path.parent) for path in EDGE.glob("*/__init__.py")
    }
    placed = {prefix for _, _, prefixes in LAYERS for prefix in prefixes}
    assert sorted(top_level - placed) == [], "each top-level module or package of edge/ belongs in LAYERS"


def test_imports_go_only_downward_across_the_layers():
    problems, allowed_seen = upward_imports()
    assert problems == [], "imports across layers go downward only (docs/architecture.md):\n" + "\n".join(problems)
    assert sorted(set(ALLOWED_UPWARD) - allowed_seen) == [], "an allowed upward import is gone: remove it from the list"


def test_the_checker_sees_an_upward_import_a_lazy_one_and_a_relative_one(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from edge.daemon.loop import run_main\n"
        "def f():\n    import edge.mqtt.sink\n"
        "from ..detect import decode\n"
        "from edge.detect import FaceDetector\n"
    )
    imports = [name for _, name in edge_imports(probe, "edge.scene.probe")]
    assert imports == ["edge.daemon.loop", "edge.mqtt.sink", "edge.detect.decode", "edge.detect"]
    assert layer_of("edge.scene.probe") == ("scene", 3) and layer_of("edge.daemon.loop") == ("daemon", 6)
    assert layer_of("edge") == ("base", 0) and layer_of("edge.recognize.models") == ("recognize", 3)


def test_a_settings_module_is_base_and_may_not_import_its_own_stage(tmp_path):
    probe = tmp_path / "settings.py"
    probe.write_text("from edge.common.config_rules import key\nfrom edge.scene.rules import apply_scene\n")
    assert layer_of("edge.scene.settings") == ("base", 0) and layer_of("edge.scene.stage") == ("scene", 3)
    assert layer_of("edge.scene.settings_helpers") == ("scene", 3)  # only the settings module itself
    imports = [(layer_of(name), name) for _, name in edge_imports(probe, "edge.scene.settings")]
    assert imports == [(("base", 0), "edge.common.config_rules"), (("scene", 3), "edge.scene.rules")]
