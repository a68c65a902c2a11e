"""The gateway over a real uvicorn server on 127.0.0.1: the OpenAI routes, auth, limits,
errors, streaming, feedback, metrics and logs."""

from __future__ import annotations

import base64
import json
import socket
import sqlite3
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from _support import LoopbackServer, logprob_of, make_gateway, post_raw
from aieng_gateway import Gateway
from prometheus_client.parser import text_string_to_metric_families


def _client(server: LoopbackServer, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return server.client(headers=headers, timeout=20)


@pytest.fixture
def client(served: tuple[Gateway, LoopbackServer], api_key: str) -> Iterator[httpx.Client]:
    """An authenticated client of the module's gateway (closed after the test: its pooled
    sockets would otherwise be left to the garbage collector, a ResourceWarning)."""
    with _client(served[1], api_key) as http:
        yield http


def _chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "test", "messages": [{"role": "user", "content": text}], **extra}


def _feedback_rows(gateway: Gateway, run_id: str) -> list[tuple[str, str]]:
    path = Path(gateway.pipeline.components["feedback"].path)  # type: ignore[attr-defined]
    with sqlite3.connect(path) as db:
        return db.execute("SELECT kind, metadata FROM feedback WHERE run_id LIKE ?",
                          (run_id,)).fetchall()


def _sse(text: str) -> list[Any]:
    events = []
    for line in text.splitlines():
        if line.startswith("data: "):
            payload = line[6:]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
        else:
            assert line == "", line
    return events


def test_chat_completion(client: httpx.Client) -> None:
    """A chat completion answers in OpenAI's shape with usage and the run id twice."""
    response = client.post("/v1/chat/completions", json=_chat("hello there", max_tokens=50,
                                                              temperature=0.2, seed=1))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "test"
    assert body["choices"][0]["message"] == {"role": "assistant",
                                             "content": "You said: hello there"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}
    assert response.headers["x-aieng-run-id"] == body["id"]


def test_max_tokens_and_stop_reach_the_backend(client: httpx.Client) -> None:
    """max_tokens cuts the answer (finish_reason length); sampling fields are passed on."""
    body = client.post("/v1/chat/completions",
                       json=_chat("a b c d e", max_tokens=2, stop=["zz"], top_p=0.5)).json()
    assert body["choices"][0]["message"]["content"] == "You said:"
    assert body["choices"][0]["finish_reason"] == "length"


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


def test_tool_calls_are_forwarded_both_ways(client: httpx.Client) -> None:
    """``tools``, ``tool_choice``, ``parallel_tool_calls`` and a conversation's earlier
    calls and results reach the backend; its calls come back as OpenAI writes them
    (arguments a JSON string, content null beside them), streamed as one chunk of whole
    calls before the finish chunk."""
    messages = [{"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_0", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
                {"role": "tool", "tool_call_id": "call_0", "content": "-3 C"},
                {"role": "user", "content": "And in Rome?"}]
    body = {"model": "test", "messages": messages, "tools": [WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": False}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Calling."
    [call] = choice["message"]["tool_calls"]
    assert call["id"] == "call_1" and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    arguments = json.loads(call["function"]["arguments"])
    assert arguments == {"prompt": "And in Rome?", "choice": body["tool_choice"],
                         "parallel": False, "roles": ["user", "assistant", "tool", "user"],
                         "earlier": [["get_weather", {"city": "Oslo"}]]}
    with client.stream("POST", "/v1/chat/completions",
                       json={**body, "stream": True}) as streamed:
        events = _sse(streamed.read().decode())
    deltas = [e["choices"][0] for e in events[:-1] if e["choices"]]
    assert "".join(d["delta"].get("content") or "" for d in deltas) == "Calling."
    [with_calls] = [d for d in deltas if "tool_calls" in d["delta"]]
    assert with_calls["delta"]["tool_calls"] == [{"index": 0, **call}]
    assert deltas[-1]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(("extra", "param"), [
    ({"tools": [{"type": "retrieval"}]}, "tools[0]"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]},
     "tools[0].function.name"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
     "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER], "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
])
def test_bad_tool_fields_are_422(client: httpx.Client, extra: dict[str, Any],
                                 param: str) -> None:
    """Tools the gateway cannot forward are refused with the field at fault."""
    response = client.post("/v1/chat/completions", json=_chat("x", **extra))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == param


@pytest.mark.parametrize(("extra", "param"), [
    ({"functions": [WEATHER["function"]]}, "functions"),
    ({"function_call": "auto"}, "function_call"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"frequency_penalty": -1}, "frequency_penalty"),
    ({"frequency_penalty": True}, "frequency_penalty"),
])
def test_fields_the_gateway_cannot_honour_are_422(client: httpx.Client, extra: dict[str, Any],
                                                  param: str) -> None:
    """The legacy functions API, a logit bias and penalties were dropped silently: the
    client got an answer to another question (no function ever called, no bias applied).
    They are refused, naming the field; their neutral values (what SDKs send by default)
    still pass."""
    response = client.post("/v1/chat/completions", json=_chat("x", **extra))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == param
    neutral = {"presence_penalty": 0, "frequency_penalty": 0.0, "logit_bias": {},
               "functions": None, "function_call": None}
    assert client.post("/v1/chat/completions",
                       json=_chat("x", **neutral)).status_code == 200


def test_streaming_sse_format(client: httpx.Client) -> None:
    """A stream is chat.completion.chunk events, a finish chunk, the usage chunk it asked
    for, [DONE]."""
    with client.stream("POST", "/v1/chat/completions",
                       json=_chat("one two", stream=True,
                                  stream_options={"include_usage": True})) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        run_id = response.headers["x-aieng-run-id"]
        events = _sse(response.read().decode())
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["id"] == run_id and c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "You said: one two"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4


@pytest.mark.parametrize("options", [None, {}, {"include_usage": False}])
def test_stream_without_usage_chunk(client: httpx.Client,
                                    options: dict[str, Any] | None) -> None:
    """Without stream_options.include_usage = true there is no usage chunk, as OpenAI
    streams: every chunk has a choice, so its quickstart loop
    (``chunk.choices[0].delta.content``) reads the whole stream."""
    extra = {} if options is None else {"stream_options": options}
    response = client.post("/v1/chat/completions", json=_chat("x y", stream=True, **extra))
    events = _sse(response.text)
    assert all("usage" not in e for e in events[:-1]) and events[-1] == "[DONE]"
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert text == "You said: x y"


def test_models_health_and_embeddings(client: httpx.Client) -> None:
    """/v1/models lists the pipeline and its backend; /v1/embeddings uses aieng_embed."""
    models = client.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["test", "llm"]
    assert client.get("/healthz").json() == {"status": "ok", "pipeline": "test"}
    body = client.post("/v1/embeddings", json={"input": ["a b", "c"], "model": "hash"}).json()
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert len(body["data"][0]["embedding"]) == 16
    unknown = client.post("/v1/embeddings", json={"input": "a", "model": "nope"})
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]["message"]


def test_retrieve_one_model(client: httpx.Client) -> None:
    """GET /v1/models/{id} (the SDK's ``models.retrieve``) answers a listed model's object,
    and 404 ``model_not_found`` for any other id."""
    listed = client.get("/v1/models").json()["data"]
    for model in listed:
        one = client.get(f"/v1/models/{model['id']}")
        assert one.status_code == 200, one.text
        assert one.json() == model
    missing = client.get("/v1/models/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
    assert missing.json()["error"]["param"] == "model"


def test_embeddings_as_base64(client: httpx.Client) -> None:
    """``encoding_format: "base64"``, what the openai SDK sends when the caller names no
    format, is answered as OpenAI does: each vector's little-endian float32 bytes."""
    floats = client.post("/v1/embeddings", json={"input": ["a b", "c"]}).json()
    packed = client.post("/v1/embeddings", json={"input": ["a b", "c"],
                                                 "encoding_format": "base64"})
    assert packed.status_code == 200, packed.text
    for plain, encoded in zip(floats["data"], packed.json()["data"], strict=True):
        raw = base64.b64decode(encoded["embedding"])
        vector = struct.unpack(f"<{len(raw) // 4}f", raw)
        assert vector == pytest.approx(plain["embedding"], rel=1e-6, abs=1e-7)
        assert len(vector) == 16
    for wrong in ("hex", 0, False, [], {}):  # falsy non-strings too: not "float"
        refused = client.post("/v1/embeddings", json={"input": "a", "encoding_format": wrong})
        assert refused.status_code == 422, (wrong, refused.text)
        assert refused.json()["error"]["param"] == "encoding_format"



def test_embeddings_dimensions_are_honoured_or_refused(client: httpx.Client) -> None:
    """``dimensions`` is never silently ignored: the embedder's own size (16 here) is
    answered, another size is a 422 naming it (not 16 numbers for a 4-dimension index),
    and a value that is not a positive integer is a 422 too."""
    same = client.post("/v1/embeddings", json={"input": ["a", "b"], "dimensions": 16})
    assert same.status_code == 200, same.text
    assert [len(d["embedding"]) for d in same.json()["data"]] == [16, 16]
    other = client.post("/v1/embeddings", json={"input": "a", "dimensions": 4})
    assert other.status_code == 422, other.text
    assert other.json()["error"]["param"] == "dimensions"
    assert "16" in other.json()["error"]["message"]
    for wrong in (0, -3, 2.5, "16", True):
        refused = client.post("/v1/embeddings", json={"input": "a", "dimensions": wrong})
        assert refused.status_code == 422, (wrong, refused.text)
        assert refused.json()["error"]["param"] == "dimensions"

def test_embeddings_for_the_pipelines_own_model(client: httpx.Client) -> None:
    """The pipeline's name, the first model /v1/models lists, embeds with its default
    embedder, as no model does (and as it generates in a chat)."""
    listed = client.get("/v1/models").json()["data"][0]["id"]
    named = client.post("/v1/embeddings", json={"input": ["a b", "c"], "model": listed})
    assert named.status_code == 200, named.text
    unnamed = client.post("/v1/embeddings", json={"input": ["a b", "c"]}).json()
    assert [d["embedding"] for d in named.json()["data"]] == \
        [d["embedding"] for d in unnamed["data"]]
    assert named.json()["model"] == listed


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"},
                                     {"Authorization": "Bearer aieng-00000000-" + "x" * 43}])
def test_missing_or_invalid_key_is_401(served: tuple[Gateway, LoopbackServer],
                                       headers: dict[str, str]) -> None:
    """No key or a wrong key: 401 with a JSON error and a Bearer challenge."""
    response = httpx.post(f"{served[1].url}/v1/chat/completions", json=_chat("x"),
                          headers=headers, trust_env=False)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "API key" in response.json()["error"]["message"]
    assert httpx.get(f"{served[1].url}/metrics", headers=headers,
                     trust_env=False).status_code == 401


def test_revoked_key_is_refused(served: tuple[Gateway, LoopbackServer]) -> None:
    """A revoked key stops working (after the store's refresh)."""
    gateway, server = served
    assert gateway.keys is not None
    key, record = gateway.keys.create("temp")
    gateway.keys.refresh(force=True)
    with _client(server, key) as client:
        assert client.get("/v1/models").status_code == 200
        gateway.keys.revoke(record.id)
        gateway.keys.refresh(force=True)
        assert client.get("/v1/models").status_code == 401


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (json.dumps({"model": "test"}).encode(), 400, "messages: required"),
    (json.dumps(_chat("x", max_tokens=-1)).encode(), 422, "max_tokens"),
    # Both token limits are checked, whichever one is used.
    (json.dumps(_chat("x", max_tokens=5, max_completion_tokens=-1)).encode(), 422,
     "max_completion_tokens"),
    # As OpenAI: stream_options only with "stream": true.
    (json.dumps(_chat("x", stream_options={"include_usage": True})).encode(), 400,
     "stream_options"),
    (json.dumps(_chat("x", stream=False, stream_options={"include_usage": False})).encode(),
     400, "stream_options"),
    (json.dumps(_chat("x", temperature="hot")).encode(), 422, "temperature"),
    (json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(), 422,
     "unknown role"),
    (json.dumps({"messages": "hi"}).encode(), 422, "messages"),
    (json.dumps(_chat("x", response_format={"type": "xml"})).encode(), 422, "response_format"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
    (json.dumps(_chat("x", temperature=10**400)).encode(), 422, "temperature"),
    (json.dumps(_chat("x", top_p=-(10**400))).encode(), 422, "top_p"),
    (json.dumps(_chat("x", top_p=-0.1)).encode(), 422, "top_p"),
    (json.dumps(_chat("x", seed=10**30)).encode(), 422, "seed"),
    (json.dumps(_chat("x", seed=-(2**63) - 1)).encode(), 422, "seed"),
    (json.dumps(_chat("")).encode(), 400, "messages[0].content"),
    (json.dumps({"messages": [{"role": "user"}]}).encode(), 400, "messages[0].content"),
    (json.dumps({"messages": [{"role": "system", "content": "be brief"},
                              {"role": "user", "content": None}]}).encode(), 400,
     "messages[1].content"),
    (json.dumps(_chat([])).encode(), 400, "messages[0].content"),
    # An image part is refused naming it, never dropped while the text parts are answered.
    (json.dumps(_chat([{"type": "text", "text": "what is this?"},
                       {"type": "image_url", "image_url": {"url": "data:,"}}])).encode(),
     422, "messages[0].content[1]"),
    # A lone UTF-16 surrogate, escaped or as (surrogatepass) bytes, is no text to answer.
    (json.dumps(_chat("a \ud800 b")).encode(), 400, "surrogate"),
    (json.dumps(_chat("a \udfff")).replace("\\udfff", "\\uDFFF").encode(), 400,
     "surrogate"),
    (json.dumps(_chat("a \ud800 b"), ensure_ascii=False).encode("utf-8", "surrogatepass"),
     400, "surrogate"),
])
def test_malformed_requests(client: httpx.Client, body: bytes, status: int, words: str) -> None:
    """A malformed request (an integer too large for a float included) is a 400/422 naming
    what is wrong."""
    response = client.post("/v1/chat/completions", content=body,
                           headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert words in response.json()["error"]["message"]
    if words.startswith("messages["):  # a user message without text, as OpenAI answers it
        assert response.json()["error"]["param"] == words


def test_body_over_limit_is_413(client: httpx.Client) -> None:
    """A body over --max-body (1 MB by default) is refused with 413, chunked or not."""
    big = json.dumps(_chat("x" * 1_100_000)).encode()
    assert client.post("/v1/chat/completions", content=big).status_code == 413

    def chunks() -> Any:
        for _ in range(11):
            yield b" " * 100_000

    response = client.post("/v1/chat/completions", content=chunks())
    assert response.status_code == 413
    assert "over the limit" in response.json()["error"]["message"]


def test_upstream_errors_are_502_and_504(client: httpx.Client) -> None:
    """A failing backend is a 502 with the pipeline's error; a hanging one a 504. A stream
    that fails before its first token gets the same status and JSON body (the headers wait
    for the first token), as OpenAI answers."""
    failed = client.post("/v1/chat/completions", json=_chat("FAIL now"))
    assert failed.status_code == 502
    assert failed.headers["x-aieng-run-id"].startswith("chatcmpl-")  # to find it in logs
    assert "upstream refused the connection" in failed.json()["error"]["message"]
    slow = client.post("/v1/chat/completions", json=_chat("SLOW please"))
    assert slow.status_code == 504
    for prompt, status, code in (("FAIL", 502, "upstream_error"),
                                 ("SLOW", 504, "upstream_timeout")):
        streamed = client.post("/v1/chat/completions", json=_chat(prompt, stream=True))
        assert streamed.status_code == status, streamed.text
        assert streamed.headers["content-type"] == "application/json"
        assert streamed.json()["error"]["code"] == code
        assert streamed.headers["x-aieng-run-id"].startswith("chatcmpl-")
    assert "upstream refused" in client.post(
        "/v1/chat/completions", json=_chat("FAIL", stream=True)).json()["error"]["message"]


def test_stream_error_after_the_first_token_stays_in_the_stream(client: httpx.Client) -> None:
    """Once a token is out the status is sent: a later failure is a data: {"error"} event
    before [DONE]."""
    streamed = client.post("/v1/chat/completions", json=_chat("BREAK here", stream=True))
    assert streamed.status_code == 200
    events = _sse(streamed.text)
    assert events[0]["choices"][0]["delta"]["content"] == "You"
    assert "upstream dropped" in events[-2]["error"]["message"] and events[-1] == "[DONE]"


def test_disconnect_before_the_first_token_cancels_the_run(tmp_path: Path) -> None:
    """A streaming client that goes away while the headers still wait for the first token
    cancels the run (recorded as early_stop, nothing sent) rather than waiting it out."""
    gateway = make_gateway(tmp_path, timeout=60)
    assert gateway.keys is not None
    key, _ = gateway.keys.create("early")
    with LoopbackServer(gateway.app) as server:
        backend = gateway.pipeline.components["llm"]
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            post_raw(sock, key, _chat("SLOW to start", stream=True))
            assert backend.slow.wait(10)  # the run waits for its first token
        rows = _wait_rows(gateway, "%")
    assert rows and rows[0][0] == "early_stop"
    assert json.loads(rows[0][1])["chunks_sent"] == 0


def test_disconnect_of_a_json_client_cancels_the_run(tmp_path: Path) -> None:
    """A client waiting for a whole (non-streamed) answer that goes away (its timeout, then
    a retry) cancels the run: the backend stops generating for nobody, and the request is
    logged as 499."""
    gateway = make_gateway(tmp_path, timeout=60)
    assert gateway.keys is not None
    key, _ = gateway.keys.create("impatient")
    with LoopbackServer(gateway.app) as server:
        backend = gateway.pipeline.components["llm"]
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            post_raw(sock, key, _chat("SLOW to answer"))
            assert backend.slow.wait(10)  # the run is generating
        assert backend.cancelled.wait(10)  # and the disconnect cancelled it
        deadline = time.monotonic() + 10
        while not gateway.requests[("/v1/chat/completions", 499)] \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gateway.requests[("/v1/chat/completions", 499)] == 1


def test_top_p_zero_is_greedy(client: httpx.Client,
                              served: tuple[Gateway, LoopbackServer]) -> None:
    """top_p 0 (OpenAI accepts 0..1) keeps only the likeliest token: greedy decoding,
    temperature 0 whatever the temperature sent."""
    response = client.post("/v1/chat/completions",
                           json=_chat("greedy please", top_p=0, temperature=1.5))
    assert response.status_code == 200, response.text
    seen = served[0].pipeline.components["llm"].requests[-1]  # type: ignore[attr-defined]
    assert seen.prompt == "greedy please"
    assert (seen.temperature, seen.top_p) == (0.0, 1.0)


@pytest.mark.parametrize("seed", [2**63 - 1, -(2**63)])
def test_seed_takes_the_int64_range(client: httpx.Client, seed: int) -> None:
    """Seeds up to the ends of a signed 64-bit integer are answered."""
    response = client.post("/v1/chat/completions", json=_chat("seeded", seed=seed))
    assert response.status_code == 200, response.text


def test_logprobs_round_trip(client: httpx.Client) -> None:
    """``logprobs: true`` answers each token's log-probability in OpenAI's shape (token,
    logprob, bytes, top_logprobs), in a JSON answer and on every streamed chunk of text."""
    body = client.post("/v1/chat/completions",
                       json=_chat("héllo", logprobs=True, top_logprobs=0)).json()
    content = body["choices"][0]["logprobs"]["content"]
    assert [c["token"] for c in content] == ["You", " said:", " héllo"]
    assert [c["logprob"] for c in content] == [logprob_of(i) for i in range(3)]
    assert content[2]["bytes"] == list(" héllo".encode()) and content[2]["top_logprobs"] == []
    streamed = client.post("/v1/chat/completions", json=_chat("héllo", logprobs=True,
                                                              stream=True))
    chunks = [e["choices"][0] for e in _sse(streamed.text)[:-1]]
    texts = [c for c in chunks if c["delta"].get("content")]
    assert [c["logprobs"]["content"] for c in texts] == [[c] for c in content]
    plain = client.post("/v1/chat/completions", json=_chat("héllo")).json()
    assert plain["choices"][0]["logprobs"] is None


@pytest.mark.parametrize("extra, param, status", [
    ({"logprobs": True, "top_logprobs": 2}, "top_logprobs", 422),
    ({"top_logprobs": 0}, "top_logprobs", 422),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", 422),
    ({"logprobs": "yes"}, "logprobs", 422),
])
@pytest.mark.parametrize("stream", [False, True])
def test_logprobs_that_cannot_be_given_are_4xx(client: httpx.Client, extra: dict[str, Any],
                                               param: str, status: int, stream: bool) -> None:
    """Alternatives per token (top_logprobs > 0: the contract has none) and malformed
    fields are refused naming the field, never answered with a silent null."""
    response = client.post("/v1/chat/completions", json=_chat("x", stream=stream, **extra))
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param


@pytest.mark.parametrize("stream", [False, True])
def test_logprobs_of_a_backend_without_them_are_422(client: httpx.Client,
                                                    stream: bool) -> None:
    """A backend that does not report log-probabilities: 422 naming logprobs (a stream
    before its first byte), not an answer with logprobs null."""
    response = client.post("/v1/chat/completions",
                           json=_chat("NOLOGPROBS", logprobs=True, stream=stream))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == "logprobs"


def test_rate_limit_requests_per_minute(served: tuple[Gateway, LoopbackServer]) -> None:
    """Over the key's rpm: 429 with Retry-After in whole seconds."""
    gateway, server = served
    assert gateway.keys is not None
    key, _ = gateway.keys.create("limited", rpm=2)
    gateway.keys.refresh(force=True)
    with _client(server, key) as client:
        statuses = [client.get("/v1/models") for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert int(statuses[2].headers["retry-after"]) >= 1
    assert statuses[2].json()["error"]["type"] == "rate_limit_error"


def test_rate_limit_tokens_per_minute(served: tuple[Gateway, LoopbackServer]) -> None:
    """Tokens are reserved up front (prompt/4 + max_tokens) and reconciled with usage:
    after reconciliation the unused reservation is available again."""
    gateway, server = served
    assert gateway.keys is not None
    key, _ = gateway.keys.create("tokens", tpm=100)
    gateway.keys.refresh(force=True)
    with _client(server, key) as client:
        over = client.post("/v1/chat/completions", json=_chat("hi", max_tokens=500))
        assert over.status_code == 422 and "lower max_tokens" in over.json()["error"]["message"]
        # reserve 1 + 90 = 91 of 100; uses 1 + 3 tokens, so ~96 remain after reconciling
        first = client.post("/v1/chat/completions", json=_chat("hi", max_tokens=90))
        assert first.status_code == 200
        second = client.post("/v1/chat/completions", json=_chat("hi", max_tokens=90))
        assert second.status_code == 200
        third = client.post("/v1/chat/completions", json=_chat("hi", max_tokens=99))
        assert third.status_code == 429 and "retry-after" in third.headers


def test_embeddings_over_tokens_per_minute_name_the_input(
        served: tuple[Gateway, LoopbackServer]) -> None:
    """Texts that alone exceed the key's tpm are a 422 naming input, not max_tokens (an
    embeddings request has none)."""
    gateway, server = served
    assert gateway.keys is not None
    key, _ = gateway.keys.create("small-embed", tpm=100)
    gateway.keys.refresh(force=True)
    with _client(server, key) as client:
        over = client.post("/v1/embeddings", json={"input": ["word " * 200]})
    assert over.status_code == 422
    error = over.json()["error"]
    assert error["param"] == "input" and "max_tokens" not in error["message"]


def test_feedback_round_trip(client: httpx.Client,
                             served: tuple[Gateway, LoopbackServer]) -> None:
    """POST /v1/feedback with a response's id stores it; bad feedback is a 4xx."""
    run_id = client.post("/v1/chat/completions", json=_chat("rate me")).json()["id"]
    ok = client.post("/v1/feedback", json={"run_id": run_id, "kind": "thumbs", "value": 1,
                                           "text": "great", "metadata": {"ui": "web"}})
    assert ok.status_code == 200 and ok.json()["recorded"] == 1
    rows = _feedback_rows(served[0], run_id)
    assert rows[0][0] == "thumbs" and json.loads(rows[0][1])["ui"] == "web"
    assert client.post("/v1/feedback", json={"kind": "thumbs"}).status_code == 400
    assert client.post("/v1/feedback", json={"run_id": "r", "kind": "x",
                                             "value": "high"}).status_code == 422
    huge = client.post("/v1/feedback", content=json.dumps({"run_id": "r", "kind": "x",
                                                           "value": 10**400}))
    assert huge.status_code == 422 and huge.json()["error"]["param"] == "value"
    lone = client.post("/v1/feedback", content=b'{"run_id": "\\ud800", "kind": "x"}')
    assert lone.status_code == 400 and "surrogate" in lone.json()["error"]["message"]
    paired = client.post("/v1/feedback", content=json.dumps(
        {"run_id": run_id, "kind": "emoji", "text": "\U0001f600"}).encode())
    assert paired.status_code == 200, paired.text  # an escaped pair is a real character


def test_regenerate_is_recorded(client: httpx.Client,
                                served: tuple[Gateway, LoopbackServer]) -> None:
    """The same key sending the same conversation again marks the first run 'regenerate'."""
    first = client.post("/v1/chat/completions", json=_chat("regen me please")).json()["id"]
    second = client.post("/v1/chat/completions", json=_chat("regen me please")).json()["id"]
    client.get("/healthz")  # let the background write land
    rows = _wait_rows(served[0], first)
    assert rows[0][0] == "regenerate" and json.loads(rows[0][1])["next_run_id"] == second
    assert _feedback_rows(served[0], second) == []


def test_a_failed_answer_is_no_regenerate(client: httpx.Client,
                                          served: tuple[Gateway, LoopbackServer]) -> None:
    """A conversation whose answer failed (a 502 the client's SDK retries) was never seen:
    the retry marks nothing 'regenerate'; the next repeat of a delivered answer does."""
    failed = client.post("/v1/chat/completions", json=_chat("FAIL regen"))
    retried = client.post("/v1/chat/completions", json=_chat("FAIL regen"))
    assert failed.status_code == retried.status_code == 502
    failed_id = failed.headers["x-aieng-run-id"]
    delivered = client.post("/v1/chat/completions", json=_chat("deliver regen")).json()["id"]
    again = client.post("/v1/chat/completions", json=_chat("deliver regen")).json()["id"]
    rows = _wait_rows(served[0], delivered)
    assert rows[0][0] == "regenerate" and json.loads(rows[0][1])["next_run_id"] == again
    assert _feedback_rows(served[0], failed_id) == []


def _wait_rows(gateway: Gateway, run_id: str) -> list[tuple[str, str]]:
    """The feedback rows of ``run_id`` (``%``: of any run), once some are written."""
    for _ in range(200):
        try:
            rows = _feedback_rows(gateway, run_id)
        except sqlite3.OperationalError:  # no table before the first row
            rows = []
        if rows:
            return rows
        time.sleep(0.02)
    return []


def test_early_stop_on_disconnect(client: httpx.Client,
                                  served: tuple[Gateway, LoopbackServer]) -> None:
    """A streaming client that goes away early cancels the run and records early_stop."""
    with client.stream("POST", "/v1/chat/completions",
                       json=_chat("STREAMLONG", stream=True)) as response:
        run_id = response.headers["x-aieng-run-id"]
        lines = response.iter_lines()
        for _ in range(3):
            next(lines)
    rows = _wait_rows(served[0], run_id)
    assert rows and rows[0][0] == "early_stop"
    assert json.loads(rows[0][1])["chunks_sent"] < 400


def test_metrics_are_valid_prometheus(client: httpx.Client) -> None:
    """/metrics is Prometheus text with the monitor's metrics and the gateway's counters."""
    client.post("/v1/chat/completions", json=_chat("measure", stream=True))
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert {"aieng_ttft_seconds", "aieng_tokens", "aieng_cost_usd", "aieng_runs",
            "aieng_gateway_requests"} <= set(families)
    requests = families["aieng_gateway_requests"].samples
    assert any(s.labels["path"] == "/v1/chat/completions" and s.labels["status"] == "200"
               for s in requests)


def test_logs_carry_no_prompt_text_no_pii_and_no_key(client: httpx.Client,
                                                     api_key: str) -> None:
    """The request log line has lengths, tokens and the key id, never the text or key."""
    email = "jane.doe@example.com"
    with structlog.testing.capture_logs() as logs:
        client.post("/v1/chat/completions", json=_chat(f"my email is {email}"))
        client.post("/v1/chat/completions", json=_chat(f"mail {email}", stream=True))
    dumped = json.dumps(logs, default=str)
    assert email not in dumped and api_key not in dumped
    lines = [e for e in logs if e["event"] == "http.request"]
    assert len(lines) == 2
    assert lines[0]["key_id"] == api_key.split("-")[1]
    assert lines[0]["prompt_chars"] == len(f"my email is {email}")
    assert lines[0]["status"] == 200 and lines[0]["completion_tokens"] > 0
    assert {"method", "path", "latency_ms", "prompt_tokens"} <= set(lines[0])


def test_stream_lines_survive_unicode_line_separators(client: httpx.Client) -> None:
    """An answer holding U+2028, U+2029 or U+0085 (which ``str.splitlines`` and httpx's
    ``iter_lines`` treat as line breaks) streams as data lines that such readers still
    read whole: those characters go escaped in the JSON (``\\u2028``), the text intact."""
    text = "a\u2028b\u2029c\x85d"
    with client.stream("POST", "/v1/chat/completions",
                       json=_chat(text, stream=True)) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: {")]
    chunks = [json.loads(line[6:]) for line in lines]  # each line is one whole event
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) \
        == f"You said: {text}"
