"""The conformance suite of the ``retriever`` role: search and indexing."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aieng_hookspecs.types import Document, Hit, Query

from ...kernel import Kernel
from ...pipeline import Pipeline
from .._kit import EventCapture
from ._base import (
    PROPERTY,
    STAGE,
    SUBJECT,
    RoleSuite,
    check_valid,
    implemented_hooks,
    left_unchanged,
    unique,
)

__all__ = ["DEFAULT_CORPUS", "TRICKY_QUERIES", "RetrieverSuite"]

#: The default corpus: short, distinct passages with Unicode and query-syntax characters.
DEFAULT_CORPUS: tuple[Document, ...] = (
    Document("rrf", "Reciprocal rank fusion merges ranked lists by summing one over the "
             "constant plus the rank.", title="Reciprocal rank fusion"),
    Document("bm25", "BM25 scores documents by term frequency, inverse document frequency "
             "and length normalisation.", title="BM25"),
    Document("hnsw", "HNSW builds a layered graph for approximate nearest neighbour search "
             "over dense vectors."),
    Document("lora", "LoRA finetunes a language model by learning low-rank updates to its "
             "weight matrices."),
    Document("quant", "Quantization stores weights as int8 or 4-bit numbers to shrink "
             "memory and speed up inference.", metadata={"topic": "inference"}),
    Document("guard", "Guardrails check prompts and answers for personal data, prompt "
             "injection and unsafe content."),
    Document("unicode", "Zürich, São Paulo and 東京 are cities; naïve café façade — "
             "Unicode text must index.", metadata={"lang": "mixed"}),
    Document("syntax", 'Query syntax like title:(foo OR "bar") AND -baz* must be treated '
             "as plain text."),
)

#: Query texts that break naive search engines: query syntax, quotes, control characters,
#: SQL, emoji, and very long input.
TRICKY_QUERIES: tuple[str, ...] = (
    "", " ", "\n\t", '"', '"unterminated', "title:foo", "foo:bar:baz", "(a OR b", "))((",
    "a AND", "NOT", "OR", "*", "?", "-", "+", "\\", "~1", "^2", "[1 TO 5]", "{!lucene}",
    "'; DROP TABLE documents; --", "\x00", "東京", "🙂", "naïve café", "title:(foo OR \"bar\")",
    "x" * 10_000, "word " * 2_000,
)


class RetrieverSuite(RoleSuite):
    """Conformance of a retriever (``aieng_retrieve``, and ``aieng_index`` when it has one).

    Subclass it with a ``component`` fixture returning an empty retriever::

        class TestMyIndex(RetrieverSuite):
            @pytest.fixture
            def component(self, tmp_path) -> MyIndex:
                return MyIndex(path=tmp_path)

    Before querying, the suite indexes ``corpus`` through ``Pipeline.index``
    (``aieng_index``); a retriever without ``aieng_index`` must already hold ``corpus``.
    The documents indexed and the queries asked are left as they were given (a retriever
    annotating a document stores a copy). A query with ``filters`` gets hits whose metadata
    all match them (:meth:`Query.matches`: JSON equality, a missing key reads as ``null``)
    or, from a retriever that does not support filters, the hits it gives without them.
    Queries asked at once (as concurrent runs ask them) each get the hits they get alone.

    Fixtures it may override: ``corpus`` (documents with unique ids; default
    :data:`DEFAULT_CORPUS`) and ``retrieve_k`` (the ``k`` of most queries; default 3).
    """

    role = "retriever"
    required_hooks = ("aieng_retrieve",)
    role_hooks = ("aieng_retrieve", "aieng_index")

    # -- fixtures ------------------------------------------------------------------------

    @pytest.fixture
    def corpus(self) -> list[Document]:
        """The documents indexed before querying (copies: a retriever that writes into a
        document's metadata fails a test, and must not change the next test's corpus)."""
        return copy.deepcopy(list(DEFAULT_CORPUS))

    @pytest.fixture
    def retrieve_k(self) -> int:
        """The ``k`` of the queries."""
        return 3

    @pytest.fixture
    async def indexed_pipeline(self, aieng_kernel: Kernel, component: object,
                               corpus: list[Document], retrieve_k: int) -> Pipeline:
        """A ``retrieve`` pipeline of the component, with ``corpus`` indexed."""
        assert unique([d.id for d in corpus]), "the corpus fixture has duplicate ids"
        pipeline = self.compose(aieng_kernel, component, stages=["retrieve"],
                                stage={"retrieve": {"k": retrieve_k}})
        if "aieng_index" in implemented_hooks(component):
            await left_unchanged(pipeline.index(corpus), "aieng_index", documents=corpus)
        return pipeline

    # -- calling the hooks through the kernel -------------------------------------------

    async def retrieve(self, pipeline: Pipeline, query: Query, k: int) -> Any:
        """``aieng_retrieve`` of the component through the dispatcher (``None``: no part);
        fails when the impl changes the query in place."""
        gathered = await left_unchanged(
            pipeline.dispatcher.gather("aieng_retrieve", {"query": query, "k": k},
                                       stage=STAGE),
            "aieng_retrieve", query=query)
        for value, plugin in gathered:
            if plugin == SUBJECT:
                return value
        return None

    async def index(self, pipeline: Pipeline, documents: Sequence[Document]) -> Any:
        """``aieng_index`` of the component through the dispatcher (failing when the impl
        changes the documents in place)."""
        given = tuple(documents)
        gathered = await left_unchanged(
            pipeline.dispatcher.gather("aieng_index", {"documents": given}, stage=STAGE),
            "aieng_index", documents=given)
        for value, plugin in gathered:
            if plugin == SUBJECT:
                return value
        return None

    async def exercise(self, pipeline: Pipeline, request: pytest.FixtureRequest) -> None:
        """Index the ``corpus`` (when the component indexes) and ask one query."""
        await pipeline.open()
        if "aieng_index" in implemented_hooks(pipeline.components[SUBJECT]):
            await pipeline.index(request.getfixturevalue("corpus"))
        await self.retrieve(pipeline, Query("fusion"), 3)

    async def steady_call(self, pipeline: Pipeline, i: int) -> None:
        """A search of a query of its own (words of the default corpus and ``i``), k=3."""
        await self.retrieve(pipeline, Query(f"rank fusion of weights {i}"), 3)

    # -- checks --------------------------------------------------------------------------

    def check_hits(self, hits: object, k: int, known: Mapping[str, Document]) -> list[Hit]:
        """At most ``k`` hits, ranks 1..n, scores not increasing, each document once and
        each one of ``known`` (by id, with its text, title and metadata)."""
        if hits is None:  # "I take no part" is allowed
            return []
        assert isinstance(hits, (list, tuple)), (
            f"aieng_retrieve returned {type(hits).__name__}, expected a list of Hit")
        assert len(hits) <= k, f"{len(hits)} hits for k={k}"
        for position, hit in enumerate(hits, start=1):
            assert isinstance(hit, Hit), f"hit {position} is {type(hit).__name__}, not Hit"
            check_valid(hit, f"hit {position}")
            assert hit.rank == position, f"hit {position} has rank {hit.rank}"
        typed: list[Hit] = list(hits)
        for before, after in itertools.pairwise(typed):
            assert before.score >= after.score, (
                f"scores increase: rank {before.rank} has {before.score}, "
                f"rank {after.rank} has {after.score}")
        ids = [h.document.id for h in typed]
        assert unique(ids), f"a document is returned twice: {ids}"
        for hit in typed:
            doc = known.get(hit.document.id)
            assert doc is not None, f"hit {hit.document.id!r} is no indexed document"
            assert hit.document.text == doc.text, (
                f"hit {hit.document.id!r} carries another text than the indexed one")
            assert hit.document == doc, (
                f"hit {hit.document.id!r} carries another title or metadata than the "
                "indexed document")
        return typed

    # -- tests ---------------------------------------------------------------------------

    @PROPERTY
    @given(text=st.one_of(st.sampled_from(TRICKY_QUERIES), st.text(max_size=200)),
           picks=st.lists(st.integers(min_value=0, max_value=10_000), max_size=6))
    async def test_any_query_gives_well_formed_hits(
        self, indexed_pipeline: Pipeline, corpus: list[Document], retrieve_k: int,
        text: str, picks: list[int],
    ) -> None:
        """Any query text (query syntax, quotes, empty, very long, words of the corpus)
        gives at most k hits, ranked 1..n by non-increasing score, each an indexed document
        once; never an error."""
        known = {d.id: d for d in corpus}
        words = [w for d in corpus for w in d.text.split()] or [""]
        for query in (text, " ".join(words[i % len(words)] for i in picks)):
            hits = await self.retrieve(indexed_pipeline, Query(query), retrieve_k)
            self.check_hits(hits, retrieve_k, known)

    async def test_finds_an_indexed_document(
        self, indexed_pipeline: Pipeline, corpus: list[Document], retrieve_k: int
    ) -> None:
        """A query made of a document's own text finds that document within the top k."""
        known = {d.id: d for d in corpus}
        for doc in corpus:
            if not doc.text.strip():
                continue
            hits = self.check_hits(await self.retrieve(indexed_pipeline, Query(doc.text),
                                                       retrieve_k), retrieve_k, known)
            assert doc.id in [h.document.id for h in hits], (
                f"querying the text of {doc.id!r} does not find it in the top {retrieve_k}")

    async def test_k_one(
        self, indexed_pipeline: Pipeline, corpus: list[Document]
    ) -> None:
        """With ``k=1`` a query returns at most one hit, ranked 1."""
        known = {d.id: d for d in corpus}
        for doc in corpus[:4]:
            self.check_hits(await self.retrieve(indexed_pipeline, Query(doc.text), 1), 1, known)

    async def test_reindexing_replaces(
        self, component: object, indexed_pipeline: Pipeline, corpus: list[Document],
        retrieve_k: int,
    ) -> None:
        """Indexing a document whose id exists replaces it: no duplicates, the new text."""
        self.skip_unless_implements(component, "aieng_index")
        written = await self.index(indexed_pipeline, corpus)  # the same batch again
        assert written is None or (isinstance(written, int) and not isinstance(written, bool)
                                   and written >= 0), (
            f"aieng_index returned {written!r}, expected a count or None")
        old = corpus[0]
        new = attrs.evolve(old, text="Quokka marmalade zeppelin: this document was replaced.")
        await self.index(indexed_pipeline, [new])
        known = {d.id: d for d in corpus} | {new.id: new}
        hits = self.check_hits(await self.retrieve(
            indexed_pipeline, Query("quokka marmalade zeppelin"), retrieve_k), retrieve_k, known)
        assert new.id in [h.document.id for h in hits], "the replacement is not found"
        for doc in corpus:  # check_hits fails on a duplicate or on the old text
            self.check_hits(await self.retrieve(indexed_pipeline, Query(doc.text), retrieve_k),
                            retrieve_k, known)

    async def test_ties_do_not_follow_the_indexing_order(
        self, component: object, indexed_pipeline: Pipeline, corpus: list[Document],
    ) -> None:
        """Copies of one document under other ids score alike; which of them a query
        returns, and in what order, does not depend on the order they were indexed in (the
        bundled retrievers order equal scores by document id): the copies indexed in one
        order, then replaced by another text, then indexed again in the reverse order,
        give the same hits for ``k`` cutting inside the tie and past it."""
        self.skip_unless_implements(component, "aieng_index")
        base = corpus[0]
        order = [7, 2, 9, 4, 1]
        copies = [attrs.evolve(base, id=f"{base.id}-copy-{n}") for n in order]
        tied = {base.id, *(c.id for c in copies)}
        known = {d.id: d for d in [*corpus, *copies]}
        ks = (1, 2, 3, len(tied), len(tied) + 1)

        async def tie_orders() -> list[list[str]]:
            found = []
            for k in ks:
                hits = self.check_hits(await self.retrieve(indexed_pipeline, Query(base.text),
                                                           k), k, known)
                found.append([h.document.id for h in hits if h.document.id in tied])
            return found

        await self.index(indexed_pipeline, copies)
        before = await tie_orders()
        await self.index(indexed_pipeline, [attrs.evolve(c, text="Placeholder zebra text.")
                                            for c in copies])
        await self.index(indexed_pipeline, list(reversed(copies)))
        after = await tie_orders()
        assert after == before, (
            f"indexed in the order {[c.id for c in copies]} a query of their text found "
            f"{before} (for k = {ks}); indexed again in the reverse order, {after}: order "
            "equal scores by a rule of their own (document id), not by when documents were "
            "indexed, and keep to it at the k-th hit")

    async def delete(self, pipeline: Pipeline, ids: Sequence[str]) -> Any:
        """``aieng_delete`` of the component through the dispatcher."""
        gathered = await pipeline.dispatcher.gather("aieng_delete", {"ids": tuple(ids)},
                                                    stage=STAGE)
        for value, plugin in gathered:
            if plugin == SUBJECT:
                return value
        return None

    async def test_delete_removes_and_counts_what_it_held(
        self, component: object, indexed_pipeline: Pipeline, corpus: list[Document],
        retrieve_k: int,
    ) -> None:
        """Deleting ids removes those documents and counts only the ids it held (the kernel
        relies on the count to find a re-indexed document's stale chunks); again, 0."""
        self.skip_unless_implements(component, "aieng_delete")
        gone = [d.id for d in corpus[:2]]
        asked = [gone[0], "aieng-conformance-never-indexed", gone[1]]
        assert await self.delete(indexed_pipeline, asked) == len(gone), (
            f"aieng_delete of {asked} ({len(gone)} indexed, one never) did not count "
            f"{len(gone)}")
        assert await self.delete(indexed_pipeline, gone) == 0, (
            "deleting the same ids again counted them again")
        known = {d.id: d for d in corpus[2:]}  # check_hits fails on a deleted document
        for doc in corpus:
            self.check_hits(await self.retrieve(indexed_pipeline, Query(doc.text), retrieve_k),
                            retrieve_k, known)

    async def test_filters_are_applied_or_ignored(
        self, indexed_pipeline: Pipeline, corpus: list[Document], retrieve_k: int
    ) -> None:
        """A query with ``filters`` (each metadata value of the corpus, ``null``, a value no
        document has, a key no document has) gets only hits whose metadata match them by the rule of
        :meth:`Query.matches`, or, where the retriever supports no filters, the very hits
        the query gets without them: never a filter half applied."""
        known = {d.id: d for d in corpus}
        pairs: dict[tuple[str, str], tuple[str, Any]] = {}  # each key and value once
        for doc in corpus:
            for key, value in doc.metadata.items():
                pairs.setdefault((key, repr(value)), (key, value))
        chosen = list(pairs.values())[:4]
        filters: list[dict[str, Any]] = [{key: value} for key, value in chosen]
        filters += [{key: None} for key, _ in chosen[:1]]  # matches where the key is missing
        filters += [{key: "aieng-conformance-other"} for key, _ in chosen]  # matches none
        filters.append({"aieng_conformance_no_such_key": "x"})
        # a document with metadata together with one without it (or with other values)
        texts = [f"{d.text} {other.text}" for d in corpus if d.metadata
                 for other in [*(o for o in corpus if o.metadata != d.metadata), d][:1]][:4]
        for text in [*texts, *(d.text for d in corpus[:2])]:
            plain = self.check_hits(await self.retrieve(indexed_pipeline, Query(text),
                                                        retrieve_k), retrieve_k, known)
            for wanted in filters:
                query = Query(text, filters=wanted)
                hits = self.check_hits(await self.retrieve(indexed_pipeline, query,
                                                           retrieve_k), retrieve_k, known)
                if all(query.matches(hit.document.metadata) for hit in hits):
                    continue
                stray = [h.document.id for h in hits if not query.matches(h.document.metadata)]
                assert [h.document.id for h in hits] == [h.document.id for h in plain], (
                    f"filters {wanted!r} let {stray} through (their metadata does not match) "
                    "yet changed the hits: apply each filter as Query.matches does (JSON "
                    "equality, a missing key reads as null), or ignore filters altogether")

    async def test_concurrent_queries_get_their_own_hits(
        self, indexed_pipeline: Pipeline, corpus: list[Document], retrieve_k: int
    ) -> None:
        """Queries asked at once (concurrent runs on one pipeline) each get the hits that
        query gets alone: no state of one search leaks into another."""
        known = {d.id: d for d in corpus}
        queries = [Query(d.text) for d in corpus]
        alone = [[h.document.id for h in self.check_hits(
            await self.retrieve(indexed_pipeline, q, retrieve_k), retrieve_k, known)]
            for q in queries]
        together: list[list[str]] = [[] for _ in queries]

        async def one(index: int) -> None:
            hits = await self.retrieve(indexed_pipeline, queries[index], retrieve_k)
            together[index] = [h.document.id for h in self.check_hits(hits, retrieve_k, known)]

        async with anyio.create_task_group() as group:
            for index in range(len(queries)):
                group.start_soon(one, index)
        for index, (got, expected) in enumerate(zip(together, alone)):
            assert got == expected, (
                f"query {index} ({queries[index].text!r:.60}) asked with others at once got "
                f"{got}, alone {expected}: keep each search's state local to its call")

    async def test_retrieves_in_a_pipeline(
        self, indexed_pipeline: Pipeline, corpus: list[Document], retrieve_k: int
    ) -> None:
        """A ``retrieve`` pipeline of the component runs and returns its hits."""
        result = await indexed_pipeline.run(Query(corpus[0].text))
        assert result.status == "ok"
        self.check_hits(list(result.retrieved), retrieve_k, {d.id: d for d in corpus})

    async def test_does_not_block_the_loop(
        self, component: object, aieng_kernel: Kernel, corpus: list[Document],
        retrieve_k: int, captured_events: EventCapture,
    ) -> None:
        """Indexing and searching never stall the event loop."""
        pipeline = self.compose(aieng_kernel, component, stages=["retrieve"])
        async with self.loop_watch(captured_events):
            if "aieng_index" in implemented_hooks(component):
                await self.index(pipeline, corpus)
            for doc in corpus:
                await self.retrieve(pipeline, Query(doc.text), retrieve_k)
