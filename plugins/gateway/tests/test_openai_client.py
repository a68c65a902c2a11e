"""The aieng ``openai`` plugin (an OpenAI client) talking to the gateway over loopback:
a pipeline whose backend is the openai component pointed at ``aieng serve``."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest
from _support import LoopbackServer
from aieng_gateway import Gateway, GatewaySettings
from aieng_hookspecs.types import Message, Request, ToolCall, ToolSpec
from aieng_openai import OpenAIBackend, OpenAIOptions

from aieng_core import HookError
from aieng_core.testing import isolated_kernel

pytestmark = pytest.mark.anyio


def _backend(server: LoopbackServer, key: str, **options: Any) -> OpenAIBackend:
    return OpenAIBackend(OpenAIOptions(base_url=f"{server.url}/v1", model="test", api_key=key,
                                       embedding_model="hash", max_retries=0,
                                       read_timeout=20.0, **options))


def _front(backend: OpenAIBackend) -> Gateway:
    """A gateway without auth whose one backend is ``backend`` (an upstream's client)."""
    return Gateway(lambda kernel: kernel.compose({"remote": backend}, name="front"),
                   settings=GatewaySettings(auth=False),
                   kernel=lambda: isolated_kernel(loop_block_threshold=None))


async def test_openai_client_generates_streams_and_embeds(
        served: tuple[Gateway, LoopbackServer], api_key: str) -> None:
    """Completion, SSE stream (with usage) and embeddings all round-trip through the
    gateway with the OpenAI wire format the client expects."""
    async with isolated_kernel(loop_block_threshold=None) as kernel:
        backend = _backend(served[1], api_key)
        pipe = kernel.compose({"remote": backend}, name="client")
        result = await pipe.run("ping over http")
        assert result.completion is not None
        assert result.completion.text == "You said: ping over http"
        assert result.completion.usage.completion_tokens == 5
        pieces: list[str] = []
        streamed = await pipe.run(Request(messages=(Message("user", "stream this"),),
                                          max_tokens=3), on_delta=lambda d: pieces.append(d.text))
        assert streamed.completion is not None
        assert "".join(pieces) == streamed.completion.text == "You said: stream"
        assert streamed.completion.finish_reason == "length"
        assert streamed.completion.usage.completion_tokens == 3
        vectors = await backend.aieng_embed(["a b", "c"], None)
        assert vectors is not None and len(vectors) == 2 and len(vectors[0]) == 16
        await pipe.aclose()


async def test_openai_client_gets_tool_calls_generated_and_streamed(
        served: tuple[Gateway, LoopbackServer], api_key: str) -> None:
    """aieng's OpenAI client sends tools, ``tool_choice`` and ``parallel_tool_calls``
    (from metadata) and a conversation with calls through the gateway, and gets the
    backend's calls back, generated and streamed (put together on the last delta)."""
    weather = ToolSpec(name="get_weather", parameters={
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
    earlier = ToolCall(id="call_0", name="get_weather", arguments={"city": "Oslo"})
    request = Request(messages=(Message("user", "Oslo?"),
                                Message("assistant", "", tool_calls=(earlier,)),
                                Message("tool", "-3 C", tool_call_id="call_0"),
                                Message("user", "Rome?")),
                      tools=(weather,), metadata={"tool_choice": "required",
                                                  "parallel_tool_calls": True})
    expected = {"prompt": "Rome?", "choice": "required", "parallel": True,
                "roles": ["user", "assistant", "tool", "user"],
                "earlier": [["get_weather", {"city": "Oslo"}]]}
    async with isolated_kernel(loop_block_threshold=None) as kernel:
        pipe = kernel.compose({"remote": _backend(served[1], api_key)}, name="tools")
        generated = await pipe.run(request)
        streamed = await pipe.run(request, on_delta=lambda d: None)
        for result in (generated, streamed):
            assert result.completion is not None
            assert result.completion.finish_reason == "tool_calls"
            assert result.completion.text == "Calling."
            assert [(c.id, c.name, c.arguments) for c in result.completion.tool_calls] == [
                ("call_1", "get_weather", expected)]
        await pipe.aclose()


async def test_openai_client_sees_gateway_errors(
        served: tuple[Gateway, LoopbackServer], api_key: str) -> None:
    """A wrong key and an upstream failure reach the client as errors that say why."""
    async with isolated_kernel(loop_block_threshold=None) as kernel:
        wrong = kernel.compose({"remote": _backend(served[1], "aieng-00000000-" + "x" * 43)},
                               name="wrong")
        with pytest.raises(HookError, match="401"):
            await wrong.run("hi")
        failing = kernel.compose({"remote": _backend(served[1], api_key)}, name="failing")
        with pytest.raises(HookError, match="upstream refused the connection"):
            await failing.run("FAIL please")
        # A stream failing before its first token: the gateway's 502 with its JSON body.
        with pytest.raises(HookError, match="502.*upstream refused the connection"):
            await failing.run("FAIL please", on_delta=lambda d: None)
        for pipe in (wrong, failing):
            await pipe.aclose()


async def test_a_gateway_over_a_gateway_passes_client_faults_through(
        served: tuple[Gateway, LoopbackServer], api_key: str) -> None:
    """A gateway whose backend is the openai component (here over another gateway) answers
    the upstream's client-fault statuses (a model it does not serve: 404, a body over its
    limit: 413, streamed or not) with that status, as the client's mistake, not as a 502
    to retry; a key the upstream refuses is the gateway's fault: 502. /v1/models lists
    the component's embedding model, which /v1/embeddings serves."""
    def build(upstream_key: str) -> Gateway:
        def pipeline(kernel: Any) -> Any:
            return kernel.compose({"remote": _backend(served[1], upstream_key,
                                                      models=["not-upstream"])}, name="front")

        return Gateway(pipeline, settings=GatewaySettings(auth=False, max_body=4_000_000),
                       kernel=lambda: isolated_kernel(loop_block_threshold=None))

    def chat(model: str, text: str = "hi", **extra: Any) -> dict[str, Any]:
        return {"model": model, "messages": [{"role": "user", "content": text}], **extra}

    front = build(api_key)
    async with front.running():
        transport = httpx.ASGITransport(app=front.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            models = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
            assert models == ["front", "test", "not-upstream", "hash"]
            assert (await client.get("/v1/models/hash")).status_code == 200
            embedded = await client.post("/v1/embeddings", json={"input": "a", "model": "hash"})
            assert embedded.status_code == 200, embedded.text
            missing = await client.post("/v1/embeddings",
                                        json={"input": "a", "model": "not-upstream"})
            assert missing.status_code == 404, missing.text
            error = missing.json()["error"]
            assert error["type"] == "invalid_request_error"
            assert error["code"] == "upstream_invalid_request"
            assert "not-upstream" in error["message"]  # the upstream's own words
            for stream in (False, True):
                large = await client.post("/v1/chat/completions",
                                          json=chat("test", "word " * 300_000, stream=stream))
                assert large.status_code == 413, large.text
                assert large.json()["error"]["code"] == "upstream_invalid_request"
                assert "over the limit" in large.json()["error"]["message"]
    refused = build("aieng-00000000-" + "x" * 43)
    async with refused.running():
        transport = httpx.ASGITransport(app=refused.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            wrong_key = await client.post("/v1/chat/completions", json=chat("test"))
            assert wrong_key.status_code == 502, wrong_key.text
            assert wrong_key.json()["error"]["code"] == "upstream_error"


async def test_an_upstream_rate_limit_is_a_429_with_its_wait(
        served: tuple[Gateway, LoopbackServer]) -> None:
    """A gateway whose upstream rate-limits it (here another gateway's key at 1 request per
    minute) answers 429 with the upstream's Retry-After once the backend's retries are
    spent, streamed or not, so clients back off as their SDKs do on 429 (a 502 hid it)."""
    gateway, upstream = served
    assert gateway.keys is not None
    key, _ = gateway.keys.create("once-a-minute", rpm=1)
    gateway.keys.refresh(force=True)

    front = _front(_backend(upstream, key))
    async with front.running():
        transport = httpx.ASGITransport(app=front.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            chat = {"model": "test", "messages": [{"role": "user", "content": "hi"}]}
            first = await client.post("/v1/chat/completions", json=chat)
            assert first.status_code == 200, first.text
            for stream in (False, True):
                limited = await client.post("/v1/chat/completions",
                                            json={**chat, "stream": stream})
                assert limited.status_code == 429, limited.text
                assert 1 <= int(limited.headers["retry-after"]) <= 60
                error = limited.json()["error"]
                assert error["type"] == "rate_limit_error"
                assert error["code"] == "upstream_rate_limited"


async def test_an_overloaded_upstream_is_a_503_with_its_wait() -> None:
    """An upstream answering 503 with Retry-After (an overloaded server) is a 503 with that
    wait once the backend's retries are spent, streamed or not: a 502 hid the wait."""
    import http.server
    import threading

    class Overloaded(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            body = b'{"error": {"message": "overloaded"}}'
            self.send_response(503)
            self.send_header("Retry-After", "7")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Overloaded)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    try:
        front = _front(OpenAIBackend(OpenAIOptions(
            base_url=f"http://127.0.0.1:{upstream.server_address[1]}/v1", model="test",
            api_key="k", max_retries=0)))
        async with front.running():
            transport = httpx.ASGITransport(app=front.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                chat = {"model": "test", "messages": [{"role": "user", "content": "hi"}]}
                for stream in (False, True):
                    answer = await client.post("/v1/chat/completions",
                                               json={**chat, "stream": stream})
                    assert answer.status_code == 503, answer.text
                    assert answer.headers["retry-after"] == "7"
                    assert answer.json()["error"]["code"] == "upstream_unavailable"
    finally:
        upstream.shutdown()
        upstream.server_close()


async def test_an_upstream_stream_that_stalls_is_a_504() -> None:
    """An upstream that sends its stream's headers and then nothing (a stalled vLLM) ends
    the openai backend's stream with a timeout: a 504 ``upstream_timeout``, as an upstream
    that never answers, not a 502 that reads as a broken upstream."""
    import http.server
    import threading

    done = threading.Event()  # the stall lasts until the test is over: no race with a delay

    class Stalls(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.flush()
            done.wait(60)

        def log_message(self, *args: Any) -> None:
            pass

    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stalls)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    try:
        front = _front(OpenAIBackend(OpenAIOptions(
            base_url=f"http://127.0.0.1:{upstream.server_address[1]}/v1", model="test",
            read_timeout=0.3, max_retries=0)))
        async with front.running():
            transport = httpx.ASGITransport(app=front.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                chat = {"model": "test", "stream": True,
                        "messages": [{"role": "user", "content": "hi"}]}
                answer = await client.post("/v1/chat/completions", json=chat)
                assert answer.status_code == 504, answer.text
                assert answer.json()["error"]["code"] == "upstream_timeout"
                assert "stalled" in answer.json()["error"]["message"]
    finally:
        done.set()
        upstream.shutdown()
        upstream.server_close()


@pytest.mark.parametrize("expose", [False, True])
async def test_upstream_urls_are_hidden_from_clients_unless_exposed(expose: bool) -> None:
    """An upstream failure names the URL the backend called (an internal host and port):
    clients see ``<upstream>`` in its place unless ``expose_upstream_urls``; the whole
    message is logged with the run id either way."""
    import structlog

    dead = f"http://127.0.0.1:{_free_port()}/v1"
    front = Gateway(lambda kernel: kernel.compose({"remote": OpenAIBackend(OpenAIOptions(
        base_url=dead, model="test", max_retries=0))}, name="front"),
        settings=GatewaySettings(auth=False, expose_upstream_urls=expose),
        kernel=lambda: isolated_kernel(loop_block_threshold=None))
    chat = {"model": "test", "messages": [{"role": "user", "content": "hi"}]}
    with structlog.testing.capture_logs() as logs:
        async with front.running():
            transport = httpx.ASGITransport(app=front.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                answers = [await client.post("/v1/chat/completions", json=chat),
                           await client.post("/v1/chat/completions",
                                             json={**chat, "stream": True})]
    for answer in answers:
        assert answer.status_code == 502, answer.text
        message = answer.json()["error"]["message"]
        assert (dead in message) is expose and ("<upstream>" in message) is not expose
    logged = [e for e in logs if e["event"] == "gateway.upstream_error"]
    assert len(logged) == 2 and all(dead in e["error"] for e in logged)
    assert {e["run_id"] for e in logged} == {a.headers["x-aieng-run-id"] for a in answers}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_url_ending_a_sentence_keeps_its_punctuation() -> None:
    """The punctuation after a hidden URL is the message's: ``<upstream>;`` not ``<upstream>``
    swallowing it."""
    from aieng_gateway._app import _URL, _hidden

    text = "failed; url: http://10.0.0.7:8000/v1/chat/completions; hint: see (http://x.io/a)."
    assert _URL.sub(_hidden, text) == "failed; url: <upstream>; hint: see (<upstream>)."


async def test_every_circuit_open_failing_fast_is_a_503_with_retry_after() -> None:
    """A router failing fast (every circuit open, ``breaker.fail_fast``) makes the gateway
    answer 503 with the wait until a trial call as ``Retry-After``, not a bare 502."""
    from aieng_router import BreakerOptions, RuleOptions, RuleRouter

    from aieng_core.testing import ScriptedBackend

    router = RuleRouter(RuleOptions(default="down", breaker=BreakerOptions(
        failures=1, cooldown_s=600.0, fail_fast=True)))
    down = ScriptedBackend(fail_with=ConnectionError("upstream down"))
    front = Gateway(lambda kernel: kernel.compose({"router": router, "down": down},
                                                  name="fast"),
                    settings=GatewaySettings(auth=False),
                    kernel=lambda: isolated_kernel(loop_block_threshold=None))
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    async with front.running():
        transport = httpx.ASGITransport(app=front.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            first = await client.post("/v1/chat/completions", json=chat)
            assert first.status_code == 502, first.text  # the failure that opens it
            answers = [await client.post("/v1/chat/completions", json=chat),
                       await client.post("/v1/chat/completions", json={**chat, "stream": True})]
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "upstream_unavailable"
        assert 590 <= int(answer.headers["retry-after"]) <= 600
