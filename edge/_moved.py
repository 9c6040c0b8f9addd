"""Module paths from before the stage packages: each still imports, with a DeprecationWarning.

edge/ was one flat folder of modules until the stages became packages (docs/architecture.md).
Code that embeds edge-face may still say ``from edge.detector import FaceDetector`` or ``from
edge.imageio import load_image``: such imports keep working for one more release, give the very
same module objects, and warn with the new path. Three old modules share their name with a new
package (``edge.scene``, ``edge.mqtt``, ``edge.daemon``); their names are served through the
package's ``__getattr__`` by :func:`moved_name`. A name that left a module which stays
(``from edge.config import check_config_main``) is served by :func:`moved_attribute`. Delete
this module, and its line in ``edge/__init__.py``, when the old paths go.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

MOVED_MODULES: dict[str, str] = {
    "edge.atomic": "edge.common.atomic",
    "edge.files": "edge.common.files",
    "edge.redact": "edge.common.redact",
    "edge.untrusted": "edge.common.untrusted",
    "edge.options": "edge.common.options",
    "edge.sysinfo": "edge.common.sysinfo",
    "edge.sidecar": "edge.detect.sidecar",
    "edge.model": "edge.detect.model",
    "edge.priors": "edge.detect.priors",
    "edge.preprocess": "edge.detect.preprocess",
    "edge.decode": "edge.detect.decode",
    "edge.detector": "edge.detect.detector",
    "edge.native_stderr": "edge.detect.native_stderr",
    "edge.imageio": "edge.sources.imageio",
    "edge.motion": "edge.scene.motion",
    "edge.scene_stage": "edge.scene.stage",
    "edge.events": "edge.scene.events",
    "edge.tracks": "edge.scene.tracks",
    "edge.track_identity": "edge.recognize.identity",
    "edge.scene.track_identity": "edge.recognize.identity",
    "edge.mqtt_client": "edge.mqtt.client",
    "edge.outbox": "edge.mqtt.outbox",
    "edge.sinks": "edge.mqtt.sinks",
    "edge.discovery": "edge.mqtt.discovery",
    "edge.controls": "edge.mqtt.controls",
    "edge.command_intake": "edge.mqtt.command_intake",
    "edge.forget": "edge.ops.forget",
    "edge.fleet": "edge.ops.fleet",
    "edge.asuser": "edge.ops.asuser",
    "edge.device_identity": "edge.ops.device_identity",
    "edge.sdnotify": "edge.daemon.sdnotify",
    "edge.memory": "edge.daemon.memory",
    "edge.startup_signals": "edge.daemon.startup_signals",
    "edge.preview": "edge.daemon.preview",
    "edge.snapshot": "edge.daemon.snapshot",
}
# Old modules whose path is now a package: old name -> the module that holds their contents.
MODULES_NOW_PACKAGES: dict[str, str] = {
    "edge.scene": "edge.scene.rules",
    "edge.mqtt": "edge.mqtt.sink",
    "edge.daemon": "edge.daemon.loop",
}
# Names that left a module which stays: (module, name) -> the module that holds the name now.
MOVED_NAMES: dict[tuple[str, str], str] = {
    # check-config runs as another user and checks the controls' folder: an operator command.
    ("edge.config", "check_config_main"): "edge.ops.check_config",
}


# This file, then the import system's frames (which warnings.warn does not count).
_IMPORT_SYSTEM = (__file__, "<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>")


def _warn_moved(old: str, new: str) -> None:
    """A DeprecationWarning attributed to the line that used the old path, not to the import system."""
    frame = sys._getframe(1)
    level = 2  # warn's stacklevel 1 is this function, 2 its caller, and so on
    while frame.f_back is not None and (
        frame.f_code.co_filename in _IMPORT_SYSTEM or frame.f_code.co_name == "__getattr__"
    ):
        if frame.f_code.co_filename not in _IMPORT_SYSTEM[1:]:  # warn skips the import system's own frames
            level += 1
        frame = frame.f_back
    warnings.warn(f"{old} moved to {new}; import it from there", DeprecationWarning, stacklevel=level)


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds each old module path of :data:`MOVED_MODULES` and loads it as its new module."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def exec_module(self, module: ModuleType) -> None:
        # The import system returns whatever sys.modules holds under the name once this returns:
        # the new module itself, so both paths name one module (a patch through either works).
        new = MOVED_MODULES[module.__name__]
        _warn_moved(module.__name__, new)
        sys.modules[module.__name__] = importlib.import_module(new)


def install() -> None:
    """Let the old module paths import (once per process, whoever imports ``edge`` first)."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())


def moved_name(package: str, name: str) -> object:
    """``package.name`` where ``package`` was a module before: the name from the module that holds
    its contents now, with a warning. AttributeError for a submodule of the package not imported
    yet (so ``from package import submodule`` does not load the old module's dependencies) and
    for names the old module never had."""
    new = MODULES_NOW_PACKAGES[package]
    if name.startswith("_") or importlib.util.find_spec(f"{package}.{name}") is not None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    module = importlib.import_module(new)
    if not hasattr(module, name):
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    _warn_moved(f"{package}.{name}", f"{new}.{name}")
    return getattr(module, name)


def moved_attribute(module: str, name: str) -> object:
    """``module.name`` for a name of :data:`MOVED_NAMES`: from its new module, with a warning;
    AttributeError for any other name (the module's ``__getattr__`` is only asked for names it
    does not have)."""
    new = MOVED_NAMES.get((module, name))
    if new is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    _warn_moved(f"{module}.{name}", f"{new}.{name}")
    return getattr(importlib.import_module(new), name)
