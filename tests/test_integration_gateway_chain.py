"""Gateway over gateway: ``aieng serve`` whose backend is the ``openai`` component pointed
at ANOTHER ``aieng serve`` on loopback (as a team runs a front gateway before a model
server), driven by an ``httpx`` client speaking OpenAI's wire format to the front one.

Streams pass through token by token with their usage, a rate-limited upstream (HTTP 429
with ``Retry-After``) is retried, or its 429 is passed on with its wait when the wait is
too long, and tool calls round-trip both ways, streamed and not.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import httpx
import pytest
from aieng_gateway import Gateway, GatewaySettings, KeyStore
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Completion, Delta, Request, ToolCall
from aieng_openai import OpenAIBackend, OpenAIOptions

from aieng_core import Kernel
from aieng_core.pipeline import Pipeline
from aieng_core.testing import ScriptedBackend, isolated_kernel
from aieng_core.testing.loopback import LoopbackServer

pytestmark = pytest.mark.anyio

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


class ToolUser(ScriptedBackend):
    """The upstream's model double: answers ``You said: <prompt>`` word by word; with
    tools, calls the first one with the prompt as its ``city``; after a tool's result,
    answers with it."""

    def __init__(self) -> None:
        super().__init__(self._say)

    @staticmethod
    def _say(request: Request) -> str:
        last = request.messages[-1]
        if last.role == "tool":
            return f"The tool {last.tool_call_id} said: {last.content}"
        return f"You said: {request.prompt}"

    @staticmethod
    def _calls(request: Request) -> list[ToolCall] | None:
        if not request.tools or request.messages[-1].role == "tool":
            return None
        return [ToolCall(id="call_7", name=request.tools[0].name,
                         arguments={"city": request.prompt})]

    @hookimpl
    async def aieng_generate(self, request: Request) -> Completion | None:
        calls = self._calls(request)
        if calls is not None:
            self.requests.append(request)
            return Completion(text="", finish_reason="tool_calls", tool_calls=calls)
        return await super().aieng_generate(request)

    @hookimpl
    def aieng_stream(self, request: Request) -> Any:
        calls = self._calls(request)
        if calls is None:
            return self._stream(request)

        async def call() -> Any:
            self.requests.append(request)
            yield Delta(text="", index=0, finish_reason="tool_calls", tool_calls=calls)
        return call()


class Throttled:
    """An ASGI proxy stand-in before the upstream: answers its first ``refusals`` chat
    requests with HTTP 429 and ``Retry-After: <wait>``, then passes everything on."""

    def __init__(self, app: Any, *, refusals: int, wait: str = "1") -> None:
        self.app = app
        self.refusals = refusals
        self.wait = wait
        self.refused = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/chat/completions" \
                and self.refused < self.refusals:
            self.refused += 1
            body = json.dumps({"error": {"message": "slow down", "type": "rate_limit",
                                         "param": None, "code": "rate_limited"}}).encode()
            await send({"type": "http.response.start", "status": 429, "headers": [
                (b"content-type", b"application/json"), (b"retry-after", self.wait.encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


class Chain:
    """An upstream gateway (keyed) over :class:`ToolUser`, and a front gateway (no auth)
    whose one backend is the ``openai`` component pointed at it, both on loopback."""

    def __init__(self, root: Path, *, refusals: int = 0, rpm: int | None = None,
                 max_retries: int = 2) -> None:
        self.model = ToolUser()
        keys = KeyStore(root / "keys.sqlite3")
        key, _ = keys.create("front", rpm=rpm)
        self.upstream = Gateway(lambda kernel: kernel.compose({"llm": self.model},
                                                              name="upstream"),
                                keys=keys, kernel=lambda: isolated_kernel(
                                    loop_block_threshold=None))
        self.throttle = Throttled(self.upstream.app, refusals=refusals)
        self.back = LoopbackServer(self.throttle)
        self.key = key
        self.max_retries = max_retries
        self.front = Gateway(self._front, settings=GatewaySettings(auth=False),
                             kernel=lambda: isolated_kernel(loop_block_threshold=None))
        self.server = LoopbackServer(self.front.app)

    def _front(self, kernel: Kernel) -> Pipeline:
        remote = OpenAIBackend(OpenAIOptions(
            base_url=f"{self.back.url}/v1", model="upstream", api_key=self.key,
            max_retries=self.max_retries, backoff_base=0.05, backoff_max=2.0,
            read_timeout=20.0))
        return kernel.compose({"remote": remote}, name="front", stream="live")

    def __enter__(self) -> Self:
        self.back.__enter__()
        try:
            self.server.__enter__()
        except BaseException:
            self.back.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(None, None, None)
        self.back.__exit__(None, None, None)

    def client(self) -> httpx.AsyncClient:
        """A client of the front gateway."""
        return self.server.async_client(base_url=f"{self.server.url}/v1", timeout=30.0)


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    """The two gateways, served for the test."""
    with Chain(tmp_path) as served:
        yield served


def sse(text: str) -> list[dict[str, Any]]:
    """The ``data:`` events of a stream, which ends with ``[DONE]``."""
    data = [line[len("data: "):] for line in text.split("\n") if line.startswith("data: ")]
    assert data and data[-1] == "[DONE]", text
    return [json.loads(item) for item in data[:-1]]


def body(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "front", "messages": [{"role": "user", "content": content}], **extra}


async def test_a_stream_passes_through_token_by_token_with_its_usage(chain: Chain) -> None:
    """A streamed answer through both gateways arrives in the model's pieces (not as one
    chunk), spells the same text as a JSON answer, and its usage chunk carries the
    upstream model's token counts."""
    question = "Ünïcödé through two gateways 東京 🙂"
    async with chain.client() as client:
        whole = await client.post("/chat/completions", json=body(question))
        streamed = await client.post("/chat/completions", json=body(
            question, stream=True, stream_options={"include_usage": True}))
    assert whole.status_code == 200 and streamed.status_code == 200, streamed.text
    expected = f"You said: {question}"
    (choice,) = whole.json()["choices"]
    assert (choice["message"]["content"], choice["finish_reason"]) == (expected, "stop")
    events = sse(streamed.text)
    pieces = [e["choices"][0]["delta"].get("content") for e in events if e["choices"]]
    texts = [piece for piece in pieces if piece]
    assert "".join(texts) == expected and len(texts) == len(expected.split(" "))
    assert [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1] == "stop"
    usage = events[-1]["usage"]
    assert events[-1]["choices"] == []
    words = len(question.split())
    assert usage == whole.json()["usage"] == {
        "prompt_tokens": words, "completion_tokens": len(expected.split()),
        "total_tokens": words + len(expected.split())}
    assert {e["id"] for e in events} == {streamed.headers["x-aieng-run-id"]}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_an_upstream_429_with_retry_after_is_retried(tmp_path: Path,
                                                          stream: bool) -> None:
    """The upstream's proxy answers 429 with ``Retry-After: 1``: the front's openai
    backend waits and asks again, and the client gets the answer, not the 429."""
    with Chain(tmp_path, refusals=1) as chain:
        async with chain.client() as client:
            response = await client.post("/chat/completions",
                                         json=body("once more", stream=stream))
    assert response.status_code == 200, response.text
    if stream:
        events = sse(response.text)
        text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events
                       if e["choices"])
    else:
        text = response.json()["choices"][0]["message"]["content"]
    assert text == "You said: once more"
    assert chain.throttle.refused == 1 and len(chain.model.requests) == 1


async def test_an_upstream_429_past_backoff_max_is_passed_on_with_its_wait(
        tmp_path: Path) -> None:
    """The upstream gateway's own per-key limit (1 request a minute) refuses the second
    request with a wait past the front's ``backoff_max``: the client gets a 429
    ``upstream_rate_limited`` with the upstream's wait as ``Retry-After``, at once."""
    with Chain(tmp_path, rpm=1) as chain:
        async with chain.client() as client:
            first = await client.post("/chat/completions", json=body("first"))
            second = await client.post("/chat/completions", json=body("second"))
            streamed = await client.post("/chat/completions",
                                         json=body("third", stream=True))
    assert first.status_code == 200
    for refused in (second, streamed):
        assert refused.status_code == 429, refused.text
        error = refused.json()["error"]
        assert error["code"] == "upstream_rate_limited" and error["message"]
        assert 30 <= int(refused.headers["retry-after"]) <= 60
    assert len(chain.model.requests) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_tool_calls_round_trip_through_both_gateways(chain: Chain,
                                                           stream: bool) -> None:
    """The client offers a tool through the front gateway; the upstream model's call comes
    back to the client (its arguments a JSON string, as OpenAI sends them); the client
    sends the tool's result back and the model, upstream, answers with it."""
    first = body("Oslo", tools=[WEATHER], tool_choice="auto", stream=stream)
    async with chain.client() as client:
        response = await client.post("/chat/completions", json=first)
        assert response.status_code == 200, response.text
        if stream:
            events = sse(response.text)
            deltas = [e["choices"][0] for e in events if e["choices"]]
            calls = [call for d in deltas for call in d["delta"].get("tool_calls", [])]
            finish = deltas[-1]["finish_reason"]
        else:
            (choice,) = response.json()["choices"]
            calls, finish = choice["message"]["tool_calls"], choice["finish_reason"]
        assert finish == "tool_calls"
        (call,) = calls
        assert call["id"] == "call_7" and call["type"] == "function"
        assert call["function"]["name"] == "get_weather"
        assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}

        conversation = [*first["messages"],
                        {"role": "assistant", "content": None, "tool_calls": [
                            {k: v for k, v in call.items() if k != "index"}]},
                        {"role": "tool", "tool_call_id": "call_7", "content": "-3 °C"}]
        answer = await client.post("/chat/completions", json={
            **first, "messages": conversation, "stream": False})
    assert answer.status_code == 200, answer.text
    (choice,) = answer.json()["choices"]
    assert choice["message"]["content"] == "The tool call_7 said: -3 °C"
    seen = chain.model.requests[-1]
    assert [m.role for m in seen.messages] == ["user", "assistant", "tool"]
    assert seen.messages[1].tool_calls[0].arguments == {"city": "Oslo"}
    assert [t.name for t in seen.tools] == ["get_weather"]
