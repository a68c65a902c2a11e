"""The agent runner over a long life: many runs on one Agent keep no per-run state (the
transcripts, the pii vault, memory past its bound), and a pipeline closed after them holds
no file open."""

from __future__ import annotations

import contextlib
import gc
import sqlite3
import tracemalloc
from pathlib import Path

import pytest
from aieng_agents import CalculatorTool, ClockTool, MemoryOptions, SQLiteMemory
from aieng_guardrails import PIIGuard, PIIOptions
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Completion, Request, ToolCall, Usage

from aieng_core import Kernel
from aieng_core.agent import Agent, AgentResult, AgentStep
from aieng_core.agent._runner import _Run
from aieng_core.testing import open_files

pytestmark = pytest.mark.anyio


class Calculating:
    """A backend double that keeps nothing: calls ``calculate`` and ``now`` once, then
    answers with the result and the (redacted) address of the task."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def aieng_generate(self, request: Request) -> Completion:
        self.calls += 1
        results = [m.content for m in request.messages if m.role == "tool"]
        if not results:
            calls = (ToolCall(f"c{self.calls}", "calculate",
                              {"expression": f"{self.calls} * 2"}),
                     ToolCall(f"t{self.calls}", "now", {}))
            return Completion("", finish_reason="tool_calls", tool_calls=calls,
                              usage=Usage(5, 5))
        return Completion(f"{results[0]}, mailed to {request.prompt.split()[-1]}",
                          usage=Usage(5, 5))




@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
async def test_many_runs_on_one_agent_keep_no_per_run_state(tmp_path: Path) -> None:
    """120 runs: the traced memory does not grow with the runs, none of the runner's
    per-run objects stay alive, each run's pii mapping is gone, the memory holds at most
    ``max_items``, and once the pipeline closes its file is no longer open."""
    path = tmp_path / "memory.sqlite"
    before = set(open_files())
    async with Kernel(env={}, entry_points=[]) as kernel:
        guard = PIIGuard(PIIOptions(restore=True))
        memory = SQLiteMemory(MemoryOptions(path=str(path), embeddings=False, max_items=20))
        pipeline = kernel.compose({"pii": guard, "llm": Calculating(), "calc": CalculatorTool(),
                                   "clock": ClockTool(), "memory": memory}, name="long-run")
        agent = Agent(pipeline)

        async def runs(count: int) -> None:
            for n in range(count):
                result = await agent.run(f"double it and mail user{n}@example.com")
                assert result.status == "answered", result.reason
                assert result.answer.endswith(f"mailed to user{n}@example.com")

        await runs(40)  # warm: caches, interned strings, the dispatcher's rolling windows
        tracemalloc.start()
        try:
            await runs(40)
            gc.collect()
            middle = tracemalloc.get_traced_memory()[0]
            await runs(40)
            gc.collect()
            end = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        # The process's noise (rolling windows refilled, the allocator) is some 40 KB
        # either way; a leak of several KB a run passes this bound. Smaller leaks of the
        # runner's own objects are caught below.
        assert end - middle < 256 * 1024, f"grew {end - middle} bytes over 40 runs"
        # The runner's own per-run objects are gone. (A finished run's RunScope may live a
        # little longer: asyncio keeps cancelled deadline timers, and their contexts, in
        # its heap until it prunes them; that is bounded, at about a hundred timers.)
        kept = [o for o in gc.get_objects() if isinstance(o, (AgentResult, AgentStep, _Run))]
        assert not kept, f"{len(kept)} objects of finished runs are still alive"
        assert len(guard.vault) == 0
        with contextlib.closing(sqlite3.connect(path)) as db:
            [(rows,)] = db.execute("SELECT COUNT(*) FROM memory WHERE namespace = ?",
                                   (memory.options.namespace,)).fetchall()
        assert rows == 20
        assert str(path) in open_files()
        await pipeline.aclose()
    assert not {f for f in set(open_files()) - before if f.startswith(str(tmp_path))}
