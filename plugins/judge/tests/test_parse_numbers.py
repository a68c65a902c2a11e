"""Scores written in a form the parser cannot read as one whole number: a decimal comma
(``4,5``), an exponent (``1e1``), a vulgar fraction (``4½``) or a range (``3-4``). Each is
an error fed back on the retry, never the number's first digits (``4,5`` read as 4) nor its
digits after the comma (``4,5/5`` read as 5)."""

from __future__ import annotations

import pytest
from aieng_judge import JudgeParseError, parse_score, parse_support, parse_winner


@pytest.mark.parametrize("text", [
    "Score: 4,5",
    "score of 4,5",
    "Rating: 4,5/5",
    "Score: 1e1",
    "Score: 2E0",
    "Score: 4½",
    "Score: 3-4",
    "Score: 3–4",
    "Score: 3\n\nOn reflection, the final score: 4,5",
])
def test_a_score_that_is_not_one_whole_number_is_refused(text: str) -> None:
    """The labelled score is named in the error; an earlier in-range score is not used."""
    with pytest.raises(JudgeParseError, match="whole number"):
        parse_score(text, 1, 5)


@pytest.mark.parametrize("text", [
    "answer is 4,5/5",
    "4,5/5",
    "the result: 4,5 out of 5",
])
def test_a_decimal_comma_fraction_is_not_read_from_its_decimals(text: str) -> None:
    """``4,5/5`` is four and a half out of five: not a 5 out of 5."""
    with pytest.raises(JudgeParseError):
        parse_score(text, 1, 5)


@pytest.mark.parametrize(("text", "score"), [
    ("Score: 4, since it covers every part", 4),
    ("Score: 4,\nbecause", 4),
    ("Score: 4, 5 would need more detail", 4),
    ("Score: 4 - a good answer", 4),
    ("Score: 4.", 4),
    ("Score: 4.0/5", 4),
    ("Rating: 3/5, 4/5 would need sources", 3),
    ("The answer gets 4/5.", 4),
    ("Score: 1, even", 1),
])
def test_a_comma_or_dash_after_the_score_still_reads(text: str, score: int) -> None:
    """Punctuation after the number (a comma and a space, a spaced dash) ends it."""
    assert parse_score(text, 1, 5)[0] == score


@pytest.mark.parametrize("text", [
    "Supported: partially",
    "Supported: unclear, the context does not say",
    "Supported = maybe",
    "Supported? Partly.",
])
def test_a_labelled_support_other_than_yes_or_no_is_no_verdict(text: str) -> None:
    """``Supported: partially`` starts with the word "supported" but says no yes: an error
    for the retry, not a supported claim counted in ``factual.consistency``."""
    with pytest.raises(JudgeParseError):
        parse_support(text)


@pytest.mark.parametrize(("text", "supported"), [
    ("Supported.", True),
    ("Supported", True),
    ("Supported, the context states it.", True),
    ("Supported: yes", True),
    ("Supported? No", False),
    ("Unsupported: the context says 1990.", False),
])
def test_support_verdicts_still_read(text: str, supported: bool) -> None:
    assert parse_support(text)[0] is supported


@pytest.mark.parametrize("text", [
    "Winner: A or B",
    "Winner: A/B",
    "The better answer is A and B",
    "Verdict: B or A, hard to say",
])
def test_a_winner_naming_both_answers_is_no_verdict(text: str) -> None:
    """``Winner: A or B`` names no single answer: an error, not A's win."""
    with pytest.raises(JudgeParseError):
        parse_winner(text)


@pytest.mark.parametrize(("text", "winner"), [
    ("Winner: B (not A)", "b"),
    ("Winner: A. B is too long.", "a"),
    ("Winner: A, because B is wrong", "a"),
    ("Winner: tie or close to it", "tie"),
    ("Answer A is better and B is wordier", "a"),
])
def test_winner_verdicts_still_read(text: str, winner: str) -> None:
    assert parse_winner(text)[0] == winner
