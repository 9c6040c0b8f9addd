"""Frame sources: replay of real photos, the newest-frame grabber and its reopen backoff,
picamera2 against the documented-API fake (tests/fake_picamera2.py), OpenCV on a real
video file, and auto-selection."""

from __future__ import annotations

import io
import itertools
import logging
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from daemon_support import bomb_png, truncated_jpeg, write_config
from fake_picamera2 import SENSORS, FakePicamera2
from PIL import Image

from edge.config import CameraConfig, load_config
from edge.daemon.loop import build_daemon
from edge.daemon.sdnotify import SystemdNotifier
from edge.mqtt.sinks import StdoutSink
from edge.sources.auto import build_source, select_auto_camera
from edge.sources.base import Frame, SourceError
from edge.sources.grabber import FrameGrabber, reminder_interval
from edge.sources.imageio import load_image
from edge.sources.opencv import OpenCVSource, classify_device
from edge.sources.picamera2 import Picamera2Source
from edge.sources.replay import ReplaySource

pytestmark = pytest.mark.unit


@pytest.fixture()
def photo_folder(tmp_path: Path, photo_paths: list[Path]) -> Path:
    """Three real photos (symlinked, so nothing is copied) plus files replay must ignore."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for name, photo in zip(("b.jpg", "a.jpg", "c.JPG"), photo_paths[:3], strict=True):
        (folder / name).symlink_to(photo)
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    return folder


def read_all(source, limit: int = 100) -> list[Frame]:
    frames = []
    source.open()
    try:
        while len(frames) < limit and (frame := source.read()) is not None:
            frames.append(frame)
    finally:
        source.close()
    return frames


# --- replay ---------------------------------------------------------------------------------------------


def test_replay_reads_a_folder_in_name_order_as_rgb(photo_folder):
    frames = read_all(ReplaySource(photo_folder))
    expected = [load_image(photo_folder / name) for name in ("a.jpg", "b.jpg", "c.JPG")]
    assert [f.index for f in frames] == [0, 1, 2]
    assert all(f.color_order == "RGB" for f in frames)
    for frame, pixels in zip(frames, expected, strict=True):
        np.testing.assert_array_equal(frame.pixels, pixels)
    assert all(b.t_monotonic >= a.t_monotonic for a, b in itertools.pairwise(frames))


def test_replay_of_one_image(photo_paths):
    frames = read_all(ReplaySource(photo_paths[0]))
    assert len(frames) == 1 and frames[0].pixels.shape == load_image(photo_paths[0]).shape


def test_replay_loops_and_paces_at_fps(photo_paths):
    source = ReplaySource(photo_paths[0], fps=20.0, loop=True, preload=True)
    started = time.monotonic()
    frames = read_all(source, limit=6)
    elapsed = time.monotonic() - started
    assert [f.index for f in frames] == list(range(6))
    assert elapsed >= 5 / 20.0 - 0.01
    gaps = np.diff([f.t_monotonic for f in frames])
    assert gaps.min() >= 1 / 20.0 - 0.01


def test_replay_errors_name_the_path(tmp_path):
    with pytest.raises(SourceError, match=r"^replay '.*empty': no images \(\.jpg"):
        (tmp_path / "empty").mkdir()
        ReplaySource(tmp_path / "empty").open()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "0.jpg").write_bytes(b"not a jpeg")
    source = ReplaySource(tmp_path / "bad", loop=True)
    source.open()
    with pytest.raises(
        SourceError,
        match=r"^replay '.*bad': none of its 1 image file\(s\) can be read \(first: image '.*0\.jpg': not a readable",
    ):
        source.read()


def bad_folder(tmp_path: Path, photo_paths: list[Path]) -> tuple[Path, list[str]]:
    """Two good photos among every kind of bad entry an operator or an attacker can leave."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "00.jpg").symlink_to(photo_paths[0])
    bomb_png(folder / "01-bomb.png")
    truncated_jpeg(folder / "02-truncated.jpg", photo_paths[1])
    (folder / "03-empty.jpg").write_bytes(b"")
    os.mkfifo(folder / "04-fifo.jpg")
    (folder / "05-dir.jpg").mkdir()
    (folder / "06-loop.jpg").symlink_to(folder / "06-loop.jpg")
    (folder / "07-gone.jpg").symlink_to(tmp_path / "deleted-before-reading.jpg")
    (folder / "08.jpg").symlink_to(photo_paths[1])
    return folder, ["01-bomb.png", "02-truncated.jpg", "03-empty.jpg"]


def test_replay_skips_every_bad_file_once_per_file_and_keeps_going(tmp_path, photo_paths, caplog):
    folder, undecodable = bad_folder(tmp_path, photo_paths)
    caplog.set_level(logging.WARNING, logger="edge.sources")
    source = ReplaySource(folder, loop=True)
    started = time.monotonic()
    frames = read_all(source, limit=6)  # three passes over the folder
    assert time.monotonic() - started < 30  # the FIFO did not block the reader
    expected = [load_image(photo_paths[0]), load_image(photo_paths[1])] * 3
    assert len(frames) == 6 and all(np.array_equal(f.pixels, e) for f, e in zip(frames, expected, strict=True))
    lines = [r.getMessage() for r in caplog.records]
    for name in [*undecodable, "04-fifo.jpg", "05-dir.jpg", "06-loop.jpg", "07-gone.jpg"]:
        assert sum(name in line for line in lines) == 1, (name, lines)
    assert any(("01-bomb.png" in line and "too many pixels" in line) or "bomb" in line for line in lines)


def test_replay_of_a_file_deleted_after_listing_skips_it(tmp_path, photo_paths, caplog):
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "0.jpg").symlink_to(photo_paths[0])
    (folder / "1.jpg").write_bytes(photo_paths[1].read_bytes())
    source = ReplaySource(folder)
    source.open()
    (folder / "1.jpg").unlink()
    assert source.read().index == 0 and source.read() is None
    assert list(source.skipped) == [folder / "1.jpg"]


def test_replay_where_a_file_turns_into_a_fifo_does_not_block(tmp_path, photo_paths):
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "0.jpg").symlink_to(photo_paths[0])
    (folder / "1.jpg").write_bytes(b"placeholder")
    source = ReplaySource(folder, loop=True)
    source.open()
    (folder / "1.jpg").unlink()
    os.mkfifo(folder / "1.jpg")  # swapped in between the listing and the read
    assert [source.read().index for _ in range(3)] == [0, 1, 2]
    assert "not a regular file" in source.skipped[folder / "1.jpg"]


# --- grabber --------------------------------------------------------------------------------------------


def test_grabber_hands_over_every_replay_frame_in_order(photo_folder):
    grabber = FrameGrabber(ReplaySource(photo_folder, loop=False))
    grabber.start()
    indices = []
    while not grabber.finished:
        frame = grabber.get(timeout=2.0)
        if frame is not None:
            indices.append(frame.index)
            time.sleep(0.02)  # a slow consumer must not lose frames of a replay
    grabber.stop()
    assert indices == [0, 1, 2]
    assert grabber.health.dropped_frames == 0 and grabber.health.state == "ended"
    assert grabber.error is None


def test_grabber_keeps_only_the_newest_frame_of_a_live_stream(photo_paths):
    source = ReplaySource(photo_paths[0], fps=200.0, loop=True, preload=True)
    grabber = FrameGrabber(source, keep_latest=True)
    grabber.start()
    taken = []
    try:
        for _ in range(5):
            time.sleep(0.05)  # a detector slower than the camera
            frame = grabber.get(timeout=1.0)
            taken.append(frame.index)
            # What we got is the newest: the reader has not produced another frame since.
            assert frame.index >= grabber.health.frames_read - 3
    finally:
        grabber.stop()
    health = grabber.health
    assert all(b - a > 1 for a, b in itertools.pairwise(taken)), taken
    assert health.dropped_frames >= health.frames_read - len(taken) - 1
    assert health.dropped_frames > 0


def test_grabber_reports_a_replay_where_nothing_can_be_read(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "0.jpg").write_bytes(b"truncated")
    (folder / "1.png").write_bytes(b"")
    grabber = FrameGrabber(ReplaySource(folder, loop=True))
    grabber.start()
    assert grabber.get(timeout=5.0) is None
    grabber.stop()
    assert grabber.finished and grabber.health.state == "failed"
    assert "none of its 2 image file(s) can be read" in str(grabber.error)


class ExplodingSource:
    """A source whose reader fails with an error no source should raise (a bug)."""

    name, is_live = "exploding", False

    def __init__(self) -> None:
        self.closed = False

    def open(self) -> None:
        pass

    def read(self):
        raise ZeroDivisionError("a bug in a source")

    def close(self) -> None:
        self.closed = True


def test_an_unexpected_error_in_the_reader_is_a_crash_not_an_end_of_stream():
    crashes = []
    source = ExplodingSource()
    grabber = FrameGrabber(source, on_crash=lambda name, exc: crashes.append((name, exc)))
    grabber.start()
    assert grabber.get(timeout=5.0) is None
    grabber.stop()
    assert grabber.finished and grabber.health.state == "crashed" and source.closed
    assert isinstance(grabber.crash, ZeroDivisionError) and grabber.error is None
    assert [(name, type(exc)) for name, exc in crashes] == [("frame-grabber", ZeroDivisionError)]


def test_a_live_camera_missing_at_start_is_waited_for_with_backoff(photo_paths, caplog):
    camera_class = FakePicamera2.with_scene(load_image(photo_paths[0]))
    camera_class.fail_starts = 3
    grabber = FrameGrabber(Picamera2Source(320, 240, picamera2_class=camera_class), 0.05, 0.1)
    caplog.set_level(logging.INFO, logger="edge.sources")
    grabber.start()  # does not raise: boot order must not matter
    try:
        assert grabber.health.state == "waiting" and grabber.health.last_error
        assert grabber.get(timeout=5.0) is not None
        assert grabber.health.state == "ok"
    finally:
        grabber.stop()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("waiting for camera: ") and lines[-1].endswith(": opened")


def test_reminders_start_at_the_first_interval_and_double_up_to_the_longest():
    intervals = [reminder_interval(n, first=60.0, longest=3600.0) for n in range(12)]
    assert intervals[0] == 60.0
    growing = list(itertools.takewhile(lambda pair: pair[1] < 3600.0, itertools.pairwise(intervals)))
    assert growing and all(later == 2 * earlier for earlier, later in growing)
    assert intervals[-1] == 3600.0 and max(intervals) == 3600.0
    assert reminder_interval(10_000, first=60.0, longest=3600.0) == 3600.0  # no overflow after months


def test_a_camera_that_stays_missing_is_a_warning_once_then_ever_rarer_info_reminders(photo_paths, caplog):
    camera_class = FakePicamera2.with_scene(load_image(photo_paths[0]))
    camera_class.fail_starts = 1_000_000  # never comes
    source = Picamera2Source(320, 240, picamera2_class=camera_class)
    grabber = FrameGrabber(source, reopen_min_delay=0.005, reopen_max_delay=0.01, first_reminder=0.1)
    caplog.set_level(logging.INFO, logger="edge.sources")

    def reminders() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.levelno == logging.INFO]

    grabber.start()
    try:
        deadline = time.monotonic() + 20.0
        while len(reminders()) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        attempts = 1_000_000 - camera_class.fail_starts
    finally:
        grabber.stop()
    assert grabber.health.state == "waiting" and "Device or resource busy" in grabber.health.last_error
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage().startswith("waiting for camera: ") for r in warnings] == [True], warnings
    told = reminders()[:3]
    assert len(told) == 3
    assert all(r.getMessage().startswith("still waiting for camera (") for r in told)
    assert all(r.getMessage().endswith("; retrying every 0.01 s") for r in told)
    # Retried all along (every 10 ms), but each reminder comes twice as long after the last.
    assert attempts > 30
    gaps = [later.created - earlier.created for earlier, later in itertools.pairwise([warnings[0], *told])]
    assert gaps[0] >= 0.1 and all(later >= 1.5 * earlier for earlier, later in itertools.pairwise(gaps)), gaps


def test_grabber_reopens_a_failing_camera_with_exponential_backoff(photo_paths, caplog):
    camera_class = FakePicamera2.with_scene(load_image(photo_paths[0]))
    source = Picamera2Source(320, 240, picamera2_class=camera_class)
    grabber = FrameGrabber(source, reopen_min_delay=0.05, reopen_max_delay=0.15)
    caplog.set_level(logging.INFO, logger="edge.sources")
    grabber.start()
    try:
        assert grabber.get(timeout=2.0) is not None
        # The camera drops out, and comes back only on the third attempt to start it.
        camera_class.fail_starts = 2
        camera_class.fail_captures = 1
        failed_at = time.monotonic()
        deadline = failed_at + 5.0
        while grabber.health.reopens == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        recovered_after = time.monotonic() - failed_at
        assert grabber.health.reopens == 1 and grabber.health.state == "ok"
        assert grabber.get(timeout=2.0) is not None
    finally:
        grabber.stop()
    # Waited 0.05, then 0.1, then 0.15 (capped) before the open that worked.
    assert recovered_after >= 0.05 + 0.1 + 0.15 - 0.02
    # Each cause is told once: the failed capture, then the failed start (not again when it repeats).
    delays = [r.getMessage().rsplit("; ", 1)[1] for r in caplog.records if " in " in r.getMessage().rsplit("; ", 1)[-1]]
    assert delays == ["reopening in 0.05 s", "retrying in 0.1 s"]
    assert any(r.getMessage().endswith(": reopened") for r in caplog.records)
    assert [camera.closed for camera in camera_class.instances[:-1]] == [True] * (len(camera_class.instances) - 1)


# --- OpenCV -----------------------------------------------------------------------------------------------


def test_opencv_missing_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "cv2", None)  # what `import cv2` sees when it is not installed
    with pytest.raises(SourceError, match=r"^OpenCV is not installed; .*pip install 'edge-face\[opencv\]'$"):
        OpenCVSource(str(tmp_path / "clip.avi")).open()


@pytest.mark.parametrize(
    ("device", "kind"),
    [
        ("0", "index"),
        ("/dev/video2", "v4l2"),
        ("rtsp://cam/stream", "url"),
        ("HTTPS://x/y.mjpg", "url"),
        ("clip.mp4", "file"),
    ],
)
def test_opencv_device_kinds(device, kind):
    assert classify_device(device) == kind
    assert OpenCVSource(device).is_live == (kind != "file")


def test_opencv_names_hide_url_passwords():
    assert OpenCVSource("rtsp://admin:hunter2@10.0.0.5/stream1").name == "opencv 'rtsp://admin:***@10.0.0.5/stream1'"


def test_opencv_reads_a_real_video_file_as_bgr(tmp_path, photo_paths):
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))
    scenes = [np.asarray(Image.open(p).convert("RGB").resize((320, 240))) for p in photo_paths[:4]]
    for rgb in scenes:
        writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
    writer.release()
    frames = read_all(OpenCVSource(str(path)))
    assert len(frames) == 4 and all(f.color_order == "BGR" for f in frames)
    for frame, rgb in zip(frames, scenes, strict=True):
        # MJPG is lossy: the right photo in the right channel order, within JPEG error.
        assert np.abs(frame.pixels[:, :, ::-1].astype(int) - rgb.astype(int)).mean() < 6.0


def test_opencv_missing_device_or_file(tmp_path):
    pytest.importorskip("cv2")
    with pytest.raises(SourceError, match=r"^opencv '/dev/video97': no such device"):
        OpenCVSource("/dev/video97").open()
    with pytest.raises(SourceError, match=r"no such video file"):
        OpenCVSource(str(tmp_path / "missing.mp4")).open()


# --- auto-selection -----------------------------------------------------------------------------------------


def test_auto_prefers_a_listed_picamera2_camera(photo_paths, tmp_path):
    camera_class = FakePicamera2.with_scene(load_image(photo_paths[0]))
    source = build_source(CameraConfig(), (320, 240), picamera2_class=camera_class, video_device=tmp_path / "video0")
    frames = read_all(source, limit=1)
    assert source.is_live and frames[0].pixels.shape == (240, 320, 3) and frames[0].color_order == "BGR"


def test_auto_falls_back_to_video0(photo_paths, tmp_path):
    video0 = tmp_path / "video0"
    video0.touch()  # exists, but is no camera: OpenCV is what tried to open it
    no_camera = FakePicamera2.with_scene(load_image(photo_paths[0]), cameras=[])
    source = build_source(
        CameraConfig(width=640, height=480), (320, 240), picamera2_class=no_camera, video_device=video0
    )
    with pytest.raises(SourceError, match=rf"^opencv '{video0}'"):
        source.open()


@pytest.mark.parametrize("installed_but_broken", [False, True])
def test_auto_falls_back_to_video0_only_when_picamera2_is_absent(monkeypatch, tmp_path, installed_but_broken):
    # On a Pi /dev/video0 is the raw sensor node: a broken picamera2 (numpy 1/2 mismatch with
    # simplejpeg) must be reported, not hidden behind an OpenCV source reading raw Bayer data.
    import edge.sources.auto as auto
    from edge.sources.picamera2 import Picamera2NotInstalled

    def failing_import():
        if installed_but_broken:
            raise SourceError("picamera2 is installed but cannot be imported (ValueError: numpy.dtype size changed)")
        raise Picamera2NotInstalled("picamera2 is not installed")

    monkeypatch.setattr(auto, "import_picamera2_class", failing_import)
    video0 = tmp_path / "video0"
    video0.touch()
    source = build_source(CameraConfig(), (320, 240), video_device=video0)
    expected = "numpy.dtype size changed" if installed_but_broken else rf"^opencv '{video0}'"
    with pytest.raises(SourceError, match=expected):
        source.open()


def test_auto_without_any_camera_is_a_clear_error_when_opened(photo_paths, tmp_path):
    no_camera = FakePicamera2.with_scene(load_image(photo_paths[0]), cameras=[])
    source = build_source(CameraConfig(), (320, 240), picamera2_class=no_camera, video_device=tmp_path / "video0")
    with pytest.raises(SourceError) as caught:
        source.open()
    assert str(caught.value) == (
        f"no camera found: picamera2 lists no camera and {tmp_path / 'video0'} does not exist; "
        'connect a camera, or set [camera] source = "replay" with path = a folder of images'
    )


def test_auto_leaves_a_usb_webcam_to_opencv(photo_paths, tmp_path):
    """libcamera lists UVC cameras; the picamera2 source refuses their YUYV/MJPEG, so auto
    picking picamera2 waited for ever with 'set source = opencv'."""
    video0 = tmp_path / "video0"
    video0.touch()
    webcam = FakePicamera2.with_scene(load_image(photo_paths[0]), sensor="usb")
    assert select_auto_camera(webcam, video0) == ("opencv", None)
    video0.unlink()
    with pytest.raises(SourceError) as caught:
        select_auto_camera(webcam, video0)
    assert str(caught.value).startswith("no camera found: picamera2 lists only USB cameras, which OpenCV reads and ")


def test_auto_takes_the_pi_camera_when_a_webcam_is_listed_too(photo_paths, tmp_path):
    both = [
        {
            "Model": "UVC Camera (046d:0825)",
            "Location": 2,
            "Rotation": 0,
            "Id": "/base/axi/pcie@120000/rp1/usb@200000-1",
        },
        {"Model": "imx708", "Location": 2, "Rotation": 0, "Id": SENSORS["imx708"]["id"]},
    ]
    camera_class = FakePicamera2.with_scene(load_image(photo_paths[0]), cameras=both)
    assert select_auto_camera(camera_class, tmp_path / "video0") == ("picamera2", camera_class)
    assert camera_class.global_camera_info()[0]["Model"] == "imx708"  # picamera2 sorts USB last


def test_a_reload_never_hands_a_source_still_in_use_to_a_second_reader(photo_paths, int8_model_path, tmp_path, caplog):
    """A reload whose new camera fails reopens the old one; if the old reader is still stuck
    in close() (Pi 4 cable glitch), its source object must not get a second reader."""
    camera_class = FakePicamera2.with_scene(load_image(photo_paths[0]))
    first = Picamera2Source(320, 240, picamera2_class=camera_class)
    sections = {"device": {"id": "test-hall"}, "detector": {"model": int8_model_path}, "stats": {"interval_seconds": 1}}
    path = write_config(tmp_path / "edge-face.toml", {"camera": {"source": "picamera2"}, **sections})
    daemon = build_daemon(
        load_config(path), config_path=path, source=first, sink=StdoutSink(io.StringIO()), notifier=SystemdNotifier({})
    )
    caplog.set_level(logging.INFO, logger="edge")
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(daemon.run()))
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while daemon.frames_processed < 3:
            assert time.monotonic() < deadline and runner.is_alive()
            time.sleep(0.02)
        camera_class.close_blocks = threading.Event()  # the next close() hangs in the kernel
        write_config(path, {"camera": {"source": "opencv", "device": str(tmp_path / "video9")}, **sections})
        daemon.request_reload()
        while "reload failed" not in caplog.text:
            assert time.monotonic() < deadline + 30 and runner.is_alive()
            time.sleep(0.05)
        assert daemon.grabber.source is not first
        assert "picamera2 camera 0 (main 320x240): its reader is still blocked; opening a new source object" in (
            caplog.text
        )
        assert daemon.stats(time.monotonic(), daemon.grabber.health)["open_fds"] == len(os.listdir("/proc/self/fd"))
    finally:
        if camera_class.close_blocks is not None:
            camera_class.close_blocks.set()
        daemon.request_stop()
        runner.join(timeout=30)
    assert codes == [0]


def test_configured_sources(photo_paths):
    replay = build_source(CameraConfig(source="replay", path=photo_paths[0], fps=5.0, loop=True), (320, 240))
    assert isinstance(replay, ReplaySource) and (replay.fps, replay.loop) == (5.0, True)
    opencv = build_source(CameraConfig(source="opencv", device="rtsp://cam/1"), (320, 240))
    assert isinstance(opencv, OpenCVSource) and opencv.kind == "url"
