"""Work that must grow linearly with a stream: a tool call's arguments streamed in many
small fragments (a model writing a whole file through a tool, token by token)."""

from __future__ import annotations

import json

from aieng_openai._payload import StreamedCalls


class CountingText(str):
    """A fragment that tallies the characters an ``existing + fragment`` concatenation
    copies: appending to one growing string re-copies everything gathered so far at each
    fragment (quadratic in the arguments' length); gathering the fragments and joining them
    once copies each character once."""

    copied = 0

    def __radd__(self, other: str) -> str:
        CountingText.copied += len(other) + len(self)
        return str(other) + str(self)


def _arguments_streamed(fragments: int) -> tuple[int, str]:
    """The characters copied while gathering ``fragments`` argument pieces, and the call's
    whole arguments."""
    CountingText.copied = 0
    calls = StreamedCalls()
    calls.add([{"index": 0, "id": "call_1", "type": "function",
                "function": {"name": "write_file", "arguments": CountingText('{"text": "')}}])
    piece = [{"index": 0, "function": {"arguments": CountingText("abcd")}}]
    for _ in range(fragments):
        calls.add(piece)
    calls.add([{"index": 0, "function": {"arguments": CountingText('"}')}}])
    (call,) = calls.calls()
    return CountingText.copied, json.dumps(call.arguments)


def test_streamed_arguments_are_gathered_in_linear_work() -> None:
    small, small_args = _arguments_streamed(2_000)
    large, large_args = _arguments_streamed(8_000)
    assert json.loads(large_args) == {"text": "abcd" * 8_000}
    assert json.loads(small_args) == {"text": "abcd" * 2_000}
    # Four times the fragments: at most about four times the copying (not sixteen).
    assert large <= 4 * small + 100
    assert large <= 2 * len(large_args) + 100


def test_arguments_sent_whole_after_fragments_replace_them() -> None:
    calls = StreamedCalls()
    calls.add([{"index": 0, "id": "c", "function": {"name": "f", "arguments": '{"a": '}}])
    calls.add([{"index": 0, "function": {"arguments": {"b": 2}}}])
    (call,) = calls.calls()
    assert call.arguments == {"b": 2}
