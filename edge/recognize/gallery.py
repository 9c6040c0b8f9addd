"""The gallery: who the device knows, as face descriptors only (no photos, no chips).

One JSON file (``edge-face enroll`` keeps it in the state directory), written whole or not at all
(:mod:`edge.common.atomic`) with mode 0600: descriptors are biometric data and stay on the device,
readable by the service user alone. Format ``edge-face-gallery/1``::

    {"format": "edge-face-gallery/1", "model_id": "dlib-resnet-v1-int8-float16", "dimensions": 128,
     "people": {"NAME": [[128 numbers], ...], ...}}

Descriptors are stored L2-normalised (what distances compare). A gallery is bound to the
descriptor model that made it: descriptors of another model are not comparable, so loading
one made by another model is an error, as is any malformed content (one line naming the file
and what is wrong); nothing is guessed or dropped.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.common.atomic import write_atomic
from edge.recognize.embed import distances, normalized

GALLERY_FORMAT = "edge-face-gallery/1"
GALLERY_MODE = 0o600
# A gallery of a household is kilobytes; refusing far larger files keeps a wrong path from
# filling memory.
MAX_GALLERY_BYTES = 64 << 20
# A name is what events will carry: letters, digits, space, and . _ ' - (not first), 1-64.
NAME_PATTERN = re.compile(r"[^\W_][\w .'-]{0,63}")


class GalleryError(Exception):
    """A gallery that cannot be used or an impossible request; the message is one line."""


def check_name(name: str) -> str:
    """``name`` if it is a valid person name, else GalleryError saying what is allowed."""
    if not NAME_PATTERN.fullmatch(name) or name != name.strip():
        raise GalleryError(
            f"name {name!r} is not allowed (1-64 letters, digits, spaces and . _ ' -, starting with a letter or digit)"
        )
    return name


@dataclass
class Gallery:
    """Names -> (n, D) float32 unit-length descriptors, for one descriptor model."""

    model_id: str
    dimensions: int
    people: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, name: str, descriptors: np.ndarray) -> int:
        """Add ``descriptors`` ((n, D) or (D,)) to ``name`` (created if new); returns how many
        the person has now."""
        values = np.atleast_2d(np.asarray(descriptors, dtype=np.float64))
        if values.shape[1] != self.dimensions or not np.isfinite(values).all():
            raise GalleryError(
                f"descriptors of shape {values.shape} for {name!r}: expected finite (n, {self.dimensions})"
            )
        unit = normalized(values).astype(np.float32)
        existing = self.people.get(check_name(name))
        self.people[name] = unit if existing is None else np.concatenate([existing, unit])
        return len(self.people[name])

    def remove(self, name: str) -> None:
        if name not in self.people:
            raise GalleryError(f"{name!r} is not in the gallery (known: {', '.join(sorted(self.people)) or 'nobody'})")
        del self.people[name]

    def closest(self, descriptor: np.ndarray) -> list[tuple[str, float]]:
        """Every person with the distance of their closest descriptor to ``descriptor`` (D,),
        nearest first (L2-normalised euclidean, see :func:`edge.recognize.embed.distances`)."""
        ranked = [(name, float(distances(descriptor, stored).min())) for name, stored in self.people.items()]
        return sorted(ranked, key=lambda item: item[1])


@dataclass(frozen=True)
class Match:
    """Who a descriptor is, by a gallery: ``person`` the nearest enrolled person when their
    distance is below the threshold, else None; ``distance`` to the nearest enrolled person
    (also when ``person`` is None), None only when nobody is enrolled."""

    person: str | None
    distance: float | None


def identify(gallery: Gallery, descriptor: np.ndarray, threshold: float) -> Match:
    """The :class:`Match` of ``descriptor`` (D,) in ``gallery``: same person when the distance
    is below ``threshold`` (the descriptor model's ``match_threshold``)."""
    ranked = gallery.closest(descriptor)
    if not ranked:
        return Match(None, None)
    name, distance = ranked[0]
    return Match(name if distance < threshold else None, distance)


def _problem(path: Path, text: str) -> GalleryError:
    return GalleryError(f"gallery '{path}': {text}")


def _descriptors(path: Path, name: Any, rows: Any, dimensions: int) -> np.ndarray:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise _problem(path, f"person name {json.dumps(name)[:40]} is not a valid name")
    if not isinstance(rows, list) or not rows:
        raise _problem(path, f"people.{name} must be a non-empty list of descriptors")
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != dimensions:
            raise _problem(path, f"people.{name}[{index}] must be a list of {dimensions} numbers")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in row):
            raise _problem(path, f"people.{name}[{index}] holds a value that is not a finite number")
    values = np.array(rows, dtype=np.float32)
    lengths = np.linalg.norm(values, axis=1)
    if not np.allclose(lengths, 1.0, atol=1e-3):
        raise _problem(path, f"people.{name} holds descriptors that are not unit length (not written by edge-face)")
    return values


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def load_gallery(path: Path, model_id: str, dimensions: int) -> Gallery:
    """The gallery at ``path`` for the descriptor model ``model_id``; an empty one when the
    file does not exist yet. Raises GalleryError (one line) for anything else wrong."""
    path = Path(path)
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_GALLERY_BYTES + 1)
    except FileNotFoundError:
        return Gallery(model_id, dimensions)
    except OSError as exc:
        raise _problem(path, f"cannot be read ({exc.strerror or exc})") from None
    if len(raw) > MAX_GALLERY_BYTES:
        raise _problem(path, f"larger than {MAX_GALLERY_BYTES} bytes, not a gallery")
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _problem(path, f"unreadable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise _problem(path, "must be a JSON object")
    if data.get("format") != GALLERY_FORMAT:
        raise _problem(path, f"format is {json.dumps(data.get('format'))[:40]}, expected {GALLERY_FORMAT!r}")
    if data.get("model_id") != model_id or data.get("dimensions") != dimensions:
        raise _problem(
            path,
            f"made with descriptor model {json.dumps(data.get('model_id'))[:60]} ({data.get('dimensions')} numbers), "
            f"not {model_id!r} ({dimensions}): its descriptors cannot be compared; enroll the people again",
        )
    people = data.get("people")
    if not isinstance(people, dict):
        raise _problem(path, "people must be a JSON object of name -> descriptors")
    return Gallery(
        model_id, dimensions, {name: _descriptors(path, name, rows, dimensions) for name, rows in people.items()}
    )


def encode_gallery(gallery: Gallery) -> bytes:
    """The file's bytes: names sorted, each float32 written as the shortest decimal that
    reads back to the same float32."""
    people = {
        name: [[float(np.format_float_positional(v, unique=True)) for v in row] for row in gallery.people[name]]
        for name in sorted(gallery.people)
    }
    document = {
        "format": GALLERY_FORMAT,
        "model_id": gallery.model_id,
        "dimensions": gallery.dimensions,
        "people": people,
    }
    return (json.dumps(document, allow_nan=False) + "\n").encode("utf-8")


def save_gallery(path: Path, gallery: Gallery) -> None:
    """Write ``gallery`` to ``path`` atomically with mode 0600 (parent folders created 0700)."""
    path = Path(path)
    try:
        if not path.parent.is_dir():
            path.parent.mkdir(mode=0o700, parents=True)
        write_atomic(path, encode_gallery(gallery), mode=GALLERY_MODE)
    except OSError as exc:
        raise _problem(path, f"cannot be written ({exc.strerror or exc})") from None
