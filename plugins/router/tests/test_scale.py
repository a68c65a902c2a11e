"""Routers on big inputs: many rules, a long prompt or chat history, many intent examples.
Growth is shown by counting work (normalizations, token estimates, embedding calls, rows
reaching the Python vote), never by timing it."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from aieng_hookspecs.types import Message, Request
from aieng_router import (
    BackendProfile,
    CostOptions,
    CostRouter,
    IntentClassifier,
    IntentOptions,
    IntentRouter,
    Rule,
    RuleOptions,
    RuleRouter,
    _cost,
    _intent,
    _rules,
    knn_vote,
)
from hypothesis import given, settings
from hypothesis import strategies as st


def ask(text: str, history: int = 0) -> Request:
    """A request whose last user message is ``text``, after ``history`` earlier turns."""
    turns = [Message("user" if i % 2 == 0 else "assistant", f"turn {i}")
             for i in range(history)]
    return Request(messages=(*turns, Message("user", text)))


class CountingNormalize:
    """``unicodedata`` as ``_rules`` sees it, counting ``normalize`` calls."""

    def __init__(self) -> None:
        self.calls = 0

    def normalize(self, form: Any, text: str) -> str:
        self.calls += 1
        return unicodedata.normalize(form, text)


def rule_router(count: int) -> RuleRouter:
    """``count`` rules that never match (a pattern, a token floor), then a default."""
    rules = tuple(Rule(name=f"r{i}", target="large", pattern=f"never{i}", min_tokens=1)
                  for i in range(count))
    return RuleRouter(RuleOptions(rules=rules, default="small"))


@pytest.mark.parametrize("count", [10, 40])
def test_the_prompt_is_normalized_once_per_request_not_once_per_rule(
        monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """A non-ASCII prompt is put in NFC once and folded (NFKC) once per request, whatever
    the number of rules: with 1,000 rules a 1 MB prompt was normalized 2,000 times."""
    router = rule_router(count)  # patterns compiled (and normalized) here, not counted
    counter = CountingNormalize()
    monkeypatch.setattr(_rules, "unicodedata", counter)
    found = router.aieng_route(ask("café\u200b " * 1000), ["small", "large"])
    assert found is not None and found.target == "small"
    assert counter.calls == 2  # NFC of the text, NFKC of its fold


@pytest.mark.parametrize("count", [10, 40])
def test_the_token_estimate_runs_once_per_request(monkeypatch: pytest.MonkeyPatch,
                                                  count: int) -> None:
    """Rules on the token estimate sum a long chat history once per request, not once per
    rule (10k turns × 1,000 rules was 10 million lengths)."""
    calls: list[int] = []
    original = _rules.estimate_tokens

    def counting(request: Request, chars_per_token: float = 4.0) -> int:
        calls.append(len(request.messages))
        return original(request, chars_per_token)

    monkeypatch.setattr(_rules, "estimate_tokens", counting)
    rules = tuple(Rule(target="large", min_tokens=10**9) for _ in range(count))
    router = RuleRouter(RuleOptions(rules=rules, default="small"))
    found = router.aieng_route(ask("hello", history=500), ["small", "large"])
    assert found is not None and found.target == "small"
    assert calls == [501]


def test_the_cost_router_estimates_the_prompt_once_for_every_candidate(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranking 20 profiled candidates walks the messages once, not once per candidate;
    the costs are those :meth:`CostRouter.estimate` gives alone."""
    names = [f"b{i}" for i in range(20)]
    router = CostRouter(CostOptions(backends={
        name: BackendProfile(price_in=1 + i, price_out=2) for i, name in enumerate(names)}))
    request = ask("x" * 400, history=300)
    alone = {name: router.estimate(request, name).cost for name in names}
    original = _cost.estimate_tokens
    calls = 0

    def counting(request: Request, chars_per_token: float = 4.0) -> int:
        nonlocal calls
        calls += 1
        return original(request, chars_per_token)

    monkeypatch.setattr(_cost, "estimate_tokens", counting)
    ranked = router.rank(request, names)
    assert calls == 1
    assert [e.backend for e in ranked] == names
    assert {e.backend: e.cost for e in ranked} == alone


class CountingEmbedder:
    """Embeds each text as a small vector from its number; records every call's size."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, texts: Sequence[str], model: str | None) -> list[list[float]]:
        self.calls.append(len(texts))
        return [[1.0, float(int(t.split()[-1]) % 7), float(len(t))] for t in texts]


@pytest.mark.anyio
async def test_the_intent_examples_are_embedded_in_batches() -> None:
    """1,000 examples are embedded ``embed_batch`` texts per call (an embedding server
    caps one request's texts; each call has the stage's timeout), and the rows are the
    same as one call gives."""
    examples = {"a": [f"alpha {i}" for i in range(600)],
                "b": [f"beta {i}" for i in range(400)]}
    batched = CountingEmbedder()
    router = IntentRouter(IntentOptions(routes={"a": "x", "b": "y"}, examples=examples,
                                        embed_batch=64), embedder=batched)
    classifier = await router.prepare()
    assert max(batched.calls) == 64 and sum(batched.calls) == 1000
    assert len(batched.calls) == 16
    whole = CountingEmbedder()
    one = IntentRouter(IntentOptions(routes={"a": "x", "b": "y"}, examples=examples,
                                     embed_batch=1000), embedder=whole)
    assert whole.calls == [] and np.array_equal((await one.prepare()).matrix,
                                                classifier.matrix)
    assert whole.calls == [1000]


@pytest.mark.anyio
async def test_batches_of_different_sizes_are_refused() -> None:
    """An embedder whose vectors change size between batches fails the opening, saying
    so (not a numpy error from stacking them)."""
    def shifting(texts: Sequence[str], model: str | None) -> list[list[float]]:
        size = 3 if texts[0].endswith(" 0") else 4
        return [[1.0] * size for _ in texts]

    router = IntentRouter(IntentOptions(routes={"a": "x"},
                                        examples={"a": [f"t {i}" for i in range(10)]},
                                        embed_batch=4), embedder=shifting)
    with pytest.raises(ValueError, match="different sizes: 3 and 4"):
        await router.prepare()


def old_rank(classifier: IntentClassifier, vector: Sequence[float]
             ) -> list[tuple[str, float, float]]:
    """The ranking as it was computed before (every row through the Python vote)."""
    query = np.asarray(vector, dtype=np.float64)
    norm = np.linalg.norm(query)
    query = query / norm if norm > 0 else query * 0.0
    similarities = (classifier.matrix @ query).tolist()
    ranked = knn_vote(similarities, classifier.labels, classifier.k)
    seen = {label for label, _, _ in ranked}
    best: dict[str, float] = {}
    for label, value in zip(classifier.labels, similarities):
        if label not in seen:
            best[label] = max(best.get(label, -2.0), value)
    rest = sorted(best.items(), key=lambda item: -item[1])
    return ranked + [(label, 0.0, value) for label, value in rest]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_the_ranking_equals_the_full_vote(data: st.DataObject) -> None:
    """Picking the k nearest in numpy ranks exactly as voting over every row did, ties
    (small integer vectors repeat similarities) included."""
    rows = data.draw(st.integers(0, 40))
    labels = data.draw(st.lists(st.sampled_from("abcde"), min_size=rows, max_size=rows))
    cells = st.integers(-2, 2).map(float)
    matrix = np.array(data.draw(st.lists(st.lists(cells, min_size=3, max_size=3),
                                         min_size=rows, max_size=rows)) or np.empty((0, 3)))
    matrix = _intent._unit_rows(matrix.tolist(), rows) if rows else np.empty((0, 3))
    classifier = IntentClassifier(labels, matrix, data.draw(st.integers(1, 8)))
    query = data.draw(st.lists(cells, min_size=3, max_size=3))
    assert classifier.rank(query) == old_rank(classifier, query)


def test_only_the_nearest_rows_reach_the_python_vote(monkeypatch: pytest.MonkeyPatch) -> None:
    """With 8,000 examples the vote sees the k nearest (plus ties), not all 8,000."""
    sizes: list[int] = []

    def counting(similarities: Sequence[float], labels: Sequence[str], k: int) -> Any:
        sizes.append(len(similarities))
        return knn_vote(similarities, labels, k)

    monkeypatch.setattr(_intent, "knn_vote", counting)
    rng = np.random.default_rng(0)
    for rows in (2000, 8000):
        matrix = _intent._unit_rows(rng.normal(size=(rows, 16)).tolist(), rows)
        labels = [f"l{i % 7}" for i in range(rows)]
        ranked = IntentClassifier(labels, matrix, 5).rank(rng.normal(size=16).tolist())
        assert {label for label, _, _ in ranked} == {f"l{i}" for i in range(7)}
    assert sizes == [5, 5]
