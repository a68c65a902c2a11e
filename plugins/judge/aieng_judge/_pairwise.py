"""``pairwise``: which of two answers is better, asked in both orders against position bias."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Literal

import attrs
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Sample, Score
from attrs import field
from attrs import validators as v

from ._asking import AskingJudge, Generate
from ._concurrent import gather
from ._options import PairwiseOptions
from ._parse import parse_winner
from ._prompts import answer_shape, pairwise_messages, pairwise_schema
from .ranking import Game

__all__ = [
    "JudgeError",
    "PairwiseJudge",
    "PairwiseVerdict",
    "Winner",
    "compare",
    "games_from_verdicts",
]

Winner = Literal["a", "b", "tie"]
_WINNERS = ("a", "b", "tie")
_SWAP: dict[str, Winner] = {"a": "b", "b": "a", "tie": "tie"}
_POINTS = {"a": 1.0, "tie": 0.5, "b": 0.0}


class JudgeError(RuntimeError):
    """A judge could not reach a verdict (its answers could not be read)."""


@attrs.frozen
class PairwiseVerdict:
    """The outcome of comparing ``output_a`` with ``output_b`` in both orders.

    :param winner: ``"a"``, ``"b"`` or ``"tie"``: the two orders' common verdict, or
        ``"tie"`` when they disagree.
    :param consistent: whether both orders gave the same verdict (``False`` is position
        bias, or a coin flip between close answers).
    :param rationale: both answers' rationales.
    :param forward: the verdict with ``output_a`` shown first.
    :param backward: the verdict with ``output_b`` shown first, in ``a`` / ``b`` terms.
    """

    winner: Winner = field(validator=v.in_(_WINNERS))
    consistent: bool = field(validator=v.instance_of(bool))
    rationale: str = field(default="", validator=v.instance_of(str))
    forward: Winner = field(default="tie", validator=v.in_(_WINNERS))
    backward: Winner = field(default="tie", validator=v.in_(_WINNERS))


class PairwiseJudge(AskingJudge):
    """Compares two answers to the same question with the pipeline's backend.

    :meth:`compare` asks twice, the second time with the answers' order swapped: when both
    orders pick the same answer (or both say tie) that is the verdict (``consistent``);
    when they disagree the verdict is a tie with ``consistent=False``, so a judge that
    always prefers the first (or second) answer shown produces ties, not wins.

    As a pipeline judge (``aieng_judge``) it compares the sample's output (``a``) with its
    reference (``b``; the first one when there are several): ``pairwise.win`` is 1.0 (the
    output is better), 0.5 (tie or inconsistent) or 0.0, ``pairwise.consistent`` 1.0 or
    0.0. A sample without a reference gets ``None``.

    :param options: the typed options (defaults when ``None``).
    :param generate: generate with this function instead of the pipeline.
    :param name: the name failures are reported under (default: the component's name).
    """

    def __init__(self, options: PairwiseOptions | None = None, *,
                 generate: Generate | None = None, name: str = "") -> None:
        super().__init__(generate=generate, name=name)
        self.options = options if options is not None else PairwiseOptions()

    async def _one(self, question: str, first: str, second: str,
                   context: Sequence[str]) -> tuple[str, str] | None:
        options = self.options
        messages = pairwise_messages(criterion=options.criterion, question=question,
                                     first=first, second=second, context=context,
                                     limit=options.max_chars, rationale=options.rationale)
        return await self.ask(
            messages, parse_winner, metric="pairwise.win", model=options.model,
            temperature=options.temperature, max_tokens=options.max_tokens,
            schema=pairwise_schema(rationale=options.rationale) if options.constrained else None,
            retries=options.retries,
            example="JSON " + answer_shape("winner", '"A" | "B" | "tie"', options.rationale),
            quoted=(question, first, second, *context))

    async def compare(self, input: str, output_a: str, output_b: str,
                      context: Sequence[str] = ()) -> PairwiseVerdict:
        """Compare two answers to ``input`` in both orders.

        :raises JudgeError: when either order's answer could not be read.
        """
        forward, backward = await gather([
            functools.partial(self._one, input, output_a, output_b, context),
            functools.partial(self._one, input, output_b, output_a, context)])
        if forward is None or backward is None:
            raise JudgeError("the pairwise judge's answer could not be read "
                             f"({'a first' if forward is None else 'b first'}); "
                             "see the judge.failed event")
        first: Winner = forward[0]  # type: ignore[assignment]
        second = _SWAP[backward[0]]
        consistent = first == second
        rationale = (f"A first: {first} ({forward[1] or 'no rationale'}); "
                     f"B first: {second} ({backward[1] or 'no rationale'})")
        return PairwiseVerdict(winner=first if consistent else "tie", consistent=consistent,
                               rationale=rationale, forward=first, backward=second)

    @hookimpl
    async def aieng_judge(self, sample: Sample) -> list[Score] | None:
        """``pairwise.win`` and ``pairwise.consistent`` of the output against the
        reference; ``None`` without a reference or when no verdict could be read."""
        reference = sample.reference
        if isinstance(reference, tuple):
            reference = reference[0] if reference else None
        if reference is None:
            return None
        try:
            verdict = await self.compare(sample.input, sample.output, reference,
                                         sample.context)
        except JudgeError:
            return None
        return [
            Score(name="pairwise.win", value=_POINTS[verdict.winner],
                  rationale=verdict.rationale, judge=self.name),
            Score(name="pairwise.consistent", value=1.0 if verdict.consistent else 0.0,
                  rationale="both orders agree" if verdict.consistent
                  else "the two orders disagree: scored as a tie", judge=self.name),
        ]


async def compare(input: str, output_a: str, output_b: str, context: Sequence[str] = (), *,
                  generate: Generate, options: PairwiseOptions | None = None
                  ) -> PairwiseVerdict:
    """Compare two answers with a generation function, in both orders
    (:meth:`PairwiseJudge.compare` without a pipeline).

    :param generate: ``request -> Completion``, plain or ``async``.
    :raises JudgeError: when an answer could not be read.
    """
    return await PairwiseJudge(options, generate=generate).compare(input, output_a, output_b,
                                                                   context)


def games_from_verdicts(
    verdicts: Iterable[tuple[str, str, PairwiseVerdict]],
    *,
    inconsistent: Literal["tie", "drop"] = "tie",
) -> list[Game]:
    """Games for :mod:`aieng_judge.ranking` from ``(player_a, player_b, verdict)`` triples.

    :param inconsistent: ``"tie"``: a verdict whose two orders disagreed counts as a tie
        (as its ``winner`` says); ``"drop"``: it is left out.
    :returns: ``(player_a, player_b, 1.0 | 0.5 | 0.0)`` per kept verdict, in order.
    """
    if inconsistent not in ("tie", "drop"):
        raise ValueError(f"inconsistent must be 'tie' or 'drop', got {inconsistent!r}")
    games: list[Game] = []
    for a, b, verdict in verdicts:
        if not verdict.consistent and inconsistent == "drop":
            continue
        games.append((a, b, _POINTS[verdict.winner]))
    return games
