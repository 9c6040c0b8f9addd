"""The error the scene and motion settings raise when a value is not allowed.

It carries the same three parts as the config loader's ``ConfigError`` (key, value, what is
allowed), so the loader turns one into the other without rewording, and the limits are
stated once: in the dataclasses that check them (edge.scene.settings.MotionOptions and
SceneOptions).
"""

from __future__ import annotations

import json
from typing import Any


class OptionError(ValueError):
    """``key`` (e.g. "motion.threshold", "scene.masks[1][2]"), the offending ``value`` and
    what is ``allowed``; ``str()`` is one line."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(key, value, allowed)
        self.key, self.value, self.allowed = key, value, allowed

    def __str__(self) -> str:
        return f"{self.key}: {show_value(self.value)} is not allowed ({self.allowed})"


def show_value(value: Any) -> str:
    """A value as TOML would spell it (strings quoted, true/false), cut to one short line."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def is_number(value: Any) -> bool:
    """An int or float, not a bool (TOML's true is not 1)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
