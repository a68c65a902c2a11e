"""Drift and deadlines: a permutation test running in a worker thread ends within one
block of splits when the task waiting for it is cancelled (a host's ``fail_after``), and
gives the same p-value as before when it is not."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import numpy as np
import pytest
from aieng_drift import _stats, centroid_permutation_test

pytestmark = pytest.mark.anyio


def _sets() -> tuple[Any, Any]:
    rng = np.random.default_rng(7)
    return rng.normal(size=(40, 8)), rng.normal(0.5, 1.0, size=(40, 8))


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_cancelled_permutation_test_stops_within_one_block(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled from its first split (synchronised, not timed), a test of 100,000 splits
    in a worker thread computes at most one block more, not all of them."""
    reference, current = _sets()
    real = _stats._cosine_distance
    calls: list[int] = []
    with anyio.CancelScope() as scope:
        def counting(u: Any, v: Any) -> float:
            calls.append(1)
            if len(calls) == 2:  # the first split (the first call is the observed one)
                anyio.from_thread.run_sync(scope.cancel)
            return real(u, v)

        monkeypatch.setattr(_stats, "_cosine_distance", counting)
        await anyio.to_thread.run_sync(
            lambda: centroid_permutation_test(reference, current, permutations=100_000))
    assert scope.cancelled_caught
    assert 2 <= len(calls) <= 1 + _stats.PERMUTATION_BLOCK


async def test_the_p_value_is_the_same_in_a_thread_and_outside() -> None:
    """The looks for a cancellation change nothing: in a worker thread and in a direct
    call the same seed gives the same distance and p-value."""
    reference, current = _sets()
    direct = centroid_permutation_test(reference, current, permutations=200, seed=3)
    threaded = await anyio.to_thread.run_sync(
        lambda: centroid_permutation_test(reference, current, permutations=200, seed=3))
    assert direct == threaded
