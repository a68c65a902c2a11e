"""Ties of similarity in the semantic cache: the newest entry answers, then the smallest
key, before and after a reopen and whatever rows the entries sit in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from aieng_cache import SemanticCache, SemanticIndex, SemanticOptions, request_key
from aieng_cache._index import unit_vector
from aieng_hookspecs.types import Completion, Message, Request
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from aieng_core.testing import ManualClock

pytestmark = pytest.mark.anyio


def ask(text: str) -> Request:
    return Request(messages=(Message("user", text),))


class SameVectorEmbedder:
    """An embedding double: a scripted one, giving every text the same vector (so every
    pair of prompts has a cosine of exactly 1: a tie)."""

    def __call__(self, texts: list[str], model: str | None) -> list[list[float]]:
        return [[0.6, 0.8, 0.0] for _ in texts]


def cache_on(path: str, clock: ManualClock) -> SemanticCache:
    return SemanticCache(SemanticOptions(threshold=0.9, path=path),
                         embedder=SameVectorEmbedder(), clock=clock)


async def test_the_newest_of_equal_entries_answers_before_and_after_a_reopen(
        tmp_path: Path) -> None:
    """Two stored prompts embedding identically: a third prompt (the same vector) gets
    the newer one's answer, from the index that stored them and from one reloaded from
    the file (which fills its rows newest first), whichever was stored first."""
    path = str(tmp_path / "s.db")
    clock = ManualClock()
    first = cache_on(path, clock)
    await first.aieng_cache_store(ask("how do i reset my password"), Completion(text="old"))
    clock.now += 1
    await first.aieng_cache_store(ask("password reset steps"), Completion(text="new"))
    found = await first.aieng_cache_lookup(ask("i forgot my password"))
    assert found is not None and found.text == "new"
    await first.aclose()
    again = cache_on(path, clock)
    found = await again.aieng_cache_lookup(ask("i forgot my password"))
    assert found is not None and found.text == "new"
    await again.aclose()


async def test_entries_stored_at_the_same_time_go_to_the_smallest_key(
        tmp_path: Path) -> None:
    """Equal cosines and equal store times: the entry of the smaller key answers, before
    and after a reopen."""
    path = str(tmp_path / "s.db")
    clock = ManualClock()
    first = cache_on(path, clock)
    prompts = ["how do i reset my password", "password reset steps", "reset password"]
    for prompt in prompts:
        await first.aieng_cache_store(ask(prompt), Completion(text=prompt))
    smallest = min(prompts, key=lambda p: request_key(ask(p), first.scope))
    found = await first.aieng_cache_lookup(ask("i forgot my password"))
    assert found is not None and found.text == smallest
    await first.aclose()
    again = cache_on(path, clock)
    found = await again.aieng_cache_lookup(ask("i forgot my password"))
    assert found is not None and found.text == smallest
    await again.aclose()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1),
       entries=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3)), min_size=1,
                        max_size=12),
       order=st.randoms(use_true_random=False))
def test_search_answers_by_definition_whatever_the_row_order(
        seed: int, entries: list[tuple[int, int]], order: object) -> None:
    """Entries use one of three random 384-float directions (copies of one direction tie)
    and one of four store times, inserted in any order (and after deleted rows, so rows
    are reused): the answer is the entry of the highest cosine (computed in float64, by
    direction), then the newest, then the smallest key."""
    rng = np.random.default_rng(seed)
    bases = [unit_vector(rng.normal(size=384)) for _ in range(3)]
    query = unit_vector(rng.normal(size=384))
    assert query is not None and all(b is not None for b in bases)
    cosines = [float(np.dot(b.astype(np.float64), query.astype(np.float64)))
               for b in bases]  # type: ignore[union-attr]
    assume(all(abs(a - b) > 1e-4 for i, a in enumerate(cosines) for b in cosines[i + 1:]))
    keyed = [(f"k{i:02d}", base, created) for i, (base, created) in enumerate(entries)]
    best = max(cosines[base] for _, base, _ in keyed)
    tied = [(k, c) for k, b, c in keyed if cosines[b] == best]
    newest = max(c for _, c in tied)
    expected = min(k for k, c in tied if c == newest)
    shuffled = list(keyed)
    order.shuffle(shuffled)  # type: ignore[attr-defined]
    index: SemanticIndex[str] = SemanticIndex(32)
    for number in range(5):  # rows the entries then reuse, in another order
        index.put(f"gone{number}", "p", bases[0], "gone")
    for number in (3, 0, 4, 1, 2):
        index.delete(f"gone{number}")
    for key, base, created in shuffled:
        index.put(key, "p", bases[base], key, created=float(created))
    match = index.search(query, "p", now=0.0)
    assert match is not None and match.key == expected
    assert match.similarity == pytest.approx(best, abs=1e-5)
