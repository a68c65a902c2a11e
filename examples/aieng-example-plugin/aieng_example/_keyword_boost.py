"""``keyword-boost``: a reranker that favours hits containing the query's words and phrase."""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Sequence

import attrs
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Hit, Query

__all__ = ["KeywordBoostOptions", "KeywordBoostReranker"]

_WORD = re.compile(r"\w+", re.UNICODE)

# Words too common to say anything about a passage: boosting them would boost everything.
_STOPWORDS = frozenset(
    "a an and are as at be but by can do does for from has have how i if in into is it its "
    "of on or so such that the their then there these they this to was were what when where "
    "which who why will with you your".split()
)


def _words(text: str) -> list[str]:
    """Lower-cased word tokens, stopwords included (phrases need them)."""
    return _WORD.findall(text.lower())


def _finite_non_negative(
    instance: object, attribute: attrs.Attribute[float], value: float
) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value!r}")


def _clamp(score: float) -> float:
    # A huge retriever score plus a bonus can overflow to inf; a Hit's score must be finite.
    return max(-sys.float_info.max, min(sys.float_info.max, score))


@attrs.frozen
class KeywordBoostOptions:
    """Options of the ``keyword-boost`` reranker.

    :param boost: added to a hit's score for each distinct query word (stopwords aside)
        found in the hit's title or text.
    :param phrase_bonus: added once more when the hit contains the whole query, word for
        word, as a phrase (queries of two words or more).
    """

    boost: float = attrs.field(default=1.0, validator=_finite_non_negative)
    phrase_bonus: float = attrs.field(default=2.0, validator=_finite_non_negative)


class KeywordBoostReranker:
    """Boosts hits sharing words (and the exact phrase) with the query, then re-sorts.

    The new score is the retriever's score plus ``boost`` per distinct query word found
    plus ``phrase_bonus`` for the exact phrase; ties keep the incoming order, so the
    reranker is stable and deterministic. It keeps at most ``k`` hits, ranked 1..n.

    :param options: the typed options (defaults when ``None``).
    """

    def __init__(self, options: KeywordBoostOptions | None = None) -> None:
        self.options = options if options is not None else KeywordBoostOptions()

    def bonus(self, query: Query, hit: Hit) -> float:
        """What this reranker adds to ``hit``'s score for ``query``.

        :param query: the query.
        :param hit: a hit.
        :returns: ``boost`` times the distinct query words found, plus ``phrase_bonus``
            when the whole query occurs as a phrase.
        """
        query_words = _words(query.text)
        if not query_words:
            return 0.0
        hit_words = _words(f"{hit.document.title}\n{hit.document.text}")
        wanted = {w for w in query_words if w not in _STOPWORDS}
        score = self.options.boost * len(wanted.intersection(hit_words))
        if len(query_words) > 1 and self._contains_phrase(hit_words, query_words):
            score += self.options.phrase_bonus
        return score

    @staticmethod
    def _contains_phrase(words: Sequence[str], phrase: Sequence[str]) -> bool:
        # Compare whole words, so "rank fusion" does not match inside "frank fusions".
        return f" {' '.join(phrase)} " in f" {' '.join(words)} "

    @hookimpl
    def aieng_rerank(self, query: Query, hits: Sequence[Hit], k: int) -> list[Hit]:
        """Re-score, re-sort (stable), cut to ``k`` and renumber ranks 1..n."""
        if k < 1 or not hits:
            return []
        scored = [(_clamp(hit.score + self.bonus(query, hit)), order, hit)
                  for order, hit in enumerate(hits)]
        scored.sort(key=lambda item: (-item[0], item[1]))
        return [attrs.evolve(hit, score=score, rank=rank)
                for rank, (score, _, hit) in enumerate(scored[:k], start=1)]
