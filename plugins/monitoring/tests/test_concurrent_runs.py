"""The monitor fed by a real pipeline under concurrent runs, some cancelled mid-stream:
every run is counted once, under its status, and every token a run produced is counted,
whether it finished or was cut short."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from aieng_hookspecs.types import Delta
from aieng_monitoring import Monitor, MonitorOptions, Price
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aieng_core.testing import ScriptedBackend, isolated_kernel, settle

#: One run: how many words it answers, whether it streams, and after how many deltas its
#: caller cancels it (``None``: never).
RUN = st.tuples(st.integers(1, 6), st.booleans(), st.none() | st.integers(1, 6))


def _totals(monitor: Monitor) -> tuple[int, dict[str, int], int, int]:
    snap = monitor.snapshot()
    statuses = {key.split("status=")[1]: n for key, n in snap["runs"].items()}
    output = snap["tokens"].get("pipeline=load,model=llm,direction=output", 0)
    calls = sum(snap["model_calls"].values())
    return sum(statuses.values()), statuses, output, calls


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(RUN, min_size=1, max_size=12))
def test_concurrent_runs_and_cancels_add_up(runs: list[tuple[int, bool, int | None]]) -> None:
    """N concurrent runs on one pipeline, streamed or not, some cancelled by their caller
    after k deltas: N runs counted (``cancelled`` exactly for those cut short), and the
    output tokens are the words each finished run answered plus the deltas each cut
    stream produced (its price applied: one unit per token here)."""
    monitor = Monitor(MonitorOptions(log_runs=False,
                                     prices={"llm": Price(0.0, 1000.0)}))
    replies = {f"q{i}": " ".join(f"w{j}" for j in range(words))
               for i, (words, _, _) in enumerate(runs)}
    backend = ScriptedBackend(lambda request: replies[request.prompt])
    expected_tokens = 0
    cut = 0

    async def one(pipe: Any, i: int, streamed: bool, cancel_after: int | None) -> None:
        nonlocal expected_tokens, cut
        seen = 0
        with anyio.CancelScope() as scope:
            def on_delta(delta: Delta) -> None:
                nonlocal seen
                if delta.text:
                    seen += 1
                if cancel_after is not None and seen >= cancel_after:
                    scope.cancel()

            result = await pipe.run(f"q{i}", on_delta=on_delta if streamed else None)
            assert result.completion is not None
            expected_tokens += result.completion.usage.completion_tokens
        if scope.cancelled_caught:
            cut += 1
            expected_tokens += seen

    async def main() -> None:
        async with isolated_kernel(loop_block_threshold=None) as kernel:
            pipe = kernel.compose({"llm": backend, "monitor": monitor}, name="load")
            async with anyio.create_task_group() as group:
                for i, (_, streamed, cancel_after) in enumerate(runs):
                    group.start_soon(one, pipe, i, streamed, cancel_after)
            await settle(lambda: _totals(monitor)[0] == len(runs))
            await pipe.aclose()

    anyio.run(main)
    total, statuses, output, _ = _totals(monitor)
    assert total == len(runs)
    assert statuses.get("cancelled", 0) == cut
    assert statuses.get("ok", 0) == len(runs) - cut
    assert output == expected_tokens
    assert monitor.snapshot()["cost_usd"]["pipeline=load,model=llm"] == \
        pytest.approx(expected_tokens)
