"""The kit's steady-state measure: a call that keeps something each time is found, with the
line that allocated it; a bounded cache filled by the warm-up, a call that keeps nothing and
one that frees what the warm-up kept are not; descriptors and threads held are named."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import anyio
import pytest

from aieng_core.testing.steady import ameasure_growth, measure_growth


def test_a_call_that_keeps_its_argument_is_found_with_its_line() -> None:
    kept: list[str] = []
    growth = measure_growth(lambda i: kept.append(f"request {i} " + "x" * 40), warmup=10,
                            calls=1_000)
    assert growth.per_call > 60, growth.report()
    assert any(os.path.basename(__file__) in line for line in growth.top), growth.report()
    assert "1000 calls retained" in growth.report()


def test_a_bounded_cache_filled_by_the_warm_up_is_steady() -> None:
    cache: OrderedDict[int, str] = OrderedDict()

    def call(i: int) -> None:
        cache[i] = f"value {i} " + "y" * 40
        while len(cache) > 64:
            cache.popitem(last=False)

    growth = measure_growth(call, warmup=200, calls=2_000)
    assert abs(growth.per_call) < 8, growth.report()
    assert growth.held == ()


def test_calls_that_free_what_the_warm_up_kept_count_negative() -> None:
    kept: list[str] = []

    def call(i: int) -> None:  # the warm-up keeps 2,000 strings, the measured calls free them
        if i < 2_000:
            kept.append(f"item {i} " + "z" * 100)
        else:
            kept.pop()

    growth = measure_growth(call, warmup=2_000, calls=2_000)
    assert growth.per_call < -50, growth.report()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_async_calls_holding_threads_and_descriptors_are_named(
        anyio_backend: str, tmp_path: os.PathLike[str]) -> None:
    stop = threading.Event()
    files = []

    async def call(i: int) -> None:
        await anyio.lowlevel.checkpoint()
        if i == 5:  # one descriptor and one thread, opened in the measured stretch
            files.append(open(os.path.join(tmp_path, "held.txt"), "w"))  # noqa: SIM115, ASYNC230
            threading.Thread(target=stop.wait, name="kept-worker", daemon=True).start()

    try:
        growth = await ameasure_growth(call, warmup=2, calls=10)
    finally:
        stop.set()
        for file in files:
            file.close()
    held = "\n".join(growth.held)
    assert "kept-worker" in held, growth.report()
    if os.path.isdir("/proc/self/fd"):
        assert "held.txt" in held, growth.report()


@pytest.mark.parametrize(("warmup", "calls"), [(-1, 10), (10, 0), (1.5, 10), (True, 10),
                                               (10, "100")])
def test_counts_are_checked(warmup: object, calls: object) -> None:
    with pytest.raises(ValueError, match="whole number of calls"):
        measure_growth(lambda i: None, warmup=warmup, calls=calls)  # type: ignore[arg-type]
