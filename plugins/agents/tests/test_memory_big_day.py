"""``long-memory`` on the big day: recalling among 10k-100k memories reads the namespace a
block at a time, keeps only the ``k`` best, parses the winners' metadata alone and scores
vectors with numpy, and ranks exactly as the one-row-at-a-time recall it replaced."""

from __future__ import annotations

import json
import math
import random
import sqlite3
import tracemalloc
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast
from unittest import mock

import pytest
from aieng_agents import MemoryOptions, SQLiteMemory, _memory
from aieng_hookspecs import PipelineContext
from aieng_hookspecs.types import MemoryItem, Query
from hypothesis import given, settings
from hypothesis import strategies as st

from aieng_core.testing import ManualClock

pytestmark = pytest.mark.anyio


class Embeddings:
    """A pipeline context that embeds by looking texts up (``default`` for the others),
    counting its calls and the texts it was given."""

    def __init__(self, vectors: dict[str, Sequence[float]], default: Sequence[float]) -> None:
        self.vectors = vectors
        self.default = default
        self.calls = 0
        self.texts = 0

    async def embed(self, texts: Sequence[str],
                    model: str | None = None) -> list[Sequence[float]]:
        self.calls += 1
        self.texts += len(texts)
        return [self.vectors.get(text, self.default) for text in texts]


def embedding(memory: SQLiteMemory, context: Embeddings) -> SQLiteMemory:
    """``memory`` opened in a pipeline that embeds through ``context``."""
    memory.aieng_pipeline_open(cast(PipelineContext, context))
    return memory


def long(text: str, **metadata: Any) -> MemoryItem:
    """A long-term memory item."""
    return MemoryItem(text=text, kind="long", metadata=metadata)


# -- the recall this module replaced, kept as the reference -----------------------------

def _old_cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def _old_by_words(text: str, texts: list[str]) -> list[float]:
    terms = set(_memory._words(text))
    documents = [Counter(_memory._words(row)) for row in texts]
    count = len(documents)
    average = sum(sum(d.values()) for d in documents) / count or 1.0
    frequency = Counter(term for d in documents for term in terms if term in d)
    scores = []
    for document in documents:
        length = sum(document.values())
        score = 0.0
        for term in terms & document.keys():
            idf = math.log(1.0 + (count - frequency[term] + 0.5) / (frequency[term] + 0.5))
            tf = document[term]
            score += idf * tf * (1.2 + 1) / (tf + 1.2 * (1 - 0.75 + 0.75 * length / average))
        scores.append(score)
    best = max(scores, default=0.0)
    return [s / best if best > 0 else 0.0 for s in scores]


def reference(memory: SQLiteMemory, query: Query, k: int,
              vector: Sequence[float] | None = None) -> list[tuple[str, float, Any]]:
    """What the old recall returned for ``query`` on what ``memory`` holds now: every row
    loaded, every cosine (or BM25 score) computed in pure Python, all of them sorted.
    ``vector`` is the query's embedding (``None``: by words)."""
    filters = dict(query.filters)
    namespace = filters.pop("namespace", memory.options.namespace)
    found = memory._connection().execute(
        "SELECT id, text, metadata, created, vector FROM memory WHERE namespace = ?",
        (namespace,)).fetchall()
    others = Query(text=query.text, filters=filters)
    rows = [row for row in found if others.matches(json.loads(row[2]))]
    if not rows or not query.text.strip():
        return []
    if vector is None:
        relevance = _old_by_words(query.text, [row[1] for row in rows])
    else:
        packed = array("f", vector)
        relevance = [_old_cosine(packed, array("f", row[4])) for row in rows]
    weight, now = memory.options.recency_weight, memory.clock()
    scored = []
    for row, score in zip(rows, relevance, strict=True):
        if score <= 0.0:
            continue
        recency = 0.5 ** (max(now - row[3], 0.0) / memory.options.half_life_s)
        scored.append(((1.0 - weight) * score + weight * recency, row))
    scored.sort(key=lambda pair: (-pair[0], -pair[1][3], -pair[1][0]))
    return [(row[1], score, json.loads(row[2])) for score, row in scored[:k]]


async def recalled(memory: SQLiteMemory, query: Query, k: int) -> list[tuple[str, float, Any]]:
    """What ``memory`` recalls for ``query``, in the reference's shape."""
    return [(item.text, item.score, item.metadata)
            for item in await memory.aieng_memory_recall(query, k)]


@contextmanager
def without_numpy() -> Iterator[None]:
    """The memory as it runs where numpy is not installed."""
    with mock.patch.object(_memory, "_numpy", lambda: None):
        yield


# -- identical rankings -----------------------------------------------------------------

_WORDS = st.sampled_from(["tea", "Tea", "coffee", "cup", "green", "the", "ünï", "東京", "a-b"])
_STORED = st.lists(st.tuples(st.lists(_WORDS, min_size=1, max_size=5),
                             st.sampled_from(["a", "b"]), st.sampled_from([1, 2, True]),
                             st.sampled_from([0.0, 0.0, 1.0, 3600.0])), max_size=14)


@settings(max_examples=80, deadline=None)
@given(stored=_STORED, asked=st.lists(_WORDS, max_size=4), k=st.integers(1, 8),
       namespace=st.sampled_from([None, "a", "b"]), topic=st.sampled_from([None, 1, True]),
       weight=st.sampled_from([0.0, 0.3, 1.0]), max_items=st.sampled_from([3, 1000]))
async def test_word_recall_ranks_exactly_as_before(
        stored: list[tuple[list[str], str, object, float]], asked: list[str], k: int,
        namespace: str | None, topic: object, weight: float, max_items: int) -> None:
    """By word overlap, the streamed top-k recall returns the very items, scores (to the
    bit) and order of the old recall, ties (equal texts' scores, equal ages) included,
    with namespaces, filters and recency."""
    clock = ManualClock()
    memory = SQLiteMemory(MemoryOptions(namespace="a", embeddings=False, max_items=max_items,
                                        recency_weight=weight, half_life_s=3600), clock=clock)
    for number, (words, space, label, step) in enumerate(stored):
        clock.now += step
        await memory.aieng_memory_store(
            [long(" ".join(words) + ("" if number % 3 else f" {number}"), namespace=space,
                  topic=label)])
    clock.now += 600
    filters: dict[str, Any] = {}
    if namespace is not None:
        filters["namespace"] = namespace
    if topic is not None:
        filters["topic"] = topic
    query = Query(text=" ".join(asked), filters=filters)
    assert await recalled(memory, query, k) == reference(memory, query, k)
    memory.close()


_INTS = st.lists(st.integers(-2, 2), min_size=3, max_size=3)


@settings(max_examples=80, deadline=None)
@given(stored=st.lists(st.tuples(_INTS, st.booleans(), st.sampled_from([0.0, 0.0, 5.0])),
                       max_size=14),
       asked=_INTS, k=st.integers(1, 8), weight=st.sampled_from([0.0, 0.5]),
       numpy=st.booleans())
async def test_embedding_recall_ranks_exactly_as_before(
        stored: list[tuple[list[int], bool, float]], asked: list[int], k: int, weight: float,
        numpy: bool) -> None:
    """By embedding cosine (vectors of small integers: every sum is exact, whatever its
    order), the block-wise recall, with numpy or without, returns the very items, scores
    and order of the old recall: equal vectors tie and are broken by age then id as before;
    items kept with no vector are embedded at the recall and ranked among the others."""
    clock = ManualClock()
    vectors = {f"item {n}": vector for n, (vector, _, _) in enumerate(stored)}
    context = Embeddings(vectors | {"query": asked}, [0, 0, 0])
    memory = SQLiteMemory(MemoryOptions(recency_weight=weight, half_life_s=60), clock=clock)
    for number, (_, early, step) in enumerate(stored):
        clock.now += step
        if not early and memory._context is None:  # the items before: kept with no vector
            embedding(memory, context)
        await memory.aieng_memory_store([long(f"item {number}")])
    embedding(memory, context)
    with without_numpy() if not numpy else mock.patch.object(_memory, "_BLOCK", 4):
        found = await recalled(memory, Query(text="query"), k)
    assert found == reference(memory, Query(text="query"), k, asked)
    memory.close()


async def test_float_embeddings_rank_as_before_with_equal_vectors_tied() -> None:
    """Real-valued vectors (2,000 of 32 dimensions, one in four a copy of another, spread
    across blocks): the same items in the same order as the old recall, the scores equal
    to a few units in the last place (numpy sums in another order), and equal vectors
    tied exactly, as before (the newer first)."""
    rng = random.Random(3)
    pool = [[rng.gauss(0.0, 1.0) for _ in range(32)] for _ in range(1500)]
    vectors = {f"item {n}": pool[n % 1500] for n in range(2000)}
    clock = ManualClock()
    memory = embedding(SQLiteMemory(clock=clock), Embeddings(vectors, pool[0]))
    for start in range(0, 2000, 250):
        clock.now += 1.0
        await memory.aieng_memory_store([long(f"item {n}") for n in range(start, start + 250)])
    query = Query(text="query")
    found = await recalled(memory, query, 600)
    expected = reference(memory, query, 600, pool[0])
    assert [text for text, _, _ in found] == [text for text, _, _ in expected]
    assert [score for _, score, _ in found] == pytest.approx(
        [score for _, score, _ in expected], rel=1e-12)
    assert found[0][0] == "item 1500" and found[1][0] == "item 0"  # equal: the newer first
    assert found[0][1] == found[1][1]
    memory.close()


# -- what grows with the namespace, and what no longer does ------------------------------

async def _stored(n: int, *, embed: bool) -> SQLiteMemory:
    """A memory of ``n`` items in one namespace (8-dimension vectors when ``embed``); the
    text ``needle`` is in 3 of them."""
    rng = random.Random(n)
    vectors = {f"note {i} about topic {i % 97}": [rng.uniform(-1.0, 1.0) for _ in range(8)]
               for i in range(n)}
    memory = SQLiteMemory(MemoryOptions(max_items=n, embeddings=embed))
    if embed:
        embedding(memory, Embeddings(vectors, [1.0] * 8))
    texts = list(vectors)
    texts[:3] = [f"needle {i}" for i in range(3)]
    await memory.aieng_memory_store([long(text, n=i) for i, text in enumerate(texts)])
    return memory


async def _peak(memory: SQLiteMemory, text: str) -> int:
    tracemalloc.start()
    try:
        items = await memory.aieng_memory_recall(Query(text=text), 5)
        assert len(items) in (3, 5)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(("embed", "text"), [(True, "anything"), (False, "needle")])
async def test_a_recall_s_memory_does_not_grow_with_the_namespace(embed: bool,
                                                                  text: str) -> None:
    """The peak memory of a recall among 8,000 items is about that among 2,000 (the old
    recall held every row, its parsed metadata and its vector or words: four times as
    much), by cosine and by word overlap."""
    small, large = await _stored(2000, embed=embed), await _stored(8000, embed=embed)
    await _peak(small, text), await _peak(large, text)  # numpy and caches loaded
    peaks = [await _peak(small, text), await _peak(large, text)]
    assert peaks[1] < 1.5 * peaks[0] + 100_000, peaks
    small.close(), large.close()


@pytest.mark.parametrize("embed", [True, False])
async def test_only_the_winners_metadata_is_parsed(embed: bool) -> None:
    """A recall parses the metadata of the ``k`` items it returns, not of every item of
    the namespace; with filters to match, every item's, as it must."""
    memory = await _stored(3000, embed=embed)
    parsed = mock.Mock(wraps=_memory._metadata)
    with mock.patch.object(_memory, "_metadata", parsed):
        items = await memory.aieng_memory_recall(Query(text="note topic needle"), 5)
        assert len(items) == 5 and parsed.call_count == 5
        parsed.reset_mock()
        filtered = Query(text="note topic needle", filters={"n": 1})
        assert [item.text for item in await memory.aieng_memory_recall(filtered, 5)] == [
            "needle 1"]
        assert parsed.call_count == 3000 + 1
    memory.close()


async def test_vectors_are_scored_a_block_at_a_time_not_one_by_one() -> None:
    """By cosine, 3,000 items are scored in 6 numpy passes of 512 rows, never with the
    one-vector Python cosine, and 1,200 winners come back best first."""
    memory = await _stored(3000, embed=True)
    blocks = mock.Mock(wraps=_memory._cosines)
    single = mock.Mock(wraps=_memory._cosine)
    with mock.patch.object(_memory, "_cosines", blocks), \
            mock.patch.object(_memory, "_cosine", single):
        items = await memory.aieng_memory_recall(Query(text="x"), 1200)
    assert blocks.call_count == math.ceil(3000 / 512) and single.call_count == 0
    assert 0 < len(items) <= 1200
    assert [item.score for item in items] == sorted((i.score for i in items), reverse=True)
    memory.close()


async def test_items_kept_without_vectors_are_embedded_a_block_at_a_time() -> None:
    """1,200 items kept before the pipeline could embed are embedded at the first recall
    in blocks of 512 (three calls, each text once, besides the query), ranked with the
    others as the old recall ranked them; the next recall embeds only the query."""
    memory = SQLiteMemory(MemoryOptions(embeddings=True))
    await memory.aieng_memory_store([long(f"note {n}") for n in range(1200)])
    rng = random.Random(5)
    vectors = {f"note {n}": [rng.randint(-3, 3) for _ in range(4)] for n in range(1200)}
    context = Embeddings(vectors | {"query": [1, 0, 0, 0]}, [0, 0, 0, 1])
    embedding(memory, context)
    found = await recalled(memory, Query(text="query"), 10**9)
    assert context.calls == 1 + 3 and context.texts == 1 + 1200
    assert found == reference(memory, Query(text="query"), 10**9, [1, 0, 0, 0])
    assert len(found) == sum(1 for v in vectors.values() if v[0] > 0)
    assert await recalled(memory, Query(text="query"), 10**9) == found
    assert context.calls == 5 and context.texts == 1202
    memory.close()


async def test_a_damaged_row_fails_only_the_recalls_that_return_it() -> None:
    """A row whose metadata is damaged is an error naming it when a recall returns it (or
    has filters to match against it); the recalls that do not reach it no longer fail."""
    memory = SQLiteMemory(MemoryOptions(embeddings=False))
    await memory.aieng_memory_store([long("damaged note")] +
                                    [long(f"sound note {n}") for n in range(50)])
    memory._connection().execute(
        "UPDATE memory SET metadata = '{broken' WHERE text = 'damaged note'")
    assert len(await memory.aieng_memory_recall(Query(text="sound"), 5)) == 5
    for query in (Query(text="damaged"), Query(text="sound", filters={"x": 1})):
        with pytest.raises(sqlite3.DatabaseError, match="not a JSON object"):
            await memory.aieng_memory_recall(query, 5)
    memory.close()


def test_the_recall_statements_use_indexes() -> None:
    """The namespace's scan goes through an index on ``namespace`` and the winners are
    read by their primary key, never by scanning the table."""
    memory = SQLiteMemory()
    conn = memory._connection()
    plans = [" ".join(str(row[-1]) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", args))
             for sql, args in [
                 ("SELECT id, created, vector, NULL FROM memory WHERE namespace = ?", ("a",)),
                 ("SELECT 1 FROM memory WHERE namespace = ? LIMIT 1", ("a",)),
                 ("SELECT id, text, metadata FROM memory WHERE id IN (?, ?)", (1, 2))]]
    assert all("USING" in plan and "SCAN memory" not in plan for plan in plans), plans
    memory.close()
