"""Raspberry Pi cameras through picamera2 (libcamera), delivered at the model's input size.

A thin adapter, tested against a fake (tests/fake_picamera2.py) that follows picamera2's
documented API and reproduces its failure modes; what only a real Pi can confirm is listed
in docs/deploy.md ("Camera and the hardened unit"). On first contact it:

* **Chooses the sensor mode itself**: picamera2 picks the mode closest to the output size,
  which for 320x240 on a Camera Module v2 is a 640x480 crop of 39% of the sensor's width.
  Here the smallest mode whose crop is the whole sensor wins (``sensor={"output_size",
  "bit_depth"}``), the ISP scales it down, and the log says which mode and how much of the
  sensor the frames show (README, "Which sensor mode each camera gets").
* **Never hangs on a dead camera**: when libcamera's frontend times out (a pulled ribbon
  cable) picamera2 drops the cancelled requests and a capture would wait for ever. Each
  capture waits at most ``capture_timeout``; then pending jobs are cancelled
  (``cancel_all_and_flush``), the camera is closed and :class:`SourceError` is raised, so the
  frame grabber reopens it with backoff.
* **Refuses what would fail later**: a picamera2 older than :data:`MIN_PICAMERA2_VERSION`
  (no capture timeout: a pulled cable would hang), and a DMA heap this user cannot open
  (picamera2 opens it after taking the camera and would leave the camera held).
* **Leaves nothing behind when an open fails**: picamera2's constructor registers the
  object and opens a pipe before it can fail, and never frees them when it does (see
  :func:`release_half_built`); the source frees them, so retrying for ever costs nothing.
* **Reads the sensor modes once per camera**: each read reconfigures the camera once per
  mode; the result is kept for later opens of the same camera, a failure is logged at
  every open with what it means for the field of view.
* **Trusts what libcamera configured**: size, format and stride are read back from
  ``camera_config`` after ``configure`` (libcamera may adjust them); anything but RGB888 or
  YUV420 is refused.
* **Stamps frames with the sensor's time**: the request's ``SensorTimestamp`` (start of the
  frame, nanoseconds of CLOCK_MONOTONIC, which is ``time.monotonic()``'s clock), not the time
  the copy finished.

Two stream layouts:

* ``stream="main"`` (default): "RGB888", which picamera2 (following libcamera/DRM naming)
  stores as B, G, R bytes: frames are ``color_order="BGR"`` and handed over untouched (the
  detector flips channels while pre-processing).
* ``stream="lores"``: YUV420 from the ISP's second output (on a Pi 4 it can only be YUV),
  with the main stream set to the same size in YUV420, since lores may not exceed main and
  picamera2's default main is 640x480. ``capture_array("lores")`` gives a (H*3/2, stride)
  array, rows padded to the stride, U and V planes (stride/2 wide) packed two rows per
  array row; :func:`yuv420_to_rgb` unpacks it. The preview configuration's colour space is
  sYCC (full-range BT.601, the JPEG matrix), which is what :func:`yuv420_to_rgb` decodes.

``picamera2`` exists only on Raspberry Pi OS (installed with apt) and is imported in
:meth:`Picamera2Source.open` through :func:`import_picamera2_class`; tests pass the fake
through ``picamera2_class``.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.sources.base import Frame, SourceError

STREAMS = ("main", "lores")
STREAM_FORMATS = {"main": "RGB888", "lores": "YUV420"}
# A frame takes at most 83 ms in picamera2's preview configuration (FrameDurationLimits up to
# 83333 us) and the first one comes within a few frames of start(): a camera silent this long
# has stopped. With a configured frame rate, a few frame intervals are allowed too.
MIN_CAPTURE_TIMEOUT = 2.0  # s
FRAME_INTERVALS_BEFORE_TIMEOUT = 4
# A SensorTimestamp further than this from now is not on our clock (see _frame_time).
TIMESTAMP_TOLERANCE = 10.0  # s
CAMERA_DOC = "docs/deploy.md, 'Camera and the hardened unit'"
# The first picamera2 release whose capture_request(wait=T) gives up after T seconds and that
# has cancel_all_and_flush(); older ones accept wait= and block for ever. tools/install.sh
# reads this line.
MIN_PICAMERA2_VERSION = "0.3.20"
# The heaps picamera2's allocator opens, in its order (picamera2 dma_heap.py, heapNames).
DMA_HEAP_PATHS = ("/dev/dma_heap/vidbuf_cached", "/dev/dma_heap/linux,cma")
DMA_HEAP_RULE = 'SUBSYSTEM=="dma_heap", GROUP="video", MODE="0660"'
# What libcamera reports as the ScalerCrop maximum when it does not know it.
UNKNOWN_CROP = 65535

# Full-range BT.601 (JPEG / sYCC) YCbCr -> RGB coefficients in 16-bit fixed point.
_FIX = 16
_CR_TO_R = round(1.402 * (1 << _FIX))
_CB_TO_G = round(0.344136 * (1 << _FIX))
_CR_TO_G = round(0.714136 * (1 << _FIX))
_CB_TO_B = round(1.772 * (1 << _FIX))

log = logging.getLogger("edge.sources")


class Picamera2NotInstalled(SourceError):
    """picamera2 is absent (not a Raspberry Pi, or the apt package is missing): the one import
    failure after which auto-selection may look for another camera. Every other import
    failure is a plain :class:`SourceError`: picamera2 is there but broken."""


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def explain(exc: BaseException) -> str:
    """``exc`` and what caused it, on one line: picamera2 hides the real reason of a failed
    open (a busy camera, a missing device) in ``__cause__`` / ``__context__``."""
    parts: list[str] = []
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen and len(parts) < 5:
        seen.add(id(link))
        parts.append(_one_line(link))
        link = link.__cause__ or link.__context__
    return " <- ".join(parts)


def import_picamera2_class() -> Any:
    """picamera2's ``Picamera2`` class; raises :class:`Picamera2NotInstalled` when picamera2
    is absent and :class:`SourceError` when it is installed but cannot be imported."""
    try:
        from picamera2 import Picamera2
    except ModuleNotFoundError as exc:
        if exc.name == "picamera2":
            raise Picamera2NotInstalled(
                "picamera2 is not installed; on Raspberry Pi OS: sudo apt install python3-picamera2 "
                "(and create the venv with --system-site-packages)"
            ) from None
        raise SourceError(
            f"picamera2 is installed but needs the missing module {exc.name!r} ({_one_line(exc)}); "
            "reinstall python3-picamera2 with apt and use a venv made with --system-site-packages"
        ) from None
    except Exception as exc:  # picamera2 imports libcamera, simplejpeg, PIL, av...: all of them can break
        text = str(exc)
        if "numpy" in text or "binary incompatibility" in text:
            raise SourceError(
                f"picamera2 cannot be imported: a compiled module was built for another numpy ({_one_line(exc)}); "
                "use the OS numpy (apt python3-numpy) in a venv made with --system-site-packages "
                "instead of a pip-installed numpy"
            ) from None
        raise SourceError(f"picamera2 is installed but cannot be imported ({explain(exc)})") from None
    return Picamera2


def installed_picamera2_version() -> str | None:
    """picamera2's version from its package metadata (the apt package ships it), or None."""
    try:
        return importlib.metadata.version("picamera2")
    except importlib.metadata.PackageNotFoundError:
        return None


def _version_key(version: str) -> tuple[int, ...]:
    """'0.3.31' -> (0, 3, 31); stops at the first part that is not a number ('0.3.20rc1' -> (0, 3, 20))."""
    key = []
    for part in version.split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        key.append(int(digits.group()))
        if digits.end() < len(part):
            break
    return tuple(key)


def check_picamera2_version(camera_class: Any, installed: str | None) -> None:
    """Raise :class:`SourceError` when picamera2 is older than :data:`MIN_PICAMERA2_VERSION`
    (by ``installed``, its package version, or, where that is unknown, by the missing
    ``cancel_all_and_flush``)."""
    too_old = installed is not None and _version_key(installed) < _version_key(MIN_PICAMERA2_VERSION)
    if too_old or not hasattr(camera_class, "cancel_all_and_flush"):
        named = installed or "(version unknown)"
        raise SourceError(
            f"picamera2 {named} is older than {MIN_PICAMERA2_VERSION}: it has no capture timeout, so a pulled "
            "camera cable would hang the service; upgrade it: sudo apt update && sudo apt install --only-upgrade "
            "python3-picamera2 (tools/install.sh does this)"
        )


def dma_heap_problem(paths: Sequence[str]) -> str | None:
    """Why picamera2's allocator would fail to open the DMA heap, as it tries (the first of
    ``paths`` that exists, read-write); None when it opens or none exists (then picamera2
    reports it). picamera2 does this after taking the camera."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        except PermissionError as exc:
            return f"this user cannot open {path} ({exc.strerror})"
        except OSError:
            return None  # not what picamera2 trips over; let it report whatever it meets
        os.close(fd)
        return None
    return None


def release_half_built(camera_class: Any, number: int, before: Any) -> None:
    """Free what a failed ``camera_class(...)`` left behind (picamera2 0.3.36 line numbers).

    The constructor opens a notification pipe (picamera2.py:338-339) and registers the
    object with the class's camera manager (``_cm.add``, :345) before it can fail; when the
    acquire fails (a busy camera) the object is never returned, ``close()`` returns early on
    it (:712) and its pipe stays open: one fd per retry, for the life of the process. When the
    DMA heap cannot be opened (:376, after the acquire and outside the try block) the object
    is open: the camera stays acquired and every later open reports it busy.

    ``number``: libcamera's number of the camera (``global_camera_info()[i]["Num"]``);
    ``before``: what the manager held for it before the constructor ran (the object left there
    now is the half-built one only if it differs).
    """
    manager: Any = getattr(camera_class, "_cm", None)
    cameras = getattr(manager, "cameras", None)
    if not isinstance(cameras, dict):
        return
    camera = cameras.get(number)
    if camera is None or camera is before:
        return
    if getattr(camera, "is_open", False):
        try:
            camera.close()  # releases the camera, leaves the manager, closes the pipe
        except Exception as exc:  # ends with `del self.allocator`, never set on this object
            log.debug("closing a half-built picamera2 object: %s", explain(exc))
    pipe = getattr(camera, "notifymeread", None)
    if pipe is not None and not pipe.closed:
        pipe.close()
        os.close(camera.notifyme_w)
    if cameras.get(number) is camera:
        manager.cleanup(number)


def yuv420_to_rgb(yuv: np.ndarray, width: int, height: int) -> np.ndarray:
    """picamera2's YUV420 array -> (height, width, 3) uint8 RGB.

    ``yuv``: (height*3/2, stride) uint8 as ``capture_array`` returns it: ``height`` rows of
    Y, then the U plane and the V plane, each (height/2) rows of stride/2 bytes, stored
    back to back (so two chroma rows share one array row). Bytes past ``width`` (Y) or
    ``width/2`` (U, V) in a row are padding. Chroma is upsampled by repetition.
    """
    if width % 2 or height % 2:
        raise ValueError(f"YUV420 needs an even size, got {width}x{height}")
    stride = yuv.shape[1]
    if yuv.shape[0] != height * 3 // 2 or stride < width:
        raise ValueError(f"YUV420 array {yuv.shape} does not hold a {width}x{height} image")
    flat = np.ascontiguousarray(yuv).reshape(-1)
    chroma_stride, chroma_rows = stride // 2, height // 2
    y_size, c_size = height * stride, chroma_rows * chroma_stride
    luma = flat[:y_size].reshape(height, stride)[:, :width]
    u = flat[y_size : y_size + c_size].reshape(chroma_rows, chroma_stride)[:, : width // 2]
    v = flat[y_size + c_size : y_size + 2 * c_size].reshape(chroma_rows, chroma_stride)[:, : width // 2]

    cb = u.astype(np.int32) - 128
    cr = v.astype(np.int32) - 128
    # Chroma terms at half resolution, then repeated: 4x less arithmetic than upsampling first.
    terms = np.stack([_CR_TO_R * cr, -_CB_TO_G * cb - _CR_TO_G * cr, _CB_TO_B * cb], axis=-1)
    terms = terms.repeat(2, axis=0).repeat(2, axis=1)
    base = (luma.astype(np.int32) << _FIX) + (1 << (_FIX - 1))
    rgb = (base[:, :, None] + terms) >> _FIX
    clipped: np.ndarray = np.clip(rgb, 0, 255).astype(np.uint8)
    return clipped


# --- sensor modes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SensorMode:
    """One of ``Picamera2.sensor_modes``: the sensor's output ``size`` (width, height) read
    out of ``crop`` (x, y, width, height in native sensor pixels; None when libcamera does
    not know it and reports 65535)."""

    size: tuple[int, int]
    bit_depth: int
    crop: tuple[int, int, int, int] | None
    fps: float
    format: str

    @classmethod
    def from_picamera2(cls, mode: dict[str, Any]) -> SensorMode | None:
        """None for an entry without geometry (a USB camera lists bare format names)."""
        try:
            left, top, width, height = (int(value) for value in mode["crop_limits"])
            crop = None if UNKNOWN_CROP in (width, height) else (left, top, width, height)
            return cls(
                size=(int(mode["size"][0]), int(mode["size"][1])),
                bit_depth=int(mode["bit_depth"]),
                crop=crop,
                fps=float(mode.get("fps") or 0.0),
                format=str(mode.get("format", "")),
            )
        except (KeyError, TypeError, ValueError, IndexError):
            return None


def full_sensor_size(modes: list[SensorMode]) -> tuple[int, int] | None:
    """The largest area any mode reads out, in native pixels: the whole sensor (None when
    no mode's crop is known)."""
    crops = [mode.crop for mode in modes if mode.crop is not None]
    if not crops:
        return None
    return max(crop[2] for crop in crops), max(crop[3] for crop in crops)


def choose_sensor_mode(modes: list[SensorMode], output_size: tuple[int, int]) -> SensorMode | None:
    """The smallest mode that reads out the whole sensor and is at least ``output_size``
    (the ISP only scales down), else the largest whole-sensor mode; ties go to the deeper
    bit depth, then the higher frame rate. None when no mode's crop is known."""
    full = full_sensor_size(modes)
    if full is None:
        return None
    whole = [mode for mode in modes if mode.crop is not None and mode.crop[2:] == full]
    big_enough = [mode for mode in whole if mode.size[0] >= output_size[0] and mode.size[1] >= output_size[1]]
    pool = big_enough or [max(whole, key=lambda mode: mode.size[0] * mode.size[1])]
    return min(pool, key=lambda mode: (mode.size[0] * mode.size[1], -mode.bit_depth, -mode.fps))


def field_of_view(mode: SensorMode, full: tuple[int, int], output_size: tuple[int, int]) -> tuple[float, float]:
    """Fractions of the sensor's width and height that an ``output_size`` frame shows: the
    mode's crop, then the centred crop to the output's aspect ratio that both Pi pipelines
    apply before scaling (libcamera ``Size::boundedToAspectRatio``), so nothing is stretched.
    ``mode.crop`` must be known."""
    if mode.crop is None:
        raise ValueError(f"sensor mode {mode.size} has no known crop")
    width, height = mode.size
    if width * output_size[1] > output_size[0] * height:
        shown = (output_size[0] * height // output_size[1], height)
    else:
        shown = (width, width * output_size[1] // output_size[0])
    return mode.crop[2] / full[0] * shown[0] / width, mode.crop[3] / full[1] * shown[1] / height


def log_field_of_view(
    source: str,
    model: str,
    modes: list[SensorMode],
    modes_error: str | None,
    sensor: dict[str, Any] | None,
    output: tuple[int, int],
) -> None:
    """Log which mode libcamera runs for the camera of ``source`` (its name) and how much of
    the sensor its ``output`` frames show; a warning when that is unknown for a Pi camera (it
    may be a crop). ``sensor``: picamera2's configured ``sensor`` entry."""
    running = ""
    if sensor and sensor.get("output_size"):
        width, height = sensor["output_size"]
        running = f"; libcamera runs sensor mode {width}x{height} {sensor.get('bit_depth')}-bit, which may be a crop"
    if modes_error is not None:
        log.warning(
            "%s: %s camera, field of view unknown: cannot read the sensor modes (%s)%s; "
            "on a Pi Zero 2 W or 1 GB board give the camera more CMA memory (see %s)",
            source,
            model,
            modes_error,
            running,
            CAMERA_DOC,
        )
        return
    chosen = None
    if sensor and modes:
        size = tuple(sensor.get("output_size") or ())
        chosen = next((m for m in modes if m.size == size and m.bit_depth == sensor.get("bit_depth")), None)
    full = full_sensor_size(modes)
    if chosen is None or chosen.crop is None or full is None:
        if not modes:  # a USB camera lists no geometry: nothing is cropped by mode choice
            log.info("%s: %s camera, field of view unknown (no sensor mode geometry)", source, model)
        else:
            log.warning(
                "%s: %s camera, field of view unknown: libcamera reports no crop for its sensor modes%s",
                source,
                model,
                running,
            )
        return
    view_w, view_h = field_of_view(chosen, full, output)
    log.info(
        "%s: %s sensor mode %dx%d %d-bit (up to %.0f fps), field of view %.0f%% x %.0f%% of the sensor",
        source,
        model,
        *chosen.size,
        chosen.bit_depth,
        chosen.fps,
        100 * view_w,
        100 * view_h,
    )


# --- the source ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Delivered:
    """What libcamera configured for the stream we read."""

    format: str
    width: int
    height: int
    stride: int


class Picamera2Source:
    """A Raspberry Pi camera, delivering ``width`` x ``height`` frames (see module docstring).

    ``capture_timeout``: seconds a capture may wait for a frame before the camera counts as
    stopped (default :data:`MIN_CAPTURE_TIMEOUT`, longer at a low configured ``fps``).
    ``picamera2_class`` / ``picamera2_version`` / ``dma_heap_paths`` replace the installed
    picamera2, its package version and :data:`DMA_HEAP_PATHS` (tests).
    """

    is_live = True

    def __init__(
        self,
        width: int,
        height: int,
        camera_index: int = 0,
        stream: str = "main",
        fps: float | None = None,
        picamera2_class: Any = None,
        capture_timeout: float | None = None,
        picamera2_version: str | None = None,
        dma_heap_paths: Sequence[str] = DMA_HEAP_PATHS,
    ) -> None:
        if stream not in STREAMS:
            raise ValueError(f"picamera2 stream must be one of {STREAMS}, got {stream!r}")
        self.width, self.height = width, height
        self.camera_index, self.stream, self.fps = camera_index, stream, fps
        if capture_timeout is None:
            capture_timeout = max(MIN_CAPTURE_TIMEOUT, FRAME_INTERVALS_BEFORE_TIMEOUT / fps if fps else 0.0)
        self.capture_timeout = capture_timeout
        self._picamera2_class, self._picamera2_version = picamera2_class, picamera2_version
        self._dma_heap_paths = tuple(dma_heap_paths)
        self._modes: dict[str, list[SensorMode]] = {}  # per camera id: read once, kept
        self._camera: Any = None
        self._delivered: _Delivered | None = None
        self._index = 0
        self._warned_timestamp = False
        self.name = f"picamera2 camera {camera_index} ({stream} {width}x{height})"

    # --- open -------------------------------------------------------------------------------------

    def open(self) -> None:
        camera_class = self._picamera2_class or import_picamera2_class()
        check_picamera2_version(camera_class, self._picamera2_version or installed_picamera2_version())
        info = self._check_listed(camera_class)
        heap_problem = dma_heap_problem(self._dma_heap_paths)
        if heap_problem is not None:
            raise SourceError(
                f"{self.name}: {heap_problem}; picamera2 allocates the frame buffers there after taking the camera, "
                f"so it cannot work and would keep the camera busy; the udev rule {DMA_HEAP_RULE} "
                f"(raspberrypi-sys-mods, 60-dma-heap.rules) and group video for this user fix it (see {CAMERA_DOC})"
            )
        number = info.get("Num", self.camera_index)
        before = getattr(getattr(camera_class, "_cm", None), "cameras", {}).get(number)
        try:
            camera = camera_class(self.camera_index)
        except Exception as exc:
            release_half_built(camera_class, number, before)
            raise SourceError(f"{self.name}: cannot open the camera ({explain(exc)}){_busy_hint(exc)}") from None
        self._camera = camera  # from here on, close() releases it whatever fails next
        try:
            self._configure(camera, info)
            camera.start()
        except SourceError:
            self.close()
            raise
        except Exception as exc:  # libcamera reports through RuntimeError, OSError, ValueError...
            self.close()
            raise SourceError(f"{self.name}: cannot start ({explain(exc)})") from None
        self._index = 0
        self._warned_timestamp = False

    def _check_listed(self, camera_class: Any) -> dict[str, Any]:
        """Our camera's ``global_camera_info()`` entry; a clear error when libcamera lists none
        or not this one."""
        try:
            cameras = camera_class.global_camera_info()
        except Exception as exc:
            raise SourceError(f"{self.name}: libcamera cannot list cameras ({explain(exc)})") from None
        if not cameras:
            raise SourceError(
                f"{self.name}: libcamera lists no camera; check the ribbon cable and "
                "`rpicam-hello --list-cameras`; if that lists it but this service does not, the service "
                "user cannot open /dev/dma_heap/* (on Raspberry Pi OS the udev rule of raspberrypi-sys-mods "
                f"gives them to group video; see {CAMERA_DOC})"
            )
        if self.camera_index >= len(cameras):
            found = ", ".join(f"{c.get('Model', '?')} ({number})" for number, c in enumerate(cameras))
            raise SourceError(f"{self.name}: no such camera (cameras found: {found})")
        return dict(cameras[self.camera_index])

    def _configure(self, camera: Any, info: dict[str, Any]) -> None:
        size = (self.width, self.height)
        modes, modes_error = self._sensor_modes(camera, str(info.get("Id", self.camera_index)))
        wanted = choose_sensor_mode(modes, size)
        sensor = {"output_size": wanted.size, "bit_depth": wanted.bit_depth} if wanted else {}
        fmt = STREAM_FORMATS[self.stream]
        streams = {"main": {"size": size, "format": fmt}}
        if self.stream == "lores":
            # lores may not exceed main: main at the same size (and the cheap format) too.
            streams["lores"] = {"size": size, "format": fmt}
        controls = {"FrameRate": float(self.fps)} if self.fps else {}
        config = camera.create_preview_configuration(**streams, sensor=sensor, controls=controls)
        camera.configure(config)

        configured = camera.camera_config
        stream_config = configured[self.stream]
        got_format, (got_w, got_h), stride = stream_config["format"], stream_config["size"], stream_config["stride"]
        if got_format != fmt:
            usb_hint = '; for a USB camera set [camera] source = "opencv"' if not modes else ""
            raise SourceError(
                f"{self.name}: libcamera configured the {self.stream} stream as {got_format} "
                f"{got_w}x{got_h}, not {fmt}; only RGB888 (main) and YUV420 (lores) are supported{usb_hint}"
            )
        if (got_w, got_h) != size:
            log.warning("%s: libcamera adjusted the %s stream to %dx%d", self.name, self.stream, got_w, got_h)
        self._delivered = _Delivered(got_format, int(got_w), int(got_h), int(stride))
        model = str(info.get("Model", "camera"))
        log_field_of_view(self.name, model, modes, modes_error, configured.get("sensor"), (got_w, got_h))

    def _sensor_modes(self, camera: Any, camera_id: str) -> tuple[list[SensorMode], str | None]:
        """The camera's modes and why they could not be read (None: they were). Read once per
        camera: each read configures the camera once per mode, which on a small board can
        run out of CMA memory (ENOMEM). A failure is not kept: the next open tries again."""
        if camera_id in self._modes:
            return self._modes[camera_id], None
        try:
            raw_modes = list(camera.sensor_modes)
        except Exception as exc:
            return [], explain(exc)
        modes = [mode for mode in map(SensorMode.from_picamera2, raw_modes) if mode is not None]
        self._modes[camera_id] = modes
        return modes, None

    # --- read -------------------------------------------------------------------------------------

    def read(self) -> Frame | None:
        camera = self._camera
        if camera is None or self._delivered is None:
            raise SourceError(f"{self.name}: read before open")
        try:
            request = camera.capture_request(wait=self.capture_timeout)
        except TimeoutError:
            self._abandon(camera)
            raise SourceError(
                f"{self.name}: camera stopped delivering frames (none for {self.capture_timeout:g} s; "
                f"a loose or pulled ribbon cable? see {CAMERA_DOC}); closed it"
            ) from None
        except Exception as exc:
            self._abandon(camera)
            raise SourceError(f"{self.name}: capture failed ({explain(exc)})") from None
        received = time.monotonic()
        try:
            array = request.make_array(self.stream)
            metadata = request.get_metadata()
        except Exception as exc:
            raise SourceError(f"{self.name}: cannot read the frame ({explain(exc)})") from None
        finally:
            request.release()  # back to libcamera: a held request is a buffer the camera lacks
        frame = Frame(
            pixels=self._to_pixels(array),
            color_order="BGR" if self.stream == "main" else "RGB",
            t_monotonic=self._frame_time(metadata, received),
            index=self._index,
        )
        self._index += 1
        return frame

    def _to_pixels(self, array: np.ndarray) -> np.ndarray:
        layout = self._delivered
        if layout is None:
            raise SourceError(f"{self.name}: read before open")
        if layout.format == "RGB888":
            expected: tuple[int, ...] = (layout.height, layout.width, 3)
        else:
            expected = (layout.height * 3 // 2, layout.stride)
        if array.shape != expected or array.dtype != np.uint8:
            raise SourceError(
                f"{self.name}: frame array {array.shape} {array.dtype} does not match the configured "
                f"{layout.format} {layout.width}x{layout.height} stride {layout.stride}"
            )
        if layout.format == "RGB888":
            return array
        return yuv420_to_rgb(array, layout.width, layout.height)

    def _frame_time(self, metadata: dict[str, Any], received: float) -> float:
        """The frame's start on ``time.monotonic()``'s clock.

        libcamera's Pi pipelines set SensorTimestamp from the V4L2 buffer timestamp, which the
        unicam (Pi 4) and rp1-cfe (Pi 5) drivers take with ktime_get_ns() in their frame-start
        interrupt: CLOCK_MONOTONIC, as picamera2 itself assumes when it compares
        SensorTimestamp with ``time.monotonic_ns()`` (picamera2 0.3.36 picamera2.py:1552-1565
        and 1861-1866, ``capture_request(flush=True)``). libcamera's control documentation
        says CLOCK_BOOTTIME; the two differ only after a suspend, which is why a value far
        from now is not trusted: the receive time stands in, with one warning per open.
        """
        stamp = metadata.get("SensorTimestamp")
        if isinstance(stamp, int) and stamp > 0:
            t_frame = stamp / 1e9
            if received - TIMESTAMP_TOLERANCE <= t_frame <= received:
                return t_frame
        if not self._warned_timestamp:
            self._warned_timestamp = True
            log.warning(
                "%s: SensorTimestamp %r is not on the monotonic clock; frames are stamped when received",
                self.name,
                stamp,
            )
        return received

    # --- close ------------------------------------------------------------------------------------

    def _abandon(self, camera: Any) -> None:
        """After a capture gave up: cancel the job still waiting for a frame (picamera2's
        advice for a dislodged cable, ``cancel_all_and_flush``), then close."""
        try:
            camera.cancel_all_and_flush()  # present: open() refuses older picamera2
        except Exception as exc:
            log.debug("%s: cancel_all_and_flush failed: %s", self.name, explain(exc))
        self.close()

    def close(self) -> None:
        camera, self._camera = self._camera, None
        self._delivered = None
        if camera is None:
            return
        try:
            camera.close()  # stops it first (picamera2.py, close)
        except Exception as exc:  # the device is gone: nothing more to release
            log.debug("%s: close failed: %s", self.name, explain(exc))


def _busy_hint(exc: BaseException) -> str:
    if "busy" in explain(exc).lower():
        return "; another process holds it (rpicam-*, a picamera2 script, another edge-face): stop it"
    return ""
