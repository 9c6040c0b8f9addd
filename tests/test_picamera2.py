"""The picamera2 source against tests/fake_picamera2.py, which fails the way picamera2 does.

Sections follow issue 15's items: (1) the sensor mode and field of view, (2) a camera that
stops delivering, (3) errors at import and open, (4) trusting what libcamera configured,
(5) the lores stream, (6) frame timestamps, (7) the fake's own fidelity to picamera2; then
issue 21's: (8) what a failed open leaves behind, (9) the picamera2 version, (10) sensor
modes that cannot be read or have no crop. Real photos are the scenes; the detector test
runs the real int8 model.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import CancelledError
from pathlib import Path

import numpy as np
import pytest
from fake_picamera2 import (
    SENSORS,
    FakePicamera2,
    pack_yuv420,
    pisp_stride,
    rgb_to_planes,
    vc4_stride,
)
from PIL import Image

from edge.sources.base import SourceError
from edge.sources.imageio import load_image
from edge.sources.picamera2 import (
    MIN_PICAMERA2_VERSION,
    Picamera2NotInstalled,
    Picamera2Source,
    SensorMode,
    choose_sensor_mode,
    field_of_view,
    full_sensor_size,
    import_picamera2_class,
    yuv420_to_rgb,
)

pytestmark = pytest.mark.unit

FAST_TIMEOUT = 0.3  # s: a capture timeout short enough for tests, long enough for the fake


@pytest.fixture()
def scene(photo_paths) -> np.ndarray:
    return load_image(photo_paths[3])


def read_frames(source, count: int):
    source.open()
    try:
        return [source.read() for _ in range(count)]
    finally:
        source.close()


def modes_of(sensor: str) -> list[SensorMode]:
    return [SensorMode.from_picamera2(mode) for mode in SENSORS[sensor]["modes"]]


# --- (1) the whole sensor, not a slice of it ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("sensor", "mode_size", "bit_depth", "view"),
    [
        ("ov5647", (1296, 972), 10, (1.0, 1.0)),
        ("imx219", (1640, 1232), 10, (1.0, 1230 / 1232)),
        ("imx708", (2304, 1296), 10, (0.75, 1.0)),
        ("imx477", (2028, 1520), 12, (1.0, 1.0)),
        ("imx296", (1456, 1088), 10, (1450 / 1456, 1.0)),
    ],
)
def test_each_camera_gets_its_smallest_whole_sensor_mode(scene, caplog, sensor, mode_size, bit_depth, view):
    camera_class = FakePicamera2.with_scene(scene, sensor=sensor)
    caplog.set_level(logging.INFO, logger="edge.sources")
    read_frames(Picamera2Source(320, 240, picamera2_class=camera_class), 1)
    (camera,) = camera_class.instances
    assert camera.calls.index("sensor_modes") < camera.calls.index("configure")
    assert camera.configured[-1]["sensor"] == {"output_size": mode_size, "bit_depth": bit_depth}
    # What the ISP really scaled into the frame (request metadata), as a share of the sensor.
    full = SENSORS[sensor]["pixel_array"]
    crop = camera.delivered[0]["ScalerCrop"]
    assert (crop[2] / full[0], crop[3] / full[1]) == pytest.approx(view, abs=1e-3)
    assert field_of_view(choose_sensor_mode(modes_of(sensor), (320, 240)), full, (320, 240)) == pytest.approx(
        view, abs=1e-3
    )
    (line,) = [r.getMessage() for r in caplog.records if "field of view" in r.getMessage()]
    percent = f"{100 * view[0]:.0f}% x {100 * view[1]:.0f}%"
    assert f"{sensor} sensor mode {mode_size[0]}x{mode_size[1]} {bit_depth}-bit" in line and percent in line


def test_without_an_explicit_mode_picamera2_would_crop_the_v2_camera_to_39_percent(scene):
    """The problem the explicit mode solves, reproduced by the fake's copy of picamera2's
    mode scoring: 320x240 selects the 640x480 mode, a 1280x960 crop of 3280x2464."""
    camera = FakePicamera2.with_scene(scene, sensor="imx219")()
    camera.configure(camera.create_preview_configuration(main={"size": (320, 240), "format": "RGB888"}))
    assert camera.camera_config["sensor"] == {"output_size": (640, 480), "bit_depth": 10}
    narrow = choose_sensor_mode([m for m in modes_of("imx219") if m.size == (640, 480)], (320, 240))
    assert field_of_view(narrow, (3280, 2464), (320, 240)) == pytest.approx((1280 / 3280, 960 / 2464))
    assert pytest.approx(0.39, abs=0.005) == 1280 / 3280


def test_mode_choice_prefers_a_mode_at_least_the_output_size_and_deeper_bits():
    imx219 = modes_of("imx219")
    assert choose_sensor_mode(imx219, (320, 240)).size == (1640, 1232)
    assert choose_sensor_mode(imx219, (320, 240)).bit_depth == 10  # 8-bit 1640x1232 exists too
    assert choose_sensor_mode(imx219, (1920, 1080)).size == (3280, 2464)  # never upscale 1640 wide
    assert choose_sensor_mode(imx219, (4000, 3000)).size == (3280, 2464)  # nothing big enough: the largest
    assert full_sensor_size(modes_of("imx477")) == (4056, 3040)
    assert choose_sensor_mode([], (320, 240)) is None
    assert SensorMode.from_picamera2({"format": "YUYV"}) is None


def test_a_usb_camera_without_sensor_modes_is_configured_without_one(scene):
    camera_class = FakePicamera2.with_scene(scene, sensor="usb")
    with pytest.raises(SourceError, match="libcamera configured the main stream as YUYV"):  # item 4
        Picamera2Source(320, 240, picamera2_class=camera_class).open()
    (camera,) = camera_class.instances
    assert camera.configured[-1]["sensor"] is None and camera.configured[-1]["raw"] is None


# --- (2) a camera that stops delivering --------------------------------------------------------------


def test_a_pulled_cable_becomes_a_source_error_not_a_hang(scene):
    camera_class = FakePicamera2.with_scene(scene)
    source = Picamera2Source(320, 240, picamera2_class=camera_class, capture_timeout=FAST_TIMEOUT)
    source.open()
    assert source.read().index == 0
    camera_class.cable_unplugged = True
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        source.read()
    waited = time.monotonic() - started
    assert FAST_TIMEOUT - 0.01 <= waited < FAST_TIMEOUT + 1.0
    assert str(caught.value) == (
        "picamera2 camera 0 (main 320x240): camera stopped delivering frames (none for 0.3 s; "
        "a loose or pulled ribbon cable? see docs/deploy.md, 'Camera and the hardened unit'); closed it"
    )
    (camera,) = camera_class.instances
    # The waiting job was cancelled before the camera was closed, and nothing is left pending.
    assert camera.calls[-3:] == ["capture_request", "cancel_all_and_flush", "close"]
    assert camera.closed and camera._job_list == []
    with pytest.raises(SourceError, match="read before open"):
        source.read()


def test_reopening_keeps_failing_until_the_cable_is_back(scene):
    """What the grabber's backoff loop does: open works (the sensor is still listed), frames
    do not come, until the cable is plugged in again."""
    camera_class = FakePicamera2.with_scene(scene)
    camera_class.cable_unplugged = True
    source = Picamera2Source(320, 240, picamera2_class=camera_class, capture_timeout=FAST_TIMEOUT)
    for _ in range(2):
        source.open()
        with pytest.raises(SourceError, match="stopped delivering"):
            source.read()
    camera_class.cable_unplugged = False
    frames = read_frames(source, 2)
    assert [f.index for f in frames] == [0, 1]
    assert [c.closed for c in camera_class.instances] == [True, True, True]


def test_a_frontend_timeout_kills_only_that_camera_object(scene):
    camera_class = FakePicamera2.with_scene(scene)
    source = Picamera2Source(320, 240, picamera2_class=camera_class, capture_timeout=FAST_TIMEOUT)
    source.open()
    camera_class.fail_captures = 1
    with pytest.raises(SourceError, match="stopped delivering"):
        source.read()
    assert len(read_frames(source, 1)) == 1 and len(camera_class.instances) == 2


def test_late_frames_within_the_timeout_are_not_an_error(scene):
    camera_class = FakePicamera2.with_scene(scene)
    source = Picamera2Source(320, 240, picamera2_class=camera_class, capture_timeout=2.0)
    source.open()
    camera_class.paused.set()
    threading.Timer(0.3, camera_class.paused.clear).start()
    try:
        assert source.read() is not None
    finally:
        source.close()


def test_capture_timeout_grows_with_a_low_frame_rate():
    assert Picamera2Source(320, 240).capture_timeout == 2.0
    assert Picamera2Source(320, 240, fps=30.0).capture_timeout == 2.0
    assert Picamera2Source(320, 240, fps=0.5).capture_timeout == 8.0


# --- (3) errors that say what is wrong ------------------------------------------------------------------


def test_a_busy_camera_names_the_real_cause(scene):
    camera_class = FakePicamera2.with_scene(scene)
    camera_class.fail_starts = 1
    with pytest.raises(SourceError) as caught:
        Picamera2Source(320, 240, picamera2_class=camera_class).open()
    assert str(caught.value) == (
        "picamera2 camera 0 (main 320x240): cannot open the camera (RuntimeError: Camera __init__ sequence "
        "did not complete. <- RuntimeError: Failed to acquire camera: Device or resource busy); another "
        "process holds it (rpicam-*, a picamera2 script, another edge-face): stop it"
    )
    assert camera_class.instances == []  # the constructor failed: nothing to close


def test_no_camera_listed_explains_the_dma_heap_group(scene):
    camera_class = FakePicamera2.with_scene(scene, cameras=[])
    with pytest.raises(SourceError) as caught:
        Picamera2Source(320, 240, picamera2_class=camera_class).open()
    message = str(caught.value)
    assert message.startswith("picamera2 camera 0 (main 320x240): libcamera lists no camera; check the ribbon cable")
    assert "/dev/dma_heap/*" in message and "group video" in message and "\n" not in message


def test_without_that_camera_says_what_it_found(scene):
    camera_class = FakePicamera2.with_scene(scene)
    with pytest.raises(
        SourceError, match=r"^picamera2 camera 1 \(main 320x240\): no such camera \(cameras found: imx708 \(0\)\)$"
    ):
        Picamera2Source(320, 240, camera_index=1, picamera2_class=camera_class).open()


def test_a_failed_configure_closes_the_camera(scene):
    camera_class = FakePicamera2.with_scene(scene)
    camera_class.fail_configure = True
    with pytest.raises(SourceError, match=r"cannot start \(RuntimeError: Configuration failed: "):
        Picamera2Source(320, 240, picamera2_class=camera_class).open()
    (camera,) = camera_class.instances
    assert camera.closed and camera.calls[-1] == "close"


def test_missing_picamera2_is_the_only_import_failure_that_counts_as_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # what `import picamera2` sees when it is absent
    with pytest.raises(Picamera2NotInstalled, match=r"^picamera2 is not installed; .*apt install python3-picamera2"):
        import_picamera2_class()


def _broken_picamera2(monkeypatch, tmp_path: Path, body: str) -> None:
    """A real package named picamera2 whose import fails the way a broken install does."""
    package = tmp_path / "broken" / "picamera2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(body)
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    monkeypatch.syspath_prepend(str(package.parent))


def test_a_numpy_abi_mismatch_is_a_clear_error_not_a_fallback(monkeypatch, tmp_path):
    # simplejpeg built for numpy 1 under numpy 2 (picamera2 issues #1088, #1211).
    _broken_picamera2(
        monkeypatch,
        tmp_path,
        'raise ValueError("numpy.dtype size changed, may indicate binary '
        'incompatibility. Expected 96 from C header, got 88 from PyObject")\n',
    )
    with pytest.raises(SourceError) as caught:
        import_picamera2_class()
    assert not isinstance(caught.value, Picamera2NotInstalled)
    assert str(caught.value).startswith(
        "picamera2 cannot be imported: a compiled module was built for another numpy (ValueError: numpy.dtype size changed"
    )
    assert "apt python3-numpy" in str(caught.value)


def test_a_missing_dependency_of_picamera2_is_named(monkeypatch, tmp_path):
    _broken_picamera2(monkeypatch, tmp_path, "import libcamera_missing_for_this_test\n")
    with pytest.raises(
        SourceError, match=r"^picamera2 is installed but needs the missing module 'libcamera_missing_for_this_test'"
    ) as caught:
        import_picamera2_class()
    assert not isinstance(caught.value, Picamera2NotInstalled)


# --- (4) what libcamera configured is what is read ------------------------------------------------------


def test_a_format_libcamera_substituted_is_refused_in_one_line(scene):
    camera_class = FakePicamera2.with_scene(scene, sensor="usb")  # uvcvideo has no RGB888: YUYV
    with pytest.raises(SourceError) as caught:
        Picamera2Source(320, 240, picamera2_class=camera_class).open()
    assert str(caught.value) == (
        "picamera2 camera 0 (main 320x240): libcamera configured the main stream as YUYV 640x480, not RGB888; "
        'only RGB888 (main) and YUV420 (lores) are supported; for a USB camera set [camera] source = "opencv"'
    )
    assert camera_class.instances[0].closed


@pytest.mark.parametrize("stream", ["main", "lores"])
def test_an_adjusted_size_is_delivered_as_configured(scene, caplog, stream):
    # Pi 5: the back end downscales at most 64x, so 16x12 from a 2304x1296 mode becomes 28x22.
    camera_class = FakePicamera2.with_scene(scene, sensor="imx708", platform="pisp")
    caplog.set_level(logging.WARNING, logger="edge.sources")
    (frame,) = read_frames(Picamera2Source(16, 12, stream=stream, picamera2_class=camera_class), 1)
    assert camera_class.instances[0].configured[-1][stream]["size"] == (28, 22)
    assert frame.pixels.shape == (22, 28, 3)
    assert any(f"adjusted the {stream} stream to 28x22" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("platform", "stride"), [("pisp", 384), ("vc4", 320)])
def test_yuv420_is_decoded_with_the_stride_libcamera_reports(scene, platform, stride):
    camera_class = FakePicamera2.with_scene(scene, platform=platform)
    (frame,) = read_frames(Picamera2Source(320, 240, stream="lores", picamera2_class=camera_class), 1)
    assert camera_class.instances[0].configured[-1]["lores"]["stride"] == stride
    rgb = np.asarray(Image.fromarray(scene).resize((320, 240), Image.Resampling.BILINEAR))
    assert np.abs(frame.pixels.astype(int) - rgb.astype(int)).mean() < 4.0


def test_an_array_that_does_not_match_the_configuration_is_an_error(scene):
    camera_class = FakePicamera2.with_scene(scene)
    source = Picamera2Source(320, 240, picamera2_class=camera_class)
    source.open()
    try:
        camera_class.instances[0].camera_config["main"]["size"] = (300, 240)  # libcamera lied
        with pytest.raises(
            SourceError, match=r"frame array \(240, 300, 3\) uint8 does not match the configured RGB888 320x240"
        ):
            source.read()
    finally:
        source.close()


# --- (5) lores at any size ------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", ["vc4", "pisp"])
def test_lores_above_640x480_works_with_main_at_the_same_size(scene, platform):
    camera_class = FakePicamera2.with_scene(scene, platform=platform)
    (frame,) = read_frames(Picamera2Source(1280, 720, stream="lores", picamera2_class=camera_class), 1)
    config = camera_class.instances[0].configured[-1]
    assert frame.pixels.shape == (720, 1280, 3) and frame.color_order == "RGB"
    assert config["main"]["size"] == config["lores"]["size"] == (1280, 720)
    assert config["main"]["format"] == config["lores"]["format"] == "YUV420"


def test_lores_with_picamera2s_default_main_fails_above_640x480(scene):
    """Why main is set: its default is 640x480 and lores may not exceed it."""
    camera = FakePicamera2.with_scene(scene)()
    with pytest.raises(RuntimeError, match=r"^lores stream dimensions may not exceed main stream$"):
        camera.configure(camera.create_preview_configuration(lores={"size": (1280, 720)}))


# --- (6) the frame's time is the sensor's --------------------------------------------------------------


def test_frames_carry_the_sensor_timestamp(scene):
    camera_class = FakePicamera2.with_scene(scene)
    source = Picamera2Source(640, 480, picamera2_class=camera_class)
    frames = read_frames(source, 3)
    delivered = camera_class.instances[0].delivered
    assert [f.t_monotonic for f in frames] == [m["SensorTimestamp"] / 1e9 for m in delivered]
    # The sensor's time is the start of the frame: before the request was even handed over.
    assert all(f.t_monotonic < time.monotonic() for f in frames)


def test_a_timestamp_off_the_monotonic_clock_falls_back_to_the_receive_time(scene, caplog, monkeypatch):
    camera_class = FakePicamera2.with_scene(scene)
    source = Picamera2Source(320, 240, picamera2_class=camera_class)
    source.open()
    caplog.set_level(logging.WARNING, logger="edge.sources")
    try:
        # A CLOCK_BOOTTIME stamp after an hour of suspend, say.
        monkeypatch.setattr("fake_picamera2.FRAME_LATENCY_NS", -3600 * 10**9)
        before = time.monotonic()
        frames = [source.read(), source.read()]
        after = time.monotonic()
    finally:
        source.close()
    assert all(before <= f.t_monotonic <= after for f in frames)
    stamp = camera_class.instances[0].delivered[0]["SensorTimestamp"]
    expected = (
        f"picamera2 camera 0 (main 320x240): SensorTimestamp {stamp} is not on the monotonic clock; "
        "frames are stamped when received"
    )
    assert [r.getMessage() for r in caplog.records if "SensorTimestamp" in r.getMessage()] == [expected]


# --- frames (moved from test_sources.py) ----------------------------------------------------------------


def test_main_stream_is_bgr_at_the_requested_size(scene):
    camera_class = FakePicamera2.with_scene(scene)
    frames = read_frames(Picamera2Source(320, 240, fps=15.0, picamera2_class=camera_class), 2)
    (camera,) = camera_class.instances
    assert {k: camera.configured[-1]["main"][k] for k in ("format", "size", "stride")} == {
        "format": "RGB888",
        "size": (320, 240),
        "stride": 960,
    }
    assert camera.configured[-1]["controls"]["FrameRate"] == 15.0
    assert camera.closed and not camera.started
    frame = frames[0]
    assert frame.color_order == "BGR" and frame.pixels.shape == (240, 320, 3)
    expected_rgb = np.asarray(Image.fromarray(scene).resize((320, 240), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(frame.pixels[:, :, ::-1], expected_rgb)
    assert [f.index for f in frames] == [0, 1]
    assert camera._requests_held == 0  # every request went back to libcamera


@pytest.mark.integration  # the real interpreter and model
def test_bgr_frames_give_the_same_faces_as_rgb(photo_paths, int8_model_path):
    from edge.detect.detector import FaceDetector

    scene = np.asarray(Image.fromarray(load_image(photo_paths[3])).resize((320, 240), Image.Resampling.BILINEAR))
    (frame,) = read_frames(Picamera2Source(320, 240, picamera2_class=FakePicamera2.with_scene(scene)), 1)
    detector = FaceDetector(int8_model_path)
    from_camera = detector.detect(frame.pixels, frame.color_order)
    reference = detector.detect(scene, "RGB")
    assert len(reference) > 0
    np.testing.assert_array_equal(from_camera.boxes, reference.boxes)


@pytest.mark.parametrize("platform", ["pisp", "vc4"])
def test_lores_yuv420_with_padded_stride_matches_pillow(photo_paths, platform):
    # 300 px wide: the Y and chroma strides both carry padding on either platform.
    scene = load_image(photo_paths[5])
    camera_class = FakePicamera2.with_scene(scene, platform=platform)
    (frame,) = read_frames(Picamera2Source(300, 224, stream="lores", picamera2_class=camera_class), 1)
    stride = camera_class.instances[0].configured[-1]["lores"]["stride"]
    assert stride == {"pisp": 384, "vc4": 320}[platform]
    assert frame.color_order == "RGB" and frame.pixels.shape == (224, 300, 3)
    # Reference: the same planes, chroma repeated 2x2, converted to RGB by Pillow.
    rgb = np.asarray(Image.fromarray(scene).resize((300, 224), Image.Resampling.BILINEAR))
    y, u, v = rgb_to_planes(rgb)

    def up(plane):
        return plane.repeat(2, axis=0).repeat(2, axis=1)

    reference = np.asarray(Image.merge("YCbCr", [Image.fromarray(p) for p in (y, up(u), up(v))]).convert("RGB"))
    assert np.abs(frame.pixels.astype(int) - reference.astype(int)).max() <= 1
    # And it is the photo: chroma subsampling costs a little colour detail, nothing more.
    assert np.abs(frame.pixels.astype(int) - rgb.astype(int)).mean() < 4.0


def test_yuv420_to_rgb_ignores_padding_and_rejects_bad_shapes():
    y = np.full((4, 6), 128, np.uint8)
    u = np.array([[90, 128, 240], [128, 128, 128]], np.uint8)
    v = np.array([[240, 128, 90], [128, 128, 128]], np.uint8)
    padded = yuv420_to_rgb(pack_yuv420(y, u, v, stride=64), 6, 4)
    tight = yuv420_to_rgb(pack_yuv420(y, u, v, stride=6), 6, 4)
    np.testing.assert_array_equal(padded, tight)
    assert tuple(padded[0, 2]) == (128, 128, 128)  # neutral chroma is grey
    assert padded[0, 0, 0] > 200 and padded[0, 4, 2] > 200  # high Cr is red, high Cb is blue
    with pytest.raises(ValueError, match="even size"):
        yuv420_to_rgb(np.zeros((6, 8), np.uint8), 5, 4)
    with pytest.raises(ValueError, match="does not hold"):
        yuv420_to_rgb(np.zeros((6, 4), np.uint8), 6, 4)


# --- (7) the fake behaves like picamera2 ---------------------------------------------------------------


def test_fake_busy_camera_fails_in_the_constructor_with_the_cause_chained(scene):
    camera_class = FakePicamera2.with_scene(scene)
    camera_class.fail_starts = 1
    with pytest.raises(RuntimeError, match=r"^Camera __init__ sequence did not complete\.$") as caught:
        camera_class(0)
    assert "Device or resource busy" in str(caught.value.__cause__)
    with pytest.raises(IndexError):
        camera_class(1)


def test_fake_capture_blocks_honours_wait_and_is_released_by_cancel(scene):
    camera = FakePicamera2.with_scene(scene)()
    camera.configure(camera.create_preview_configuration(main={"size": (320, 240), "format": "RGB888"}))
    camera.start()
    type(camera).cable_unplugged = True
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        camera.capture_array("main", wait=0.2)
    assert time.monotonic() - started >= 0.2
    # Without a wait it blocks for ever; only cancel_all_and_flush gets the waiter out.
    outcome: list[BaseException] = []

    def capture() -> None:
        try:
            camera.capture_array("main")
        except BaseException as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=capture, daemon=True)
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()
    camera.cancel_all_and_flush()
    waiter.join(2.0)
    assert not waiter.is_alive() and isinstance(outcome[0], CancelledError)


def test_fake_strides_are_the_hardwares():
    assert pisp_stride("YUV420", 320) == 384  # U/V 160 -> 192 (64-byte aligned), Y twice that
    assert pisp_stride("YUV420", 640) == 640
    assert pisp_stride("RGB888", 320) == 960 and pisp_stride("RGB888", 300) == 960
    assert vc4_stride("YUV420", 320) == 320 and vc4_stride("YUV420", 300) == 320
    assert vc4_stride("YUV420", 352) == 384  # current kernels align YUV420 rows to 64 bytes
    assert vc4_stride("RGB888", 300) == 960  # 24-bit: width aligned to 32 pixels
    assert vc4_stride("XBGR8888", 300) == 1216


def test_fake_validates_like_picamera2(scene):
    camera = FakePicamera2.with_scene(scene, platform="vc4")()
    with pytest.raises(ValueError, match=r"^Bad key 'sise': valid stream configuration keys are"):
        camera.create_preview_configuration(main={"sise": (320, 240)})
    assert camera.create_preview_configuration(main={"size": (321, 241)})["main"]["size"] == (320, 240)
    config = camera.create_preview_configuration(
        main={"size": (320, 240)}, lores={"size": (160, 120), "format": "RGB888"}
    )
    with pytest.raises(RuntimeError, match=r"^lores stream must be YUV$"):
        camera.configure(config)
    config = camera.create_preview_configuration(
        main={"size": (320, 240)}, sensor={"output_size": (1640, 1232), "fps": 30}
    )
    with pytest.raises(RuntimeError, match=r"^Unexpected keys \{'fps'\} in sensor configuration$"):
        camera.configure(config)
    config = camera.create_preview_configuration()
    config["main"]["size"] = (321, 240)
    with pytest.raises(RuntimeError, match=r"^width and height should be even$"):
        camera.configure(config)
    config["main"]["size"] = [320, 240]
    with pytest.raises(RuntimeError, match=r"^size in main stream should be \(width, height\)$"):
        camera.configure(config)


def test_fake_configure_copies_like_picamera2(scene):
    """Shallow, as picamera2.py:1184: the caller's top level is untouched, its stream dicts
    get libcamera's stride; ``camera_config`` is the configured copy."""
    camera = FakePicamera2.with_scene(scene, sensor="imx219")()
    config = camera.create_preview_configuration(main={"size": (320, 240), "format": "RGB888"}, sensor={})
    camera.configure(config)
    assert config["sensor"] == {} and camera.camera_config["sensor"] == {"output_size": (640, 480), "bit_depth": 10}
    assert camera.camera_config is not config and camera.camera_config["main"] is config["main"]
    assert config["main"]["stride"] == 960


def test_fake_requests_are_reference_counted_and_held_buffers_starve_the_camera(scene):
    camera = FakePicamera2.with_scene(scene)()
    camera.configure(camera.create_preview_configuration(main={"size": (64, 48), "format": "RGB888"}, buffer_count=2))
    camera.start()
    held = [camera.capture_request(wait=0.5) for _ in range(2)]
    with pytest.raises(TimeoutError):
        camera.capture_request(wait=0.1)  # every buffer is with the application
    camera.cancel_all_and_flush()
    held[0].release()
    assert camera.capture_request(wait=0.5).get_metadata()["SensorTimestamp"] > 0
    with pytest.raises(RuntimeError, match="negative ref_count"):
        held[0].release()


@pytest.mark.parametrize(("downscaler", "main_size"), [(False, (256, 192)), (True, (160, 120))])
def test_fake_pi5_output0_without_a_downscaler_scales_down_at_most_16x(scene, downscaler, main_size):
    """libcamera pisp.cpp platformValidate: with two streams the larger goes to back-end
    output 0, which on the BCM2712 D0 has only the resampler (16x); output 1 keeps 64x."""
    camera_class = FakePicamera2.with_scene(scene, sensor="imx477", platform="pisp")
    camera_class.pisp_output0_downscaler = downscaler  # C0 stepping
    camera = camera_class()
    config = camera.create_preview_configuration(
        main={"size": (160, 120), "format": "YUV420"},
        lores={"size": (160, 120)},
        sensor={"output_size": (4056, 3040), "bit_depth": 12},
    )
    camera.configure(config)
    assert camera.camera_config["main"]["size"] == main_size
    assert camera.camera_config["lores"]["size"] == (160, 120)


def test_fake_imx477_lists_current_kernels_modes(scene):
    modes = {(mode["size"], mode["bit_depth"]) for mode in SENSORS["imx477"]["modes"]}
    sizes = [(1332, 990), (2028, 1080), (2028, 1520), (4056, 2160), (4056, 3040)]
    assert modes == {(size, depth) for size in sizes for depth in (10, 12)}
    assert choose_sensor_mode(modes_of("imx477"), (320, 240)).size == (2028, 1520)
    # 12-bit now exists at 1332x990 too, so picamera2's own choice at 320x240 is that crop
    # (README, "Which sensor mode each Pi camera gets").
    camera = FakePicamera2.with_scene(scene, sensor="imx477")()
    camera.configure(camera.create_preview_configuration(main={"size": (320, 240), "format": "RGB888"}))
    assert camera.camera_config["sensor"] == {"output_size": (1332, 990), "bit_depth": 12}


# --- (8) what a failed open leaves behind ---------------------------------------------------------------


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def test_fake_leaks_a_pipe_per_failed_construction_as_picamera2_does(scene):
    """picamera2.py:338-345 open the pipe and register the object before the acquire fails;
    close() returns early on it (:712). The read end goes when the manager drops the object,
    the write end never does."""
    camera_class = FakePicamera2.with_scene(scene)
    camera_class.fail_starts = 100
    gc.collect()  # objects of earlier tests closing their files would blur the count
    before = open_fds()
    try:
        for _ in range(100):
            with pytest.raises(RuntimeError, match="did not complete"):
                camera_class(0)
        # Each write end still open, one per attempt: asserted on the pipes themselves, since a
        # set difference of fd numbers misses a number freed by another object and reused here.
        write_ends = {w for _, w in camera_class.pipes}
        assert len(write_ends) == 100
        assert write_ends <= open_fds()
    finally:
        camera_class._cm.cameras.clear()
        for fd in (open_fds() - before) | {w for _, w in camera_class.pipes}:
            with contextlib.suppress(OSError):
                os.close(fd)


def test_a_thousand_failed_opens_leave_the_fd_count_flat(scene):
    """A camera held by another process, retried: before, each attempt kept a pipe fd (120
    an hour at the 30 s backoff, EMFILE after about 8 hours under systemd's 1024)."""
    camera_class = FakePicamera2.with_scene(scene)
    camera_class.fail_starts = 1001
    source = Picamera2Source(320, 240, picamera2_class=camera_class)
    with pytest.raises(SourceError, match="Device or resource busy"):
        source.open()  # warm-up: anything opened once per process
    gc.collect()  # objects of earlier tests closing their files would blur the count
    before = open_fds()
    for _ in range(1000):
        with pytest.raises(SourceError, match="Device or resource busy"):
            source.open()
    gc.collect()
    after = open_fds()
    assert len(after) <= len(before) and after - before == set()
    assert len(camera_class.pipes) == 1001 and camera_class._cm.cameras == {}
    camera_class.fail_starts = 0
    assert len(read_frames(source, 1)) == 1  # and the camera opens once it is free


def test_a_failure_after_the_acquire_never_leaves_the_camera_acquired(scene, tmp_path):
    """picamera2 opens the DMA heap after acquiring the camera, outside its try block
    (picamera2.py:376): the half-built object keeps the camera, and every later open said
    "busy". Here no heap exists, so picamera2's allocator raises after the acquire."""
    camera_class = FakePicamera2.with_scene(scene)
    camera_class.dma_heap_paths = (str(tmp_path / "no-such-heap"),)
    source = Picamera2Source(320, 240, picamera2_class=camera_class, dma_heap_paths=camera_class.dma_heap_paths)
    gc.collect()
    before = open_fds()
    for _ in range(3):
        with pytest.raises(SourceError) as caught:
            source.open()
        assert str(caught.value) == (
            "picamera2 camera 0 (main 320x240): cannot open the camera (RuntimeError: Could not open any "
            "dmaHeap device)"
        )
    assert camera_class._acquired == set() and camera_class._cm.cameras == {}
    assert all(camera.closed for camera in camera_class.instances) and len(camera_class.instances) == 3
    gc.collect()
    assert open_fds() - before == set()


UNPRIVILEGED = 65534  # nobody


def run_unprivileged(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter as user nobody, where file permissions apply (they do
    not to root); as this user when the tests do not run as root."""
    command = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        command = ["setpriv", f"--reuid={UNPRIVILEGED}", f"--regid={UNPRIVILEGED}", "--clear-groups", *command]
    tests = Path(__file__).resolve().parent
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), str(tests.parent)])}
    return subprocess.run(command, cwd=cwd, env=environ, capture_output=True, text=True, timeout=60)


def test_a_dma_heap_this_user_cannot_open_is_named_before_the_camera_is_taken(tmp_path):
    """Pi 5: libcamera lists the camera without the heap; picamera2 then fails on the heap
    with the camera acquired. The source checks the heap first and names the fix."""
    heap = tmp_path / "vidbuf_cached"
    heap.touch(mode=0o000)
    tmp_path.chmod(0o755)
    code = f"""
import numpy as np
from fake_picamera2 import FakePicamera2
from edge.sources.base import SourceError
from edge.sources.picamera2 import Picamera2Source

camera_class = FakePicamera2.with_scene(np.zeros((480, 640, 3), np.uint8))
camera_class.dma_heap_paths = ({str(heap)!r},)
source = Picamera2Source(320, 240, picamera2_class=camera_class, dma_heap_paths=camera_class.dma_heap_paths)
for _ in range(2):
    try:
        source.open()
    except SourceError as exc:
        print(exc)
print(len(camera_class.pipes), sorted(camera_class._acquired))
"""
    done = run_unprivileged(code, tmp_path)
    assert done.returncode == 0, done.stderr
    first, second, state = done.stdout.splitlines()
    assert (
        first
        == second
        == (
            f"picamera2 camera 0 (main 320x240): this user cannot open {heap} (Permission denied); picamera2 "
            "allocates the frame buffers there after taking the camera, so it cannot work and would keep the camera "
            'busy; the udev rule SUBSYSTEM=="dma_heap", GROUP="video", MODE="0660" (raspberrypi-sys-mods, '
            "60-dma-heap.rules) and group video for this user fix it (see docs/deploy.md, 'Camera and the hardened "
            "unit')"
        )
    )
    assert state == "0 []"  # picamera2 was never asked to open the camera


def test_a_stuck_close_keeps_the_grabber_unreleased_until_it_returns(scene):
    """Pi 4, cable glitch: close() can sit in uninterruptible sleep (picamera2 issues #1264,
    #1275). The grabber gives up waiting, and says the source is still in use."""
    from edge.sources.grabber import FrameGrabber

    camera_class = FakePicamera2.with_scene(scene)
    camera_class.close_blocks = threading.Event()
    grabber = FrameGrabber(Picamera2Source(320, 240, picamera2_class=camera_class))
    grabber.start()
    assert grabber.get(timeout=5.0) is not None
    started = time.monotonic()
    grabber.stop(timeout=0.3)
    assert time.monotonic() - started < 2.0 and not grabber.released
    camera_class.close_blocks.set()
    deadline = time.monotonic() + 5.0
    while not grabber.released and time.monotonic() < deadline:
        time.sleep(0.01)
    assert grabber.released and camera_class.instances[0].closed


# --- (9) the picamera2 version ------------------------------------------------------------------------------


def installed_metadata(folder: Path, version: str) -> Path:
    """A picamera2 dist-info as the apt package installs it, read by importlib.metadata."""
    info = folder / f"picamera2-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: picamera2\nVersion: {version}\n")
    return folder


def test_picamera2_older_than_the_minimum_is_refused_naming_its_version(scene, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(installed_metadata(tmp_path, "0.3.19")))
    camera_class = FakePicamera2.with_scene(scene, version="0.3.19")
    with pytest.raises(SourceError) as caught:
        Picamera2Source(320, 240, picamera2_class=camera_class).open()
    assert str(caught.value) == (
        f"picamera2 0.3.19 is older than {MIN_PICAMERA2_VERSION}: it has no capture timeout, so a pulled camera "
        "cable would hang the service; upgrade it: sudo apt update && sudo apt install --only-upgrade "
        "python3-picamera2 (tools/install.sh does this)"
    )
    assert camera_class.pipes == []  # refused before picamera2 touched the camera


def test_the_installer_refuses_an_old_python3_picamera2_before_installing_anything(tmp_path, project_root):
    """tools/install.sh reads the minimum from edge/sources/picamera2.py and the installed
    version from the target's dpkg database (here a scratch root's, read by dpkg-query)."""
    dpkg = tmp_path / "var" / "lib" / "dpkg"
    dpkg.mkdir(parents=True)
    (dpkg / "status").write_text(
        "Package: python3-picamera2\nStatus: install ok installed\nPriority: optional\nMaintainer: x <x@x>\n"
        "Version: 0.3.19-1\nArchitecture: all\nDescription: picamera2\n\n"
    )
    done = subprocess.run(
        ["sh", str(project_root / "tools" / "install.sh"), "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr == (
        f"install.sh: error: python3-picamera2 0.3.19-1 is older than {MIN_PICAMERA2_VERSION}, which edge-face needs "
        "(older ones have no capture timeout: a pulled camera cable would hang the service); upgrade "
        f"python3-picamera2 in {tmp_path} first\n"
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["var"]  # nothing installed


def test_without_package_metadata_an_old_picamera2_is_known_by_its_missing_cancel(scene):
    camera_class = FakePicamera2.with_scene(scene, version="0.3.18")
    with pytest.raises(SourceError, match=r"^picamera2 \(version unknown\) is older than 0\.3\.20: "):
        Picamera2Source(320, 240, picamera2_class=camera_class).open()


@pytest.mark.parametrize("version", [MIN_PICAMERA2_VERSION, "0.3.36", "0.4.0"])
def test_picamera2_at_or_above_the_minimum_opens(scene, tmp_path, monkeypatch, version):
    monkeypatch.syspath_prepend(str(installed_metadata(tmp_path, version)))
    camera_class = FakePicamera2.with_scene(scene, version=version)
    assert len(read_frames(Picamera2Source(320, 240, picamera2_class=camera_class), 1)) == 1


def test_fake_before_0_3_20_ignores_the_capture_timeout(scene):
    """Why the minimum: 0.3.18 takes wait=0.2 and blocks until a frame comes, for ever."""
    camera_class = FakePicamera2.with_scene(scene, version="0.3.18")
    assert not hasattr(camera_class, "cancel_all_and_flush")
    camera = camera_class()
    camera.configure(camera.create_preview_configuration(main={"size": (64, 48), "format": "RGB888"}))
    camera.start()
    camera_class.cable_unplugged = True
    waiter = threading.Thread(target=lambda: camera.capture_array("main", wait=0.2), daemon=True)
    waiter.start()
    waiter.join(0.8)
    assert waiter.is_alive()
    camera_class.cable_unplugged = False  # only a frame ends the wait
    waiter.join(2.0)
    assert not waiter.is_alive()


# --- (10) sensor modes that cannot be read or have no crop --------------------------------------------------


def test_sensor_modes_are_read_once_per_camera(scene):
    camera_class = FakePicamera2.with_scene(scene, sensor="imx477")
    source = Picamera2Source(320, 240, picamera2_class=camera_class)
    for _ in range(3):
        read_frames(source, 1)
    first, *later = camera_class.instances
    assert first.calls.count("configure") == len(SENSORS["imx477"]["modes"]) + 1  # one per mode, then ours
    assert all("sensor_modes" not in camera.calls and camera.calls.count("configure") == 1 for camera in later)
    assert all(camera.configured[-1]["sensor"] == {"output_size": (2028, 1520), "bit_depth": 12} for camera in later)


def test_sensor_modes_that_run_out_of_memory_are_a_warning_at_every_open(scene, caplog):
    """Zero 2 W with the HQ camera: reading the modes configures the 4056x3040 one, and CMA
    runs out. picamera2 then picks the mode nearest the output: a crop."""
    camera_class = FakePicamera2.with_scene(scene, sensor="imx477", platform="vc4")
    camera_class.sensor_modes_fail_at = (4056, 3040)
    caplog.set_level(logging.INFO, logger="edge.sources")
    source = Picamera2Source(320, 240, picamera2_class=camera_class)
    for _ in range(2):
        assert len(read_frames(source, 1)) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and warnings[0] == warnings[1]
    assert warnings[0] == (
        "picamera2 camera 0 (main 320x240): imx477 camera, field of view unknown: cannot read the sensor modes "
        "(OSError: [Errno 12] Cannot allocate memory); libcamera runs sensor mode 1332x990 12-bit, which may be "
        "a crop; on a Pi Zero 2 W or 1 GB board give the camera more CMA memory (see docs/deploy.md, 'Camera "
        "and the hardened unit')"
    )
    assert [camera.calls.count("sensor_modes") for camera in camera_class.instances] == [1, 1]  # tried again


def test_a_crop_of_65535_is_unknown_not_the_whole_sensor(scene, caplog):
    camera_class = FakePicamera2.with_scene(scene, sensor="imx219")
    camera_class.unknown_crop_limits = True
    caplog.set_level(logging.INFO, logger="edge.sources")
    read_frames(Picamera2Source(320, 240, picamera2_class=camera_class), 1)
    modes = [SensorMode.from_picamera2(mode) for mode in camera_class.instances[0].sensor_modes_]
    assert all(mode.crop is None for mode in modes) and full_sensor_size(modes) is None
    assert choose_sensor_mode(modes, (320, 240)) is None
    messages = [r.getMessage() for r in caplog.records]
    assert not any("% of the sensor" in message for message in messages)
    assert (
        "picamera2 camera 0 (main 320x240): imx219 camera, field of view unknown: libcamera reports no crop for "
        "its sensor modes; libcamera runs sensor mode 640x480 10-bit, which may be a crop"
    ) in messages
