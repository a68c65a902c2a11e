"""SSE keep-alive: a stream idle for ``keepalive_s`` (a slow first token, a guarded answer
held back) sends ``: keep-alive`` comments, so proxies with an idle timeout (nginx, AWS ALB:
60 s) do not cut it; clients (aieng's ``openai`` backend) skip them."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from _support import FlakyBackend, LoopbackServer, make_gateway
from aieng_gateway import GatewaySettings
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Completion, Delta, Message, Request
from aieng_openai import OpenAIBackend, OpenAIOptions

PING = b": keep-alive\n\n"


class Sleepy(FlakyBackend):
    """FlakyBackend that holds its first delta until ``go`` is set (a long prompt on a
    slow model), then answers; ``DIE`` in the prompt fails after the wait."""

    def __init__(self, go: threading.Event) -> None:
        super().__init__()
        self.go = go

    async def _wait(self) -> None:
        # Until the keep-alives the test waits for are out: no count that depends on how
        # fast a busy machine runs the loop (a minute at most).
        for _ in range(6000):
            if self.go.is_set():
                return
            await anyio.sleep(0.01)

    @hookimpl
    async def aieng_generate(self, request: Request) -> Completion | None:
        await self._wait()
        return await super().aieng_generate(request)

    @hookimpl
    def aieng_stream(self, request: Request) -> AsyncIterator[Delta] | None:
        return self._sleepy(request)

    async def _sleepy(self, request: Request) -> AsyncIterator[Delta]:
        await self._wait()
        if "DIE" in request.prompt:
            raise ConnectionError("upstream dropped the connection")
        async for delta in self._flaky_stream(request):
            yield delta


class Pings:
    """The gateway's app, counting the keep-alives it sends: ``go`` is set once ``after``
    have gone out."""

    def __init__(self, app: Any, go: threading.Event, after: int) -> None:
        self.app, self.go, self.after, self.sent = app, go, after, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def counted(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body" and message.get("body") == PING:
                self.sent += 1
                if self.sent >= self.after:
                    self.go.set()

        await self.app(scope, receive, counted)


def _serve(tmp: Path, keepalive: float, *, after: int = 2) -> Any:
    go = threading.Event()
    if not keepalive:
        go.set()
    gateway = make_gateway(tmp, settings=GatewaySettings(auth=False, keepalive_s=keepalive),
                           backend=Sleepy(go), timeout=120)
    return LoopbackServer(Pings(gateway.app, go, after))


@pytest.fixture
def pinging(tmp_path: Path) -> Iterator[LoopbackServer]:
    with _serve(tmp_path, 0.1) as server:
        yield server


def _raw_stream(server: LoopbackServer, text: str) -> bytes:
    with server.client(timeout=20) as client, client.stream(
            "POST", "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": text}], "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return response.read()


def test_the_setting() -> None:
    """15 s by default; 0 turns it off; negative or non-finite values are refused."""
    assert GatewaySettings().keepalive_s == 15.0
    assert GatewaySettings(keepalive_s=0).keepalive_s == 0
    for bad in (-1, float("inf"), float("nan"), True, "15"):
        with pytest.raises((TypeError, ValueError), match="keepalive_s"):
            GatewaySettings(keepalive_s=bad)  # type: ignore[arg-type]


def test_an_idle_stream_sends_keepalive_comments(pinging: LoopbackServer) -> None:
    """While the first token is awaited, comment lines go out every keepalive_s; the
    events after them are the usual ones."""
    raw = _raw_stream(pinging, "slow start")
    head, _, rest = raw.partition(b"data: ")
    assert head.count(PING) >= 2 and head == PING * head.count(PING), head
    events = [json.loads(line[6:]) for line in (b"data: " + rest).decode().splitlines()
              if line.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
    assert text == "You said: slow start"
    assert raw.endswith(b"data: [DONE]\n\n")


def test_an_error_after_a_keepalive_is_an_error_event(pinging: LoopbackServer) -> None:
    """Once a keep-alive has sent the headers (200), a failure before the first token is a
    ``data: {"error": ...}`` event before ``[DONE]``, as after a token."""
    raw = _raw_stream(pinging, "DIE please").decode()
    assert raw.startswith(PING.decode())
    [error] = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]
    assert error["error"]["code"] == "upstream_error"
    assert raw.endswith("data: [DONE]\n\n")


def test_keepalive_off(tmp_path: Path) -> None:
    """keepalive_s = 0: nothing is sent before the first token."""
    with _serve(tmp_path, 0) as server:
        raw = _raw_stream(server, "quiet")
    assert b": keep-alive" not in raw and raw.startswith(b"data: {")


@pytest.mark.anyio
async def test_the_openai_backend_reads_through_keepalives(pinging: LoopbackServer) -> None:
    """aieng's openai client skips the comments: the same deltas, finish and usage."""
    backend = OpenAIBackend(OpenAIOptions(base_url=f"{pinging.url}/v1", model="test"))
    stream = backend.aieng_stream(Request(messages=(Message("user", "through pings"),)))
    assert stream is not None
    deltas = [delta async for delta in stream]
    await backend.aclose()
    assert "".join(d.text for d in deltas) == "You said: through pings"
    assert deltas[-1].finish_reason == "stop" and deltas[-1].usage is not None


def test_serve_takes_keepalive_and_refuses_nonsense_in_one_line(tmp_path: Path) -> None:
    """``aieng serve --keepalive``: nan or inf is one error line naming it, not a traceback
    (refused before anything is loaded or bound)."""
    from aieng_gateway._cli import serve
    from click.testing import CliRunner

    pipeline = tmp_path / "p.toml"
    pipeline.write_text("[pipeline]\nname = \"p\"\n")
    for value in ("nan", "inf"):
        result = CliRunner().invoke(serve, [str(pipeline), "--no-auth", "--keepalive", value])
        assert result.exit_code == 1, result.output
        assert result.output.strip().splitlines() == [
            f"Error: keepalive_s must be a number of seconds, 0 or more (0: off), got {value}"]
    assert "--keepalive" in CliRunner().invoke(serve, ["--help"]).output
