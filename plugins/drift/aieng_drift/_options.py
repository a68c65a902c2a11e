"""The typed options of the ``drift`` component (pipeline-file keys)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import attrs
from aieng_hookspecs import listed
from attrs import validators as v

__all__ = ["DETECTORS", "DriftOptions"]

#: The detectors a drift monitor may run.
DETECTORS: tuple[str, ...] = ("length", "vocabulary", "embedding", "score")


def _int_at_least(low: int) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{attribute.name} must be an integer, got {value!r}")
        if value < low:
            raise ValueError(f"{attribute.name} must be at least {low}, got {value}")

    return check


def _number_in(low: float, high: float) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    """Validator: a finite number in the open-low interval ``(low, high]``."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{attribute.name} must be a number, got {value!r}")
        if not math.isfinite(value) or not low < value <= high:
            raise ValueError(f"{attribute.name} must be a number in ({low:g}, {high:g}], "
                             f"got {value!r}")

    return check


def _detectors(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    unknown = [name for name in value if name not in DETECTORS]
    if unknown:
        raise ValueError(f"unknown detector {unknown[0]!r}; choose from {', '.join(DETECTORS)}")
    if len(set(value)) != len(value):
        raise ValueError("detectors must not repeat")


def _file_path(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{attribute.name} must be a file path, got {value!r}")


@attrs.frozen(kw_only=True)
class DriftOptions:
    """Options of the ``drift`` component and of :class:`DriftMonitor`.

    :param detectors: which detectors run: ``length`` (word count of each request: KS and
        PSI), ``vocabulary`` (token distribution: PSI), ``embedding`` (centroid cosine
        distance, permutation test; embeds every request through the pipeline),
        ``score`` (each judge metric: KS and PSI).
    :param reference_size: N, the first N items of each detector freeze its reference
        window (unless :meth:`DriftMonitor.set_reference` set it).
    :param window_size: M, the size of the sliding current window.
    :param check_every: K, a detector checks every K new items once its window is full.
    :param alpha: a p-value below this fires.
    :param psi_threshold: a PSI at or above this fires (for embeddings: ``min_distance``).
    :param fire_on: ``any`` (p-value or PSI), ``both``, ``ks`` or ``psi``, for the
        detectors with both.
    :param bins: quantile bins of the numeric PSI.
    :param epsilon: the smallest bin share in PSI (empty bins count as this).
    :param vocabulary_size: the reference's most frequent tokens kept as PSI categories
        (the others share one bucket).
    :param permutations: random splits of the embedding permutation test.
    :param min_distance: the embedding detector fires only at or above this centroid
        cosine distance as well (0: the p-value alone decides).
    :param embedding_model: the model asked for (``None``: the embedder's default).
    :param embed_batch: requests embedded per ``context.embed`` call.
    :param seed: the permutation test's random seed.
    :param reference_path: a JSON file keeping the frozen reference windows across
        restarts: written (atomically) whenever a window freezes or
        :meth:`DriftMonitor.set_reference` sets one, read when the component opens
        (``None``: references live in memory only; the first N items after a restart
        become the new reference). One file per component.
    """

    detectors: tuple[str, ...] = attrs.field(default=("length", "vocabulary", "score"),
                                             converter=listed, validator=_detectors)
    reference_size: int = attrs.field(default=200, validator=_int_at_least(2))
    window_size: int = attrs.field(default=200, validator=_int_at_least(2))
    check_every: int = attrs.field(default=50, validator=_int_at_least(1))
    alpha: float = attrs.field(default=0.01, validator=_number_in(0.0, 1.0))
    psi_threshold: float = attrs.field(default=0.2, validator=_number_in(0.0, math.inf))
    fire_on: Literal["any", "both", "ks", "psi"] = attrs.field(
        default="any", validator=v.in_(("any", "both", "ks", "psi")))
    bins: int = attrs.field(default=10, validator=_int_at_least(2))
    epsilon: float = attrs.field(default=1e-4, validator=_number_in(0.0, 1.0))
    vocabulary_size: int = attrs.field(default=500, validator=_int_at_least(1))
    permutations: int = attrs.field(default=500, validator=_int_at_least(1))
    min_distance: float = attrs.field(default=0.0, validator=v.and_(
        v.instance_of((int, float)), v.ge(0.0), v.le(2.0)))
    embedding_model: str | None = attrs.field(
        default=None, validator=v.optional(v.and_(v.instance_of(str), v.min_len(1))))
    embed_batch: int = attrs.field(default=16, validator=_int_at_least(1))
    seed: int = attrs.field(default=0, validator=_int_at_least(0))
    reference_path: str | None = attrs.field(default=None, validator=v.optional(_file_path))
