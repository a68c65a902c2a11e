"""``tool`` messages are checked as OpenAI checks them: each answers, by ``tool_call_id``,
a call of the assistant message before it (only other tool messages between)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from _support import LoopbackServer
from aieng_gateway import Gateway

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {}}}}
USER = {"role": "user", "content": "Weather in Oslo and Rome?"}
ASKED = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_a", "type": "function",
     "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
    {"id": "call_b", "type": "function",
     "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]}


@pytest.fixture
def client(served: tuple[Gateway, LoopbackServer], api_key: str) -> Iterator[httpx.Client]:
    """An authenticated client of the module's gateway (closed after the test)."""
    with served[1].client(timeout=20,
                          headers={"Authorization": f"Bearer {api_key}"}) as http:
        yield http


def _post(client: httpx.Client, messages: list[dict[str, Any]],
          **extra: Any) -> httpx.Response:
    return client.post("/v1/chat/completions",
                       json={"model": "test", "messages": messages, **extra})


def test_tool_answers_to_the_calls_before_them_pass(client: httpx.Client) -> None:
    """Two answers, in any order, to the two calls of the assistant message before them."""
    messages = [USER, ASKED, {"role": "tool", "tool_call_id": "call_b", "content": "20 C"},
                {"role": "tool", "tool_call_id": "call_a", "content": "-3 C"}]
    response = _post(client, messages, tools=[WEATHER])
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(("messages", "param", "words"), [
    # No tool_call_id: OpenAI's "Missing parameter 'tool_call_id'".
    ([USER, ASKED, {"role": "tool", "content": "-3 C"}], "messages[2].tool_call_id",
     "required"),
    ([USER, ASKED, {"role": "tool", "tool_call_id": None, "content": "-3 C"}],
     "messages[2].tool_call_id", "required"),
    # No assistant message with tool_calls before it.
    ([USER, {"role": "tool", "tool_call_id": "call_a", "content": "-3 C"}],
     "messages[1].role", "tool_calls"),
    ([{"role": "tool", "tool_call_id": "call_a", "content": "-3 C"}, USER],
     "messages[0].role", "tool_calls"),
    # A user turn between the calls and the answer ends the calls' turn.
    ([USER, ASKED, USER, {"role": "tool", "tool_call_id": "call_a", "content": "-3 C"}],
     "messages[3].role", "tool_calls"),
    # An id that is none of the calls'.
    ([USER, ASKED, {"role": "tool", "tool_call_id": "call_zz", "content": "-3 C"}],
     "messages[2].tool_call_id", "call_zz"),
])
def test_tool_messages_that_answer_no_call_are_400(client: httpx.Client,
                                                   messages: list[dict[str, Any]],
                                                   param: str, words: str) -> None:
    """As OpenAI: a 400 naming the field, where the message used to reach the model as an
    answer to nothing (a local model then reads a tool result it never asked for)."""
    for stream in (False, True):
        response = _post(client, messages, tools=[WEATHER], stream=stream)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == param and error["type"] == "invalid_request_error"
        assert words in error["message"] and param in error["message"]
