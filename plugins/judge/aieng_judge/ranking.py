"""Ratings from pairwise games: Elo, Bradley–Terry, and bootstrap confidence intervals.

A *game* is ``(player_a, player_b, score_of_a)``: ``1.0`` when ``a`` won, ``0.5`` a tie,
``0.0`` a loss (any value in between counts as that fraction of a win). Players are model or
system names; games typically come from a pairwise judge
(:func:`aieng_judge.games_from_verdicts`).

- :func:`elo` is the classic sequential update: order matters, recent games move ratings.
- :func:`bradley_terry` is the maximum-likelihood fit of ``P(a beats b) = p_a / (p_a + p_b)``:
  order does not matter (exactly: the games are counted before fitting), and the result is
  returned on Elo's scale, ``400 * log10(p)``, shifted so the mean rating is 1000, so that a
  difference of 400 points means 10:1 odds under both.
- :func:`bootstrap` resamples the games with replacement and reports, per player, a percentile
  interval around the rating of the full set of games.

Pure Python: a leaderboard has tens of players and thousands of games at most.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import attrs

__all__ = ["Game", "Interval", "bootstrap", "bradley_terry", "elo"]

Game = tuple[str, str, float]
"""``(player_a, player_b, score of a)``: 1.0 win, 0.5 tie, 0.0 loss."""

#: Pseudo-games each player plays, tied, against a virtual player of strength 1 (rating 1000
#: before centring) in :func:`bradley_terry`. It keeps an undefeated (or winless) player's
#: strength finite, and is small enough to leave well-observed ratings almost unchanged.
BT_PRIOR_GAMES = 0.1
#: Newton steps of :func:`bradley_terry` at most this long (in log-strength) are taken
#: whole: the fit is then close enough to the maximum for Newton's quadratic convergence.
_NEWTON_CLOSE = 1e-4


@attrs.frozen
class Interval:
    """A rating with its bootstrap confidence interval.

    :param estimate: the rating computed on all games.
    :param low: the lower bound of the interval.
    :param high: the upper bound; ``low <= estimate <= high``.
    """

    estimate: float
    low: float
    high: float


class _Games(list[Game]):
    """Games :func:`_checked` validated: the resamples :func:`bootstrap` passes to ``rate``
    are made of them, so :func:`elo` and :func:`bradley_terry` do not check each again
    (that was half the time of a bootstrap: minutes over the games of 100k items)."""


def _checked(games: Sequence[Game]) -> list[Game]:
    """Validate *games*, naming the first bad one; return them as a list of plain tuples."""
    if isinstance(games, _Games):
        return games
    out = _Games()
    for i, game in enumerate(games):
        if not isinstance(game, tuple | list) or len(game) != 3:
            raise ValueError(f"game {i}: expected (player_a, player_b, score), got {game!r}")
        a, b, s = game
        if not isinstance(a, str) or not a or not isinstance(b, str) or not b:
            raise ValueError(f"game {i}: players must be non-empty strings, got {a!r}, {b!r}")
        if a == b:
            raise ValueError(f"game {i}: a player cannot play itself ({a!r})")
        if isinstance(s, bool) or not isinstance(s, int | float) or not 0.0 <= s <= 1.0:
            raise ValueError(
                f"game {i}: score must be a number in [0, 1] (1 win, 0.5 tie, 0 loss), got {s!r}"
            )
        out.append((a, b, float(s)))
    return out


def elo(
    games: Sequence[Game], *, k: float = 32.0, initial: float = 1000.0, scale: float = 400.0
) -> dict[str, float]:
    """Rate players by the sequential Elo update, game by game in the given order.

    For each game ``(a, b, s)``: ``E_a = 1 / (1 + 10 ** ((R_b - R_a) / scale))``,
    ``E_b = 1 - E_a``; ``R_a += k * (s - E_a)`` and ``R_b += k * ((1 - s) - E_b)``, so one
    game conserves the sum of the two ratings.

    :param games: ``(player_a, player_b, score of a)`` tuples, in the order they were played.
    :param k: the update step (K-factor), > 0.
    :param initial: every player's rating before its first game.
    :param scale: the rating difference for 10:1 odds, > 0.
    :returns: the final rating of every player that appears in *games*.
    :raises ValueError: a malformed game or a non-positive ``k`` / ``scale``.
    """
    if not k > 0 or not scale > 0 or not math.isfinite(initial):
        raise ValueError(f"elo needs k > 0, scale > 0 and a finite initial; got {k}, {scale}, "
                         f"{initial}")
    ratings: dict[str, float] = {}
    for a, b, s in _checked(games):
        ra = ratings.setdefault(a, initial)
        rb = ratings.setdefault(b, initial)
        # Capped: past 10 ** 300 the expectation is 0 to a float, and 10.0 ** 309 overflows
        # (a small scale or a large k spreads ratings that far).
        ea = 1.0 / (1.0 + 10.0 ** min((rb - ra) / scale, 300.0))
        eb = 1.0 - ea
        ratings[a] = ra + k * (s - ea)
        ratings[b] = rb + k * ((1.0 - s) - eb)
    return ratings


def bradley_terry(
    games: Sequence[Game], *, iterations: int = 1000, tol: float = 1e-9
) -> dict[str, float]:
    """Fit Bradley–Terry strengths by maximum likelihood and return them on Elo's scale.

    The model is ``P(a beats b) = p_a / (p_a + p_b)``. A tie counts as half a win for each
    side (a score ``s`` as ``s`` of a win for ``a`` and ``1 - s`` for ``b``). Every player
    also plays :data:`BT_PRIOR_GAMES` tied pseudo-games against a fixed virtual player of
    strength 1: this weak prior keeps an undefeated player's strength finite and makes the
    fit unique even when the comparison graph is disconnected. The log-likelihood, in the
    log-strengths, is then strictly concave; its maximum is found by Newton's method with
    a backtracking line search (Hunter's MM iteration, used before, took tens of thousands
    of sweeps on lopsided records, such as an undefeated player, and stopped at its cap
    hundreds of points short of the maximum).

    The result is ``400 * log10(p_i)``, shifted so that the mean over players is 1000.

    Games are counted before fitting and players visited in sorted order, so the result does
    not depend on the order of *games* (bit for bit).

    :param games: ``(player_a, player_b, score of a)`` tuples.
    :param iterations: the maximum number of Newton steps, >= 1 (a fit takes tens).
    :param tol: stop when no log-strength moves more than this in a step.
    :returns: each player's rating (mean 1000); empty when *games* is empty.
    :raises ValueError: a malformed game or ``iterations < 1``.
    """
    if iterations < 1:
        raise ValueError(f"bradley_terry needs iterations >= 1, got {iterations}")
    checked = _checked(games)
    # Each player's wins are summed by fsum (exactly rounded, so in any order the same
    # float: a plain running sum of scores such as 0.1 depends on the games' order).
    won: dict[str, list[float]] = {}
    pairs: dict[tuple[str, str], float] = {}
    for a, b, s in checked:
        won.setdefault(a, []).append(s)
        won.setdefault(b, []).append(1.0 - s)
        key = (a, b) if a < b else (b, a)
        pairs[key] = pairs.get(key, 0.0) + 1.0
    players = sorted(won)
    if not players:
        return {}
    index = {p: i for i, p in enumerate(players)}
    # The prior's pseudo-games count half a win each.
    wins = [math.fsum(won[p]) + 0.5 * BT_PRIOR_GAMES for p in players]
    counted = [(index[a], index[b], n) for (a, b), n in sorted(pairs.items())]
    x = [0.0] * len(players)  # log-strengths
    current = _bt_log_likelihood(x, wins, counted)
    for _ in range(iterations):
        gradient, hessian = _bt_derivatives(x, wins, counted)
        step = _solve_spd(hessian, gradient)
        slope = math.fsum(g * d for g, d in zip(gradient, step, strict=True))
        t = 1.0
        # Halve the step until the likelihood rises enough (Armijo); near the maximum a
        # full Newton step is taken as it is, where the rise is below the float precision
        # of the likelihood (of the order of the games' number times 1e-16).
        while max(abs(d) for d in step) > _NEWTON_CLOSE:
            trial = [xi + t * di for xi, di in zip(x, step, strict=True)]
            value = _bt_log_likelihood(trial, wins, counted)
            if value >= current + 1e-4 * t * slope or t < 1e-12:
                break
            t /= 2.0
        x = [xi + t * di for xi, di in zip(x, step, strict=True)]
        current = _bt_log_likelihood(x, wins, counted)
        if max(abs(t * d) for d in step) <= tol:
            break
    logs = {p: 400.0 * x[index[p]] / math.log(10.0) for p in players}
    shift = 1000.0 - math.fsum(logs.values()) / len(players)
    return {p: logs[p] + shift for p in players}


def _log_add(a: float, b: float) -> float:
    """``log(exp(a) + exp(b))`` without overflow."""
    high, low = (a, b) if a >= b else (b, a)
    return high + math.log1p(math.exp(low - high))


def _bt_log_likelihood(x: Sequence[float], wins: Sequence[float],
                       counted: Sequence[tuple[int, int, float]]) -> float:
    """The prior-penalized log-likelihood of log-strengths ``x``: each player's wins
    (pseudo-wins included) times its log-strength, less, per pair of players, their games
    times ``log(p_a + p_b)``, and per player its pseudo-games times ``log(p + 1)``."""
    terms = [w * xi for w, xi in zip(wins, x, strict=True)]
    terms += [-n * _log_add(x[a], x[b]) for a, b, n in counted]
    terms += [-BT_PRIOR_GAMES * _log_add(xi, 0.0) for xi in x]
    return math.fsum(terms)


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _bt_derivatives(x: Sequence[float], wins: Sequence[float],
                    counted: Sequence[tuple[int, int, float]]
                    ) -> tuple[list[float], list[list[float]]]:
    """The log-likelihood's gradient and its Hessian negated (positive definite: the
    prior's terms are on its diagonal)."""
    k = len(x)
    expected: list[list[float]] = [[BT_PRIOR_GAMES * _sigmoid(xi)] for xi in x]
    hessian = [[0.0] * k for _ in range(k)]
    for i, xi in enumerate(x):
        p = _sigmoid(xi)
        hessian[i][i] = BT_PRIOR_GAMES * p * (1.0 - p)
    for a, b, n in counted:
        p = _sigmoid(x[a] - x[b])
        expected[a].append(n * p)
        expected[b].append(n * (1.0 - p))
        w = n * p * (1.0 - p)
        hessian[a][a] += w
        hessian[b][b] += w
        hessian[a][b] -= w
        hessian[b][a] -= w
    gradient = [w - math.fsum(e) for w, e in zip(wins, expected, strict=True)]
    return gradient, hessian


def _solve_spd(matrix: list[list[float]], vector: Sequence[float]) -> list[float]:
    """``matrix⁻¹ · vector`` for a symmetric positive definite matrix (Cholesky)."""
    k = len(vector)
    lower = [[0.0] * k for _ in range(k)]
    for i in range(k):
        for j in range(i + 1):
            total = matrix[i][j] - math.fsum(lower[i][m] * lower[j][m] for m in range(j))
            if i == j:
                lower[i][i] = math.sqrt(max(total, 1e-300))
            else:
                lower[i][j] = total / lower[j][j]
    forward = [0.0] * k
    for i in range(k):
        forward[i] = (vector[i] - math.fsum(lower[i][m] * forward[m] for m in range(i))
                      ) / lower[i][i]
    out = [0.0] * k
    for i in reversed(range(k)):
        out[i] = (forward[i] - math.fsum(lower[m][i] * out[m] for m in range(i + 1, k))
                  ) / lower[i][i]
    return out


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """The *q*-quantile (0..1) of sorted values by linear interpolation (numpy's default)."""
    position = q * (len(sorted_values) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    fraction = position - lower
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * fraction


def bootstrap(
    games: Sequence[Game],
    rate: Callable[[Sequence[Game]], dict[str, float]],
    *,
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Interval]:
    """Percentile bootstrap confidence intervals for the ratings that *rate* computes.

    Draws *samples* resamples of ``len(games)`` games with replacement (seeded: the same seed
    gives the same intervals), rates each, and takes the ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2`` percentiles of each player's ratings. A player absent from a
    resample has no rating there; its interval uses the resamples it appears in.

    The percentile interval of a biased statistic (e.g. order-dependent :func:`elo` on few
    games) can exclude the full-data estimate; the interval is then widened to include it,
    so ``low <= estimate <= high`` always holds.

    :param games: the games.
    :param rate: ``elo``, ``bradley_terry`` or any function from games to ratings
        (use :func:`functools.partial` for options).
    :param samples: the number of resamples, >= 1.
    :param confidence: the interval's coverage, in (0, 1).
    :param seed: the resampling seed.
    :param progress: called after each resample with ``(resamples done, samples)`` (a
        progress bar: the resamples of a large set of games take minutes); an exception it
        raises stops the bootstrap.
    :returns: an :class:`Interval` per player rated on the full set of games.
    :raises ValueError: bad ``samples`` / ``confidence`` or a malformed game.
    """
    if samples < 1:
        raise ValueError(f"bootstrap needs samples >= 1, got {samples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"bootstrap needs 0 < confidence < 1, got {confidence}")
    checked = _checked(games)
    estimates = rate(checked)
    if not checked:
        return {p: Interval(estimate=r, low=r, high=r) for p, r in estimates.items()}
    rng = random.Random(seed)
    draws: dict[str, list[float]] = {p: [] for p in estimates}
    n = len(checked)
    for done in range(samples):
        resample = _Games([checked[rng.randrange(n)] for _ in range(n)])
        for player, rating in rate(resample).items():
            if player in draws:
                draws[player].append(rating)
        if progress is not None:
            progress(done + 1, samples)
    alpha = (1.0 - confidence) / 2.0
    out: dict[str, Interval] = {}
    for player, estimate in estimates.items():
        values = sorted(draws[player])
        if not values:
            out[player] = Interval(estimate=estimate, low=estimate, high=estimate)
            continue
        low = min(_percentile(values, alpha), estimate)
        high = max(_percentile(values, 1.0 - alpha), estimate)
        out[player] = Interval(estimate=estimate, low=low, high=high)
    return out
