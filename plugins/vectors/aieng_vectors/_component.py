"""``vectors``: the embedded dense retriever (and index) of a pipeline."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from aieng_hookspecs import PipelineContext, hookimpl, listed
from aieng_hookspecs.types import Document, Hit, Query, unchecked

from ._options import VectorsOptions

if TYPE_CHECKING:
    from ._store import VectorStore

__all__ = ["Embedder", "VectorIndex"]

#: An embedding function given to :class:`VectorIndex` directly (tests, notebooks):
#: ``(texts, model) -> vectors``, plain or ``async``; an ``aieng_embed`` impl fits.
Embedder = Callable[[Sequence[str], "str | None"], Any]

SOURCE = "vectors"


def _embedding_text(doc: Document) -> str:
    # The title says what a passage is about: embed it with the passage.
    return f"{doc.title}\n\n{doc.text}" if doc.title.strip() else doc.text


class VectorIndex:
    """Dense retrieval over an embedded vector index.

    Documents are embedded through the pipeline (``context.embed``: the pipeline's
    embedding backend, else the kernel's default embedder) in batches of ``batch_size``;
    queries are embedded the same way. Search is an exact cosine scan below
    ``exact_below`` vectors and an HNSW graph (usearch) from there on, its candidates
    rescored exactly; ``Query.filters`` are metadata equality filters. With a ``path`` the
    index persists to that folder (a snapshot plus a journal of every write, see
    :mod:`aieng_vectors._disk`) and is found there again after a restart.

    :param options: the typed options (defaults when omitted).
    :param embedder: embed with this function instead of the pipeline's embedder:
        ``(texts, model) -> vectors``, plain or ``async`` (an ``aieng_embed`` impl fits).
        For tests and for programs that hold the embedder themselves.
    """

    def __init__(self, options: VectorsOptions | None = None, *,
                 embedder: Embedder | None = None) -> None:
        from ._store import VectorStore  # numpy is imported here, not when the plugin loads

        self.options = options if options is not None else VectorsOptions()
        self._embedder = embedder
        self._context: PipelineContext | None = None
        self._store: VectorStore = VectorStore(self.options)
        self._load_lock = anyio.Lock()
        self._loaded = False
        self._closed = False

    def __len__(self) -> int:
        """The number of documents; a folder index not loaded yet is loaded first (in the
        calling thread: it cannot await), so a fresh component counts what its folder
        holds."""
        self._load_now()
        return len(self._store)

    def __contains__(self, doc_id: object) -> bool:
        """Whether a document has this id (a folder index is loaded first, as for len)."""
        self._load_now()
        return doc_id in self._store

    @property
    def uses_hnsw(self) -> bool:
        """Whether queries are answered through the HNSW graph now (else exactly)."""
        return self._store.uses_hnsw

    # -- lifecycle -----------------------------------------------------------------------

    @hookimpl
    async def aieng_pipeline_open(self, context: PipelineContext) -> None:
        """Keep the pipeline's context (for embeddings) and load the persisted index."""
        self._context = context
        await self._ensure_loaded()

    @hookimpl
    async def aieng_pipeline_close(self) -> None:
        """Write a snapshot of the index and release its folder."""
        await self.aclose()

    async def aclose(self) -> None:
        """Write a snapshot of the index and release its folder (once)."""
        if self._closed:
            return
        self._closed = True
        # A load still running finishes first (its thread cannot be stopped) and is then
        # closed: else the folder stayed locked until the process exited.
        with anyio.CancelScope(shield=True):
            async with self._load_lock:
                if self._loaded:
                    await anyio.to_thread.run_sync(self._store.close)

    def _closed_error(self) -> RuntimeError:
        path = self.options.path
        where = f"the vectors index at {path}" if path else "this in-memory vectors index"
        again = " on the same path" if path else ""
        return RuntimeError(
            f"{where} is closed (aclose, or its pipeline closed): a closed index is not "
            f"opened again; build a new VectorIndex (or pipeline){again}")

    def _load_now(self) -> None:
        """Load a folder index in the calling thread, for ``len`` and ``in``, which cannot
        await. Once closed, only what it held when it closed is known."""
        if self._loaded or not self.options.path:
            return  # in memory: nothing to load
        if self._closed:
            raise self._closed_error()
        # A load running in a worker thread meanwhile holds the store's lock: this one
        # waits for it, then finds the folder open (the store opens it once).
        self._store.open(Path(self.options.path).expanduser())
        self._loaded = True

    async def _ensure_loaded(self) -> None:
        if self._closed:
            raise self._closed_error()
        if self._loaded:
            return
        async with self._load_lock:
            if not self._loaded:
                if self.options.path:
                    await anyio.to_thread.run_sync(self._store.open,
                                                   Path(self.options.path).expanduser())
                self._loaded = True

    # -- embeddings ----------------------------------------------------------------------

    async def _embed(self, texts: Sequence[str]) -> list[Any]:
        """Raw embedder output, one batch of at most ``batch_size`` texts per call."""
        model = self.options.model or None
        size = self.options.batch_size
        batches: list[Any] = []
        for start in range(0, len(texts), size):
            batch = list(texts[start:start + size])
            if self._embedder is not None:
                vectors = self._embedder(batch, model)
                if inspect.isawaitable(vectors):
                    vectors = await vectors
            elif self._context is not None:
                vectors = await self._context.embed(batch, model)
            else:
                raise RuntimeError(
                    "the vectors index has no embedder: it embeds through its pipeline, "
                    "which opens it first (Pipeline.open, run or index), or through the "
                    "embedder= given to VectorIndex")
            if len(vectors) != len(batch):
                raise ValueError(f"the embedder returned {len(vectors)} vectors for "
                                 f"{len(batch)} texts")
            batches.extend(vectors)
        return batches

    # -- the retriever role --------------------------------------------------------------

    @hookimpl
    async def aieng_index(self, documents: Sequence[Document]) -> int:
        """Embed and add the documents; an existing id is replaced."""
        await self._ensure_loaded()
        self._store.check_writable()  # a read-only index: refused before embedding
        latest = list({doc.id: doc for doc in documents}.values())
        if not latest:
            return 0
        vectors = await self._embed([_embedding_text(doc) for doc in latest])
        written: int = await anyio.to_thread.run_sync(self._store.upsert, latest, vectors)
        return written

    @hookimpl
    async def aieng_retrieve(self, query: Query, k: int) -> list[Hit]:
        """The ``k`` nearest documents by cosine similarity, filtered by ``query.filters``."""
        if not self._loaded or self._closed:
            await self._ensure_loaded()
        if not query.text.strip() or len(self._store) == 0:
            return []
        vector = await self._embed([query.text])
        # One hop to a worker thread for the search and the hits together.
        hits: list[Hit] = await anyio.to_thread.run_sync(self._search, vector, k,
                                                         query.filters)
        return hits

    def _search(self, vector: Any, k: int, filters: Any) -> list[Hit]:
        """The store's search as hits (in the worker thread)."""
        # Unchecked: the store's documents were validated when indexed, its scores are
        # finite floats clamped to [-1, 1], ranks count from 1; validating again would
        # cost a tenth of the search.
        return [unchecked(Hit, document=doc, score=score, rank=rank, source=SOURCE)
                for rank, (doc, score) in enumerate(self._store.search(vector, k, filters),
                                                    start=1)]

    # -- beyond the hooks ----------------------------------------------------------------

    async def upsert(self, documents: Iterable[Document]) -> int:
        """Add or replace documents (what ``aieng_index`` does), outside a pipeline run.

        :returns: the number of documents written.
        """
        return await self.aieng_index(list(documents))

    @hookimpl
    async def aieng_delete(self, ids: Sequence[str]) -> int:
        """Delete documents by id (``Pipeline.delete``)."""
        return await self.delete(ids)

    async def delete(self, ids: Iterable[str]) -> int:
        """Delete documents by id; unknown ids are ignored.

        :returns: the number of documents deleted.
        :raises TypeError: for a lone string (one id is ``[id]``, not its characters).
        """
        wanted = listed(ids)  # before loading: a lone string is no list of ids
        await self._ensure_loaded()
        deleted: int = await anyio.to_thread.run_sync(self._store.delete, wanted)
        return deleted

    async def get(self, doc_id: str) -> Document | None:
        """The stored document with this id, or ``None``."""
        await self._ensure_loaded()
        found: Document | None = await anyio.to_thread.run_sync(self._store.document, doc_id)
        return found

    async def flush(self) -> None:
        """Finish the HNSW graph if it is being built, and fold the journal into a fresh
        snapshot (both are done on close anyway)."""
        await self._ensure_loaded()
        await anyio.to_thread.run_sync(self._store.flush)
