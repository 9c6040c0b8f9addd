"""The layer rule of edge/ (docs/architecture.md): a module imports only from layers below its own.

Every import in every module of edge/ is read with ast (top level, inside functions and under
TYPE_CHECKING alike: a lazy import is still a dependency). A frame flows source -> detect ->
scene -> sinks; the packages are ranked so that each one can be read, tested and replaced
without the ones above it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.layers import EDGE, LAYERS, edge_imports, layer_of, module_name, render_svg

pytestmark = pytest.mark.unit

# Known upward imports, each with why it is still there. The test fails when one disappears,
# so this list only shrinks.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}


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


def test_the_picture_of_the_layers_is_drawn_from_today_s_code():
    picture = Path(__file__).resolve().parent.parent / "docs" / "architecture.svg"
    assert picture.read_text(encoding="utf-8") == render_svg(), (
        "docs/architecture.svg is out of date: python -m tools.layers --svg docs/architecture.svg"
    )


def test_the_picture_lists_each_module_and_what_each_layer_imports(tmp_path):
    edge = tmp_path / "edge"
    for name, text in {
        "__init__.py": "",
        "config.py": "",
        "detect/__init__.py": "",
        "detect/decode.py": "import edge.config\n",
        "scene/__init__.py": "",
        "scene/stage.py": "from edge.detect.decode import x\n",
    }.items():
        (edge / name).parent.mkdir(parents=True, exist_ok=True)
        (edge / name).write_text(text)
    picture = render_svg(edge)
    assert ">decode<" in picture and ">stage<" in picture and ">config<" in picture
    assert "imports: detect</text>" in picture and "imports: base</text>" in picture
