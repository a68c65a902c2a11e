"""User text never reaches tantivy's query parser: any string searches as plain words."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from aieng_bm25 import MEMORY, BM25Index, BM25Options
from aieng_hookspecs.types import Document, Hit
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aieng_core.testing import strategies as aist
from aieng_core.testing.conformance import TRICKY_QUERIES

#: Strings that break a search engine that parses its input: tantivy's query syntax
#: (fields, phrases, boolean and prefix operators, boosts, ranges, regexes, escapes), lone
#: operators, control characters, lone surrogates, non-ASCII, and very long input.
NASTY = (
    *TRICKY_QUERIES,
    "AND", "OR", "NOT", "AND OR NOT", "a AND", "OR b", "NOT NOT", "+", "-", "!", "^", "~",
    "*", "?", "\\", "/", "{", "}", "[", "]", "(", ")", ":", '"', "'", "`", "&&", "||",
    "+wing -slipstream", "!flow", "wing^3", "wing^", "^^^", "flow~2", "flo*", "fl?w", "w\\",
    "/reg.*ex/", "title:", ":wing", "text:flow", "nosuchfield:x", "id:1", "metadata:{}",
    'title:"', '"wing', 'wing"', '""', '"a" "b" "', "((((wing", "wing))))", "(a) AND (b",
    "[a TO b]", "{a TO b}", "[* TO *]", "IN [a b]", "wing AND (flow OR \"heat", "\\\"",
    "\u0000", "\ud800", "x\udfffy", "\u200b", "\ufeffwing", "𝔴𝔦𝔫𝔤", "ΑΕΡΟΔΥΝΑΜΙΚΗ", "空気力学",
    "مرحبا", "🛩️✈️", "e\u0301", "İstanbul", "ß", "ﬁ", "\t\n\r\x0b\x0c", " " * 5_000,
    "x" * 10_000, "wing " * 2_000, "wing:" * 2_000, "(" * 5_000, "\"" * 10_000,
    "".join(chr(c) for c in range(32, 127)) * 100,
)

CORPUS = (
    Document("wing", "Experimental investigation of the aerodynamics of a wing in a "
             "slipstream.", title="Wing in a slipstream"),
    Document("heat", "Heat conduction in composite slabs, solved so far.", title="Heat"),
    Document("syntax", 'Query syntax like title:(foo OR "bar") AND -baz* is plain text '
             "here: title, foo, bar and baz are words.", title="Query syntax"),
    Document("greek", "ΑΕΡΟΔΥΝΑΜΙΚΗ πτέρυγα and 空気力学 are aerodynamics.", title="Other scripts"),
    Document("accents", "A naïve café façade in Zürich.", title="Accents",
             metadata={"lang": "fr"}),
)


@pytest.fixture(scope="module")
def index() -> Iterator[BM25Index]:
    """A small index in memory, shared by the tests of this module (they only read)."""
    built = BM25Index(BM25Options(path=MEMORY))
    built.add(CORPUS)
    yield built


def check(hits: object, k: int) -> list[Hit]:
    """Well-formed hits: a list of at most k, ranks 1..n, scores finite, not increasing,
    each an indexed document with its text, source bm25."""
    assert isinstance(hits, list) and len(hits) <= k
    known = {d.id: d for d in CORPUS}
    for rank, hit in enumerate(hits, start=1):
        assert isinstance(hit, Hit) and hit.rank == rank and hit.source == "bm25"
        assert hit.document == known[hit.document.id]
    for before, after in itertools.pairwise(hits):
        assert before.score >= after.score
    return hits


@pytest.mark.parametrize("text", NASTY, ids=lambda t: repr(t[:20]))
def test_nasty_strings_search_as_text(index: BM25Index, text: str) -> None:
    """Each nasty string (query syntax, lone operators, control characters, surrogates,
    10 kB of text) returns well-formed hits or an empty list, never an error."""
    check(index.search(text, 5), 5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(st.text(), st.sampled_from(NASTY),
                      st.lists(st.sampled_from(NASTY), max_size=4).map(" ".join),
                      st.text(alphabet=st.characters(codec="ascii"))),
       k=st.integers(min_value=1, max_value=20))
@example(text="wing AND (", k=3)
def test_any_string_searches(index: BM25Index, text: str, k: int) -> None:
    """Any string at all gives at most k well-formed hits, never an exception."""
    check(index.search(text, k), k)


@settings(max_examples=100, deadline=None)
@given(text=st.one_of(st.text(max_size=40), st.sampled_from(NASTY[:60])),
       filters=st.dictionaries(st.text(max_size=8), aist.json_values(), max_size=3))
def test_any_filters_search(index: BM25Index, text: str, filters: dict[str, object]) -> None:
    """Any JSON filters with any text give well-formed hits, never an exception."""
    check(index.search(text, 5, filters), 5)


@pytest.mark.parametrize("text", [
    'title:(foo OR "bar") AND -baz*', "title:foo", "+foo -bar", "foo^2 bar~1", '"foo bar"',
])
def test_query_syntax_is_searched_as_words(index: BM25Index, text: str) -> None:
    """Operators and field prefixes are not interpreted: their words are searched, so the
    document that contains them as words is found (a parsed ``-bar`` would exclude it)."""
    assert [h.document.id for h in index.search(text, 1)] == ["syntax"]


@pytest.mark.parametrize("text", ["", " ", "\n\t ", "AND", "OR NOT", "the of and", "!?*",
                                  "x" * 10_000, "\ud800"])
def test_no_searchable_word_gives_no_hits(index: BM25Index, text: str) -> None:
    """Empty and whitespace-only text, stopwords alone (``AND``, ``OR``, ``NOT`` are the
    stopwords and, or, not), punctuation, a 10 kB word and a lone surrogate give []."""
    assert index.search(text, 5) == []


def test_non_ascii_is_searchable(index: BM25Index) -> None:
    """Greek, Japanese and accented words are indexed and found; accents fold (naive =
    naïve), and case folds in any script."""
    assert index.search("αεροδυναμικη", 1)[0].document.id == "greek"
    assert index.search("空気力学", 1)[0].document.id == "greek"
    assert index.search("NAIVE cafe zurich", 1)[0].document.id == "accents"


def test_long_query_is_searched(index: BM25Index) -> None:
    """A 10 kB query of many words still ranks the right document first."""
    text = ("slipstream " + "zzz " * 3_000)[:10_000]
    assert index.search(text, 1)[0].document.id == "wing"


def test_analysis_is_english(index: BM25Index) -> None:
    """Words are lower-cased, stemmed (Porter2) and stopwords dropped, the same at
    indexing and at query time."""
    assert index.terms("The Investigations of Slipstreams AND flows") == [
        "investig", "slipstream", "flow"]
    assert index.search("investigating slipstreams", 1)[0].document.id == "wing"
