"""The conformance suite of the ``reranker`` role."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aieng_hookspecs.types import Document, Hit, Query

from ...builtins import MemoryOptions, MemoryRetriever
from ...kernel import Kernel
from ...pipeline import Pipeline
from .. import strategies as aist
from .._kit import EventCapture
from ._base import PROPERTY, STAGE, RoleSuite, check_valid, left_unchanged, unique
from ._retriever import DEFAULT_CORPUS

__all__ = ["RerankerSuite"]


class RerankerSuite(RoleSuite):
    """Conformance of a reranker (``aieng_rerank``).

    Subclass it with a ``component`` fixture returning the reranker::

        class TestMyReranker(RerankerSuite):
            @pytest.fixture
            def component(self) -> MyReranker:
                return MyReranker()

    The reranked hits must be drawn from the input, ``min(k, len(hits))`` of them (a
    document given twice counting once; at most ``k`` for a reranker whose suite sets
    ``filters = True``, at most ``max_kept`` for one cutting by an option of its own), best
    first (scores not increasing: a reranker that reorders sets new scores), ranked 1..n,
    each document once, unchanged; the hits given are left as they were (a reranker
    annotating a document evolves a copy). What its documentation promises besides, a
    suite declares: :attr:`pointwise_tolerance` (a hit scores alone as among others) and
    :attr:`stable_ties` (equal documents keep their incoming order).
    """

    role = "reranker"
    #: whether the reranker filters by relevance (a threshold, a guard dropping hits): it
    #: may keep fewer than ``min(k, len(hits))``, even none; a reranker that only reorders
    #: and cuts keeps exactly that many
    filters: bool = False
    #: the most hits the reranker keeps by its own options (a ``k`` option of its own), if
    #: fewer than the stage's ``k`` may be
    max_kept: int | None = None
    #: for a pointwise reranker (each hit scored on its own, as its documentation says):
    #: how far (absolutely) a hit's new score reranked alone may be from its score among
    #: other hits (``0.0``: exactly; a model scoring padded batches may need ``1e-4``);
    #: ``None`` (the default) checks nothing, for scores that depend on the other hits
    #: (MMR, listwise)
    pointwise_tolerance: float | None = None
    #: whether hits of one text and title (other ids, one incoming score) tie exactly and
    #: keep their incoming order, as the reranker's documentation says
    stable_ties: bool = False
    required_hooks = ("aieng_rerank",)
    role_hooks = ("aieng_rerank",)

    async def rerank(self, pipeline: Pipeline, query: Query, hits: Sequence[Hit],
                     k: int) -> Any:
        """``aieng_rerank`` through the pipeline's dispatcher (``None``: left as they are);
        fails when the impl changes the query or hits in place."""
        hits = tuple(hits)
        found = await left_unchanged(
            pipeline.dispatcher.first("aieng_rerank", {"query": query, "hits": hits, "k": k},
                                      stage=STAGE),
            "aieng_rerank", query=query, hits=hits)
        return None if found is None else found[0]

    async def steady_call(self, pipeline: Pipeline, i: int) -> None:
        """Four of the default corpus's hits under ids of their own (made of ``i``),
        reranked for a query of its own, k=3 (straight through the dispatcher)."""
        hits = tuple(Hit(attrs.evolve(d, id=f"{d.id}-{i}"), score=1.0 / (n + 1), rank=n + 1)
                     for n, d in enumerate(DEFAULT_CORPUS[:4]))
        await pipeline.dispatcher.first("aieng_rerank", {
            "query": Query(f"rank fusion of weights {i}"), "hits": hits, "k": 3}, stage=STAGE)

    def check_reranked(self, reranked: object, hits: Sequence[Hit], k: int) -> list[Hit]:
        """``min(k, len(hits))`` hits of ``hits`` (at most ``k`` with :attr:`filters`),
        ranks 1..n, scores not increasing, no duplicates."""
        if reranked is None:  # "leave them as they are"
            return list(hits)
        assert isinstance(reranked, (list, tuple)), (
            f"aieng_rerank returned {type(reranked).__name__}, expected a list of Hit")
        assert len(reranked) <= k, f"{len(reranked)} hits for k={k}"
        distinct = len({h.document.id for h in hits})  # a document given twice counts once
        expected = min(k, distinct) if self.max_kept is None else min(k, distinct,
                                                                       self.max_kept)
        if not self.filters:
            assert len(reranked) == expected, (
                f"kept {len(reranked)} of {distinct} hits for k={k}: a reranker keeps "
                f"min(k, len(hits)) (here {expected}) unless it filters by relevance (set "
                "filters = True in its suite) or keeps fewer by an option (max_kept)")
        for position, hit in enumerate(reranked, start=1):
            assert isinstance(hit, Hit), f"item {position} is {type(hit).__name__}, not Hit"
            check_valid(hit, f"hit {position}")
            assert hit.rank == position, f"hit {position} has rank {hit.rank}"
        typed: list[Hit] = list(reranked)
        ids = [h.document.id for h in typed]
        assert unique(ids), f"a document is returned twice: {ids}"
        given_docs = {h.document.id: h.document for h in hits}
        for hit in typed:
            assert given_docs.get(hit.document.id) == hit.document, (
                f"{hit.document.id!r} is not one of the input hits' documents")
        for before, after in itertools.pairwise(typed):
            assert before.score >= after.score, (
                f"scores increase: rank {before.rank} has {before.score}, "
                f"rank {after.rank} has {after.score}")
        return typed

    @PROPERTY
    @given(query=aist.queries(), runs=aist.runs(min_runs=1, max_runs=1, max_hits=12),
           k=st.integers(min_value=1, max_value=12))
    async def test_reranked_hits_are_drawn_from_the_input(
        self, conformance_pipeline: Pipeline, query: Query, runs: list[list[Hit]], k: int
    ) -> None:
        """Any hits and k give at most k of the input hits, ranked 1..n, each once."""
        hits = runs[0]
        self.check_reranked(await self.rerank(conformance_pipeline, query, hits, k), hits, k)

    @PROPERTY
    @given(query=aist.queries(), k=st.integers(min_value=1, max_value=12))
    async def test_no_hits_give_no_hits(
        self, conformance_pipeline: Pipeline, query: Query, k: int
    ) -> None:
        """An empty list of hits stays empty."""
        reranked = await self.rerank(conformance_pipeline, query, [], k)
        assert self.check_reranked(reranked, [], k) == []

    async def test_scores_do_not_depend_on_the_other_hits(
        self, conformance_pipeline: Pipeline
    ) -> None:
        """With :attr:`pointwise_tolerance` set: each hit reranked alone gets the score it
        gets among the corpus's hits, within that tolerance."""
        if self.pointwise_tolerance is None:
            pytest.skip("pointwise_tolerance is None: scores may depend on the other hits")
        tolerance = self.pointwise_tolerance
        query = Query("rank fusion of weights and Unicode cities")
        hits = [Hit(d, score=1.0 / (i + 1), rank=i + 1, source="memory")
                for i, d in enumerate(copy.deepcopy(DEFAULT_CORPUS))]
        together = {h.document.id: h.score for h in self.check_reranked(
            await self.rerank(conformance_pipeline, query, hits, len(hits)), hits, len(hits))}
        for hit in hits:
            alone = [attrs.evolve(hit, rank=1)]
            for found in self.check_reranked(
                    await self.rerank(conformance_pipeline, query, alone, 1), alone, 1):
                if found.document.id in together:
                    assert abs(found.score - together[found.document.id]) <= tolerance, (
                        f"{found.document.id!r} scores {found.score} reranked alone and "
                        f"{together[found.document.id]} among {len(hits)} hits: more than "
                        f"pointwise_tolerance={tolerance} apart")

    async def test_equal_documents_keep_their_incoming_order(
        self, conformance_pipeline: Pipeline
    ) -> None:
        """With :attr:`stable_ties`: copies of one document under other ids, given with one
        score among other hits, tie exactly and come out in the order they came in (ids
        not sorted), whatever ``k`` cuts."""
        if not self.stable_ties:
            pytest.skip("stable_ties is False: equal documents may be ordered otherwise")
        base, *others = copy.deepcopy(DEFAULT_CORPUS)
        copies = [attrs.evolve(base, id=f"{base.id}-copy-{n}") for n in (7, 2, 9, 4, 1)]
        docs = [others[0], *copies, *others[1:4]]
        scores = [1.0, *(0.5 for _ in copies), 0.25, 0.125, 0.0625]
        hits = [Hit(d, score=s, rank=i, source="memory")
                for i, (d, s) in enumerate(zip(docs, scores), start=1)]
        incoming = [c.id for c in copies]
        for k in (2, 4, len(hits)):
            reranked = self.check_reranked(
                await self.rerank(conformance_pipeline, Query(base.text), hits, k), hits, k)
            tied = [h for h in reranked if h.document.id in incoming]
            order = [h.document.id for h in tied]
            assert len({h.score for h in tied}) <= 1, (
                f"equal documents score apart: {[(h.document.id, h.score) for h in tied]}")
            assert order == [i for i in incoming if i in order], (
                f"equal documents came in as {incoming} and out as {order} (k={k}): ties "
                "must keep their incoming order (stable_ties)")

    async def test_reranks_in_a_pipeline(self, aieng_kernel: Kernel, component: object) -> None:
        """Behind a retriever in a ``retrieve`` + ``rerank`` pipeline, the hits it keeps are
        some of the retrieved ones, at most the stage's k."""
        retriever = MemoryRetriever(MemoryOptions())
        pipeline = self.compose(aieng_kernel, component, stages=["retrieve", "rerank"],
                                stage={"retrieve": {"k": 6}, "rerank": {"k": 2}},
                                others={"retriever": retriever})
        await pipeline.index(copy.deepcopy(DEFAULT_CORPUS))
        result = await pipeline.run("weights model quantization inference ranked lists")
        assert result.status == "ok"
        self.check_reranked(list(result.hits), result.retrieved, 2)

    async def test_does_not_block_the_loop(
        self, conformance_pipeline: Pipeline, captured_events: EventCapture
    ) -> None:
        """Reranking never stalls the event loop."""
        hits = [Hit(d, score=1.0 / (i + 1), rank=i + 1, source="memory")
                for i, d in enumerate(copy.deepcopy(DEFAULT_CORPUS))]
        queries = ["rank fusion", "weights", "Unicode cities", ""]
        extra = [Hit(Document(f"x{i}", f"filler passage {i}"), score=0.0, rank=len(hits) + i + 1)
                 for i in range(40)]
        async with self.loop_watch(captured_events):
            for text in queries:
                await self.rerank(conformance_pipeline, Query(text), hits + extra, 5)
