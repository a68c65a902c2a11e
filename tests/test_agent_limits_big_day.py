"""The big day for ``context_chars``: a conversation of thousands of turns is sent within
the limit. When marks alone cannot make it fit, the oldest turns are left out whole (a tool
call with its results), and the system text says how many; what is never left out (the
system text, the first and the latest user turn, the task, the latest step) longer than the
limit on its own is an error naming the sizes.

No timings are asserted: growth is shown by counting calls of ``size``."""

from __future__ import annotations

import re

import pytest
from aieng_hookspecs.types import Message, ToolCall
from hypothesis import example, given, settings
from hypothesis import strategies as st

from aieng_core.agent import _messages
from aieng_core.agent._messages import ContextLimitError, fit, size

MARK = "[left out to fit the context: "
NOTE = re.compile(r"\[left out to fit the context: (\d+) earlier messages, (\d+) characters\]")
CUT = re.compile(r"\n… \[(\d+) more characters cut to fit the context\]\Z")
_TEXT = st.builds(lambda n, piece: (piece * n)[:n], st.integers(0, 300),
                  st.sampled_from(["ab", "é ", "x\n", "word "]))


def _chat(turns: int, chars: int = 200) -> list[Message]:
    return [Message("system", "s")] + [
        Message("user" if i % 2 == 0 else "assistant", "x" * chars) for i in range(turns)]


def test_ten_thousand_turns_fit_the_limit_and_say_what_was_left_out() -> None:
    """The first wave's reproduction: 10k turns of 200 characters, a limit of 8,000. It
    returned 695,262 characters; now it fits, the latest turns go whole, and the system
    text counts the messages left out."""
    messages = _chat(10_000)
    out = fit(messages, 8000, keep=messages[-1])
    assert sum(map(size, out)) <= 8000
    found = NOTE.search(out[0].content)
    assert out[0].role == "system" and out[0].content.startswith("s\n\n") and found
    left = int(found.group(1))
    assert left == len(messages) - len(out) and int(found.group(2)) == 200 * left
    assert out[-1] is messages[-1] and out[1] is messages[1]  # the latest and the first
    # The kept turns are the latest ones, whole, in order, user and assistant alternating.
    assert list(out[2:]) == messages[len(messages) - len(out) + 2:]
    assert [m.role for m in out[1:3]] == ["user", "assistant"]
    assert not any(m.content.startswith(MARK) for m in out)


@st.composite
def conversations(draw: st.DrawFn) -> tuple[list[Message], Message]:
    """An agent's conversation (the task, then steps: tool calls and their results, a
    rejected answer and the review's note, a loop note) or a chat's (earlier turns, some
    of them an agent's tool exchanges, then the new user turn); and the task."""
    messages = [Message("system", draw(_TEXT))] if draw(st.booleans()) else []
    messages.append(Message("user", draw(_TEXT)))
    chat = draw(st.booleans())
    for step in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["tools", "review", "turn"]))
        if kind == "review" or (kind == "turn" and chat):
            messages += [Message("assistant", draw(_TEXT)), Message("user", draw(_TEXT))]
            continue
        calls = tuple(ToolCall(id=f"c{n}", name=draw(st.sampled_from(["add", "web"])),
                               arguments={"q": draw(_TEXT)[:20]})  # ids repeat across steps
                      for n in range(draw(st.integers(1, 3))))
        messages.append(Message("assistant", draw(_TEXT), tool_calls=calls))
        messages += [Message("tool", draw(_TEXT), tool_call_id=c.id) for c in calls]
        if draw(st.booleans()):
            messages.append(Message("user", draw(_TEXT)))  # a loop note
    if chat:
        messages.append(Message("user", draw(_TEXT)))
        return messages, messages[-1]
    return messages, next(m for m in messages if m.role == "user")


def _never_left_out(messages: list[Message], task: Message) -> list[int]:
    """The indices fit never cuts: the leading system messages, the first and the latest
    user turn, the task and the latest step (from the last assistant turn after it on)."""
    at = next(i for i, m in enumerate(messages) if m is task)
    users = [i for i, m in enumerate(messages) if m.role == "user"]
    lead = next(i for i, m in enumerate(messages) if m.role != "system")
    tail = max((i for i, m in enumerate(messages) if m.role == "assistant" and i > at),
               default=len(messages) - 1)
    return sorted({*range(lead), users[0], users[-1], at, *range(tail, len(messages))})


def _minimum(messages: list[Message], task: Message) -> int:
    """An upper bound of what fit needs: what it never cuts, the turn holding the latest
    user turn (its tool results marked), and the note."""
    kept = _never_left_out(messages, task)
    last = max(i for i, m in enumerate(messages) if m.role == "user")
    start = max((i for i, m in enumerate(messages[:last]) if m.role == "assistant"),
                default=last)
    group = set(range(start, last)) if start > kept[0] else set()
    return sum(size(m) for i, m in enumerate(messages) if i in kept) + sum(
        min(size(messages[i]), 120) for i in group - set(kept)) + 100


def _cut(before: Message, after: Message) -> bool:
    """Whether ``after`` is the tool result ``before`` cut to fit, with its note."""
    found = CUT.search(after.content)
    if before.role != "tool" or not found:
        return False
    kept = after.content[:found.start()]
    return len(kept) >= 200 and before.content == kept + before.content[len(kept):] \
        and len(before.content) - len(kept) == int(found.group(1))


def _sent(out: tuple[Message, ...], messages: list[Message]) -> list[int]:
    """Where each message sent (after the system text) comes from, in order: the same
    message (fit passes it on as it is: found by identity, as messages may look alike), or
    it with its text replaced by a mark (or cut to fit), found as the next one that fits."""
    lead = next(i for i, m in enumerate(out) if m.role != "system")
    index = {id(m): i for i, m in enumerate(messages)}
    at, where = 0, []
    for message in out[lead:]:
        if id(message) in index:
            at = index[id(message)]
        else:
            while not (messages[at].role == message.role
                       and messages[at].tool_calls == message.tool_calls
                       and messages[at].tool_call_id == message.tool_call_id
                       and (message.content.startswith(MARK)
                            and message.content.endswith(
                                f", {len(messages[at].content)} characters]")
                            or _cut(messages[at], message))):
                at += 1  # an IndexError: not in order, or not from the conversation
        assert not where or at > where[-1], "the messages sent are out of order"
        where.append(at)
        at += 1
    return where


def _tight() -> tuple[list[Message], Message]:
    """Found by the property once: a limit of exactly what is never left out, one older
    character over it, a note saying so would cost 60: the latest result is cut."""
    messages = [Message("user", ""), Message("assistant", "a"), Message("user", ""),
                Message("assistant", "", tool_calls=(ToolCall("c0", "add", {"q": ""}),)),
                Message("tool", "ab" * 123 + "a", tool_call_id="c0")]
    return messages, messages[0]


@settings(max_examples=80, deadline=None)
@given(drawn=conversations(), share=st.floats(0.0, 1.2), above=st.booleans())
@example(drawn=_tight(), share=0.0, above=True)
def test_any_conversation_fits_any_limit_above_what_is_never_left_out(
        drawn: tuple[list[Message], Message], share: float, above: bool) -> None:
    """For any conversation and limit at least what is never left out, the result fits,
    keeps the order, keeps the system text, the task, the first and the latest user turn
    and the latest step whole, a tool call keeps its results (and a result its call), and
    the note counts what was left out. Below what is never left out, the latest step's tool
    results are cut to fit (each keeping 200 characters at least), else it is an error."""
    messages, task = drawn
    total = sum(map(size, messages))
    kept = _never_left_out(messages, task)
    floor = sum(size(messages[i]) for i in kept)
    # Drawn as a share of the size, or (mostly) of the room between the floor and it.
    limit = max(1, floor + int((total - floor) * share) if above else int(total * share))
    # Below the minimum, leaving older turns out may not fit either (the note saying so
    # costs more than it saves: 1 character left of room, a 60-character note): fit may
    # then cut the latest step's results, or fail.
    tight = limit < _minimum(messages, task)
    if tight:
        try:
            fit(messages, limit, keep=task)
        except ContextLimitError:
            return
    out = fit(messages, limit, keep=task)
    assert sum(map(size, out)) <= limit
    where = _sent(out, messages)
    lead = next(i for i, m in enumerate(messages) if m.role != "system")
    shift = len(out) - len(where)  # the system messages sent
    for i in kept:
        if i >= lead:
            sent = out[shift + where.index(i)]
            assert sent == messages[i] or (tight and _cut(messages[i], sent))
    systems = [m.content for m in out[:shift]]
    found = NOTE.search(systems[-1]) if systems else None
    if found:
        assert int(found.group(1)) == len(messages) - lead - len(where)
        assert int(found.group(2)) == sum(size(messages[i]) for i in range(lead, len(messages))
                                          if i not in where)
    else:
        assert len(where) == len(messages) - lead
    assert [s[:len(m.content)] for s, m in zip(systems, messages[:lead])] == [
        m.content for m in messages[:lead]]
    # A result sent answers a call sent, and a call sent keeps its results.
    called: dict[str, int] = {}
    pairs: set[tuple[int, int]] = set()
    for i, message in enumerate(messages):
        if message.role == "tool" and message.tool_call_id in called:
            pairs.add((called[message.tool_call_id], i))
        for call in message.tool_calls:
            called[call.id] = i
    sent = set(where)
    assert all((c in sent) == (r in sent) for c, r in pairs)


def test_fit_counts_each_message_a_bounded_number_of_times(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Leaving out the oldest of 2k or 8k turns sizes each message a bounded number of
    times: the work grows with the conversation, not with its square."""
    calls = 0
    real = _messages.size

    def counted(message: Message) -> int:
        nonlocal calls
        calls += 1
        return real(message)

    monkeypatch.setattr(_messages, "size", counted)
    counts = []
    for turns in (2000, 8000):
        calls = 0
        messages = _chat(turns)
        assert sum(map(real, fit(messages, 8000, keep=messages[-1]))) <= 8000
        counts.append(calls)
    assert counts[1] <= 4 * counts[0] + 100 and counts[1] <= 3 * 8001


def test_what_is_never_left_out_longer_than_the_limit_is_an_error_naming_sizes() -> None:
    """A task of 9,000 characters under a limit of 8,000: an error naming the limit, the
    sizes and the option, not a conversation silently over the limit."""
    messages = [Message("system", "be brief"), Message("user", "t" * 9000)]
    with pytest.raises(ContextLimitError) as caught:
        fit(messages, 8000)
    text = str(caught.value)
    assert "context limit of 8000 characters" in text and "9008" in text
    assert "the system text 8" in text and "--context-chars" in text


def test_a_latest_tool_result_longer_than_the_limit_is_cut_not_an_error() -> None:
    """A search returning 15,000 characters under ``--context-chars 8000``: the run goes
    on with the result cut to fit and a note of what was cut (it ended the run); what
    cannot be cut (the task itself too long) is still the error."""
    call = ToolCall(id="c1", name="web", arguments={"q": "x"})
    messages = [Message("system", "s"), Message("user", "the task"),
                Message("assistant", "", tool_calls=(call,)),
                Message("tool", "r" * 15_000, tool_call_id="c1"),
                Message("tool", "short", tool_call_id="c1")]
    out = fit(messages, 8000, keep=messages[1])
    assert sum(map(size, out)) <= 8000 and out[:3] == tuple(messages[:3])
    assert _cut(messages[3], out[3]) and out[4] == messages[4]
    with pytest.raises(ContextLimitError):
        fit([*messages[:1], Message("user", "t" * 9000), *messages[2:]], 8000)
