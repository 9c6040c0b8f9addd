"""``edge-face preview --config FILE OUT``: one frame of the configured camera with the scene on it.

An operator sets masks and zones by looking, not by guessing fractions: the picture is the
frame the daemon would see, with the masks (shaded red), the zones (outlined in their
colours, named, with their face counts) and the faces the detector finds (green: kept by
the scene rules, gray: dropped), drawn by :func:`edge.scene.rules.draw_scene`. Detector, source and
Home Assistant overrides are built exactly as the daemon builds them.

Privacy fails closed: while detection is switched off from Home Assistant no frame is read,
nor when that switch's stored state cannot be read. The picture is written atomically (a
temp file beside OUT, renamed): OUT is the old file or the new picture, never a part.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.config import Config, ConfigError, load_config, quote_path
from edge.detect.decode import Detections
from edge.exitcodes import ExitCode
from edge.mqtt.controls import Controls, state_path
from edge.scene.rules import apply_scene, draw_scene
from edge.sources.base import Frame, SourceError

# A live camera's first frames are still settling exposure and white balance: the preview
# is the newest frame after this long.
LIVE_SETTLE_SECONDS = 1.0
# How long a camera may take to deliver a frame at all.
FRAME_TIMEOUT_SECONDS = 15.0
PICTURE_SUFFIXES = (".jpg", ".jpeg", ".png")

log = logging.getLogger("edge.preview")


class PreviewError(Exception):
    """Why no preview was written: one line naming the file, key or camera; ``exit_code``
    from :class:`edge.exitcodes.ExitCode`."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Preview:
    """``picture``: (H, W, 3) uint8 RGB, the frame with the scene drawn on it; ``faces``:
    the detector's faces (normalized boxes); ``kept``: those the scene rules keep;
    ``zone_counts``: kept faces per zone, in config order."""

    picture: np.ndarray
    faces: int
    kept: int
    zone_counts: dict[str, int]


def output_problem(out: Path) -> str | None:
    """One line if the picture cannot be written to ``out`` (checked before the camera is opened)."""
    where = f"output '{quote_path(out)}'"
    if out.is_dir():
        return f"{where}: is a folder, not a file name"
    if out.suffix.lower() not in PICTURE_SUFFIXES:
        return f"{where}: the picture is a JPEG or a PNG: name it *{', *'.join(PICTURE_SUFFIXES)}"
    folder = out.parent
    if not folder.is_dir():
        return f"{where}: folder '{quote_path(folder)}' does not exist"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{where}: folder '{quote_path(folder)}' is not writable by this user"
    return None


def privacy_problem(config: Config) -> str | None:
    """One line if detection is switched off from Home Assistant, or if that cannot be told
    (a stored control state this user cannot read): the preview then reads no frame."""
    controls = Controls.for_config(config, log, load=False)
    if not controls.enabled:
        return None
    path = state_path(config.device.state_dir)
    if path.exists() and not os.access(path, os.R_OK):
        return (
            f"control state '{quote_path(path)}' is not readable by this user, so whether detection is "
            "switched off from Home Assistant is unknown: run as the service user (sudo -u edge-face)"
        )
    if not Controls.for_config(config, log).detection:
        return (
            f"detection is switched off from Home Assistant (privacy mode, '{quote_path(path)}'): "
            "no frame is read; switch it on first"
        )
    return None


def grab_frame(config: Config, model_size: tuple[int, int]) -> tuple[Frame, str]:
    """One frame of ``config.camera`` (the newest after :data:`LIVE_SETTLE_SECONDS` for a
    live camera, the first one of a replay) and the source's name; raises PreviewError
    (exit 3) when the camera cannot be opened or gives no frame."""
    from edge.sources.auto import build_source
    from edge.sources.grabber import FrameGrabber

    try:
        source = build_source(config.camera, model_size)
        grabber = FrameGrabber(source, logger=log)
        grabber.start(wait_for_live=False)
    except SourceError as exc:
        raise PreviewError(str(exc), ExitCode.SOURCE) from None
    try:
        frame: Frame | None = None
        first_at = None
        deadline = time.monotonic() + FRAME_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            newest = grabber.get(0.1)
            if newest is not None:
                frame = newest
                first_at = first_at if first_at is not None else time.monotonic()
            settled = first_at is not None and time.monotonic() - first_at >= LIVE_SETTLE_SECONDS
            if frame is not None and (not source.is_live or settled):
                break
            if grabber.finished:
                break
        if frame is None:
            why = grabber.error or grabber.health.last_error or f"none within {FRAME_TIMEOUT_SECONDS:g} s"
            raise PreviewError(f"{source.name}: no frame ({why})", ExitCode.SOURCE)
        return frame, source.name
    finally:
        grabber.stop()


def draw_preview(frame: Frame, detections: Detections, config: Config) -> Preview:
    """The frame (in its colour order) with ``config.scene`` and ``detections`` drawn on it."""
    rgb = np.ascontiguousarray(frame.pixels[:, :, ::-1]) if frame.color_order == "BGR" else frame.pixels
    kept = apply_scene(detections, frame.height, config.scene)
    return Preview(
        picture=draw_scene(rgb, config.scene, detections),
        faces=len(detections),
        kept=len(kept.detections),
        zone_counts=kept.zone_counts,
    )


def make_preview(config_path: str, out: Path) -> str:
    """Load ``config_path``, grab a frame, detect, draw, write ``out`` atomically; the summary
    line. Raises PreviewError (config 2, source 3, model 4, a failed write 1)."""
    from edge.daemon.loop import StartupError, build_detector
    from edge.sources.imageio import ImageError, save_image

    try:
        file_config = load_config(config_path)
    except ConfigError as exc:
        raise PreviewError(str(exc), ExitCode.CONFIG) from None
    problem = output_problem(out)
    if problem is not None:
        raise PreviewError(problem, ExitCode.CONFIG)
    problem = privacy_problem(file_config)
    if problem is not None:
        raise PreviewError(problem, ExitCode.FAILURE)
    # What the daemon would run with: the score threshold set from Home Assistant included.
    config = Controls.for_config(file_config, log).effective(file_config, announce=False)
    try:
        detector = build_detector(config)
    except StartupError as exc:
        raise PreviewError(str(exc), exc.exit_code) from None
    frame, source_name = grab_frame(config, detector.input_size)
    preview = draw_preview(frame, detector.detect(frame.pixels, frame.color_order), config)
    try:
        save_image(preview.picture, out)
    except ImageError as exc:
        raise PreviewError(str(exc), ExitCode.FAILURE) from None
    zones = "".join(f", zone {name}: {count}" for name, count in preview.zone_counts.items())
    return (
        f"{out}: {frame.width}x{frame.height} frame of {source_name}: {preview.faces} face(s), "
        f"{preview.kept} kept by the scene rules{zones}"
    )


def preview_main(config_path: str, out: Path) -> int:
    """``edge-face preview``: the summary on stdout and 0, or one line on stderr and its exit code."""
    try:
        print(make_preview(config_path, out))
    except PreviewError as exc:
        print(f"edge-face: preview: {exc}", file=sys.stderr)
        return exc.exit_code
    return ExitCode.OK
