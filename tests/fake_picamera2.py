"""A stand-in for picamera2's ``Picamera2`` class that fails the way the real one does.

There is no Pi camera on the machines that run these tests, so the adapter
(edge/sources/picamera2.py) is tested against this fake. It follows picamera2 0.3.36
(raspberrypi/picamera2; line numbers below are from that release's sdist) and the Raspberry
Pi libcamera pipeline handlers, on the points where a kinder fake would hide a bug:

* Opening: ``Picamera2(n)`` first opens its notification pipe (picamera2.py:338-339), looks
  the camera up in ``global_camera_info()`` (IndexError for a missing one, :344) and registers
  the object with the class's camera manager (``_cm.add``, :345); then it acquires the camera
  inside a try block that turns any failure, a busy camera included, into
  ``RuntimeError("Camera __init__ sequence did not complete.")`` with the real cause only in
  ``__cause__`` (:355-368); then, after the camera is acquired and *outside* that try block,
  it opens the DMA heap (``DmaAllocator()``, :376; dma_heap.py:69-82 skips only a missing
  heap, so a PermissionError propagates). A failed constructor returns no object, but the
  manager keeps the half-built one: its pipe stays open (``close()`` returns early on an
  object that never opened, :712) and, after a heap failure, its camera stays acquired, so
  every later ``Picamera2(n)`` of the process fails with EBUSY. A second acquire of a camera
  this process holds fails with EBUSY as ``Camera::acquire()`` does.
* Configuration: ``create_preview_configuration`` rejects unknown stream keys with ValueError
  (``_make_initial_stream_config``, picamera2.py:737-760) and rounds sizes down to even
  (``align_stream(optimal=False)``, :1087-1100); ``configure`` takes a *shallow* copy of the
  dict (:1184), so the caller's top level is untouched but its stream dicts are updated in
  place, validates like ``check_camera_config`` / ``check_stream_config`` (:937-993: lores
  may not exceed main, lores must be YUV on VC4, even sizes, sizes as tuples, only
  ``bit_depth`` / ``output_size`` under ``sensor``), picks the sensor mode by picamera2's
  ``score_mode`` (:1063-1083), then lets "libcamera" adjust the streams and records the
  result in ``camera_config`` (``_update_camera_config``, :1130-1157).
* libcamera's adjustments: an unsupported output format becomes YUV420 (a USB camera's
  becomes YUYV), a Pi 5 output below the back end's 64x downscale limit is enlarged
  (``PiSPCameraData::platformValidate`` in libcamera's pipeline/rpi/pisp/pisp.cpp), a USB
  camera snaps to one of its sizes. Strides are the ones the hardware uses:
  :func:`pisp_stride` and :func:`vc4_stride`.
* Versions: ``version`` (default 0.3.36). Before 0.3.20 there is no ``cancel_all_and_flush``
  and ``capture_request(wait=T)`` ignores the number: ``dispatch_functions`` ends with
  ``job.get_result() if wait else job`` (0.3.18 picamera2.py:1319), so it blocks for ever.
* Capturing: picamera2 never raises when the camera stops delivering. When libcamera's
  frontend times out (a pulled ribbon cable), the requests are cancelled, picamera2 drops
  them (``CameraManager.handle_request`` keeps only completed ones, picamera2.py:129-141) and
  the capture job simply never completes: ``capture_request()`` / ``capture_array()`` block
  for ever, or raise TimeoutError when given ``wait=T`` (``dispatch_functions``,
  picamera2.py:1508-1537, and ``Job.get_result``, job.py:78-84, a
  ``concurrent.futures.Future``). ``cancel_all_and_flush()`` (:1354-1366) cancels pending
  jobs, whose waiters then get CancelledError.
* Requests: ``make_array`` copies the buffer into the shape ``Helpers._make_array_shared``
  gives (request.py:290-335), ``get_metadata`` returns the request's metadata with
  ``SensorTimestamp`` (CLOCK_MONOTONIC nanoseconds of the frame start), ``release`` is
  reference-counted (request.py:113-119) and a camera whose buffers are all held by the
  application delivers nothing more.

The scene is a real photo (RGB) the test hands in, resized to each stream's size.

Knobs (class attributes of the class :meth:`FakePicamera2.with_scene` returns):

* ``fail_starts``: the next N ``Picamera2()`` calls fail because another process holds the
  camera (EBUSY at ``camera.acquire()``).
* ``fail_captures``: the next N started cameras hit the frontend timeout at their next
  capture and never deliver again (reopening gets a working camera).
* ``cable_unplugged``: while True, a started camera delivers nothing (it is still listed
  and opens: the sensor was probed at boot).
* ``paused``: while set, frames are late (a capture waits; with ``wait=T`` it times out).
* ``fail_configure``: libcamera's configure fails (picamera2.py:1219-1220).
* ``dma_heap_paths``: the heap files the allocator opens (picamera2's ``heapNames``,
  dma_heap.py:9); the default is a node every user can open, standing in for a heap that works.
* ``close_blocks``: an unset Event makes ``close()`` of a started camera wait for it, as a
  Pi 4 ``close()`` after a cable glitch sits in uninterruptible sleep in the kernel
  (picamera2 issues #1264, #1275).
* ``sensor_modes_fail_at``: reading ``sensor_modes`` fails with ENOMEM when it configures the
  mode of this size (a Zero 2 W's CMA running out at the HQ camera's 4056x3040), leaving the
  modes read so far in ``sensor_modes_``, which a second read returns as if complete
  (picamera2.py:586-591).
* ``unknown_crop_limits``: libcamera reports the ScalerCrop maximum as (0, 0, 65535, 65535)
  (the value picamera2 copies into ``crop_limits``, :611-612) instead of the mode's crop.

Test-only inspection, not picamera2 API: ``instances`` (every camera object that acquired its
camera), ``pipes`` (every notification pipe's two fds),
``calls`` (the adapter-facing methods called, in order), ``configured`` (every configuration
applied: ``camera_config`` is emptied by ``close()``), ``delivered`` (metadata of every request
handed out), ``closed``.
"""

from __future__ import annotations

import errno
import os
import re
import threading
import time
from concurrent.futures import CancelledError, Future
from typing import ClassVar

import numpy as np
from PIL import Image

PADDING_BYTE = 0xAB
# What this fake's ISP can output; anything else libcamera replaces (pipeline_base.cpp
# validate(): "If we cannot find a native format, use a default one", YUV420).
ISP_FORMATS = {"RGB888", "BGR888", "XBGR8888", "XRGB8888", "YUV420"}
# The output formats picamera2 accepts (formats.py: is_YUV, is_RGB; MJPEG besides), named once
# because check_stream_config takes any of them and a VC4 lores stream only the YUV ones.
YUV_FORMATS = frozenset({"NV21", "NV12", "YUV420", "YVU420", "YVYU", "YUYV", "UYVY", "VYUY"})
RGB_FORMATS = frozenset({"BGR888", "RGB888", "XBGR8888", "XRGB8888", "RGB161616", "BGR161616"})
# Time from the start of a frame (SensorTimestamp) to the completed request reaching the
# application: exposure, readout and the ISP. Roughly one frame at 30 fps.
FRAME_LATENCY_NS = 30_000_000
_POLL = 0.005  # s: how often a waiting capture re-checks whether the camera can deliver


def _bit_depth(fmt: str) -> int:
    """SensorFormat.bit_depth (sensor_format.py:8-14): the number ending the pixel part."""
    return int(re.search(r"\d+$", fmt.split("_")[0]).group())


def _mode(fmt: str, size: tuple[int, int], fps: float, crop: tuple[int, int, int, int]) -> dict:
    """One entry of ``Picamera2.sensor_modes`` (picamera2.py:580-615; "format" is a
    SensorFormat there, a plain string here)."""
    return {
        "format": fmt,
        "unpacked": fmt.split("_")[0],
        "bit_depth": _bit_depth(fmt),
        "size": size,
        "fps": fps,
        "crop_limits": crop,
        "exposure_limits": (1, None),
    }


# Each sensor's pixel array and device-tree id (the "Id" global_camera_info() lists).
_SENSOR_CHIPS: dict[str, tuple[tuple[int, int], str]] = {
    "ov5647": ((2592, 1944), "/base/soc/i2c0mux/i2c@1/ov5647@36"),  # Camera Module v1
    "imx219": ((3280, 2464), "/base/soc/i2c0mux/i2c@1/imx219@10"),  # Camera Module v2
    "imx708": ((4608, 2592), "/base/axi/pcie@120000/rp1/i2c@88000/imx708@1a"),  # Camera Module 3
    "imx477": ((4056, 3040), "/base/soc/i2c0mux/i2c@1/imx477@1a"),  # HQ Camera
    "imx296": ((1456, 1088), "/base/soc/i2c0mux/i2c@1/imx296@1a"),  # Global Shutter Camera
}

# Sensor modes as libcamera reports them (rpicam-hello --list-cameras prints the same list:
# "640x480 [206.65 fps - (1000, 752)/1280x960 crop]"). Sizes and crops are the kernel
# drivers' mode tables (raspberrypi/linux drivers/media/i2c/{ov5647,imx219,imx708,imx477,
# imx296}.c); frame rates vary with the kernel version (the IMX219's 640x480 reads 103.33 fps
# on newer kernels) and do not matter for the field of view. See README "Which sensor mode".
# One row a mode, each sensor's in the order libcamera lists them: sensor, format, size, fps,
# crop. SENSORS below groups them by sensor, the shape the tests and the fake read.
_SENSOR_MODE_ROWS = [
    ("ov5647", "SGBRG10_CSI2P", (640, 480), 58.92, (16, 0, 2560, 1920)),
    ("ov5647", "SGBRG10_CSI2P", (1296, 972), 46.34, (0, 0, 2592, 1944)),
    ("ov5647", "SGBRG10_CSI2P", (1920, 1080), 32.81, (348, 434, 1928, 1080)),
    ("ov5647", "SGBRG10_CSI2P", (2592, 1944), 15.63, (0, 0, 2592, 1944)),
    ("imx219", "SRGGB10_CSI2P", (640, 480), 206.65, (1000, 752, 1280, 960)),
    ("imx219", "SRGGB10_CSI2P", (1640, 1232), 41.85, (0, 0, 3280, 2464)),
    ("imx219", "SRGGB10_CSI2P", (1920, 1080), 47.57, (680, 692, 1920, 1080)),
    ("imx219", "SRGGB10_CSI2P", (3280, 2464), 21.19, (0, 0, 3280, 2464)),
    ("imx219", "SRGGB8", (640, 480), 206.65, (1000, 752, 1280, 960)),
    ("imx219", "SRGGB8", (1640, 1232), 83.70, (0, 0, 3280, 2464)),
    ("imx219", "SRGGB8", (1920, 1080), 47.57, (680, 692, 1920, 1080)),
    ("imx219", "SRGGB8", (3280, 2464), 21.19, (0, 0, 3280, 2464)),
    ("imx708", "SRGGB10_CSI2P", (1536, 864), 120.13, (768, 432, 3072, 1728)),
    ("imx708", "SRGGB10_CSI2P", (2304, 1296), 56.03, (0, 0, 4608, 2592)),
    ("imx708", "SRGGB10_CSI2P", (4608, 2592), 14.35, (0, 0, 4608, 2592)),
    # Current kernels list every IMX477 size at 10 and 12 bits, with a 4056x2160 mode added;
    # older ones had 1332x990 at 10 bits only and no 4056x2160. The rates of the 10-bit rows
    # other than 1332x990 are the 12-bit ones (they differ per kernel and are never read).
    ("imx477", "SRGGB10_CSI2P", (1332, 990), 120.05, (696, 528, 2664, 1980)),
    ("imx477", "SRGGB10_CSI2P", (2028, 1080), 50.03, (0, 440, 4056, 2160)),
    ("imx477", "SRGGB10_CSI2P", (2028, 1520), 40.01, (0, 0, 4056, 3040)),
    ("imx477", "SRGGB10_CSI2P", (4056, 2160), 16.39, (0, 440, 4056, 2160)),
    ("imx477", "SRGGB10_CSI2P", (4056, 3040), 10.00, (0, 0, 4056, 3040)),
    ("imx477", "SRGGB12_CSI2P", (1332, 990), 101.68, (696, 528, 2664, 1980)),
    ("imx477", "SRGGB12_CSI2P", (2028, 1080), 50.03, (0, 440, 4056, 2160)),
    ("imx477", "SRGGB12_CSI2P", (2028, 1520), 40.01, (0, 0, 4056, 3040)),
    ("imx477", "SRGGB12_CSI2P", (4056, 2160), 16.39, (0, 440, 4056, 2160)),
    ("imx477", "SRGGB12_CSI2P", (4056, 3040), 10.00, (0, 0, 4056, 3040)),
    ("imx296", "SRGGB10_CSI2P", (1456, 1088), 60.38, (0, 0, 1456, 1088)),
]
SENSORS: dict[str, dict] = {
    sensor: {
        "pixel_array": pixel_array,
        "id": device_id,
        "modes": [_mode(*row[1:]) for row in _SENSOR_MODE_ROWS if row[0] == sensor],
    }
    for sensor, (pixel_array, device_id) in _SENSOR_CHIPS.items()
}
USB_SIZES = [(640, 480), (1280, 720)]  # a typical UVC webcam


def _aligned(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def pisp_stride(fmt: str, width: int) -> int:
    """Row stride of a Pi 5 (PiSP) back-end output.

    libcamera pipeline/rpi/pisp/pisp.cpp ``computeOptimalStride()`` calls libpisp's
    ``compute_optimal_stride()`` (common/pisp_utils.cpp: ``compute_stride_align(config, 64)``:
    each plane's stride rounded up to 64 bytes, the planar chroma stride being half the luma
    one), then for single-buffer YUV420 sets the luma stride to twice the aligned chroma
    stride: so 320 wide gives U/V 192 and Y 384 (a 128-byte luma alignment).
    """
    if fmt == "YUV420":
        return 2 * _aligned(width // 2, 64)
    return _aligned(width * _BYTES_PER_PIXEL[fmt], 64)


def vc4_stride(fmt: str, width: int) -> int:
    """Row stride of a Pi 4 (VC4, bcm2835-isp) output: the kernel driver's
    ``get_bytesperline()`` (raspberrypi/linux drivers/staging/vc04_services/bcm2835-isp/
    bcm2835-v4l2-isp.c): 24-bit formats align the width to 32 pixels, others align the
    bytes to the format's ``bytesperline_align`` (bcm2835-isp-fmts.h: 64 for YUV420 in current
    kernels, 32 in older ones; 64 for 32-bit RGB). The YUV420 chroma stride is half of it."""
    if _BYTES_PER_PIXEL[fmt] == 3:
        return _aligned(width, 32) * 3
    if fmt == "YUV420":
        return _aligned(width, 64)
    return _aligned(width * 4, 64)


_BYTES_PER_PIXEL = {"RGB888": 3, "BGR888": 3, "XBGR8888": 4, "XRGB8888": 4, "YUV420": 1, "YUYV": 2}


def rgb_to_planes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H, W, 3) RGB -> full-range BT.601 Y (H, W) and 2x2-averaged U, V (H/2, W/2), by Pillow."""
    ycbcr = np.asarray(Image.fromarray(rgb).convert("YCbCr")).astype(np.float32)
    height, width = rgb.shape[:2]
    chroma = ycbcr[:, :, 1:].reshape(height // 2, 2, width // 2, 2, 2).mean(axis=(1, 3))
    chroma = np.round(chroma).astype(np.uint8)
    return ycbcr[:, :, 0].astype(np.uint8), chroma[:, :, 0], chroma[:, :, 1]


def pack_yuv420(y: np.ndarray, u: np.ndarray, v: np.ndarray, stride: int) -> np.ndarray:
    """Planes -> picamera2's (H*3/2, stride) YUV420 array, padding filled with a marker byte."""
    height, width = y.shape
    flat = np.full(height * 3 // 2 * stride, PADDING_BYTE, np.uint8)
    flat[: height * stride].reshape(height, stride)[:, :width] = y
    chroma_size = height // 2 * stride // 2
    for plane_number, plane in enumerate((u, v)):
        start = height * stride + plane_number * chroma_size
        flat[start : start + chroma_size].reshape(height // 2, stride // 2)[:, : width // 2] = plane
    return flat.reshape(height * 3 // 2, stride)


def _centred_aspect_crop(crop: tuple[int, int, int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The part of ``crop`` the ISP scales into an output of ``size``: the largest centred
    rectangle of the output's aspect ratio (libcamera ``Size::boundedToAspectRatio``, which
    both Pi pipelines use to crop the ISP input for the main stream)."""
    x, y, width, height = crop
    if width * size[1] > size[0] * height:
        bounded = (size[0] * height // size[1], height)
    else:
        bounded = (width, width * size[1] // size[0])
    return (x + (width - bounded[0]) // 2, y + (height - bounded[1]) // 2, *bounded)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


class FakeCameraManager:
    """picamera2's ``CameraManager`` (picamera2.py:76-114), one per class, without its
    listener thread: ``cameras`` maps the libcamera camera number to the object using it."""

    def __init__(self) -> None:
        self.cameras: dict[int, FakePicamera2] = {}

    def add(self, index: int, camera: FakePicamera2) -> None:
        self.cameras[index] = camera

    def cleanup(self, index: int) -> None:
        del self.cameras[index]


class FakeDmaAllocator:
    """``DmaAllocator()`` -> ``DmaHeap()`` (dma_heap.py:69-82): the first heap that exists is
    opened read-write; only a missing one is skipped, any other error propagates."""

    def __init__(self, heap_paths: tuple[str, ...]) -> None:
        self.fd = -1
        for name in heap_paths:
            try:
                self.fd = os.open(name, os.O_CLOEXEC | os.O_RDWR)
            except FileNotFoundError:
                continue
            break
        if self.fd < 0:
            raise RuntimeError("Could not open any dmaHeap device")

    def close(self) -> None:  # dmaallocator.py:96-105, run by ``del self.allocator``
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _NotYet:
    """A method the emulated picamera2 release does not have: reading it raises
    AttributeError, as for any missing attribute (so ``hasattr`` is False)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, owner: type) -> None:
        raise AttributeError(f"type object 'Picamera2' has no attribute {self.name!r}")


class FakeRequest:
    """picamera2's CompletedRequest: buffers of one frame, its metadata, a reference count."""

    def __init__(self, camera: FakePicamera2, buffers: dict[str, np.ndarray], metadata: dict) -> None:
        self._camera = camera
        self._buffers = buffers
        self._metadata = metadata
        self.config = {name: dict(camera.camera_config[name]) for name in buffers}
        self.ref_count = 1

    def make_array(self, name: str) -> np.ndarray:
        """A copy shaped like ``Helpers._make_array_shared`` (request.py:290-335)."""
        config = self.config.get(name)
        if config is None:
            raise RuntimeError(f"Stream {name!r} is not defined")
        width, height = config["size"]
        stride, fmt = config["stride"], config["format"]
        rows = self._buffers[name].reshape(-1, stride)
        if fmt in ("RGB888", "BGR888"):
            return np.ascontiguousarray(rows[:, : width * 3].reshape(height, width, 3))
        if fmt in ("XBGR8888", "XRGB8888"):
            return np.ascontiguousarray(rows[:, : width * 4].reshape(height, width, 4))
        if fmt == "YUV420":
            return rows.reshape(height * 3 // 2, stride).copy()
        if fmt == "YUYV":
            return rows.reshape(height, stride // 2, 2).copy()
        raise RuntimeError("Format " + fmt + " not supported")

    def get_metadata(self) -> dict:
        return dict(self._metadata)

    def release(self) -> None:
        self.ref_count -= 1
        if self.ref_count < 0:
            raise RuntimeError("CompletedRequest: lock now has negative ref_count")
        if self.ref_count == 0:
            self._camera._requests_held -= 1


class FakePicamera2:
    """Configure per test with :meth:`with_scene`, which returns a subclass holding the state."""

    cameras: ClassVar[list[dict]] = []
    sensor: str = "imx708"
    platform: str = "pisp"  # "pisp" (Pi 5) or "vc4" (Pi 4 and earlier)
    # The BCM2712 D0 stepping (current Pi 5 boards) has no downscaler on back-end output 0,
    # C0 has one (libpisp variants/bcm2712.cpp, backEndDownscaler_).
    pisp_output0_downscaler = False
    version = "0.3.36"
    scene: np.ndarray = np.zeros((480, 640, 3), np.uint8)
    instances: ClassVar[list[FakePicamera2]] = []
    pipes: ClassVar[list[tuple[int, int]]] = []
    _cm: ClassVar[FakeCameraManager] = FakeCameraManager()
    _acquired: ClassVar[set[int]] = set()
    atexit_handlers: ClassVar[list] = []  # what picamera2 hands to atexit.register (:374)
    paused: threading.Event
    fail_starts = 0
    fail_captures = 0
    cable_unplugged = False
    fail_configure = False
    dma_heap_paths: tuple[str, ...] = (os.devnull,)
    close_blocks: threading.Event | None = None
    sensor_modes_fail_at: tuple[int, int] | None = None
    unknown_crop_limits = False

    @classmethod
    def with_scene(
        cls,
        scene: np.ndarray,
        cameras: list[dict] | None = None,
        sensor: str = "imx708",
        platform: str = "pisp",
        version: str = "0.3.36",
    ) -> type[FakePicamera2]:
        """A fresh fake camera stack showing ``scene``; ``sensor`` is a key of :data:`SENSORS`
        or "usb" (a UVC webcam); ``cameras=[]`` lists none; ``version``: the picamera2
        release to behave like."""
        if cameras is None:
            device_id = (
                SENSORS[sensor]["id"] if sensor != "usb" else "/base/axi/pcie@120000/rp1/usb@200000-1:1.0-046d:0825"
            )
            cameras = [
                {
                    "Model": sensor if sensor != "usb" else "UVC Camera (046d:0825)",
                    "Location": 2,
                    "Rotation": 0,
                    "Id": device_id,
                }
            ]
        listed = [{**camera, "Num": number} for number, camera in enumerate(cameras)]
        attributes = {
            "scene": scene,
            "cameras": listed,
            "sensor": sensor,
            "platform": platform,
            "version": version,
            "instances": [],
            "pipes": [],
            "_cm": FakeCameraManager(),
            "_acquired": set(),
            "atexit_handlers": [],
            "paused": threading.Event(),
        }
        if _version(version) < (0, 3, 20):
            attributes["cancel_all_and_flush"] = _NotYet("cancel_all_and_flush")
        return type("Picamera2", (cls,), attributes)

    @classmethod
    def global_camera_info(cls) -> list[dict]:
        """Sorted as picamera2.py:310-311 does: USB cameras last."""
        cameras = [dict(camera) for camera in cls.cameras]
        return sorted(cameras, key=lambda cam: ("/usb" not in cam["Id"], cam["Id"]), reverse=True)

    # --- opening ----------------------------------------------------------------------------------

    def __init__(self, camera_num: int = 0) -> None:
        """picamera2.py:314-376, in its order: the pipe and the manager entry come before
        anything can fail, the DMA heap after the camera is acquired, outside the try."""
        cls = type(self)
        self.calls: list[str] = []
        self.notifyme_r, self.notifyme_w = os.pipe2(os.O_NONBLOCK)  # :338
        self.notifymeread = os.fdopen(self.notifyme_r, "rb")  # :339
        cls.pipes.append((self.notifyme_r, self.notifyme_w))
        self._preview = None  # :341-342, "in case that fails"
        self.is_open = False
        camera_num = self.global_camera_info()[camera_num]["Num"]  # :344, IndexError
        self._cm.add(camera_num, self)  # :345
        self.camera_idx = camera_num
        self.started = False
        self.camera_config: dict | None = None
        self.configured: list[dict] = []
        self.delivered: list[dict] = []
        try:  # :355-368
            if cls.fail_starts > 0:  # another process holds the camera
                cls.fail_starts -= 1
                raise RuntimeError("Failed to acquire camera: Device or resource busy")
            if camera_num in cls._acquired:  # another object of this process holds it
                raise RuntimeError("Failed to acquire camera: Device or resource busy")
            # What the libcamera bindings raise when Camera::acquire() returns -EBUSY.
            cls._acquired.add(camera_num)
            self.is_open = True  # _open_camera, :574-576
        except Exception as e:
            raise RuntimeError("Camera __init__ sequence did not complete.") from e
        self._lock = threading.Lock()
        self._job_list: list[Future] = []
        self._requests_held = 0
        self._frontend_timed_out = False
        self.sensor_modes_: list[dict] = []  # _reset_flags, :404
        self._mode: dict | None = None
        if self._is_rpi_camera():
            self.sensor_resolution = SENSORS[cls.sensor]["pixel_array"]
            self.sensor_format = max(SENSORS[cls.sensor]["modes"], key=lambda m: (m["size"], m["bit_depth"]))["format"]
        cls.instances.append(self)
        cls.atexit_handlers.append(self.close)  # :374
        self.allocator = FakeDmaAllocator(cls.dma_heap_paths)  # :376, outside the try block

    @property
    def closed(self) -> bool:
        return not self.is_open

    def _is_rpi_camera(self) -> bool:
        return type(self).sensor != "usb"

    @property
    def sensor_modes(self) -> list[dict]:
        """picamera2.py:580-615 configures the camera once per mode to read them (only
        possible while stopped); whatever was read before a failure stays in
        ``sensor_modes_`` and a later read returns it (:586-587); a USB camera gives bare
        format names."""
        self.calls.append("sensor_modes")
        if self.sensor_modes_:
            return self.sensor_modes_
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        if not self._is_rpi_camera():
            self.sensor_modes_ = [{"format": "YUYV"}, {"format": "MJPEG"}]
            return self.sensor_modes_
        cls = type(self)
        self.sensor_modes_ = []
        for mode in SENSORS[cls.sensor]["modes"]:
            self.camera_config = {"use_case": "sensor_modes"}  # :607-608 configure per mode
            self.calls.append("configure")
            if cls.sensor_modes_fail_at == mode["size"]:  # buffers of this size do not fit
                raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM))
            entry = dict(mode)
            if cls.unknown_crop_limits:
                entry["crop_limits"] = (0, 0, 65535, 65535)
            self.sensor_modes_.append(entry)
        return self.sensor_modes_

    # --- configuration ----------------------------------------------------------------------------

    @staticmethod
    def _make_initial_stream_config(stream_config: dict, updates: dict | None, ignore_list=()) -> dict | None:
        if updates is None:
            return None
        valid = ("format", "size", "stride", "preserve_ar")
        for key, value in updates.items():
            if key in valid:
                stream_config[key] = value
            elif key not in ignore_list:
                raise ValueError(f"Bad key {key!r}: valid stream configuration keys are {valid}")
        return stream_config

    @staticmethod
    def align_stream(stream_config: dict, optimal: bool = True) -> None:
        """picamera2.py:1087-1100; with ``optimal=False`` (what the create_* functions use)
        this only rounds the size down to even numbers."""
        align = 2
        size = stream_config["size"]
        stream_config["size"] = (size[0] - size[0] % align, size[1] - size[1] % 2)

    def create_preview_configuration(  # picamera2's own signature; the defaults are never mutated
        self,
        main={},  # noqa: B006
        lores=None,
        raw={},  # noqa: B006
        transform="Transform()",
        colour_space="Sycc",
        buffer_count=4,
        controls={},  # noqa: B006
        display="main",
        encode="main",
        queue=True,
        sensor={},  # noqa: B006
        use_case="preview",
    ) -> dict:
        """picamera2.py:777-826 (transform and colour space are libcamera objects there)."""
        self.calls.append("create_preview_configuration")
        if not self.is_open:
            raise RuntimeError("Camera not opened")
        if not self._is_rpi_camera():
            raw = None
            sensor = None
        main = self._make_initial_stream_config({"format": "XBGR8888", "size": (640, 480), "preserve_ar": True}, main)
        self.align_stream(main, optimal=False)
        lores = self._make_initial_stream_config(
            {"format": "YUV420", "size": main["size"], "preserve_ar": False}, lores
        )
        if lores is not None:
            self.align_stream(lores, optimal=False)
        raw = self._make_initial_stream_config(
            {"format": getattr(self, "sensor_format", None), "size": main["size"]},
            raw,
            ["bit_depth", "crop_limits", "exposure_limits", "fps", "unpacked"],
        )
        controls = {"NoiseReductionMode": 1, "FrameDurationLimits": (100, 83333)} | controls
        return {
            "use_case": use_case,
            "transform": transform,
            "colour_space": colour_space,
            "buffer_count": buffer_count,
            "queue": queue,
            "main": main,
            "lores": lores,
            "raw": raw,
            "controls": controls,
            "sensor": sensor,
            "display": display,
            "encode": encode,
        }

    def check_stream_config(self, stream_config, name: str) -> None:
        """picamera2.py:937-963, messages verbatim."""
        if type(stream_config) is not dict:
            raise RuntimeError(name + " stream should be a dictionary")
        if "format" not in stream_config:
            raise RuntimeError("format not found in " + name + " stream")
        if "size" not in stream_config:
            raise RuntimeError("size not found in " + name + " stream")
        fmt = stream_config["format"]
        if type(fmt) is not str:
            raise RuntimeError("format in " + name + " stream should be a string")
        if name == "raw":
            if "_" not in fmt and not fmt.startswith("S"):
                raise RuntimeError("Unrecognised raw format " + fmt)
        elif fmt not in YUV_FORMATS | RGB_FORMATS | {"MJPEG"}:
            raise RuntimeError("Bad format " + fmt + " in stream " + name)
        size = stream_config["size"]
        if type(size) is not tuple or len(size) != 2:
            raise RuntimeError("size in " + name + " stream should be (width, height)")
        if size[0] % 2 or size[1] % 2:
            raise RuntimeError("width and height should be even")

    def check_camera_config(self, camera_config: dict) -> None:
        """picamera2.py:965-993, messages verbatim."""
        for name in ("colour_space", "transform", "main", "lores", "raw"):
            if name not in camera_config:
                raise RuntimeError(f"{name!r} key expected in camera configuration")
        if camera_config.get("sensor") is not None:
            bad_keys = set(camera_config["sensor"].keys()).difference({"bit_depth", "output_size"})
            if bad_keys:
                raise RuntimeError(f"Unexpected keys {bad_keys} in sensor configuration")
        self.check_stream_config(camera_config["main"], "main")
        if camera_config["lores"] is not None:
            self.check_stream_config(camera_config["lores"], "lores")
            main_w, main_h = camera_config["main"]["size"]
            lores_w, lores_h = camera_config["lores"]["size"]
            if lores_w > main_w or lores_h > main_h:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
            if type(self).platform == "vc4" and camera_config["lores"]["format"] not in YUV_FORMATS:
                raise RuntimeError("lores stream must be YUV")
        if camera_config["raw"] is not None:
            self.check_stream_config(camera_config["raw"], "raw")

    def _choose_mode(self, camera_config: dict) -> dict:
        """``score_mode`` of picamera2.py:1044-1083: the sensor's bit depth and output size
        come from ``sensor``, else the raw stream, else the main stream."""
        sensor = camera_config.get("sensor") or {}
        raw = camera_config.get("raw") or {}
        bit_depth = sensor.get("bit_depth") or _bit_depth(raw.get("format") or self.sensor_format)
        output_size = sensor.get("output_size") or raw.get("size") or camera_config["main"]["size"]

        def score_mode(mode: dict) -> float:
            def score_format(desired, actual):
                score = desired - actual
                return -score / 4 if score < 0 else score * 2

            ratio = output_size[0] / output_size[1]
            mode_ratio = mode["size"][0] / mode["size"][1]
            score = score_format(output_size[0], mode["size"][0]) + score_format(output_size[1], mode["size"][1])
            score += 1500 * score_format(ratio, mode_ratio)
            return score + 500 * abs(bit_depth - mode["bit_depth"])

        return min(SENSORS[type(self).sensor]["modes"], key=score_mode)

    def _libcamera_validate(self, name: str, stream: dict, mode: dict | None, output: int = 1) -> None:
        """What libcamera's validate() does to one output stream (``output``: the PiSP back-end
        output it is routed to), then ``_update_stream_config`` (picamera2.py:1130-1135)
        copying it back."""
        cls = type(self)
        width, height = stream["size"]
        fmt = stream["format"]
        if not self._is_rpi_camera():  # uvcvideo: the camera's own formats and sizes
            fmt = fmt if fmt in ("YUYV", "MJPEG") else "YUYV"
            width, height = next((s for s in USB_SIZES if s[0] >= width and s[1] >= height), USB_SIZES[-1])
            stride = width * 2
        else:
            fmt = fmt if fmt in ISP_FORMATS else "YUV420"
            if cls.platform == "pisp":
                # platformValidate: the largest stream goes to back-end output 0, a single
                # one or the smaller one to output 1; an output with a downscaler scales
                # down at most 64x, one with only the resampler 16x. Sizes are kept even.
                sensor_w, sensor_h = mode["size"]
                if sensor_w * height > width * sensor_h:
                    raw_w, raw_h = width * sensor_h // height, sensor_h
                else:
                    raw_w, raw_h = sensor_w, sensor_w * height // width
                if output == 1 or cls.pisp_output0_downscaler:
                    min_w = ((raw_w + 63) // 64 + 1) & ~1
                    min_h = ((raw_h + 63) // 64 + 1) & ~1
                else:  # resampler: (output - 1) * 16 <= input - 1
                    min_w = ((raw_w - 1 + 15) // 16 + 1 + 1) & ~1
                    min_h = ((raw_h - 1 + 15) // 16 + 1 + 1) & ~1
                if width < min_w:
                    height, width = (height * min_w // width + 1) & ~1, min_w
                if height < min_h:
                    width, height = (width * min_h // height + 1) & ~1, min_h
                stride = pisp_stride(fmt, width)
            else:
                stride = vc4_stride(fmt, width)
        stream["format"], stream["size"], stream["stride"] = fmt, (width, height), stride
        stream["framesize"] = stride * height * 3 // 2 if fmt == "YUV420" else stride * height

    def configure(self, camera_config: dict) -> None:
        """``configure_`` (picamera2.py:1159-1280), for dict configurations."""
        self.calls.append("configure")
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        if not isinstance(camera_config, dict):
            raise TypeError("Invalid type for `camera_config` given")
        camera_config = camera_config.copy()  # shallow, as picamera2.py:1184
        if not self._is_rpi_camera():
            camera_config["raw"] = None
        self.camera_config = {}
        self.check_camera_config(camera_config)
        mode = self._choose_mode(camera_config) if self._is_rpi_camera() else None
        outputs = [name for name in ("main", "lores") if camera_config[name] is not None]
        # pisp.cpp platformValidate: index 0 is the largest stream (sorted by size, stable).
        outputs.sort(key=lambda name: -camera_config[name]["size"][0] * camera_config[name]["size"][1])
        for index, name in enumerate(outputs):
            output = 1 if index == 1 or len(outputs) == 1 else 0
            self._libcamera_validate(name, camera_config[name], mode, output)
        if mode is not None:
            if camera_config["raw"] is not None:
                camera_config["raw"].update(format=mode["format"], size=mode["size"])
            camera_config["sensor"] = {"bit_depth": mode["bit_depth"], "output_size": mode["size"]}
        if type(self).fail_configure:
            raise RuntimeError(f"Configuration failed: {camera_config}")
        self.camera_config = camera_config
        self.configured.append(camera_config)
        self._mode = mode

    # --- running ----------------------------------------------------------------------------------

    def start(self) -> None:
        self.calls.append("start")
        if not self.camera_config or "main" not in self.camera_config:
            raise RuntimeError("Camera has not been configured")
        self.started = True

    def _can_deliver(self) -> bool:
        cls = type(self)
        if not self.started or cls.cable_unplugged or self._frontend_timed_out:
            return False
        if cls.fail_captures > 0:  # libcamera: "frontend has timed out"; requests cancelled
            cls.fail_captures -= 1
            self._frontend_timed_out = True
            return False
        buffer_count = self.camera_config["buffer_count"]
        return not cls.paused.is_set() and self._requests_held < buffer_count

    def _render(self, stream: dict) -> np.ndarray:
        width, height = stream["size"]
        rgb = np.asarray(Image.fromarray(type(self).scene).resize((width, height), Image.Resampling.BILINEAR))
        stride, fmt = stream["stride"], stream["format"]
        if fmt == "YUV420":
            return pack_yuv420(*rgb_to_planes(rgb), stride).reshape(-1)
        rows = np.full((height, stride), PADDING_BYTE, np.uint8)
        if fmt == "RGB888":  # libcamera/DRM naming: B, G, R bytes in memory
            rows[:, : width * 3] = rgb[:, :, ::-1].reshape(height, -1)
        elif fmt == "BGR888":
            rows[:, : width * 3] = rgb.reshape(height, -1)
        elif fmt in ("XBGR8888", "XRGB8888"):
            pixels = np.concatenate(
                [rgb if fmt == "XBGR8888" else rgb[:, :, ::-1], np.full((height, width, 1), 255, np.uint8)], axis=2
            )
            rows[:, : width * 4] = pixels.reshape(height, -1)
        else:  # YUYV: not decoded by anything here, the bytes only have to be the right count
            rows[:, : width * 2] = 128
        return rows.reshape(-1)

    def _complete_request(self) -> FakeRequest:
        config = self.camera_config
        buffers = {name: self._render(config[name]) for name in ("main", "lores") if config.get(name) is not None}
        metadata = {
            "SensorTimestamp": time.monotonic_ns() - FRAME_LATENCY_NS,
            "FrameDuration": 33333,
            "ExposureTime": 20000,
        }
        if self._mode is not None:
            metadata["ScalerCrop"] = _centred_aspect_crop(self._mode["crop_limits"], config["main"]["size"])
        self._requests_held += 1
        self.delivered.append(metadata)
        return FakeRequest(self, buffers, metadata)

    def capture_request(self, wait=None, signal_function=None, flush=None) -> FakeRequest:
        """``dispatch_functions`` + ``capture_request_`` (picamera2.py:1508-1537, 1831-1866):
        a job that completes with the next frame; ``wait=T`` gives up with TimeoutError."""
        self.calls.append("capture_request")
        if signal_function is not None or wait is False or flush is not None:
            raise NotImplementedError("the fake supports blocking captures only")
        timeout = None if wait in (None, True) else float(wait)
        if _version(type(self).version) < (0, 3, 20):
            timeout = None  # 0.3.18 picamera2.py:1319: `job.get_result() if wait else job`
        job: Future = Future()
        job.set_running_or_notify_cancel()
        with self._lock:
            self._job_list.append(job)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if not job.done() and self._job_list and self._job_list[0] is job and self._can_deliver():
                    self._job_list.pop(0)
                    job.set_result(self._complete_request())
            remaining = None if deadline is None else deadline - time.monotonic()
            if job.done() or (remaining is not None and remaining <= 0):
                return job.result(timeout=0)  # the request, CancelledError or TimeoutError
            time.sleep(_POLL if remaining is None else min(_POLL, remaining))

    def capture_array(self, name: str = "main", wait=None, signal_function=None) -> np.ndarray:
        """``capture_array_`` (picamera2.py:2163-2191): the next frame's array, request released."""
        request = self.capture_request(wait=wait, signal_function=signal_function)
        try:
            return request.make_array(name)
        finally:
            request.release()

    def cancel_all_and_flush(self) -> None:
        """picamera2.py:1354-1366: every pending job's waiter gets CancelledError."""
        self.calls.append("cancel_all_and_flush")
        with self._lock:
            for job in self._job_list:
                job.set_exception(CancelledError())  # Job.cancel(), job.py:86-93
            self._job_list = []

    def stop(self) -> None:
        self.calls.append("stop")
        self.started = False

    def close(self) -> None:
        """picamera2.py:704-734: stops, releases the camera, leaves the manager, closes the
        pipe, then ``del self.allocator`` (AttributeError on an object whose constructor
        failed at the heap); an object that never opened returns at once (:712), pipe and
        all."""
        cls = type(self)
        self.calls.append("close")
        if self.close in cls.atexit_handlers:  # atexit.unregister, :709
            cls.atexit_handlers.remove(self.close)
        if not self.is_open:
            return
        if self.started and cls.close_blocks is not None:
            cls.close_blocks.wait()  # stop() in uninterruptible sleep (issues #1264, #1275)
        self.started = False  # close() stops the camera first
        cls._acquired.discard(self.camera_idx)  # camera.release(), :717
        self._cm.cleanup(self.camera_idx)  # :718
        self.is_open = False
        self.camera_config = {}
        self.notifymeread.close()  # :729-730
        os.close(self.notifyme_w)
        allocator = self.allocator  # :732 `del self.allocator`
        del self.allocator
        allocator.close()
