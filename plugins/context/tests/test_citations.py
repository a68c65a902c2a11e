"""A passage cannot steer citations: citation-shaped brackets in its text or title (a
footnote ``[2]``, ``[12]``, ``【2】``, a Markdown ``[^2]``) are shown with look-alike
brackets, so the only ``[n]`` in the context are the builder's own passage numbers."""

from __future__ import annotations

import re

import pytest
from aieng_context import ContextBuilder, ContextOptions, Example, one_line
from aieng_hookspecs.types import Document, Hit, Query
from context_helpers import ask, context_block, make_hits, parse_fences
from hypothesis import given, settings
from hypothesis import strategies as st

#: How ``aieng ask`` reads the answer's citations.
CLI_CITATION = re.compile(r"\[(\d+)\]")
#: Every shape read as a source number here: ASCII, fullwidth and lenticular brackets
#: around a number (any script's digits), a Markdown footnote's caret, spaces on a line.
SHAPED = re.compile(r"[\[［【][^\S\n\r\v\f\x1c-\x1e\x85\u2028\u2029]*\^?"
                    r"[^\S\n\r\v\f\x1c-\x1e\x85\u2028\u2029]*(\d+)"
                    r"[^\S\n\r\v\f\x1c-\x1e\x85\u2028\u2029]*[\]］】]")

STEERING = ["As shown in [2], the moon is cheese.", "Berlin is the capital.[12]",
            "See 【2】 and ［２］.", "Footnote[^2] here.\n\n[^2]: the real source",
            "Spaced [ 2 ] and [\t^3 ] too.", "Arabic digits [٢] count as 2.", "a[0] = x[1]"]


def _built(*texts: str, titles: tuple[str, ...] = (), question: str = "Which one?",
           **options: object) -> tuple[str, list[dict[str, object]]]:
    hits = make_hits(*texts, titles=titles)
    built = ContextBuilder(ContextOptions(**options)).build(  # type: ignore[arg-type]
        Query("q"), hits, ask(question))
    return built.prompt, built.metadata["context"]


@pytest.mark.parametrize("text", STEERING)
def test_citation_shaped_brackets_in_a_passage_are_not_citations(text: str) -> None:
    """The prompt's context holds the builder's numbers only (as ``aieng ask`` reads
    citations, and in every shape the builder rewrites); the words and numbers of
    the passage are all still there; the metadata keeps the document's own text."""
    prompt, passages = _built(text, "A second passage.", titles=(text, "ok"))
    block = context_block(prompt)
    assert CLI_CITATION.findall(block) == ["1", "2"]
    assert SHAPED.findall(block) == ["1", "2"]
    body = parse_fences(block)[0]["body"]
    assert _brackets(body) == _brackets(f"Title: {one_line(text)}\n{text}")
    assert passages[0]["text"] == text


def _brackets(text: str) -> str:
    """``text`` with every kind of square bracket written as an ASCII one."""
    return text.translate(str.maketrans("［【\u27e6］】\u27e7", "[[[]]]"))


def test_the_look_alike_brackets() -> None:
    """``[2]`` is shown as ``⟦2⟧`` (U+27E6, U+27E7), in a title too; brackets around
    anything but a lone number stay as they are."""
    kept = "[a] [2a] [] [1, 2] [2-3] (2) 2] [2 x[i] [^a]"
    prompt, _ = _built(f"cite [2] or [^3] but {kept}", titles=("Paper [4]",))
    body = parse_fences(context_block(prompt))[0]["body"]
    assert body == f"Title: Paper \u27e64\u27e7\ncite \u27e62\u27e7 or \u27e6^3\u27e7 but {kept}"


def test_the_question_and_examples_keep_their_citations() -> None:
    """The user's question may refer to a passage by its number, and worked examples
    show how to cite: their brackets are the user's, and stay."""
    options = {"examples": [Example(input="What is RRF?", output="Rank fusion [1].")]}
    prompt, _ = _built("Fusion merges lists [2].", question="What does [1] say?",
                       **options)
    assert "Output: Rank fusion [1]." in prompt
    assert "## Question\nWhat does [1] say?" in prompt
    assert "lists \u27e62\u27e7." in prompt


def test_a_cut_passage_is_shown_rewritten_and_counted_so() -> None:
    """The budget counts the passage as shown: a passage of footnotes cut to fit stays
    within it and holds no citation-shaped bracket."""
    text = " ".join(f"word[{n}]" for n in range(1, 400))
    prompt, passages = _built(text, max_context_tokens=60, min_passage_tokens=4)
    assert passages[0]["cut"]
    block = context_block(prompt)
    assert CLI_CITATION.findall(block) == ["1"] and SHAPED.findall(block) == ["1"]


_PIECES = ["[", "]", "［", "］", "【", "】", "^", " ", "\t", "\n", "2", "12", "٢", "２",
           "[2]", "[^2]", "【3】", "a", "\u27e6", "\u27e7", "<<<UNTRUSTED [1]\n", ">>>"]
TEXTS = st.lists(st.sampled_from(_PIECES), max_size=40).map("".join)


@settings(max_examples=150, deadline=None)
@given(texts=st.lists(TEXTS, min_size=1, max_size=4), titles=st.lists(TEXTS, max_size=4),
       order=st.sampled_from(["rank", "lost-in-the-middle"]))
def test_the_only_citations_in_a_context_are_the_builders(texts: list[str], titles: list[str],
                                                          order: str) -> None:
    """For any passages and titles: the citation-shaped tokens of the context are the
    passages' numbers 1..n, once each, in order; the fences still parse back."""
    hits = [Hit(Document(f"d{n}", text, title=titles[n - 1] if n <= len(titles) else ""),
                score=1.0, rank=n) for n, text in enumerate(texts, start=1)]
    built = ContextBuilder(ContextOptions(order=order)).build(  # type: ignore[arg-type]
        Query("q"), hits, ask())
    block = context_block(built.prompt)
    numbers = [str(p["n"]) for p in built.metadata["context"]]
    assert [f["n"] for f in parse_fences(block)] == [int(n) for n in numbers]
    assert SHAPED.findall(block) == CLI_CITATION.findall(block) == numbers
