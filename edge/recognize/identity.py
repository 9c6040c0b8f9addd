"""Who a track is: several recognized views of one track (:mod:`edge.scene.tracks`) decide its
identity by a vote with a margin, so one bad frame cannot name a stranger. Pure Python.

Each recognized view gives a :class:`ViewMatch`: the nearest person of the gallery and the
embedding distance to them. :func:`decide_identity` turns the matches of a track so far into
an :class:`IdentityDecision`:

* a view votes for its person when the distance is at most ``max_distance``, otherwise (or
  with an empty gallery) it votes "unknown";
* the leader is the person with the most votes (ties: the smaller mean distance); the
  runner-up is the best of every other person and "unknown";
* fewer than ``min_views`` views: "pending" (no decision yet); the leader with at least
  ``min_votes`` votes and at least ``min_margin`` more than the runner-up: "known";
  otherwise "unknown", which includes views that disagree between people.

A vote rather than a mean of embeddings or distances: a mean lets one badly matched frame pull
every later decision, a vote caps its weight at one view. With the defaults a stranger must be
matched to the same person, within the distance, in at least two views and in two views more
than to any other person or to "unknown" before a name is given; a known person seen in one blurred view among good ones is
named once good views lead by the margin. The decision is recomputed from all views each time,
so "unknown" may become "known" as better views arrive, and the reverse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

IdentityStatus = Literal["pending", "known", "unknown"]


@dataclass(frozen=True)
class ViewMatch:
    """One recognized view of a track: ``name`` of the nearest gallery person (None: the
    gallery is empty) and ``distance`` >= 0 between the view's embedding and theirs."""

    name: str | None
    distance: float

    def __post_init__(self) -> None:
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise ValueError(f"ViewMatch.name must be a non-empty string or None, got {self.name!r}")
        if not (math.isfinite(self.distance) and self.distance >= 0.0):
            raise ValueError(f"ViewMatch.distance must be a finite number >= 0, got {self.distance!r}")


@dataclass(frozen=True)
class IdentityOptions:
    """The vote's rules (module docstring). ``max_distance`` (> 0) has no default: its scale is
    the embedding model's, so the recognition config that picks the model gives it.
    ``min_views``, ``min_votes``, ``min_margin``: >= 1, counted in views. Raises ValueError
    naming the field. (A ``min_votes`` above the tracker's ``max_views`` can never be met.)"""

    max_distance: float
    min_views: int = 2
    min_votes: int = 2
    min_margin: int = 2

    def __post_init__(self) -> None:
        checks = (
            ("max_distance", math.isfinite(self.max_distance) and self.max_distance > 0.0, "a finite number > 0"),
            ("min_views", self.min_views >= 1, ">= 1"),
            ("min_votes", self.min_votes >= 1, ">= 1"),
            ("min_margin", self.min_margin >= 1, ">= 1 (a tie never names anyone)"),
        )
        for name, good, allowed in checks:
            if not good:
                raise ValueError(f"IdentityOptions.{name} must be {allowed}, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class IdentityDecision:
    """A track's identity after ``views`` recognized views.

    ``status``: "pending", "known" or "unknown"; ``name``: the person, only when "known";
    ``votes``: the views that voted for the leading person (0: no view within the distance);
    ``margin``: those votes minus the runner-up's (person or "unknown"; may be negative);
    ``distance``: mean distance of the leader's votes (None without a leader). The leader's name
    is not given unless known: a guess about a stranger is not a name to publish.
    """

    status: IdentityStatus
    name: str | None
    views: int
    votes: int
    margin: int
    distance: float | None


def decide_identity(matches: Sequence[ViewMatch], options: IdentityOptions) -> IdentityDecision:
    """The identity of a track from the :class:`ViewMatch` of each of its recognized views so
    far (any order: the vote does not depend on it)."""
    distances: dict[str, list[float]] = {}
    unknown = 0
    for match in matches:
        if match.name is not None and match.distance <= options.max_distance:
            distances.setdefault(match.name, []).append(match.distance)
        else:
            unknown += 1
    views = len(matches)
    if not distances:
        status: IdentityStatus = "pending" if views < options.min_views else "unknown"
        return IdentityDecision(status, None, views, 0, -unknown, None)

    def mean(values: list[float]) -> float:
        return math.fsum(values) / len(values)

    leader = min(distances, key=lambda name: (-len(distances[name]), mean(distances[name]), name))
    votes = len(distances[leader])
    runner_up = max([unknown] + [len(v) for name, v in distances.items() if name != leader])
    margin = votes - runner_up
    if views < options.min_views:
        status = "pending"
    elif votes >= options.min_votes and margin >= options.min_margin:
        status = "known"
    else:
        status = "unknown"
    return IdentityDecision(
        status, leader if status == "known" else None, views, votes, margin, mean(distances[leader])
    )
