"""A real OpenAI-compatible HTTP server on loopback, for the tests: a test double.

:class:`OpenAIServerDouble` is a small starlette app that speaks the OpenAI wire format
(``/v1/chat/completions`` as JSON and as server-sent events, ``/v1/embeddings``,
``/v1/models``) and answers through any aieng backend: the kit's ``ScriptedBackend`` and
``HashEmbedder`` for the policy tests, the real ``SmolLM2Backend`` for the real path.
``logprobs: true`` is passed on as ``metadata["logprobs"]`` and the backend's
log-probabilities are answered in OpenAI's ``choices[].logprobs.content`` (:class:`Scored`
gives a scripted backend some).
Failures are scripted per path (:meth:`OpenAIServerDouble.script`): an error status with
headers (429 with ``Retry-After``), a delay (timeouts), a raw body or raw SSE lines
(malformed streams). :class:`LoopbackServer` runs an app under uvicorn in a background
thread on ``127.0.0.1`` with an OS-chosen port and stops it cleanly.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

import attrs
from aieng_hookspecs.types import (
    Completion,
    Delta,
    Message,
    Request,
    TokenLogprob,
    ToolSpec,
    Usage,
)
from starlette.applications import Starlette
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from aieng_core.testing.loopback import LoopbackServer as _Loopback

__all__ = ["API_KEY", "CHAT_MODEL", "EMBED_MODEL", "OTHER_MODEL", "Call", "LoopbackServer",
           "OpenAIServerDouble", "Scored", "Scripted", "echo", "logprob_of"]

#: The key the session's server double accepts; tests assert it never shows in logs or
#: errors.
API_KEY = "sk-test-0123456789abcdef-TOPSECRET-key"
CHAT_MODEL = "double-chat"
EMBED_MODEL = "double-embed"
OTHER_MODEL = "double-other"


def echo(request: Request) -> str:
    """The double's policy: a fixed preamble, then the user's words back."""
    return f"You said: {request.prompt}"


def logprob_of(index: int) -> float:
    """The log-probability :class:`Scored` gives its ``index``-th word (exact in binary)."""
    return -(index + 1) / 4


class Scored:
    """A scripted backend whose words (its tokens here) have log-probabilities when the
    request asks for them: :func:`logprob_of` their index, whole and streamed."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    async def aieng_generate(self, request: Request) -> Completion | None:
        completion: Completion | None = await self.backend.aieng_generate(request)
        if completion is None or not request.metadata.get("logprobs"):
            return completion
        words = completion.text.split(" ")
        return attrs.evolve(completion, logprobs=[
            TokenLogprob(word if index == 0 else f" {word}", logprob_of(index))
            for index, word in enumerate(words)])

    def aieng_stream(self, request: Request) -> AsyncIterator[Delta] | None:
        stream = self.backend.aieng_stream(request)
        if stream is None or not request.metadata.get("logprobs"):
            return stream
        return self._scored(stream)

    @staticmethod
    async def _scored(stream: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
        async for delta in stream:
            yield attrs.evolve(delta, logprob=logprob_of(delta.index)) if delta.text else delta


@attrs.frozen
class Scripted:
    """A scripted answer to the next call of a path, instead of the policy's.

    :param status: the HTTP status.
    :param headers: extra response headers (``Retry-After``).
    :param delay: seconds to wait before answering (for client timeouts).
    :param body: a raw body; ``None`` with status 200 lets the policy answer after ``delay``.
    :param sse: raw lines of an event stream (each sent followed by a newline).
    :param hang: answer nothing until the client goes away (a stalled server; with ``sse``,
        after its lines): a test of the client's timeouts then has no race with a delay on
        a busy machine.
    :param trickle: send the answer a byte every ``trickle`` seconds for as long as the
        client stays (``body``, then spaces): a server no read timeout catches.
    """

    status: int = 200
    headers: dict[str, str] = attrs.field(factory=dict)
    delay: float = 0.0
    body: str | None = None
    sse: tuple[str, ...] | None = None
    hang: bool = False
    trickle: float | None = None


@attrs.frozen
class Call:
    """One request the server received."""

    path: str
    headers: dict[str, str]
    body: Any


class OpenAIServerDouble:
    """A test double of an OpenAI-compatible server, answering through aieng backends.

    :param backend: answers chat completions (``aieng_generate`` / ``aieng_stream``); it is
        called with ``model=None``, whatever model the client named.
    :param embedder: answers embeddings (``aieng_embed``).
    :param models: the model ids served; another model gets 404 ``model_not_found``.
    :param api_key: when set, calls without ``Authorization: Bearer <api_key>`` get 401,
        whose message echoes the key sent, as OpenAI's does.
    """

    def __init__(self, backend: Any, embedder: Any = None, *, models: Sequence[str],
                 api_key: str | None = None) -> None:
        self.backend = backend
        self.embedder = embedder
        self.models = list(models)
        self.api_key = api_key
        #: Every request received, in order.
        self.calls: list[Call] = []
        self._scripts: dict[str, deque[Scripted]] = {}
        self._lock = threading.Lock()
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/embeddings", self._embeddings, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
        ])

    # -- scripting -----------------------------------------------------------------------

    def script(self, path: str, *answers: Scripted) -> None:
        """Queue answers for the next calls of ``path`` (``"chat/completions"``, ...)."""
        with self._lock:
            self._scripts.setdefault(f"/v1/{path}", deque()).extend(answers)

    def reset(self) -> None:
        """Forget the calls and any unused script."""
        with self._lock:
            self._scripts.clear()
            self.calls.clear()

    def calls_to(self, path: str) -> list[Call]:
        """The calls of ``path`` so far."""
        return [call for call in self.calls if call.path == f"/v1/{path}"]

    def _next(self, path: str) -> Scripted | None:
        with self._lock:
            queue = self._scripts.get(path)
            return queue.popleft() if queue else None

    # -- plumbing ------------------------------------------------------------------------

    async def _enter(self, http: HTTPRequest) -> tuple[Any, Response | None]:
        """Record the call; the body, and a response when the call ends here."""
        raw = await http.body()
        try:
            body: Any = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw.decode("utf-8", "replace")
        path = http.url.path
        self.calls.append(Call(path=path, headers=dict(http.headers), body=body))
        if self.api_key is not None:
            sent = http.headers.get("authorization", "")
            if sent != f"Bearer {self.api_key}":
                given = sent.removeprefix("Bearer ")
                return body, _error(401, f"Incorrect API key provided: {given}.",
                                    "invalid_api_key")
        scripted = self._next(path)
        if scripted is not None:
            if scripted.delay:
                await asyncio.sleep(scripted.delay)
            if scripted.hang and scripted.sse is None:
                await _until_gone(http)
                return body, Response(status_code=499)  # nobody reads it
            if scripted.trickle is not None:
                return body, StreamingResponse(_trickled(scripted.body or "", scripted.trickle),
                                               status_code=scripted.status,
                                               media_type="application/json",
                                               headers=scripted.headers)
            if scripted.sse is not None:
                lines, hang = scripted.sse, scripted.hang

                async def raw_stream() -> AsyncIterator[str]:
                    for line in lines:
                        yield line + "\n"
                    if hang:  # then stall, headers and lines sent
                        await _until_gone(http)

                return body, StreamingResponse(raw_stream(), status_code=scripted.status,
                                               media_type="text/event-stream",
                                               headers=scripted.headers)
            if scripted.status != 200 or scripted.body is not None:
                return body, Response(scripted.body or "", status_code=scripted.status,
                                      headers=scripted.headers,
                                      media_type="application/json")
        if http.method == "POST" and not isinstance(body, dict):
            return body, _error(400, "the body must be a JSON object", "invalid_request")
        return body, None

    # -- endpoints -----------------------------------------------------------------------

    async def _models(self, http: HTTPRequest) -> Response:
        _, early = await self._enter(http)
        if early is not None:
            return early
        return JSONResponse({"object": "list", "data": [
            {"id": name, "object": "model", "owned_by": "aieng-tests"}
            for name in self.models]})

    async def _chat(self, http: HTTPRequest) -> Response:
        body, early = await self._enter(http)
        if early is not None:
            return early
        if body.get("model") not in self.models:
            return _error(404, f"The model `{body.get('model')}` does not exist.",
                          "model_not_found")
        try:
            request = _request(body)
        except (KeyError, TypeError, ValueError) as error:
            return _error(400, f"invalid request: {error}", "invalid_request")
        model = body["model"]
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(self._sse(request, model, usage),
                                     media_type="text/event-stream")
        completion = await self.backend.aieng_generate(request)
        usage_ = completion.usage
        return JSONResponse({
            "id": "chatcmpl-double", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "finish_reason": completion.finish_reason,
                         "message": {"role": "assistant", "content": completion.text},
                         "logprobs": None if completion.logprobs is None else {"content": [
                             _token(t.token, t.logprob) for t in completion.logprobs]}}],
            "usage": _usage(usage_),
        })

    async def _sse(self, request: Request, model: str, include_usage: bool
                   ) -> AsyncIterator[str]:
        def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
            return "data: " + json.dumps({
                "id": "chatcmpl-double", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": model, "choices": choices,
                **extra}) + "\n\n"

        yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                      "finish_reason": None}])
        stream = self.backend.aieng_stream(request)
        usage = Usage()
        texts = 0
        async for delta in stream:
            assert isinstance(delta, Delta)
            if delta.text:
                texts += 1
            if delta.usage is not None:
                usage = delta.usage
            # A delta's log-probability as one entry (the backend's delta is its token).
            yield chunk([{"index": 0, "delta": {"content": delta.text} if delta.text else {},
                          "finish_reason": delta.finish_reason,
                          "logprobs": None if delta.logprob is None else {"content": [
                              _token(delta.text, delta.logprob)]}}])
        if include_usage:
            if not usage.completion_tokens:
                usage = Usage(completion_tokens=texts)
            yield chunk([], usage=_usage(usage))
        yield "data: [DONE]\n\n"

    async def _embeddings(self, http: HTTPRequest) -> Response:
        body, early = await self._enter(http)
        if early is not None:
            return early
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or \
                not all(isinstance(text, str) for text in texts):
            return _error(400, "input must be a string or a non-empty list of strings",
                          "invalid_request")
        vectors = self.embedder.aieng_embed(texts, None)
        return JSONResponse({"object": "list", "model": body.get("model"), "data": [
            {"object": "embedding", "index": index, "embedding": list(vector)}
            for index, vector in enumerate(vectors)],
            "usage": {"prompt_tokens": sum(len(t.split()) for t in texts),
                      "total_tokens": sum(len(t.split()) for t in texts)}})


async def _until_gone(http: HTTPRequest) -> None:
    """Return once the client has closed the connection (a minute at most)."""
    for _ in range(6000):
        if await http.is_disconnected():
            return
        await asyncio.sleep(0.01)


async def _trickled(start: str, every: float) -> AsyncIterator[bytes]:
    """``start``, then spaces, a byte every ``every`` seconds (a minute at most): the
    response ends when the client goes away (the send fails, the stream is cancelled)."""
    data = start.encode("utf-8")
    for index in range(int(60 / every)):
        yield data[index:index + 1] or b" "
        await asyncio.sleep(every)


def _error(status: int, message: str, code: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error",
                                   "code": code}}, status_code=status)


def _token(token: str, logprob: float) -> dict[str, Any]:
    """One entry of ``logprobs.content``, as OpenAI sends it."""
    return {"token": token, "logprob": logprob,
            "bytes": list(token.encode("utf-8", "surrogatepass")), "top_logprobs": []}


def _usage(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}


def _request(body: dict[str, Any]) -> Request:
    """The aieng request of a chat-completions body (model left to the backend)."""
    schema = None
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        schema = response_format["json_schema"]["schema"]
    tools = tuple(ToolSpec(name=t["function"]["name"],
                           description=t["function"].get("description", ""),
                           parameters=t["function"].get("parameters") or {"type": "object"})
                  for t in body.get("tools") or ())
    stop = body.get("stop") or ()
    return Request(
        messages=tuple(Message(role=m["role"], content=m.get("content") or "",
                               name=m.get("name"), tool_call_id=m.get("tool_call_id"))
                       for m in body["messages"]),
        temperature=float(body.get("temperature", 1.0)),
        top_p=float(body.get("top_p", 1.0)),
        max_tokens=int(body.get("max_tokens") or body.get("max_completion_tokens") or 16),
        stop=(stop,) if isinstance(stop, str) else tuple(stop),
        seed=body.get("seed"),
        response_schema=schema,
        tools=tools,
        metadata={"logprobs": True} if body.get("logprobs") is True else {},
    )


class LoopbackServer(_Loopback):
    """The kit's loopback server without a lifespan (the doubles have none), 10 s to start.

    :param app: the ASGI app.
    """

    def __init__(self, app: Any, *, start_timeout: float = 10.0) -> None:
        super().__init__(app, lifespan="off", start_timeout=start_timeout, stop_timeout=10.0)
