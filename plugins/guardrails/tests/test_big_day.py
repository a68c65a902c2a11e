"""The big day: long agent runs and long conversations through the input guards.

Growth is shown by counts (texts scanned, messages read, substring searches), never by
timings."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any, overload

import pytest
from aieng_guardrails import InjectionGuard, PIIGuard, PIIOptions, _guards
from aieng_guardrails._pii import find_pii
from aieng_guardrails._redact import redact_texts
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Message, Request, ToolCall, ToolResult, ToolSpec
from guard_scans import counting

from aieng_core.agent import Agent, AgentOptions
from aieng_core.testing import ScriptedBackend, isolated_kernel

pytestmark = pytest.mark.anyio

STEPS = 24
FILLER = "The quarterly report lists the figures of each region in turn. " * 30


class Pages:
    """A tool double ``fetch``: a new page at each call (about 2,000 characters, with an
    address in it), so that the run neither stalls nor loops."""

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        return [ToolSpec(name="fetch", parameters={
            "type": "object", "properties": {"page": {"type": "integer"}}})]

    @hookimpl
    def aieng_call_tool(self, call: ToolCall) -> ToolResult | None:
        page = call.arguments["page"]
        return ToolResult(call.id, f"page {page}, by clerk{page}@example.org. {FILLER}")


def reader(request: Request) -> str | list[ToolCall]:
    """Fetch pages 1..STEPS, one per step, then answer."""
    seen = sum(m.role == "tool" for m in request.messages)
    if seen < STEPS:
        return [ToolCall(id=f"c{seen}", name="fetch", arguments={"page": seen + 1})]
    return f"read {seen} pages"


async def test_a_long_agent_run_scans_each_text_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent runs the pipeline at each step on the whole conversation so far: the input
    guards scanned every earlier tool result again at every step (the first page 24 times
    in a run of 24 steps: quadratic in the run's length). Each text is now scanned once in
    the run, and the guards decide as before (every address redacted at every step)."""
    assert PIIOptions().all_messages  # the default: the whole conversation is scanned
    pii_scans = counting(monkeypatch, "find_pii")
    injection_scans = counting(monkeypatch, "scan_injection")
    backend = ScriptedBackend(reader)
    async with isolated_kernel(loop_block_threshold=None) as kernel:
        pipe = kernel.compose({"injection": InjectionGuard(), "pii": PIIGuard(),
                               "llm": backend, "tools": Pages()})
        result = await Agent(pipe, AgentOptions(max_steps=STEPS + 1)).run("read the pages")
    assert result.status == "answered", result.reason
    assert result.answer == f"read {STEPS} pages"
    pages = [m.content for m in result.messages if m.role == "tool"]
    assert len(pages) == STEPS
    assert {pii_scans[page] for page in pages} == {1}
    assert {injection_scans[page] for page in pages} == {1}
    # (The answers, the empty texts of the tool-call steps included, are new each time.)
    assert max(n for text, n in pii_scans.items() if text) == 1
    assert max(injection_scans.values()) == 1
    last = backend.requests[-1].messages  # what the model saw: every address redacted
    assert not any("@example.org" in m.content for m in last)
    assert sum("<EMAIL_" in m.content for m in last if m.role == "tool") == STEPS


async def test_a_long_conversation_is_scanned_for_pii_off_the_event_loop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``all_messages`` (the default) the whole conversation is scanned: a short last
    message after a long history was scanned inline, holding the event loop for the scan
    of the history (the size that decides counted the last message only)."""
    threads: list[bool] = []
    scan = _guards.find_pii

    def recorded(text: str, *args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread() is threading.main_thread())
        return scan(text, *args, **kwargs)

    monkeypatch.setattr(_guards, "find_pii", recorded)
    history = [Message("user", f"mail ann@example.org. {FILLER * 10}"),
               Message("assistant", "done"), Message("user", "thanks")]
    assert sum(len(m.content) for m in history) > _guards.INLINE_LIMIT
    verdict = await PIIGuard().aieng_guard_input(Request(messages=tuple(history)))
    assert verdict is not None and verdict.messages is not None
    assert "<EMAIL_1>" in verdict.messages[0].content
    assert threads and not any(threads)  # every scan in a worker thread
    threads.clear()
    short = (Message("user", "mail ann@example.org"), Message("user", "thanks"))
    await PIIGuard().aieng_guard_input(Request(messages=short))
    assert threads and all(threads)  # a short conversation: inline, as before


class Touched(Sequence[Message]):
    """A conversation that counts the messages read out of it."""

    def __init__(self, messages: Sequence[Message], counter: list[int]) -> None:
        self._messages, self.counter = messages, counter

    def __len__(self) -> int:
        return len(self._messages)

    @overload
    def __getitem__(self, index: int) -> Message: ...
    @overload
    def __getitem__(self, index: slice) -> Touched: ...

    def __getitem__(self, index: int | slice) -> Message | Touched:
        if isinstance(index, slice):
            return Touched(self._messages[index], self.counter)
        self.counter[0] += 1
        return self._messages[index]

    def __iter__(self) -> Iterator[Message]:
        for message in self._messages:
            self.counter[0] += 1
            yield message


def _touched_naming_tool_results(steps: int) -> int:
    """Messages read to name every tool result of a conversation of ``steps`` steps whose
    tool messages carry their tool's name."""
    messages = [Message("user", "task")]
    for n in range(steps):
        messages += [Message("assistant", "", tool_calls=(ToolCall(f"c{n}", "fetch", {}),)),
                     Message("tool", f"page {n}", tool_call_id=f"c{n}", name="fetch")]
    counter = [0]
    touched = Touched(messages, counter)
    for i, message in enumerate(messages):
        if message.role == "tool":
            assert _guards._tool_source(touched, i, earlier=False) == (
                f"the tool result of 'fetch' (call 'c{(i - 2) // 2}')")
    return counter[0]


def test_naming_the_tool_results_of_a_long_conversation_is_linear() -> None:
    """A finding from a tool result names its tool: the name was looked up by reading
    every earlier message, even when the message carried it (quadratic in a conversation's
    length, at every model call of an agent run)."""
    small, large = _touched_naming_tool_results(200), _touched_naming_tool_results(800)
    assert large <= 4 * small + 8


class Searched(str):
    """A text that counts the substring searches made in it."""

    searches = 0

    def __contains__(self, part: object) -> bool:
        Searched.searches += 1
        return super().__contains__(part)  # type: ignore[operator]


def test_placeholders_given_earlier_are_found_without_searching_each_text() -> None:
    """An agent run's earlier placeholders (``assigned``) were each searched for in every
    text of the conversation (placeholders x texts searches at every model call); the texts'
    placeholders are read once instead, with the same mapping."""
    assigned = {f"<EMAIL_{n}>": f"user{n}@example.org" for n in range(1, 201)}
    texts = [Searched(f"turn {n}: wrote to <EMAIL_{n}> about it") for n in range(1, 101)]
    texts.append(Searched("and to newcomer@example.org"))
    found = [find_pii(t) for t in texts]
    Searched.searches = 0
    out, mapping = redact_texts(texts, found, assigned=assigned)
    assert Searched.searches == 0
    assert out[-1] == "and to <EMAIL_201>"
    assert mapping == {**{f"<EMAIL_{n}>": f"user{n}@example.org" for n in range(1, 101)},
                       "<EMAIL_201>": "newcomer@example.org"}


def test_the_scan_cache_is_bounded() -> None:
    """The guards keep what they scanned by a digest of the text, bounded: a server that
    answered millions of requests holds at most ``ScanCache.size`` results."""
    from aieng_guardrails._cache import ScanCache

    calls: list[str] = []
    cache = ScanCache(lambda text: calls.append(text) or len(text), size=3)
    assert [cache(t) for t in ("a", "bb", "a", "ccc", "dddd", "a", "bb")] == [
        1, 2, 1, 3, 4, 1, 2]
    assert calls == ["a", "bb", "ccc", "dddd", "bb"]  # "bb" evicted by "dddd"
    assert len(cache) == 3
