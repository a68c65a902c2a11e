"""``--no-auth`` is explicit and loud; the app also runs in-process over ASGITransport."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from _support import FlakyBackend, logprob_of, make_gateway
from aieng_gateway import Gateway, GatewaySettings
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Delta, Request

from aieng_core.testing import isolated_kernel

pytestmark = pytest.mark.anyio


def test_auth_needs_a_key_store() -> None:
    """Auth on without a key store is a construction error, not an open server."""
    with pytest.raises(ValueError, match="KeyStore"):
        Gateway(lambda kernel: None)


async def test_no_auth_warns_and_serves(tmp_path: Path) -> None:
    """With auth off a warning is logged at start and requests need no key."""
    gateway = make_gateway(tmp_path, settings=GatewaySettings(auth=False))
    with structlog.testing.capture_logs() as logs:
        async with gateway.running():
            transport = httpx.ASGITransport(app=gateway.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                response = await client.post("/v1/chat/completions", json={
                    "messages": [{"role": "user", "content": "open"}]})
                assert response.status_code == 200
                assert response.json()["choices"][0]["message"]["content"] == "You said: open"
                assert (await client.get("/metrics")).status_code == 200
    assert any(e["event"] == "gateway.auth_disabled" and e["log_level"] == "warning"
               for e in logs)


async def test_blocked_by_model_name(tmp_path: Path) -> None:
    """A model no backend serves is a 404 naming the model field, streamed or not (a
    stream fails before its first token: a JSON error with the status, as OpenAI answers)."""
    from aieng_core.testing import ScriptedBackend

    gateway = make_gateway(tmp_path, settings=GatewaySettings(auth=False),
                           backend=ScriptedBackend(model="only-this"))
    async with gateway.running():
        transport = httpx.ASGITransport(app=gateway.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            body = {"model": "other", "messages": [{"role": "user", "content": "x"}]}
            response = await client.post("/v1/chat/completions", json=body)
            assert response.status_code == 404
            assert response.json()["error"]["param"] == "model"
            assert "'other'" in response.json()["error"]["message"]
            streamed = await client.post("/v1/chat/completions", json={**body, "stream": True})
            assert streamed.status_code == 404, streamed.text
            assert streamed.headers["content-type"] == "application/json"
            assert streamed.json() == response.json()
            models = (await client.get("/v1/models")).json()["data"]
            assert [m["id"] for m in models] == ["test", "only-this"]


async def test_retrieve_a_model_whose_id_has_a_slash(tmp_path: Path) -> None:
    """A Hugging Face style id (``org/name``) is retrieved by GET /v1/models/org/name."""
    from aieng_core.testing import ScriptedBackend

    gateway = make_gateway(tmp_path, settings=GatewaySettings(auth=False),
                           backend=ScriptedBackend(model="org/small-model"))
    async with gateway.running():
        transport = httpx.ASGITransport(app=gateway.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            one = await client.get("/v1/models/org/small-model")
            assert one.status_code == 200, one.text
            assert one.json()["id"] == "org/small-model"
            assert (await client.get("/v1/models/org")).status_code == 404


async def test_unknown_route_and_method_are_json(tmp_path: Path) -> None:
    """An unknown path is a JSON 404, a wrong method a JSON 405 with its Allow header."""
    gateway = make_gateway(tmp_path, settings=GatewaySettings(auth=False))
    async with gateway.running():
        transport = httpx.ASGITransport(app=gateway.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            missing = await client.get("/v1/nothing")
            assert missing.status_code == 404 and "no route" in missing.json()["error"]["message"]
            wrong = await client.get("/v1/chat/completions")
            assert wrong.status_code == 405 and "GET" in wrong.json()["error"]["message"]
            assert wrong.headers["allow"] == "POST"  # RFC 9110: a 405 says what is allowed


def _text(stream: str) -> tuple[str, list[Any]]:
    chunks = [json.loads(line[6:]) for line in stream.splitlines()
              if line.startswith("data: {")]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks), chunks


async def test_stream_of_a_cache_hit_carries_the_answer(tmp_path: Path) -> None:
    """A stream answered by the cache (no delta: nothing is generated) still sends the
    cached answer, as one chunk, not an empty stream."""
    from aieng_cache import ExactCache

    def build(kernel: Any) -> Any:
        return kernel.compose({"llm": FlakyBackend(), "cache": ExactCache()}, name="test")

    gateway = Gateway(build, settings=GatewaySettings(auth=False),
                      kernel=lambda: isolated_kernel(loop_block_threshold=None))
    body = {"messages": [{"role": "user", "content": "remember me"}]}
    async with gateway.running():
        transport = httpx.ASGITransport(app=gateway.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            first = (await client.post("/v1/chat/completions", json=body)).json()
            streamed = await client.post("/v1/chat/completions", json={**body, "stream": True})
    assert first["choices"][0]["message"]["content"] == "You said: remember me"
    text, chunks = _text(streamed.text)
    assert text == "You said: remember me"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


class _NotStreaming(FlakyBackend):
    """FlakyBackend without a stream: the kernel hands its whole answer over as one delta."""

    @hookimpl
    def aieng_stream(self, request: Request) -> AsyncIterator[Delta] | None:
        return None


async def test_streamed_logprobs_of_a_backend_that_does_not_stream() -> None:
    """A stream over a backend that only answers whole still gets the completion's
    per-token log-probabilities (on the one chunk of text)."""
    gateway = Gateway(lambda kernel: kernel.compose({"llm": _NotStreaming()}, name="test"),
                      settings=GatewaySettings(auth=False),
                      kernel=lambda: isolated_kernel(loop_block_threshold=None))
    body = {"messages": [{"role": "user", "content": "whole"}], "logprobs": True}
    async with gateway.running():
        transport = httpx.ASGITransport(app=gateway.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            whole = (await client.post("/v1/chat/completions", json=body)).json()
            streamed = await client.post("/v1/chat/completions", json={**body, "stream": True})
    assert streamed.status_code == 200, streamed.text
    text, chunks = _text(streamed.text)
    assert text == whole["choices"][0]["message"]["content"] == "You said: whole"
    [with_text] = [c for c in chunks if c["choices"][0]["delta"].get("content")]
    assert with_text["choices"][0]["logprobs"] == whole["choices"][0]["logprobs"]
    assert [t["logprob"] for t in whole["choices"][0]["logprobs"]["content"]] == \
        [logprob_of(i) for i in range(3)]


class _Renders:
    """A component rendering its own metrics, as the monitor and each drift detector do."""

    def __init__(self, text: str) -> None:
        self.text = text

    def prometheus_text(self) -> str:
        return self.text

    @hookimpl
    def aieng_on_event(self, event: object) -> None:
        pass


async def test_metrics_of_two_components_of_one_kind_are_one_valid_exposition(
        tmp_path: Path) -> None:
    """Two components of one kind (two drift detectors) render the same metric family:
    /metrics used to repeat its ``# TYPE`` (Prometheus refuses the whole scrape); now each
    family is written once with all its samples, and a series rendered twice once."""
    from aieng_core.testing import ScriptedBackend
    from prometheus_client.parser import text_string_to_metric_families

    one = ('# HELP aieng_drift_psi PSI\n# TYPE aieng_drift_psi gauge\n'
           'aieng_drift_psi{detector="length"} 0.1\n'
           '# HELP aieng_lat_seconds Latency\n# TYPE aieng_lat_seconds histogram\n'
           'aieng_lat_seconds_bucket{le="1.0"} 1\naieng_lat_seconds_bucket{le="+Inf"} 1\n'
           'aieng_lat_seconds_sum 0.5\naieng_lat_seconds_count 1\n')
    two = ('# HELP aieng_drift_psi PSI\n# TYPE aieng_drift_psi gauge\n'
           'aieng_drift_psi{detector="embedding"} 0.2\n'
           'aieng_drift_psi{detector="length"} 0.1\n')  # the same series again

    def build(kernel: Any) -> Any:
        return kernel.compose({"llm": ScriptedBackend(), "a": _Renders(one),
                               "b": _Renders(two)}, name="two")

    gateway = Gateway(build, settings=GatewaySettings(auth=False),
                      kernel=lambda: isolated_kernel(loop_block_threshold=None))
    with structlog.testing.capture_logs() as logs:
        async with gateway.running():
            transport = httpx.ASGITransport(app=gateway.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                text = (await client.get("/metrics")).text
    assert text.count("# TYPE aieng_drift_psi gauge") == 1
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert sorted(s.labels["detector"] for s in families["aieng_drift_psi"].samples) == [
        "embedding", "length"]
    assert len(families["aieng_lat_seconds"].samples) == 4
    assert "aieng_gateway_requests" in families
    assert any(e["event"] == "gateway.metrics_repeated" for e in logs)


async def test_request_counts_are_labelled_by_route_not_by_path(tmp_path: Path) -> None:
    """``aieng_gateway_requests_total`` is labelled by the route's template: the raw path of
    ``/v1/models/<anything>`` made one series per name a client (or a scanner) tried."""
    from prometheus_client.parser import text_string_to_metric_families

    gateway = make_gateway(tmp_path, settings=GatewaySettings(auth=False))
    async with gateway.running():
        transport = httpx.ASGITransport(app=gateway.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            for i in range(30):
                assert (await client.get(f"/v1/models/junk{i}")).status_code == 404
            text = (await client.get("/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = [s for s in families["aieng_gateway_requests"].samples
               if s.labels["path"].startswith("/v1/models/")]
    assert [(s.labels["path"], s.labels["status"], s.value) for s in samples] == [
        ("/v1/models/{model:path}", "404", 30.0)]
