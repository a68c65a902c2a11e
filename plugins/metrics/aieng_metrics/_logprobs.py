"""Perplexity and bits-per-byte from a backend's per-token log-probabilities."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from aieng_hookspecs.types import Completion, TokenLogprob

__all__ = ["bits_per_byte", "logprobs_from", "mean_nll", "perplexity"]

_MAX_EXP = math.log(sys.float_info.max)


def logprobs_from(value: object) -> list[TokenLogprob]:
    """Read log-probabilities from what a sample's metadata or a completion holds.

    Accepts a :class:`Completion` (its ``logprobs``), a sequence of
    :class:`TokenLogprob`, of ``{"token": str, "logprob": float}`` mappings (the JSON form)
    or of plain floats (tokens unknown: empty strings).

    :raises ValueError: for anything else, a positive or non-finite log-probability, or a
        completion without log-probabilities; the message names the bad item.
    """
    if isinstance(value, Completion):
        if value.logprobs is None:
            raise ValueError("the completion carries no log-probabilities (ask the backend "
                             "for them: not every backend reports them)")
        return list(value.logprobs)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(  # noqa: TRY004 - malformed sample metadata is a bad value
            f"log-probabilities must be a list, got {type(value).__name__}")
    out: list[TokenLogprob] = []
    for i, item in enumerate(value):
        try:
            if isinstance(item, TokenLogprob):
                out.append(item)
            elif isinstance(item, Mapping):
                out.append(TokenLogprob(token=_token(item), logprob=float(item["logprob"])))
            elif isinstance(item, (int, float)) and not isinstance(item, bool):
                out.append(TokenLogprob(token="", logprob=float(item)))
            else:
                raise TypeError(f"expected a number or a {{token, logprob}} object, got "
                                f"{type(item).__name__}")
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"log-probability #{i} is invalid: {error}") from None
    return out


def _token(item: Mapping[str, Any]) -> str:
    token = item.get("token", "")
    if not isinstance(token, str):
        raise TypeError(f"token must be a string, got {type(token).__name__}")
    return token


def _values(logprobs: Sequence[TokenLogprob] | Sequence[float]) -> list[float]:
    values = [lp.logprob if isinstance(lp, TokenLogprob) else float(lp) for lp in logprobs]
    for i, value in enumerate(values):
        if not math.isfinite(value) or value > 0:
            raise ValueError(f"log-probability #{i} is {value}: must be finite and <= 0")
    return values


def perplexity(logprobs: Sequence[TokenLogprob] | Sequence[float]) -> float:
    """exp of the mean negative log-likelihood per token (natural log).

    :param logprobs: the tokens' log-probabilities (natural log, as backends report them).
    :returns: a value >= 1 (1: every token had probability 1); ``math.inf`` when the mean
        negative log-likelihood exceeds ~709 nats, past a float's range.
    :raises ValueError: for no token, or an invalid log-probability.
    """
    nll = mean_nll(logprobs)
    return math.exp(nll) if nll < _MAX_EXP else math.inf


def mean_nll(logprobs: Sequence[TokenLogprob] | Sequence[float]) -> float:
    """The mean negative log-likelihood per token in nats (the log of the perplexity).

    :raises ValueError: for no token, or an invalid log-probability.
    """
    values = _values(logprobs)
    if not values:
        raise ValueError("perplexity needs at least one token log-probability")
    # Each value divided first: a sum of huge log-probabilities would overflow fsum.
    try:
        return -math.fsum(value / len(values) for value in values)
    except OverflowError:  # the divided values' partial sums past a float's range still
        # (three of -1.8e308 / 3 each rounded up): exactly, as fractions; the mean of
        # finite values is within their range.
        return -float(sum((Fraction(value) for value in values), Fraction(0)) / len(values))


def _utf8_size(text: str) -> int:
    """The UTF-8 bytes of ``text``; surrogate pairs joined, lone halves as U+FFFD."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:  # surrogates: a pair is one character, a lone half U+FFFD
        joined = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        return len(joined.encode("utf-8"))


def bits_per_byte(logprobs: Sequence[TokenLogprob] | Sequence[float],
                  text: str | None = None) -> float:
    """The negative log-likelihood in bits per UTF-8 byte of the text the tokens spell:
    ``-sum(logprob) / (ln 2 * bytes)``, comparable across tokenizers.

    Text holding surrogates (as JSON carries a character split across tokens): a high
    and a low half side by side count as the character they spell (😀's 4 bytes); a half
    alone as the replacement character U+FFFD's 3 bytes.

    :param logprobs: the tokens' log-probabilities.
    :param text: the text they cover; by default the concatenation of the tokens.
    :raises ValueError: when the text is empty (no byte to divide by) or a value is bad.
    """
    values = _values(logprobs)
    if text is None:
        text = "".join(lp.token for lp in logprobs if isinstance(lp, TokenLogprob))
    size = _utf8_size(text)
    if size == 0:
        raise ValueError("bits per byte needs the text the tokens cover (no token text and "
                         "no text given)")
    try:  # each value divided first: a sum of huge log-probabilities would overflow fsum
        return -math.fsum(value / size for value in values) / math.log(2)
    except OverflowError:  # more bits than a float holds
        return math.inf
