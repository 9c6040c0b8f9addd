"""Peak RSS of the daemon with face recognition on against the same run with it off.

    python -m tools.bench_recognition_rss [--fps F] [--repeat N] [--json OUT]

The real daemon (``python -m edge.cli run``) replays the same frames twice, as a device
would (JPEG files decoded by the replay source, stdout sink), once with ``[recognition]
enabled = false`` and once with it on and a gallery of the five people of
``../shared/faces-identity/johns`` (3 descriptors each, made by ``edge-face enroll``). The
frames: each person's chips (not the enrolled ones) placed into a 640x480 frame, held for a
second each at ``--fps``, empty frames between people, then the upstream photos (several
faces each, some too small to recognize, every one tracked): every track starts, is
recognized on its first views and decided (each person arrives and leaves by name). Peak RSS is each child's own ``ru_maxrss``
(``os.wait4``), so the two runs never mix. Target (issue 19): at most
:data:`TARGET_EXTRA_MB` MB more with recognition on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from tools.shared_data import DEFAULT_INT8_MODEL, PROJECT_ROOT, identity_dir, upstream_dir

TARGET_EXTRA_MB = 30.0
# Each person is in view this long (three views 0.5 s apart decide who it is), then nobody as
# long (longer than the clear time below): every person arrives and leaves.
PERSON_SECONDS = 2.0
CLEAR_AFTER_SECONDS = 1.0
GREY = (96, 104, 112)
ENROLLED_CHIPS = 3


@dataclass(frozen=True)
class RssRun:
    """One daemon run: its peak RSS (MiB), exit code, person events and recognitions logged."""

    peak_rss_mb: float
    exit_code: int
    person_events: int
    events: int


def chip_frame(chip: Path | None, out: Path) -> Path:
    frame = Image.new("RGB", (640, 480), GREY)
    if chip is not None:
        frame.paste(Image.open(chip).convert("RGB"), (250, 160))
    frame.save(out, quality=92)
    return out


def build_replay(folder: Path, people: dict[str, list[Path]], photos: list[Path], fps: float, repeat: int) -> int:
    """The replay frames as numbered JPEGs in ``folder``; returns how many."""
    folder.mkdir(parents=True)
    empty = chip_frame(None, folder.parent / "empty.jpg")
    index = 0

    def add(source: Path) -> None:
        nonlocal index
        (folder / f"{index:05d}.jpg").symlink_to(source)
        index += 1

    held = max(1, round(fps * PERSON_SECONDS))
    for _ in range(repeat):
        for name, chips in people.items():
            shown = [
                chip_frame(chip, folder.parent / f"{name}-{n}.jpg") for n, chip in enumerate(chips[ENROLLED_CHIPS:])
            ]
            for step in range(held):
                add(shown[step % len(shown)])
            for _ in range(held):
                add(empty)
        for photo in photos:
            framed = folder.parent / f"photo-{photo.stem}.jpg"
            if not framed.exists():
                Image.open(photo).convert("RGB").resize((640, 480)).save(framed, quality=92)
            for _ in range(held):
                add(framed)
    return index


def write_config(path: Path, frames: Path, fps: float, state: Path, recognition: bool) -> Path:
    path.write_text(
        "\n".join(
            [
                "[device]",
                'id = "rss-bench"',
                f"state_dir = {json.dumps(str(state))}",
                "[camera]",
                'source = "replay"',
                f"path = {json.dumps(str(frames))}",
                f"fps = {fps!r}",
                "[events]",
                f"clear_after_seconds = {CLEAR_AFTER_SECONDS!r}",
                "[detector]",
                f"model = {json.dumps(str(DEFAULT_INT8_MODEL))}",
                "[recognition]",
                f"enabled = {'true' if recognition else 'false'}",
                "",
            ]
        )
    )
    return path


def run_daemon(config: Path, log: Path) -> RssRun:
    """The daemon on ``config`` until its replay ends; its own peak RSS from ``wait4``."""
    with open(log, "wb") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "--config", str(config)],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        assert process.stdout is not None
        out = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    people = sum(1 for event in events if event["type"].startswith("person_"))
    return RssRun(usage.ru_maxrss / 1024.0, process.returncode, people, len(events))


def enrol(gallery: Path, people: dict[str, list[Path]], work: Path) -> None:
    for name, chips in people.items():
        photos = [chip_frame(chip, work / f"enrol-{name}-{n}.jpg") for n, chip in enumerate(chips[:ENROLLED_CHIPS])]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "edge.cli",
                "enroll",
                "--gallery",
                str(gallery),
                name.replace("_", " "),
                *map(str, photos),
            ],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise SystemExit(f"enroll {name}: {result.stderr.strip()}")


def measure(work: Path, fps: float = 10.0, repeat: int = 1) -> dict[str, object]:
    """Both runs in ``work``; the figures as a dict."""
    people = {folder.name: sorted(folder.glob("*.jpg")) for folder in sorted((identity_dir() / "johns").iterdir())}
    photos = sorted((upstream_dir() / "images").glob("*.jpg"), key=lambda p: int(p.stem))[:4]
    frames = build_replay(work / "frames", people, photos, fps, repeat)
    state = work / "state"
    state.mkdir()
    enrol(state / "gallery.json", people, work)
    runs = {}
    for label, on in (("off", False), ("on", True)):
        config = write_config(work / f"{label}.toml", work / "frames", fps, state, on)
        runs[label] = run_daemon(config, work / f"{label}.log")
        if runs[label].exit_code != 0:
            raise SystemExit(f"daemon with recognition {label} exited {runs[label].exit_code}: see {work / label}.log")
    extra = runs["on"].peak_rss_mb - runs["off"].peak_rss_mb
    return {
        "frames": frames,
        "fps": fps,
        "off": asdict(runs["off"]),
        "on": asdict(runs["on"]),
        "extra_mb": round(extra, 1),
        "target_extra_mb": TARGET_EXTRA_MB,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fps", type=float, default=10.0, help="replay pace (default 10)")
    parser.add_argument("--repeat", type=int, default=1, help="times the whole sequence is replayed")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rss-") as folder:
        figures = measure(Path(folder), args.fps, args.repeat)
    off, on = figures["off"], figures["on"]
    assert isinstance(off, dict) and isinstance(on, dict)
    print(f"frames: {figures['frames']} at {figures['fps']} fps (the same replay twice)")
    print(f"recognition off: peak RSS {off['peak_rss_mb']:.1f} MB, {off['events']} events")
    print(
        f"recognition on:  peak RSS {on['peak_rss_mb']:.1f} MB, {on['events']} events "
        f"({on['person_events']} person events)"
    )
    verdict = "met" if figures["extra_mb"] <= TARGET_EXTRA_MB else "NOT met"  # type: ignore[operator]
    print(f"extra with recognition: {figures['extra_mb']:+.1f} MB (target <= {TARGET_EXTRA_MB:g} MB): {verdict}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if verdict == "met" else 1


if __name__ == "__main__":
    sys.exit(main())
