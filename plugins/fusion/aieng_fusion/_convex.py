"""``convex``: a convex combination of min-max normalized scores."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import structlog
from aieng_hookspecs import hookimpl, listed
from aieng_hookspecs.types import Hit

from ._runs import Run, ranked, read_runs, scaled

__all__ = ["ConvexFuser", "ConvexOptions", "convex_fusion"]

log = structlog.get_logger(__name__)


def _unit(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name} must be a number, got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must lie in [0, 1], got {value!r}")


def _names(instance: object, attribute: attrs.Attribute[tuple[str, ...]],
           value: tuple[str, ...]) -> None:
    for name in value:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{attribute.name} must list non-blank source names, got {name!r}")


@attrs.frozen
class ConvexOptions:
    """Options of the ``convex`` fuser.

    :param alpha: the weight of the dense runs (those whose hits' ``source`` is listed in
        ``dense_sources``); the other runs share ``1 - alpha``. ``1``: dense only, ``0``:
        the others only. When only one kind of run is present, it gets all the weight.
    :param dense_sources: the sources whose runs ``alpha`` weighs (a retriever's
        ``Hit.source``: ``"vectors"`` for the vectors index).
    """

    alpha: float = attrs.field(default=0.5, validator=_unit)
    dense_sources: tuple[str, ...] = attrs.field(default=("vectors",), converter=listed,
                                                 validator=_names)


def _min_max(run: Run) -> list[float]:
    values = scaled([entry.score for entry in run.entries])
    if not values:
        return []
    low, high = min(values), max(values)
    if high == low:  # one hit, or all tied: each is the run's best
        return [1.0] * len(values)
    return [(value - low) / (high - low) for value in values]


def _weights(runs: Sequence[Run], alpha: float, dense: frozenset[str]) -> list[float]:
    present = [run for run in runs if run.entries]
    dense_count = sum(1 for run in present if run.source in dense)
    other_count = len(present) - dense_count
    if dense_count and other_count:
        dense_weight, other_weight = alpha / dense_count, (1.0 - alpha) / other_count
    else:  # one kind only: it takes the whole weight, shared equally
        dense_weight = other_weight = 1.0 / max(len(present), 1)
    return [dense_weight if run.source in dense else other_weight for run in runs]


def convex_fusion(runs: Sequence[Sequence[Hit]], *, alpha: float = 0.5,
                  dense_sources: Sequence[str] = ("vectors",)) -> list[Hit]:
    """Fuse runs by a convex combination of their min-max normalized scores.

    Each run's scores are mapped onto ``[0, 1]`` (best 1, worst 0; a run of equal scores
    maps to 1); a document missing from a run gets 0 there. Dense runs (source in
    ``dense_sources``) share weight ``alpha``, the others ``1 - alpha``, so fused scores lie
    in ``[0, 1]``. The result does not depend on the order of ``runs``: parts are summed
    exactly (``math.fsum``); equal scores are ordered by the number of runs holding the
    document (more first: a run's worst hit scores 0 there, as a missing document does),
    then by document id.

    :returns: every document of the runs once, best first, ranks 1..n, ``source="convex"``.
    """
    read, documents = read_runs(runs)
    weights = _weights(read, alpha, frozenset(dense_sources))
    parts: dict[str, list[float]] = {doc_id: [] for doc_id in documents}
    for run, weight in zip(read, weights):
        for entry, value in zip(run.entries, _min_max(run)):
            parts[entry.doc_id].append(weight * value)
    return ranked(parts, documents, "convex")


class ConvexFuser:
    """Fuses runs by a weighted sum of min-max normalized scores (hybrid search's alpha)."""

    def __init__(self, options: ConvexOptions | None = None) -> None:
        self.options = options if options is not None else ConvexOptions()
        self._warned = False

    @hookimpl
    def aieng_fuse(self, runs: Sequence[Sequence[Hit]]) -> list[Hit]:
        if not self._warned:
            self._check_alpha(runs)
        return convex_fusion(runs, alpha=self.options.alpha,
                             dense_sources=self.options.dense_sources)

    def _check_alpha(self, runs: Sequence[Sequence[Hit]]) -> None:
        """Warn once when a set ``alpha`` weighs nothing: several runs, all dense or none
        (``dense_sources`` naming components instead of their hits' ``source`` is the usual
        mistake: the runs are then weighed equally, whatever ``alpha`` says). An empty run
        (a retriever that found nothing) has no hit to tell its kind: a call with one says
        nothing about the set-up, and a later call decides."""
        sources = {run[0].source for run in runs if run}
        if self.options.alpha == 0.5 or len(runs) < 2 or not all(runs):
            return
        dense = sources & set(self.options.dense_sources)
        if dense and dense != sources:
            return
        self._warned = True
        log.warning("fusion.alpha_unused", alpha=self.options.alpha,
                    dense_sources=list(self.options.dense_sources),
                    run_sources=sorted(sources),
                    hint="alpha weighs dense runs against the others; these runs are "
                         "all of one kind, so they are weighed equally")
