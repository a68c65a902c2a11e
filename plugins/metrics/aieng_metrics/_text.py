"""Answer normalization, exact match and SQuAD-style token F1."""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable

import attrs

__all__ = ["Normalization", "best_of", "exact_match", "normalize_answer", "token_f1"]

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


@attrs.frozen
class Normalization:
    """How answers are normalized before they are compared.

    The defaults are SQuAD's ``normalize_answer`` (lower case, ASCII punctuation removed,
    the English articles a / an / the dropped, whitespace collapsed); ``nfkc`` adds Unicode
    NFKC normalization first (full-width letters, ligatures and compatibility forms fold to
    their plain forms), off by default to stay SQuAD-compatible.

    :param lowercase: compare case-insensitively (``str.lower``).
    :param strip_punctuation: remove the ASCII punctuation of ``string.punctuation``.
    :param drop_articles: remove the words ``a``, ``an`` and ``the``.
    :param collapse_whitespace: strip, and collapse runs of whitespace to one space.
    :param nfkc: apply Unicode NFKC normalization before everything else.
    """

    lowercase: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    strip_punctuation: bool = attrs.field(default=True,
                                          validator=attrs.validators.instance_of(bool))
    drop_articles: bool = attrs.field(default=True,
                                      validator=attrs.validators.instance_of(bool))
    collapse_whitespace: bool = attrs.field(default=True,
                                            validator=attrs.validators.instance_of(bool))
    nfkc: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))


_SQUAD = Normalization()


def normalize_answer(text: str, normalization: Normalization = _SQUAD) -> str:
    """Normalize ``text`` as ``normalization`` says (SQuAD's order: NFKC, lower case,
    punctuation, articles, whitespace).

    :param text: the answer.
    :param normalization: the steps to apply; SQuAD's by default.
    :returns: the normalized text.
    """
    if not isinstance(text, str):
        raise TypeError(f"expected the answer as str, got {type(text).__name__}")
    if normalization.nfkc:
        text = unicodedata.normalize("NFKC", text)
    if normalization.lowercase:
        text = text.lower()
    if normalization.strip_punctuation:
        text = text.translate(_PUNCTUATION)
    if normalization.drop_articles:
        text = _ARTICLES.sub(" ", text)
    if normalization.collapse_whitespace:
        text = " ".join(text.split())
    return text


def exact_match(prediction: str, reference: str,
                normalization: Normalization = _SQUAD) -> float:
    """1.0 when the normalized prediction equals the normalized reference, else 0.0.

    :param prediction: the answer under test.
    :param reference: the expected answer.
    :param normalization: how both are normalized (SQuAD's by default).
    """
    return float(normalize_answer(prediction, normalization)
                 == normalize_answer(reference, normalization))


def token_f1(prediction: str, reference: str, normalization: Normalization = _SQUAD) -> float:
    """SQuAD v2's token F1: the harmonic mean of the precision and recall of the
    normalized answers' whitespace tokens (a bag: repeated tokens count as often as they
    occur in both). When either answer normalizes to no token, the F1 is 1.0 if both do
    and 0.0 otherwise (SQuAD v2's rule for unanswerable questions).

    :param prediction: the answer under test.
    :param reference: the expected answer.
    :param normalization: how both are normalized (SQuAD's by default).
    :returns: a value in [0, 1].
    """
    predicted = normalize_answer(prediction, normalization).split()
    expected = normalize_answer(reference, normalization).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = Counter(predicted) & Counter(expected)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(predicted)
    recall = same / len(expected)
    return (2 * precision * recall) / (precision + recall)


def best_of(values: Iterable[float]) -> float:
    """The best (largest) of a metric's values over several references.

    :raises ValueError: when there is no value (no reference).
    """
    values = list(values)
    if not values:
        raise ValueError("no reference to score against")
    return max(values)
