"""The gateway: an OpenAI-compatible starlette app serving one pipeline.

Every route goes through :meth:`Gateway._endpoint`: authentication, rate limits, the body
size limit, error mapping (a client's mistake is a 4xx naming the field, an upstream
failure a 502 / 504 with the pipeline's error, never a bare 500) and one structured log
line per request that carries lengths and token counts, never text or keys.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import struct
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.abc
import attrs
import structlog
from aieng_hookspecs.types import Completion, Request, Usage
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from aieng_core import HookError, Kernel, Pipeline, RunResult

from ._agent import agent_completion, agent_field, check_agent_chat
from ._exposition import merge_exposition
from ._keys import ApiKey, KeyStore, KeyStoreError
from ._protocol import (
    FEEDBACK_ID,
    ApiError,
    ChatCall,
    billed_usage,
    chat_response,
    estimated_tokens,
    feedback_id,
    logprob_content,
    parse_chat,
    parse_dimensions,
    parse_embeddings,
    parse_feedback,
    prompt_chars,
    scoped_feedback_id,
)
from ._ratelimit import Limits
from ._settings import GatewaySettings
from ._stream import RUN_HEADER, ChatStream, no_logprobs, shutting_down

if TYPE_CHECKING:
    from aieng_core.agent import AgentResult, AgentStep

__all__ = ["Gateway"]

T = TypeVar("T")

log = structlog.get_logger(__name__)

#: A URL in an error message (an HTTP backend names the one it called): shown to clients as
#: ``<upstream>`` unless ``expose_upstream_urls`` (punctuation ending it is the sentence's).
_URL = re.compile(r"\b(?:https?|wss?)://[^\s'\"<>]+", re.IGNORECASE)
_URL_END = ".,;:!?)]}"
#: Conversations remembered for ``regenerate`` detection (the oldest are forgotten).
MAX_REMEMBERED = 10_000
#: Implicit feedback signals (early_stop, regenerate) waiting for the sink at most; past
#: it a signal is dropped and counted (a slow sink under a flood of cut streams must not
#: make the server hold a task per request).
MAX_PENDING_FEEDBACK = 1_000
#: Statuses of an upstream HTTP server that are the client's fault, answered as they are.
CLIENT_FAULTS = frozenset({400, 404, 413, 422})
#: Where a JSON body may hold a surrogate: an escape ``\\uD800``-``\\uDFFF`` or the
#: UTF-8-shaped bytes of one (pairs match too; the check after parsing tells them apart).
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


class _Call:
    """What one request's log line reports."""

    __slots__ = (
        "completion_tokens",
        "conversation",
        "key",
        "messages",
        "prompt_chars",
        "prompt_tokens",
        "run_id",
        "stream",
    )

    def __init__(self) -> None:
        self.key: ApiKey | None = None
        self.run_id: str | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.prompt_chars = 0
        self.messages = 0
        self.stream = False
        self.conversation = ""  # the key and messages' digest, for regenerate feedback


Handler = Callable[[HTTPRequest, _Call], Awaitable[Response]]


class Gateway:
    """Serves a pipeline over the OpenAI HTTP API; :attr:`app` is the ASGI app.

    :param build: builds the pipeline on the running kernel (called once at start-up).
    :param keys: the API keys; required unless ``settings.auth`` is off.
    :param settings: auth, body limit, regenerate window.
    :param kernel: makes the kernel the app runs (an async context manager).
    """

    def __init__(self, build: Callable[[Kernel], Pipeline], *, keys: KeyStore | None = None,
                 settings: GatewaySettings | None = None,
                 kernel: Callable[[], AbstractAsyncContextManager[Kernel]] = Kernel) -> None:
        self.settings = settings or GatewaySettings()
        if self.settings.auth and keys is None:
            raise ValueError("auth is on: give a KeyStore (or turn auth off explicitly)")
        self.keys = keys
        self.limits = Limits()
        self._build = build
        self._kernel = kernel
        self._pipeline: Pipeline | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        #: The delivered answers' conversations (digest -> run id, when), oldest first:
        #: those older than ``regenerate_window`` are dropped, and at most
        #: :data:`MAX_REMEMBERED` kept.
        self._recent: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._now: Callable[[], float] = time.monotonic  # the window's clock (tests move it)
        #: The requests being answered (their cancel scopes), for :meth:`stop_runs`.
        self._inflight: set[anyio.CancelScope] = set()
        self._stopping = False
        self._warned_not_running = False
        self.requests: Counter[tuple[str, int]] = Counter()
        #: Implicit feedback signals being written now, and those dropped (see
        #: :data:`MAX_PENDING_FEEDBACK`).
        self.feedback_pending = 0
        self.feedback_dropped = 0
        routes = [
            Route("/v1/chat/completions", self._endpoint(self._chat), methods=["POST"]),
            Route("/v1/embeddings", self._endpoint(self._embeddings), methods=["POST"]),
            Route("/v1/models", self._endpoint(self._models), methods=["GET"]),
            Route("/v1/models/{model:path}", self._endpoint(self._model), methods=["GET"]),
            Route("/v1/feedback", self._endpoint(self._feedback), methods=["POST"]),
            Route("/metrics", self._endpoint(self._metrics,
                                             auth=not self.settings.public_metrics),
                  methods=["GET"]),
            Route("/healthz", self._endpoint(self._health, auth=False), methods=["GET"]),
        ]
        self.app = Starlette(routes=routes, lifespan=self._lifespan, exception_handlers={
            404: _not_found, 405: _not_allowed})

    @property
    def pipeline(self) -> Pipeline:
        """The served pipeline (once running)."""
        if self._pipeline is None:
            raise RuntimeError("the gateway is not running: use 'async with gateway.running()' "
                               "or serve its app with lifespan on")
        return self._pipeline

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Gateway]:
        """Start the kernel, build and open the pipeline, load the keys; stop them after.

        Serving :attr:`app` with its lifespan on (uvicorn's default) enters this. A host
        that mounts :attr:`app` in its own app (``Mount("/llm", app=gateway.app)``) must
        enter it in its own lifespan: Starlette never runs a mounted app's lifespan, and
        until then every request is answered 503 ``gateway_not_running``. It may be
        entered again once it has ended (a second ``asyncio.run``), not twice at once.

        :raises RuntimeError: when the gateway is running already.
        """
        if self._tg is not None:
            raise RuntimeError("the gateway is running already: enter gateway.running() "
                               "once (or serve its app with lifespan on), not both")
        async with self._kernel() as kernel, anyio.create_task_group() as tg:
            if not self.settings.auth:  # logged once the kernel has set up logging
                log.warning("gateway.auth_disabled",
                            hint="anyone who can reach this port can use the pipeline")
            self._tg = tg
            self._stopping = False  # a gateway run again after stop_runs serves again
            try:
                pipeline = self._build(kernel)
                await pipeline.open()
                await self._load_keys()
                # Served from here on only: a request while it opened was answered 503.
                self._pipeline = pipeline
                log.info("gateway.started", pipeline=pipeline.name, auth=self.settings.auth)
                yield self
            finally:
                self._pipeline = None
                self._tg = None

    async def _load_keys(self) -> None:
        """Read the keys at start-up, warning about a read-only file or no live key."""
        keys = self.keys
        if keys is None:
            return
        await anyio.to_thread.run_sync(lambda: keys.refresh(force=True))
        if keys.read_only:  # a container's read-only mount: said once, at start
            log.warning("gateway.keys_read_only", keys=str(keys.path),
                        effect="keys are read and enforced as usual, and a change "
                               "to the file is picked up within "
                               f"{keys.refresh_s:g} s; the gateway writes nothing "
                               "to it (rate limits are kept in memory, as always), "
                               "and 'aieng keys create / revoke' must run where the "
                               "file can be written")
        if not keys.live:  # serving, but every request would be a 401
            log.warning("gateway.no_live_keys", keys=str(keys.path),
                        hint="no live API key: every request is refused (401) until "
                             "one is created with 'aieng keys create NAME' "
                             f"(picked up within {keys.refresh_s:g} s, no restart)")

    def stop_runs(self) -> int:
        """End every request still being answered, and answer any later one, with 503
        ``server_shutting_down`` (a stream that has sent its headers: an error event, then
        ``[DONE]``): for a server's shutdown deadline, so that what outlasts the grace
        period ends as an error clients know (and retry elsewhere), not a dropped
        connection. Call it on the server's event loop.

        :return: how many requests were ended.
        """
        self._stopping = True
        scopes = list(self._inflight)
        for scope in scopes:
            scope.cancel()
        if scopes:
            log.warning("gateway.runs_stopped", requests=len(scopes),
                        hint="the server's shutdown deadline ended them (503)")
        return len(scopes)

    def _not_running(self) -> ApiError:
        """The 503 of a request that reached the app before :meth:`running` was entered
        (or after it ended): a host that mounted :attr:`app` in its own app, whose mounted
        apps' lifespans Starlette never runs. Logged once, as a warning with the fix."""
        if not self._warned_not_running:
            self._warned_not_running = True
            log.warning("gateway.not_running",
                        hint="the gateway's app got a request but the gateway is not "
                             "running: a mounted app's lifespan is not run, so enter "
                             "'async with gateway.running():' in the host app's lifespan")
        return ApiError(503, "the gateway is not running: enter 'async with "
                             "gateway.running()' in the host app's lifespan (a mounted "
                             "app's own lifespan is not run)", kind="server_error",
                        code="gateway_not_running")

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with self.running():
            yield

    # -- the request path ---------------------------------------------------------------

    def _endpoint(self, handler: Handler, *, auth: bool = True
                  ) -> Callable[[HTTPRequest], Awaitable[Response]]:
        async def endpoint(http: HTTPRequest) -> Response:
            started = time.perf_counter()
            call = _Call()
            response: Response | None = None
            with anyio.CancelScope() as scope:
                self._inflight.add(scope)
                try:
                    if self._stopping:
                        raise shutting_down()
                    if self._pipeline is None:
                        raise self._not_running()
                    if auth and self.settings.auth:
                        call.key = await self._authenticate(http)
                    response = await handler(http, call)
                except ApiError as exc:
                    response = JSONResponse(exc.body(), exc.status,
                                            headers={**exc.headers, **_run_header(call)})
                except Exception as exc:  # a bug of ours: say so, log it, keep serving
                    log.exception("gateway.internal_error", path=http.url.path,
                                  error_type=type(exc).__name__, run_id=call.run_id)
                    response = JSONResponse(ApiError(500, "internal gateway error (logged)",
                                                     kind="server_error").body(), 500,
                                            headers=_run_header(call))
                finally:
                    self._inflight.discard(scope)
            if response is None:  # stop_runs ended it
                error = shutting_down()
                response = JSONResponse(error.body(), error.status,
                                        headers={**error.headers, **_run_header(call)})
            if isinstance(response, ChatStream):
                response.finish = lambda status: self._log(http, call, status, started)
            else:
                self._log(http, call, response.status_code, started)
            return response

        return endpoint

    def _log(self, http: HTTPRequest, call: _Call, status: int, started: float) -> None:
        # By the route's template, not the raw path: /v1/models/<any name> is one series
        # (a client or a scanner trying names would grow the scrape without bound).
        route = getattr(http.scope.get("route"), "path", None)
        self.requests[(route if isinstance(route, str) else http.url.path, status)] += 1
        log.info("http.request", method=http.method, path=http.url.path, status=status,
                 latency_ms=round((time.perf_counter() - started) * 1000, 3),
                 key_id=call.key.id if call.key is not None else None, run_id=call.run_id,
                 stream=call.stream, messages=call.messages, prompt_chars=call.prompt_chars,
                 prompt_tokens=call.prompt_tokens, completion_tokens=call.completion_tokens)

    async def _authenticate(self, http: HTTPRequest) -> ApiKey:
        assert self.keys is not None
        header = http.headers.get("authorization", "")
        if header[:7].lower() == "bearer ":
            key = header[7:].strip()
        else:
            key = http.headers.get("x-api-key", "").strip()
        challenge = {"WWW-Authenticate": "Bearer"}
        if not key:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>' "
                                "(create one with 'aieng keys create NAME')",
                           code="missing_api_key", headers=challenge)
        if self.keys.stale:
            try:
                await anyio.to_thread.run_sync(self.keys.refresh)
            except KeyStoreError as exc:  # fail closed; the path goes to the log only
                log.error("gateway.keys_unavailable", error=str(exc)[:300])
                raise ApiError(503, "the API-key database cannot be read right now",
                               kind="server_error", code="keys_unavailable") from None
        record = self.keys.verify(key)
        if record is None:
            raise ApiError(401, "invalid or revoked API key", code="invalid_api_key",
                           headers=challenge)
        return record

    def _admit(self, call: _Call, tokens: int, *, param: str = "max_tokens",
               remedy: str | None = None) -> None:
        if call.key is None:
            return
        # What the reservation counts, and what the client can lower, by the field named.
        counted, fix = (("prompt estimate plus max_tokens", "lower max_tokens")
                        if param == "max_tokens" else
                        (f"the {param}'s estimate", f"send less {param} per request"))
        remedy = remedy or fix
        try:
            wait = self.limits.admit(call.key.id, call.key.rpm, call.key.tpm, tokens,
                                     counted=counted, remedy=remedy)
        except ValueError as exc:
            raise ApiError(422, str(exc), param=param, code="tokens_over_limit") from None
        if wait:
            raise ApiError(429, f"rate limit of key {call.key.id} reached: retry in {wait} s",
                           code="rate_limit_exceeded", kind="rate_limit_error",
                           headers={"Retry-After": str(wait)})

    def _reconcile(self, call: _Call, reserved: int, usage: Usage | None, *,
                   cached: bool = False, streamed: int = 0) -> None:
        """Charge the key's token bucket what the request used instead of its reservation:
        its usage; nothing for an answer from the cache (no model ran: the usage it
        reports is the stored answer's). A request that ended without usage (an upstream
        failure, a client gone, ``stop_runs``) is charged the prompt's estimate (a model
        may have read it) and the ``streamed`` deltas sent, a token each: never the
        ``max_tokens`` it did not get."""
        if call.key is not None:
            used = 0 if cached else min(reserved, self._prompt_estimate(call) + streamed) \
                if usage is None else usage.prompt_tokens + usage.completion_tokens
            self.limits.reconcile(call.key.id, call.key.tpm, reserved, used)

    @staticmethod
    def _prompt_estimate(call: _Call) -> int:
        """The prompt's token estimate a chat request reserves: characters / 4 rounded up."""
        return math.ceil(call.prompt_chars / 4)

    def _billed(self, call: _Call, result: RunResult) -> Completion | None:
        """The run's completion, its usage what the key is charged: as the backend reported
        it, with a count it left at 0 estimated (:func:`billed_usage`) when a model ran (an
        answer from the cache, a blocked input: no model ran, nothing is estimated)."""
        completion = result.completion
        if completion is None or result.cache_hit is not None or not result.model_calls:
            return completion
        # What the model generated (an output guard may have replaced it since).
        generated = result.raw_completion or completion
        return attrs.evolve(completion, usage=billed_usage(
            completion.usage, prompt_estimate=self._prompt_estimate(call),
            text=generated.text, tool_calls=generated.tool_calls))

    async def _json(self, http: HTTPRequest) -> Any:
        limit = self.settings.max_body
        length = http.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise ApiError(400, "invalid Content-Length header", code="invalid_request")
            if int(length) > limit:
                raise ApiError(413, f"request body of {length} bytes is over the limit of "
                                    f"{limit} bytes", code="body_too_large")
        chunks, size = [], 0
        try:
            async for chunk in http.stream():  # the header may lie or be absent (chunked)
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"request body is over the limit of {limit} bytes",
                                   code="body_too_large")
                chunks.append(chunk)
        except ClientDisconnect:
            raise ApiError(400, "the client closed the connection while sending the body",
                           code="client_disconnected") from None
        raw = b"".join(chunks)
        try:
            value = json.loads(raw)
            # json reads a lone UTF-16 surrogate ("\ud800", or its bytes): no text, and
            # every later encode (the answer, the log line, SQLite) would fail on it.
            if _SURROGATE.search(raw) or raw[:4].count(b"\0"):  # or UTF-16/32 bodies
                json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, "the body is not valid JSON text: a string holds a lone "
                                "UTF-16 surrogate (like \\ud800)",
                           code="invalid_json") from None
        except (ValueError, RecursionError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:120]
            raise ApiError(400, f"the body is not valid JSON: {reason}",
                           code="invalid_json") from None
        return value

    def _upstream(self, exc: HookError, model: str | None = None, *,
                  run_id: str | None = None) -> ApiError:
        """The client's answer to a failure of the pipeline's components: a status by its
        cause, the message with the URLs it names shown as ``<upstream>`` unless
        ``expose_upstream_urls`` (the whole message is logged)."""
        error = self._upstream_status(exc, model)
        log.warning("gateway.upstream_error", status=error.status, code=error.code,
                    run_id=run_id, error=str(exc))
        if not self.settings.expose_upstream_urls and _URL.search(error.message):
            error = ApiError(error.status, _URL.sub(_hidden, error.message),
                             param=error.param, code=error.code, kind=error.kind,
                             headers=error.headers)
        return error

    def _upstream_status(self, exc: HookError, model: str | None) -> ApiError:
        if exc.plugin == "(none)":
            return ApiError(404, f"no backend of this pipeline serves model {model!r}: "
                                 "GET /v1/models lists the models it serves",
                            param="model", code="model_not_found")
        if isinstance(exc.cause, ValueError) and exc.hook in ("aieng_generate", "aieng_stream"):
            # The backend refused the request itself (a response schema it cannot enforce,
            # a bad regex): the client's to fix, not an upstream failure.
            return ApiError(422, str(exc.cause), code="unsupported_request")
        status = getattr(exc.cause, "status", None)
        if type(status) is int and status in CLIENT_FAULTS:
            # An upstream HTTP server (the openai backend's OpenAIError) refused the request
            # as malformed, too large or for a model it lacks: the client's to fix, and not
            # to retry as a 502 would invite. 401/403 (the gateway's own upstream key) stay
            # 502: not the client's doing.
            return ApiError(status, str(exc), code="upstream_invalid_request")
        if status in (429, 503):
            # The upstream rate-limits us or is overloaded, its retries ran out: the same
            # status (with its wait) lets clients back off as their SDKs do on 429 / 503,
            # where a 502 hid it.
            wait = getattr(exc.cause, "retry_after", None)
            headers = {"Retry-After": str(max(1, math.ceil(wait)))} \
                if isinstance(wait, (int, float)) and math.isfinite(wait) else {}
            if status == 503:
                return ApiError(503, str(exc), kind="upstream_error",
                                code="upstream_unavailable", headers=headers)
            return ApiError(429, str(exc), kind="rate_limit_error",
                            code="upstream_rate_limited", headers=headers)
        # An HTTP backend's timeout (the openai backend's OpenAIError of kind "timeout": a
        # stream that stalled says so in other words) is the upstream's timeout too.
        timeout = isinstance(exc.cause, TimeoutError) or "timed out" in str(exc) \
            or "no delta for" in str(exc) or getattr(exc.cause, "kind", None) == "timeout"
        return ApiError(504 if timeout else 502, str(exc), kind="upstream_error",
                        code="upstream_timeout" if timeout else "upstream_error")

    # -- implicit feedback ----------------------------------------------------------------

    def _spawn_feedback(self, run_id: str, kind: str, **metadata: Any) -> None:
        """Record an implicit signal in the background, unless
        :data:`MAX_PENDING_FEEDBACK` are being written already (then it is dropped,
        counted, and logged once per that many)."""
        async def record() -> None:
            with anyio.CancelScope(shield=True):
                try:
                    await self.pipeline.feedback(run_id, kind, **metadata)
                except Exception as exc:  # noqa: BLE001 - feedback must never fail a request
                    log.warning("gateway.feedback_failed", run_id=run_id, kind=kind,
                                error_type=type(exc).__name__, error=str(exc)[:200])
                finally:
                    self.feedback_pending -= 1

        if self._tg is None:
            return
        if self.feedback_pending >= MAX_PENDING_FEEDBACK:
            self.feedback_dropped += 1
            if self.feedback_dropped % MAX_PENDING_FEEDBACK == 1:
                log.warning("gateway.feedback_dropped", kind=kind, run_id=run_id,
                            dropped=self.feedback_dropped, pending=self.feedback_pending,
                            hint="the feedback sink writes slower than signals come: "
                                 "implicit signals past the backlog are not recorded")
            return
        self.feedback_pending += 1
        self._tg.start_soon(record)

    def _regenerated(self, call: _Call, chat: ChatCall, run_id: str) -> None:
        """Mark the last delivered answer to this key's conversation ``regenerate`` when
        the same conversation comes again within the window."""
        call.conversation = hashlib.sha256(json.dumps(
            [call.key.id if call.key else "", [[m.role, m.content] for m in
                                               chat.request.messages]],
            ensure_ascii=False, default=str).encode("utf-8", "surrogatepass")).hexdigest()
        self._forget_expired()
        previous = self._recent.pop(call.conversation, None)
        if previous is not None and \
                self._now() - previous[1] <= self.settings.regenerate_window:
            self._spawn_feedback(previous[0], "regenerate", next_run_id=run_id,
                                 key_id=call.key.id if call.key else None)

    def _delivered(self, call: _Call) -> None:
        """Remember a delivered answer's conversation: only an answer the client got can
        be regenerated (a 502, a timeout or a disconnect retried by the client's SDK is
        no judgement of an answer nobody saw)."""
        if call.conversation and call.run_id is not None:
            self._recent[call.conversation] = (call.run_id, self._now())
            self._recent.move_to_end(call.conversation)  # oldest first, whatever came twice
            if len(self._recent) > MAX_REMEMBERED:
                self._recent.popitem(last=False)

    def _forget_expired(self) -> None:
        """Drop the remembered conversations older than the regenerate window (the oldest
        come first: each is looked at once more, when it is dropped)."""
        recent, now = self._recent, self._now()
        window = self.settings.regenerate_window
        while recent:
            stamp = recent[next(iter(recent))][1]
            # A clock that went back (an injected one may) drops nothing it cannot date.
            if not now - stamp > window:
                return
            recent.popitem(last=False)

    # -- routes ---------------------------------------------------------------------------

    async def _chat(self, http: HTTPRequest, call: _Call) -> Response:
        cap = self.settings.max_tokens
        chat = parse_chat(await self._json(http), pipeline=self.pipeline.name, max_tokens=cap)
        if self.settings.agent is not None:
            check_agent_chat(chat)
        request = chat.request
        call.messages = len(request.messages)
        call.prompt_chars = prompt_chars(request)
        call.stream = chat.stream
        reserved = self._prompt_estimate(call) + request.max_tokens
        self._admit(call, reserved, remedy=None if cap is None else
                    f"lower max_tokens (a request that sends none reserves the server's cap "
                    f"of {cap})")
        run_id = call.run_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self._regenerated(call, chat, run_id)
        if chat.stream:
            return ChatStream(self, chat, call, reserved)
        if self.settings.agent is not None:
            return await self._agent_chat(http, chat, call, reserved)
        try:
            result = await self._run_watched(
                http, lambda: self.pipeline.run(request, run_id=run_id))
        except HookError as exc:
            self._reconcile(call, reserved, None)
            raise self._upstream(exc, chat.model, run_id=run_id) from None
        if result is None:  # the client went away: its run was cancelled
            self._reconcile(call, reserved, None)
            return Response(status_code=499)  # logged as nginx's "client closed request"
        completion = self._billed(call, result)
        usage = completion.usage if completion is not None else Usage()
        call.prompt_tokens, call.completion_tokens = usage.prompt_tokens, usage.completion_tokens
        self._reconcile(call, reserved, usage, cached=result.cache_hit is not None)
        finish = "content_filter" if result.status == "blocked" else None
        logprobs = None
        if chat.logprobs and completion is not None and finish is None:
            if completion.logprobs is None:
                raise no_logprobs()
            raw = result.raw_completion
            if raw is None or raw.text == completion.text:
                # An output guard that rewrote the text hid something: its tokens would
                # show it, so they are left out (null) then.
                logprobs = logprob_content((t.token, t.logprob) for t in completion.logprobs)
        self._delivered(call)
        return JSONResponse(chat_response(run_id, chat.model, completion, finish, logprobs),
                            headers={RUN_HEADER: run_id})

    async def _agent_chat(self, http: HTTPRequest, chat: ChatCall, call: _Call,
                          reserved: int) -> Response:
        """Agent mode, a JSON answer: the agent's final answer, its total usage, its status
        as ``finish_reason`` and the ``aieng_agent`` field."""
        run_id = call.run_id or ""
        try:
            result = await self._run_watched(http, lambda: self._run_agent(chat.request,
                                                                           run_id))
        except (HookError, LookupError) as exc:
            self._reconcile(call, reserved, None)
            raise self._agent_failure(exc, chat.model, run_id) from None
        if result is None:  # the client went away: the run was cancelled, its tools too
            self._reconcile(call, reserved, None)
            return Response(status_code=499)
        completion = agent_completion(result)
        usage = completion.usage
        call.prompt_tokens, call.completion_tokens = usage.prompt_tokens, usage.completion_tokens
        self._reconcile(call, reserved, usage)
        self._delivered(call)
        return JSONResponse(chat_response(run_id, chat.model, completion,
                                          extra={"aieng_agent": agent_field(result)}),
                            headers={RUN_HEADER: run_id})

    async def _run_agent(self, request: Request, run_id: str,
                         on_step: Callable[[AgentStep], Awaitable[None]] | None = None
                         ) -> AgentResult:
        """One agent run over the pipeline (agent mode), logged with both run ids."""
        from aieng_core.agent import Agent

        result = await Agent(self.pipeline, self.settings.agent).run(request, on_step=on_step,
                                                                     run_id=run_id)
        log.info("gateway.agent_finished", run_id=run_id, agent_run_id=result.run_id,
                 status=result.status, steps=len(result.steps))
        return result

    def _agent_failure(self, exc: HookError | LookupError, model: str,
                       run_id: str) -> ApiError:
        """A failed agent run: a component's failure as any pipeline failure; a pipeline
        that cannot act as an agent (no backend and no policy) is the server's error."""
        if isinstance(exc, HookError):
            return self._upstream(exc, model, run_id=run_id)
        log.error("gateway.agent_error", run_id=run_id, error=str(exc)[:300])
        return ApiError(502, f"the agent cannot run: {exc}", kind="server_error",
                        code="agent_error")

    async def _run_watched(self, http: HTTPRequest,
                           work: Callable[[], Awaitable[T]]) -> T | None:
        """Run ``work`` (the pipeline, or an agent) while watching the connection: a client
        that goes away (its own timeout, before a retry) cancels the run, and gets
        ``None``."""
        result: T | None = None
        failure: Exception | None = None

        async def watch() -> None:
            while (await http.receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()

        async def run() -> None:
            nonlocal result, failure
            try:
                result = await work()
            except Exception as exc:  # noqa: BLE001 - re-raised below, outside the group
                failure = exc
            group.cancel_scope.cancel()  # stop watching

        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            group.start_soon(run)
        if failure is not None:
            raise failure
        return result

    async def _embeddings(self, http: HTTPRequest, call: _Call) -> Response:
        body = await self._json(http)
        texts, asked, encoding = parse_embeddings(body)
        dimensions = parse_dimensions(body)
        call.prompt_chars = sum(len(t) for t in texts)
        tokens = estimated_tokens(call.prompt_chars)
        self._admit(call, tokens, param="input")
        pipeline = self.pipeline
        # The pipeline's name (the first of /v1/models) means its default, as in a chat.
        model = None if asked == pipeline.name else asked
        try:
            found = await pipeline.dispatcher.first(
                "aieng_embed", {"texts": texts, "model": model}, stage="embed",
                policy=pipeline.default_policy)
            if found is None:
                fallback = await pipeline.kernel.default_embedder()
                if fallback is not None:
                    found = await fallback.dispatcher.first(
                        "aieng_embed", {"texts": texts, "model": model}, stage="embed")
        except HookError as exc:
            raise self._upstream(exc) from None
        if found is None:
            raise ApiError(404, f"no embedding backend of this pipeline serves model "
                                f"{asked!r}", param="model", code="model_not_found")
        vectors = found[0]
        if len(vectors) != len(texts):
            raise ApiError(502, f"the embedder {found[1]!r} returned {len(vectors)} vectors "
                                f"for {len(texts)} texts", kind="upstream_error")
        size = len(vectors[0])  # vectors may be an array: no truth test on it
        if dimensions is not None and size != dimensions:
            # Cutting a vector short is right for some models only: never silently.
            raise ApiError(422, f"dimensions: the embedder {found[1]!r} gives {size}-dimension "
                                f"vectors, not {dimensions} (send {size}, or none)",
                           param="dimensions", code="unsupported_value")
        try:
            data = [{"object": "embedding", "index": i, "embedding": _vector(v, encoding)}
                    for i, v in enumerate(vectors)]
        except OverflowError:
            raise ApiError(502, f"the embedder {found[1]!r} returned values outside the "
                                "float32 range", kind="upstream_error") from None
        call.prompt_tokens = tokens
        return JSONResponse({
            "object": "list", "model": asked or found[1], "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })

    async def _models(self, http: HTTPRequest, call: _Call) -> Response:
        self._admit(call, 0)
        return JSONResponse({"object": "list", "data": [_model(name)
                                                        for name in self._model_names()]})

    async def _model(self, http: HTTPRequest, call: _Call) -> Response:
        self._admit(call, 0)
        name = http.path_params["model"]
        if name not in self._model_names():
            raise ApiError(404, f"this gateway serves no model {name!r}: GET /v1/models "
                                "lists the models it serves", param="model",
                           code="model_not_found")
        return JSONResponse(_model(name))

    def _model_names(self) -> list[str]:
        pipeline = self.pipeline
        names = [pipeline.name]
        for backend in pipeline.backends:
            component = pipeline.components[backend]
            options = getattr(component, "options", None)
            # The embedding model too: /v1/embeddings serves it (the openai backend's).
            found = [getattr(component, "model", None), getattr(options, "model", None),
                     *(getattr(options, "models", None) or ()),
                     getattr(component, "embedding_model", None),
                     getattr(options, "embedding_model", None)]
            models = [m for m in found if isinstance(m, str) and m]
            names.extend(models or [backend])
        return list(dict.fromkeys(names))

    async def _feedback(self, http: HTTPRequest, call: _Call) -> Response:
        run_id, kind, value, text, metadata = parse_feedback(await self._json(http))
        self._admit(call, 0)
        call.run_id = run_id
        metadata = feedback_id(http.headers.getlist("idempotency-key"), metadata)
        sent_id = metadata.get(FEEDBACK_ID)  # answered as the client sent it
        if call.key is not None:
            metadata = {**scoped_feedback_id(metadata, call.key.id), "key_id": call.key.id}
        try:
            count = await self.pipeline.feedback(run_id, kind, value, text, **metadata)
        except ValueError as exc:
            raise ApiError(422, f"invalid feedback: {exc}", code="invalid_value") from None
        except HookError as exc:
            raise _refused(exc) or self._upstream(exc) from None
        if count == 0:
            raise ApiError(501, "this pipeline has no feedback sink: add one, e.g. "
                                "[components.feedback] use = \"feedback-sqlite\"",
                           kind="server_error", code="no_feedback_sink")
        answer = {"run_id": run_id, "kind": kind, "recorded": count}
        if FEEDBACK_ID in metadata:
            answer[FEEDBACK_ID] = sent_id
        return JSONResponse(answer)

    async def _metrics(self, http: HTTPRequest, call: _Call) -> Response:
        parts = [c.prometheus_text() for c in self.pipeline.components.values()  # type: ignore[attr-defined]
                 if callable(getattr(c, "prometheus_text", None))]
        lines = ["# HELP aieng_gateway_requests_total HTTP requests by path and status.",
                 "# TYPE aieng_gateway_requests_total counter"]
        for (path, status), n in sorted(self.requests.items()):
            lines.append(f'aieng_gateway_requests_total{{path="{_label(path)}",'
                         f'status="{status}"}} {n}')
        return PlainTextResponse(merge_exposition([*parts, "\n".join(lines)]),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    async def _health(self, http: HTTPRequest, call: _Call) -> Response:
        return JSONResponse({"status": "ok", "pipeline": self.pipeline.name})


async def _not_found(http: HTTPRequest, exc: Exception) -> Response:
    return JSONResponse(ApiError(404, f"no route {http.url.path} (see GET /v1/models, "
                                      "POST /v1/chat/completions, /v1/embeddings, "
                                      "/v1/feedback)", code="not_found").body(), 404)


async def _not_allowed(http: HTTPRequest, exc: Exception) -> Response:
    return JSONResponse(ApiError(405, f"{http.method} is not allowed on {http.url.path}",
                                 code="method_not_allowed").body(), 405,
                        headers=getattr(exc, "headers", None))  # Allow, as RFC 9110 asks


def _refused(exc: HookError) -> ApiError | None:
    """A feedback sink's refusal of the signal itself, else ``None``: a ``ValueError``
    carrying a client-fault ``status`` (``feedback-sqlite``'s ``InvalidFeedback``: a value
    outside its kind's range, a malformed ``feedback_id``) is that status, code
    ``invalid_feedback``, with the sink's own message. Duck-typed: plugins import no
    other plugin."""
    cause, status = exc.cause, getattr(exc.cause, "status", None)
    if isinstance(cause, ValueError) and type(status) is int and status in CLIENT_FAULTS:
        return ApiError(status, f"invalid feedback: {cause}", code="invalid_feedback")
    return None


def _run_header(call: _Call) -> dict[str, str]:
    """The run id header of a failed request that had started a run (to find it in logs
    and traces), else nothing. A feedback body's run id is the client's text: one that is
    not printable ASCII (a line break would end the header, a non-Latin-1 character could
    not be sent) is left out, never echoed."""
    run_id = call.run_id
    safe = run_id is not None and run_id.isascii() and run_id.isprintable()
    return {RUN_HEADER: run_id} if run_id and safe else {}


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "aieng"}


def _vector(values: Any, encoding: str) -> list[float] | str:
    """A vector as JSON floats, or as OpenAI's ``base64``: little-endian float32 bytes."""
    floats = [float(x) for x in values]
    if encoding == "float":
        return floats
    return base64.b64encode(struct.pack(f"<{len(floats)}f", *floats)).decode("ascii")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _hidden(url: re.Match[str]) -> str:
    """``<upstream>`` for a URL, keeping the punctuation that ends the sentence after it."""
    text = url.group()
    kept = text.rstrip(_URL_END)
    return "<upstream>" + text[len(kept):]
