"""Scene rules: polygon validation, point-in-polygon against independent references, masks,
face-size limits and zones on the real model's detections of real photos."""

from __future__ import annotations

import numpy as np
import pytest

from edge.common.options import OptionError
from edge.detect.decode import Detections
from edge.detect.preprocess import resize_bilinear
from edge.scene.rules import (
    MAX_POLYGON_POINTS,
    Polygon,
    SceneFilter,
    SceneOptions,
    Zone,
    apply_scene,
    box_centres,
    draw_scene,
    make_polygon,
    make_zone,
    points_in_polygon,
    polygon_area,
    rasterize_polygons,
)
from edge.sources.imageio import load_image

pytestmark = pytest.mark.unit

WIDTH, HEIGHT = 320, 240


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, message",
    [
        (
            [[0, 0], [1, 0]],
            r"^scene\.masks\[0\]: \[\[0, 0\], \[1, 0\]\] is not allowed \(a list of 3-100 \[x, y\] points",
        ),
        ("0,0 1,0 1,1", r"^scene\.masks\[0\]: \"0,0 1,0 1,1\" is not allowed \(a list of 3-100"),
        ([[0, 0], [1, 0], [1.5, 1]], r"^scene\.masks\[0\]\[2\]: \[1\.5, 1\] is not allowed \(x and y from 0 to 1"),
        ([[0, 0], [1, 0], [-0.1, 1]], r"^scene\.masks\[0\]\[2\]: \[-0\.1, 1\] is not allowed \(x and y from 0 to 1"),
        ([[0, 0], [1, 0], [float("nan"), 1]], r"^scene\.masks\[0\]\[2\]: \[NaN, 1\] is not allowed"),
        ([[0, 0], [1, 0], [float("inf"), 1]], r"^scene\.masks\[0\]\[2\]: \[Infinity, 1\] is not allowed"),
        (
            [[0, 0], [1, 0], [True, 1]],
            r"^scene\.masks\[0\]\[2\]: \[true, 1\] is not allowed \(a point \[x, y\] of two numbers",
        ),
        ([[0, 0], [1, 0], [1]], r"^scene\.masks\[0\]\[2\]: \[1\] is not allowed \(a point \[x, y\] of two numbers"),
        ([[0, 0], [1, 0], "1,1"], r"^scene\.masks\[0\]\[2\]: \"1,1\" is not allowed \(a point"),
        ([[0, 0], [0.5, 0.5], [1, 1]], r"^scene\.masks\[0\]: .* is not allowed \(a polygon with an area"),
        ([[0.2, 0.2]] * 4, r"^scene\.masks\[0\]: .* is not allowed \(a polygon with an area"),
        (
            [[0, 0]] * (MAX_POLYGON_POINTS + 1),
            r"^scene\.masks\[0\]: \[\[0, 0\], .*\.\.\. is not allowed \(a list of 3-100",
        ),
    ],
)
def test_bad_polygons_are_refused_with_one_line_naming_the_point(value, message):
    with pytest.raises(OptionError, match=message) as caught:
        make_polygon(value, "scene.masks[0]")
    assert "\n" not in str(caught.value)


def test_a_good_polygon_keeps_its_points():
    polygon = make_polygon([[0, 0], [1, 0], [1, 1], [0, 1]])
    assert polygon.vertices.dtype == np.float64 and polygon.vertices.shape == (4, 2)
    assert polygon.to_list() == [[0, 0], [1, 0], [1, 1], [0, 1]]
    assert polygon_area(polygon.vertices) == 1.0


def test_options_holding_polygons_compare_and_hash_as_values():
    """A config reload compares old and new settings: that must not trip over arrays."""
    square = [[0, 0], [1, 0], [1, 1], [0, 1]]
    a = SceneOptions(masks=(make_polygon(square),), zones=(make_zone("door", square),))
    b = SceneOptions(masks=(make_polygon(square),), zones=(make_zone("door", square),))
    assert a == b and hash(a) == hash(b)
    assert a != SceneOptions(masks=(make_polygon(square[:3]),), zones=(make_zone("door", square),))
    with pytest.raises(ValueError):
        make_polygon(square).vertices[0, 0] = 0.5  # read-only: the tuple and the array stay one


@pytest.mark.parametrize("name", ["", "Door", "front door", "a" * 33, "tür", 5, None])
def test_zone_names_must_be_usable_in_topics_and_ids(name):
    with pytest.raises(OptionError, match=r"^scene\.zones\[0\]\.name: .* is not allowed \(1-32 characters"):
        make_zone(name, [[0, 0], [1, 0], [1, 1]], "scene.zones[0]")


def test_zone_polygon_errors_name_the_zone():
    with pytest.raises(OptionError, match=r"scene\.zones\[1\]\.polygon\[0\]"):
        make_zone("door", [[2, 0], [1, 0], [1, 1]], "scene.zones[1]")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"min_face_size": -1}, r"scene\.min_face_size"),
        ({"min_face_size": float("nan")}, r"scene\.min_face_size"),
        (
            {"min_face_size": 40, "max_face_size": 40},
            r"scene\.max_face_size: 40 is not allowed \(.*above scene\.min_face_size \(40\)",
        ),
        ({"max_face_size": float("inf")}, r"scene\.max_face_size"),
        ({"min_face_size": True}, r"scene\.min_face_size: true is not allowed"),
        ({"max_face_size": 10_000}, r"scene\.max_face_size: 10000 is not allowed \(.*at most 8192"),
    ],
)
def test_bad_size_limits_are_refused(options, message):
    with pytest.raises(OptionError, match=message):
        SceneOptions(**options)


def test_zone_names_must_be_unique():
    square = make_polygon([[0, 0], [1, 0], [1, 1], [0, 1]])
    with pytest.raises(
        OptionError, match=r'^scene\.zones\[2\]\.name: "door" is not allowed \(a name no other zone has\)$'
    ):
        SceneOptions(zones=(Zone("door", square), Zone("sofa", square), Zone("door", square)))


# --- point in polygon -----------------------------------------------------------------------


def random_convex_polygon(rng: np.random.Generator) -> np.ndarray:
    """Vertices of a random convex polygon, counter-clockwise (points on an ellipse)."""
    count = int(rng.integers(3, 12))
    angles = np.sort(rng.uniform(0, 2 * np.pi, count))
    centre = rng.uniform(0.3, 0.7, 2)
    radii = rng.uniform(0.05, 0.3, 2)
    return np.stack([centre[0] + radii[0] * np.cos(angles), centre[1] + radii[1] * np.sin(angles)], axis=1)


def inside_convex(points: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Reference for a counter-clockwise convex polygon: left of (or on) every edge."""
    edges = np.roll(vertices, -1, axis=0) - vertices
    relative = points[:, None, :] - vertices[None, :, :]
    cross = edges[None, :, 0] * relative[..., 1] - edges[None, :, 1] * relative[..., 0]
    return (cross >= 0).all(axis=1)


def distance_to_edges(points: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """(N,) distance from each point to the nearest edge of the polygon."""
    a, b = vertices, np.roll(vertices, -1, axis=0)
    ab = b - a
    t = ((points[:, None, :] - a) * ab).sum(axis=2) / (ab * ab).sum(axis=1)
    nearest = a + np.clip(t, 0, 1)[..., None] * ab
    return np.linalg.norm(points[:, None, :] - nearest, axis=2).min(axis=1)


def winding_number(points: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Reference for any simple polygon: the sum of the angles the edges subtend, / 2 pi."""
    a = vertices[None, :, :] - points[:, None, :]
    b = np.roll(vertices, -1, axis=0)[None, :, :] - points[:, None, :]
    angles = np.arctan2(a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0], (a * b).sum(axis=2))
    return np.round(angles.sum(axis=1) / (2 * np.pi)).astype(int)


def test_point_in_convex_polygons_matches_the_half_plane_reference():
    rng = np.random.default_rng(12)
    checked = 0
    for _ in range(300):
        vertices = random_convex_polygon(rng)
        points = rng.uniform(0, 1, (400, 2))
        clear = distance_to_edges(points, vertices) > 1e-9  # on an edge either answer is right
        expected = inside_convex(points, vertices)
        got = points_in_polygon(points, Polygon(vertices))
        assert np.array_equal(got[clear], expected[clear])
        # The vertex order does not matter: clockwise and rotated give the same answer.
        assert np.array_equal(
            points_in_polygon(points, Polygon(np.roll(vertices[::-1], 2, axis=0)))[clear], expected[clear]
        )
        checked += int(expected[clear].sum())
    assert checked > 5000  # the polygons are not all tiny: many points were inside


def test_point_in_star_shaped_concave_polygons_matches_the_winding_number():
    rng = np.random.default_rng(7)
    concave = 0
    for _ in range(200):
        count = int(rng.integers(5, 20))
        angles = np.sort(rng.uniform(0, 2 * np.pi, count))
        radii = rng.uniform(0.05, 0.45, count)  # uneven radii: mostly concave, always simple
        vertices = 0.5 + np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
        points = rng.uniform(0, 1, (400, 2))
        clear = distance_to_edges(points, vertices) > 1e-9
        expected = winding_number(points, vertices) != 0
        assert np.array_equal(points_in_polygon(points, Polygon(vertices))[clear], expected[clear])
        concave += not np.array_equal(inside_convex(points, vertices), expected)
    assert concave > 100  # the reference really was exercised on concave shapes


def test_box_centres_decide_membership():
    boxes = np.array([[0.1, 0.1, 0.3, 0.3], [0.1, 0.1, 0.9, 0.9], [0.6, 0.6, 0.8, 1.0]], np.float32)
    left_top = make_polygon([[0, 0], [0.45, 0], [0.45, 0.45], [0, 0.45]])
    assert np.allclose(box_centres(boxes), [[0.2, 0.2], [0.5, 0.5], [0.7, 0.8]])
    assert points_in_polygon(box_centres(boxes), left_top).tolist() == [True, False, False]
    assert points_in_polygon(np.zeros((0, 2)), left_top).shape == (0,)


def test_rasterized_polygons_cover_their_area_and_only_it():
    triangle = make_polygon([[0, 0], [1, 0], [0, 1]])
    square = make_polygon([[0.6, 0.6], [0.9, 0.6], [0.9, 0.9], [0.6, 0.9]])
    raster = rasterize_polygons([triangle, square], 400, 300)
    assert raster.shape == (300, 400) and raster.dtype == bool
    assert raster.mean() == pytest.approx(0.5 + 0.09, abs=0.005)
    ys, xs = np.mgrid[0:300, 0:400]
    centres = np.stack([(xs.ravel() + 0.5) / 400, (ys.ravel() + 0.5) / 300], axis=1)
    expected = (centres.sum(axis=1) < 1) | ((centres >= 0.6) & (centres <= 0.9)).all(axis=1)
    clear = np.abs(centres.sum(axis=1) - 1) > 1e-9
    assert np.array_equal(raster.ravel()[clear], expected[clear])
    assert not rasterize_polygons([], 40, 30).any()


# --- masks, limits and zones on real detections ---------------------------------------------


@pytest.fixture(scope="module")
def group(photo_paths, detector):
    """A 320x240 frame of four people side by side and the model's faces in it."""
    frame = resize_bilinear(load_image(next(p for p in photo_paths if p.name == "2.jpg")), WIDTH, HEIGHT)
    detections = detector.detect(frame)
    assert len(detections) == 4  # precondition: the model finds the four faces
    return frame, detections


def around(box: np.ndarray, margin: float = 0.02) -> list[list[float]]:
    x1, y1, x2, y2 = (float(np.clip(v, 0, 1)) for v in box)
    x1, y1, x2, y2 = max(0, x1 - margin), max(0, y1 - margin), min(1, x2 + margin), min(1, y2 + margin)
    return [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]


def rows(detections: Detections) -> list[tuple]:
    return [tuple(box) for box in detections.boxes.tolist()]


def test_no_rules_keep_every_face_unchanged(group):
    _, detections = group
    result = SceneFilter()(detections, HEIGHT)
    assert result.detections is detections
    assert result.zone_counts == {} and result.zones.shape == (4, 0)
    assert not SceneOptions().active


def test_a_mask_over_one_face_drops_that_face_only(group):
    _, detections = group
    target = 2
    options = SceneOptions(masks=(make_polygon(around(detections.boxes[target])),))
    result = apply_scene(detections, HEIGHT, options)
    expected = [row for i, row in enumerate(rows(detections)) if i != target]
    assert rows(result.detections) == expected
    assert result.detections.scores.tolist() == [s for i, s in enumerate(detections.scores.tolist()) if i != target]
    assert (result.dropped_masked, result.dropped_small, result.dropped_large) == (1, 0, 0)


def test_a_mask_that_covers_a_face_but_not_its_centre_keeps_it(group):
    _, detections = group
    x1, y1, x2, y2 = detections.boxes[0].tolist()
    left_half = [
        [max(0, x1 - 0.01), max(0, y1)],
        [(x1 + x2) / 2 - 0.01, max(0, y1)],
        [(x1 + x2) / 2 - 0.01, y2],
        [max(0, x1 - 0.01), y2],
    ]
    result = apply_scene(detections, HEIGHT, SceneOptions(masks=(make_polygon(left_half),)))
    assert len(result.detections) == 4


def test_face_size_limits_are_box_heights_in_frame_pixels(group):
    _, detections = group
    heights = (detections.boxes[:, 3].astype(np.float64) - detections.boxes[:, 1]) * HEIGHT  # as apply_scene does
    distinct = np.unique(heights)  # int8 box regressions can give two faces the same height
    assert len(distinct) >= 3  # precondition
    low = float((distinct[0] + distinct[1]) / 2)  # between the smallest and the next
    high = float((distinct[-2] + distinct[-1]) / 2)  # between the largest and the one before
    small, large = int((heights < low).sum()), int((heights > high).sum())
    result = apply_scene(detections, HEIGHT, SceneOptions(min_face_size=low))
    assert rows(result.detections) == [r for r, h in zip(rows(detections), heights, strict=True) if h >= low]
    assert result.dropped_small == small >= 1
    result = apply_scene(detections, HEIGHT, SceneOptions(max_face_size=high))
    assert rows(result.detections) == [r for r, h in zip(rows(detections), heights, strict=True) if h <= high]
    assert result.dropped_large == large >= 1
    result = apply_scene(detections, HEIGHT, SceneOptions(min_face_size=low, max_face_size=high))
    assert len(result.detections) == len(heights) - small - large
    assert (result.dropped_small, result.dropped_large) == (small, large)


def test_zones_count_the_faces_whose_centres_they_hold(group):
    _, detections = group
    centres = box_centres(detections.boxes)
    left = make_zone("left", [[0, 0], [0.5, 0], [0.5, 1], [0, 1]])
    right = make_zone("right", [[0.5, 0], [1, 0], [1, 1], [0.5, 1]])
    everywhere = make_zone("room", [[0, 0], [1, 0], [1, 1], [0, 1]])
    nowhere = make_zone("ceiling", [[0, 0], [1, 0], [1, 0.05], [0, 0.05]])
    result = apply_scene(detections, HEIGHT, SceneOptions(zones=(left, right, everywhere, nowhere)))
    on_left = int((centres[:, 0] < 0.5).sum())
    assert 0 < on_left < 4  # precondition: the people stand on both sides
    assert result.zone_counts == {"left": on_left, "right": 4 - on_left, "room": 4, "ceiling": 0}
    assert result.zones.shape == (4, 4)
    assert result.zones[:, 0].tolist() == (centres[:, 0] < 0.5).tolist()
    assert rows(result.faces_in_zone("right")) == [
        r for r, c in zip(rows(detections), centres, strict=True) if c[0] >= 0.5
    ]


def test_masked_faces_are_not_counted_in_zones(group):
    _, detections = group
    room = make_zone("room", [[0, 0], [1, 0], [1, 1], [0, 1]])
    options = SceneOptions(masks=(make_polygon(around(detections.boxes[0])),), zones=(room,))
    result = apply_scene(detections, HEIGHT, options)
    assert result.zone_counts == {"room": 3}


def test_a_frame_without_faces_has_zero_counts():
    room = make_zone("room", [[0, 0], [1, 0], [1, 1], [0, 1]])
    result = apply_scene(Detections.empty(), HEIGHT, SceneOptions(zones=(room,), min_face_size=10))
    assert len(result.detections) == 0 and result.zone_counts == {"room": 0}
    assert result.zones.shape == (0, 1)


def test_the_drawing_shades_the_mask_and_outlines_the_zone(group):
    frame, detections = group
    mask = make_polygon(around(detections.boxes[0]))
    zone = make_zone("door", [[0.55, 0.05], [0.95, 0.05], [0.95, 0.95], [0.55, 0.95]])
    options = SceneOptions(masks=(mask,), zones=(zone,))
    drawn = draw_scene(frame, options, detections)
    assert drawn.shape == frame.shape and drawn.dtype == np.uint8
    inside = rasterize_polygons([mask], WIDTH, HEIGHT)
    # Inside the mask the picture is pulled towards red; far from every shape it is untouched.
    red_shift = drawn[inside].astype(int) - frame[inside].astype(int)
    assert red_shift[:, 0].mean() > 20 and red_shift[:, 2].mean() < 0
    assert np.array_equal(drawn[200:230, 5:20], frame[200:230, 5:20])


# --- the [scene] table as the config file writes it -----------------------------------------

SCENE_TOML = """
[scene]
masks = [
  [[0.70, 0.00], [1.00, 0.00], [1.00, 0.40], [0.70, 0.40]],
  [[0.0, 0.0], [0.2, 0.0], [0.1, 0.2]],
]
min_face_size = 12
max_face_size = 200.5

[[scene.zones]]
name = "door"
polygon = [[0.00, 0.10], [0.35, 0.10], [0.35, 1.00], [0.00, 1.00]]

[[scene.zones]]
name = "sofa"
polygon = [[0.40, 0.50], [1.00, 0.50], [1.00, 1.00], [0.40, 1.00]]
"""


def test_the_scene_table_of_a_config_file_becomes_options():
    import tomllib

    from edge.scene.rules import scene_options_from_toml

    options = scene_options_from_toml(tomllib.loads(SCENE_TOML)["scene"])
    assert [mask.to_list() for mask in options.masks][1] == [[0.0, 0.0], [0.2, 0.0], [0.1, 0.2]]
    assert (options.min_face_size, options.max_face_size) == (12, 200.5)
    assert options.zone_names == ("door", "sofa")
    assert options.zones[0].polygon.to_list()[2] == [0.35, 1.0]
    assert scene_options_from_toml({}) == SceneOptions()


@pytest.mark.parametrize(
    "table, message",
    [
        (
            {"mask": []},
            r"^scene\.mask: \"mask\" is not allowed \(a key of \[scene\]: masks, min_face_size, max_face_size, zones\)$",
        ),
        ({"masks": [[0, 0], [1, 0], [1, 1]]}, r"^scene\.masks\[0\]: \[0, 0\] is not allowed \(a list of 3-100"),
        ({"masks": "all"}, r"^scene\.masks: \"all\" is not allowed \(a list of polygons"),
        ({"zones": {"name": "door"}}, r"^scene\.zones: .* is not allowed \(tables written as \[\[scene\.zones\]\]"),
        (
            {"zones": [{"name": "door"}]},
            r"^scene\.zones\[0\]\.polygon: null is not allowed \(every \[\[scene\.zones\]\] needs a polygon\)$",
        ),
        (
            {"zones": [{"name": "door", "polygon": [[0, 0], [1, 0], [1, 1]], "colour": "red"}]},
            r"^scene\.zones\[0\]\.colour: ",
        ),
        (
            {"zones": [{"name": "Door", "polygon": [[0, 0], [1, 0], [1, 1]]}]},
            r"^scene\.zones\[0\]\.name: \"Door\" is not allowed",
        ),
        (
            {"min_face_size": "12px"},
            r"^scene\.min_face_size: \"12px\" is not allowed \(a number of pixels from 0 to 8192\)$",
        ),
        ({"max_face_size": 0}, r"^scene\.max_face_size: 0 is not allowed"),
        (
            {"masks": [[[0, 0], [1, 0], [1, 1]]] * 33},
            r"^scene\.masks: \"33 masks\" is not allowed \(at most 32 masks\)$",
        ),
    ],
)
def test_a_bad_scene_table_names_the_key_in_one_line(table, message):
    from edge.scene.rules import scene_options_from_toml

    with pytest.raises(OptionError, match=message) as caught:
        scene_options_from_toml(table)
    assert "\n" not in str(caught.value)
