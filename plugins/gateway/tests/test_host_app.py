"""The gateway inside a host's own ASGI app: mounted under a path, its lifespan entered by
the host, run on trio, run again after it ended, two gateways in one process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
import structlog
from _support import LoopbackServer, make_gateway
from aieng_gateway import Gateway, GatewaySettings
from starlette.applications import Starlette
from starlette.routing import Mount

OPEN = GatewaySettings(auth=False)
CHAT = {"model": "test", "messages": [{"role": "user", "content": "hi"}]}


def host_app(*mounts: tuple[str, Gateway], lifespan: bool = True) -> Starlette:
    """A host's app with each gateway mounted at its path; with ``lifespan`` the host's
    lifespan enters every gateway's :meth:`Gateway.running` (the documented way)."""

    @asynccontextmanager
    async def enter(app: Starlette) -> AsyncIterator[None]:
        # The host's own task group around the gateways, as a host's lifespan has.
        async with anyio.create_task_group(), AsyncExitStack() as stack:
            for _, gateway in mounts:
                await stack.enter_async_context(gateway.running())
            yield

    return Starlette(routes=[Mount(path, app=gateway.app) for path, gateway in mounts],
                     lifespan=enter if lifespan else None)


def test_a_mounted_gateway_without_its_lifespan_answers_503_naming_the_fix(
        tmp_path: Path) -> None:
    """Starlette does not run a mounted app's lifespan: requests get a 503
    ``gateway_not_running`` saying to enter ``gateway.running()``, and one warning is
    logged, not a 500 with a traceback per request."""
    gateway = make_gateway(tmp_path, settings=OPEN)
    with structlog.testing.capture_logs() as logs, \
            LoopbackServer(host_app(("/llm", gateway), lifespan=False)) as server:
        answers = [httpx.post(f"{server.url}/llm/v1/chat/completions", trust_env=False, json=CHAT),
                   httpx.get(f"{server.url}/llm/v1/models", trust_env=False),
                   httpx.get(f"{server.url}/llm/healthz", trust_env=False)]
    for answer in answers:
        assert answer.status_code == 503, answer.text
        error = answer.json()["error"]
        assert error["code"] == "gateway_not_running"
        assert "gateway.running()" in error["message"]
    events = [entry["event"] for entry in logs]
    assert "gateway.internal_error" not in events
    assert events.count("gateway.not_running") == 1


def test_a_host_lifespan_that_enters_the_gateways_serves_both(tmp_path: Path) -> None:
    """Two gateways mounted in one host app (served by uvicorn on loopback), entered in the
    host's lifespan, each answer chat, stream and models under their own path."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = make_gateway(tmp_path / "a", settings=OPEN)
    second = make_gateway(tmp_path / "b", settings=OPEN)
    with LoopbackServer(host_app(("/one", first), ("/two", second))) as server:
        for path in ("/one", "/two"):
            chat = httpx.post(f"{server.url}{path}/v1/chat/completions", trust_env=False, json=CHAT)
            assert chat.status_code == 200, chat.text
            assert chat.json()["choices"][0]["message"]["content"] == "You said: hi"
            stream = httpx.post(f"{server.url}{path}/v1/chat/completions", trust_env=False,
                                json={**CHAT, "stream": True})
            assert stream.status_code == 200
            assert stream.text.rstrip().endswith("data: [DONE]")
            health = httpx.get(f"{server.url}{path}/healthz", trust_env=False)
            assert health.json()["status"] == "ok"
    assert first.requests[("/v1/chat/completions", 200)] == 2
    assert second.requests[("/v1/chat/completions", 200)] == 2


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_the_gateway_serves_on_trio_and_asyncio(tmp_path: Path) -> None:
    """Entered by the host on either anyio backend, the mounted gateway answers chat and a
    stream (httpx's ASGI transport: the host's loop runs the app)."""
    gateway = make_gateway(tmp_path, settings=OPEN)
    transport = httpx.ASGITransport(host_app(("/llm", gateway), lifespan=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://host") as client, \
            gateway.running():
        chat = await client.post("/llm/v1/chat/completions", json=CHAT)
        assert chat.json()["choices"][0]["message"]["content"] == "You said: hi"
        stream = await client.post("/llm/v1/chat/completions", json={**CHAT, "stream": True})
        assert stream.status_code == 200
        assert stream.text.rstrip().endswith("data: [DONE]")


def test_a_gateway_runs_again_after_it_ended_but_not_twice_at_once(tmp_path: Path) -> None:
    """``running()`` can be entered again in a second event loop (a notebook's second
    ``asyncio.run``; here trio after asyncio), even after ``stop_runs`` ended the first run;
    entering it while it runs is a clear ``RuntimeError``."""
    gateway = make_gateway(tmp_path, settings=OPEN)
    transport = httpx.ASGITransport(gateway.app)

    async def serve(stop: bool) -> int:
        async with httpx.AsyncClient(transport=transport, base_url="http://h") as client, \
                gateway.running():
            with pytest.raises(RuntimeError, match="running already"):
                async with gateway.running():
                    pass
            status = (await client.post("/v1/chat/completions", json=CHAT)).status_code
            if stop:
                gateway.stop_runs()
            return status

    assert anyio.run(serve, True, backend="asyncio") == 200
    assert anyio.run(serve, False, backend="trio") == 200
