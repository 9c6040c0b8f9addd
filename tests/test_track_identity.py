"""A track's identity from several recognized views: a vote with a margin, so one bad frame
cannot name a stranger and views that disagree give "unknown"."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.recognize.identity import IdentityDecision, IdentityOptions, ViewMatch, decide_identity

pytestmark = pytest.mark.unit

OPTIONS = IdentityOptions(max_distance=0.6)  # dlib's threshold for its 128-d embeddings
NEAR, FAR = 0.4, 0.8  # within and beyond OPTIONS.max_distance


def views(*names: str | None, distance: float = NEAR) -> list[ViewMatch]:
    return [ViewMatch(name, distance) for name in names]


def far(name: str | None = "ann") -> ViewMatch:
    """A view whose nearest gallery person is too far to be them: a vote for "unknown"."""
    return ViewMatch(name, FAR)


def test_one_view_is_pending_and_two_agreeing_views_name_the_person() -> None:
    assert decide_identity(views("ann"), OPTIONS) == IdentityDecision("pending", None, 1, 1, 1, NEAR)
    assert decide_identity([], OPTIONS) == IdentityDecision("pending", None, 0, 0, 0, None)
    decision = decide_identity([ViewMatch("ann", 0.3), ViewMatch("ann", 0.5)], OPTIONS)
    assert decision == IdentityDecision("known", "ann", 2, 2, 2, pytest.approx(0.4))


@pytest.mark.parametrize("others", [1, 2, 5])
def test_one_bad_frame_never_names_a_stranger(others: int) -> None:
    """A stranger: every view far from the gallery but one, which happens to be near "ann".
    Wherever that frame falls in the sequence, the track is never named."""
    for position in range(others + 1):
        matches = [far() for _ in range(others)]
        matches.insert(position, ViewMatch("ann", 0.1))
        for seen in range(1, len(matches) + 1):
            decision = decide_identity(matches[:seen], OPTIONS)
            assert decision.name is None and decision.status in ("pending", "unknown"), (position, seen)


def test_views_that_disagree_give_unknown_until_one_person_leads_by_the_margin() -> None:
    assert decide_identity(views("ann", "bob"), OPTIONS).status == "unknown"
    assert decide_identity(views("ann", "bob", "ann", "bob"), OPTIONS).status == "unknown"
    three = decide_identity(views("ann", "ann", "bob"), OPTIONS)
    assert (three.status, three.name, three.votes, three.margin) == ("unknown", None, 2, 1)
    four = decide_identity(views("ann", "ann", "bob", "ann"), OPTIONS)
    assert (four.status, four.name, four.votes, four.margin) == ("known", "ann", 3, 2)


def test_a_blurred_view_of_a_known_person_delays_the_name_only_until_good_views_lead() -> None:
    matches = [ViewMatch("ann", 0.35), far(), ViewMatch("ann", 0.45)]
    assert decide_identity(matches, OPTIONS).status == "unknown"  # 2 against 1: margin 1
    decision = decide_identity([*matches, ViewMatch("ann", 0.4)], OPTIONS)
    assert (decision.status, decision.name, decision.votes, decision.margin) == ("known", "ann", 3, 2)
    assert decision.distance == pytest.approx(0.4)  # the mean of the three votes, not the far view


def test_an_empty_gallery_and_far_views_are_unknown() -> None:
    assert decide_identity(views(None, None), OPTIONS) == IdentityDecision("unknown", None, 2, 0, -2, None)
    assert decide_identity([far("ann"), far("bob"), far("ann")], OPTIONS).status == "unknown"


def test_the_distance_limit_is_inclusive() -> None:
    assert decide_identity(views("ann", "ann", distance=0.6), OPTIONS).name == "ann"
    assert decide_identity(views("ann", "ann", distance=math.nextafter(0.6, 1.0)), OPTIONS).name is None


def test_an_equal_vote_goes_to_no_one_and_the_leader_is_the_nearer() -> None:
    matches = [ViewMatch("bob", 0.5), ViewMatch("ann", 0.2), ViewMatch("bob", 0.5), ViewMatch("ann", 0.2)]
    decision = decide_identity(matches, OPTIONS)
    assert (decision.status, decision.name, decision.margin, decision.distance) == ("unknown", None, 0, 0.2)


def test_stricter_options_need_more_views() -> None:
    strict = IdentityOptions(max_distance=0.6, min_views=4, min_votes=3, min_margin=3)
    assert decide_identity(views("ann", "ann", "ann"), strict).status == "pending"
    assert decide_identity(views("ann", "ann", "ann", None), strict).status == "unknown"  # margin 2
    assert decide_identity(views("ann", "ann", "ann", "ann"), strict).name == "ann"
    many_votes = IdentityOptions(max_distance=0.6, min_votes=3, min_margin=1)
    assert decide_identity(views("ann", "ann"), many_votes).status == "unknown"  # margin 2, votes 2
    assert decide_identity(views("ann", "ann", "ann"), many_votes).name == "ann"
    lenient = IdentityOptions(max_distance=0.6, min_views=1, min_votes=1, min_margin=1)
    assert decide_identity(views("ann"), lenient).name == "ann"


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_distance", 0.0),
        ("max_distance", math.nan),
        ("max_distance", math.inf),
        ("min_views", 0),
        ("min_votes", 0),
        ("min_margin", 0),
    ],
)
def test_options_name_the_bad_field(field: str, value: float) -> None:
    arguments = {"max_distance": 0.6, field: value}
    with pytest.raises(ValueError, match=rf"^IdentityOptions\.{field} must be .*, got {value!r}$"):
        IdentityOptions(**arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name, distance, message",
    [
        ("", 0.1, "ViewMatch.name must be a non-empty string or None, got ''"),
        ("ann", -0.1, "ViewMatch.distance must be a finite number >= 0, got -0.1"),
        ("ann", math.nan, "ViewMatch.distance must be a finite number >= 0, got nan"),
    ],
)
def test_a_bad_match_is_refused(name: str, distance: float, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        ViewMatch(name, distance)


# --- properties -------------------------------------------------------------------------------

match = st.builds(ViewMatch, st.sampled_from(["ann", "bob", "cy", None]), st.floats(0.0, 1.2))
option_sets = st.builds(
    IdentityOptions,
    max_distance=st.floats(0.1, 1.0),
    min_views=st.integers(1, 4),
    min_votes=st.integers(1, 4),
    min_margin=st.integers(1, 3),
)
PROPERTY_SETTINGS = settings(max_examples=400, derandomize=True, database=None, deadline=None)


@PROPERTY_SETTINGS
@given(matches=st.lists(match, max_size=8), options=option_sets)
def test_a_name_always_has_its_votes_and_margin_whatever_the_order(matches, options) -> None:
    decision = decide_identity(matches, options)
    assert decision.views == len(matches)
    assert (decision.name is not None) == (decision.status == "known")
    if decision.name is not None:
        votes = sum(1 for m in matches if m.name == decision.name and m.distance <= options.max_distance)
        others = [
            sum(1 for m in matches if m.name == other and m.distance <= options.max_distance)
            for other in {"ann", "bob", "cy"} - {decision.name}
        ]
        unknown = sum(1 for m in matches if m.name is None or m.distance > options.max_distance)
        assert votes == decision.votes >= options.min_votes
        assert votes - max([unknown, *others]) == decision.margin >= options.min_margin
    for order in itertools.islice(itertools.permutations(matches), 6):
        assert decide_identity(list(order), options) == decision


@PROPERTY_SETTINGS
@given(matches=st.lists(match, max_size=8), extra=match, options=option_sets)
def test_a_view_against_a_person_never_makes_them_known(matches, extra, options) -> None:
    """Once enough views are in, a further view that does not vote for the leader (another
    person, or unknown) can only take a name away, never give that name."""
    before = decide_identity(matches, options)
    after = decide_identity([*matches, extra], options)
    if len(matches) >= options.min_views and after.name is not None and before.name != after.name:
        assert extra.name == after.name and extra.distance <= options.max_distance
