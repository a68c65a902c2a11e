"""The typed options of the chunkers."""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs

__all__ = ["MarkdownOptions", "SemanticOptions", "SentencesOptions", "TokensOptions"]


def _int_at_least(low: int) -> Callable[[object, attrs.Attribute[int], int], None]:
    """Validator: an ``int`` (not a ``bool``) of at least ``low``."""

    def check(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{attribute.name} must be an integer, got {value!r}")
        if value < low:
            raise ValueError(f"{attribute.name} must be at least {low}, got {value}")

    return check


def _overlap_below_size(instance: TokensOptions, attribute: attrs.Attribute[int],
                        value: int) -> None:
    if value >= instance.size:
        raise ValueError(f"overlap ({value}) must be smaller than size ({instance.size})")


def _percentile(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name} must be a number, got {value!r}")
    if not (math.isfinite(value) and 0.0 <= value <= 100.0):
        raise ValueError(f"{attribute.name} must lie in [0, 100], got {value!r}")


@attrs.frozen
class TokensOptions:
    """Options of the ``tokens`` chunker.

    :param size: the most tokens in a chunk.
    :param overlap: tokens each chunk repeats from the end of the previous one; smaller
        than ``size``.
    """

    size: int = attrs.field(default=256, validator=_int_at_least(1))
    overlap: int = attrs.field(default=32, validator=[_int_at_least(0), _overlap_below_size])


@attrs.frozen
class SentencesOptions:
    """Options of the ``sentences`` chunker.

    :param size: the most characters in a chunk; a longer sentence is cut at whitespace.
    :param overlap: whole sentences each chunk repeats from the end of the previous one
        (fewer when they would not fit beside a new sentence).
    """

    size: int = attrs.field(default=1000, validator=_int_at_least(1))
    overlap: int = attrs.field(default=0, validator=_int_at_least(0))


@attrs.frozen
class MarkdownOptions:
    """Options of the ``markdown`` chunker.

    :param size: the most characters in a chunk; sections are never merged, a longer
        section is cut between paragraphs, then sentences, then at whitespace.
    """

    size: int = attrs.field(default=1000, validator=_int_at_least(1))


@attrs.frozen
class SemanticOptions:
    """Options of the ``semantic`` chunker.

    :param size: the most characters in a chunk.
    :param percentile: a chunk ends between two adjacent sentences whose cosine similarity
        is below this percentile of all adjacent similarities of the document (5: the
        5% sharpest topic shifts).
    :param batch_size: the most sentences per ``context.embed`` call.
    :param model: the embedding model asked for; empty: the backend's default.
    """

    size: int = attrs.field(default=1000, validator=_int_at_least(1))
    percentile: float = attrs.field(default=5.0, validator=_percentile)
    batch_size: int = attrs.field(default=64, validator=_int_at_least(1))
    model: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
