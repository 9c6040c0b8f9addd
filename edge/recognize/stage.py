"""The daemon's recognition stage: who each tracked face is, enrolment and forgetting.

The tracker (:mod:`edge.scene.tracks`) says which face belongs to which track and which views
are worth a recognition; this stage describes those views (:class:`FaceDescriber`), compares
each descriptor with the gallery and decides each track's identity over its views
(:func:`edge.recognize.identity.decide_identity`). It knows track ids as plain integers and
nothing of the scene; the daemon composes the two.

Per live track it keeps the descriptors of its recognized views (at most the tracker's
``max_views``) and what they matched: enough to enrol the face in view
(:meth:`RecognitionStage.enrol_current`) and to decide every live track again whenever the
gallery changes (enrol, forget, reload), so an enrolment names the person at once and a
forgotten person is nobody at once. A track's data is dropped when the track ends.

The gallery (:mod:`edge.recognize.gallery`) is read at start, on :meth:`reload_gallery`
(SIGHUP) and when its file changes on disk (checked at most every
:data:`GALLERY_CHECK_SECONDS`, so ``edge-face enroll`` / ``edge-face people --remove`` take
effect without a signal). Fail-closed: a gallery that cannot be used (corrupt, foreign model,
unreadable) is one logged error and leaves recognition **suspended**: nobody is named, and no
face counts as "not enrolled" either (calling the family strangers because a file broke would
be a false alarm); enrolling and forgetting are refused until the file is fixed or deleted. The
previous gallery is not kept: it may hold someone who was meant to be forgotten. A missing file
is an empty gallery: everyone is "not enrolled".

Descriptors never leave this stage except into the gallery file: outcomes and logs carry names
and counts only.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.recognize.describe import FaceDescriber
from edge.recognize.gallery import Gallery, GalleryError, check_name, load_gallery, save_gallery
from edge.recognize.identity import IdentityDecision, IdentityOptions, IdentityStatus, ViewMatch, decide_identity
from edge.recognize.settings import RecognitionOptions

# How often the gallery file's identity (size, mtime, inode) is compared with the loaded one.
GALLERY_CHECK_SECONDS = 2.0
# A vote needs this many agreeing views (fewer when a track is decided on fewer views).
_VOTES = 2


@dataclass(frozen=True)
class TrackIdentity:
    """Who one face is. ``person``: the enrolled name (only when ``status`` is "known");
    ``distance``: to the nearest enrolled person (the decided person's mean when known; None
    when nobody is enrolled, recognition is suspended or the face was not described);
    ``decided``: the identity is a decision, a name or "not enrolled" ("known"/"unknown")."""

    status: IdentityStatus | None
    person: str | None = None
    distance: float | None = None

    @property
    def decided(self) -> bool:
        return self.status in ("known", "unknown")


NOT_DESCRIBED = TrackIdentity(None)


@dataclass(frozen=True)
class Outcome:
    """What an enrol or forget request did: ``done``, and one line saying what (names and
    counts only) or why it was refused."""

    done: bool
    message: str


def file_signature(path: Path) -> tuple[int, int, int] | None:
    """(size, mtime in ns, inode) of the file at ``path``, None when there is none: a file
    replaced or rewritten has another."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_size, status.st_mtime_ns, status.st_ino


def settled(decision: IdentityDecision, early_views: int) -> IdentityDecision:
    """``decision`` as the daemon acts on it: "unknown" while an enrolled person leads the vote
    (without the margin yet) and the track has had fewer than ``early_views`` views is still
    "pending". More views are coming, and calling a family member a stranger because one of
    the first views was poor is the false alarm a family notices; a face no view matches to
    anyone is "unknown" as soon as the vote says so."""
    if decision.status == "unknown" and decision.votes > 0 and decision.views < early_views:
        return dataclasses.replace(decision, status="pending")
    return decision


@dataclass
class _TrackViews:
    """One live track's recognized views: their unit descriptors ((D,) float32 each) and, per
    view, the nearest enrolled person and distance (None: nobody enrolled)."""

    descriptors: list[np.ndarray] = field(default_factory=list)
    nearest: list[tuple[str, float] | None] = field(default_factory=list)
    decision: IdentityDecision | None = None


class RecognitionStage:
    """Recognition for one daemon (module docstring). Not thread-safe: the frame loop's.

    ``options``: the ``[recognition]`` section; ``gallery_path``: its file; ``describer``:
    loaded models (None: the shipped ones, ``num_threads`` for the network)."""

    def __init__(
        self,
        options: RecognitionOptions,
        gallery_path: Path,
        logger: logging.Logger,
        describer: FaceDescriber | None = None,
        num_threads: int | None = None,
    ) -> None:
        self.describer = describer if describer is not None else FaceDescriber(num_threads=num_threads)
        self.log = logger
        self.gallery_path = Path(gallery_path)
        self.options = options
        self._gallery = Gallery(self.describer.model_id, self.describer.dimensions)
        self._problem: str | None = None
        self._signature: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self._tracks: dict[int, _TrackViews] = {}
        self._current: tuple[int, ...] = ()
        self.recognitions = 0  # descriptors computed, for the stats
        self.reload_gallery()

    # --- settings ----------------------------------------------------------------------------

    @property
    def threshold(self) -> float:
        """The distance below which a view is a person: the option, else the model's own."""
        return self.options.threshold if self.options.threshold is not None else self.describer.match_threshold

    @property
    def identity_options(self) -> IdentityOptions:
        views = self.options.views
        return IdentityOptions(
            max_distance=self.threshold, min_views=views, min_votes=min(_VOTES, views), min_margin=min(_VOTES, views)
        )

    @property
    def views_per_track(self) -> tuple[int, int]:
        """(initial, most) views of a track worth recognizing: the tracker's ``initial_views``
        and ``max_views``. Twice the deciding views are taken early, so one bad view among
        the first ones is outvoted by the next ones, and two more for a bigger or sharper view."""
        initial = 2 * self.options.views
        return initial, initial + 2

    def reconfigure(self, options: RecognitionOptions, gallery_path: Path) -> None:
        """New settings (a config reload): a new threshold or number of views decides every
        live track again; a new gallery path is read."""
        self.options = options
        if Path(gallery_path) != self.gallery_path:
            self.gallery_path = Path(gallery_path)
            self.reload_gallery()
        else:
            self._decide_all()

    # --- the gallery -------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        """False while the gallery file cannot be used (recognition suspended)."""
        return self._problem is None

    @property
    def problem(self) -> str | None:
        """Why the gallery cannot be used (one line), None when it can."""
        return self._problem

    def people(self) -> tuple[str, ...]:
        """The enrolled names, sorted (none while the gallery cannot be used)."""
        return tuple(sorted(self._gallery.people))

    def reload_gallery(self) -> Outcome:
        """Read the gallery file again (SIGHUP, or changed on disk); every live track is
        decided again against it. An unusable file suspends recognition (module docstring)."""
        self._signature = file_signature(self.gallery_path)
        try:
            gallery = load_gallery(self.gallery_path, self.describer.model_id, self.describer.dimensions)
        except GalleryError as exc:
            self._adopt(Gallery(self.describer.model_id, self.describer.dimensions), str(exc))
            self.log.error("%s; recognition suspended (nobody is named) until the file is fixed or deleted", exc)
            return Outcome(False, str(exc))
        was_problem = self._problem
        self._adopt(gallery, None)
        names = ", ".join(self.people()) or "nobody"
        if was_problem is not None:
            self.log.info("gallery '%s' usable again: recognition resumed", self.gallery_path)
        self.log.info("gallery '%s': %d enrolled (%s)", self.gallery_path, len(gallery.people), names)
        return Outcome(True, f"{len(gallery.people)} enrolled")

    def check_gallery_file(self, now: float | None = None) -> bool:
        """Reload when the file changed on disk since it was read (at most every
        :data:`GALLERY_CHECK_SECONDS`); True when it was reloaded."""
        now = time.monotonic() if now is None else now
        if now < self._next_check:
            return False
        self._next_check = now + GALLERY_CHECK_SECONDS
        if file_signature(self.gallery_path) == self._signature:
            return False
        self.log.info("gallery '%s' changed on disk: reading it again", self.gallery_path)
        self.reload_gallery()
        return True

    def enrol_current(self, name: str) -> Outcome:
        """Add the descriptors of the one face in view (its track's recognized views) to
        ``name`` in the gallery file, written atomically (0600). Refused, with the reason
        logged and returned, when the name is not allowed, no face or several faces are in
        view, the face was not described yet, or the gallery cannot be used."""
        try:
            check_name(name)
        except GalleryError as exc:
            return self._refuse("enrol", str(exc))
        if len(self._current) != 1:
            faces = "no face is" if not self._current else f"{len(self._current)} faces are"
            return self._refuse("enrol", f"{faces} in view; enrolling takes exactly one")
        track_id = self._current[0]
        views = self._tracks.get(track_id)
        if views is None or not views.descriptors:
            return self._refuse(
                "enrol",
                f"the face in view has not been recognized yet (too small: under "
                f"{self.options.min_face_size:g} px, or just appeared); try again when it is closer",
            )
        try:
            gallery = self._read_for_change()
            count = gallery.add(name, np.stack(views.descriptors))
            save_gallery(self.gallery_path, gallery)
        except GalleryError as exc:
            return self._refuse("enrol", str(exc))
        self._adopt(gallery, None)
        self._signature = file_signature(self.gallery_path)
        added = len(views.descriptors)
        message = f"enrolled {name!r}: {added} view(s) of track {track_id} added, {count} in all"
        self.log.info("%s (gallery '%s')", message, self.gallery_path)
        return Outcome(True, message)

    def forget(self, name: str) -> Outcome:
        """Delete ``name``'s descriptors from the gallery file (written atomically); refused
        with the reason when the name is not enrolled or the gallery cannot be used."""
        try:
            gallery = self._read_for_change()
            gallery.remove(name)
            save_gallery(self.gallery_path, gallery)
        except GalleryError as exc:
            return self._refuse("forget", str(exc))
        self._adopt(gallery, None)
        self._signature = file_signature(self.gallery_path)
        message = f"forgot {name!r}: {len(gallery.people)} enrolled now"
        self.log.info("%s (gallery '%s')", message, self.gallery_path)
        return Outcome(True, message)

    # --- per frame ---------------------------------------------------------------------------

    def recognizable(self, face_heights: np.ndarray) -> np.ndarray:
        """(N,) bool: which faces of (N,) heights in frame pixels are tall enough to recognize."""
        heights: np.ndarray = np.asarray(face_heights, dtype=np.float64) >= self.options.min_face_size
        return heights

    def observe(
        self,
        pixels: np.ndarray,
        color_order: str,
        boxes: np.ndarray,
        track_ids: Sequence[int],
        to_recognize: Sequence[int],
        ended: Sequence[int],
    ) -> tuple[TrackIdentity, ...]:
        """One detected frame: ``pixels`` (H, W, 3) uint8 in ``color_order`` ("RGB"/"BGR"),
        the faces' ``boxes`` ((N, 4) frame pixels, x1 y1 x2 y2) and ``track_ids`` (N; negative:
        untracked), the indices of the faces ``to_recognize`` (the tracker's views) and the
        tracks that ``ended``. Returns each face's :class:`TrackIdentity`."""
        for track_id in ended:
            self._tracks.pop(int(track_id), None)
        ids = [int(t) for t in track_ids]
        self._current = tuple(ids)
        if to_recognize and self.usable:
            rgb = pixels if color_order == "RGB" else np.ascontiguousarray(pixels[..., ::-1])
            for index in to_recognize:
                if ids[index] >= 0:
                    self._add_view(ids[index], self.describer.describe(rgb, boxes[index]).descriptor)
        return tuple(self.identity_of(track_id) for track_id in ids)

    def end_all(self) -> None:
        """Every track ended (detection paused, stop): their views are dropped."""
        self._tracks.clear()
        self._current = ()

    def identity_of(self, track_id: int) -> TrackIdentity:
        views = self._tracks.get(track_id)
        if views is None or views.decision is None or not self.usable:
            return NOT_DESCRIBED
        decision = views.decision
        if decision.status == "known":
            return TrackIdentity("known", decision.name, decision.distance)
        last = views.nearest[-1]
        return TrackIdentity(decision.status, None, None if last is None else last[1])

    # --- inside ------------------------------------------------------------------------------

    def _add_view(self, track_id: int, descriptor: np.ndarray) -> None:
        self.recognitions += 1
        length = float(np.linalg.norm(descriptor))
        if not (math.isfinite(length) and length > 0.0):  # no direction: nothing to compare
            self.log.debug("track %d: a view without a usable descriptor was skipped", track_id)
            return
        views = self._tracks.setdefault(track_id, _TrackViews())
        unit = (descriptor / length).astype(np.float32)
        views.descriptors.append(unit)
        views.nearest.append(self._nearest(unit))
        del views.descriptors[: -self.views_per_track[1]], views.nearest[: -self.views_per_track[1]]
        views.decision = self._decide(views)

    def _nearest(self, descriptor: np.ndarray) -> tuple[str, float] | None:
        ranked = self._gallery.closest(descriptor)
        return ranked[0] if ranked else None

    def _decide(self, views: _TrackViews) -> IdentityDecision:
        matches = [ViewMatch(None, 0.0) if near is None else ViewMatch(*near) for near in views.nearest]
        return settled(decide_identity(matches, self.identity_options), self.views_per_track[0])

    def _decide_all(self) -> None:
        for views in self._tracks.values():
            views.nearest = [self._nearest(d) for d in views.descriptors]
            views.decision = self._decide(views) if views.descriptors else None

    def _adopt(self, gallery: Gallery, problem: str | None) -> None:
        self._gallery, self._problem = gallery, problem
        self._decide_all()

    def _read_for_change(self) -> Gallery:
        """The gallery as on disk now (another command may have changed it), for a change;
        GalleryError when it cannot be used (then nothing is written over it)."""
        if self._problem is not None:
            self.reload_gallery()  # fixed meanwhile?
            if self._problem is not None:
                raise GalleryError(f"{self._problem}; fix or delete the file first")
        return load_gallery(self.gallery_path, self.describer.model_id, self.describer.dimensions)

    def _refuse(self, what: str, reason: str) -> Outcome:
        self.log.warning("%s refused: %s", what, reason)
        return Outcome(False, reason)
