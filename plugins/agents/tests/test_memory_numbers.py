"""The scores ``long-memory`` recalls are true: BM25 by its definition and the cosine of
the stored vectors, computed here another way; ``k`` exact; ties broken by the stated rule
(the newer item, then the later stored); the same scores in every process whatever its
hash seed."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from aieng_agents import MemoryOptions, SQLiteMemory
from aieng_hookspecs.types import MemoryItem, Query
from hypothesis import given, settings
from hypothesis import strategies as st

from aieng_core.testing import ManualClock

HERE = Path(__file__).resolve().parents[1]
_VOCABULARY = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "Éta", "中文"]


def _bm25(texts: Sequence[str], query: str) -> list[float]:
    """BM25 (k1 = 1.2, b = 0.75, idf = ln(1 + (N - n + 0.5) / (n + 0.5))) of each text for
    the query's distinct words, by the definition, summed exactly (``math.fsum``)."""
    docs = [re.findall(r"\w+", t.casefold()) for t in texts]
    terms = set(re.findall(r"\w+", query.casefold()))
    average = sum(map(len, docs)) / len(docs)
    scores = []
    for doc in docs:
        parts = []
        for term in terms:
            tf = doc.count(term)
            n = sum(term in d for d in docs)
            if tf:
                idf = math.log(1 + (len(docs) - n + 0.5) / (n + 0.5))
                parts.append(idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len(doc) / average)))
        scores.append(math.fsum(parts))
    return scores


def _recall(memory: SQLiteMemory, text: str, k: int) -> list[MemoryItem]:
    async def main() -> list[MemoryItem]:
        return await memory.aieng_memory_recall(Query(text=text), k)
    return anyio.run(main)


def _store(memory: SQLiteMemory, texts: Sequence[str]) -> None:
    async def main() -> None:
        await memory.aieng_memory_store([MemoryItem(t, kind="long") for t in texts])
    anyio.run(main)


_texts = st.lists(st.lists(st.sampled_from(_VOCABULARY), min_size=1, max_size=6)
                  .map(" ".join), min_size=1, max_size=12, unique=True)


@settings(max_examples=60, deadline=None)
@given(texts=_texts, query=st.lists(st.sampled_from(_VOCABULARY), min_size=1, max_size=4)
       .map(" ".join), k=st.integers(1, 15))
def test_word_scores_are_bm25_scaled_to_the_best(texts: list[str], query: str,
                                                 k: int) -> None:
    """By word overlap, each score is the item's BM25 over its namespace divided by the
    best item's, the items sharing no word are left out, exactly ``min(k, matching)``
    come back, and ties go to the later stored (one store: one age)."""
    memory = SQLiteMemory(MemoryOptions(embeddings=False), clock=ManualClock())
    _store(memory, texts)
    got = _recall(memory, query, k)
    oracle = _bm25(texts, query)
    top = max(oracle)
    expected = sorted(((s / top, i) for i, s in enumerate(oracle) if s > 0), reverse=True)
    assert len(got) == min(k, len(expected))
    for item, (score, _) in zip(got, expected, strict=False):
        assert math.isclose(item.score, score, rel_tol=1e-12, abs_tol=1e-12)
    # Ranked by score, ties to the later stored: exact order wherever scores differ.
    assert [texts.index(item.text) for item in got] == [
        i for _, i in sorted(((item.score, texts.index(item.text)) for item in got),
                             reverse=True)]
    if expected:
        assert got[0].score == 1.0


class _Vectors:
    """A pipeline context double whose ``embed`` gives the vectors of a table."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    async def embed(self, texts: Sequence[str], model: str | None = None
                    ) -> list[list[float]]:
        return [self.table[t] for t in texts]


_vector = st.lists(st.integers(-3, 3).map(float), min_size=4, max_size=4)


@settings(max_examples=60, deadline=None)
@given(vectors=st.lists(_vector, min_size=1, max_size=10), query=_vector,
       k=st.integers(1, 12))
def test_embedding_scores_are_the_cosines_of_the_vectors(
        vectors: list[list[float]], query: list[float], k: int) -> None:
    """By embeddings, each score is the cosine of the stored and the query vectors
    (numpy, here), only positive ones come back, ``min(k, positive)`` of them, equal
    vectors tie exactly and go to the later stored."""
    texts = [f"item {n}" for n in range(len(vectors))]
    memory = SQLiteMemory(MemoryOptions(), clock=ManualClock())
    memory.aieng_pipeline_open(_Vectors({**dict(zip(texts, vectors, strict=True)),
                                         "the query": query}))  # type: ignore[arg-type]
    _store(memory, texts)
    got = _recall(memory, "the query", k)
    q = np.asarray(query)
    cosines = [float(np.dot(v, q) / (np.linalg.norm(v) * np.linalg.norm(q)))
               if np.linalg.norm(v) and np.linalg.norm(q) else 0.0 for v in map(np.asarray,
                                                                                  vectors)]
    expected = sorted(((c, i) for i, c in enumerate(cosines) if c > 1e-9), reverse=True)
    assert len(got) == min(k, len(expected))
    for item, (cosine, _) in zip(got, expected, strict=False):
        assert math.isclose(item.score, cosine, rel_tol=1e-6)
    order = [texts.index(item.text) for item in got]
    assert order == [i for _, i in sorted(((item.score, texts.index(item.text))
                                           for item in got), reverse=True)]
    for a, b in itertools.pairwise(order):  # equal vectors: equal scores, the later first
        if vectors[a] == vectors[b]:
            assert got[order.index(a)].score == got[order.index(b)].score and a > b


def test_a_newer_item_wins_a_tie_over_an_older_one() -> None:
    """The same score: the item stored later in time comes first, whatever its id."""
    clock = ManualClock()
    memory = SQLiteMemory(MemoryOptions(embeddings=False), clock=clock)
    _store(memory, ["blue green", "green blue"])
    clock.now += 10
    _store(memory, ["red yellow"])
    _store(memory, ["blue green"])  # refreshed: now the newest of the tie
    got = _recall(memory, "green blue", 5)
    assert [i.text for i in got] == ["blue green", "green blue"]
    assert got[0].score == got[1].score == 1.0


_SEEDED = textwrap.dedent("""
    import json, anyio
    from aieng_agents import MemoryOptions, SQLiteMemory
    from aieng_hookspecs.types import MemoryItem, Query

    TEXTS = ["alpha beta gamma delta epsilon zeta", "alpha beta gamma delta eta theta iota",
             "beta gamma kappa lambda mu", "alpha gamma delta epsilon nu xi omicron pi",
             "delta epsilon zeta eta theta", "alpha alpha beta zeta zeta rho", "sigma tau"]

    async def main():
        memory = SQLiteMemory(MemoryOptions(embeddings=False), clock=lambda: 1000.0)
        await memory.aieng_memory_store([MemoryItem(t, kind="long") for t in TEXTS])
        found = await memory.aieng_memory_recall(
            Query(text="alpha beta gamma delta epsilon zeta eta theta rho"), 10)
        print(json.dumps([[i.text, repr(i.score)] for i in found]))

    anyio.run(main)
""")


def test_word_scores_are_the_same_whatever_the_hash_seed(tmp_path: Path) -> None:
    """A recall by word overlap gives the same scores, to the last bit, in processes with
    different ``PYTHONHASHSEED`` (its sums once took a set's order: 1 ulp apart)."""
    script = tmp_path / "seeded.py"
    script.write_text(_SEEDED, encoding="utf-8")
    runs = [subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=HERE,
                             env={**os.environ, "PYTHONHASHSEED": seed})
            for seed in ("0", "1", "2", "3")]
    outputs: set[str] = set()
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        outputs.add(out)
    assert len(outputs) == 1
    found: list[Any] = json.loads(outputs.pop())
    assert found[0][1] == "1.0" and len(found) == 6
