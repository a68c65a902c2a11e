"""A pipeline with an output guardrail behind the gateway (in-process, over ASGITransport)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from _support import FlakyBackend
from aieng_gateway import Gateway, GatewaySettings

from aieng_core.testing import isolated_kernel
from aieng_core.testing.reference import RegexRedactGuard

pytestmark = pytest.mark.anyio


async def test_blocked_stream_reports_the_tokens_spent() -> None:
    """An answer blocked by the output guard after it was generated: the stream's usage
    chunk reports the tokens the backend spent, the same usage as the JSON answer."""

    def build(kernel: Any) -> Any:
        # The echo backend answers "You said: ..."; the guard blocks any text with "said".
        return kernel.compose({"llm": FlakyBackend(),
                               "guard": RegexRedactGuard(blocked_phrase="said")}, name="test")

    gateway = Gateway(build, settings=GatewaySettings(auth=False),
                      kernel=lambda: isolated_kernel(loop_block_threshold=None))
    body = {"model": "test", "messages": [{"role": "user", "content": "hello there"}]}
    async with gateway.running():
        transport = httpx.ASGITransport(app=gateway.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            whole = (await client.post("/v1/chat/completions", json=body)).json()
            streamed = await client.post("/v1/chat/completions", json={
                **body, "stream": True, "stream_options": {"include_usage": True}})
    assert whole["choices"][0]["finish_reason"] == "content_filter"
    events = [json.loads(line[6:]) for line in streamed.text.splitlines()
              if line.startswith("data: {")]
    assert events[-2]["choices"][0]["finish_reason"] == "content_filter"
    assert events[-1]["choices"] == [] and whole["usage"]["completion_tokens"] > 0
    assert events[-1]["usage"] == whole["usage"]


async def test_logprobs_never_show_what_an_output_guard_redacted() -> None:
    """The tokens' log-probabilities spell the model's own text: when an output guard
    rewrote it (an e-mail address redacted) they are left out (null), so the address the
    guard hid is nowhere in the answer."""

    def build(kernel: Any) -> Any:
        reply = FlakyBackend(lambda r: "write to jane@example.com" if "contact" in r.prompt
                             else "no address here")
        return kernel.compose({"llm": reply,
                               "guard": RegexRedactGuard(blocked_phrase="")}, name="test")

    gateway = Gateway(build, settings=GatewaySettings(auth=False),
                      kernel=lambda: isolated_kernel(loop_block_threshold=None))
    body = {"model": "test", "logprobs": True,
            "messages": [{"role": "user", "content": "contact?"}]}
    async with gateway.running():
        transport = httpx.ASGITransport(app=gateway.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            response = await client.post("/v1/chat/completions", json=body)
            clean = await client.post("/v1/chat/completions", json={
                **body, "messages": [{"role": "user", "content": "again?"}]})
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["message"]["content"] == "write to [EMAIL]"
    assert choice["logprobs"] is None and "jane" not in response.text
    tokens = clean.json()["choices"][0]["logprobs"]["content"]  # nothing rewritten
    assert "".join(t["token"] for t in tokens) == "no address here"


async def test_a_stream_behind_output_guards_is_the_guarded_answer() -> None:
    """Output guards hold a stream back (the pipeline's ``stream = "guarded"``): a client
    streaming from a pipeline that redacts e-mail addresses gets the redacted answer, and
    the address is nowhere in the stream (it was sent token by token before the guard
    ran). A ``stream = "live"`` pipeline streams the model's tokens as they come."""

    def build(stream: str) -> Any:
        def pipeline(kernel: Any) -> Any:
            reply = FlakyBackend(lambda r: "write to jane@example.com")
            return kernel.compose({"llm": reply, "guard": RegexRedactGuard(blocked_phrase="")},
                                  name="test", stream=stream)
        return pipeline

    body = {"model": "test", "stream": True,
            "messages": [{"role": "user", "content": "contact?"}]}
    texts = {}
    for stream in ("guarded", "live"):
        gateway = Gateway(build(stream), settings=GatewaySettings(auth=False),
                          kernel=lambda: isolated_kernel(loop_block_threshold=None))
        async with gateway.running():
            transport = httpx.ASGITransport(app=gateway.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                response = await client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        events = [json.loads(line[6:]) for line in response.text.splitlines()
                  if line.startswith("data: {")]
        texts[stream] = "".join(e["choices"][0]["delta"].get("content") or ""
                                for e in events if e["choices"])
        if stream == "guarded":
            assert "jane" not in response.text
    assert texts == {"guarded": "write to [EMAIL]", "live": "write to jane@example.com"}
