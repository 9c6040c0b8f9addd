"""Module paths from before the stage packages (edge/_moved.py): each still imports, as the very
same module or object as its new path, and warns with the new path."""

from __future__ import annotations

import importlib
import sys

import pytest

import edge
from edge._moved import MODULES_NOW_PACKAGES, MOVED_MODULES

pytestmark = pytest.mark.unit


@pytest.fixture
def forget_old_paths(monkeypatch):
    """Each test imports an old path afresh, and leaves sys.modules and the edge package as they were."""
    for old in MOVED_MODULES:
        monkeypatch.delitem(sys.modules, old, raising=False)
        monkeypatch.delattr(edge, old.rpartition(".")[2], raising=False)


@pytest.mark.parametrize("old, new", sorted(MOVED_MODULES.items()))
def test_an_old_module_path_is_the_new_module_and_warns(forget_old_paths, old, new):
    namespace: dict[str, object] = {}
    with pytest.warns(DeprecationWarning, match=rf"^{old} moved to {new}; import it from there$") as caught:
        exec(compile(f"import {old} as module", "caller.py", "exec"), namespace)
    assert namespace["module"] is importlib.import_module(new)
    assert caught[0].filename == "caller.py"  # the line that imports, not the import system


def test_the_readme_embedding_example_with_its_old_imports_still_works(forget_old_paths):
    namespace: dict[str, object] = {}
    with pytest.warns(DeprecationWarning, match="edge.detector moved to edge.detect.detector"):
        exec("from edge.detector import DetectorOptions, FaceDetector", namespace)
    from edge.detect import DetectorOptions, FaceDetector

    assert namespace["FaceDetector"] is FaceDetector and namespace["DetectorOptions"] is DetectorOptions


@pytest.mark.parametrize(
    "old, name", [("edge.mqtt", "MqttSink"), ("edge.daemon", "run_main"), ("edge.scene", "SceneFilter")]
)
def test_a_name_of_a_module_that_became_a_package_still_resolves_and_warns(old, name):
    new = MODULES_NOW_PACKAGES[old]
    with pytest.warns(DeprecationWarning, match=rf"^{old}.{name} moved to {new}.{name}; import it from there$"):
        value = getattr(importlib.import_module(old), name)
    assert value is getattr(importlib.import_module(new), name)
    with pytest.raises(AttributeError, match=f"module '{old}' has no attribute 'no_such_name'"):
        getattr(importlib.import_module(old), "no_such_name")  # noqa: B009


def test_the_new_public_paths_do_not_warn(recwarn):
    from edge.detect import Detections, DetectorOptions, FaceDetector, ModelError, PostprocessOptions
    from edge.detect.detector import FaceDetector as DirectFaceDetector

    assert FaceDetector is DirectFaceDetector
    assert {Detections.__name__, DetectorOptions.__name__, ModelError.__name__, PostprocessOptions.__name__}
    assert [w for w in recwarn if issubclass(w.category, DeprecationWarning)] == []
