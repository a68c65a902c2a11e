"""``rubric``: a model grades an answer 1–5 on each criterion of a rubric."""

from __future__ import annotations

import functools
import math

from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Sample, Score

from ._asking import AskingJudge, Generate, reference_text
from ._concurrent import gather
from ._options import RubricOptions
from ._parse import parse_score
from ._prompts import RUBRIC, answer_shape, rubric_messages, score_schema

__all__ = ["HIGH", "LOW", "RubricJudge", "length_controlled"]

#: The rubric's scale: every ``rubric.*`` score is an integer from LOW to HIGH.
LOW, HIGH = 1, 5


def length_controlled(score: float, output: str, reference: str, penalty: float) -> float:
    """A rubric score with a verbosity penalty relative to the reference's length.

    ``score - penalty * max(0, log2(words(output) / words(reference)))``, clipped to the
    1–5 scale: an answer up to as long as the reference keeps its score, one twice as long
    loses ``penalty`` points, four times as long ``2 * penalty``. Shorter answers are not
    rewarded (a too-short answer is what ``completeness`` is for).
    """
    out_words = max(len(output.split()), 1)
    ref_words = max(len(reference.split()), 1)
    excess = max(0.0, math.log2(out_words / ref_words))
    return min(float(HIGH), max(float(LOW), score - penalty * excess))


class RubricJudge(AskingJudge):
    """Asks the pipeline's backend for a 1–5 score and a one-sentence rationale per criterion.

    Each criterion is a separate request (small models keep one criterion in mind better
    than several) whose answer is read as JSON ``{"score": ..., "rationale": ...}``,
    fenced or inside prose, or as ``Score: 4``; with ``constrained`` the schema travels as
    ``request.response_schema`` so a backend that constrains decoding (``smollm2``, an
    OpenAI-compatible server with structured outputs) can only write a valid score. An
    answer that cannot be read is asked again once with the error, then the criterion gets
    no score: a ``judge.failed`` event and a ``judge.failed`` warning say so.

    Scores: ``rubric.<criterion>`` (integer 1–5), and with ``length_penalty`` and a
    reference, ``rubric.length_controlled`` (the criteria's mean with the verbosity
    penalty of :func:`length_controlled`).

    :param options: the typed options (defaults when ``None``).
    :param generate: generate with this function instead of the pipeline.
    :param name: the name failures are reported under (default: the component's name).
    """

    def __init__(self, options: RubricOptions | None = None, *,
                 generate: Generate | None = None, name: str = "") -> None:
        super().__init__(generate=generate, name=name)
        self.options = options if options is not None else RubricOptions()
        self.criteria: list[tuple[str, str]] = [
            *((c, RUBRIC[c]) for c in self.options.criteria), *self.options.custom.items()]

    async def grade(self, sample: Sample, criterion: str, description: str) -> Score | None:
        """The score of one criterion, or ``None`` when the answers could not be read."""
        options = self.options
        messages = rubric_messages(
            style=options.style, criterion=criterion, description=description,
            question=sample.input, answer=sample.output, context=sample.context,
            reference=reference_text(sample.reference), low=LOW, high=HIGH,
            limit=options.max_chars, rationale=options.rationale)
        metric = f"rubric.{criterion}"
        parsed = await self.ask(
            messages, lambda text: parse_score(text, LOW, HIGH), metric=metric,
            model=options.model, temperature=options.temperature,
            max_tokens=options.max_tokens,
            schema=(score_schema(LOW, HIGH, rationale=options.rationale)
                    if options.constrained else None),
            retries=options.retries,
            example="JSON " + answer_shape("score", f'"<{LOW}-{HIGH}>"', options.rationale),
            quoted=(sample.input, sample.output, reference_text(sample.reference) or "",
                    *sample.context))
        if parsed is None:
            return None
        value, rationale = parsed
        return Score(name=metric, value=float(value), rationale=rationale, judge=self.name)

    @hookimpl
    async def aieng_judge(self, sample: Sample) -> list[Score] | None:
        """One ``rubric.<criterion>`` score per criterion that got a readable answer;
        ``None`` when none did (the failures are reported)."""
        results = await gather([functools.partial(self.grade, sample, criterion, description)
                                for criterion, description in self.criteria])
        scores = [s for s in results if s is not None]
        reference = reference_text(sample.reference)
        if scores and self.options.length_penalty > 0 and reference is not None:
            mean = sum(s.value for s in scores) / len(scores)
            adjusted = length_controlled(mean, sample.output, reference,
                                         self.options.length_penalty)
            scores.append(Score(
                name="rubric.length_controlled", value=adjusted, judge=self.name,
                rationale=(f"mean {mean:.2f} of {len(scores)} criteria; answer "
                           f"{len(sample.output.split())} words vs reference "
                           f"{len(reference.split())}; penalty "
                           f"{self.options.length_penalty:g}/doubling")))
        return scores or None
