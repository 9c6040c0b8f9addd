"""Pre-processing: the resize upstream evaluated with, and the XOR trick being the exact
(p - 127) / 128 normalization."""

from __future__ import annotations

import numpy as np
import pytest

from edge.detect.preprocess import as_three_channels, normalize_nchw, resize_bilinear, write_model_input
from edge.detect.sidecar import INPUT_QUANT

pytestmark = pytest.mark.unit


def _reference_bilinear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Textbook half-pixel-centre bilinear in float64 (cv2.INTER_LINEAR's definition)."""
    src_h, src_w = image.shape[:2]

    def taps(src, dst):
        pos = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
        lo = np.floor(pos).astype(int)
        return lo, np.minimum(lo + 1, src - 1), pos - lo

    y0, y1, fy = taps(src_h, height)
    x0, x1, fx = taps(src_w, width)
    img = image.astype(np.float64)
    rows = img[y0] * (1 - fy)[:, None, None] + img[y1] * fy[:, None, None]
    return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


@pytest.mark.parametrize("use_cv2", [False, None])
@pytest.mark.parametrize("src_hw", [(480, 640), (1080, 1920), (120, 160), (333, 517)])
def test_resize_matches_float_bilinear_within_one_level(src_hw, use_cv2):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(*src_hw, 3), dtype=np.uint8)
    ours = resize_bilinear(image, 320, 240, use_cv2=use_cv2)
    assert ours.shape == (240, 320, 3) and ours.dtype == np.uint8
    assert np.abs(ours.astype(np.float64) - _reference_bilinear(image, 320, 240)).max() <= 1.0


def test_exact_half_size_is_the_two_by_two_mean():
    # Half-pixel centres at 2x: every output pixel sits between four source pixels.
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    block_mean = image.reshape(240, 2, 320, 2, 3).astype(np.float64).mean(axis=(1, 3))
    for use_cv2 in (False, None):
        assert np.abs(resize_bilinear(image, 320, 240, use_cv2=use_cv2) - block_mean).max() <= 1.0


def test_resize_is_a_no_op_at_model_size():
    image = np.zeros((240, 320, 3), np.uint8)
    assert resize_bilinear(image, 320, 240) is image


def test_xor_input_is_exactly_the_upstream_normalization():
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    buffer = np.empty_like(pixels)
    write_model_input(pixels, "RGB", buffer)
    as_int8 = buffer.view(np.int8).astype(np.float64)
    dequantized = INPUT_QUANT.scale * (as_int8 - INPUT_QUANT.zero_point)
    np.testing.assert_array_equal(dequantized, (pixels.astype(np.float64) - 127) / 128)
    np.testing.assert_array_equal(
        normalize_nchw(pixels)[0].transpose(1, 2, 0), ((pixels - 127.0) / 128).astype(np.float32)
    )


def test_bgr_frames_are_flipped_into_rgb():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 200  # red
    rgb_buffer, bgr_buffer = np.empty_like(rgb), np.empty_like(rgb)
    write_model_input(rgb, "RGB", rgb_buffer)
    write_model_input(np.ascontiguousarray(rgb[..., ::-1]), "BGR", bgr_buffer)
    np.testing.assert_array_equal(rgb_buffer, bgr_buffer)
    with pytest.raises(ValueError, match="color_order"):
        write_model_input(rgb, "YUV", rgb_buffer)


def test_channel_conversions():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert as_three_channels(gray).shape == (3, 4, 3)
    np.testing.assert_array_equal(as_three_channels(gray)[..., 2], gray)
    rgba = np.zeros((3, 4, 4), np.uint8)
    assert as_three_channels(rgba).shape == (3, 4, 3)
    with pytest.raises(ValueError, match="uint8"):
        as_three_channels(np.zeros((3, 4, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        as_three_channels(np.zeros((3, 4, 5), np.uint8))


# Camera modes, odd sizes and upscales; model sizes of slim-320 and slim-640, and an output
# row (107 * 3 bytes) that is no multiple of a SIMD register.
SOURCE_SIZES = [(640, 480), (1280, 720), (1920, 1080), (1024, 484), (333, 517), (641, 479), (160, 120), (319, 239)]
TARGET_SIZES = [(320, 240), (640, 480), (107, 80)]


@pytest.mark.parametrize("source", SOURCE_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_numpy_resize_is_bit_identical_to_cv2_on_real_photos(photo_paths, source):
    cv2 = pytest.importorskip("cv2")
    from edge.detect.preprocess import BilinearResizer
    from edge.sources.imageio import load_image

    for path in photo_paths[:3]:
        # A real photo as a camera would deliver it at this size (area-averaged, no aliasing).
        frame = cv2.resize(load_image(path), source, interpolation=cv2.INTER_AREA)
        for width, height in TARGET_SIZES:
            expected = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
            np.testing.assert_array_equal(BilinearResizer(width, height, use_cv2=False)(frame), expected)
            np.testing.assert_array_equal(BilinearResizer(width, height, use_cv2=True)(frame), expected)


def test_cv2_is_used_when_it_imports_and_can_be_refused(monkeypatch):
    pytest.importorskip("cv2")
    from edge.detect import preprocess

    assert preprocess.BilinearResizer(320, 240).uses_cv2
    assert not preprocess.BilinearResizer(320, 240, use_cv2=False).uses_cv2
    monkeypatch.setattr(preprocess, "_load_cv2", lambda: None)  # a Pi without OpenCV
    assert not preprocess.BilinearResizer(320, 240).uses_cv2
    with pytest.raises(ValueError, match="cv2"):
        preprocess.BilinearResizer(320, 240, use_cv2=True)


def test_a_one_channel_frame_keeps_its_channel_axis():
    image = np.random.default_rng(4).integers(0, 256, size=(480, 641, 1), dtype=np.uint8)
    for use_cv2 in (False, None):
        assert resize_bilinear(image, 320, 240, use_cv2=use_cv2).shape == (240, 320, 1)


@pytest.mark.parametrize("use_cv2", [False, None])
@pytest.mark.parametrize("src_hw", [(480, 640), (333, 517)])
def test_resized_frames_are_row_major(src_hw, use_cv2):
    # A transposed result (fancy indexing) silently made the XOR into the input tensor ~30x
    # slower. Row-major with whole bytes per channel is what the XOR needs; the half-size
    # path may keep every other pixel of a row (a pixel stride of 2x the channels).
    image = np.zeros((*src_hw, 4), np.uint8)[:, :, :3]  # a BGRA camera frame's colour view
    resized = resize_bilinear(image, 320, 240, use_cv2=use_cv2)
    row, pixel, channel = resized.strides
    assert channel == 1 and pixel in (3, 6) and row >= 320 * pixel


def test_a_replay_of_many_sizes_holds_bounded_memory():
    # The numpy path keeps a plan per source size: a replay of a camera roll or a `detect`
    # run over a folder of photos meets a new size at nearly every image. Each plan used to
    # hold ~7 MB of per-pixel indices, and none was ever dropped (380 MB RSS after 40 sizes).
    import tracemalloc

    from edge.detect.preprocess import MAX_RESIZE_PLANS, BilinearResizer

    resizer = BilinearResizer(320, 240, use_cv2=False)
    sizes = [(400 + 30 * number, 300 + 17 * number) for number in range(40)]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for width, height in sizes:
            frame = np.zeros((height, width, 3), np.uint8)
            assert resizer(frame).shape == (240, 320, 3)
        del frame
        held = tracemalloc.take_snapshot().compare_to(before, "filename")
    finally:
        tracemalloc.stop()
    held_bytes = sum(stat.size_diff for stat in held)
    assert held_bytes < 1_000_000, f"the resizer holds {held_bytes} bytes after {len(sizes)} frame sizes"
    # The most recently used sizes keep their plans, the oldest went first.
    assert resizer.cached_sizes == tuple((w, h, 3) for w, h in sizes[-MAX_RESIZE_PLANS:])
    resizer(np.zeros((sizes[-MAX_RESIZE_PLANS][1], sizes[-MAX_RESIZE_PLANS][0], 3), np.uint8))
    assert resizer.cached_sizes[-1] == (*sizes[-MAX_RESIZE_PLANS], 3)
