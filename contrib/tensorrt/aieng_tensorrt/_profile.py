"""The engine's shape profile (min / opt / max of batch size and sequence length)."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["ShapeProfile", "batches"]


def _positive_int(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, got {value}")


@attrs.frozen
class ShapeProfile:
    """One TensorRT optimization profile of a ``(batch, sequence)`` encoder input.

    TensorRT builds kernels for shapes between ``min`` and ``max`` and tunes them for
    ``opt``; a request outside the range cannot run, so the embedder pads short batches and
    sequences up to ``min`` and splits or truncates at ``max``.

    :raises ValueError: unless ``min <= opt <= max`` for both dimensions.
    """

    min_batch: int = attrs.field(default=1, validator=_positive_int)
    opt_batch: int = attrs.field(default=16, validator=_positive_int)
    max_batch: int = attrs.field(default=64, validator=_positive_int)
    min_seq: int = attrs.field(default=1, validator=_positive_int)
    opt_seq: int = attrs.field(default=128, validator=_positive_int)
    max_seq: int = attrs.field(default=256, validator=_positive_int)

    def __attrs_post_init__(self) -> None:
        for dim, low, opt, high in (("batch", self.min_batch, self.opt_batch, self.max_batch),
                                    ("seq", self.min_seq, self.opt_seq, self.max_seq)):
            if not low <= opt <= high:
                raise ValueError(f"the shape profile needs min_{dim} <= opt_{dim} <= "
                                 f"max_{dim}, got {low} <= {opt} <= {high}")

    @classmethod
    def from_lists(cls, batch: Any, seq: Any) -> ShapeProfile:
        """The profile of ``[min, opt, max]`` lists (the pipeline file's form).

        :raises ValueError: when a list does not hold three integers.
        """
        for name, value in (("batch", batch), ("seq", seq)):
            if not isinstance(value, (list, tuple)) or len(value) != 3:
                raise ValueError(f"{name} must be [min, opt, max], got {value!r}")
        return cls(*batch, *seq)

    def shapes(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """The ``(min, opt, max)`` shapes of a ``(batch, seq)`` input, as
        ``IOptimizationProfile.set_shape`` takes them."""
        return ((self.min_batch, self.min_seq), (self.opt_batch, self.opt_seq),
                (self.max_batch, self.max_seq))

    def as_key(self) -> tuple[int, ...]:
        """The six numbers, for the engine-cache key."""
        return (self.min_batch, self.opt_batch, self.max_batch,
                self.min_seq, self.opt_seq, self.max_seq)

    def run_shape(self, batch: int, seq: int) -> tuple[int, int]:
        """The shape a batch of ``batch`` texts of at most ``seq`` tokens runs at: padded
        up to the minimums.

        :raises ValueError: when ``batch`` or ``seq`` exceeds the profile's maximum.
        """
        if batch > self.max_batch or seq > self.max_seq:
            raise ValueError(f"shape ({batch}, {seq}) exceeds the engine profile's maximum "
                             f"({self.max_batch}, {self.max_seq})")
        if batch < 1 or seq < 1:
            raise ValueError(f"shape ({batch}, {seq}) is empty")
        return max(batch, self.min_batch), max(seq, self.min_seq)


def batches(count: int, profile: ShapeProfile) -> list[range]:
    """Split ``count`` texts into runs of at most ``max_batch``."""
    step = profile.max_batch
    return [range(start, min(start + step, count)) for start in range(0, count, step)]
