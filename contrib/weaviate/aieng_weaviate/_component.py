"""``weaviate``: a retriever and index of a pipeline, in a Weaviate collection."""

from __future__ import annotations

import functools
import inspect
import os
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import anyio.to_thread
import structlog
from aieng_hookspecs import PipelineContext, hookimpl
from aieng_hookspecs.types import Document, Hit, Query

from ._options import URL_ENV, WeaviateOptions
from ._requests import (
    GRPC_MAX_MESSAGE_BYTES,
    collection_config,
    connection_params,
    data_objects,
    delete_filter,
    hits_from,
    request_spans,
    search_request,
)
from ._schema import WeaviateCollectionMismatch, check_collection

__all__ = ["Embedder", "WeaviateAuthenticationFailed", "WeaviateCollectionMismatch",
           "WeaviateStore", "WeaviateTimeout", "WeaviateUnavailable"]

log = structlog.get_logger(__name__)

#: An embedding function given to :class:`WeaviateStore` directly (tests, notebooks):
#: ``(texts, model) -> vectors``, plain or ``async``; an ``aieng_embed`` impl fits.
Embedder = Callable[[Sequence[str], "str | None"], Any]


class WeaviateUnavailable(ConnectionError):
    """The Weaviate server could not be reached when the store opened (refused, timed out,
    no such host, its gRPC port closed, or a server there that is not Weaviate); the
    message names the URL and the gRPC port tried, and the client's own error is the
    cause."""


class WeaviateAuthenticationFailed(WeaviateUnavailable):
    """The Weaviate server asks for credentials the store did not send, or refused the ones
    it sent (an OIDC login it answers at ``/v1/.well-known/openid-configuration``, a 401 or
    403): the message names the URL and what to set (``api_key_env``); the client's own
    error is the cause. A :class:`WeaviateUnavailable`, so code that catches that catches
    this too; retrying does not help."""


class WeaviateTimeout(WeaviateUnavailable, TimeoutError):
    """The Weaviate server did not answer a query, an insert or a delete within
    ``timeout_s`` (a stalled or overloaded server): the message names the URL, the call,
    the option and its value; the client's own error is the cause. A
    :class:`WeaviateUnavailable` and a ``TimeoutError``."""


# How the client says a gRPC call ran past its deadline (a WeaviateQueryError's message,
# its batch and delete kinds included: "... failed with message Deadline Exceeded.").
_DEADLINE = re.compile(r"deadline[ _]?exceeded", re.IGNORECASE)


def _timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) is the client's timeout."""
    from weaviate.exceptions import WeaviateQueryError, WeaviateTimeoutError

    seen: BaseException | None = exc
    for _ in range(8):  # the chain of causes, bounded
        if seen is None:
            return False
        if isinstance(seen, (WeaviateTimeoutError, TimeoutError)) or (
                isinstance(seen, WeaviateQueryError) and _DEADLINE.search(str(seen))):
            return True
        name = type(seen).__name__
        if "Timeout" in name or "timed out" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _auth_failed(url: str, api_key_env: str, exc: Exception) -> WeaviateAuthenticationFailed:
    """The error of a server that wants credentials, naming the URL and what to set."""
    status = getattr(exc, "status_code", None)
    # The client's OIDC text spans lines and points at its own login arguments, which
    # this component does not take; a status error's text has the server's reason.
    said = "it asks for an OIDC login (/v1/.well-known/openid-configuration)" \
        if status is None else f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    if api_key_env:
        return WeaviateAuthenticationFailed(
            f"Weaviate at {url} refused the API key in {api_key_env} ({said}): check the key "
            "and the server's AUTHENTICATION_APIKEY_ALLOWED_KEYS")
    return WeaviateAuthenticationFailed(
        f"Weaviate at {url} requires credentials ({said}): set the weaviate component's "
        "api_key_env to the name of an environment variable holding an API key (the "
        "component authenticates with API keys only, not an OIDC login)")


def _embedding_text(doc: Document) -> str:
    # The same text the embedded ``vectors`` index embeds: title, then passage.
    return f"{doc.title}\n\n{doc.text}" if doc.title.strip() else doc.text


# What the server answers a query whose limit passes its QUERY_MAXIMUM_RESULTS.
_TOO_MANY = "query maximum results exceeded"


def _message_limit(collection: Any) -> int:
    """The most bytes the server takes in one gRPC request: what it told the client when
    it connected (its ``GRPC_MAX_MESSAGE_SIZE``), else the default."""
    told = getattr(getattr(collection, "_connection", None), "_grpc_max_msg_size", None)
    return told if isinstance(told, int) and told > 0 else GRPC_MAX_MESSAGE_BYTES


class WeaviateStore:
    """BM25, vector and hybrid search over a Weaviate collection, with upserts and deletes.

    On open it connects (``url`` or ``AIENG_WEAVIATE_URL``) and creates the collection when
    missing (no vectorizer: the vectors come from ``context.embed``), or checks an existing
    one (:class:`WeaviateCollectionMismatch` when it lacks what the store needs). Documents
    are written
    in batches with UUIDs derived from their ids, so indexing an id again replaces it.
    Queries follow ``mode``; ``Query.filters`` are metadata equality filters. The client is
    synchronous and every call runs in a worker thread.

    :param options: the typed options (defaults when omitted).
    :param embedder: embed with this function instead of the pipeline's embedder.
    :param client: use this connected ``weaviate.WeaviateClient`` (not closed by the store)
        instead of connecting from the options.
    """

    def __init__(self, options: WeaviateOptions | None = None, *,
                 embedder: Embedder | None = None, client: Any = None) -> None:
        self.options = options if options is not None else WeaviateOptions()
        self._embedder = embedder
        self._client: Any = client
        self._owns_client = client is None
        self._collection: Any = None
        self._context: PipelineContext | None = None
        self._lock = anyio.Lock()
        # Connecting runs in a worker thread that a caller's deadline abandons: a second
        # connect waits for it, then reuses its client (see _open).
        self._connecting = threading.Lock()
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------

    @hookimpl
    async def aieng_pipeline_open(self, context: PipelineContext) -> None:
        """Keep the pipeline's context (for embeddings), connect, create the collection (or
        check the existing one)."""
        self._context = context
        await self._ensure_open()

    @hookimpl
    async def aieng_pipeline_close(self) -> None:
        """Close the connection (a client given to the store stays open)."""
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection this store opened (once)."""
        if self._closed:
            return
        self._closed = True
        if self._owns_client and self._client is not None:
            await anyio.to_thread.run_sync(self._client.close)

    @property
    def _url(self) -> str:
        return self.options.url or os.environ.get(URL_ENV, "")

    def _open(self) -> Any:
        with self._connecting:  # one connect at a time, an abandoned one included
            collection = self._open_collection()
            if self._closed:
                # Closed while this thread, abandoned by its caller, still connected.
                if self._owns_client and self._client is not None:
                    self._client.close()
                raise RuntimeError("this weaviate store is closed")
            return collection

    def _open_collection(self) -> Any:
        if self._client is None:
            import weaviate
            from weaviate.exceptions import (
                AuthenticationFailedError,
                UnexpectedStatusCodeError,
                WeaviateConnectionError,
                WeaviateGRPCUnavailableError,
                WeaviateStartUpError,
                WeaviateTimeoutError,
            )

            params = connection_params(self.options, os.environ)
            try:
                self._client = weaviate.connect_to_custom(**params)
            except (WeaviateConnectionError, WeaviateGRPCUnavailableError,
                    WeaviateStartUpError, WeaviateTimeoutError, UnexpectedStatusCodeError,
                    AuthenticationFailedError, OSError) as exc:
                # The client's messages name neither the URL for some of these (a server
                # that is not Weaviate: "Meta endpoint! Unexpected status code: 404") nor
                # which option or variable it came from.
                url = self._url
                if isinstance(exc, AuthenticationFailedError) \
                        or getattr(exc, "status_code", None) in (401, 403):
                    raise _auth_failed(url, self.options.api_key_env, exc) from exc
                detail = " ".join(str(exc).split())
                waited = ""
                if _timed_out(exc):
                    init = min(self.options.timeout_s, 30.0)
                    waited = (f"; the server did not answer within {init:g} s (the "
                              "component's timeout_s, at most 30 s a request while "
                              "connecting): a stalled server, or raise timeout_s (seconds)")
                raise WeaviateUnavailable(
                    f"cannot connect to Weaviate at {url} (gRPC port {params['grpc_port']}; "
                    f"from the weaviate component's url option or {URL_ENV}): "
                    f"{type(exc).__name__}: {detail}{waited}") from exc
        collections = self._client.collections
        name = self.options.collection
        if not collections.exists(name):
            from weaviate.exceptions import UnexpectedStatusCodeError

            try:
                collections.create(**collection_config(self.options))
            except UnexpectedStatusCodeError:
                # Another process (a second worker) created it since `exists`: check it.
                if not collections.exists(name):
                    raise
            else:
                log.info("weaviate.collection.created", collection=name)
                return collections.use(name)
        collection = collections.use(name)
        self._check(collection)
        return collection

    def _check(self, collection: Any) -> None:
        """Refuse an existing collection lacking what the store needs, before any write."""
        from weaviate.exceptions import SchemaValidationError

        name = self.options.collection
        try:
            config = collection.config.get()
        except (SchemaValidationError, KeyError, ValueError, TypeError) as exc:
            # A schema this weaviate-client cannot parse (a newer server's): not a known
            # mismatch, so the store goes on as before the check existed, and says so.
            log.warning("weaviate.collection.unchecked", collection=name,
                        error=f"{type(exc).__name__}: {exc}",
                        hint="upgrade weaviate-client to have the collection checked")
            return
        check_collection(config, name)

    async def _ensure_open(self) -> Any:
        if self._closed:
            raise RuntimeError("this weaviate store is closed")
        async with self._lock:
            if self._collection is None:
                # Abandoned at a caller's deadline (a stalled server answers nothing for
                # up to twice min(timeout_s, 30) s): the thread ends at the client's own
                # timeout, and the next call reuses what it connected.
                self._collection = await anyio.to_thread.run_sync(self._open,
                                                                  abandon_on_cancel=True)
        return self._collection

    async def _call(self, doing: str, call: Callable[[], Any]) -> Any:
        """``call()`` (a request of the client) in a worker thread that a caller's deadline
        abandons (the thread ends at the client's ``timeout_s``; it holds nothing of the
        store); the client's timeout raised as :class:`WeaviateTimeout`."""
        try:
            return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
        except Exception as exc:
            if not _timed_out(exc):
                raise
            seconds = self.options.timeout_s
            raise WeaviateTimeout(
                f"Weaviate at {self._url} did not answer {doing} on collection "
                f"{self.options.collection} within {seconds:g} s (the weaviate component's "
                "timeout_s): a stalled or overloaded server; raise timeout_s (seconds) for "
                f"calls that take longer. {type(exc).__name__}: "
                f"{' '.join(str(exc).split())}") from exc

    # -- embeddings ----------------------------------------------------------------------

    async def _embed(self, texts: Sequence[str]) -> list[Sequence[float]]:
        model = self.options.model or None
        if self._embedder is not None:
            vectors = self._embedder(list(texts), model)
            if inspect.isawaitable(vectors):
                vectors = await vectors
        elif self._context is not None:
            vectors = await self._context.embed(list(texts), model)
        else:
            raise RuntimeError("the weaviate store has no embedder: it embeds through its "
                               "pipeline, which opens it first, or through the embedder= "
                               "given to WeaviateStore")
        if len(vectors) != len(texts):
            raise ValueError(f"the embedder returned {len(vectors)} vectors for "
                             f"{len(texts)} texts")
        return [[float(x) for x in vector] for vector in vectors]

    @property
    def _needs_vectors(self) -> bool:
        return self.options.mode != "bm25"

    # -- the retriever role --------------------------------------------------------------

    @hookimpl
    async def aieng_index(self, documents: Sequence[Document]) -> int:
        """Embed and write the documents in batches; an existing id is replaced."""
        collection = await self._ensure_open()
        latest = list({doc.id: doc for doc in documents}.values())
        written = 0
        for start in range(0, len(latest), self.options.batch_size):
            batch = latest[start:start + self.options.batch_size]
            # Vectors are written in every mode, so a collection may be queried in another.
            vectors = await self._embed([_embedding_text(doc) for doc in batch])
            objects = data_objects(batch, vectors)
            # One request per slice that fits the server's gRPC message limit.
            for begin, end in list(request_spans(batch, objects, _message_limit(collection))):
                result = await self._call("an insert", functools.partial(
                    collection.data.insert_many, objects[begin:end]))
                if result.has_errors:
                    first = sorted(result.errors.items())[:3]
                    raise RuntimeError(
                        f"Weaviate refused {len(result.errors)} of {end - begin} documents "
                        f"of collection {self.options.collection}: " + "; ".join(
                            f"{batch[begin + i].id!r}: {error.message}" for i, error in first))
                written += end - begin
        return written

    @hookimpl
    async def aieng_retrieve(self, query: Query, k: int) -> list[Hit]:
        """The ``k`` best documents under ``mode``, filtered by ``query.filters``."""
        if not query.text.strip() or k < 1:
            return []
        collection = await self._ensure_open()
        vector = (await self._embed([query.text]))[0] if self._needs_vectors else None
        request = search_request(self.options, query.text, vector, k, query.filters)
        if request is None:
            return []
        method = getattr(collection.query, request.method)
        from weaviate.exceptions import WeaviateQueryError

        try:
            response = await self._call("a search", lambda: method(**request.kwargs))
        except WeaviateQueryError as exc:
            if _TOO_MANY not in str(exc):
                raise
            # The server's words name neither the limit nor how to change it.
            raise ValueError(
                f"k = {k} is more results than the Weaviate server returns for one query "
                "(its QUERY_MAXIMUM_RESULTS setting, 10,000 by default): ask for fewer, or "
                "raise QUERY_MAXIMUM_RESULTS on the server") from exc
        return hits_from(request.method, response.objects)[:k]

    @hookimpl
    async def aieng_delete(self, ids: Sequence[str]) -> int:
        """Delete documents by id (``Pipeline.delete``); unknown ids are ignored."""
        collection = await self._ensure_open()
        unique = list(dict.fromkeys(ids))
        deleted = 0
        for start in range(0, len(unique), self.options.batch_size):
            where = delete_filter(unique[start:start + self.options.batch_size])
            result = await self._call("a delete", functools.partial(
                collection.data.delete_many, where=where))
            deleted += int(result.successful)
        return deleted
