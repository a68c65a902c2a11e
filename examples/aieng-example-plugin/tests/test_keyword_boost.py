"""The ``keyword-boost`` reranker: the reranker conformance suite, then its own behaviour."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import aieng_example
import attrs
import pytest
from aieng_example import KeywordBoostOptions, KeywordBoostReranker
from aieng_hookspecs.types import Document, Hit, Query

from aieng_core import ConfigError, Kernel
from aieng_core.registry import PluginInfo
from aieng_core.testing.conformance import RerankerSuite

Register = Callable[..., AbstractContextManager[PluginInfo]]


class TestKeywordBoostConformance(RerankerSuite):
    """keyword-boost passes every check the kit makes of a reranker: its scores are each
    hit's own, and equal ones keep their incoming order."""

    pointwise_tolerance = 0.0
    stable_ties = True

    @pytest.fixture
    def component(self) -> KeywordBoostReranker:
        """The reranker under test, with its default options."""
        return KeywordBoostReranker(KeywordBoostOptions())


def _hits(*texts_and_scores: tuple[str, float]) -> list[Hit]:
    return [
        Hit(document=Document(id=f"d{i}", text=text), score=score, rank=i, source="bm25")
        for i, (text, score) in enumerate(texts_and_scores, start=1)
    ]


def test_phrase_beats_words_beats_nothing() -> None:
    """A hit with the exact phrase outranks one with only the words, which outranks neither."""
    hits = _hits(
        ("nothing relevant at all", 3.0),
        ("fusion of ranks, reciprocal", 2.0),
        ("we use reciprocal rank fusion here", 1.0),
    )
    reranked = KeywordBoostReranker().aieng_rerank(Query("reciprocal rank fusion"), hits, 10)
    assert [h.document.id for h in reranked] == ["d3", "d2", "d1"]
    # d3: 1.0 + 3 words + phrase 2.0; d2: 2.0 + "reciprocal", "fusion"; d1 unchanged.
    assert [h.score for h in reranked] == [6.0, 4.0, 3.0]
    assert [h.rank for h in reranked] == [1, 2, 3]
    assert all(h.source == "bm25" for h in reranked)


def test_cuts_to_k_and_keeps_ties_in_incoming_order() -> None:
    """Equal new scores keep the incoming order, and only the best k hits come back, ranked 1..k."""
    hits = _hits(("alpha", 1.0), ("beta", 1.0), ("gamma", 1.0), ("delta", 1.0))
    reranked = KeywordBoostReranker().aieng_rerank(Query("nothing matches"), hits, 2)
    assert [(h.document.id, h.rank) for h in reranked] == [("d1", 1), ("d2", 2)]


def test_stopwords_and_case_do_not_count() -> None:
    """Stopwords never earn a boost and matching ignores case and punctuation."""
    hits = _hits(("the of and to is", 1.0), ("Tokenizer, TOKENIZER!", 1.0))
    reranked = KeywordBoostReranker(KeywordBoostOptions(boost=1.0, phrase_bonus=0.0)) \
        .aieng_rerank(Query("what is the tokenizer"), hits, 5)
    assert [(h.document.id, h.score) for h in reranked] == [("d2", 2.0), ("d1", 1.0)]


def test_phrase_matches_whole_words_only() -> None:
    """The phrase bonus needs the query's words in sequence as whole words, not inside others."""
    reranker = KeywordBoostReranker(KeywordBoostOptions(boost=0.0, phrase_bonus=5.0))
    query = Query("rank fusion")
    inside, whole = _hits(("frank fusions", 0.0), ("Rank  fusion.", 0.0))
    assert reranker.bonus(query, inside) == 0.0
    assert reranker.bonus(query, whole) == 5.0


def test_options_validate() -> None:
    """Options reject negative, infinite and non-numeric values."""
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            KeywordBoostOptions(boost=bad)
    with pytest.raises(TypeError):
        KeywordBoostOptions(phrase_bonus="2")  # type: ignore[arg-type]
    assert attrs.asdict(KeywordBoostOptions()) == {"boost": 1.0, "phrase_bonus": 2.0}


PIPELINE: dict[str, Any] = {
    "pipeline": {"name": "boosted", "stages": ["retrieve", "rerank"]},
    "stage": {"retrieve": {"k": 10}, "rerank": {"k": 2}},
    "components": {
        "docs": {"use": "memory"},
        "boost": {"use": "keyword-boost", "boost": 0.0, "phrase_bonus": 100},
    },
}


@pytest.mark.anyio
async def test_runs_in_a_pipeline(aieng_kernel: Kernel, register_plugin: Register) -> None:
    """Registered through its plugin module, keyword-boost reorders a pipeline's retrieved hits."""
    with register_plugin(aieng_example, "example") as info:
        assert info.status == "loaded"
        assert info.components == ("keyword-boost",)
        assert "aieng_rerank" in info.hooks
        pipeline = aieng_kernel.pipeline(PIPELINE)
        await pipeline.index([
            Document(id="a", text="search search search, then hybrid"),
            Document(id="b", text="hybrid search is one idea among many other ideas worth a look"),
            Document(id="c", text="nothing to see"),
        ])
        result = await pipeline.run("hybrid search")
    # BM25 favours the repeated term; only b holds the phrase "hybrid search".
    assert [h.document.id for h in result.retrieved] == ["a", "b"]
    assert [(h.document.id, h.rank) for h in result.hits] == [("b", 1), ("a", 2)]
    assert result.hits[0].score == pytest.approx(result.retrieved[1].score + 100)


@pytest.mark.anyio
async def test_pipeline_options_are_typed(aieng_kernel: Kernel, register_plugin: Register) -> None:
    """A pipeline giving keyword-boost an unknown option or a string fails to load, naming the key.
    """
    with register_plugin(aieng_example, "example"):
        bad = {**PIPELINE, "components": {**PIPELINE["components"],
                                          "boost": {"use": "keyword-boost", "boots": 1.0}}}
        with pytest.raises(ConfigError, match=r"components\.boost\.boots.*valid choices: boost"):
            aieng_kernel.pipeline(bad)
        bad["components"]["boost"] = {"use": "keyword-boost", "boost": "high"}
        with pytest.raises(ConfigError, match=r"components\.boost"):
            aieng_kernel.pipeline(bad)
