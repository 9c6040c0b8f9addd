"""Helpers for the daemon tests: config files, and replay folders of real photos in which
faces appear and disappear (face frames are symlinks to the upstream photos, so nothing is
copied; face-free frames are made here), and the bad image files (a decompression bomb, a
truncated JPEG) that the image, source, CLI and fault tests feed in."""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from edge.mqtt.sinks import StdoutSink

if TYPE_CHECKING:
    from broker import MosquittoBroker

# An event's JSON fields, in the order Event.to_dict writes them.
EVENT_FIELDS = (
    "type",
    "device_id",
    "boot_id",
    "sequence",
    "time",
    "face_count",
    "faces",
    "frame_width",
    "frame_height",
    "model_id",
    "zone",
)


def write_config(path: Path, sections: dict[str, dict]) -> Path:
    """Write ``sections`` ({"camera": {"source": "replay", ...}, ...}) as a TOML file."""
    lines = []
    for section, table in sections.items():
        lines.append(f"[{section}]")
        for key, value in table.items():
            if isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, (int, float)):
                lines.append(f"{key} = {value!r}")
            elif isinstance(value, list):  # arrays of numbers: JSON and TOML spell them alike
                lines.append(f"{key} = {json.dumps(value)}")
            else:  # a JSON string is a valid TOML basic string
                lines.append(f"{key} = {json.dumps(str(value))}")
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def daemon_config(
    path: Path,
    broker: MosquittoBroker | None,
    model: Path,
    replay_folder: Path,
    device_id: str,
    state_dir: Path,
    **sections: dict,
) -> Path:
    """``path`` written as the config of a daemon that watches a looping replay of
    ``replay_folder`` (20 fps), reports a face and its leaving at once, sends stats every
    second, keeps its snapshots on, and talks to ``broker`` (None: no [mqtt], events go to
    stdout); the tables of ``sections`` are merged over these key by key."""
    tables: dict[str, dict] = {
        "device": {"id": device_id, "state_dir": state_dir},
        "camera": {"source": "replay", "path": replay_folder, "fps": 20.0, "loop": True},
        "detector": {"model": model},
        "events": {"debounce_frames": 1, "clear_after_seconds": 0.1},
        "snapshot": {"enabled": True},
        "stats": {"interval_seconds": 1.0},
    }
    if broker is not None:
        tables["mqtt"] = {"host": broker.host, "port": broker.port, "keepalive": 5, "reconnect_min_delay": 0.1}
    for name, table in sections.items():
        tables[name] = {**tables.get(name, {}), **table}
    return write_config(path, tables)


def face_scene(folder: Path, photo: Path, blank: Path) -> Path:
    """``folder`` as a replay of ``photo`` for 3 frames then ``blank`` for 3 (made once)."""
    if not folder.exists():
        build_scene(folder, blank, [(photo, 3), ("blank", 3)])
    return folder


def blank_frame(path: Path, width: int = 640, height: int = 480) -> Path:
    """A face-free frame: a grey wall with a soft gradient, as PNG."""
    ramp = np.linspace(90, 160, width, dtype=np.float32)[None, :, None]
    pixels = np.broadcast_to(ramp, (height, width, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@dataclass(frozen=True)
class Scene:
    """A replay folder and what the frames in it are: "blank", or the path of a face photo."""

    folder: Path
    frames: list[str]


def build_scene(folder: Path, blank: Path, plan: list[tuple[str | Path, int]]) -> Scene:
    """Lay out ``plan`` = [(photo path or "blank", repeat), ...] as numbered files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    frames: list[str] = []
    for what, repeat in plan:
        for _ in range(repeat):
            target = blank if what == "blank" else Path(what)
            (folder / f"{len(frames):04d}{target.suffix.lower()}").symlink_to(target)
            frames.append("blank" if what == "blank" else str(what))
    return Scene(folder, frames)


def parse_event_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def bomb_png(path: Path, width: int = 20_000, height: int = 20_000) -> Path:
    """A real, complete 1-bit black PNG of ``width`` x ``height``: tens of KB on disk (rows of
    zeros compress a thousandfold), ``width * height`` pixels once decoded. The default 400 MP
    is over twice ``Image.MAX_IMAGE_PIXELS``: Pillow refuses it as a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter byte "none", then the packed pixels
    compressor = zlib.compressobj(9)
    rows = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return path


def truncated_jpeg(path: Path, photo: Path) -> Path:
    """The first third of a real JPEG: a valid header, then the data ends."""
    data = photo.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


class RecordingSink(StdoutSink):
    """An EventSink that keeps what it is given (the stdout sink drops state/stats/snapshots);
    the rest of the protocol (no connection, no Home Assistant) is the stdout sink's."""

    def __init__(self) -> None:
        super().__init__()  # the outbox is the daemon's, given by the daemon
        self.calls: list[tuple[str, object]] = []
        self.closed_with: float | None = None

    def publish_event(self, event) -> None:
        self.calls.append(("event", event))
        self.outbox.ack(event.sequence)  # delivered

    def publish_state(self, state) -> None:
        self.calls.append(("state", state))

    def publish_stats(self, stats: dict) -> None:
        self.calls.append(("stats", stats))

    def publish_snapshot(self, jpeg: bytes, placeholder: bool = False) -> None:
        self.calls.append(("placeholder" if placeholder else "snapshot", jpeg))

    def set_snapshots(self, enabled: bool) -> None:
        self.calls.append(("set_snapshots", enabled))

    def close(self, timeout: float, abandon=None) -> None:
        self.closed_with = timeout
