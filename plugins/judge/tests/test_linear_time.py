"""Judge answers and outputs built to make a parser backtrack: long blank runs after a
label, thousands of ``{``, ``!`` or blank lines. Each used to take seconds to minutes
(cubic or worse in a blank run); each now finishes at once, and reads what it read before.

The former patterns and decoder are kept here as references: the new ones must agree with
them on random text.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aieng_judge import (
    InstructionCheck,
    JudgeParseError,
    _instructions,
    _parse,
    parse_score,
    parse_support,
    parse_winner,
    run_check,
)
from hypothesis import given, settings
from hypothesis import strategies as st

_FORMER = {
    "_SCORE_TEXT": re.compile(
        r"\b(?:score|rating|grade)\b[\"']?\**(?:\s*\((?P<scale>[^()\n]{0,20})\))?\s*"
        r"(?:(?P<label>is\s*:?|=|:)|of\b)?\s*\**\s*(?:\[\[\s*|[\"'])?(?P<score>-?\d+(?:\.\d+)?)"
        r"(?:\s*(?:/|out\s+of)\s*(?P<den>\d+))?", re.IGNORECASE),
    "_WINNER_TEXT": re.compile(
        r"\b(?:winner|verdict|better(?:\s+(?:answer|output|response))?|choice|preferred)\b"
        r"[\"']?\s*(?:is\s*:?|:|=)?\s*[*\"']*\s*(?:answer|output|response|assistant)?\s*"
        r"\(?\**\s*(?:an?\s+(?=(?:tie|draw)\b))?\b(A|B|tie|draw|neither|equal)\b",
        re.IGNORECASE),
    "_SUPPORT_TEXT": re.compile(
        r"\bsupported\b[\"']?\**\s*(?:\([^()\n]{0,20}\)\s*)?(?::|=|is|\?|-|–|—)"
        r"\s*\W*(yes|no|true|false)\b", re.IGNORECASE),
}
_FORMER_FENCED = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```$", re.DOTALL)
_FORMER_SENTENCE_END = re.compile(r"[.!?]+(?=[\"')\]]*(?:\s|$))")
_FORMER_BULLET = re.compile(r"^\s*(?:[-*•+]|\d+[.)])\s+\S", re.MULTILINE)

# Pieces the patterns care about, so random text is full of near-misses.
_PIECES = ["score", "Rating", "grade", "winner", "verdict", "better", "answer", "output",
           "supported", "is", "of", "out of", "a", "A", "B", "tie", "draw", "an", "yes", "No",
           "means", "4", "12", "3.5", "-1", "/", "5", ":", "=", "?", "-", "—", "*", "**",
           "(", ")", "(1-5)", "[[", "]]", '"', "'", " ", "  ", "\t", "\n", "\r\n", "\u00a0",
           "!", ".", "...", "?!", ")", "]", "1.", "2)", "•", "+", "```", "json", "x", "{",
           '{"a": 1}', '{"score": 4}', "}", "[", "]", ",", "NaN", "\\u00e9", "é", "\x00"]
_texts = st.lists(st.sampled_from(_PIECES), max_size=30).map("".join)


def _matches(pattern: re.Pattern[str], text: str) -> list[tuple[Any, ...]]:
    # ``odd`` (a score that is no whole number: ``4,5``, ``3-4``) is newer than the
    # former patterns: compared without it, on texts where it is not set.
    return [(m.span(), tuple(v for k, v in _groups(m).items() if k != "odd"))
            for m in pattern.finditer(text)]


def _groups(match: re.Match[str]) -> dict[Any, Any]:
    names = {i: name for name, i in match.re.groupindex.items()}
    return {names.get(i, i): match.group(i) for i in range(1, match.re.groups + 1)}


@settings(max_examples=300, deadline=None)
@given(_texts)
def test_verdict_patterns_match_as_the_former_ones(text: str) -> None:
    """The possessive score, winner and support patterns find what the former ones found,
    with the same groups, on any text."""
    for name, former in _FORMER.items():
        if any(m.groupdict().get("odd") for m in getattr(_parse, name).finditer(text)):
            continue
        assert _matches(getattr(_parse, name), text) == _matches(former, text), name


@settings(max_examples=300, deadline=None)
@given(_texts)
def test_instruction_patterns_match_as_the_former_ones(text: str) -> None:
    """Fences, sentence ends and bullets are read as they were."""
    new, old = _instructions._FENCED.match(text), _FORMER_FENCED.match(text)
    assert (new and (new.span(), new.groups())) == (old and (old.span(), old.groups()))
    assert _instructions._SENTENCE_END.split(text) == _FORMER_SENTENCE_END.split(text)
    # A bullet's match starts on its own line now, not at blank lines before it: the
    # bullets found (where each match ends) are the same.
    assert [m.end() for m in _instructions._BULLET.finditer(text)] == \
        [m.end() for m in _FORMER_BULLET.finditer(text)]


def _former_objects(text: str) -> list[Any]:
    """The former find_json_objects after its whole-text attempt: a decode at each ``{``
    on the whole text."""
    found, decoder, position = [], json.JSONDecoder(), 0
    while (start := text.find("{", position)) >= 0:
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            position = start + 1
            continue
        if isinstance(value, dict):
            found.append(value)
            position = end
        else:
            position = start + 1
    return found


_JSONISH = ["{", "}", "[", "]", '"', '\\"', ":", ",", " ", "\n", "1", "-", "1e5", ".5", "a",
            "true", "nul", "null", "NaN", "-Infinity", "\\u00e9", "\\ud83d\\ude00", "\\",
            '"k"', '{"k": "v"}', '{"score": 4}', "x"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_JSONISH), max_size=40).map("".join), st.integers(17, 48))
def test_windowed_decoding_finds_the_same_objects(text: str, window: int) -> None:
    """Decoding at each ``{`` through a growing window finds the objects a decode of the
    whole text found, whatever the window's first size (objects longer than it, cut in a
    string, an escape or a number, must not differ)."""
    saved = _parse._WINDOW
    _parse._WINDOW = window
    try:
        stripped = text.strip()
        try:
            whole = json.loads(stripped)
        except ValueError:
            whole = None
        if not isinstance(whole, dict):
            assert _parse.find_json_objects(text) == _former_objects(stripped)
    finally:
        _parse._WINDOW = saved


@pytest.mark.parametrize("text", [
    "Score" + " " * 1_500 + "x",
    "Score is" + " " * 1_500 + "x",
    "Rating (1-5)" + " " * 1_500 + "*" + " " * 1_500 + "x",
])
def test_a_long_blank_run_after_a_score_label(text: str) -> None:
    """A label followed by a long blank run and no number is no score (minutes before)."""
    with pytest.raises(JudgeParseError, match="no score"):
        parse_score(text, 1, 5)
    assert parse_score(text + " Score: 4", 1, 5)[0] == 4


def test_a_long_star_run_after_a_label() -> None:
    """A label followed by 20,000 ``*`` and no verdict is none (quadratic before: seconds)."""
    with pytest.raises(JudgeParseError, match="no score"):
        parse_score("Score" + "*" * 20_000 + "x", 1, 5)
    with pytest.raises(JudgeParseError, match="no verdict"):
        parse_winner("Winner" + "*" * 20_000 + "?")
    assert parse_winner("Winner: " + "*" * 20_000 + "B")[0] == "b"


def test_a_long_blank_run_after_a_winner_label() -> None:
    """"Winner" and 200 blanks is no verdict (a blank run of 120 took 12 s before)."""
    with pytest.raises(JudgeParseError, match="no verdict"):
        parse_winner("Winner" + " " * 200 + "?")
    assert parse_winner("Winner:" + " " * 200 + "B")[0] == "b"


def test_a_long_blank_run_after_a_support_label() -> None:
    """"Supported:" and 20,000 blanks with no verdict is none (quadratic before: 9 s); with
    one after the blanks, it is read."""
    with pytest.raises(JudgeParseError, match="no verdict"):
        parse_support("The claim. Supported:" + " " * 20_000 + "unclear")
    assert parse_support("The claim. Supported:" + " " * 20_000 + "no")[0] is False


@pytest.mark.parametrize("text", ["{" * 200_000, "[" * 5_000 + "x", '{"a":' * 2_000])
def test_many_braces_or_deep_nesting_are_no_json(text: str) -> None:
    """Hundreds of thousands of ``{`` (each failed decode counted the lines before it:
    quadratic) and nesting too deep to decode (a RecursionError escaped) are no score."""
    with pytest.raises(JudgeParseError, match="no score"):
        parse_score(text, 1, 5)


@pytest.mark.parametrize(("kind", "text", "count"), [
    ("sentences", "!" * 30_000 + "x", 1),
    ("bullets", "\n" * 30_000 + "x", 0),
])
def test_counting_checks_on_long_runs(kind: str, text: str, count: int) -> None:
    """A run of 30,000 stops or blank lines is counted at once (seconds before)."""
    check = InstructionCheck(kind=kind, at_least=0)  # type: ignore[arg-type]
    assert run_check(check, text).rationale.startswith(f"{count} ")


def test_json_check_after_a_long_blank_fence_line() -> None:
    """An opening fence followed by 30,000 blanks is read at once (quadratic before)."""
    check = InstructionCheck(kind="json")
    assert not run_check(check, "```" + " " * 30_000 + "x").passed
    assert run_check(check, "```json" + " " * 30_000 + "\n{}\n```").passed
