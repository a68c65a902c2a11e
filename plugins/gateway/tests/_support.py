"""Test support: a gateway over test doubles, served by uvicorn on a free loopback port.

The backend is the kit's ``ScriptedBackend`` (a test double) extended with scripted
failures keyed on the prompt: ``FAIL`` raises (an upstream error), ``SLOW`` outlasts the
stage timeout, ``BREAK`` fails after the first delta; and with log-probabilities.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import attrs
import httpx
from aieng_gateway import Gateway, GatewaySettings, KeyStore
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Completion, Delta, Request, TokenLogprob, ToolCall
from aieng_monitoring import FeedbackOptions, FeedbackStore, Monitor, MonitorOptions

from aieng_core.testing import HashEmbedder, ScriptedBackend, isolated_kernel
from aieng_core.testing.loopback import LoopbackServer

__all__ = ["FlakyBackend", "LoopbackServer", "free_port", "make_gateway", "post_raw",
           "wait_healthy"]


def free_port() -> int:
    """A loopback port free right now (for an ``aieng serve`` subprocess)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post_raw(sock: socket.socket, key: str, body: dict[str, Any]) -> None:
    """Send a chat request over a raw socket (closing it is a client going away)."""
    data = json.dumps(body).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n"
                 b"authorization: Bearer " + key.encode() + b"\r\n"
                 b"content-type: application/json\r\n"
                 b"content-length: " + str(len(data)).encode() + b"\r\n\r\n" + data)


def wait_healthy(process: subprocess.Popen[bytes], base: str) -> None:
    """Wait (60 s at most) until the served gateway at ``base`` answers ``/healthz``;
    fail with its standard error if the process ends first."""
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, process.stderr.read().decode()  # type: ignore[union-attr]
        try:
            if httpx.get(f"{base}/healthz", trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "aieng serve did not start"
        time.sleep(0.1)


def logprob_of(index: int) -> float:
    """The log-probability FlakyBackend reports for its ``index``-th word."""
    return -(index + 1) / 8


class FlakyBackend(ScriptedBackend):
    """``ScriptedBackend`` (echoing ``You said: <prompt>``) that fails on ``FAIL`` and
    hangs on ``SLOW`` (setting :attr:`slow` first, :attr:`cancelled` when cancelled);
    ``BREAK`` fails after the first delta; ``STREAMLONG`` streams 400 words slowly (to
    disconnect mid-way).
    A request with tools is answered ``Calling.`` and one call of the first tool whose
    arguments report what reached the backend (the prompt, ``tool_choice``,
    ``parallel_tool_calls``, the roles of the conversation and its earlier calls).
    With ``metadata["logprobs"]`` (and no ``NOLOGPROBS`` in the prompt) each word (a
    token here) has the log-probability :func:`logprob_of` its index, in the completion
    and on its delta."""

    def __init__(self, reply: Callable[[Request], str] | None = None) -> None:
        super().__init__(reply or (lambda r: f"You said: {r.prompt}"))
        self.slow = threading.Event()
        #: Set when a ``SLOW`` generation is cancelled before its end.
        self.cancelled = threading.Event()

    async def _trouble(self, request: Request) -> None:
        if "FAIL" in request.prompt:
            raise ConnectionError("upstream refused the connection")
        if "SLOW" in request.prompt:
            self.slow.set()
            try:
                await anyio.sleep(30)
            except anyio.get_cancelled_exc_class():
                self.cancelled.set()
                raise

    @staticmethod
    def _logprobs(request: Request) -> bool:
        return bool(request.metadata.get("logprobs")) and "NOLOGPROBS" not in request.prompt

    @staticmethod
    def _call(request: Request) -> ToolCall:
        return ToolCall(id="call_1", name=request.tools[0].name, arguments={
            "prompt": request.prompt, "choice": request.metadata.get("tool_choice"),
            "parallel": request.metadata.get("parallel_tool_calls"),
            "roles": [m.role for m in request.messages],
            "earlier": [[c.name, c.arguments] for m in request.messages
                        for c in m.tool_calls]})

    @hookimpl
    async def aieng_generate(self, request: Request) -> Completion | None:
        await self._trouble(request)
        if request.tools:
            return Completion(text="Calling.", finish_reason="tool_calls",
                              tool_calls=[self._call(request)])
        completion = await super().aieng_generate(request)
        if completion is None or not self._logprobs(request):
            return completion
        words = completion.text.split(" ")
        return attrs.evolve(completion, logprobs=[
            TokenLogprob(token=w if i == 0 else f" {w}", logprob=logprob_of(i))
            for i, w in enumerate(words)])

    @hookimpl
    def aieng_stream(self, request: Request) -> AsyncIterator[Delta] | None:
        return self._flaky_stream(request)

    async def _flaky_stream(self, request: Request) -> AsyncIterator[Delta]:
        await self._trouble(request)
        if request.tools:
            yield Delta(text="Calling.", index=0)
            yield Delta(text="", index=1, finish_reason="tool_calls",
                        tool_calls=[self._call(request)])
            return
        if "STREAMLONG" in request.prompt:
            for i in range(400):
                await anyio.sleep(0.01)
                yield Delta(text=f" w{i}", index=i)
            yield Delta(text="", index=400, finish_reason="stop")
            return
        async for delta in self._stream(request):
            if "BREAK" in request.prompt and delta.index == 1:
                raise ConnectionError("upstream dropped the connection")
            if delta.text and self._logprobs(request):
                delta = attrs.evolve(delta, logprob=logprob_of(delta.index))
            yield delta


def make_gateway(tmp: Path, *, settings: GatewaySettings | None = None,
                 backend: Any = None, timeout: float = 0.5) -> Gateway:
    """A gateway over FlakyBackend + HashEmbedder + monitor + feedback-sqlite in ``tmp``."""
    keys = KeyStore(tmp / "keys.sqlite3")
    monitor = Monitor(MonitorOptions(prices={"llm": {"input_per_1k": 1.0,
                                                     "output_per_1k": 2.0}}))
    sink = FeedbackStore(FeedbackOptions(path=str(tmp / "feedback.sqlite3")))

    def build(kernel: Any) -> Any:
        return kernel.compose({"llm": backend or FlakyBackend(), "embed": HashEmbedder(16),
                               "monitor": monitor, "feedback": sink},
                              name="test", timeout=timeout)

    return Gateway(build, keys=keys, settings=settings or GatewaySettings(),
                   kernel=lambda: isolated_kernel(loop_block_threshold=None))

