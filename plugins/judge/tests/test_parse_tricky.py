"""Verdicts that read as something else: an article ``a`` taken for answer A, a labelled
``Supported? No`` taken for yes, a score out of another scale written in words."""

from __future__ import annotations

import pytest
from aieng_judge import JudgeParseError, parse_score, parse_support, parse_winner


@pytest.mark.parametrize(("text", "winner"), [
    ("The verdict is a tie.", "tie"),
    ("Winner: a tie", "tie"),
    ("My choice is a tie between them.", "tie"),
    ("Output A is better. The verdict is a tie after all.", "tie"),
    ("Both have merit; the verdict is a draw.", "tie"),
    ("The winner is: **B**", "b"),
    ("the winner is a", "a"),
    ("Winner: A because it is right.", "a"),
    ("Verdict: [[A]]", "a"),
])
def test_the_article_a_is_not_answer_a(text: str, winner: str) -> None:
    """``a`` before a word is an article: "the verdict is a tie" is a tie, not A's win."""
    assert parse_winner(text)[0] == winner


def test_an_article_before_prose_is_no_verdict() -> None:
    """"The verdict is a clear call" names no answer: an error for the retry, not A."""
    with pytest.raises(JudgeParseError, match="no verdict"):
        parse_winner("Hard to say; the verdict is a close call.")


@pytest.mark.parametrize(("text", "supported"), [
    ("Supported? No.", False),
    ("Supported - no", False),
    ("Supported — No, the context says otherwise.", False),
    ("Supported (yes/no): no", False),
    ("Supported (yes or no): yes", True),
    ("Supported?\nNo", False),
    ("Supported: **No**", False),
    ("Supported.", True),
])
def test_labelled_support_reads_the_answer_after_the_label(text: str, supported: bool) -> None:
    """``Supported? No`` is a no: the label is not the answer."""
    assert parse_support(text)[0] is supported


@pytest.mark.parametrize(("text", "message"), [
    ("Score: 4 out of 10", "out of 5, got 4/10"),
    ("Rating: 2 out of 3.", "out of 5, got 2/3"),
    ("Score (0-10): 4", "out of 5, got 4/10"),
    ("Score (out of 10): 8", "out of 5, got 8/10"),
    ('{"score": "4 out of 10"}', "out of 5, got 4/10"),
    ("I rate it 4 out of 10.", "no score found"),
])
def test_a_score_out_of_another_scale_in_words_is_an_error(text: str, message: str) -> None:
    """"4 out of 10" is not a 4 on a 1–5 scale (a poor answer read as a good one)."""
    with pytest.raises(JudgeParseError, match=message):
        parse_score(text, 1, 5)


@pytest.mark.parametrize(("text", "score"), [
    ("Score: 4 out of 5", 4),
    ("I rate it 4 out of 5.", 4),
    ('{"score": "3 out of 5"}', 3),
    ("Score (1-5): 4", 4),
    ("Score (1–5): 2", 2),
    ("Score (final): 3", 3),
    ("4 out of 5", 4),
])
def test_a_score_out_of_the_scale_in_words_is_read(text: str, score: int) -> None:
    """"4 out of 5" and a ``(1-5)`` range label read as the fraction ``4/5`` does."""
    assert parse_score(text, 1, 5)[0] == score


@pytest.mark.parametrize(("text", "winner"), [
    ("answer a is better than answer b", "a"),
    ("Response a is better.", "a"),
    ("winner: a, since b misses the date", "a"),
])
def test_a_lower_case_answer_a_is_still_read(text: str, winner: str) -> None:
    """Only ``a`` followed by a word after a verdict label is the article."""
    assert parse_winner(text)[0] == winner


def test_a_json_answer_cut_short_is_read() -> None:
    """An answer cut at ``max_tokens`` inside its rationale still gives its verdict (the
    retry would be cut the same way and the judge give up)."""
    cut = ', "rationale": "The answer names the right year but'
    assert parse_score('{"score": "4"' + cut, 1, 5)[0] == 4
    assert parse_score('```json\n{"score": 2' + cut, 1, 5)[0] == 2
    assert parse_winner('{"winner": "B"' + cut)[0] == "b"
    assert parse_winner('{"winner": "tie"' + cut)[0] == "tie"
    assert parse_support('{"supported": "no"')[0] is False
    with pytest.raises(JudgeParseError, match="out of 5"):
        parse_score('{"score": "7/10"' + cut, 1, 5)
    with pytest.raises(JudgeParseError, match="no score"):
        parse_score('{"score": "<1-5>", "rationale": "<one sentence>"', 1, 5)
