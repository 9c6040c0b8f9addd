"""edge.daemon.snapshot: what a snapshot costs in memory, and that drawing never touches the frame."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from edge.daemon.snapshot import encode_snapshot
from edge.detect.decode import Detections
from edge.sources.imageio import load_image

pytestmark = pytest.mark.unit

FACE = Detections(np.array([[0.25, 0.25, 0.75, 0.75]], np.float32), np.array([0.9], np.float32))


@pytest.mark.parametrize("color_order", ["RGB", "BGR"])
def test_a_snapshot_copies_the_frame_once_and_leaves_it_alone(photo_paths, color_order):
    # Snapshots of large frames went frame -> image -> array (tobytes: two packed copies) ->
    # image again: three copies of the frame more than needed, per event, in the daemon's loop.
    # Pillow's own storage is not traced; numpy arrays and bytes are: a snapshot now traces
    # its JPEG buffers only, well under one copy of the frame.
    rgb = np.asarray(Image.open(photo_paths[0]).convert("RGB").resize((1600, 1200)))
    frame = np.ascontiguousarray(rgb[:, :, ::-1]) if color_order == "BGR" else rgb.copy()
    before = frame.copy()
    tracemalloc.start()
    try:
        jpeg = encode_snapshot(frame, color_order, FACE, max_bytes=100_000, quality=80)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert jpeg is not None and len(jpeg) <= 100_000
    assert peak < frame.nbytes / 2, f"a snapshot peaked at {peak} bytes for a {frame.nbytes}-byte frame"
    np.testing.assert_array_equal(frame, before)  # the boxes went on a copy
    with Image.open(io.BytesIO(jpeg)) as picture:
        assert picture.width < 1600  # 100 kB needed a smaller picture


def test_a_strided_frame_is_drawn_like_a_packed_one(photo_paths):
    # The colour channels of a BGRA camera buffer are a strided view, not packed rows.
    bgr = load_image(photo_paths[1])[:, :, ::-1]
    bgra = np.zeros((*bgr.shape[:2], 4), np.uint8)
    bgra[:, :, :3] = bgr
    packed = encode_snapshot(np.ascontiguousarray(bgr), "BGR", FACE, 5_000_000, 90)
    assert encode_snapshot(bgra[:, :, :3], "BGR", FACE, 5_000_000, 90) == packed
