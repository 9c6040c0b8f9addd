"""The motion detector and the detection gate on real frames: a still room, sensor noise, a
light switched on, a real face walking through, masks; and the gate's state machine."""

from __future__ import annotations

import numpy as np
import pytest

from edge.common.options import OptionError
from edge.detect.preprocess import resize_bilinear
from edge.scene.motion import (
    WORK_HEIGHT,
    DetectionGate,
    MotionDetector,
    MotionOptions,
    MotionResult,
    eroded_changed_count,
    gray_sample,
    sampling_factor,
)
from edge.scene.rules import make_polygon
from edge.sources.imageio import load_image
from tools.scene_frames import background_frame, face_patch, walk_through

pytestmark = pytest.mark.integration

FPS = 10.0
STILL = MotionResult(motion=False, changed_fraction=0.0, reset=False)
MOVING = MotionResult(motion=True, changed_fraction=0.05, reset=False)
RESET = MotionResult(motion=False, changed_fraction=0.9, reset=True)


@pytest.fixture(scope="module")
def room(upstream_dir) -> np.ndarray:
    return background_frame(upstream_dir / "images")


@pytest.fixture(scope="module")
def walk(upstream_dir, detector, room):
    return walk_through(room, face_patch(upstream_dir / "images", detector), steps=15, pause=3)


def photo_frame(path) -> np.ndarray:
    return resize_bilinear(load_image(path), 320, 240)


def with_noise(frame: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, sigma, frame.shape)
    return np.clip(frame + noise.round(), 0, 255).astype(np.uint8)


def brighter(frame: np.ndarray, step: int) -> np.ndarray:
    return np.clip(frame.astype(np.int16) + step, 0, 255).astype(np.uint8)


# --- the motion detector --------------------------------------------------------------------


def test_first_frame_starts_the_background_and_a_repeated_still_frame_never_moves(room):
    motion = MotionDetector()
    assert motion.update(room) == MotionResult(motion=False, changed_fraction=0.0, reset=True)
    results = [motion.update(room) for _ in range(50)]
    assert results == [STILL] * 50


@pytest.mark.parametrize("photo_index", [0, 5, 10])
def test_sensor_noise_on_a_still_photo_is_not_motion(photo_paths, photo_index):
    frame = photo_frame(photo_paths[photo_index])
    motion = MotionDetector()
    motion.update(frame)
    results = [motion.update(with_noise(frame, sigma=4.0, seed=seed)) for seed in range(40)]
    assert not any(r.motion or r.reset for r in results)


def test_isolated_changed_pixels_are_not_motion_but_blobs_of_the_same_area_are(room):
    """The 2x2 erosion: a quarter of the sampled pixels flipped one by one (a speckle of
    noise) counts nothing; far fewer flipped in 3x3 blocks (something moving) is motion."""
    factor = sampling_factor(room.shape[0])
    speckle = room.copy()
    speckle[:: 2 * factor, :: 2 * factor] ^= 0x80  # every channel moves by 128 levels
    blobs = room.copy()
    for top in range(30, 210, 60):
        for left in range(30, 290, 60):
            blobs[top : top + 3 * factor, left : left + 3 * factor] ^= 0x80
    results = {}
    for name, frame in (("speckle", speckle), ("blobs", blobs)):
        motion = MotionDetector()
        motion.update(room)
        results[name] = motion.update(frame)
    assert results["speckle"] == STILL
    assert results["blobs"].motion


def test_a_brightness_step_resets_the_background_once_instead_of_firing_on(room):
    lit = brighter(room, 60)
    motion = MotionDetector()
    motion.update(room)
    step = motion.update(lit)
    assert step.reset and not step.motion
    assert step.changed_fraction > MotionOptions().global_change
    assert [motion.update(lit) for _ in range(30)] == [STILL] * 30


def test_without_the_reset_a_brightness_step_would_fire_for_many_frames(room):
    """Why the global-change rule exists: the running average takes dozens of frames to
    catch up with a light switched on."""
    lit = brighter(room, 60)
    motion = MotionDetector(MotionOptions(global_change=1.0))
    motion.update(room)
    results = [motion.update(lit) for _ in range(30)]
    assert not any(r.reset for r in results)
    assert sum(r.motion for r in results) >= 20


def test_a_face_walking_through_is_motion_on_every_frame_and_stops_after_it_left(walk, room):
    motion = MotionDetector()
    motion.update(room)
    assert [motion.update(room) for _ in range(5)] == [STILL] * 5
    results = [motion.update(frame) for frame in walk.frames]
    assert all(r.motion and not r.reset for r in results[:-1])
    # The last frame shows only the background again, where the face was a frame ago.
    after = [motion.update(room) for _ in range(20)]
    assert not any(r.motion for r in after[2:])


def test_motion_inside_a_mask_is_ignored_and_outside_it_is_not(walk, room):
    # The face walks through the middle band of rows (y 0.31-0.69 of the frame).
    band = make_polygon([[0, 0.2], [1, 0.2], [1, 0.8], [0, 0.8]])
    elsewhere = make_polygon([[0, 0], [1, 0], [1, 0.15], [0, 0.15]])
    for masks, expect_motion in (([band], False), ([elsewhere], True)):
        motion = MotionDetector(masks=masks)
        motion.update(room)
        results = [motion.update(frame) for frame in walk.frames[:-1]]
        assert all(r.motion == expect_motion for r in results), masks


def test_changed_fraction_is_relative_to_the_unmasked_area(walk, room):
    """Masking the half without the face leaves the face's changed pixels and halves the
    area they are measured against."""
    right_half = make_polygon([[0.5, 0], [1, 0], [1, 1], [0.5, 1]])
    frame = walk.frames[3]  # the face still in the left half
    plain, masked = MotionDetector(), MotionDetector(masks=[right_half])
    for motion in (plain, masked):
        motion.update(room)
    a, b = plain.update(frame), masked.update(frame)
    assert a.motion and b.motion
    assert b.changed_fraction == pytest.approx(2 * a.changed_fraction, rel=0.05)


def test_rgb_and_bgr_frames_give_the_same_results(walk, room):
    rgb, bgr = MotionDetector(), MotionDetector()
    rgb.update(room)
    bgr.update(room[:, :, ::-1])
    for frame in walk.frames:
        assert rgb.update(frame) == bgr.update(frame[:, :, ::-1])


def test_a_refused_frame_size_leaves_the_detector_as_it_was(room):
    motion = MotionDetector()
    motion.update(room)
    with pytest.raises(ValueError, match="too small"):
        motion.update(np.zeros((1, 1, 3), np.uint8))
    assert motion.update(room) == STILL


def test_a_new_frame_size_restarts_the_background(room):
    motion = MotionDetector()
    motion.update(room)
    larger = resize_bilinear(room, 640, 480)
    assert motion.update(larger).reset
    assert motion.update(larger) == STILL


def test_min_area_decides_how_much_change_is_motion(room):
    """A 20x20 pixel patch changes (7x7 sampled pixels, 6x6 after the erosion): motion at a small min_area, not at a large one."""
    changed = room.copy()
    changed[100:120, 150:170] ^= 0x80  # every channel moves by 128 levels
    area = 6 * 6 / ((240 // 3 - 1) * (320 // 3 - 1))  # sampled by 3, then eroded by 1
    for min_area, expect in ((area / 2, True), (area * 2, False)):
        motion = MotionDetector(MotionOptions(min_area=min_area))
        motion.update(room)
        result = motion.update(changed)
        assert result.motion is expect
        assert 0 < result.changed_fraction <= area


@pytest.mark.parametrize("height", [99, 100, 101, 240, 480, 1080, 1944])
def test_the_working_copy_is_at_most_about_100_rows(height):
    rows = height // sampling_factor(height)
    assert WORK_HEIGHT // 2 <= rows <= WORK_HEIGHT or rows == height


def test_gray_sample_is_r_plus_2g_plus_b_of_every_nth_pixel(room):
    gray = gray_sample(room, 3)
    assert gray.dtype == np.uint16 and gray.shape == (80, 106)
    pixels = room[: 80 * 3 : 3, : 106 * 3 : 3].astype(np.int64)
    assert np.array_equal(gray, pixels[..., 0] + 2 * pixels[..., 1] + pixels[..., 2])
    assert np.array_equal(gray_sample(room[..., 1], 3), 4 * pixels[..., 1])


@pytest.mark.parametrize("shape", [(2, 2), (2, 7), (5, 2), (80, 106), (100, 133), (61, 97)])
@pytest.mark.parametrize("density", [0.05, 0.5, 0.95])
def test_the_flat_erosion_counts_what_the_2x2_erosion_of_the_image_counts(shape, density):
    # The plain erosion on 2-D views; the flat one must agree at every size, including the
    # last column (whose flat right neighbour is the next row's first pixel).
    for seed in range(5):
        changed = np.random.default_rng(seed).random(shape) < density
        changed[:, -1] = changed[:, 0] = True  # wrapped pairs that would count if not taken off
        plain = changed[:-1, :-1] & changed[1:, :-1] & changed[:-1, 1:] & changed[1:, 1:]
        assert eroded_changed_count(changed) == np.count_nonzero(plain)


def test_gray_sample_of_odd_sizes_and_strided_frames_is_r_plus_2g_plus_b(room):
    for frame, factor in [(room, 2), (room[1:238, 3:317], 3), (room[::-1, ::2], 5), (room[:101, :7], 4)]:
        rows, cols = frame.shape[0] // factor, frame.shape[1] // factor
        pixels = frame[: rows * factor : factor, : cols * factor : factor].astype(np.int64)
        assert np.array_equal(gray_sample(frame, factor), pixels[..., 0] + 2 * pixels[..., 1] + pixels[..., 2])


@pytest.mark.parametrize(
    "frame, message",
    [
        (np.zeros((240, 320, 3), np.float32), "uint8"),
        (np.zeros((240,), np.uint8), "uint8"),
        (np.zeros((1, 1, 3), np.uint8), "too small"),
    ],
)
def test_unusable_frames_are_refused_with_a_clear_error(frame, message):
    with pytest.raises(ValueError, match=message):
        MotionDetector().update(frame)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"idle_interval": 0}, r"^motion\.idle_interval: 0 is not allowed \(a number of seconds > 0 and <= 3600\)$"),
        ({"idle_interval": float("nan")}, r"^motion\.idle_interval: NaN is not allowed"),
        ({"idle_interval": 7200}, r"^motion\.idle_interval: 7200 is not allowed"),
        ({"threshold": 0}, r"^motion\.threshold: 0 is not allowed \(an integer 1-255 \(gray levels\)\)$"),
        ({"threshold": 256}, r"^motion\.threshold: 256 is not allowed"),
        ({"threshold": 12.5}, r"^motion\.threshold: 12\.5 is not allowed"),
        ({"threshold": True}, r"^motion\.threshold: true is not allowed"),
        ({"min_area": 1.0}, r"^motion\.min_area: 1\.0 is not allowed \(a number >= 0 and < 1"),
        ({"min_area": -0.1}, r"^motion\.min_area: -0\.1 is not allowed"),
        ({"alpha": 0.0}, r"^motion\.alpha: 0\.0 is not allowed \(a number > 0 and < 1\)$"),
        ({"alpha": 1.0}, r"^motion\.alpha: 1\.0 is not allowed"),
        ({"alpha": "fast"}, r'^motion\.alpha: "fast" is not allowed'),
        ({"global_change": 0.0}, r"^motion\.global_change: 0\.0 is not allowed \(a number > 0 and <= 1"),
        (
            {"global_change": 0.01, "min_area": 0.02},
            r"^motion\.global_change: 0\.01 is not allowed \(a number above motion\.min_area \(0\.02\)\)$",
        ),
        ({"enabled": "yes"}, r'^motion\.enabled: "yes" is not allowed \(true or false\)$'),
    ],
)
def test_bad_options_are_refused_in_one_line_naming_the_key(options, message):
    with pytest.raises(OptionError, match=message):
        MotionOptions(**options)


# --- the gate -------------------------------------------------------------------------------


def run_gate(gate: DetectionGate, motions, faces=None, fps: float = FPS) -> list[str]:
    faces = faces if faces is not None else [False] * len(motions)
    return [gate.decide(i / fps, m, f).reason for i, (m, f) in enumerate(zip(motions, faces, strict=True))]


def test_a_still_empty_scene_is_detected_once_per_idle_interval():
    gate = DetectionGate(MotionOptions(idle_interval=2.0))
    reasons = run_gate(gate, [STILL] * 600)  # a minute at 10 fps
    detected = [i for i, r in enumerate(reasons) if r != "still"]
    assert detected == list(range(0, 600, 20))
    assert reasons[0] == "first" and set(reasons[20::20]) == {"idle"}
    assert gate.counts.detected_share == pytest.approx(30 / 600)


def test_motion_and_resets_are_detected_on_every_frame():
    gate = DetectionGate()
    reasons = run_gate(gate, [STILL] + [MOVING] * 10 + [RESET] + [STILL] * 3)
    assert reasons == ["first"] + ["motion"] * 10 + ["reset"] + ["still"] * 3


def test_while_faces_are_present_every_frame_is_detected_even_without_motion():
    gate = DetectionGate()
    faces = [False] + [True] * 30 + [False] * 5
    reasons = run_gate(gate, [STILL] * 36, faces)
    assert reasons == ["first"] + ["faces"] * 30 + ["still"] * 5


def test_the_idle_clock_counts_from_the_last_detection_of_any_kind():
    gate = DetectionGate(MotionOptions(idle_interval=1.0))
    motions = [STILL] * 5 + [MOVING] + [STILL] * 15
    reasons = run_gate(gate, motions)
    detected = [i for i, r in enumerate(reasons) if r != "still"]
    assert detected == [0, 5, 15]


def test_a_disabled_gate_or_an_unmeasured_frame_is_always_detected():
    assert set(run_gate(DetectionGate(MotionOptions(enabled=False)), [STILL] * 50)) == {"disabled"}
    assert set(run_gate(DetectionGate(), [None] * 50)) == {"disabled"}


def test_counts_and_windows_report_the_share_detected():
    gate = DetectionGate(MotionOptions(idle_interval=1.0))
    assert gate.counts.detected_share is None
    run_gate(gate, [STILL] * 20)  # detected at frames 0 and 10
    window = gate.take_window()
    assert (window.frames, window.detected, window.detected_share) == (20, 2, 0.1)
    for i in range(20, 30):
        gate.decide(i / FPS, MOVING, False)
    window = gate.take_window()
    assert (window.frames, window.detected) == (10, 10)
    assert (gate.counts.frames, gate.counts.detected) == (30, 12)
    assert gate.take_window().detected_share is None


def test_gate_and_detector_together_on_a_minute_of_a_still_room_then_a_walk(room, walk):
    """The whole gate on real frames: a still minute costs 30 detections, then every frame
    of the walk is detected."""
    motion, gate = MotionDetector(), DetectionGate(MotionOptions(idle_interval=2.0))
    frames = [room] * 600 + walk.frames
    reasons = [gate.decide(i / FPS, motion.update(frame), False).reason for i, frame in enumerate(frames)]
    assert sum(r != "still" for r in reasons[:600]) == 30
    assert set(reasons[600:-1]) == {"motion"}


def test_events_with_the_gate_equal_events_without_it_when_a_face_walks_through(detector, room, walk):
    """The daemon-shaped loop of the scene benchmark, on the real model: the gate changes
    which frames of the still room are detected, never the events."""
    from tools.bench_scene import run_clip

    clip = [room] * 40 + walk.frames + [room] * 70  # 7 s after the walk: the face clears
    gated = run_clip(clip, FPS, detector, gated=True, idle_interval=2.0)
    plain = run_clip(clip, FPS, detector, gated=False, idle_interval=2.0)
    assert [kind for _, kind, _ in plain.events] == ["face_detected", "face_cleared"]
    assert gated.events == plain.events
    assert gated.detected < plain.detected == len(clip)
    # Every frame of the walk (but the last, which shows the room again) was detected.
    assert all(n >= 0 for n in gated.faces[40 : 40 + len(walk.frames)])
