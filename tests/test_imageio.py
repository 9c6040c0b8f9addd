"""edge.sources.imageio: every image Pillow reads becomes (H, W, 3) uint8 RGB within a pixel budget, and
every image that cannot becomes one ImageError line naming the file and the cause.

Images are generated here with Pillow (no binaries in the repository)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from daemon_support import bomb_png
from PIL import Image, ImageOps

from edge.sources.imageio import ImageError, decode_image, load_image, to_rgb

pytestmark = pytest.mark.unit


def gradient(width: int = 64, height: int = 48) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None].repeat(width, 1)
    return Image.fromarray(np.dstack([x, y, x // 2]))  # brighter to the right


def deep_grey(mode: str) -> Image.Image:
    """The gradient's brightness in a high-bit mode, over that mode's usual range."""
    grey = np.asarray(gradient().convert("L"))
    if mode == "F":
        return Image.fromarray(grey.astype(np.float32) / 255.0)
    return Image.fromarray(grey.astype(np.uint16) * 257).convert(mode)


def error_of(path: Path, **kwargs) -> str:
    with pytest.raises(ImageError) as caught:
        load_image(path, **kwargs)
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and message.startswith("image '")
    return message


# --- every mode Pillow reads ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode", ["1", "L", "P", "PA", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "I", "I;16", "F", "LAB", "HSV"]
)
def test_every_mode_becomes_rgb(mode):
    image = gradient().convert(mode) if mode not in ("PA", "I;16", "I", "F") else None
    if mode == "PA":
        image = gradient().convert("P").convert("PA")
    elif mode in ("I;16", "I", "F"):
        image = deep_grey(mode)
    rgb = to_rgb(image)
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    # The gradient survives: left is darker than right in the first channel / brightness.
    brightness = rgb.astype(int).sum(axis=2)
    assert brightness[:, -8:].mean() > brightness[:, :8].mean() + 50


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 256, 32768, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"  # precondition: Pillow reads it as 16-bit
    assert load_image(path)[0, :, 0].tolist() == [0, 1, 128, 255]


def test_float_grey_in_unit_range(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.array([[0.0, 0.5, 1.0, np.nan]], dtype=np.float32)).save(path)
    assert load_image(path)[0, :, 1].tolist() == [0, 128, 255, 0]


def test_palette_with_transparency(tmp_path):
    path = tmp_path / "transparent.png"
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 200, 10, 20] + [0] * 762)
    image.info["transparency"] = 0
    image.save(path, transparency=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow warns about P + transparency bytes unless converted right
        rgb = load_image(path)
    assert rgb[0, 0].tolist() == [200, 10, 20]


@pytest.mark.parametrize(
    ("mode", "fmt", "suffix"),
    [
        ("1", "PNG", ".png"),
        ("L", "PNG", ".png"),
        ("LA", "PNG", ".png"),
        ("RGBA", "PNG", ".png"),
        ("P", "GIF", ".gif"),
        ("L", "BMP", ".bmp"),
        ("RGBA", "WEBP", ".webp"),
        ("CMYK", "JPEG", ".jpg"),
        ("L", "JPEG", ".jpg"),
        ("CMYK", "TIFF", ".tif"),
        ("YCbCr", "TIFF", ".tif"),
        ("LAB", "TIFF", ".tif"),
        ("I", "TIFF", ".tif"),
        ("F", "TIFF", ".tif"),
        ("I;16", "TIFF", ".tif"),
    ],
)
def test_files_of_every_writable_mode(tmp_path, mode, fmt, suffix):
    path = tmp_path / f"image{suffix}"
    source = gradient()
    source = deep_grey(mode) if mode in ("I", "F", "I;16") else source.convert(mode)
    source.save(path, fmt)
    rgb = load_image(path)
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8 and rgb.std() > 0


def test_animated_gif_and_multipage_tiff_give_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    for name in ("anim.gif", "pages.tif"):
        frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:])
        rgb = load_image(tmp_path / name)
        assert rgb[8, 8, 0] > 200 and rgb[8, 8, 2] < 50, name


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow(tmp_path, orientation):
    path = tmp_path / "oriented.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    gradient(40, 24).save(path, exif=exif, quality=95)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    decoded = decode_image(path)
    assert np.array_equal(decoded.pixels, expected)
    assert (decoded.source_width, decoded.source_height) == (expected.shape[1], expected.shape[0])


# --- bounded memory ----------------------------------------------------------------------------


def test_a_large_jpeg_is_decoded_at_reduced_scale(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (3000, 2000), (30, 160, 90)).save(path, quality=90)
    decoded = decode_image(path, max_pixels=1_000_000)
    # 1/2 scale would be 1.5 MP, over the limit: 1/4 it is.
    assert decoded.pixels.shape == (500, 750, 3)
    assert (decoded.source_width, decoded.source_height) == (3000, 2000) and decoded.reduced
    assert np.abs(decoded.pixels.astype(int) - [30, 160, 90]).max() <= 3
    assert decode_image(path, max_pixels=6_000_000).pixels.shape == (2000, 3000, 3)  # at the limit: full size


def test_a_jpeg_too_large_even_at_one_eighth_is_refused(tmp_path):
    path = tmp_path / "huge.jpg"
    Image.new("L", (4000, 3000)).save(path)
    message = error_of(path, max_pixels=100_000)
    assert message == (
        f"image '{path}': 4000x3000 JPEG is 12000000 pixels, over the limit of 100000 (camera.max_pixels) even at 1/8 scale"
    )


def test_other_formats_over_the_limit_are_refused_from_the_header(tmp_path):
    path = bomb_png(tmp_path / "wide.png", 12_000, 12_000)  # 144 MP: Pillow only warns
    assert path.stat().st_size < 1_000_000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        message = error_of(path)
    assert message == (
        f"image '{path}': 12000x12000 PNG is 144000000 pixels, over the limit of 4000000 (camera.max_pixels); "
        "only JPEGs are decoded at reduced scale"
    )


def test_a_decompression_bomb_is_one_line(tmp_path):
    path = bomb_png(tmp_path / "bomb.png", 20_000, 20_000)
    message = error_of(path, max_pixels=500_000_000)  # above Pillow's own hard limit
    assert message.startswith(
        f"image '{path}': refused as a decompression bomb (Image size (400000000 pixels) exceeds limit"
    )


# --- files that are not images ----------------------------------------------------------------


def test_truncated_files(tmp_path):
    data = io.BytesIO()
    gradient(640, 480).save(data, "PNG")
    png = tmp_path / "cut.png"
    png.write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    assert error_of(png).startswith(f"image '{png}': corrupt or truncated (")
    data = io.BytesIO()
    gradient(640, 480).save(data, "JPEG")
    jpeg = tmp_path / "cut.jpg"
    jpeg.write_bytes(data.getvalue()[:400])
    assert error_of(jpeg).startswith(f"image '{jpeg}': corrupt or truncated (")


def test_empty_text_folder_missing(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert error_of(tmp_path / "empty.jpg") == f"image '{tmp_path / 'empty.jpg'}': is empty (0 bytes)"
    (tmp_path / "notes.jpg").write_text("not a picture\n")
    assert (
        error_of(tmp_path / "notes.jpg")
        == f"image '{tmp_path / 'notes.jpg'}': not a readable image (unknown format or corrupt header)"
    )
    assert error_of(tmp_path) == f"image '{tmp_path}': is a folder"
    assert error_of(tmp_path / "gone.jpg") == f"image '{tmp_path / 'gone.jpg'}': no such file"


def test_devices_fifos_and_symlink_loops_never_block(tmp_path):
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    messages: list[str] = []
    worker = threading.Thread(target=lambda: messages.extend(error_of(p) for p in (fifo, Path("/dev/zero"), loop)))
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "opening a FIFO or a device blocked"
    assert messages == [
        f"image '{fifo}': is not a regular file (a FIFO, socket or device)",
        "image '/dev/zero': is not a regular file (a FIFO, socket or device)",
        f"image '{loop}': cannot be read (too many levels of symbolic links)",
    ]


def test_a_file_name_with_a_newline_stays_one_line(tmp_path):
    path = tmp_path / "two\nlines.jpg"
    path.write_bytes(b"junk")
    assert (
        error_of(path) == f"image '{tmp_path}/two\\nlines.jpg': not a readable image (unknown format or corrupt header)"
    )


@pytest.mark.integration  # a child Python process
def test_an_unreadable_file_is_one_line(tmp_path):
    # Root reads everything: check as an unprivileged user, in a child process.
    path = tmp_path / "private.jpg"
    gradient().save(path)
    path.chmod(0o600)
    tmp_path.chmod(0o755)
    script = f"from edge.sources.imageio import load_image, ImageError\ntry:\n    load_image({str(path)!r})\nexcept ImageError as e:\n    print(e)\n"
    result = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.stdout == f"image '{path}': cannot be read (permission denied)\n", result.stderr


def test_decoding_a_photo_holds_the_pixels_once(photo_paths, tmp_path):
    # A replay decodes every frame: np.asarray(image) went through tobytes(), which held the
    # packed pixels twice (its chunks and their join) besides the array itself, so a large
    # photo cost 6 bytes per pixel of Python memory at its peak instead of 3.
    import tracemalloc

    big = tmp_path / "big.jpg"
    with Image.open(photo_paths[0]) as photo:
        photo.convert("RGB").resize((1600, 1200)).save(big, quality=90)
    reference = np.asarray(Image.open(big).convert("RGB"))
    tracemalloc.start()
    try:
        pixels = load_image(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(pixels, reference)  # the same pixels, copied out in stripes
    assert peak < 1.5 * pixels.nbytes, f"peak {peak} bytes of Python memory for {pixels.nbytes} of pixels"
