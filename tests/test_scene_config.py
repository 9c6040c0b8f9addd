"""The documented [motion] and [scene] sections: what examples/edge-face.toml will say.

SNIPPET is the text for examples/edge-face.toml (the config loader does not know these
sections yet); these tests hold it to the code: parsed, it gives exactly the defaults of
MotionOptions and SceneOptions, and it documents every key they have.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib

import pytest

from edge.motion import MotionOptions, motion_options_from_toml
from edge.options import OptionError
from edge.scene import SceneOptions, scene_options_from_toml

SNIPPET = """\
[motion]
# Run the face detector only when the picture changes. A cheap motion detector compares a
# small (about 100 rows) gray copy of each frame with a running average of the scene:
# while something moves, or while a face is present, every frame is detected; a still
# scene without a face is detected once every idle_interval seconds. Stats report the
# share of frames detected ("detected_share") and the motion state.
# false: detect every frame.
enabled = true
# Seconds (> 0, <= 3600) between detections of a still scene without a face: someone who
# comes into view without moving (or sits still) is found within this time.
idle_interval = 2.0
# Gray levels (1-255) a pixel must change by to count as changed; lower is more sensitive.
threshold = 30
# Fraction of the frame (>= 0, < 1; masked parts left out) that must change for motion.
# 0.002 is a patch of about 18x18 pixels changing in a 320x240 frame.
min_area = 0.002
# How fast the background follows the scene, per frame (> 0, < 1): something that stops
# moving (a chair pushed aside) becomes background after about 1 / alpha frames.
alpha = 0.02
# When more than this fraction of the frame (above min_area, <= 1) changes at once (lights
# switched, the camera's IR filter flipping) the background starts afresh: one detection,
# not motion on every frame after it.
global_change = 0.5

[scene]
# Shapes are polygons: 3-100 [x, y] points in fractions of the frame width and height
# (0..1, from the top left corner), so they fit every camera resolution. A face belongs to
# a shape when the centre of its box is inside it.
# Masks (up to 32): faces in them are ignored (a poster, a TV, a mirror), and so is motion.
# Default: none.
# masks = [
#   [[0.70, 0.00], [1.00, 0.00], [1.00, 0.40], [0.70, 0.40]],
# ]
masks = []
# Faces less tall than this many pixels of the frame height are ignored (faces far away
# or printed small); 0-8192, 0 keeps all.
min_face_size = 0
# Faces taller than this many pixels are ignored (above min_face_size, <= 8192).
# Default: no upper limit.
# max_face_size = 200
# Zones (up to 16): named shapes, each with its own presence and count in the state topic,
# its own events ("zone" in the event) and its own Home Assistant entities. A face counts
# in every zone holding its centre. Names: 1-32 characters of a-z, 0-9 and '_'.
# [[scene.zones]]
# name = "door"
# polygon = [[0.00, 0.10], [0.35, 0.10], [0.35, 1.00], [0.00, 1.00]]
"""


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
    with pytest.raises(OptionError, match=r"^motion\.treshold: \"treshold\" is not allowed \(a key of \[motion\]: enabled, idle_interval, threshold"):
        motion_options_from_toml({"treshold": 20})
