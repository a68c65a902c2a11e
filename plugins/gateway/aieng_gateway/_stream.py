"""The gateway's streamed chat completion: server-sent events in OpenAI's chunk format
(the run's deltas, keep-alive comments, an error event after the headers), and the errors
a stream and the request path share."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from aieng_hookspecs.types import Completion, Delta, Usage
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from aieng_core import HookError

from ._agent import agent_completion, agent_field, step_comment
from ._protocol import ApiError, ChatCall, chat_chunk, logprob_content

if TYPE_CHECKING:
    from aieng_core.agent import AgentStep

    from ._app import Gateway, _Call

__all__ = ["KEEPALIVE", "RUN_HEADER", "ChatStream", "no_logprobs", "shutting_down"]

log = structlog.get_logger(__name__)

RUN_HEADER = "x-aieng-run-id"
#: What an idle stream sends every ``keepalive_s``: an SSE comment, which clients skip.
KEEPALIVE = b": keep-alive\n\n"


def shutting_down() -> ApiError:
    return ApiError(503, "the server is shutting down: retry the request (another instance "
                         "answers it)", kind="server_error", code="server_shutting_down",
                    headers={"Retry-After": "1", "Connection": "close"})


def no_logprobs() -> ApiError:
    return ApiError(422, "logprobs: the backend that answered does not report "
                         "log-probabilities (ask without logprobs, or use a backend that "
                         "reports them, like SmolLM2)", param="logprobs",
                    code="unsupported_value")


class ChatStream(Response):
    """A chat completion as server-sent events in OpenAI's chunk format, ending with
    ``data: [DONE]``. The headers wait for the run's first delta (or its end), so an error
    before it (no backend for the model, a backend failing at once) is answered as a JSON
    request's is, with its status; after it, the error is a ``data: {"error": ...}`` event.
    A stream silent for ``keepalive_s`` sends a ``: keep-alive`` comment (the first one
    sends the headers: an error after it is an event too). A client that goes away, before
    the first delta too, cancels the run and is recorded as ``early_stop`` feedback.
    In agent mode the run is an agent's: each finished step is an SSE comment, and the
    answer comes whole at the end."""

    def __init__(self, gateway: Gateway, chat: ChatCall, call: _Call, reserved: int) -> None:
        # Not Response.__init__: an empty body would get "content-length: 0".
        self.status_code = 200
        self.background = None
        self.raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8"),
                            (RUN_HEADER.encode(), (call.run_id or "").encode()),
                            (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
        self.gateway, self.chat, self.call, self.reserved = gateway, chat, call, reserved
        self.finish: Callable[[int], None] = lambda status: None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call, chat = self.call, self.chat
        run_id = call.run_id or ""
        created = int(time.time())
        chunks = 0
        started = gone = ended = False
        completion: Completion | None = None
        raw: Completion | None = None
        cached = False  # answered from the cache: the key's bucket is charged nothing
        error: ApiError | None = None
        agent: dict[str, Any] | None = None  # agent mode: the aieng_agent field
        sending = anyio.Lock()  # the keep-alives and the events take turns
        sent = time.monotonic()  # when the last bytes went out

        async def body(data: bytes) -> None:
            nonlocal gone, started, sent
            async with sending:
                if gone:
                    return
                try:
                    if not started:  # the headers go out with the first event (or ping)
                        started = True
                        await send({"type": "http.response.start", "status": 200,
                                    "headers": self.raw_headers})
                    await send({"type": "http.response.body", "body": data,
                                "more_body": True})
                    sent = time.monotonic()
                except OSError:  # the client is gone: stop generating for it
                    gone = True
                    group.cancel_scope.cancel()

        async def keep_alive(every: float) -> None:
            # A stream idle past a proxy's timeout is cut: a comment keeps it open. The
            # first one sends the headers too, so an error after it is an event.
            while True:
                await anyio.sleep(max(0.0, sent + every - time.monotonic()))
                if time.monotonic() - sent >= every:
                    await body(KEEPALIVE)

        async def on_delta(delta: Delta) -> None:
            nonlocal chunks, error
            if error is not None or gone:  # cancelled: the run ends at its next checkpoint
                return
            logprobs = None
            if chat.logprobs and delta.text:
                if delta.logprob is None:
                    if chunks == 0 and delta.finish_reason is not None:
                        return  # a whole answer (a backend that does not stream): its
                        # log-probabilities come with the completion, sent at the end
                    error = no_logprobs()
                    group.cancel_scope.cancel()
                    return
                logprobs = logprob_content([(delta.text, delta.logprob)])
            if delta.text or chunks == 0:
                await body(chat_chunk(run_id, chat.model, created, text=delta.text,
                                      role=chunks == 0, logprobs=logprobs))
                chunks += 1

        async def watch() -> None:
            nonlocal gone
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone = True
                    group.cancel_scope.cancel()
                    return

        async def on_step(step: AgentStep) -> None:
            # Agent mode: each finished step as an SSE comment (clients skip it; a proxy
            # sees bytes while the tools run). Behind output guards: tool names only.
            await body(step_comment(step, detail="guard_output" not in
                                    self.gateway.pipeline.stages))

        async def generate() -> None:
            nonlocal completion, raw, error, ended, agent, cached
            try:
                if self.gateway.settings.agent is not None:
                    # The answer comes whole at the end (one chunk), after the steps.
                    done = await self.gateway._run_agent(chat.request, run_id, on_step)
                    completion, agent = agent_completion(done), agent_field(done)
                else:
                    result = await self.gateway.pipeline.run(chat.request, run_id=run_id,
                                                             on_delta=on_delta)
                    completion = self.gateway._billed(call, result)
                    raw = result.raw_completion
                    cached = result.cache_hit is not None
                    if result.status == "blocked":
                        # The deltas are out already; the tokens spent are still counted
                        # (the usage chunk, the key's bucket), as in a JSON answer.
                        completion = Completion(text="", finish_reason="content_filter",
                                                usage=completion.usage
                                                if completion is not None else Usage())
            except HookError as exc:
                error = self.gateway._upstream(exc, chat.model, run_id=run_id)
            except Exception as exc:
                if isinstance(exc, LookupError) and self.gateway.settings.agent is not None:
                    # A pipeline that cannot act as an agent (no backend, no policy).
                    error = self.gateway._agent_failure(exc, chat.model, run_id)
                else:  # a bug of ours: say so, log it, keep serving
                    log.exception("gateway.internal_error", path="/v1/chat/completions",
                                  error_type=type(exc).__name__)
                    error = ApiError(500, "internal gateway error (logged)",
                                     kind="server_error")
            ended = True
            group.cancel_scope.cancel()  # stop watching for a disconnect

        scopes = self.gateway._inflight
        try:
            async with anyio.create_task_group() as group:
                scopes.add(group.cancel_scope)
                group.start_soon(watch)
                group.start_soon(generate)
                if self.gateway.settings.keepalive_s > 0:
                    group.start_soon(keep_alive, self.gateway.settings.keepalive_s)
        finally:
            scopes.discard(group.cancel_scope)
        if not ended and error is None and not gone:  # stop_runs ended it
            error = shutting_down()
        usage = completion.usage if completion is not None else None
        self.gateway._reconcile(call, self.reserved, usage, cached=cached,
                                streamed=chunks)
        if usage is not None:
            call.prompt_tokens, call.completion_tokens = usage.prompt_tokens, \
                usage.completion_tokens
        if gone:
            self.gateway._spawn_feedback(run_id, "early_stop", chunks_sent=chunks,
                                         key_id=call.key.id if call.key else None)
            self.finish(499)  # nginx's "client closed request"
            return
        # No delta came (a blocked input) or the only one was held (a whole answer: a
        # backend that does not stream, a cache hit): the answer goes in one chunk, with
        # its log-probabilities when they were asked for.
        whole = completion if error is None and chunks == 0 else None
        logprobs = None
        if whole is not None and chat.logprobs and whole.text:
            if whole.logprobs is None:
                error = no_logprobs()
            elif raw is None or raw.text == whole.text:  # as in a JSON answer
                logprobs = logprob_content((t.token, t.logprob) for t in whole.logprobs)
        if error is not None and not started:  # nothing sent yet: a plain JSON error
            self.finish(error.status)
            response = JSONResponse(error.body(), error.status,
                                    headers={**error.headers, RUN_HEADER: run_id})
            try:
                await response(scope, receive, send)
            except OSError:
                pass
            return
        if error is not None:
            await body(b"data: " + json.dumps(error.body()).encode("utf-8") + b"\n\n")
        elif completion is not None:
            if whole is not None:
                await body(chat_chunk(run_id, chat.model, created, text=whole.text, role=True,
                                      logprobs=logprobs))
            if completion.tool_calls:
                await body(chat_chunk(run_id, chat.model, created, calls=completion.tool_calls))
            await body(chat_chunk(run_id, chat.model, created,
                                  finish=completion.finish_reason,
                                  extra=None if agent is None else {"aieng_agent": agent}))
            if chat.include_usage:
                await body(chat_chunk(run_id, chat.model, created, usage=completion.usage))
        await body(b"data: [DONE]\n\n")
        if error is None and not gone:
            self.gateway._delivered(call)
        # Log before the last send: a client may act on the end of the stream at once.
        self.finish(499 if gone else error.status if error is not None else 200)
        if not gone:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
