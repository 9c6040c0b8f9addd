"""The documented [motion] and [scene] sections of examples/edge-face.toml, held to the
code: parsed, they give exactly the defaults of MotionOptions and SceneOptions, they
document every key, and their commented examples are valid.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from edge.common.options import OptionError
from edge.scene.motion import MotionOptions, motion_options_from_toml
from edge.scene.rules import SceneOptions, scene_options_from_toml

pytestmark = pytest.mark.unit

# The [motion] and [scene] part of the shipped example, from its [motion] header on.
SNIPPET = (Path(__file__).resolve().parent.parent / "examples" / "edge-face.toml").read_text(encoding="utf-8")
SNIPPET = SNIPPET[SNIPPET.index("[motion]\n") :]


@pytest.fixture(scope="module")
def snippet() -> dict:
    return tomllib.loads(SNIPPET)


def test_the_documented_values_are_the_defaults(snippet):
    assert motion_options_from_toml(snippet["motion"]) == MotionOptions()
    assert scene_options_from_toml(snippet["scene"]) == SceneOptions()


@pytest.mark.parametrize("options, section", [(MotionOptions, "motion"), (SceneOptions, "scene")])
def test_every_key_is_documented(options, section):
    text = SNIPPET.split(f"[{section}]", 1)[1]
    for field in dataclasses.fields(options):
        assert re.search(rf"^#? ?(\[\[scene\.)?{field.name}\b", text, re.MULTILINE), field.name


def test_the_commented_examples_are_valid(snippet):
    uncommented = re.sub(r"^# (?=(masks|max_face_size|name|polygon|\[\[|  \[\[|\]))", "", SNIPPET, flags=re.MULTILINE)
    uncommented = uncommented.replace("masks = []\n", "")
    table = tomllib.loads(uncommented)
    options = scene_options_from_toml(table["scene"])
    assert len(options.masks) == 1 and options.max_face_size == 200 and options.zone_names == ("door",)


def test_an_unknown_motion_key_is_refused_with_the_known_ones():
    with pytest.raises(
        OptionError,
        match=r"^motion\.treshold: \"treshold\" is not allowed \(a key of \[motion\]: enabled, idle_interval, threshold",
    ):
        motion_options_from_toml({"treshold": 20})
