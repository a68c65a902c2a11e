"""The typed options of the ``multi-query`` and ``hyde`` components (pipeline-file keys)."""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs
from attrs import validators as v

__all__ = ["HyDEOptions", "MultiQueryOptions"]

_opt_str = v.optional(v.and_(v.instance_of(str), v.min_len(1)))


def _int_in(low: int, high: int) -> Callable[[object, attrs.Attribute[int], int], None]:
    """Validator: an ``int`` (not a ``bool``) from ``low`` to ``high``."""

    def check(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{attribute.name} must be an integer, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"{attribute.name} must be from {low} to {high}, got {value}")

    return check


def _temperature(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name} must be a number, got {value!r}")
    if not math.isfinite(value) or not 0.0 <= value <= 2.0:
        raise ValueError(f"{attribute.name} must be a number from 0 to 2, got {value!r}")


@attrs.frozen(kw_only=True)
class MultiQueryOptions:
    """Options of the ``multi-query`` expander.

    :param n: how many rewrites to ask for (each is retrieved by every retriever, so the
        retrieve stage does ``n + 1`` searches per retriever).
    :param model: the model asked for (``Request.model``); ``None``: the backend's default.
    :param max_tokens: the most tokens of the answer.
    :param temperature: the sampling temperature (0: greedy).
    :param max_chars: a rewrite longer than this many characters is cut.
    """

    n: int = attrs.field(default=3, validator=_int_in(1, 10))
    model: str | None = attrs.field(default=None, validator=_opt_str)
    max_tokens: int = attrs.field(default=200, validator=_int_in(1, 100_000))
    temperature: float = attrs.field(default=0.0, validator=_temperature)
    max_chars: int = attrs.field(default=300, validator=_int_in(1, 100_000))


@attrs.frozen(kw_only=True)
class HyDEOptions:
    """Options of the ``hyde`` expander.

    :param n: how many hypothetical documents to write, one request each, concurrently;
        more than one is only useful with ``temperature > 0`` (request ``i`` gets seed
        ``i``), since identical documents count once.
    :param model: the model asked for (``Request.model``); ``None``: the backend's default.
    :param max_tokens: the most tokens of each hypothetical document.
    :param temperature: the sampling temperature (0: greedy).
    """

    n: int = attrs.field(default=1, validator=_int_in(1, 8))
    model: str | None = attrs.field(default=None, validator=_opt_str)
    max_tokens: int = attrs.field(default=200, validator=_int_in(1, 100_000))
    temperature: float = attrs.field(default=0.0, validator=_temperature)
