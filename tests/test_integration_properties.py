"""End-to-end properties of pipelines built from the real installed plugins.

Each example builds a pipeline with ``Kernel.pipeline({...})`` (the dict form of a pipeline
file) from bm25 (on a temporary folder), vectors and the built-in memory retriever, a fuser
(the kernel's RRF, ``rrf``, ``dbsf``, ``convex``), a reranker (``mmr``, ``embedding``), a
context builder (``prompt``, ``context``), the ``extractive`` backend or the kit's
``ScriptedBackend``, the exact and semantic caches on SQLite files, the guardrails, and
tables read by aieng-tables cut by the chunkers; embeddings come from the kit's
``HashEmbedder`` (no model is loaded). Hypothesis draws the corpus, the questions and the components, and
the properties are those a user relies on whatever they ask.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
import tempfile
import unicodedata
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from aieng_hookspecs import ComponentRegistry, hookimpl
from aieng_hookspecs.types import Delta, Document, Hit, Query, Request
from aieng_tables import table_documents
from hypothesis import given, settings
from hypothesis import strategies as st

from aieng_core import Kernel, RunResult
from aieng_core.pipeline import Pipeline
from aieng_core.testing import HashEmbedder, ScriptedBackend, registered

PLUGINS = "builtin,bm25,vectors,fusion,rerankers,context,cache,guardrails,chunkers"
CITATION = re.compile(r"\[(\d+)\]")

# -- components the pipelines name -----------------------------------------------------------


def echo_question(request: Request) -> str:
    """The scripted model's answer: the question it was asked (after the input guards),
    then a citation of each passage it was shown."""
    passages = request.metadata.get("context", [])
    question = request.metadata.get("question", request.prompt)
    cites = " ".join(f"[{p['n']}]" for p in passages)
    return f"You asked: {question} {cites}" if cites else f"You asked: {question}"


class Doubles:
    """Registers the kit's doubles as components a pipeline config can name."""

    def __init__(self) -> None:
        self.backends: list[ScriptedBackend] = []

    @hookimpl
    def aieng_register_components(self, registry: ComponentRegistry) -> None:
        registry.add("hash-embed", lambda: HashEmbedder(64))
        registry.add("echo", self._echo)

    def _echo(self) -> ScriptedBackend:
        backend = ScriptedBackend(echo_question)
        self.backends.append(backend)
        return backend


@pytest.fixture
async def kernel() -> AsyncIterator[Kernel]:
    """A started kernel with the plugins under test and the doubles registered."""
    async with Kernel(env={"AIENG_PLUGINS": PLUGINS}, default_embedder=None,
                      loop_block_threshold=None) as running:
        with registered(running, Doubles(), "doubles"):
            yield running


@contextmanager
def folder() -> Iterator[Path]:
    """A fresh temporary folder per hypothesis example (``tmp_path`` is per test)."""
    with tempfile.TemporaryDirectory(prefix="aieng-props-") as name:
        yield Path(name)


def config(root: Path, *, stages: Sequence[str] | None = None,
           retrievers: Sequence[str] = ("bm25", "vectors"), fuser: str = "",
           reranker: str = "", builder: str = "prompt", backend: str = "extractive",
           scorer: str = "tantivy", k: int = 10, extra: dict[str, Any] | None = None,
           **head: Any) -> dict[str, Any]:
    """A pipeline config (the dict form of a pipeline file) over ``root``."""
    components: dict[str, Any] = dict(extra or {})
    if "bm25" in retrievers:
        components["lexical"] = {"use": "bm25", "path": str(root / "bm25"),
                                 "scorer": scorer}
    if "vectors" in retrievers:
        components["dense"] = {"use": "vectors", "path": str(root / "vectors")}
    if "memory" in retrievers:
        components["mem"] = {"use": "memory"}
    components["embedder"] = {"use": "hash-embed"}
    if fuser:
        components["fuse"] = {"use": fuser}
    if reranker == "mmr-score":
        components["rerank"] = {"use": "mmr", "relevance": "score", "lambda_": 0.7}
    elif reranker:
        components["rerank"] = {"use": reranker}
    if builder:
        components["ctx"] = {"use": builder}
    if backend:
        components["llm"] = {"use": backend}
    pipeline: dict[str, Any] = {"name": "props", "timeout": 30.0, **head}
    if stages is not None:
        pipeline["stages"] = list(stages)
    return {"pipeline": pipeline, "stage": {"retrieve": {"k": k}, "rerank": {"k": k}},
            "components": components}


def ids(hits: Sequence[Hit]) -> list[str]:
    return [hit.document.id for hit in hits]


def ranking(hits: Sequence[Hit]) -> list[tuple[str, int, float]]:
    return [(hit.document.id, hit.rank, hit.score) for hit in hits]


def run_ids(result: RunResult) -> dict[str, set[str]]:
    """The ids each retriever returned."""
    return {name: set(ids(hits)) for name, hits in result.runs.items()}


def check_well_formed(result: RunResult) -> None:
    """Hits ranked 1..n with distinct ids, each found by a retriever; every citation in the
    answer names a passage shown to the model, which is a returned hit."""
    for hits in (result.retrieved, result.hits, *result.runs.values()):
        assert [hit.rank for hit in hits] == list(range(1, len(hits) + 1))
        assert len(set(ids(hits))) == len(hits)
    found = set().union(set(), *run_ids(result).values())
    assert set(ids(result.retrieved)) <= found
    assert set(ids(result.hits)) <= set(ids(result.retrieved))
    shown = result.request.metadata.get("context", [])
    numbers = [p["n"] for p in shown]
    assert numbers == list(range(1, len(shown) + 1))
    assert {p["id"] for p in shown} <= set(ids(result.hits))
    for number in CITATION.findall(result.answer):
        assert 1 <= int(number) <= len(shown), (number, result.answer)


# -- strategies ---------------------------------------------------------------------------------

WORDS = ["fusion", "rank", "bm25", "cosine", "graph", "cache", "délta", "日本語", "東京",
         "서울에서", "naïve", "(", "AND", '"', "*", ":", "-x", "title:rank", "\u200b", "🙂",
         "ภาษาไทย", "\u0301", "NOT", "~", "\\", "é", "Ünïcödé", "bob@example.com"]
#: Text of any code point but surrogates, or a bag of the words above; no "[n]" of its own
#: (a quoted sentence holding one would read as a citation).
TEXT = st.one_of(
    st.text(st.characters(blacklist_categories=["Cs"]), max_size=60),
    st.lists(st.sampled_from(WORDS), max_size=8).map(" ".join),
).filter(lambda text: not CITATION.search(text))
QUESTION = st.one_of(
    st.lists(st.sampled_from([*WORDS, "\ud800"]), min_size=1, max_size=6).map(" ".join),
    st.text(max_size=80),  # lone surrogates included: a question is any str
)


@st.composite
def corpora(draw: st.DrawFn, min_size: int = 1, max_size: int = 6) -> list[Document]:
    """A small corpus of distinct ids (any Unicode), texts and titles."""
    keys = draw(st.lists(st.text(min_size=1, max_size=6).filter(str.strip),
                         min_size=min_size, max_size=max_size, unique=True))
    return [Document(key, draw(TEXT), title=draw(st.sampled_from(["", "Fusion", "東京"])))
            for key in keys]


FUSERS = st.sampled_from(["", "rrf", "dbsf", "convex"])
RERANKERS = st.sampled_from(["", "mmr", "mmr-score", "embedding"])

# -- any question over any corpus -------------------------------------------------------------


@pytest.mark.anyio
@settings(max_examples=40, deadline=None)
@given(corpus=corpora(), question=QUESTION, fuser=FUSERS, reranker=RERANKERS,
       builder=st.sampled_from(["prompt", "context"]), stream=st.booleans(),
       guards=st.booleans())
async def test_any_question_over_any_corpus_is_answered_well_formed(
        kernel: Kernel, corpus: list[Document], question: str, fuser: str, reranker: str,
        builder: str, stream: bool, guards: bool) -> None:
    """For any corpus and question, a hybrid RAG pipeline (bm25 + vectors, any fuser and
    reranker, either context builder, the extractive backend, optionally the input and
    output guards and a retrieval guard) answers without raising: hits are ranked 1..n
    with distinct ids, all retrieved; every citation names a shown passage; a streamed
    answer is the deltas joined; a blocked question retrieves nothing."""
    deltas: list[Delta] = []
    extra: dict[str, Any] = {}
    if guards:
        extra = {"injection": {"use": "injection"}, "out": {"use": "output-guard"},
                 "pii": {"use": "pii", "restore": True},
                 "shield": {"use": "retrieval-guard"}}
    with folder() as root:
        pipeline = kernel.pipeline(config(root, fuser=fuser, reranker=reranker,
                                          builder=builder, extra=extra))
        async with pipeline:
            assert await pipeline.index(corpus) == len(corpus)
            result = await pipeline.run(question,
                                        on_delta=deltas.append if stream else None)
    if result.status == "blocked":
        assert guards and result.hits == () and result.model_calls == ()
        return
    assert result.status == "ok", result.stages
    check_well_formed(result)
    if stream:
        assert "".join(d.text for d in deltas) == result.answer


# -- writes: indexing twice, deleting, order -----------------------------------------------


async def searches(pipeline: Pipeline, questions: Sequence[str]) -> list[RunResult]:
    return [await pipeline.run(Query(text=q)) for q in questions]


def snapshot(results: Sequence[RunResult]) -> list[dict[str, Any]]:
    """Each result's runs and fused hits as (id, rank, score), plus the documents."""
    return [{"runs": {name: ranking(hits) for name, hits in r.runs.items()},
             "retrieved": ranking(r.retrieved), "hits": ranking(r.hits),
             "docs": sorted((h.document.id, h.document.text, h.document.title)
                            for h in r.retrieved)}
            for r in results]


@pytest.mark.anyio
@settings(max_examples=20, deadline=None)
@given(corpus=corpora(), questions=st.lists(QUESTION, min_size=1, max_size=3),
       fuser=FUSERS, reranker=RERANKERS)
async def test_indexing_the_same_documents_twice_changes_nothing(
        kernel: Kernel, corpus: list[Document], questions: list[str], fuser: str,
        reranker: str) -> None:
    """Indexing a corpus a second time leaves every retriever's hits, the fused ranking and
    the reranked hits exactly as they were (bm25 with the ``impacts`` scorer, whose
    statistics are the live documents'; vectors; memory)."""
    with folder() as root:
        pipeline = kernel.pipeline(config(
            root, retrievers=("bm25", "vectors", "memory"),
            fuser=fuser, reranker=reranker, builder="", backend="", scorer="impacts", k=20))
        async with pipeline:
            await pipeline.index(corpus)
            once = snapshot(await searches(pipeline, questions))
            assert await pipeline.index(corpus) == len(corpus)
            twice = snapshot(await searches(pipeline, questions))
    assert twice == once


@st.composite
def deletions(draw: st.DrawFn) -> tuple[list[Document], list[str], list[str]]:
    """A corpus, the ids to delete from it, and questions (each document's words too)."""
    corpus = draw(corpora(min_size=2, max_size=7))
    gone = draw(st.lists(st.sampled_from([d.id for d in corpus]), min_size=1, unique=True))
    questions = [f"{d.title} {d.text}" for d in corpus] + draw(st.lists(QUESTION,
                                                                        max_size=2))
    return corpus, gone, questions


@pytest.mark.anyio
@settings(max_examples=25, deadline=None)
@given(case=deletions())
async def test_a_deleted_document_is_found_by_no_retriever(
        kernel: Kernel, case: tuple[list[Document], list[str], list[str]]) -> None:
    """After ``Pipeline.delete``, no retriever (bm25, vectors, memory) returns a deleted
    document for any question, the kept ones are still found where they were, and the
    delete reports how many existed."""
    corpus, gone, questions = case
    with folder() as root:
        pipeline = kernel.pipeline(config(
            root, stages=["retrieve"], retrievers=("bm25", "vectors", "memory"),
            builder="", backend="", k=50))
        async with pipeline:
            await pipeline.index(corpus)
            before = await searches(pipeline, questions)
            assert await pipeline.delete([*gone, "never-indexed"]) == len(gone)
            after = await searches(pipeline, questions)
    for old, new in zip(before, after, strict=True):
        check_well_formed(new)
        for name, hits in new.runs.items():
            assert not set(ids(hits)) & set(gone), name
        kept = {name: set(ids(hits)) - set(gone) for name, hits in old.runs.items()}
        for name, expected in kept.items():
            if name != "lexical":  # BM25's scores move with the corpus; vectors' cannot
                assert expected <= set(ids(new.runs.get(name, ()))), name


CJK = ("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "HALFWIDTH KATAKANA")


def cjk_pairs(text: str) -> bool:
    """Whether ``text`` has two adjacent CJK characters (bm25 searches those as phrase
    clauses through tantivy, whose ties keep index order: its README)."""
    flags = [unicodedata.name(c, "").startswith(CJK) or c in "ー゙゚ｰﾞﾟ" for c in text]
    return any(a and b for a, b in itertools.pairwise(flags))


@st.composite
def permutations(draw: st.DrawFn) -> tuple[list[Document], list[Document], int, list[str]]:
    """A corpus (possibly holding equal texts, so scores tie), the same corpus in another
    order, a batch size, and questions."""
    corpus = draw(corpora(min_size=2, max_size=7))
    if draw(st.booleans()):  # duplicates of one text under other ids: exact ties
        corpus += [Document(f"{d.id}-copy", d.text, title=d.title) for d in corpus[:2]]
    shuffled = draw(st.permutations(corpus))
    questions = draw(st.lists(QUESTION, min_size=1, max_size=2)) + [corpus[0].text]
    return corpus, list(shuffled), draw(st.integers(1, 4)), [
        q for q in questions if not cjk_pairs(q)]


@pytest.mark.anyio
@settings(max_examples=20, deadline=None)
@given(case=permutations(), fuser=FUSERS, reranker=RERANKERS)
async def test_results_do_not_depend_on_the_order_documents_were_indexed(
        kernel: Kernel, case: tuple[list[Document], list[Document], int, list[str]],
        fuser: str, reranker: str) -> None:
    """Two pipelines indexing the same documents in different orders and batch sizes
    return the same ids, ranks and scores from every retriever, fuser and reranker (bm25
    with ``impacts`` and vectors break ties by id; the fusers are order independent).
    Questions with adjacent CJK characters are left out: bm25 sends them to tantivy, whose
    ties keep the order documents were indexed in, as its README says."""
    corpus, shuffled, batch, questions = case
    found = []
    for documents, batch_size in ((corpus, 256), (shuffled, batch)):
        with folder() as root:
            pipeline = kernel.pipeline(config(
                root, retrievers=("bm25", "vectors", "memory"), fuser=fuser,
                reranker=reranker, builder="", backend="", scorer="impacts", k=20))
            async with pipeline:
                await pipeline.index(documents, batch_size=batch_size)
                found.append(snapshot(await searches(pipeline, questions)))
    assert found[0] == found[1]


# -- caching and streaming -------------------------------------------------------------------


def rag(root: Path, *, cache: str = "", guards: bool = False, stream: str = "guarded",
        fuser: str = "", reranker: str = "") -> dict[str, Any]:
    """A RAG pipeline (bm25 + vectors, prompt, extractive), with a cache and guards."""
    extra: dict[str, Any] = {}
    if guards:
        extra["injection"] = {"use": "injection"}
        extra["out"] = {"use": "output-guard"}
        extra["pii"] = {"use": "pii", "restore": True}
    if cache == "exact":
        extra["cache"] = {"use": "cache", "sqlite": str(root / "cache.sqlite3")}
    elif cache == "semantic":
        extra["cache"] = {"use": "semantic-cache", "path": str(root / "semantic.sqlite3")}
    return config(root, fuser=fuser, reranker=reranker, extra=extra, stream=stream)


CORPUS = [
    Document("rrf", "Reciprocal rank fusion merges the ranked lists of several retrievers.",
             title="Fusion"),
    Document("bm25", "BM25 ranks documents by term frequency and inverse document frequency."),
    Document("dense", "Dense retrieval embeds documents as vectors. It ranks them by cosine."),
    Document("tokyo", "東京は日本の首都です。 Tokyo is the capital of Japan."),
    Document("cache", "An exact cache answers repeated questions from stored completions."),
]


@pytest.mark.anyio
@settings(max_examples=20, deadline=None)
@given(question=QUESTION, cache=st.sampled_from(["exact", "semantic"]), guards=st.booleans(),
       fuser=FUSERS, reranker=RERANKERS)
async def test_a_cached_answer_equals_the_uncached_one(
        kernel: Kernel, question: str, cache: str, guards: bool, fuser: str,
        reranker: str) -> None:
    """The second run of a question is a cache hit (exact on SQLite, or semantic) whose
    answer equals the first's and that of a pipeline with no cache; a new pipeline over the
    same cache file answers it from the file, the same again."""
    with folder() as root:
        answers = []
        for use_cache in (cache, cache, ""):
            pipeline = kernel.pipeline(rag(root, cache=use_cache, guards=guards,
                                           fuser=fuser, reranker=reranker))
            async with pipeline:
                await pipeline.index(CORPUS)
                first = await pipeline.run(question)
                if first.status == "blocked":
                    return
                answers.append(first)
                if use_cache:
                    second = await pipeline.run(question)
                    assert second.cache_hit == "cache", second.stages
                    assert second.completion is not None and second.completion.cached
                    answers.append(second)
    fresh, _, reopened, _, uncached = answers
    assert fresh.cache_hit is None and reopened.cache_hit == "cache"
    assert {r.answer for r in answers} == {uncached.answer}, [r.answer for r in answers]
    check_well_formed(fresh)


@pytest.mark.anyio
@settings(max_examples=20, deadline=None)
@given(questions=st.lists(QUESTION, min_size=1, max_size=3), guards=st.booleans(),
       cache=st.sampled_from(["", "exact"]), mode=st.sampled_from(["guarded", "live"]),
       fuser=FUSERS, reranker=RERANKERS)
async def test_a_streamed_answer_equals_the_non_streamed_one(
        kernel: Kernel, questions: list[str], guards: bool, cache: str, mode: str,
        fuser: str, reranker: str) -> None:
    """Streaming a run (cache hits included) gives deltas that join to its answer, and
    that answer is the one the same pipeline gives a caller that does not stream; with
    ``stream = "live"`` and output guards the deltas are the model's raw answer."""
    outcomes: list[list[tuple[str, str]]] = []
    for streaming in (True, False):
        with folder() as root:
            pipeline = kernel.pipeline(rag(root, cache=cache, guards=guards, stream=mode,
                                           fuser=fuser, reranker=reranker))
            seen = []
            async with pipeline:
                await pipeline.index(CORPUS)
                for question in [*questions, questions[0]]:
                    deltas: list[Delta] = []
                    result = await pipeline.run(
                        question, on_delta=deltas.append if streaming else None)
                    joined = "".join(d.text for d in deltas)
                    if not streaming:
                        assert deltas == []
                    elif mode == "live" and guards and result.cache_hit is None:
                        raw = result.raw_completion
                        assert joined == (raw.text if raw is not None else "")
                    elif result.status == "ok":
                        assert joined == result.answer, (mode, result.cache_hit)
                    seen.append((result.status, result.answer))
            outcomes.append(seen)
    assert outcomes[0] == outcomes[1]


# -- the pii guard gives each user their own values ----------------------------------------


NAMES = st.from_regex(r"[a-z]{2,8}(\.[a-z]{2,6})?", fullmatch=True)
ADDRESS = re.compile(r"[a-z.]+@example\.org")
PLAIN = st.text(st.characters(blacklist_categories=["Cs"]), max_size=30)


@st.composite
def users(draw: st.DrawFn) -> list[str]:
    """Questions of several users, each holding the user's own e-mail address among any
    text, some with a placeholder-looking string of their own; the same template for all,
    so their redacted requests are equal."""
    names = draw(st.lists(NAMES, min_size=2, max_size=5, unique=True))
    before, after = draw(PLAIN), draw(st.sampled_from(["", " <EMAIL_1>", " <EMAIL_2> ok"]))
    return [f"{before} mail {name}@example.org please{after}" for name in names]


@pytest.mark.anyio
@settings(max_examples=25, deadline=None)
@given(questions=users(), cache=st.booleans(), stream=st.booleans())
async def test_pii_restores_each_users_own_values_and_never_anothers(
        kernel: Kernel, questions: list[str], cache: bool, stream: bool) -> None:
    """Concurrent runs of users whose questions differ only in their e-mail address (one
    redacted request for all, so with a cache all but the first are hits): the model never
    sees an address, and each user's answer is the model's echo of their own question,
    their own address restored and no other user's in it."""
    extra: dict[str, Any] = {"pii": {"use": "pii", "restore": True}}
    if cache:
        extra["cache"] = {"use": "cache"}
    results: dict[int, RunResult] = {}
    streamed: dict[int, str] = {}
    with folder() as root:
        pipeline = kernel.pipeline(config(root, retrievers=(), builder="", backend="echo",
                                          extra=extra))
        async with pipeline:

            async def ask(number: int) -> None:
                deltas: list[Delta] = []
                results[number] = await pipeline.run(
                    questions[number], on_delta=deltas.append if stream else None)
                streamed[number] = "".join(d.text for d in deltas)

            async with anyio.create_task_group() as group:
                for number in range(len(questions)):
                    group.start_soon(ask, number)
    addresses = [q.split(" mail ")[1].split(" ")[0] for q in questions]
    for number, result in results.items():
        assert result.status == "ok", result.stages
        assert result.answer == f"You asked: {questions[number]}", number
        assert set(ADDRESS.findall(result.answer)) == {addresses[number]}
        if stream:
            assert streamed[number] == result.answer
    for sent in sent_to_the_model(results):
        assert not ADDRESS.search(sent)


def sent_to_the_model(results: dict[int, RunResult]) -> list[str]:
    """What each model call was sent (the rendered messages of every run)."""
    return [" ".join(m.content for m in call.messages)
            for result in results.values() for call in result.model_calls]


# -- tables cut by chunkers ------------------------------------------------------------------


CELL = st.one_of(st.text(st.characters(blacklist_categories=["Cs"]), max_size=20),
                 st.sampled_from(["", "42", "3.5", "2024-01-05", "true", 'say "hi"', "a,b",
                                  "two\nlines", "東京 Tokyo"]))
CHUNKERS = {"tokens": {"use": "tokens", "size": 4, "overlap": 1},
            "sentences": {"use": "sentences", "size": 40},
            "markdown": {"use": "markdown", "size": 40}}


@st.composite
def tables(draw: st.DrawFn) -> list[Document]:
    """A CSV table of any cells (quotes, commas, line breaks, any script) as the tables
    plugin reads it: a schema document and one per row."""
    columns = draw(st.lists(st.from_regex(r"[a-z]{1,6}", fullmatch=True), min_size=1,
                            max_size=3, unique=True))
    rows = draw(st.lists(st.lists(CELL, min_size=len(columns), max_size=len(columns)),
                         min_size=1, max_size=5))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    writer.writerows(rows)
    return table_documents(out.getvalue(), name="people", format="csv")


@pytest.mark.anyio
@settings(max_examples=20, deadline=None)
@given(documents=tables(), chunker=st.sampled_from(sorted(CHUNKERS)), pick=st.integers(0, 9))
async def test_chunked_table_rows_are_indexed_deleted_and_reindexed_in_every_store(
        kernel: Kernel, documents: list[Document], chunker: str, pick: int) -> None:
    """A table's documents cut by any chunker: every store holds chunks ``<id>#<n>`` whose
    text is the slice ``start:end`` of their document, with its title; indexing again
    changes nothing; deleting a row's document removes each of its chunks from bm25,
    vectors and memory and keeps every other document's."""
    source = {doc.id: doc for doc in documents}
    words = " ".join(f"{d.title} {d.text}" for d in documents)
    with folder() as root:
        pipeline = kernel.pipeline(config(
            root, retrievers=("bm25", "vectors", "memory"), builder="", backend="",
            scorer="impacts", k=500, extra={"cut": CHUNKERS[chunker]}))
        async with pipeline:
            await pipeline.index(documents)
            first = await pipeline.run(Query(text=words))
            await pipeline.index(documents)
            second = await pipeline.run(Query(text=words))
            gone = documents[pick % len(documents)].id
            await pipeline.delete([gone])
            after = await pipeline.run(Query(text=words))
    assert snapshot([second]) == snapshot([first])
    for hits in first.runs.values():
        for hit in hits:
            doc, meta = hit.document, hit.document.metadata
            parent = source[meta["document_id"]]
            assert doc.id.startswith(f"{parent.id}#") and doc.title == parent.title
            assert parent.text[meta["start"]:meta["end"]] == doc.text
    held = {h.document.metadata["document_id"] for h in first.runs["dense"]}
    assert held == {d.id for d in documents if d.text.strip()}
    for name, hits in after.runs.items():
        assert gone not in {h.document.metadata["document_id"] for h in hits}, name
    kept = {h.document.id for h in first.runs["dense"]
            if h.document.metadata["document_id"] != gone}
    assert {h.document.id for h in after.runs["dense"]} == kept
