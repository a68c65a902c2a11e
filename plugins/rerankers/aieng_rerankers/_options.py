"""The typed options of the ``mmr``, ``embedding``, ``cross-encoder`` and ``llm-listwise``
components (pipeline-file keys)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Literal

import attrs
from attrs import validators as v

from ._embed import DEFAULT_CACHE_SIZE

__all__ = [
    "CrossEncoderOptions",
    "EmbeddingOptions",
    "ListwiseOptions",
    "MMROptions",
]

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps|xpu(:\d+)?)$")
_opt_str = v.optional(v.and_(v.instance_of(str), v.min_len(1)))


def _int_at_least(low: int) -> Callable[[object, attrs.Attribute[int], int], None]:
    """Validator: an ``int`` (not a ``bool``) of at least ``low``."""

    def check(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{attribute.name} must be an integer, got {value!r}")
        if value < low:
            raise ValueError(f"{attribute.name} must be at least {low}, got {value}")

    return check


def _opt_int_at_least(low: int) -> Callable[[object, attrs.Attribute[int | None], int | None],
                                            None]:
    """Validator: ``None`` or an ``int`` of at least ``low``."""
    check = _int_at_least(low)

    def optional(instance: object, attribute: attrs.Attribute[int | None],
                 value: int | None) -> None:
        if value is not None:
            check(instance, attribute, value)  # type: ignore[arg-type]

    return optional


def _number_in(low: float, high: float) -> Callable[[object, attrs.Attribute[float], float],
                                                    None]:
    """Validator: a finite number (not a ``bool``) from ``low`` to ``high``."""

    def check(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{attribute.name} must be a number, got {value!r}")
        if not math.isfinite(value) or not low <= value <= high:
            raise ValueError(f"{attribute.name} must be a number from {low:g} to {high:g}, "
                             f"got {value!r}")

    return check


def _path(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{attribute.name} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(
            f"{attribute.name} must name a local cross-encoder folder (a Hugging Face "
            "sequence-classification model: config.json, weights, tokenizer); no "
            "cross-encoder ships on PyPI, so download one (for example "
            "cross-encoder/ms-marco-MiniLM-L-6-v2) where there is network and copy it here")


def _device(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not _DEVICE.match(value):
        raise ValueError(f"{attribute.name} must be cpu, cuda, cuda:N, mps, xpu or xpu:N, "
                         f"got {value!r}")


@attrs.frozen(kw_only=True)
class MMROptions:
    """Options of the ``mmr`` reranker.

    :param lambda_: the weight of relevance against diversity, from 0 to 1: ``1`` ranks by
        relevance alone, ``0`` by novelty alone (MMR's λ).
    :param k: the most hits this reranker keeps, below the ``rerank`` stage's ``k``;
        ``None``: the stage's ``k``.
    :param relevance: ``"cosine"``: cosine between the query's and the hit's embeddings;
        ``"score"``: the incoming score, min-max normalized to 0..1 over the hits (the
        query is then not embedded).
    :param model: the embedding model asked for (``aieng_embed``'s ``model``); ``None``:
        the embedding backend's default.
    :param cache_size: the most unit vectors kept between reranks (least recently used
        dropped first), so a passage that comes back is not embedded again; ``0``: no cache.
    """

    lambda_: float = attrs.field(default=0.5, validator=_number_in(0.0, 1.0))
    k: int | None = attrs.field(default=None, validator=_opt_int_at_least(1))
    relevance: Literal["cosine", "score"] = attrs.field(
        default="cosine", validator=v.in_(("cosine", "score")))
    model: str | None = attrs.field(default=None, validator=_opt_str)
    cache_size: int = attrs.field(default=DEFAULT_CACHE_SIZE, validator=_int_at_least(0))


@attrs.frozen(kw_only=True)
class EmbeddingOptions:
    """Options of the ``embedding`` reranker.

    :param k: the most hits this reranker keeps, below the ``rerank`` stage's ``k``;
        ``None``: the stage's ``k``.
    :param model: the embedding model asked for (``aieng_embed``'s ``model``); ``None``:
        the embedding backend's default.
    :param cache_size: the most unit vectors kept between reranks (least recently used
        dropped first), so a passage that comes back is not embedded again; ``0``: no cache.
    """

    k: int | None = attrs.field(default=None, validator=_opt_int_at_least(1))
    model: str | None = attrs.field(default=None, validator=_opt_str)
    cache_size: int = attrs.field(default=DEFAULT_CACHE_SIZE, validator=_int_at_least(0))


@attrs.frozen(kw_only=True)
class CrossEncoderOptions:
    """Options of the ``cross-encoder`` reranker.

    :param path: a local Hugging Face sequence-classification folder (``config.json``,
        weights, tokenizer) with one output (a relevance logit) or two (not relevant,
        relevant). Required: no cross-encoder weights ship on PyPI.
    :param k: the most hits this reranker keeps, below the ``rerank`` stage's ``k``;
        ``None``: the stage's ``k``.
    :param batch_size: (query, passage) pairs per forward pass.
    :param max_length: tokens per pair (query and passage together), at most the model's
        own limit; the longer of the two is truncated first.
    :param device: ``cpu``, ``cuda``, ``cuda:N``, ``mps``, ``xpu`` or ``xpu:N``.
    :param activation: ``"none"``: the score is the relevance logit; ``"sigmoid"``: the
        logit through a sigmoid, a probability in 0..1 (the order is the same).
    """

    path: str = attrs.field(validator=_path)
    k: int | None = attrs.field(default=None, validator=_opt_int_at_least(1))
    batch_size: int = attrs.field(default=16, validator=_int_at_least(1))
    max_length: int = attrs.field(default=512, validator=_int_at_least(8))
    device: str = attrs.field(default="cpu", validator=_device)
    activation: Literal["none", "sigmoid"] = attrs.field(
        default="none", validator=v.in_(("none", "sigmoid")))


@attrs.frozen(kw_only=True)
class ListwiseOptions:
    """Options of the ``llm-listwise`` reranker.

    :param window: the most passages shown to the model in one request.
    :param overlap: passages two consecutive windows share. The window slides from the
        bottom of the list to the top by ``window - overlap``, carrying the best
        ``overlap`` passages of each window into the next, so one pass brings the best
        ``overlap`` passages of the whole list to the top (keep ``k`` at most ``overlap``
        for that guarantee).
    :param k: the most hits this reranker keeps, below the ``rerank`` stage's ``k``;
        ``None``: the stage's ``k``.
    :param model: the model asked for (``Request.model``); ``None``: the backend's default.
    :param max_tokens: the most tokens of each answer (a ranking of ``window`` ids).
    :param max_passage_chars: each passage is cut to this many characters in the prompt.
    :param temperature: the sampling temperature of the requests (0: greedy).
    """

    window: int = attrs.field(default=20, validator=_int_at_least(2))
    overlap: int = attrs.field(default=10, validator=_int_at_least(0))
    k: int | None = attrs.field(default=None, validator=_opt_int_at_least(1))
    model: str | None = attrs.field(default=None, validator=_opt_str)
    max_tokens: int = attrs.field(default=256, validator=_int_at_least(1))
    max_passage_chars: int = attrs.field(default=800, validator=_int_at_least(1))
    temperature: float = attrs.field(default=0.0, validator=_number_in(0.0, 2.0))

    def __attrs_post_init__(self) -> None:
        if self.overlap >= self.window:
            raise ValueError(f"overlap must be smaller than window ({self.window}), "
                             f"got {self.overlap}")
