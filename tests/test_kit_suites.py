"""The conformance suites fail more broken plugins: values built past their validators,
inputs changed in place by retrievers, backends and caches, embeddings out of order, and
streams that refuse to close."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import numpy as np
import pytest
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import (
    Completion,
    Delta,
    Document,
    Hit,
    Message,
    Query,
    Request,
    Route,
    Score,
    Usage,
    unchecked,
)

from aieng_core.builtins import MemoryOptions, MemoryRetriever
from aieng_core.kernel import Kernel
from aieng_core.testing import HashEmbedder, ScriptedBackend
from aieng_core.testing.conformance import (
    DEFAULT_CORPUS,
    BackendSuite,
    CacheSuite,
    FuserSuite,
    JudgeSuite,
    RerankerSuite,
    RetrieverSuite,
    RouterSuite,
)
from aieng_core.testing.reference import MemoryCache

pytestmark = pytest.mark.anyio

_KNOWN = {d.id: d for d in DEFAULT_CORPUS}
_DOC = DEFAULT_CORPUS[0]


def _hit(**fields: Any) -> Hit:
    """A hit built as ``unchecked`` builds it: no validator runs."""
    return unchecked(Hit, **{"document": _DOC, "score": 1.0, "rank": 1, **fields})


# ---------------------------------------------------------------------------- invalid values


@pytest.mark.parametrize(("check", "value", "message"), [
    (lambda v: RetrieverSuite().check_hits(v, 3, _KNOWN), [_hit(score=math.nan)],
     "hit 1 is no valid Hit: score must be finite"),
    (lambda v: RetrieverSuite().check_hits(v, 1, _KNOWN), [_hit(score=np.float32(0.5))],
     "score must be a number, got float32"),
    (lambda v: RerankerSuite().check_reranked(v, [Hit(_DOC, 1.0)], 3),
     [_hit(score=math.inf)], "score must be finite"),
    (lambda v: FuserSuite().check_fused(v, [[Hit(_DOC, 1.0)]]), [_hit(rank=np.int64(1))],
     "rank must be an int, got int64"),
    (lambda v: JudgeSuite().check_scores(v), [unchecked(Score, name="f1", value=np.float32(1))],
     "score 'f1' is no valid Score"),
    (lambda v: RouterSuite().check_route(v, ["a"]),
     unchecked(Route, target="a", score=math.nan), "the route is no valid Route"),
    (lambda v: CacheSuite().check_hit(v, Completion(text="x")),
     unchecked(Completion, text="x", cached=True, usage=unchecked(Usage, prompt_tokens=-1)),
     r"the cached completion\.usage is no valid Usage"),
    (lambda v: BackendSuite().check_completion(v, Request(messages=(Message("user", "q"),))),
     unchecked(Completion, text="x", finish_reason="bored"), "the completion is no valid"),
    (lambda v: BackendSuite().check_deltas(v),
     [unchecked(Delta, text="x", index=0, finish_reason="stop", logprob=0.5)],
     "delta 0 is no valid Delta: 'logprob' must be <= 0"),
], ids=["nan-hit", "float32-score", "inf-rerank", "int64-rank", "float32-judge", "nan-route",
        "cache-usage", "finish-reason", "delta-logprob"])
def test_suites_catch_a_value_built_past_its_validators(
    check: Callable[[Any], object], value: object, message: str
) -> None:
    """A value built with ``unchecked`` (a NaN or ``numpy`` score, a negative count) passes
    ``isinstance``; each suite's check still fails it, naming the field, even where no
    comparison would trip on it (a single hit)."""
    with pytest.raises(AssertionError, match=message):
        check(value)


# ---------------------------------------------------------------------------- in place


class StampsIndexed(MemoryRetriever):
    """Broken retriever: marks each document it indexes, in the caller's document."""

    @hookimpl
    def aieng_index(self, documents: Sequence[Document]) -> int:
        for document in documents:
            document.metadata["indexed"] = True
        return super().aieng_index(documents)


class PopsFilters(MemoryRetriever):
    """Broken retriever: consumes the query's filters as it applies them."""

    @hookimpl
    def aieng_retrieve(self, query: Query, k: int) -> list[Hit]:
        query.filters.pop("lang", None)
        return super().aieng_retrieve(query, k)


class CountsAttempts(ScriptedBackend):
    """Broken backend: counts its attempts in the request's metadata."""

    @hookimpl
    async def aieng_generate(self, request: Request) -> Completion | None:
        request.metadata["attempts"] = request.metadata.get("attempts", 0) + 1
        return await super().aieng_generate(request)


class SortsTextsInPlace(HashEmbedder):
    """Broken embedder: sorts the caller's texts by length to batch them."""

    @hookimpl
    def aieng_embed(self, texts: list[str], model: str | None) -> list[list[float]] | None:
        texts.sort(key=len)
        return super().aieng_embed(texts, model)


class StampsStored(MemoryCache):
    """Broken cache: notes in the request that it stored the answer."""

    @hookimpl
    def aieng_cache_store(self, request: Request, completion: Completion) -> None:
        request.metadata["cached"] = True
        super().aieng_cache_store(request, completion)


_REQUEST = Request(messages=(Message("user", "hi"),), metadata={"trace": "t1"})
_TEXTS = ["a longer text than the others", "short", "mid-sized text"]


@pytest.mark.parametrize(("suite", "component", "call"), [
    (RetrieverSuite(), StampsIndexed(MemoryOptions()),
     lambda s, p: s.index(p, [Document("d1", "some text")])),
    (RetrieverSuite(), PopsFilters(MemoryOptions()),
     lambda s, p: s.retrieve(p, Query("q", filters={"lang": "en"}), 3)),
    (BackendSuite(), CountsAttempts(["answer"]), lambda s, p: s.generate(p, _REQUEST)),
    (BackendSuite(), SortsTextsInPlace(), lambda s, p: s.embed(p, _TEXTS)),
    (CacheSuite(), StampsStored(), lambda s, p: s.store(p, _REQUEST, Completion(text="a"))),
], ids=["index", "retrieve", "generate", "embed", "cache-store"])
async def test_more_suites_catch_an_argument_changed_in_place(
    aieng_kernel: Kernel, suite: Any, component: object,
    call: Callable[[Any, Any], Awaitable[object]],
) -> None:
    """The retriever, backend and cache suites fail a component that writes into what it
    was given: the caller's documents, query, request or list of texts."""
    pipeline = suite.compose(aieng_kernel, component)
    with pytest.raises(AssertionError, match="changed its argument in place"):
        await call(suite, pipeline)


async def test_retriever_suite_catches_an_index_stamping_the_corpus(
    aieng_kernel: Kernel,
) -> None:
    """The ``indexed_pipeline`` fixture's own indexing is checked too (it runs before any
    test body), so a retriever writing into the corpus fails at once."""
    suite = RetrieverSuite()
    pipeline = suite.compose(aieng_kernel, StampsIndexed(MemoryOptions()), stages=["retrieve"])
    corpus = [Document("d1", "some text"), Document("d2", "other text")]
    with pytest.raises(AssertionError, match=r"aieng_index changed .*documents\[0\]\.metadata"):
        await suite.index(pipeline, corpus)


# ---------------------------------------------------------------------------- embeddings


class SortsForBatching(HashEmbedder):
    """Broken embedder: batches texts sorted by length and forgets to put the vectors back
    in the given order."""

    @hookimpl
    def aieng_embed(self, texts: Sequence[str], model: str | None) -> list[list[float]] | None:
        if model not in (None, self.model):
            return None
        return [self.vector(text) for text in sorted(texts, key=len)]


async def test_backend_suite_catches_vectors_out_of_order(aieng_kernel: Kernel) -> None:
    """One vector per text of one dimension is not enough: the i-th vector must be the i-th
    text's."""
    suite, component = BackendSuite(), SortsForBatching()
    pipeline = suite.compose(aieng_kernel, component)
    await suite.test_embed_one_vector_per_text(component, pipeline, _TEXTS)  # passes
    with pytest.raises(AssertionError, match="do not follow the order of the texts"):
        await suite.test_embed_vectors_follow_their_texts(component, pipeline, _TEXTS)


async def test_backend_suite_passes_vectors_in_order(aieng_kernel: Kernel) -> None:
    """The embedding double passes the order check, the empty text (a zero vector)
    included."""
    suite, component = BackendSuite(), HashEmbedder()
    pipeline = suite.compose(aieng_kernel, component)
    await suite.test_embed_vectors_follow_their_texts(component, pipeline, [*_TEXTS, ""])


# ---------------------------------------------------------------------------- streams


class IgnoresClose(ScriptedBackend):
    """Broken backend: its stream swallows the first ``GeneratorExit`` and goes on
    yielding."""

    def _stream(self, request: Request) -> AsyncIterator[Delta]:
        async def deltas() -> AsyncIterator[Delta]:
            index, ignored = 0, False
            while index < 3:
                try:
                    yield Delta(text="word ", index=index)
                except GeneratorExit:
                    if ignored:  # the second close ends it: no unraisable error left behind
                        raise
                    ignored = True
                index += 1
            yield Delta(text="", index=index, finish_reason="stop")

        return deltas()


async def test_backend_suite_catches_a_stream_that_will_not_close(aieng_kernel: Kernel) -> None:
    """A stream closed after its first delta must close: the kernel closes one early when a
    client goes away."""
    suite, component = BackendSuite(), IgnoresClose(["x"])
    pipeline = suite.compose(aieng_kernel, component)
    request = Request(messages=(Message("user", "hi"),))
    with pytest.raises(AssertionError, match="ignored GeneratorExit"):
        await suite.test_stream_closes_early(component, pipeline, request)
    await suite.test_stream_closes_early(ScriptedBackend(["a b c"]), suite.compose(
        aieng_kernel, ScriptedBackend(["a b c"])), request)
