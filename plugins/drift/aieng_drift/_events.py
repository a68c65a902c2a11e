"""The event type the drift detector publishes."""

from __future__ import annotations

from typing import ClassVar

import attrs
from aieng_hookspecs.types import Event
from attrs import field
from attrs import validators as v

__all__ = ["DriftDetected"]

_opt_number = v.optional(v.instance_of((int, float)))


@attrs.frozen(kw_only=True)
class DriftDetected(Event):
    """A detector found the current window drifted from the reference window.

    :param detector: which detector (``"length"``, ``"vocabulary"``, ``"embedding"``,
        ``"score:NAME"``).
    :param method: the test (``"ks+psi"``, ``"psi"``, ``"centroid-permutation"``).
    :param statistic: the KS statistic, the PSI (vocabulary) or the centroid cosine distance.
    :param p_value: the test's p-value (``None`` for PSI alone).
    :param psi: the population stability index (``None`` for embeddings).
    :param alpha: the p-value threshold.
    :param threshold: the PSI threshold (the minimum distance for embeddings).
    :param reference_size: items in the reference window.
    :param window_size: items in the current window.
    :param reason: which threshold was crossed, in words.
    """

    name: ClassVar[str] = "drift.detected"
    component: str = field(default="", validator=v.instance_of(str))
    detector: str = field(validator=v.instance_of(str))
    method: str = field(validator=v.instance_of(str))
    statistic: float = field(validator=v.instance_of((int, float)))
    p_value: float | None = field(default=None, validator=_opt_number)
    psi: float | None = field(default=None, validator=_opt_number)
    alpha: float = field(default=0.01, validator=v.instance_of((int, float)))
    threshold: float = field(default=0.2, validator=v.instance_of((int, float)))
    reference_size: int = field(default=0, validator=[v.instance_of(int), v.ge(0)])
    window_size: int = field(default=0, validator=[v.instance_of(int), v.ge(0)])
    reason: str = field(default="", validator=v.instance_of(str))
