"""Elo, Bradley–Terry and the bootstrap: textbook values and properties."""

from __future__ import annotations

import functools
import math
import random

import pytest
from aieng_judge.ranking import BT_PRIOR_GAMES, Game, Interval, bootstrap, bradley_terry, elo
from hypothesis import given, settings
from hypothesis import strategies as st

PLAYERS = st.sampled_from(["a", "b", "c", "d", "e"])
SCORES = st.sampled_from([0.0, 0.5, 1.0])


@st.composite
def games(draw: st.DrawFn, min_size: int = 0, max_size: int = 40) -> list[Game]:
    """Random games among a handful of players, never a player against itself."""
    n = draw(st.integers(min_size, max_size))
    out: list[Game] = []
    for _ in range(n):
        a = draw(PLAYERS)
        b = draw(PLAYERS.filter(lambda p, a=a: p != a))
        out.append((a, b, draw(SCORES)))
    return out


def simulate(strengths: dict[str, float], rounds: int, seed: int) -> list[Game]:
    """Round-robin games drawn from known Bradley–Terry strengths with a seeded RNG."""
    rng = random.Random(seed)
    names = sorted(strengths)
    out: list[Game] = []
    for _ in range(rounds):
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                pa = strengths[a] / (strengths[a] + strengths[b])
                out.append((a, b, 1.0 if rng.random() < pa else 0.0))
    return out


def test_elo_textbook_update() -> None:
    """Two equal players: the winner gains k/2, the loser loses k/2."""
    assert elo([("x", "y", 1.0)]) == {"x": 1016.0, "y": 984.0}
    assert elo([("x", "y", 0.5)]) == {"x": 1000.0, "y": 1000.0}


def test_elo_expected_score_uses_scale() -> None:
    """A 400-point favourite expects 10/11 and gains k/11 for a win."""
    ratings = elo([("x", "y", 1.0)], initial=1000.0, k=22.0, scale=400.0)
    assert ratings["x"] == pytest.approx(1011.0)
    # Favourite by 400: play after establishing via a large k and check expectation.
    r = elo([("f", "u", 1.0), ("f", "u", 1.0)], k=400.0)
    assert r["f"] > r["u"]


def test_elo_ratings_far_apart_stay_finite() -> None:
    """A small scale (or a large k) puts ratings thousands of scales apart: the upset's
    expectation is 0, not an OverflowError from 10 ** 1000."""
    ratings = elo([("a", "b", 1.0), ("b", "a", 1.0)], k=1000.0, scale=1.0)
    assert ratings == {"a": 500.0, "b": 1500.0}  # b, 1000 below, gained the whole k


@given(games(min_size=1, max_size=1), st.floats(1, 100), st.floats(500, 2000))
def test_one_elo_game_conserves_the_sum(gs: list[Game], k: float, initial: float) -> None:
    """One Elo game moves the two ratings by opposite amounts."""
    ratings = elo(gs, k=k, initial=initial)
    assert sum(ratings.values()) == pytest.approx(2 * initial, abs=1e-9)


@given(games(min_size=1))
def test_elo_conserves_the_total_over_many_games(gs: list[Game]) -> None:
    """Every game conserves the sum, so the mean stays at the initial rating."""
    ratings = elo(gs)
    assert math.fsum(ratings.values()) == pytest.approx(1000.0 * len(ratings), abs=1e-6)


@given(games(min_size=1), st.randoms(use_true_random=False))
@settings(max_examples=60)
def test_bt_is_invariant_to_game_order(gs: list[Game], rnd: random.Random) -> None:
    """Bradley–Terry counts games before fitting: shuffling them changes nothing, bit for bit."""
    shuffled = list(gs)
    rnd.shuffle(shuffled)
    assert bradley_terry(shuffled) == bradley_terry(gs)


def test_bt_is_invariant_to_the_order_of_fractional_scores() -> None:
    """Fractional scores (partial wins) too give the same ratings, bit for bit, in any
    order: 0.1 + 0.2 + 0.3 and 0.3 + 0.2 + 0.1 differ as running float sums."""
    gs: list[Game] = [("a", "b", 0.1), ("a", "b", 0.2), ("a", "b", 0.3), ("b", "c", 0.7)]
    assert bradley_terry(list(reversed(gs))) == bradley_terry(gs)


@given(games(min_size=1))
@settings(max_examples=60)
def test_bt_is_centred_and_finite(gs: list[Game]) -> None:
    """Ratings are finite even for undefeated players, and their mean is 1000."""
    ratings = bradley_terry(gs)
    assert all(math.isfinite(r) for r in ratings.values())
    assert math.fsum(ratings.values()) / len(ratings) == pytest.approx(1000.0)


@given(st.integers(0, 10_000))
@settings(max_examples=15, deadline=None)
def test_bt_recovers_the_order_of_known_strengths(seed: int) -> None:
    """With enough simulated games, the fitted order equals the true order exactly."""
    strengths = {"p1": 1.0, "p2": 2.5, "p3": 6.0, "p4": 15.0, "p5": 40.0}
    ratings = bradley_terry(simulate(strengths, rounds=150, seed=seed))
    assert sorted(ratings, key=ratings.__getitem__) == ["p1", "p2", "p3", "p4", "p5"]


def test_bt_recovers_rating_gaps() -> None:
    """A 10:1 strength ratio is ~400 points apart once many games are observed."""
    ratings = bradley_terry(simulate({"weak": 1.0, "strong": 10.0}, rounds=20_000, seed=1))
    assert ratings["strong"] - ratings["weak"] == pytest.approx(400.0, abs=25.0)


def test_bt_symmetric_players_tie() -> None:
    """Players with mirror-image records get equal ratings; ties split evenly."""
    ratings = bradley_terry([("a", "b", 1.0), ("b", "a", 1.0), ("a", "b", 0.5)])
    assert ratings["a"] == pytest.approx(ratings["b"])
    assert ratings["a"] == pytest.approx(1000.0)


def test_bt_undefeated_player_is_finite_and_best() -> None:
    """The prior keeps an undefeated player's strength finite."""
    assert BT_PRIOR_GAMES > 0
    ratings = bradley_terry([("a", "b", 1.0)] * 5 + [("b", "c", 1.0)] * 5)
    assert ratings["a"] > ratings["b"] > ratings["c"]
    assert all(math.isfinite(r) for r in ratings.values())


def test_bt_matches_closed_form_two_players() -> None:
    """Two players, prior aside: p_a / p_b = wins_a / wins_b (MLE), so the gap is 400·log10."""
    gs: list[Game] = [("a", "b", 1.0)] * 300 + [("a", "b", 0.0)] * 100
    ratings = bradley_terry(gs)
    assert ratings["a"] - ratings["b"] == pytest.approx(400 * math.log10(3.0), abs=1.0)


def test_empty_games() -> None:
    """No games, no ratings."""
    assert elo([]) == {}
    assert bradley_terry([]) == {}
    assert bootstrap([], bradley_terry) == {}


@pytest.mark.parametrize(
    ("game", "message"),
    [
        (("a", "a", 1.0), "cannot play itself"),
        (("a", "", 1.0), "non-empty strings"),
        (("a", "b", 1.5), "score must be"),
        (("a", "b", True), "score must be"),
        (("a", "b"), "expected"),
    ],
)
def test_bad_games_are_named(game: object, message: str) -> None:
    """A malformed game fails with its index and what is wrong."""
    for rate in (elo, bradley_terry):
        with pytest.raises(ValueError, match=message):
            rate([("x", "y", 1.0), game])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="game 1"):
        elo([("x", "y", 1.0), game])  # type: ignore[list-item]


def test_bad_parameters() -> None:
    """Non-positive k, bad iterations, samples or confidence are refused."""
    with pytest.raises(ValueError, match="k > 0"):
        elo([], k=0)
    with pytest.raises(ValueError, match="iterations"):
        bradley_terry([], iterations=0)
    with pytest.raises(ValueError, match="samples"):
        bootstrap([], elo, samples=0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap([], elo, confidence=1.0)


@given(games(min_size=1, max_size=25), st.integers(0, 100))
@settings(max_examples=25, deadline=None)
def test_bootstrap_interval_contains_the_estimate(gs: list[Game], seed: int) -> None:
    """Every player's interval brackets the full-data rating."""
    for rate in (elo, bradley_terry):
        intervals = bootstrap(gs, rate, samples=30, seed=seed)
        assert set(intervals) == set(rate(gs))
        for player, interval in intervals.items():
            assert interval.estimate == rate(gs)[player]
            assert interval.low <= interval.estimate <= interval.high


def test_bootstrap_is_seeded_and_narrows_with_data() -> None:
    """Same seed, same intervals; ten times the games gives a narrower interval."""
    strengths = {"a": 1.0, "b": 3.0}
    few = simulate(strengths, rounds=40, seed=3)
    many = simulate(strengths, rounds=4000, seed=3)
    rate = functools.partial(bradley_terry, iterations=200)
    first = bootstrap(few, rate, samples=200, seed=7)
    assert bootstrap(few, rate, samples=200, seed=7) == first
    wide = first["b"]
    narrow = bootstrap(many, rate, samples=100, seed=7)["b"]
    assert isinstance(wide, Interval)
    assert narrow.high - narrow.low < (wide.high - wide.low) / 3
    # The true gap of log10(3)*400 ≈ 191 is inside the large-sample interval of the gap.
    assert narrow.low < 1000 + 191 / 2 + 1 and narrow.high > 1000 + 191 / 2 - 1


def test_bootstrap_calls_progress_after_each_resample() -> None:
    """The judge's ranking bootstrap reports each resample; its intervals are those of a
    bootstrap without ``progress``; a progress callback raising stops it."""
    played = [("x", "y", float(i % 3 == 0)) for i in range(30)]
    calls: list[tuple[int, int]] = []
    with_progress = bootstrap(played, elo, samples=12, seed=2,
                              progress=lambda done, total: calls.append((done, total)))
    assert calls == [(done, 12) for done in range(1, 13)]
    assert with_progress == bootstrap(played, elo, samples=12, seed=2)

    def stop(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bootstrap(played, elo, samples=12, progress=stop)
