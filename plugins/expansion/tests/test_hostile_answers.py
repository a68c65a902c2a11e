"""A model's answer is untrusted text: runs of blanks crafted (or degenerated into) against
the label patterns must not hang the parsing."""

from __future__ import annotations

import re

import pytest
from aieng_expansion import _parse, passage, rewrites
from hypothesis import given
from hypothesis import strategies as st

from aieng_core.testing import hang_guard

# The patterns before their blanks were made possessive: the reference for what they match.
_OLD_LABEL = re.compile(rf"^\s*{_parse._LABELS}\s*#?\d*\s*[:.)-](?:\s+|$)", re.IGNORECASE)
_OLD_PASSAGE_LABEL = re.compile(
    r"^\s*(?:#{1,6}[ \t]*)?[*_]{0,2}[ \t]*(?:hypothetical[ \t]+)?(?:passage|document|answer)"
    r"[ \t]*[*_]{0,2}[ \t]*(?::[ \t]*[*_]{0,2}|(?=\n))\s*",
    re.IGNORECASE)


BLANKS = " " * 100_000


@pytest.mark.parametrize("answer", [
    "query" + BLANKS + "x",
    "Rewrite" + BLANKS + "#" + BLANKS + "x",
    "1. search" + BLANKS + "query" + BLANKS + "x",
])
def test_a_long_blank_run_after_a_label_is_read_in_one_pass(answer: str) -> None:
    """A line of 100,000 blanks after a label word (the label pattern split the run between
    its two ``\\s*`` in every way: quadratic, minutes for such a line) is one rewrite."""
    with hang_guard():
        found = rewrites(answer, "q", limit=3, max_chars=50)
    assert len(found) == 1
    assert found[0].endswith("x")


@pytest.mark.parametrize("answer", [
    "## " + BLANKS + "**" + BLANKS + "x",
    "passage" + "\t" * 100_000 + "x",
    "**Answer" + BLANKS + "**" + BLANKS + "x",
])
def test_a_long_blank_run_around_a_passage_label_is_read_in_one_pass(answer: str) -> None:
    """Blank runs around bold marks or after a label word (each split between adjacent
    ``[ \\t]*`` in every way: quadratic, minutes for these answers) are kept as text: no
    label is removed, since none ends in ``:``."""
    with hang_guard():
        text = passage(answer)
    assert text == answer.strip()


_PIECES = st.sampled_from(["query", "rewrite", "search ", "passage", "answer", "hypothetical",
                           "#", "##", "*", "**", "_", " ", "\t", "\n", "1", "2", ":", ".",
                           ")", "-", "x"])


@given(st.lists(_PIECES, max_size=12).map("".join))
def test_the_possessive_patterns_match_what_they_did(text: str) -> None:
    """Possessive blanks change no match: each pattern matches the same span as before."""
    for new, old in ((_parse._LABEL, _OLD_LABEL), (_parse._PASSAGE_LABEL, _OLD_PASSAGE_LABEL)):
        found, expected = new.search(text), old.search(text)
        assert (found and found.span()) == (expected and expected.span())
