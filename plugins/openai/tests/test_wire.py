"""What goes over the wire: request bodies, answers, embeddings, models, headers."""

from __future__ import annotations

import json
from typing import Any

import aieng_openai._component as component_module
import pytest
from _openai_double import (
    API_KEY,
    CHAT_MODEL,
    EMBED_MODEL,
    OTHER_MODEL,
    OpenAIServerDouble,
    Scripted,
    logprob_of,
)
from aieng_hookspecs.types import Message, Request, TokenLogprob, ToolCall, ToolSpec
from aieng_openai import OpenAIBackend, OpenAIError

pytestmark = pytest.mark.anyio


def ask(text: str = "hello there", **params: Any) -> Request:
    return Request(messages=(Message("user", text),), **params)


def answer(**message: Any) -> Scripted:
    """A scripted chat-completions answer with ``message`` as choice 0's message."""
    return Scripted(body=json.dumps({
        "id": "x", "object": "chat.completion", "model": CHAT_MODEL,
        "choices": [{"index": 0, "finish_reason": message.pop("finish", "stop"),
                     "message": {"role": "assistant", **message}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}))


async def test_request_body_carries_every_parameter(double: OpenAIServerDouble,
                                                    make_backend: Any) -> None:
    """Messages, model, temperature, top_p, max_tokens, stop, seed, the JSON schema and the
    tools all reach the server in the OpenAI format; top_k only when asked for."""
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}}
    tool = ToolSpec(name="lookup", description="Look a word up",
                    parameters={"type": "object", "properties": {"q": {"type": "string"}}})
    earlier = ToolCall(id="call_1", name="lookup", arguments={"q": "green"})
    request = Request(
        messages=(Message("system", "Be brief."), Message("user", "Mix blue and yellow?"),
                  Message("assistant", "", tool_calls=(earlier,)),
                  Message("tool", "green", tool_call_id="call_1")),
        model=OTHER_MODEL, temperature=0.5, top_p=0.9, top_k=40, max_tokens=12,
        stop=("END",), seed=7, response_schema=schema, tools=(tool,))
    backend: OpenAIBackend = make_backend(models=[OTHER_MODEL])
    extended_backend: OpenAIBackend = make_backend(
        models=[OTHER_MODEL], send_top_k=True, max_tokens_field="max_completion_tokens")
    try:
        assert await backend.aieng_generate(request) is not None
        assert await extended_backend.aieng_generate(request) is not None
    finally:
        await backend.aclose()
        await extended_backend.aclose()
    plain, extended = (call.body for call in double.calls_to("chat/completions"))
    assert plain["model"] == OTHER_MODEL
    assert plain["messages"][0] == {"role": "system", "content": "Be brief."}
    assert plain["messages"][2]["tool_calls"] == [{"id": "call_1", "type": "function", "function": {
        "name": "lookup", "arguments": json.dumps({"q": "green"})}}]
    assert plain["messages"][3] == {"role": "tool", "content": "green", "tool_call_id": "call_1"}
    assert (plain["temperature"], plain["top_p"], plain["max_tokens"]) == (0.5, 0.9, 12)
    assert (plain["stop"], plain["seed"]) == (["END"], 7)
    assert plain["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "response", "schema": schema, "strict": True}}
    assert plain["tools"][0]["function"]["name"] == "lookup"
    assert "top_k" not in plain and "stream" not in plain
    assert extended["top_k"] == 40 and extended["max_completion_tokens"] == 12
    assert "max_tokens" not in extended


async def test_defaults_are_left_out(double: OpenAIServerDouble, make_backend: Any) -> None:
    """A request without stop, seed, schema or tools sends none of them, and the default
    model; the bearer key and extra headers are sent."""
    backend: OpenAIBackend = make_backend(headers={"X-Team": "search"})
    completion = await backend.aieng_generate(ask("hi"))
    await backend.aclose()
    assert completion is not None and completion.text == "You said: hi"
    call = double.calls_to("chat/completions")[0]
    assert call.body["model"] == CHAT_MODEL
    assert not {"stop", "seed", "response_format", "tools", "top_k"} & set(call.body)
    assert call.headers["authorization"] == f"Bearer {API_KEY}"
    assert call.headers["x-team"] == "search"


async def test_completion_fields(double: OpenAIServerDouble, make_backend: Any) -> None:
    """Text, finish reason, usage and model come from the answer; a cut answer is
    ``length``."""
    backend: OpenAIBackend = make_backend()
    completion = await backend.aieng_generate(ask("one two three four five", max_tokens=3))
    await backend.aclose()
    assert completion is not None
    assert completion.text == "You said: one" and completion.finish_reason == "length"
    assert completion.usage.completion_tokens == 3
    assert completion.model == CHAT_MODEL


async def test_logprobs_are_asked_for_and_read(double: OpenAIServerDouble,
                                              make_backend: Any) -> None:
    """A request asking for log-probabilities (``metadata["logprobs"]``) sends
    ``logprobs: true`` and gets each token's from ``choices[0].logprobs.content``; a
    request that does not ask sends nothing and gets none."""
    backend: OpenAIBackend = make_backend()
    scored = await backend.aieng_generate(ask("hi there", metadata={"logprobs": True}))
    plain = await backend.aieng_generate(ask("hi there"))
    await backend.aclose()
    asked, not_asked = (call.body for call in double.calls_to("chat/completions"))
    assert asked["logprobs"] is True and "logprobs" not in not_asked
    assert scored is not None and plain is not None and plain.logprobs is None
    assert scored.logprobs == tuple(TokenLogprob(token, logprob_of(index)) for index, token
                                    in enumerate(["You", " said:", " hi", " there"]))


@pytest.mark.parametrize("logprobs", [
    {"content": [{"token": "a", "logprob": "low"}]},
    {"content": [{"logprob": -1.0}]},
    {"content": {"token": "a"}},
])
async def test_malformed_logprobs_are_protocol_errors(double: OpenAIServerDouble,
                                                      make_backend: Any,
                                                      logprobs: dict[str, Any]) -> None:
    """Log-probabilities that are not tokens with numbers are the server's fault (a
    protocol error), never a ValueError that would read as the caller's."""
    double.script("chat/completions", Scripted(body=json.dumps({"choices": [{
        "index": 0, "finish_reason": "stop", "logprobs": logprobs,
        "message": {"role": "assistant", "content": "a"}}]})))
    backend: OpenAIBackend = make_backend()
    with pytest.raises(OpenAIError, match="logprobs") as caught:
        await backend.aieng_generate(ask(metadata={"logprobs": True}))
    await backend.aclose()
    assert caught.value.kind == "protocol"


async def test_tool_calls_are_decoded(double: OpenAIServerDouble, make_backend: Any) -> None:
    """An answer calling tools gives ToolCalls with decoded arguments and ``tool_calls``."""
    double.script("chat/completions", answer(content=None, finish="tool_calls", tool_calls=[
        {"id": "call_9", "type": "function",
         "function": {"name": "lookup", "arguments": "{\"q\": \"Zürich\"}"}}]))
    backend: OpenAIBackend = make_backend()
    completion = await backend.aieng_generate(ask())
    await backend.aclose()
    assert completion is not None
    assert completion.text == "" and completion.finish_reason == "tool_calls"
    assert completion.tool_calls == (ToolCall(id="call_9", name="lookup",
                                              arguments={"q": "Zürich"}),)


@pytest.mark.parametrize("body", [
    "not json at all",
    json.dumps({"choices": []}),
    json.dumps({"choices": [{"message": {"content": 5}}]}),
    json.dumps({"choices": [{"message": {"tool_calls": [
        {"id": "c", "function": {"name": "f", "arguments": "{broken"}}]}}]}),
])
async def test_malformed_answers_are_protocol_errors(double: OpenAIServerDouble,
                                                     make_backend: Any, body: str) -> None:
    """An answer that breaks the API's promises raises a protocol error with an excerpt."""
    double.script("chat/completions", Scripted(body=body))
    backend: OpenAIBackend = make_backend()
    with pytest.raises(OpenAIError) as caught:
        await backend.aieng_generate(ask())
    await backend.aclose()
    assert caught.value.kind == "protocol" and caught.value.body


async def test_stream_sends_stream_options_and_ends_with_usage(
        double: OpenAIServerDouble, make_backend: Any) -> None:
    """A stream asks for usage, numbers its deltas, and its last delta carries the finish
    reason and the usage of the server's final chunk."""
    backend: OpenAIBackend = make_backend()
    stream = backend.aieng_stream(ask("a b c"))
    assert stream is not None
    deltas = [delta async for delta in stream]
    await backend.aclose()
    body = double.calls_to("chat/completions")[0].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert "".join(d.text for d in deltas) == "You said: a b c"
    assert [d.index for d in deltas] == list(range(len(deltas)))
    last = deltas[-1]
    assert last.finish_reason == "stop" and last.usage is not None
    assert last.usage.completion_tokens == 5


async def test_stream_without_usage_option(double: OpenAIServerDouble,
                                           make_backend: Any) -> None:
    """With ``stream_usage = false`` no stream_options are sent and the last delta has no
    usage (the kernel then counts)."""
    backend: OpenAIBackend = make_backend(stream_usage=False)
    stream = backend.aieng_stream(ask())
    assert stream is not None
    deltas = [delta async for delta in stream]
    await backend.aclose()
    assert "stream_options" not in double.calls_to("chat/completions")[0].body
    assert deltas[-1].finish_reason == "stop" and deltas[-1].usage is None


async def test_embeddings_in_order_and_batched(double: OpenAIServerDouble, make_backend: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Embeddings come back one per text in input order, batches split, with the
    embedding model; no texts make no call."""
    monkeypatch.setattr(component_module, "EMBED_BATCH", 2)
    backend: OpenAIBackend = make_backend()
    texts = ["alpha", "beta gamma", "alpha", "delta", "Zürich 東京"]
    vectors = await backend.aieng_embed(texts, None)
    assert await backend.aieng_embed([], None) == []
    await backend.aclose()
    assert vectors is not None and len(vectors) == 5 and {len(v) for v in vectors} == {32}
    assert vectors[0] == vectors[2] and vectors[0] != vectors[1]
    calls = double.calls_to("embeddings")
    assert [len(call.body["input"]) for call in calls] == [2, 2, 1]
    assert {call.body["model"] for call in calls} == {EMBED_MODEL}


async def test_embeddings_reordered_by_index(double: OpenAIServerDouble,
                                             make_backend: Any) -> None:
    """A server answering out of order is put back in order by each item's index."""
    double.script("embeddings", Scripted(body=json.dumps({"data": [
        {"index": 1, "embedding": [0.0, 1.0]}, {"index": 0, "embedding": [1.0, 0.0]}]})))
    backend: OpenAIBackend = make_backend()
    vectors = await backend.aieng_embed(["first", "second"], EMBED_MODEL)
    await backend.aclose()
    assert vectors == [[1.0, 0.0], [0.0, 1.0]]


async def test_other_models_are_not_mine(double: OpenAIServerDouble, make_backend: Any) -> None:
    """A model outside ``model``, ``embedding_model`` and ``models`` gets None from every
    hook, without a call; a listed one is served."""
    backend: OpenAIBackend = make_backend(models=[OTHER_MODEL])
    assert await backend.aieng_generate(ask(model="gpt-unknown")) is None
    assert backend.aieng_stream(ask(model="gpt-unknown")) is None
    assert await backend.aieng_embed(["x"], "gpt-unknown") is None
    assert double.calls == []
    assert await backend.aieng_generate(ask(model=OTHER_MODEL)) is not None
    await backend.aclose()


async def test_list_models(double: OpenAIServerDouble, make_backend: Any) -> None:
    """``list_models`` reads ``GET /models``; an item whose id is not a string (``null``)
    is left out, not listed as ``"None"``."""
    backend: OpenAIBackend = make_backend()
    assert await backend.list_models() == [CHAT_MODEL, EMBED_MODEL, OTHER_MODEL]
    double.script("models", Scripted(body=json.dumps({"object": "list", "data": [
        {"id": None}, {"id": 7}, {"id": ""}, {"id": "m1"}, "junk"]})))
    assert await backend.list_models() == ["m1"]
    await backend.aclose()


async def test_regex_goes_in_the_configured_field(double: OpenAIServerDouble,
                                                  make_backend: Any) -> None:
    """``metadata["regex"]`` is sent in ``regex_field`` (vLLM's ``guided_regex``); without
    that option, or with a regex that is not a string, the request is refused before
    anything is sent — never passed on unconstrained."""
    request = Request(messages=(Message("user", "year?"),), metadata={"regex": "[0-9]{4}"})
    relay: OpenAIBackend = make_backend(regex_field="guided_regex")
    plain: OpenAIBackend = make_backend()
    try:
        assert await relay.aieng_generate(request) is not None
        with pytest.raises(ValueError, match="regex_field"):
            await plain.aieng_generate(request)
        with pytest.raises(ValueError, match="must be a string"):
            await relay.aieng_generate(Request(messages=(Message("user", "x"),),
                                               metadata={"regex": 4}))
    finally:
        await relay.aclose()
        await plain.aclose()
    calls = double.calls_to("chat/completions")
    assert len(calls) == 1 and calls[0].body["guided_regex"] == "[0-9]{4}"


@pytest.mark.parametrize("flag", ["false", "yes", 1, 0])
async def test_a_logprobs_flag_must_be_a_boolean(double: OpenAIServerDouble, make_backend: Any,
                                                 flag: object) -> None:
    """``metadata["logprobs"] = "false"`` is refused before anything is sent, not read as
    true by its truthiness (the local backends refuse it too)."""
    backend: OpenAIBackend = make_backend()
    try:
        with pytest.raises(ValueError, match="metadata\\['logprobs'\\] must be true or false"):
            await backend.aieng_generate(Request(messages=(Message("user", "x"),),
                                                 metadata={"logprobs": flag}))
    finally:
        await backend.aclose()
    assert double.calls_to("chat/completions") == []
