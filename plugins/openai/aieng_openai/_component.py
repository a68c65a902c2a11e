"""``openai``: the backend component, hook impls over an OpenAI-compatible HTTP API."""

from __future__ import annotations

import ipaddress
import json
import math
import os
import random
import time
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Completion, Delta, Request, TokenLogprob, Usage

from ._errors import EXCERPT_CHARS, OpenAIError, hint_for, scrub
from ._options import OpenAIOptions, _header_safe, credential_headers
from ._payload import (
    FinishReason,
    ProtocolError,
    StreamedCalls,
    chat_body,
    completion_from,
    embed_body,
    finish_reason,
    logprobs_from,
    usage_from,
    vectors_from,
)
from ._retry import backoff, retry_after, retryable_status
from ._sse import SSETooLarge, sse_data, sse_lines, utf8_text

if TYPE_CHECKING:
    import httpx

__all__ = ["OpenAIBackend"]

log = structlog.get_logger(__name__)

#: The most texts sent in one ``/embeddings`` call; larger batches are split in order.
EMBED_BATCH = 256
#: The most of an error answer's body read (for its excerpt): the rest is never read.
ERROR_BODY_BYTES = 64 * 1024
#: What is read after a stream's ``[DONE]`` at most (bytes, seconds), for the body's end
#: to come and the connection to go back to the pool; a server that sends more, or holds
#: the stream open, has its connection closed instead, as before.
DRAIN_BYTES = 64 * 1024
DRAIN_S = 0.25
#: Headers of a body as it came on the wire, wrong for the same body read and decoded.
_BODY_HEADERS = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})


def loopback_host(base_url: str) -> str | None:
    """The host of ``base_url`` as an httpx mount pattern writes it (``[::1]``) when it is
    a loopback host (``localhost``, ``*.localhost``, ``127.0.0.0/8``, ``::1``), else
    ``None``."""
    host = (urllib.parse.urlsplit(base_url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if not address.is_loopback:
        return None
    return f"[{host}]" if address.version == 6 else host


def _resolve_key(options: OpenAIOptions) -> str | None:
    if options.api_key_env is None:
        return options.api_key
    key = os.environ.get(options.api_key_env, "").strip()
    if not key:
        raise ValueError(f"the environment variable {options.api_key_env} named by "
                         "api_key_env is unset or empty: export the API key there")
    if not _header_safe(key):  # never the key itself in the message
        raise ValueError(f"the API key in {options.api_key_env} must be printable ASCII (it "
                         "is sent in an HTTP header); check for a stray character")
    return key


class OpenAIBackend:
    """Generates, streams and embeds through an OpenAI-compatible HTTP server: vLLM, TGI,
    llama.cpp server or a hosted API.

    Every call is async (httpx's ``AsyncClient``), so the event loop never waits on the
    network. Building the component touches nothing; the HTTP client opens when the
    pipeline opens, or on first use, and closes with the pipeline. Failed calls are retried
    with exponential backoff and jitter on 408, 409, 429, 5xx, timeouts and connection
    errors, honouring ``Retry-After``; what finally fails raises :class:`OpenAIError` with
    the status, a body excerpt and a hint. The API key never appears in a log or an error.

    Tool calls stream as fragments (``delta.tool_calls``); they are put together and
    handed over whole on the last :class:`Delta` (``tool_calls``), with
    ``finish_reason="tool_calls"``. ``metadata["tool_choice"]`` and
    ``metadata["parallel_tool_calls"]`` are sent as OpenAI's fields of those names.

    :param options: the typed options; ``base_url`` and ``model`` are required.
    :param http_client: the host program's own ``httpx.AsyncClient`` (its connection
        pool, proxies, TLS, auth, event hooks), used as it is: its timeouts, limits and
        proxies replace ``connect_timeout``, ``read_timeout``, ``max_connections``,
        ``pool_timeout`` and ``trust_env``; the component still sends its headers
        (``Authorization``, ``headers``) with each request, and never closes it (the
        host does, on the event loop it belongs to).
    :raises ValueError: when ``api_key_env`` names an unset variable.
    """

    def __init__(self, options: OpenAIOptions, *,
                 http_client: httpx.AsyncClient | None = None) -> None:
        self.options = options
        #: The default model, answered for requests naming no model (the conformance
        #: suite's ``model``).
        self.model: str = options.model
        #: The model ``aieng_embed`` uses when asked for none.
        self.embedding_model: str = options.embedding_model or options.model
        #: Whether greedy requests repeat exactly: a property of the server, not of this
        #: client, so it is ``False`` unless set by whoever knows the server.
        self.deterministic: bool = False
        self._api_key = _resolve_key(options)
        #: What is scrubbed from errors: the key, and credentials sent as other headers.
        self._secrets = (self._api_key, *credential_headers(options.headers))
        self._served = frozenset({options.model, self.embedding_model, *options.models})
        self._base = options.base_url.rstrip("/")
        self._client: httpx.AsyncClient | None = http_client
        self._loop: object = None  # the event loop the client was built on
        self._own_client = http_client is None
        self._headers = {"Accept": "application/json", **options.headers}
        if self._api_key:
            self._headers["Authorization"] = f"Bearer {self._api_key}"
        self._pool_timeout = options.pool_timeout or options.connect_timeout
        self._rng = random.Random(options.seed)

    def __repr__(self) -> str:
        return f"OpenAIBackend(base_url={self._base!r}, model={self.model!r})"

    def serves(self, model: str | None) -> bool:
        """Whether a request for ``model`` is this backend's (``None``: the default model)."""
        return model is None or model in self._served

    # -- the client ----------------------------------------------------------------------

    def _new_client(self) -> httpx.AsyncClient:
        import httpx  # lazy: `aieng plugins` must not pay for it

        timeout = httpx.Timeout(connect=self.options.connect_timeout,
                                read=self.options.read_timeout,
                                write=self.options.read_timeout,
                                pool=self._pool_timeout)
        connections = self.options.max_connections
        limits = httpx.Limits(max_connections=connections,
                              max_keepalive_connections=min(20, connections))
        # A proxy from the environment (a container's HTTP_PROXY without NO_PROXY) must not
        # carry calls to a server on this machine: mounted without a proxy (None: the
        # client's own transport), the loopback host is reached directly.
        host = loopback_host(self._base)
        mounts = {f"all://{host}": None} if host and self.options.trust_env else None
        return httpx.AsyncClient(headers=self._headers, timeout=timeout, limits=limits,
                                 trust_env=self.options.trust_env, mounts=mounts)

    async def _http(self) -> httpx.AsyncClient:
        """The HTTP client, built on first need in a worker thread: importing httpx and
        loading the CA bundle take long enough to trip the kernel's loop watchdog.

        A client is bound to the event loop it was built on (its pooled connections are
        that loop's): on another loop (a script's or notebook's second ``asyncio.run``,
        trio after asyncio) the old one is dropped, unclosed (its loop is gone), and a
        new one built, instead of failing with "Event loop is closed"."""
        if not self._own_client:  # the host's: used as it is
            assert self._client is not None
            return self._client
        loop = _running_loop()
        if self._client is not None and self._loop is not loop:
            log.debug("openai.client_rebuilt", reason="another event loop")
            self._client = None
        if self._client is None:
            client = await anyio.to_thread.run_sync(self._new_client)
            if self._client is not None:  # a concurrent first call won the race
                await client.aclose()
            else:
                self._client, self._loop = client, loop
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP client (what closing the pipeline does); the next call reopens.
        A client of another event loop, gone already, is only dropped; the host's own
        ``http_client`` is left open (the host closes it)."""
        if not self._own_client:
            return
        client, self._client = self._client, None
        if client is not None and self._loop is _running_loop():
            await client.aclose()

    def _scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    def _error(self, message: str, **fields: Any) -> OpenAIError:
        body = self._scrub(str(fields.pop("body", "")))
        return OpenAIError(self._scrub(message), body=body, **fields)

    async def _send(self, path: str, body: Mapping[str, Any] | None, *,
                    stream: bool = False) -> httpx.Response:
        """Send one API call with retries; the response is a success (2xx).

        With ``stream=True`` the body is not read: the caller reads and closes it. Only
        the request is retried, never a stream already being read. ``total_timeout``
        bounds the whole, on the event loop's monotonic clock: each attempt runs within
        what is left of it, and a wait between attempts that would end past it is not
        begun (no request is sent after it).
        """
        client = await self._http()
        url = f"{self._base}/{path}"
        method = "GET" if body is None else "POST"
        total = self.options.total_timeout
        deadline = math.inf if total is None else anyio.current_time() + total
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            with anyio.move_on_after(deadline - anyio.current_time()) as limit:
                outcome = await self._attempt(client, method, url, path, body, stream=stream,
                                              attempt=attempt)
            if limit.cancelled_caught:
                raise self._error(
                    f"{method} {path} took longer than total_timeout ({total:g} s) in all",
                    kind="timeout", url=url, attempts=attempt,
                    hint="the server answers too slowly, or trickles its answer (which "
                         "read_timeout, a wait for each read, does not catch): raise "
                         "total_timeout (seconds for the whole call, its retries "
                         "included), or check the server")
            if not isinstance(outcome, OpenAIError):
                log.debug("openai.call", path=path, status=outcome.status_code,
                          attempt=attempt, seconds=round(time.perf_counter() - started, 4))
                return outcome
            failure = outcome
            wait = failure.retry_after
            if attempt > self.options.max_retries:
                raise failure
            if wait is not None and wait > self.options.backoff_max:
                asked = f"{wait:.1f} s" if wait != float("inf") else "more seconds than a " \
                    "float holds"
                failure.hint = (f"the server asked to retry after {asked}, more than "
                                f"backoff_max ({self.options.backoff_max:g} s); "
                                f"{failure.hint}")
                raise failure
            if wait is None:
                wait = backoff(attempt, base=self.options.backoff_base,
                               cap=self.options.backoff_max, rng=self._rng)
            if anyio.current_time() + wait >= deadline:
                failure.hint = (f"the next attempt would begin {wait:.1f} s from now, past "
                                f"total_timeout ({total:g} s for the whole call): raise it "
                                f"to wait longer; {failure.hint}")
                raise failure
            log.warning("openai.retry", path=path, status=failure.status, kind=failure.kind,
                        attempt=attempt, wait_s=round(wait, 3))
            await anyio.sleep(wait)

    async def _attempt(self, client: httpx.AsyncClient, method: str, url: str, path: str,
                       body: Mapping[str, Any] | None, *, stream: bool,
                       attempt: int) -> httpx.Response | OpenAIError:
        """One attempt: the success (2xx), or the failure to retry (its ``retry_after``
        the wait a retryable answer asked for).

        :raises OpenAIError: on an answer never retried (other 4xx, 3xx).
        """
        import httpx

        try:
            # Always streamed from the wire: a success is read here (unless the caller
            # streams it) with the max_response_bytes cap, an error only for its excerpt.
            response = await client.send(
                client.build_request(method, url, json=body, headers=self._headers),
                stream=True)
            if response.status_code < 300 and not stream:
                response = await self._read(response, path)
        except httpx.PoolTimeout:
            # Not the server: every connection of the pool was busy with other calls.
            limit = self.options.max_connections
            return self._error(
                f"{method} {path} timed out waiting {self._pool_timeout:g} s "
                f"for a free connection (all max_connections={limit} were busy)",
                kind="timeout", url=url, attempts=attempt,
                hint="more calls run at once than max_connections allows: raise "
                     "max_connections or pool_timeout, or send fewer concurrent "
                     "requests")
        except httpx.TimeoutException as error:
            what, option = self._timeout_limit(error)
            return self._error(
                f"{method} {path} timed out ({type(error).__name__}: {what})",
                kind="timeout", url=url, attempts=attempt,
                hint=f"the server is slow or unreachable: check base_url, or raise {option}")
        except httpx.TransportError as error:
            return self._error(
                f"{method} {path} failed: {type(error).__name__}: {error}",
                kind="connection", url=url, attempts=attempt,
                hint="check base_url and that the server is running")
        if response.status_code < 300:
            return response
        try:
            text = (await _head(response)).decode("utf-8", "replace")
        except httpx.TransportError as error:  # the status stands, the body broke off
            text = f"(the body broke off: {type(error).__name__})"
        finally:
            await response.aclose()
        status = response.status_code
        # A redirect is not followed (it would turn a POST into a GET, or send the
        # key elsewhere): say where it points.
        where = response.headers.get("location") if status < 400 else None
        failure = self._error(
            f"{method} {path} answered HTTP {status}"
            + (f" (a redirect to {where})" if where else ""), kind="http",
            status=status, body=text, hint=hint_for(status), url=url, attempts=attempt)
        if not retryable_status(status):
            raise failure
        failure.retry_after = retry_after(response.headers)
        return failure

    def _timeout_limit(self, error: Exception) -> tuple[str, str]:
        """Which of the client's limits an httpx timeout passed, with its value, and the
        option that raises it (a host's ``http_client``: its own timeout)."""
        import httpx

        if not self._own_client:
            return ("the http_client's own timeout",
                    "the timeout of the http_client the component was given")
        connect, read = self.options.connect_timeout, self.options.read_timeout
        if isinstance(error, httpx.ConnectTimeout):
            return (f"no connection within connect_timeout = {connect:g} s",
                    "connect_timeout (seconds to connect)")
        if isinstance(error, httpx.ReadTimeout):
            return (f"no byte within read_timeout = {read:g} s",
                    "read_timeout (seconds to wait for each read)")
        if isinstance(error, httpx.WriteTimeout):
            sent = f"the request not sent within read_timeout = {read:g} s (it bounds writes too)"
            return sent, "read_timeout (seconds to wait for each read or write)"
        return (f"connect_timeout = {connect:g} s, read_timeout = {read:g} s",
                "connect_timeout / read_timeout")

    async def _read(self, response: httpx.Response, path: str) -> httpx.Response:
        """The response read whole (decompressed), and closed.

        :raises OpenAIError: of kind ``protocol`` when the body (its declared length, or
            what arrives) passes ``max_response_bytes``; nothing past the cap is read.
        """
        import httpx

        limit = self.options.max_response_bytes
        declared = response.headers.get("content-length", "")
        chunks: list[bytes] = []
        size = 0
        try:
            # A declared length is of the encoded body: a compressed one may still grow.
            over = declared.isdigit() and int(declared) > limit
            if not over:
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        over = True
                        break
                    chunks.append(chunk)
        finally:
            await response.aclose()
        if over:
            raise self._error(
                f"{path} answered with a body over max_response_bytes ({limit} bytes)",
                kind="protocol", status=response.status_code, url=str(response.url),
                body=b"".join(chunks)[:EXCERPT_CHARS].decode("utf-8", "replace"),
                hint="raise max_response_bytes if answers this large are expected; "
                     "else the server (or a proxy before it) is broken")
        # Decoded already: the new response must not decode it again.
        headers = [(name, value) for name, value in response.headers.raw
                   if name.lower() not in _BODY_HEADERS]
        return httpx.Response(response.status_code, headers=headers,
                              content=b"".join(chunks), request=response.request)

    async def _json(self, path: str, body: Mapping[str, Any] | None) -> Any:
        return self._decoded(await self._send(path, body), path)

    def _decoded(self, response: httpx.Response, path: str) -> Any:
        try:
            data = response.json()
        except ValueError:
            raise self._error(f"{path} answered with a body that is not JSON",
                              kind="protocol", status=response.status_code,
                              body=response.text, url=str(response.url),
                              hint="check base_url: it must be the OpenAI-compatible API "
                                   "root") from None
        except RecursionError:  # a broken or hostile server: an error, never a crash
            raise self._error(f"{path} answered with JSON nested too deeply to read",
                              kind="protocol", status=response.status_code,
                              body=response.text, url=str(response.url),
                              hint="the server is not OpenAI-compatible here") from None
        problem = data.get("error") if isinstance(data, Mapping) else None
        if problem and "choices" not in data and "data" not in data:
            # A proxy's error answered with 200: the server's message, not "unexpected".
            said = problem.get("message") if isinstance(problem, Mapping) else problem
            raise self._error(f"{path} answered HTTP {response.status_code} with an error"
                              + (f": {str(said)[:200]}" if said else ""), kind="http",
                              status=response.status_code, body=response.text,
                              url=str(response.url), hint="read the body excerpt")
        return data

    # -- lifecycle -----------------------------------------------------------------------

    @hookimpl
    async def aieng_pipeline_open(self) -> None:
        """Open the HTTP client (no request is sent)."""
        await self._http()

    @hookimpl
    async def aieng_pipeline_close(self) -> None:
        """Close the HTTP client and its connections."""
        await self.aclose()

    # -- role hooks ----------------------------------------------------------------------

    @hookimpl
    async def aieng_generate(self, request: Request) -> Completion | None:
        """One chat completion (``None`` for a model this server does not serve).

        :raises ValueError: for a ``metadata["regex"]`` without ``regex_field``.
        """
        if not self.serves(request.model):
            return None
        response = await self._send("chat/completions",
                                    chat_body(request, self.options, stream=False))
        if _is_event_stream(response):
            # A server (a proxy, some llama.cpp builds) that streams whatever was asked:
            # its events, read whole already, make the one completion.
            return await self._gathered(response, request)
        return self._completion(response, request)

    async def _gathered(self, response: httpx.Response, request: Request) -> Completion:
        """The completion of an event stream read whole (``response.content``)."""

        async def body() -> AsyncIterator[bytes]:
            yield response.content

        texts: list[str] = []
        tokens: list[TokenLogprob] = []
        last: Delta | None = None
        async with aclosing(self._deltas(response, body(), tokens=tokens,
                                         model=request.model or self.model)) as deltas:
            async for last in deltas:
                texts.append(last.text)
        assert last is not None  # _deltas ends with the finish delta, or raises
        return Completion(text="".join(texts), finish_reason=last.finish_reason or "stop",
                          usage=last.usage or Usage(), model=last.model,
                          logprobs=tuple(tokens) if tokens else None,
                          tool_calls=last.tool_calls)

    def _completion(self, response: httpx.Response, request: Request) -> Completion:
        """The completion of a read chat-completions answer."""
        data = self._decoded(response, "chat/completions")
        try:
            return completion_from(data, request.model or self.model)
        except ProtocolError as error:
            raise self._error(f"chat/completions answered unexpectedly: {error}",
                              kind="protocol", body=json.dumps(data)[:500],
                              url=f"{self._base}/chat/completions",
                              hint="the server is not OpenAI-compatible here") from None

    @hookimpl
    def aieng_stream(self, request: Request) -> AsyncIterator[Delta] | None:
        """Stream a chat completion over server-sent events (``None`` for another model)."""
        if not self.serves(request.model):
            return None
        return self._stream(request)

    async def _stream(self, request: Request) -> AsyncGenerator[Delta, None]:
        import httpx

        url = f"{self._base}/chat/completions"
        response = await self._send("chat/completions",
                                    chat_body(request, self.options, stream=True), stream=True)
        if response.headers.get("content-type", "").startswith("application/json"):
            # A server that ignores "stream": one whole answer, handed over as one delta.
            try:
                response = await self._read(response, "chat/completions")
            except httpx.TransportError as error:  # a timeout too
                raise self._error(f"the answer broke off: {type(error).__name__}: {error}",
                                  kind="timeout" if isinstance(error, httpx.TimeoutException)
                                  else "connection", url=url,
                                  hint="the server closed the connection mid-answer") from None
            answer = self._completion(response, request)
            total = _total(answer.logprobs)
            if answer.text:
                yield Delta(answer.text, index=0, logprob=total, model=answer.model)
            yield Delta("", index=1 if answer.text else 0, finish_reason=answer.finish_reason,
                        logprob=None if answer.text else total, usage=answer.usage,
                        tool_calls=answer.tool_calls, model=answer.model)
            return
        # Closed with this generator (a consumer that stops early): the connection too.
        async with aclosing(self._deltas(response, response.aiter_bytes(),
                                         model=request.model or self.model)) as deltas:
            async for delta in deltas:
                yield delta

    async def _deltas(self, response: httpx.Response, raw: AsyncIterator[bytes], *,
                      tokens: list[TokenLogprob] | None = None,
                      model: str = "") -> AsyncGenerator[Delta, None]:
        """The deltas of the event stream ``raw`` (the body of ``response``, which is closed
        at the end), the last one with the finish reason, usage and tool calls. ``tokens``,
        when given, gathers the tokens' log-probabilities. Each delta names the model the
        chunks named last; the last delta names it, else ``model`` (the one asked for), as a
        whole answer without ``model`` does."""
        import httpx

        url = f"{self._base}/chat/completions"
        limit = self.options.max_response_bytes
        index = 0
        finish: FinishReason | None = None
        usage: Usage | None = None
        calls = StreamedCalls()
        # The summed log-probability of the tokens not handed over yet (a chunk may carry
        # several tokens, or tokens without text): the next delta carries it, the last one
        # what is left, so the deltas' sum is the completion's. None: no token pending.
        spent: float | None = None
        head: list[str] = []  # the answer's start: shown when it holds no event at all
        served = ""  # the model the chunks named last
        events = 0

        # The stream's last characters, and whether it ended: an event the stream ended in
        # the middle of (no blank line after it) is delivered all the same (sse_data), so
        # one that then fails to parse was cut short, not malformed.
        tail = ""
        ended = False

        async def text_of(chunks: AsyncIterator[str]) -> AsyncIterator[str]:
            nonlocal tail, ended
            async for piece in chunks:
                if sum(map(len, head)) < EXCERPT_CHARS:
                    head.append(piece)
                tail = (tail + piece)[-4:]
                yield piece
            ended = True

        def cut_short() -> bool:
            return ended and not tail.endswith(("\n\n", "\r\r", "\r\n\r\n"))

        # An event stream is UTF-8 whatever charset its Content-Type names (WHATWG).
        decoded = utf8_text(raw)
        texts = text_of(decoded)
        lines = sse_lines(texts, limit=limit)
        found = sse_data(lines, limit=limit)
        try:
            async for data in found:
                events += 1
                if data.strip() == "[DONE]":
                    # Read the body's end, so the connection goes back to the pool: one
                    # closed with its body unread is dropped, and the next call connects
                    # (and shakes hands) again.
                    await _drain(raw)
                    break
                try:
                    chunk = self._chunk(data, url)
                except OpenAIError:
                    if not cut_short():
                        raise
                    raise self._error("the stream broke off in the middle of an event",
                                      kind="connection", url=url, body=data,
                                      hint="the server closed the connection mid-stream"
                                      ) from None
                usage = usage_from(chunk.get("usage")) or usage
                if isinstance(chunk.get("model"), str) and chunk["model"]:
                    served = chunk["model"]
                for choice in chunk.get("choices") or ():
                    if not isinstance(choice, Mapping) or choice.get("index", 0) != 0:
                        continue
                    delta = choice.get("delta")
                    text = delta.get("content") if isinstance(delta, Mapping) else None
                    scored = self._logprobs(choice.get("logprobs"), data, url)
                    if scored:
                        spent = min(0.0, (spent or 0.0) + sum(t.logprob for t in scored))
                        if tokens is not None:
                            tokens.extend(scored)
                    if isinstance(text, str) and text:
                        yield Delta(text, index=index, logprob=spent, model=served)
                        index += 1
                        spent = None
                    if isinstance(delta, Mapping) and delta.get("tool_calls") is not None:
                        calls.add(delta["tool_calls"])
                    if choice.get("finish_reason"):
                        finish = finish_reason(choice["finish_reason"])
        except httpx.TransportError as error:  # a timeout too
            if finish is None:
                if isinstance(error, httpx.TimeoutException):
                    what, option = self._timeout_limit(error)
                    raise self._error(f"the stream stalled: no chunk ({what})",
                                      kind="timeout", url=url,
                                      hint=f"raise {option}, or check the server") from None
                raise self._error(f"the stream broke: {type(error).__name__}: {error}",
                                  kind="connection", url=url,
                                  hint="the server closed the connection mid-stream") from None
            # The finish reason is out, so the answer is whole: only what may follow it
            # (the usage chunk, [DONE]) is lost.
            log.warning("openai.stream_cut_after_finish", path="chat/completions",
                        error_type=type(error).__name__, usage=usage is not None)
        except SSETooLarge as error:
            raise self._error(f"{error} (max_response_bytes)", kind="protocol", url=url,
                              hint="the server is not sending server-sent events; else "
                                   "raise max_response_bytes") from None
        except ProtocolError as error:
            raise self._error(f"the stream's tool calls are malformed: {error}",
                              kind="protocol", url=url,
                              hint="the server is not OpenAI-compatible here") from None
        finally:
            # Each reader closed now, outermost first (the body's too): one left to the
            # garbage collector is closed by a task the event loop starts for it later.
            try:
                for reader in (found, lines, texts, decoded, raw):
                    close = getattr(reader, "aclose", None)
                    if close is not None:
                        await close()
            finally:  # the connection, whatever closing a reader raised (a cancellation)
                await response.aclose()
        if finish is None and not events and head:  # a proxy's page where events were due
            content_type = response.headers.get("content-type", "none")
            raise self._error(f"the answer to a stream holds no server-sent events "
                              f"(Content-Type: {content_type})", kind="protocol", url=url,
                              body="".join(head),
                              hint="check base_url: it must be the OpenAI-compatible API "
                                   "root, not a proxy's or a web server's page")
        if finish is None:
            raise self._error("the stream ended before a finish_reason", kind="protocol",
                              url=url, hint="the server cut the stream short: check its logs")
        try:
            whole = calls.calls()
        except ProtocolError as error:
            raise self._error(f"the stream's tool calls are malformed: {error}",
                              kind="protocol", url=url,
                              hint="the server is not OpenAI-compatible here") from None
        # What is left (tokens that showed no text: the end of text) goes on the last delta.
        yield Delta("", index=index, finish_reason=finish, usage=usage, tool_calls=whole,
                    logprob=spent, model=served or model)

    def _logprobs(self, raw: object, data: str, url: str) -> tuple[TokenLogprob, ...] | None:
        try:
            return logprobs_from(raw)
        except ProtocolError as error:
            raise self._error(f"the stream's log-probabilities are malformed: {error}",
                              kind="protocol", body=data, url=url,
                              hint="the server is not OpenAI-compatible here") from None

    def _chunk(self, data: str, url: str) -> Mapping[str, Any]:
        try:
            chunk = json.loads(data)
        except (json.JSONDecodeError, RecursionError) as error:
            reason = error.msg if isinstance(error, json.JSONDecodeError) else \
                "nested too deeply to read"
            raise self._error(f"a stream event is not JSON ({reason})", kind="protocol",
                              body=data, url=url,
                              hint="the server's stream is malformed") from None
        if not isinstance(chunk, Mapping):
            raise self._error("a stream event is not a JSON object", kind="protocol",
                              body=data, url=url, hint="the server's stream is malformed")
        problem = chunk.get("error")
        if problem:  # some servers and proxies send "error": null (or {}) on every chunk
            said = problem.get("message") if isinstance(problem, Mapping) else problem
            raise self._error("the server reported an error mid-stream"
                              + (f": {str(said)[:200]}" if said else ""), kind="http",
                              body=data, url=url, hint="read the body excerpt")
        if not isinstance(chunk.get("choices") or [], list):
            raise self._error("a stream event's choices is not a list", kind="protocol",
                              body=data, url=url, hint="the server's stream is malformed")
        return chunk

    @hookimpl
    async def aieng_embed(self, texts: Sequence[str],
                          model: str | None) -> list[list[float]] | None:
        """Embed through ``/embeddings`` (``None`` for a model this server does not serve)."""
        if not self.serves(model):
            return None
        target = model or self.embedding_model
        vectors: list[list[float]] = []
        for start in range(0, len(texts), EMBED_BATCH):
            batch = list(texts[start:start + EMBED_BATCH])
            data = await self._json("embeddings", embed_body(batch, target))
            try:
                vectors.extend(vectors_from(data, len(batch)))
            except ProtocolError as error:
                raise self._error(f"embeddings answered unexpectedly: {error}",
                                  kind="protocol", body=json.dumps(data)[:500],
                                  url=f"{self._base}/embeddings",
                                  hint="check embedding_model: it must be an embedding "
                                       "model the server serves") from None
        if vectors and len({len(row) for row in vectors}) > 1:
            raise self._error("the embedding batches have different dimensions",
                              kind="protocol", url=f"{self._base}/embeddings")
        return vectors

    # -- beyond the hooks ----------------------------------------------------------------

    async def list_models(self) -> list[str]:
        """The model ids the server lists (``GET {base_url}/models``); a network call."""
        data = await self._json("models", None)
        items = data.get("data") if isinstance(data, Mapping) else None
        if not isinstance(items, list):
            raise self._error("models answered without a data list", kind="protocol",
                              url=f"{self._base}/models", body=json.dumps(data)[:500])
        return [item["id"] for item in items
                if isinstance(item, Mapping) and isinstance(item.get("id"), str) and item["id"]]


def _running_loop() -> object:
    """The running event loop: asyncio's loop, or trio's token (``None`` for another)."""
    import asyncio

    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # trio (anyio's other backend): imported only when it runs
        pass
    try:
        import trio

        return trio.lowlevel.current_trio_token()
    except (ImportError, RuntimeError):
        return None


def _is_event_stream(response: httpx.Response) -> bool:
    """Whether a response's Content-Type is ``text/event-stream``."""
    kind: str = response.headers.get("content-type", "").split(";", 1)[0]
    return kind.strip().lower() == "text/event-stream"


async def _head(response: httpx.Response) -> bytes:
    """At most :data:`ERROR_BODY_BYTES` of a response's body (an error's: only its excerpt
    is shown, however much the server sends)."""
    data = b""
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= ERROR_BODY_BYTES:
            break
    return data[:ERROR_BODY_BYTES]


async def _drain(raw: AsyncIterator[bytes]) -> bool:
    """Read what is left of a stream's body after its ``[DONE]`` (the end of a chunked
    body; nothing at all from a server that keeps to the protocol), at most
    :data:`DRAIN_BYTES` within :data:`DRAIN_S`: whether the body ended. A body read to its
    end lets its connection be reused; one that did not end is closed by the caller, as
    an unread body always is."""
    import httpx

    left = DRAIN_BYTES
    with anyio.move_on_after(DRAIN_S):
        try:
            async for chunk in raw:
                left -= len(chunk)
                if left < 0:
                    return False
        except httpx.TransportError:  # the answer is whole: only the connection is lost
            return False
        return True
    return False


def _total(tokens: tuple[TokenLogprob, ...] | None) -> float | None:
    """The summed log-probability of some tokens (``None`` when there are none)."""
    return None if not tokens else min(0.0, sum(t.logprob for t in tokens))
