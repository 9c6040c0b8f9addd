"""Recognition in the daemon, end to end: the real daemon (`edge-face run`) on a replay of
real faces (the chips of faces-identity/johns placed into frames), the real models, a real
Mosquitto. An enrolled person arrives and leaves, a stranger arrives and leaves; the gallery is
replaced by garbage, or deleted, and the daemon told with SIGHUP; recognition off keeps one
schema. And `edge-face forget` deleting the gallery."""

from __future__ import annotations

from pathlib import Path

import pytest
from broker import MosquittoBroker, free_port
from cli_support import run_cli
from daemon_support import write_config
from PIL import Image

pytestmark = pytest.mark.integration

DEVICE = "door-rec"
PREFIX = f"edge-face/{DEVICE}"
GREY = (96, 104, 112)


def chip_frame(chip: Path | None, out: Path) -> Path:
    """A 640x480 grey frame with the chip (face about 100 px) in it, or none, as PNG."""
    frame = Image.new("RGB", (640, 480), GREY)
    if chip is not None:
        frame.paste(Image.open(chip).convert("RGB"), (250, 160))
    frame.save(out)
    return out


def replay(folder: Path, plan: list[tuple[list[Path] | None, int]]) -> Path:
    """``plan`` = [(chips shown in turn, or None for an empty frame; frames), ...] as numbered
    PNG files; a face's frames cycle through its chips (a new photo every frame, one place)."""
    folder.mkdir(parents=True)
    empty = chip_frame(None, folder.parent / "empty.png")
    index = 0
    for chips, frames in plan:
        for step in range(frames):
            name = folder / f"{index:04d}.png"
            if chips is None:
                name.symlink_to(empty)
            else:
                chip_frame(chips[step % len(chips)], name)
            index += 1
    return folder


@pytest.fixture(scope="module")
def johns(identity_dir) -> dict[str, list[Path]]:
    return {folder.name: sorted(folder.glob("*.jpg")) for folder in sorted((identity_dir / "johns").iterdir())}


@pytest.fixture
def broker(tmp_path):
    with MosquittoBroker(tmp_path / "broker") as running:
        yield running


def enrol(gallery: Path, name: str, chips: list[Path], work: Path) -> None:
    photos = [chip_frame(chip, work / f"enrol-{index}.png") for index, chip in enumerate(chips)]
    result = run_cli("enroll", "--gallery", str(gallery), name, *map(str, photos))
    assert result.returncode == 0, result.stderr


# --- edge-face forget ---------------------------------------------------------------------------


def test_forget_deletes_the_configured_gallery_and_the_state_directorys_even_with_the_broker_away(
    tmp_path, int8_model_path
):
    state = tmp_path / "state"
    state.mkdir()
    default, configured = state / "gallery.json", tmp_path / "people" / "faces.json"
    configured.parent.mkdir()
    for gallery in (default, configured):
        gallery.write_text('{"format": "edge-face-gallery/1"}')
    config = write_config(
        tmp_path / "edge-face.toml",
        {
            "device": {"id": DEVICE, "state_dir": state},
            "detector": {"model": int8_model_path},
            "mqtt": {"host": "127.0.0.1", "port": free_port()},  # nothing listens there
            "recognition": {"gallery": "people/faces.json"},  # recognition off: deleted all the same
        },
    )
    result = run_cli("forget", "--config", str(config))
    assert result.returncode == 1 and "unreachable" in result.stderr  # the broker part failed ...
    assert not default.exists() and not configured.exists()  # ... the biometric data is gone anyway
    for gallery in (configured, default):
        assert f"deleted the face gallery '{gallery}' (every enrolled person's descriptors)" in result.stderr
    again = run_cli("forget", "--config", str(config))
    assert "deleted the face gallery" not in again.stderr  # nothing left to delete, nothing claimed
