"""``multi-query`` and ``hyde`` on their own, over a scripted backend: what they ask, and
what they make of the answers."""

from __future__ import annotations

from typing import Any

import pytest
from aieng_expansion import (
    HyDEExpander,
    HyDEOptions,
    MultiQueryExpander,
    MultiQueryOptions,
    passage,
    rewrites,
)
from aieng_hookspecs.types import Query
from hypothesis import given
from hypothesis import strategies as st

from aieng_core.testing import ScriptedBackend

# -- parsing -----------------------------------------------------------------------------


def test_rewrites_strip_markers_quotes_and_preambles() -> None:
    """Numbered, bulleted, labelled and quoted lines become bare rewrites; a preamble, a
    blank line, a repeat and the original query are dropped."""
    answer = ("Here are three rewrites:\n"
              "1. boil noodles time\n"
              "\n"
              "- \"pasta cooking duration\"\n"
              "Query 3: How long to cook pasta?\n"
              "* Boil Noodles   Time\n"
              "2) 3.5 minutes al dente\n")
    assert rewrites(answer, "how long to cook pasta?", limit=5, max_chars=100) == [
        "boil noodles time", "pasta cooking duration", "3.5 minutes al dente"]


def test_rewrites_keep_words_that_only_start_like_a_label() -> None:
    """A rewrite starting with a hyphenated word or a version number is kept whole: only a
    label followed by a space (``Query 2: ``, ``Question - ``) is a marker."""
    answer = ("Question-answering benchmarks\n"
              "Version 2.0 release notes\n"
              "Query-based retrieval\n"
              "Question - open-domain QA datasets\n")
    assert rewrites(answer, "qa", limit=5, max_chars=100) == [
        "Question-answering benchmarks", "Version 2.0 release notes",
        "Query-based retrieval", "open-domain QA datasets"]


def test_rewrites_skip_lines_without_words() -> None:
    """A code fence, a rule or a lone marker around the list is no query: it neither
    becomes an expansion nor takes the place of a rewrite."""
    answer = ("```\n"
              "1. How does BM25 rank documents?\n"
              "---\n"
              "2. \"Okapi BM25 ranking function\"\n"
              "* * *\n"
              "3) BM25 term weighting\n"
              "```\n")
    assert rewrites(answer, "bm25", limit=3, max_chars=100) == [
        "How does BM25 rank documents?", "Okapi BM25 ranking function",
        "BM25 term weighting"]


def test_rewrites_skip_fences_with_a_language_tag() -> None:
    """A code fence naming its language (```` ```text ````) is a fence, not a query."""
    answer = "```text\nboil noodles\npasta cooking time\n```\n~~~markdown\nspaghetti\n~~~"
    assert rewrites(answer, "pasta", limit=5, max_chars=100) == [
        "boil noodles", "pasta cooking time", "spaghetti"]


def test_rewrites_strip_markdown_bold_markers_and_preambles() -> None:
    """Small models embolden list markers, labels, whole rewrites and preambles; the bold
    goes with them."""
    answer = ("**Here are the rewrites:**\n"
              "1. **boil noodles**\n"
              "**2.** pasta cooking time\n"
              "**Query 3:** spaghetti boiling\n"
              "- **al dente** timing\n")
    assert rewrites(answer, "pasta", limit=5, max_chars=100) == [
        "boil noodles", "pasta cooking time", "spaghetti boiling", "al dente timing"]


@pytest.mark.parametrize("answer", [
    "The user wants rewrites. Let me vary it.\n</think>\n\nboil noodles\npasta timing",
    "<think>first</think>\nstill thinking\n</THINK>\nboil noodles\npasta timing",
])
def test_reasoning_before_a_lone_closing_think_tag_is_dropped(answer: str) -> None:
    """Reasoning models whose chat template opens the ``<think>`` block answer with only
    its closing tag: what comes before it is reasoning, neither rewrite nor passage."""
    assert rewrites(answer, "pasta", limit=5, max_chars=100) == ["boil noodles",
                                                                  "pasta timing"]
    assert passage(answer) == "boil noodles\npasta timing"


def test_rewrites_skip_lone_and_parenthesized_numbers() -> None:
    """A number alone on its line (the rewrite on the next) is no rewrite; ``(2)`` is a
    marker; a decimal number starts a rewrite."""
    answer = "1.\nboil noodles\n(2) pasta cooking time\n3)\n3.5 minutes al dente\n(4)"
    assert rewrites(answer, "pasta", limit=5, max_chars=100) == [
        "boil noodles", "pasta cooking time", "3.5 minutes al dente"]


def test_the_query_is_recognized_in_another_unicode_form() -> None:
    """The query typed decomposed (``e`` + combining accent) and repeated composed by the
    model is still the query, as are its full-width forms."""
    assert rewrites("caf\u00e9 hours\nＣＡＦＥ\u0301 HOURS\ncoffee shop times",
                    "cafe\u0301 hours", limit=5, max_chars=100) == ["coffee shop times"]


def test_rewrites_are_limited_and_cut() -> None:
    """At most ``limit`` rewrites, each at most ``max_chars`` characters; think blocks are
    ignored."""
    answer = "<think>\nfirst thoughts\n</think>\nalpha beta gamma\ndelta\nepsilon"
    assert rewrites(answer, "q", limit=2, max_chars=10) == ["alpha beta", "delta"]


@given(st.text(), st.text(), st.integers(1, 10))
def test_rewrites_never_repeat_the_query(answer: str, original: str, limit: int) -> None:
    """Whatever the answer, rewrites are distinct, non-blank, at most ``limit``, and none
    is the original query."""
    found = rewrites(answer, original, limit=limit, max_chars=50)
    keys = [" ".join(r.split()).casefold() for r in found]
    assert len(found) <= limit and all(r.strip() for r in found)
    assert len(set(keys)) == len(keys)
    assert " ".join(original.split()).casefold() not in keys


def test_passage_drops_labels_and_think_blocks() -> None:
    """A ``Passage:`` label and a think block are not part of the hypothetical document."""
    assert passage("<think>hmm</think>\nPassage: Pasta cooks in 10 minutes.  ") == \
        "Pasta cooks in 10 minutes."
    assert passage("   ") == ""
    assert passage("```text\nPasta cooks in 10 minutes.\n```") == "Pasta cooks in 10 minutes."


# -- multi-query -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_multi_query_returns_rewrites_with_the_querys_id_and_filters() -> None:
    """The backend is asked once for ``n`` rewrites; each becomes a query with the user's
    id and filters."""
    backend = ScriptedBackend(["boil noodles\npasta cooking time\nspaghetti boiling"])
    expander = MultiQueryExpander(MultiQueryOptions(n=2, model="m", temperature=0.3),
                                  generate=backend.aieng_generate)
    query = Query("how long to cook pasta", id="q7", filters={"lang": "en"})
    out = await expander.aieng_query_expand(query)
    assert out == [Query("boil noodles", id="q7", filters={"lang": "en"}),
                   Query("pasta cooking time", id="q7", filters={"lang": "en"})]
    [request] = backend.requests
    assert (request.model, request.temperature) == ("m", 0.3)
    assert "Write 2 different versions" in request.prompt
    assert "Query: how long to cook pasta" in request.prompt


@pytest.mark.anyio
async def test_a_chatty_answer_gives_all_n_slots_to_the_listed_rewrites() -> None:
    """A preamble and a closing remark around a numbered list take none of the ``n``
    slots; HyDE's bold ``**Passage:**`` label is not searched either."""
    chatty = ("Sure! Here are two alternative queries.\n\n"
              "1. **boil noodles**\n2. pasta cooking time\n\n"
              "Let me know if you need more!")
    backend = ScriptedBackend([chatty, "**Passage:** Pasta boils for ten minutes."])
    rewrite = MultiQueryExpander(MultiQueryOptions(n=2), generate=backend.aieng_generate)
    out = await rewrite.aieng_query_expand(Query("pasta"))
    assert [q.text for q in out or []] == ["boil noodles", "pasta cooking time"]
    out = await HyDEExpander(generate=backend.aieng_generate).aieng_query_expand(
        Query("pasta"))
    assert [q.text for q in out or []] == ["Pasta boils for ten minutes."]


@pytest.mark.anyio
@pytest.mark.parametrize("text", ["", "   \n"])
async def test_a_blank_query_is_not_expanded(text: str) -> None:
    """A blank query expands to nothing without asking the backend."""
    backend = ScriptedBackend(["x"])
    assert await MultiQueryExpander(generate=backend.aieng_generate).aieng_query_expand(
        Query(text)) is None
    assert await HyDEExpander(generate=backend.aieng_generate).aieng_query_expand(
        Query(text)) is None
    assert backend.requests == []


@pytest.mark.anyio
async def test_an_answer_without_rewrites_expands_to_nothing(
    captured_logs: list[dict[str, Any]]
) -> None:
    """An answer that only repeats the query gives no expansion, and says so in the log."""
    backend = ScriptedBackend(["Rewrites:\ncook pasta\n"])
    expander = MultiQueryExpander(generate=backend.aieng_generate)
    assert await expander.aieng_query_expand(Query("Cook  pasta")) is None
    assert [e["event"] for e in captured_logs] == ["expansion.empty"]


@pytest.mark.anyio
async def test_a_backend_error_is_raised() -> None:
    """A failing backend fails the expansion (the stage's policy decides the rest)."""
    backend = ScriptedBackend(fail_with=TimeoutError("slow"))
    with pytest.raises(TimeoutError):
        await MultiQueryExpander(generate=backend.aieng_generate).aieng_query_expand(
            Query("q"))


@pytest.mark.anyio
async def test_no_backend_outside_a_pipeline_is_an_error() -> None:
    """Without a generate function and before its pipeline opens, it says how to fix it."""
    with pytest.raises(RuntimeError, match="no backend"):
        await HyDEExpander().aieng_query_expand(Query("q"))


# -- hyde --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_hyde_expands_to_the_written_passage() -> None:
    """One request, greedy by default and without a seed; the passage is the query."""
    backend = ScriptedBackend(["Passage: Pasta is boiled in salted water for ten minutes."])
    out = await HyDEExpander(generate=backend.aieng_generate).aieng_query_expand(
        Query("how long to cook pasta", filters={"lang": "en"}))
    assert out == [Query("Pasta is boiled in salted water for ten minutes.",
                         filters={"lang": "en"})]
    [request] = backend.requests
    assert request.seed is None and request.temperature == 0.0
    assert "Question: how long to cook pasta" in request.prompt


@pytest.mark.anyio
async def test_hyde_writes_n_passages_with_seeds_and_drops_repeats() -> None:
    """``n`` requests with seeds 0..n-1; identical passages and empty ones count once or
    not at all."""

    def reply(request: object) -> str:
        seed = getattr(request, "seed", None)
        return {0: "Boil it ten minutes.", 1: "boil it  ten minutes.", 2: "  "}.get(
            seed, "Drain and serve.")

    backend = ScriptedBackend(reply)
    expander = HyDEExpander(HyDEOptions(n=4, temperature=0.8), generate=backend.aieng_generate)
    out = await expander.aieng_query_expand(Query("pasta"))
    assert out is not None
    assert [q.text for q in out] == ["Boil it ten minutes.", "Drain and serve."]
    assert sorted(r.seed for r in backend.requests if r.seed is not None) == [0, 1, 2, 3]


@pytest.mark.anyio
async def test_hyde_raises_a_failed_request_as_it_is() -> None:
    """When one of ``n`` concurrent requests fails, its own exception is raised (not an
    exception group)."""
    backend = ScriptedBackend(fail_with=ConnectionError("down"))
    expander = HyDEExpander(HyDEOptions(n=3, temperature=0.5), generate=backend.aieng_generate)
    with pytest.raises(ConnectionError, match="down"):
        await expander.aieng_query_expand(Query("pasta"))


def test_options_are_checked() -> None:
    """Out-of-range counts and temperatures are refused when the options are built."""
    with pytest.raises(ValueError, match="n must be from 1 to 10"):
        MultiQueryOptions(n=0)
    with pytest.raises(ValueError, match="temperature"):
        HyDEOptions(temperature=-1.0)
    with pytest.raises(TypeError, match="n must be an integer"):
        HyDEOptions(n=True)
