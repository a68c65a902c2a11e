"""``factual``: is every claim of the answer supported by the context?"""

from __future__ import annotations

import functools
import re

import anyio
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Sample, Score

from ._asking import AskingJudge, Generate
from ._concurrent import gather
from ._nli import NLIModel
from ._options import FactualOptions
from ._parse import parse_support
from ._prompts import SUPPORT_SCHEMA, support_messages

__all__ = ["FactualJudge", "split_claims"]

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")
_WORD = re.compile(r"\w", re.UNICODE)
_QUOTE = 80


def split_claims(text: str) -> list[str]:
    """The answer's claims: its sentences (split after ``.``, ``!`` or ``?`` before an
    upper-case letter or digit) and lines, bullets stripped, empty pieces dropped.

    A sentence is the unit: "Paris is the capital and has 2 million people" is one claim
    (both halves must hold for it to be supported). Abbreviations before a capital
    ("Dr. Smith") split a sentence in two.
    """
    claims: list[str] = []
    for line in text.splitlines():
        line = _BULLET.sub("", line).strip()
        for piece in _SENTENCE_END.split(line):
            piece = piece.strip()
            if _WORD.search(piece):
                claims.append(piece)
    return claims


def _quote(claim: str) -> str:
    return repr(claim if len(claim) <= _QUOTE else claim[:_QUOTE] + "…")


class FactualJudge(AskingJudge):
    """Scores how much of an answer its context supports.

    The answer is split into claims (:func:`split_claims`); each is checked against the
    sample's context, either by asking the pipeline's backend (``{"supported": "yes" |
    "no"}`` per claim, the schema sent for constrained decoding) or, with
    ``nli_model_path``, by a local NLI model (a claim is supported when its entailment
    probability reaches ``threshold``).

    Scores: ``factual.consistency``, the fraction of checked claims that are supported
    (0–1), its rationale listing the unsupported ones; on the NLI path also
    ``factual.entailment``, the mean entailment probability. A sample without context or an
    answer without claims gets ``None``; a claim whose answer cannot be read is left out
    (and reported), and when no claim could be checked the judge gives no score.

    :param options: the typed options (defaults when ``None``).
    :param generate: generate with this function instead of the pipeline (LLM path).
    :param name: the name failures are reported under (default: the component's name).
    """

    def __init__(self, options: FactualOptions | None = None, *,
                 generate: Generate | None = None, name: str = "") -> None:
        super().__init__(generate=generate, name=name)
        self.options = options if options is not None else FactualOptions()
        self.nli: NLIModel | None = None
        if self.options.nli_model_path is not None:
            self.nli = NLIModel(self.options.nli_model_path, device=self.options.device,
                                batch_size=self.options.batch_size,
                                max_length=self.options.max_length)
        self._lock = anyio.Lock()

    async def _support(self, claim: str, context: tuple[str, ...]) -> bool | None:
        options = self.options
        parsed = await self.ask(
            support_messages(claim=claim, context=context, limit=options.max_chars),
            parse_support, metric="factual.consistency", model=options.model,
            temperature=options.temperature, max_tokens=options.max_tokens,
            schema=SUPPORT_SCHEMA if options.constrained else None, retries=options.retries,
            example='JSON {"supported": "yes" | "no"}', quoted=(claim, *context))
        return None if parsed is None else parsed[0]

    async def check(self, claims: list[str], context: tuple[str, ...]
                    ) -> tuple[list[bool | None], list[float] | None]:
        """Per claim: supported, unsupported or ``None`` (unreadable); and the entailment
        probabilities on the NLI path."""
        if self.nli is not None:
            nli = self.nli
            premise = "\n".join(context)
            async with self._lock:  # one forward pass at a time; the model loads once
                probabilities = await anyio.to_thread.run_sync(nli.entailment, premise, claims)
            supported: list[bool | None] = [
                p >= self.options.threshold for p in probabilities]
            return supported, probabilities
        verdicts = await gather([functools.partial(self._support, claim, context)
                                 for claim in claims])
        return verdicts, None

    @hookimpl
    async def aieng_judge(self, sample: Sample) -> list[Score] | None:
        """``factual.consistency`` (and ``factual.entailment`` with NLI); ``None`` without
        context, without claims, or when no claim could be checked."""
        if not sample.context:
            return None
        every = split_claims(sample.output)
        claims = every[:self.options.max_claims]
        if not claims:
            return None
        verdicts, probabilities = await self.check(claims, sample.context)
        checked = [(c, ok) for c, ok in zip(claims, verdicts, strict=True) if ok is not None]
        if not checked:
            return None
        unsupported = [c for c, ok in checked if not ok]
        value = (len(checked) - len(unsupported)) / len(checked)
        notes = [f"{len(checked) - len(unsupported)}/{len(checked)} claims supported"]
        if unsupported:
            notes.append("unsupported: " + "; ".join(_quote(c) for c in unsupported))
        if len(checked) < len(claims):
            notes.append(f"{len(claims) - len(checked)} claims unreadable (judge.failed)")
        if len(every) > len(claims):
            notes.append(f"{len(every) - len(claims)} claims over max_claims not checked")
        scores = [Score(name="factual.consistency", value=value, rationale="; ".join(notes),
                        judge=self.name)]
        if probabilities is not None:
            listing = ", ".join(f"{p:.2f}" for p in probabilities)
            scores.append(Score(name="factual.entailment",
                                value=sum(probabilities) / len(probabilities),
                                rationale=f"entailment probability per claim: {listing}",
                                judge=self.name))
        return scores
