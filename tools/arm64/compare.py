"""Compare `edge-face detect --json` outputs of several runs against a reference run.

    python -m tools.arm64.compare LABEL=FILE LABEL=FILE [LABEL=FILE ...]

The first LABEL=FILE is the reference (the host); each FILE holds one JSON line per image
(``{"image", "width", "height", "faces": [{"box": [x1, y1, x2, y2], "score": s}]}``).
Images are matched by file name, since the paths differ between host and chroot. Prints a
table and exits 1 when any run differs: another face count, a box coordinate further than
BOX_RELATIVE_TOLERANCE (relative) or a score further than SCORE_TOLERANCE. After the table,
one summary line per candidate run: images, faces, worst box and score gaps, PASS/FAIL.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import PurePath

BOX_RELATIVE_TOLERANCE = 1e-4
# The CLI prints pixel boxes rounded to 2 decimals: a value that lands on the other side of a
# rounding step differs by one step however close the floats were.
BOX_ROUNDING_STEP = 0.01
SCORE_TOLERANCE = 1e-3
_FLOAT_SLACK = 1e-9


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # pixels x1, y1, x2, y2
    score: float


@dataclass(frozen=True)
class ImageComparison:
    """One candidate run against the reference on one image."""

    face_counts_equal: bool
    max_box_difference: float  # pixels, over matched faces
    max_box_relative_difference: float
    max_score_difference: float
    within_tolerance: bool


class OutputError(Exception):
    """A detect output file that cannot be read; the message names the file and line."""


def read_detect_output(path: str) -> dict[str, list[Face]]:
    """Image file name -> faces, from one JSON line per image."""
    faces_by_image: dict[str, list[Face]] = {}
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as exc:
        raise OutputError(f"{path}: cannot read ({exc.strerror})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            faces = [Face(tuple(float(v) for v in f["box"]), float(f["score"])) for f in record["faces"]]
            name = PurePath(record["image"]).name
        except (ValueError, KeyError, TypeError) as exc:
            raise OutputError(f"{path}:{number}: not an edge-face detect JSON line ({exc!r})") from None
        if any(len(face.box) != 4 for face in faces):
            raise OutputError(f"{path}:{number}: a box does not have 4 coordinates")
        faces_by_image[name] = faces
    return faces_by_image


def _box_within_tolerance(a: float, b: float) -> bool:
    allowed = max(BOX_RELATIVE_TOLERANCE * max(abs(a), abs(b)), BOX_ROUNDING_STEP)
    return abs(a - b) <= allowed + _FLOAT_SLACK


def compare_faces(reference: list[Face], candidate: list[Face]) -> ImageComparison:
    """Match each reference face to its nearest unmatched candidate face and measure the gaps.

    Nearest-box matching instead of list order: two faces with equal rounded scores may come
    out of NMS in either order without anything being wrong.
    """
    unmatched = list(candidate)
    max_box = max_relative = max_score = 0.0
    within = len(reference) == len(candidate)
    for face in reference:
        if not unmatched:
            break
        nearest = min(unmatched, key=lambda c: max(abs(p - q) for p, q in zip(face.box, c.box)))
        unmatched.remove(nearest)
        for p, q in zip(face.box, nearest.box):
            max_box = max(max_box, abs(p - q))
            max_relative = max(max_relative, abs(p - q) / max(abs(p), abs(q), 1.0))
            within = within and _box_within_tolerance(p, q)
        max_score = max(max_score, abs(face.score - nearest.score))
    within = within and max_score <= SCORE_TOLERANCE + _FLOAT_SLACK
    return ImageComparison(len(reference) == len(candidate), max_box, max_relative, max_score, within)


def format_table(labels: list[str], runs: list[dict[str, list[Face]]]) -> tuple[str, bool]:
    """The PASS/FAIL table of all candidate runs against runs[0], and whether all passed."""
    reference = runs[0]
    header = ["image", *(f"faces:{label}" for label in labels), "max |Δbox| px", "max rel Δbox", "max |Δscore|", "result"]
    rows = [header]
    all_passed = bool(reference)
    for image in sorted(reference, key=lambda name: (len(name), name)):
        counts, comparisons, missing = [], [], False
        for run in runs:
            if image in run:
                counts.append(str(len(run[image])))
            else:
                counts.append("missing")
                missing = True
        for run in runs[1:]:
            if image in run:
                comparisons.append(compare_faces(reference[image], run[image]))
        passed = not missing and all(c.within_tolerance for c in comparisons)
        all_passed = all_passed and passed
        rows.append([
            image,
            *counts,
            f"{max((c.max_box_difference for c in comparisons), default=0.0):.3g}",
            f"{max((c.max_box_relative_difference for c in comparisons), default=0.0):.3g}",
            f"{max((c.max_score_difference for c in comparisons), default=0.0):.3g}",
            "PASS" if passed else "FAIL",
        ])
    for label, run in zip(labels[1:], runs[1:]):
        for extra in sorted(set(run) - set(reference)):
            rows.append([extra, *("" for _ in labels), "", "", "", f"FAIL (only in {label})"])
            all_passed = False
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    tolerance = (
        f"tolerance: same face count; box coordinates within {BOX_RELATIVE_TOLERANCE:g} relative "
        f"(or one {BOX_ROUNDING_STEP:g} px print rounding step); scores within {SCORE_TOLERANCE:g}"
    )
    verdict = f"arm64 parity vs {labels[0]}: {'PASS' if all_passed else 'FAIL'}"
    return "\n".join([*lines, tolerance, verdict]), all_passed


@dataclass(frozen=True)
class RunSummary:
    """One candidate run against the reference over all images."""

    label: str
    images: int
    faces: int
    max_box_difference: float  # pixels
    max_score_difference: float
    passed: bool

    def line(self, reference_label: str) -> str:
        return (
            f"{self.label} vs {reference_label}: {self.images} images, {self.faces} faces, "
            f"max |Δbox| {self.max_box_difference:.3g} px, max |Δscore| {self.max_score_difference:.3g}: "
            f"{'PASS' if self.passed else 'FAIL'}"
        )


def summarize_run(label: str, reference: dict[str, list[Face]], run: dict[str, list[Face]]) -> RunSummary:
    """Totals of one run: faces found, worst gaps, and whether every image is within tolerance."""
    comparisons = [compare_faces(faces, run[image]) for image, faces in reference.items() if image in run]
    passed = bool(reference) and set(run) == set(reference) and all(c.within_tolerance for c in comparisons)
    return RunSummary(
        label=label,
        images=len(run),
        faces=sum(len(faces) for faces in run.values()),
        max_box_difference=max((c.max_box_difference for c in comparisons), default=0.0),
        max_score_difference=max((c.max_score_difference for c in comparisons), default=0.0),
        passed=passed,
    )


def main(argv: list[str]) -> int:
    if len(argv) < 2 or any("=" not in arg for arg in argv):
        print("usage: python -m tools.arm64.compare REFERENCE_LABEL=FILE LABEL=FILE [LABEL=FILE ...]", file=sys.stderr)
        return 2
    labels, runs = [], []
    try:
        for arg in argv:
            label, _, path = arg.partition("=")
            labels.append(label)
            runs.append(read_detect_output(path))
    except OutputError as exc:
        print(f"arm64 compare: {exc}", file=sys.stderr)
        return 2
    table, passed = format_table(labels, runs)
    print(table)
    for label, run in zip(labels[1:], runs[1:]):
        print(summarize_run(label, runs[0], run).line(labels[0]))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
