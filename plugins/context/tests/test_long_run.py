"""The long run: a context builder serving many runs and chats of thousands of turns keeps
nothing per run, and counts what the prompt holds, not the whole history.

Shown by counts (texts counted, characters counted) and by the bytes the kit's
``ameasure_growth`` finds retained, never by timings."""

from __future__ import annotations

import pytest
from aieng_context import ContextBuilder, ContextOptions
from aieng_context._tokens import approximate_tokens
from aieng_hookspecs.types import Message, Query, Request
from context_helpers import make_hits

from aieng_core.testing.steady import ameasure_growth

pytestmark = pytest.mark.anyio


def chat(turns: int) -> Request:
    """A chat of ``turns`` questions and answers, then the last question."""
    messages: list[Message] = []
    for turn in range(turns):
        messages.append(Message("user", f"Question {turn}: what about the river {turn}?"))
        messages.append(Message("assistant", f"The river {turn} runs north of the city."))
    messages.append(Message("user", "And the last one?"))
    return Request(tuple(messages))


async def test_builds_for_many_runs_keep_nothing() -> None:
    """Builds for ever new questions and passages, one in 25 over the inline limit (in a
    worker thread): nothing is kept per build, no thread or task stays."""
    builder = ContextBuilder(ContextOptions(max_prompt_tokens=600, max_context_tokens=300))

    async def build(i: int) -> None:
        long = i % 25 == 0  # one in 25 in a worker thread
        hits = make_hits(*(f"Passage {i}.{n}: " + ("river " * (800 if long else 20))
                           for n in range(4)))
        request = chat(3 if not long else 8)
        await builder.aieng_context_build(Query(f"question {i}"), hits, request)

    growth = await ameasure_growth(build, warmup=100, calls=800)
    # A build's request or passages kept would be 500 B and more; the regex module's cache
    # (bounded, refilled by other tests) and the allocator's reserves some 25 kB in all.
    assert growth.per_call < 64, growth.report()
    assert growth.held == (), growth.report()


def test_a_chat_of_ten_thousand_turns_counts_what_the_prompt_holds() -> None:
    """The history is trimmed from the latest turn back: a chat of 10,000 turns counts the
    same texts and characters as one of 100 (the kept turns and the one before them), not
    its whole history at every build."""
    counted: list[int] = []

    def count(text: str) -> int:
        counted.append(len(text))
        return approximate_tokens(text)

    builder = ContextBuilder(ContextOptions(max_prompt_tokens=1_000), count_tokens=count)
    hits = make_hits(*(f"Passage {n} on rivers. " * 20 for n in range(5)))
    work = []
    for turns in (100, 10_000):
        counted.clear()
        built = builder.build(Query("And the last one?"), hits, chat(turns))
        report = built.metadata["context_build"]
        assert report["dropped_turns"] > 0 and report["prompt_tokens"] <= 1_000
        work.append((len(counted), sum(counted)))
    (texts_short, chars_short), (texts_long, chars_long) = work
    assert texts_long == texts_short, work
    assert chars_long <= chars_short * 1.05, work  # longer turn numbers, same turns
