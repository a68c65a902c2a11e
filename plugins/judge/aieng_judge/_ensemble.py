"""``ensemble``: several judges (models × prompts) score the same sample; one aggregate
score per metric, with the spread between them."""

from __future__ import annotations

import functools
import inspect
import math
import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

import anyio
from aieng_hookspecs import PipelineContext, hookimpl
from aieng_hookspecs.types import Sample, Score

from ._asking import Generate
from ._concurrent import gather
from ._options import EnsembleOptions, RubricOptions
from ._rubric import RubricJudge

__all__ = ["EnsembleJudge", "aggregate"]


def aggregate(values: Sequence[float], how: str) -> float:
    """``mean``, ``median`` or ``majority`` (the most common value; among equally common
    values the lowest, so a split panel errs on the strict side) of non-empty ``values``."""
    if not values:
        raise ValueError("aggregate needs at least one value")
    if how == "mean":
        return math.fsum(values) / len(values)
    if how == "median":
        return float(statistics.median(values))
    if how == "majority":
        counts = Counter(values)
        top = max(counts.values())
        return float(min(value for value, count in counts.items() if count == top))
    raise ValueError(f"aggregate must be mean, median or majority, got {how!r}")


def _label(member: object, index: int) -> str:
    name = getattr(member, "label", None) or getattr(member, "name", None)
    return str(name) if name else f"judge{index}"


class EnsembleJudge:
    """Asks a panel of judges and aggregates their scores metric by metric.

    Built from options, the panel is one :class:`RubricJudge` per (model, prompt style)
    pair: ``models = ["a", "b"]`` and ``styles = ["default", "strict"]`` make four judges,
    each asking the pipeline's backend that answers to its model. From Python any judges
    may form the panel (``members=``: objects with an ``aieng_judge`` method).

    For each metric the members returned (``rubric.accuracy``, ...) it gives
    ``ensemble.<metric>``, the aggregate (mean, median or majority) of the members that
    scored it, with every member's value in the rationale, and
    ``ensemble.<metric>.spread``, the population standard deviation between them (0: the
    panel agrees). A member that gives no score is left out and counted in the rationale;
    so is one that gives a metric twice or a non-finite value for it (named in the
    rationale, never counted twice).

    :param options: the typed options (defaults when ``None``).
    :param members: the panel, instead of the one ``options`` describes.
    :param generate: generate with this function instead of the pipeline (panel from
        options only).
    """

    def __init__(self, options: EnsembleOptions | None = None, *,
                 members: Sequence[object] | None = None,
                 generate: Generate | None = None) -> None:
        self.options = options if options is not None else EnsembleOptions()
        self._context: PipelineContext | None = None
        if members is not None:
            if not members:
                raise ValueError("an ensemble needs at least one member")
            self.members = list(members)
            return
        o = self.options
        self.members = []
        for model in o.models or (None,):
            for style in o.styles:
                label = f"{model or 'default'}/{style}"
                judge = RubricJudge(RubricOptions(
                    criteria=o.criteria, custom=o.custom, style=style, model=model,
                    temperature=o.temperature, max_tokens=o.max_tokens, retries=o.retries,
                    constrained=o.constrained, max_chars=o.max_chars),
                    generate=generate, name=label)
                self.members.append(judge)

    @hookimpl
    def aieng_pipeline_open(self, context: PipelineContext) -> None:
        """Give the pipeline's context to the panel, which generates through it."""
        self._context = context
        for member in self.members:
            opener = getattr(member, "aieng_pipeline_open", None)
            if opener is not None:
                opener(context)

    async def _scores(self, member: object, sample: Sample) -> list[Score]:
        method = member.aieng_judge  # type: ignore[attr-defined]
        # The panel calls its members itself, not through the dispatcher: honour @blocking
        # (BLEU, ROUGE, ... do CPU work) as the dispatcher would, off the event loop.
        if getattr(method, "aieng_blocking", False):
            result: Any = await anyio.to_thread.run_sync(method, sample)
        else:
            result = method(sample)
        if inspect.isawaitable(result):
            result = await result
        if result is None:
            return []
        return [result] if isinstance(result, Score) else list(result)

    @hookimpl
    async def aieng_judge(self, sample: Sample) -> list[Score] | None:
        """``ensemble.<metric>`` and ``ensemble.<metric>.spread`` per metric any member
        scored; ``None`` when no member scored anything."""
        answers = await gather([functools.partial(self._scores, member, sample)
                                for member in self.members])
        by_metric: dict[str, list[tuple[str, float]]] = {}
        failed: dict[str, list[str]] = {}
        for index, (member, scores) in enumerate(zip(self.members, answers, strict=True)):
            label = _label(member, index)
            named = Counter(score.name for score in scores)
            for score in scores:
                # A member's score is read by name once: two of one name (or a non-finite
                # value) make it failed for that metric, never counted twice.
                if named[score.name] > 1 or not math.isfinite(score.value):
                    problem = (f"{label} ({named[score.name]} scores of this name)"
                               if named[score.name] > 1 else f"{label} ({score.value:g})")
                    if problem not in failed.setdefault(score.name, []):
                        failed[score.name].append(problem)
                    continue
                by_metric.setdefault(score.name, []).append((label, score.value))
        judge = self._context.component if self._context is not None else "ensemble"
        out: list[Score] = []
        how = self.options.aggregate
        for metric, votes in by_metric.items():
            values = [value for _, value in votes]
            value = aggregate(values, how)
            spread = statistics.pstdev(values)
            listing = ", ".join(f"{label}={value:g}" for label, value in votes)
            rationale = (f"{len(votes)}/{len(self.members)} judges: {listing}; {how} "
                         f"{value:g}; spread (std) {spread:.2f}, range "
                         f"{min(values):g}–{max(values):g}")
            if metric in failed:
                rationale += f"; not counted: {', '.join(failed[metric])}"
            out.append(Score(name=f"ensemble.{metric}", value=value, rationale=rationale,
                             judge=judge))
            out.append(Score(name=f"ensemble.{metric}.spread", value=spread,
                             rationale=f"population std of {len(values)} judges' {metric}",
                             judge=judge))
        return out or None
