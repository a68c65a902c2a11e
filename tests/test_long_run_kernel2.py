"""The kernel in the long run, second round: a subscription's backlog read after its block
ends costs one step per event; one note tells the model of every turn left out, those a
chat let go of and those ``fit`` leaves out; a host that never closes its pipelines is
warned once a doubling; agent runs that plan, review and remember keep nothing of each run.
Each check counts (events, notes, warnings, bytes retained), never time."""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import (
    MemoryItem,
    Message,
    Query,
    RunStarted,
    ToolCall,
    ToolResult,
    ToolSpec,
)
from structlog.testing import capture_logs

from aieng_core import Kernel
from aieng_core.agent import Agent, AgentOptions
from aieng_core.agent._messages import fit, size
from aieng_core.ingest import iter_documents
from aieng_core.testing import ScriptedBackend
from aieng_core.testing.steady import ameasure_growth, measure_growth

pytestmark = pytest.mark.anyio

BOTH = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
NOTE = re.compile(r"\[left out to fit the context: (\d+) earlier messages, (\d+) characters\]")


def quiet_kernel() -> Kernel:
    """A kernel without the loop watchdog (a measure's full collections stall the loop)."""
    return Kernel(env={}, entry_points=[], loop_block_threshold=None)


# -- a subscription's backlog --------------------------------------------------------------

async def test_a_full_backlog_read_after_the_block_is_read_from_a_deque() -> None:
    """The 4,096 events queued when a subscription's block ends are read in order, each
    taken from the front of a deque: a list's ``pop(0)`` moved every event behind it, about
    4,096² / 2 moves to read a full buffer. (A structural check: the moves themselves are
    not observable without timing.)"""
    async with quiet_kernel() as kernel:
        buffer = kernel.bus._buffer
        async with kernel.bus.subscribe("run.*", name="late reader") as events:
            for i in range(buffer + 10):
                kernel.publish(RunStarted(run_id=f"r{i}", pipeline="p", input=""))
        left = events._left
        assert isinstance(left, deque) and len(left) == buffer
        read = [event.run_id async for event in events]
    assert read == [f"r{i}" for i in range(buffer)]
    assert events.dropped == 10
    assert events.pending() == []


# -- one note of what was left out ---------------------------------------------------------

def chat(turns: int, length: int = 100) -> list[Message]:
    """A system prompt, then ``turns`` user / assistant exchanges of ``length`` characters."""
    messages = [Message("system", "You are terse.")]
    for n in range(turns):
        messages += [Message("user", f"q{n} " + "x" * length),
                     Message("assistant", f"a{n} " + "y" * length)]
    return messages


def left_out_note(messages: int, characters: int) -> str:
    return f"[left out to fit the context: {messages} earlier messages, {characters} characters]"


def notes(messages: tuple[Message, ...] | list[Message]) -> list[tuple[int, int]]:
    return [(int(m[1]), int(m[2])) for msg in messages for m in NOTE.finditer(msg.content)]


def test_fit_without_left_out_is_unchanged() -> None:
    """Not given (or nothing let go), ``fit`` returns what fits as it is, and its own note
    alone when it leaves turns out."""
    messages = chat(4)
    assert fit(messages, None) == tuple(messages)
    assert fit(messages, 10_000, left_out=(0, 0)) == tuple(messages)
    out = fit(messages, 600)
    assert len(notes(out)) == 1 and sum(map(size, out)) <= 600


def test_the_callers_turns_get_a_note_when_nothing_else_is_left_out() -> None:
    """What the caller let go of is told even when the rest fits whole, within the bound
    (the note's room is counted), and with no bound at all."""
    messages = chat(2)
    total = sum(map(size, messages))
    note = left_out_note(40, 9_000)
    out = fit(messages, total + len(note) + 2, left_out=(40, 9_000))
    assert notes(out) == [(40, 9_000)]
    assert sum(map(size, out)) <= total + len(note) + 2
    assert [m.role for m in out] == [m.role for m in messages]
    assert notes(fit(messages, None, left_out=(40, 9_000))) == [(40, 9_000)]
    # One character short of the note's room: a turn's text is marked to make room.
    short = fit(messages, total + len(note) + 1, left_out=(40, 9_000))
    assert notes(short) == [(40, 9_000)] and sum(map(size, short)) <= total + len(note) + 1


def test_one_note_counts_the_callers_turns_and_those_fit_leaves_out() -> None:
    """When ``fit`` leaves turns out too, its note adds them to the caller's: one note,
    never two, and the conversation within the bound."""
    messages = chat(30)
    alone = fit(messages, 1_500)
    ((own, own_chars),) = notes(alone)
    out = fit(messages, 1_500, left_out=(100, 20_000))
    assert sum(map(size, out)) <= 1_500
    ((count, chars),) = notes(out)
    assert count >= 100 + own and chars >= 20_000 + own_chars
    # What fit itself left out is what is missing from the messages sent.
    sent = {m.content for m in out}
    gone = [m for m in messages[2:] if m.content not in sent and not m.content.startswith(
        "[left out")]
    assert count - 100 == len(gone) and chars - 20_000 == sum(map(size, gone))


def test_no_room_for_the_note_fits_as_without_it() -> None:
    """When what is never left out leaves no room for the note, the conversation is fitted
    as without the caller's count (no note rather than a ContextLimitError)."""
    messages = [Message("system", "s"), Message("user", "u" * 300)]
    total = sum(map(size, messages))
    assert fit(messages, total, left_out=(5, 500)) == tuple(messages)


class Notes:
    """A tool double whose results are long (so that a few steps pass the bound) and new
    (no stall)."""

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        return [ToolSpec(name="look", description="looks")]

    @hookimpl
    async def aieng_call_tool(self, call: ToolCall) -> ToolResult:
        return ToolResult(call.id, f"seen {call.arguments} " + "z" * 300)  # new each time


async def test_an_agent_run_tells_the_model_of_the_callers_turns_once() -> None:
    """``Agent.run(left_out=...)``: every model call sees one note, counting the chat's
    turns let go of and those the bound leaves out of the run's own steps."""
    replies: list[Any] = [[ToolCall(id=f"c{n}", name="look", arguments={"n": n})]
                          for n in range(6)] + ["done"]
    backend = ScriptedBackend(replies)
    async with quiet_kernel() as kernel:
        pipeline = kernel.compose({"llm": backend, "tools": Notes()}, name="agent",
                                  timeout=None)
        agent = Agent(pipeline, AgentOptions(max_steps=10, context_chars=1_200))
        result = await agent.run(chat(3), left_out=(50, 12_345))
    assert result.status == "answered"
    seen = [notes(request.messages) for request in backend.requests]
    assert all(len(found) == 1 for found in seen), seen
    assert seen[0] == [(50, 12_345)]
    assert seen[-1][0][0] > 50  # the run's own older steps are counted in the same note
    assert all(sum(map(size, r.messages)) <= 1_200 for r in backend.requests)
    assert not notes(result.messages)  # the transcript keeps every text, and no note


# -- pipelines never closed ----------------------------------------------------------------

async def test_many_open_pipelines_warn_once_a_doubling() -> None:
    """A host that builds pipelines and never closes them is told, with the count and how
    to close them, when 1,000 are open at once (here 8), and again at each doubling; not at
    every build."""
    assert Kernel.OPEN_PIPELINES_WARN == 1_000
    async with quiet_kernel() as kernel:
        kernel.OPEN_PIPELINES_WARN = 8
        built = []
        with capture_logs() as logs:
            for n in range(40):
                built.append(kernel.compose({"llm": ScriptedBackend()}, name=f"tenant-{n}"))
        warned = [e for e in logs if e["event"] == "kernel.pipelines_open"]
        assert [e["open"] for e in warned] == [8, 16, 32]
        assert "aclose" in warned[0]["hint"] and "async with" in warned[0]["hint"]
        for pipeline in built:
            await pipeline.aclose()
        with capture_logs() as logs:  # closed ones do not count; below 64, no warning
            for n in range(40):
                await kernel.compose({"llm": ScriptedBackend()}, name=f"again-{n}").aclose()
            kept = [kernel.compose({"llm": ScriptedBackend()}, name=f"k{n}") for n in range(63)]
        assert not [e for e in logs if e["event"] == "kernel.pipelines_open"]
        assert len(kept) == 63


# -- agent runs that plan, review and remember ---------------------------------------------

class Memory:
    """A memory double that keeps the latest few items only (what an LRU store does)."""

    def __init__(self) -> None:
        self.items: deque[MemoryItem] = deque(maxlen=8)

    @hookimpl
    async def aieng_memory_recall(self, query: Query, k: int) -> list[MemoryItem]:
        return list(self.items)[:k]

    @hookimpl
    async def aieng_memory_store(self, items: Sequence[MemoryItem]) -> None:
        self.items.extend(items)


def planner(request: Any) -> str | list[ToolCall]:
    """Plans (and replans), calls ``look`` once, answers, approves its answer's review."""
    last = request.messages[-1].content
    if not request.tools:  # a review's request starts with the task; a plan's does not
        return "OK" if last.startswith("Task:") else "1. look\n2. answer"
    if not any(m.role == "tool" for m in request.messages):
        return [ToolCall(id="c1", name="look", arguments={"q": last[:20]})]
    return f"answer to {last[:10]}"


@BOTH
async def test_agent_runs_that_plan_review_and_remember_keep_nothing(
        anyio_backend: str) -> None:
    """Runs with a plan, a replan after each step, a review of the answer, memory recalled
    and stored and a context bound, with distinct tasks and ids, retain nothing per run."""
    options = AgentOptions(max_steps=4, plan=True, reflect=True, replan="every_step",
                           context_chars=4_000)
    async with quiet_kernel() as kernel:
        pipeline = kernel.compose({"llm": ScriptedBackend(planner, keep=4), "tools": Notes(),
                                   "memory": Memory()}, name="agent", timeout=None)
        agent = Agent(pipeline, options)

        async def task(i: int) -> None:
            result = await agent.run(f"task {i}", run_id=f"agent-{i}",
                                     left_out=(i % 3, 10 * i))
            assert result.status in ("answered", "max_steps"), result.reason

        growth = await ameasure_growth(task, warmup=150, calls=400)
    assert growth.per_call < (512 if anyio_backend == "trio" else 32), growth.report()
    assert not growth.held, growth.report()


# -- a long ingest -------------------------------------------------------------------------

def test_a_streamed_corpus_keeps_each_id_once(tmp_path: Path) -> None:
    """Streaming one BEIR corpus file keeps, per document, its id and line (to refuse a
    repeated id, naming both lines) and nothing else: not a second copy of the ids for a
    check across files when one file is read (169 B a document before, 130 now)."""
    corpus = tmp_path / "corpus.jsonl"
    with corpus.open("w") as handle:
        for n in range(6_000):
            handle.write(json.dumps({"_id": f"doc-{n:06d}", "text": f"text {n} " * 5}) + "\n")
    documents = iter_documents(corpus)
    growth = measure_growth(lambda i: next(documents), warmup=500, calls=5_000)
    assert growth.per_call < 145, growth.report()
    # Two files named: an id read from both is still refused.
    folder = tmp_path / "more"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text('{"_id": "doc-000003", "text": "again"}\n')
    with pytest.raises(ValueError, match="doc-000003' was also read from"):
        list(iter_documents(corpus, folder))
