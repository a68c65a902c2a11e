"""Reading judge answers: JSON anywhere, fences, prose scores, verdicts, yes / no."""

from __future__ import annotations

import json

import pytest
from aieng_judge import JudgeParseError, parse_score, parse_support, parse_winner
from aieng_judge._parse import find_json_objects
from hypothesis import given
from hypothesis import strategies as st


@pytest.mark.parametrize(("text", "score", "rationale"), [
    ('{"score": 4, "rationale": "fine"}', 4, "fine"),
    ('{"score": "5", "rationale": "great"}', 5, "great"),
    ('{"Score": 3.0, "reason": "ok"}', 3, "ok"),
    ('{"score": "2/5", "explanation": "weak"}', 2, "weak"),
    ('Here you go:\n```json\n{"score": 1, "rationale": "wrong"}\n```\nThanks', 1, "wrong"),
    ('Sure! {"score": 4, "rationale": "nested {braces} ok"} is my answer', 4,
     "nested {braces} ok"),
    ("Score: 4\nThe answer is correct.", 4, "Score: 4\nThe answer is correct."),
    ("I would give it a rating of 2.", 2, "I would give it a rating of 2."),
    ("**Score**: **5**", 5, "**Score**: **5**"),
    ("Overall 3/5, mostly right.", 3, "Overall 3/5, mostly right."),
    ("I rate it 4/5.", 4, "I rate it 4/5."),
])
def test_score_formats(text: str, score: int, rationale: str) -> None:
    """JSON (bare, fenced, in prose, string or float scores) and prose scores are read."""
    assert parse_score(text, 1, 5) == (score, rationale)


@pytest.mark.parametrize(("text", "message"), [
    ("The answer is good.", "no score found"),
    ('{"score": 7, "rationale": "x"}', "from 1 to 5, got 7"),
    ('{"score": 3.5}', "whole number"),
    ('{"score": "great"}', "must be a number"),
    ("Score: 0", "from 1 to 5, got 0"),
    ("", "no score found"),
    ('{"score": NaN}', "whole number"),
    ('{"score": Infinity}', "whole number"),
    ("Score: " + "9" * 400, "whole number"),
    ("Score: 2/10", "out of 5, got 2/10"),
    ('{"score": "3/10"}', "out of 5, got 3/10"),
])
def test_score_errors_say_what_was_expected(text: str, message: str) -> None:
    """Unreadable, out-of-range and fractional scores fail with a message for the retry."""
    with pytest.raises(JudgeParseError, match=message):
        parse_score(text, 1, 5)


_RUBRIC_QUOTED = ("A score of 1 means the answer is wrong; a score of 5 means it is entirely "
                  "correct.\nReasoning: the date is right but the place is missing.\nScore: 4")


@pytest.mark.parametrize(("text", "score"), [
    (_RUBRIC_QUOTED, 4),
    ("Score 1: wrong\nScore 3: partly correct\nScore 5: entirely correct\n\nScore: 3", 3),
    ("1 = wrong, 5 = entirely correct. I'd give it a score of 4.", 4),
    ("I give it a score of 4. A score of 5 would need the date.", 4),
    ("Rating: 4 (a rating of 5 requires sources)", 4),
    ("A 5/5 answer would cite the source; this one gets 3/5.", 3),
    ("Score: 3\nOn reflection the answer misses the date.\nFinal score: 2", 2),
    ("Score: 5 at first sight, but\nScore: 2", 2),
    ("Rating: [[5]]", 5),
    ("The answer is close. [[3]]", 3),
    ("[[2]] would be harsh. Score: 4. Verdict: [[4]]", 4),
    ("Score (1-5): 4", 4),
    ("The score is: 2", 2),
    ("4", 4),
    ("**5**", 5),
    ("3.", 3),
])
def test_prose_verdict_is_the_last_one_given(text: str, score: int) -> None:
    """Judges quote the rubric and reason before their verdict: the last verdict counts,
    explicit forms ([[N]], Score: N) before loose ones, a described score is no verdict."""
    assert parse_score(text, 1, 5)[0] == score


@pytest.mark.parametrize(("text", "message"), [
    ("A score of 1 means wrong; a score of 5 means entirely correct.", "no score found"),
    ("Score: 4\nScore: 9", "from 1 to 5, got 9"),
    ("A score of 1 means wrong.\nScore: 0", "from 1 to 5, got 0"),
    ("Rating: [[8/10]]", "out of 5, got 8/10"),
    ("7", "from 1 to 5, got 7"),
    ("4/10", "out of 5, got 4/10"),
    ("42 is the answer", "no score found"),
])
def test_prose_verdict_out_of_scale_or_only_described_fails(text: str, message: str) -> None:
    """The last verdict outside the scale is an error (not an earlier in-range number), and
    a rubric quoted without a verdict gives no score rather than its first number."""
    with pytest.raises(JudgeParseError, match=message):
        parse_score(text, 1, 5)


@given(score=st.integers(1, 5), rationale=st.text(max_size=40),
       prose=st.sampled_from(["", "Answer: ", "My verdict follows.\n"]),
       fenced=st.booleans())
def test_any_json_score_in_range_roundtrips(score: int, rationale: str, prose: str,
                                             fenced: bool) -> None:
    """Whatever the rationale's characters, JSON written by json.dumps reads back."""
    body = json.dumps({"score": score, "rationale": rationale})
    text = f"{prose}```json\n{body}\n```" if fenced else f"{prose}{body}"
    assert parse_score(text, 1, 5) == (score, rationale.strip())


@given(st.integers().filter(lambda n: not 1 <= n <= 5))
def test_out_of_range_never_passes(score: int) -> None:
    """A score outside the scale is never accepted (no clipping into range)."""
    with pytest.raises(JudgeParseError):
        parse_score(json.dumps({"score": score}), 1, 5)


@pytest.mark.parametrize(("text", "winner"), [
    ('{"winner": "A", "rationale": "r"}', "a"),
    ('{"winner": "b"}', "b"),
    ('{"winner": "tie"}', "tie"),
    ('{"verdict": "Answer B"}', "b"),
    ("After thinking: [[A]]", "a"),
    ("[[C]]", "tie"),
    ("Winner: B", "b"),
    ("The better answer is A.", "a"),
    ("Answer B is better because it is right.", "b"),
    ("tie", "tie"),
    ("A", "a"),
    ("Output (B) is better.", "b"),
    ('{"winner": "Response B"}', "b"),
    ('{"winner": "Assistant A"}', "a"),
    ("Winner: A at first sight.\nOn reflection A misses the date.\nFinal verdict: B", "b"),
    ("Answer A is better on style, but answer B is better on accuracy, which counts.", "b"),
    ("Verdict: tie\nAnswer A is better formatted, which does not count here.", "tie"),
    # the JSON value reads as the prose does: "a tie" is a tie, "an a" is no answer
    ('{"winner": "a tie", "rationale": "both right"}', "tie"),
    ('{"winner": "A draw"}', "tie"),
])
def test_winner_formats(text: str, winner: str) -> None:
    """JSON, MT-Bench brackets, prose and bare verdicts are read."""
    assert parse_winner(text)[0] == winner


@pytest.mark.parametrize(("text", "message"), [
    ("[[A]] no wait [[B]]", "contradictory"),
    ('{"winner": "C+"}', "must be"),
    ('{"winner": "a b"}', "must be"),
    ("Both are fine I guess", "no verdict"),
])
def test_winner_errors(text: str, message: str) -> None:
    """Contradictory, unknown and missing verdicts fail."""
    with pytest.raises(JudgeParseError, match=message):
        parse_winner(text)


@pytest.mark.parametrize(("text", "supported"), [
    ('{"supported": "yes"}', True),
    ('{"supported": false}', False),
    ('{"Supported": "No"}', False),
    ("Yes, the context says so.", True),
    ("no.", False),
    ("Supported: yes", True),
    ("Supported: no", False),
    ("**Supported**: false", False),
])
def test_support_formats(text: str, supported: bool) -> None:
    """JSON yes / no (or booleans) and answers starting with yes / no are read."""
    assert parse_support(text)[0] is supported


def test_support_errors() -> None:
    """Neither yes nor no fails."""
    with pytest.raises(JudgeParseError, match="supported"):
        parse_support("Perhaps.")
    with pytest.raises(JudgeParseError, match="must be"):
        parse_support('{"supported": "maybe"}')


def test_find_json_objects_skips_non_objects() -> None:
    """Arrays and broken JSON are skipped; every top-level object is found, in order."""
    assert find_json_objects('[1, 2] {"a": 1') == []
    assert find_json_objects('[1] {"a": {"b": 2}} {"c": 3}') == [{"a": {"b": 2}}, {"c": 3}]
    assert find_json_objects('{"a": 1 {"b": 2}') == [{"b": 2}]


_ECHOED = 'Answer in this format: {"score": "<1-5>", "rationale": "..."}\n'


@pytest.mark.parametrize(("text", "score"), [
    (_ECHOED + '{"score": 4, "rationale": "r"}', 4),
    ('For example {"score": 1} means wrong.\n```json\n{"score": 4}\n```', 4),
    ('{"score": 2}\nOn reflection: {"score": 3}', 3),
])
def test_json_verdict_is_the_last_readable_one(text: str, score: int) -> None:
    """An echoed format (a placeholder score) or an example before the answer is not the
    verdict: the last JSON object with a readable score is."""
    assert parse_score(text, 1, 5)[0] == score


def test_json_verdict_last_readable_decides_even_out_of_scale() -> None:
    """The last readable score is the verdict: out of scale it fails, with no fallback to
    an earlier one; an object with only a placeholder fails as before."""
    with pytest.raises(JudgeParseError, match="got 9"):
        parse_score('{"score": 2} ... {"score": 9}', 1, 5)
    with pytest.raises(JudgeParseError, match="must be a number"):
        parse_score(_ECHOED, 1, 5)
    assert parse_winner('Format: {"winner": "A|B|tie"}\n{"winner": "B"}')[0] == "b"
    assert parse_support('Like {"supported": "yes|no"} -> {"supported": "no"}')[0] is False
