"""One rule for every verdict: the last one counts (a judge that corrects itself ends with
its verdict), and an answer giving two verdicts at once (``yes and no``) or a score that is
no whole number (``4 1/2``) is a parse error fed back on the retry, never read as its first
word or digit."""

from __future__ import annotations

import pytest
from aieng_judge import JudgeParseError, parse_score, parse_support
from hypothesis import given
from hypothesis import strategies as st


@pytest.mark.parametrize(("text", "supported"), [
    ("Supported: no. Supported: yes", True),
    ("Supported: yes. Supported: no", False),
    ("Supported: yes\nOn reflection the date differs. Supported: no", False),
    ("Supported: no\n\nWait, the second passage says 1990.\nSupported (yes/no): yes", True),
    ("Yes. Looking again, Supported: no", False),
])
def test_the_last_labelled_support_verdict_counts(text: str, supported: bool) -> None:
    """As for scores and winners: the last labelled ``Supported: ...`` is the verdict."""
    assert parse_support(text)[0] is supported


@given(st.lists(st.booleans(), min_size=1, max_size=6),
       st.sampled_from(["\n", ". ", "; then ", "\n\nOn reflection, "]))
def test_support_reads_the_last_of_any_labelled_sequence(
        verdicts: list[bool], separator: str) -> None:
    """Whatever verdicts come before, the last one written is read."""
    text = separator.join(f"Supported: {'yes' if v else 'no'}" for v in verdicts)
    assert parse_support(text)[0] is verdicts[-1]


@pytest.mark.parametrize("text", [
    "yes and no",
    "Yes and no: the context gives the year but not the place.",
    "Yes or no",
    "yes/no",
    "Yes / No",
    "No and yes",
    "yes & no",
    "Yes, and no.",
    "true or false",
    "Supported: yes and no",
    "Supported: yes/no",
    "Supported (yes/no): no or yes",
])
def test_yes_and_no_at_once_is_no_verdict(text: str) -> None:
    """Both answers at once name no verdict: an error for the retry, never read as its
    first word (``yes and no`` was read as a supported claim)."""
    with pytest.raises(JudgeParseError, match="both"):
        parse_support(text)


@pytest.mark.parametrize(("text", "supported"), [
    ("Yes, and no other passage contradicts it.", True),
    ("No, and nothing in the context suggests so.", False),
    ("Yes, no doubt.", True),
    ("No. The context says 1990.", False),
    ("yes", True),
    ("Supported: no, and no passage mentions it", False),
])
def test_a_verdict_followed_by_prose_still_reads(text: str, supported: bool) -> None:
    """"no" before a word is the determiner (``and no other passage``), not a verdict."""
    assert parse_support(text)[0] is supported


@pytest.mark.parametrize("text", [
    "Score: 4 1/2",
    "Score: 4 1/2.",
    "score of 3 1/2",
    "Rating: 4 1/2 / 5",
    "Score: 4 1/2 out of 5",
    "Score: 4 3/4",
    "Score: 4 ½",
    "Score: 4 and 1/2",
    "Score: 4 and a half",
    "Rating: [[4 1/2]]",
    "Score: 3\n\nOn reflection, the final score: 4 1/2",
])
def test_a_mixed_number_is_no_whole_score(text: str) -> None:
    """``4 1/2`` is four and a half: an error, not a 4."""
    with pytest.raises(JudgeParseError, match="whole number"):
        parse_score(text, 1, 5)


@pytest.mark.parametrize(("text", "score"), [
    ("Score: 4, since it covers every part", 4),
    ("Score: 4 (1/2 point off for style)", 4),
    ("Score: 4\n1/2 of the claims were checked", 4),
    ("Score: 4 out of 5", 4),
    ("Score: 4 / 5", 4),
    ("Score: 4 and 5 would need sources", 4),
])
def test_a_whole_score_before_other_numbers_still_reads(text: str, score: int) -> None:
    """A fraction in a parenthesis or on the next line is not part of the score."""
    assert parse_score(text, 1, 5)[0] == score


@pytest.mark.parametrize("text", [
    "Yes. No.",
    "No. Yes.",
    "Yes.\nNo",
    "**Yes**.\n\n**No**",
    "yes; no",
    "True! False.",
    "No.\nYes, the passage gives 1990.",
])
def test_unlabelled_yes_then_no_is_no_verdict(text: str) -> None:
    """Two bare verdicts one sentence (or line) after the other, neither labelled, are a
    parse error fed back on the retry (``Yes. No.`` was read as its first word)."""
    with pytest.raises(JudgeParseError, match="both yes and no"):
        parse_support(text)


@pytest.mark.parametrize(("text", "supported"), [
    ("Yes. No passage contradicts it.", True),
    ("Yes. Yes.", True),
    ("No.\nNo contradiction would change that.", False),
    ("Yes. Looking again: Supported: no", False),
])
def test_a_second_sentence_that_is_no_opposite_verdict_still_reads(
        text: str, supported: bool) -> None:
    """"No" before a word is the determiner, the same verdict twice is one, and a labelled
    verdict after it is the final word."""
    assert parse_support(text)[0] is supported
