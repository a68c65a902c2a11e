"""The budget between a long conversation and the passages: ``history_share``."""

from __future__ import annotations

from typing import Any

import pytest
from aieng_context import ContextBuilder, ContextOptions, approximate_tokens
from aieng_hookspecs.types import Hit, Message, Query, Request, ToolCall
from context_helpers import make_hits
from hypothesis import given, settings
from hypothesis import strategies as st

PASSAGES = make_hits(*(f"passage {n} " + "alpha beta gamma " * 30 for n in range(1, 6)))
LONG_PASSAGES = make_hits(*(f"passage {n} " + "alpha beta gamma " * 200 for n in range(1, 6)))


def chat(turns: int, words: int = 20) -> Request:
    """``turns`` earlier turns of ``words`` words each (oldest first), then a question."""
    history = [Message("user" if i % 2 == 0 else "assistant", f"turn{i} " + "blah " * words)
               for i in range(turns)]
    return Request([*history, Message("user", "And the latest question?")])


def lumpy(text: str) -> int:
    """A counter whose count of a whole is more than the sum of its parts."""
    return (len(text) + 3) // 4 + text.count("\n\n") * 3


def tokens(messages: Any) -> int:
    return sum(approximate_tokens(m.content) for m in messages)


def kept_turns(built: Request, request: Request) -> list[Message]:
    """The earlier turns the built request kept: between its system message and the
    rendered question (the request here has nothing after its last user turn)."""
    kept = list(built.messages[1:-1])
    earlier = list(request.messages[:-1])
    assert kept == earlier[len(earlier) - len(kept):]  # the latest turns, in order
    return kept


def test_a_long_history_leaves_the_passages_their_share() -> None:
    """With 10,000 earlier turns and ``max_prompt_tokens``, the passages still get their
    share of the prompt (all the room went to the turns, and no passage was shown); the
    latest turns are kept, the question is the last user turn, and the report says how
    many turns were dropped and what the kept ones cost."""
    request = chat(10_000)
    built = ContextBuilder(ContextOptions(max_prompt_tokens=4000)).build(
        Query("q"), LONG_PASSAGES, request)
    report = built.metadata["context_build"]
    assert len(built.metadata["context"]) >= 2
    assert tokens(built.messages) == report["prompt_tokens"] <= 4000
    assert built.metadata["question"] == "And the latest question?"
    assert built.messages[-1].role == "user" and "And the latest question?" in built.prompt
    kept = kept_turns(built, request)
    assert kept and report["dropped_turns"] == 10_000 - len(kept)
    assert report["history_tokens"] == tokens(kept)
    assert report["history_share"] == 0.5
    # The passages need more than their share: they get it (to the cut's word end), the
    # turns the other half of the room after the system message, sections and question.
    frame = report["prompt_tokens"] - report["history_tokens"] - report["context_tokens"]
    assert report["context_tokens"] >= 0.49 * (4000 - frame)
    assert 0.45 * (4000 - frame) <= report["history_tokens"] <= 0.51 * (4000 - frame)


def test_history_share_one_is_the_old_rule() -> None:
    """``history_share = 1`` keeps every turn that fits beside the prompt without
    passages, as before: here the passages get no room at all."""
    request = chat(10_000)
    options = ContextOptions(max_prompt_tokens=4000, history_share=1.0)
    built = ContextBuilder(options).build(Query("q"), PASSAGES, request)
    report = built.metadata["context_build"]
    assert built.metadata["context"] == [] and report["dropped"] == [h.document.id
                                                                     for h in PASSAGES]
    assert tokens(built.messages) <= 4000
    one_more = tokens(request.messages[-2 - len(kept_turns(built, request)):-1])
    assert report["prompt_tokens"] - report["history_tokens"] + one_more > 4000


def test_short_passages_leave_the_rest_to_the_history() -> None:
    """The share is reserved for passages only as far as they need it: with one short
    passage the turns take the rest of the prompt, beyond their share."""
    request = chat(2_000)
    built = ContextBuilder(ContextOptions(max_prompt_tokens=4000)).build(
        Query("q"), make_hits("A short passage."), request)
    report = built.metadata["context_build"]
    assert [p["id"] for p in built.metadata["context"]] == ["d1"]
    assert report["history_tokens"] > 0.9 * (4000 - (report["prompt_tokens"]
                                                     - report["history_tokens"]))
    assert report["prompt_tokens"] <= 4000


def test_without_passages_the_history_takes_everything() -> None:
    """With no hit (or only blank ones) nothing is reserved: the turns fill the prompt."""
    request = chat(2_000)
    for hits in ([], make_hits("   ")):
        built = ContextBuilder(ContextOptions(max_prompt_tokens=4000)).build(
            Query("q"), hits, request)
        report = built.metadata["context_build"]
        assert report["history_tokens"] > 4000 - 400 and report["prompt_tokens"] <= 4000


def test_history_share_zero_puts_the_passages_first() -> None:
    """``history_share = 0``: the passages take what they need up to
    ``max_context_tokens``; the turns get what is left."""
    request = chat(2_000)
    options = ContextOptions(max_prompt_tokens=3000, max_context_tokens=2000,
                             history_share=0)
    built = ContextBuilder(options).build(Query("q"), PASSAGES, request)
    report = built.metadata["context_build"]
    assert len(built.metadata["context"]) == 5  # all of them: 5 x ~100 tokens
    assert report["prompt_tokens"] <= 3000 and report["history_tokens"] > 2000


def test_a_tool_result_goes_with_its_call() -> None:
    """Trimmed to its share, the history never starts with a tool result whose call was
    dropped."""
    messages: list[Message] = []
    for i in range(300):
        call = ToolCall(id=f"c{i}", name="search")
        messages += [Message("assistant", "calling " * 10, tool_calls=(call,)),
                     Message("tool", "result " * 30, tool_call_id=f"c{i}")]
    request = Request([*messages, Message("user", "So?")])
    built = ContextBuilder(ContextOptions(max_prompt_tokens=2000)).build(
        Query("q"), PASSAGES, request)
    kept = kept_turns(built, request)
    assert kept and kept[0].role == "assistant" and built.metadata["context"]


def count_calls(turns: int, limit: int | None = 3000) -> tuple[int, int]:
    """How many times, and over how many characters, the counter runs for one build."""
    calls: list[int] = []

    def count(text: str) -> int:
        calls.append(len(text))
        return approximate_tokens(text)

    ContextBuilder(ContextOptions(max_prompt_tokens=limit), count_tokens=count).build(
        Query("q"), PASSAGES, chat(turns))
    return len(calls), sum(calls)


def test_only_the_kept_turns_are_counted() -> None:
    """Fitting the history to ``max_prompt_tokens`` counts the turns from the latest back
    and stops at the first that does not fit: 8,000 turns cost what 2,000 do (all of them
    were counted, two or three times over, to drop all but the last few)."""
    calls, characters = count_calls(2000)
    more_calls, more_characters = count_calls(8000)
    assert more_calls == calls
    assert more_characters - characters <= 2 * len(chat(8000).messages[-2].content)


def test_without_a_limit_each_turn_is_counted_once() -> None:
    """Without ``max_prompt_tokens`` every turn is kept and counted once for the report,
    not once per selection attempt: four times the turns, one call more per turn."""
    calls, _ = count_calls(500, limit=None)
    more_calls, _ = count_calls(2000, limit=None)
    assert more_calls - calls == 1500


def test_options_check_history_share() -> None:
    """``history_share`` is a number from 0 to 1; anything else fails naming it."""
    assert ContextOptions().history_share == 0.5
    assert ContextOptions(history_share=1).history_share == 1
    for bad in (-0.1, 1.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="history_share"):
            ContextOptions(history_share=bad)
    for wrong in ("0.5", True, None):
        with pytest.raises(TypeError, match="history_share"):
            ContextOptions(history_share=wrong)  # type: ignore[arg-type]


def test_an_agent_run_too_long_names_its_turns() -> None:
    """Turns after the question (an agent's tool calls and results) are never dropped:
    when they alone are over ``max_prompt_tokens`` the error says so, rather than asking
    to shorten the system message or the question."""
    steps: list[Message] = [Message("user", "Find it.")]
    for i in range(200):
        call = ToolCall(id=f"c{i}", name="search")
        steps += [Message("assistant", "", tool_calls=(call,)),
                  Message("tool", "found " * 20, tool_call_id=f"c{i}")]
    with pytest.raises(ValueError, match=r"400 turns after the question") as caught:
        ContextBuilder(ContextOptions(max_prompt_tokens=2000)).build(
            Query("q"), PASSAGES, Request(steps))
    assert "max_prompt_tokens = 2000" in str(caught.value)


CONVERSATIONS = st.lists(
    st.tuples(st.sampled_from(["user", "assistant", "tool"]), st.integers(0, 60)),
    max_size=40)
HITS = st.lists(st.tuples(st.integers(0, 80), st.integers(0, 2)), max_size=6)


@settings(max_examples=100, deadline=None)
@given(turns=CONVERSATIONS, hit_sizes=HITS, limit=st.integers(100, 1500),
       share=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]) | st.floats(0, 1),
       max_context=st.integers(1, 800), minimum=st.integers(1, 40),
       counter=st.sampled_from([approximate_tokens, lumpy]))
def test_history_share_properties(turns: list[tuple[str, int]],
                                  hit_sizes: list[tuple[int, int]], limit: int, share: float,
                                  max_context: int, minimum: int, counter: Any) -> None:
    """For any history, passages, budget and counter: the prompt fits
    ``max_prompt_tokens`` by that counter (or the build fails naming it); the question
    stays the last user turn; the kept turns are the latest ones, in order; and, by a
    counter whose parts add up, when the passages' share of the budget holds at least one
    passage (a build without history given that much room shows one), one is shown."""
    history = [Message(role, "word " * size, tool_call_id="c" if role == "tool" else None)
               for role, size in turns]
    request = Request([*history, Message("user", "The question?")])
    hits = make_hits(*("text " * size + "[1]" * marks for size, marks in hit_sizes))
    options = ContextOptions(max_prompt_tokens=limit, history_share=share,
                             max_context_tokens=max_context, min_passage_tokens=minimum)
    try:
        built = ContextBuilder(options, count_tokens=counter).build(Query("q"), hits, request)
    except ValueError as error:
        assert "max_prompt_tokens" in str(error)
        alone = ContextBuilder(count_tokens=counter).build(
            Query("q"), [], Request([request.messages[-1]]))
        assert sum(counter(m.content) for m in alone.messages) > limit
        return
    report = built.metadata["context_build"]
    assert sum(counter(m.content) for m in built.messages) == report["prompt_tokens"] <= limit
    assert built.messages[-1].role == "user" and built.metadata["question"] == "The question?"
    kept = kept_turns(built, request)
    assert report["dropped_turns"] == len(history) - len(kept)
    assert not kept or kept[0].role != "tool" or kept == history
    if not built.metadata["context"] and counter is approximate_tokens:
        assert not reserved_room_holds_a_passage(hits, request, limit, share, options)


def reserved_room_holds_a_passage(hits: list[Hit], request: Request, limit: int,
                                  share: float, options: ContextOptions) -> bool:
    """Whether the passages' share of the room (``1 - share`` of what the system message,
    sections and question leave of ``limit``) shows a passage in a build without history."""
    alone = Request([request.messages[-1]])
    unbounded = ContextBuilder(ContextOptions(max_context_tokens=10**6, min_passage_tokens=1))
    probe = unbounded.build(Query("q"), hits, alone).metadata["context_build"]
    if not probe["context_tokens"]:
        return False
    frame = probe["prompt_tokens"] - probe["context_tokens"]
    room = min(options.max_context_tokens, int((1 - share) * (limit - frame)))
    if room < 1:
        return False
    reserved = ContextOptions(max_context_tokens=room,
                              min_passage_tokens=options.min_passage_tokens)
    return bool(ContextBuilder(reserved).build(Query("q"), hits, alone).metadata["context"])
