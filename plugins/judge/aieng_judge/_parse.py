"""Reading judge answers: JSON in text or fences, ``Score: 4``, ``[[A]]``, ``yes`` / ``no``.

Every parser raises :class:`JudgeParseError` with a message written for the model (it is fed
back on the retry) and for the log: what was expected and what was found instead.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = [
    "JudgeParseError",
    "find_json_objects",
    "parse_score",
    "parse_support",
    "parse_winner",
]

# ``Score: 4``, ``**Rating**: [[5]]``, ``Score (1-5) = 4/5``, ``score is 4``, ``score of 4``,
# ``Score: 4 out of 5``, a JSON answer cut short (``{"score": "4", "rationale": "The``);
# the ``label`` group is set for the labelled forms (a colon, ``=``
# or ``is``), ``scale`` holds a parenthesis after the name (``(1-5)``, ``(out of 10)``),
# ``odd`` what makes the number no whole one: a decimal comma (``4,5``), an exponent
# (``1e1``), a range (``3-4``), a vulgar fraction (``4½``, ``4 ½``) or a mixed number on
# the same line (``4 1/2``, ``4 and 1/2``, ``4 and a half``); the digits are possessive so
# that ``44,5`` is not read as ``4`` by giving a digit back.
# Blank and star runs are possessive here and below: what follows each is never a blank
# (a star), and runs side by side retried against each other were cubic ("score" and 500
# spaces: seconds).
_SCORE_TEXT = re.compile(
    r"\b(?:score|rating|grade)\b[\"']?\**+(?:\s*+\((?P<scale>[^()\n]{0,20})\))?\s*+"
    r"(?:(?P<label>is\s*+:?|=|:)|of\b)?\s*+\**+\s*+(?:\[\[\s*+|[\"'])?"
    r"(?P<score>-?\d++(?:\.\d++)?+)"
    r"(?P<odd>,\d|[eE][+-]?\d|[-–]\d|[ \t]*+[\u00bc-\u00be\u2150-\u215e]"
    r"|[ \t]++(?:and[ \t]++)?+(?:\d++[ \t]*+/[ \t]*+\d|a[ \t]++half\b))?"
    r"(?:\s*+(?:/|out\s++of)\s*+(?P<den>\d+))?",
    re.IGNORECASE,
)
_INTEGER = re.compile(r"\d+")
# MT-Bench's verdict: ``[[4]]``.
_SCORE_BRACKETS = re.compile(r"\[\[\s*(-?\d+(?:\.\d+)?)(?:\s*/\s*(\d+))?\s*\]\]")
# Not inside a longer number (``1.4/5``, ``4,5/5``, ``4/5.5``), but a sentence's full stop
# may follow.
_FRACTION = re.compile(r"(?<![\d.])(?<!\d,)(\d+(?:\.\d+)?)\s*(?:/|\bout\s+of)\s*(\d+)(?!\d|\.\d)",
                       re.IGNORECASE)
# What follows a score that is described, not given: the rubric quoted back
# (``a score of 1 means ...``, ``5/5 would need ...``, ``score 1 = wrong``).
_DESCRIBED = re.compile(
    r"\**\s*(?:=|\b(?:means?|meaning|indicates?|represents?|corresponds?|would|should|"
    r"could|is\s+(?:for|when|given|reserved)|if|when|requires?)\b)",
    re.IGNORECASE,
)
# An answer that is only a number: ``4``, ``**4**``, ``4.``.
_BARE = re.compile(r"^[\s*\[(\"']*(-?\d+(?:\.\d+)?)(?:\s*(?:/|out\s+of)\s*(\d+))?"
                   r"[\s*\])\"'.]*$", re.IGNORECASE)
_BRACKETS = re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]", re.IGNORECASE)
_WINNER_TEXT = re.compile(
    r"\b(?:winner|verdict|better(?:\s++(?:answer|output|response))?|choice|preferred)\b"
    r"[\"']?\s*+(?:is\s*+:?|:|=)?\s*+[*\"']*+\s*+(?:answer|output|response|assistant)?\s*+"
    r"\(?\**+\s*+"
    # "a tie" is a tie; "a" before another word is an article (see _verdict_letter).
    r"(?:an?\s++(?=(?:tie|draw)\b))?\b(A|B|tie|draw|neither|equal)\b",
    re.IGNORECASE,
)
_NAMED = re.compile(r"\b(?:answer|output|response|assistant)\s+\(?(A|B)\b\)?(?:\s+is)?\s+"
                    r"(?:better|best|preferred|wins)", re.IGNORECASE)
_YES_NO = re.compile(r"^\W*(yes|no|true|false|supported|unsupported|not supported)\b",
                     re.IGNORECASE)
# ``Supported: no``, ``Supported? No``, ``Supported - no``, ``Supported (yes/no): no``.
_SUPPORT_TEXT = re.compile(r"\bsupported\b[\"']?\**\s*+(?:\([^()\n]{0,20}\)\s*+)?"
                           r"(?::|=|is|\?|-|–|—)\s*+\W*+(yes|no|true|false)\b", re.IGNORECASE)
# ``Supported: partially``: the label with a value that is no yes / no (read after
# _SUPPORT_TEXT found none), not an answer that starts with the word "supported".
_SUPPORT_LABEL = re.compile(r"^\W*supported\b[\"']?\**\s*+(?:\([^()\n]{0,20}\)\s*+)?"
                            r"(?::|=|\?)\s*+\S", re.IGNORECASE)
# What makes a yes / no verdict name both: ``yes and no``, ``yes/no``, ``Yes, and no.``; after
# a comma, "no" before a word is the determiner (``Yes, and no passage contradicts it``).
_BOTH_YES_NO = re.compile(r"[\s*\"']*+(?:(?:/|&|\band\b|\bor\b)\s*+(?:yes|no|true|false)\b"
                          r"|,\s*+(?:(?:and|or)\s++)?+(?:yes|no|true|false)\b"
                          r"(?![ \t]*+[^\W\d_]))", re.IGNORECASE)
# A bare verdict alone in the next sentence or line (``Yes. No.``, ``Yes.\nNo``): with the
# first, two verdicts and no label saying which is final. Not one before a word on its
# line (``Yes. No passage contradicts it``: the determiner).
_NEXT_YES_NO = re.compile(r"[ \t*\"']*+(?:[.!;]|\n)[.!;\s*\"']*+(yes|no|true|false)\b"
                          r"(?![ \t]*+[^\W\d_])", re.IGNORECASE)
# What makes a winner match name both answers: ``Winner: A or B``, ``A/B``, ``A and B``.
_BOTH = re.compile(r"\**\s*(?:/|\bor\b|\band\b|&)\s*(?:answer\s+|output\s+|response\s+)?"
                   r"\(?(?:A|B)\b", re.IGNORECASE)
# A lower-case "a" followed by a word is the article, not answer A.
_ARTICLE = re.compile(r"\s+[^\W\d_]")
_EXCERPT = 120
_V = TypeVar("_V")


class JudgeParseError(ValueError):
    """A judge's answer could not be read; the message says what was expected."""


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _EXCERPT else flat[:_EXCERPT] + "…"


def find_json_objects(text: str) -> list[dict[str, Any]]:
    """Every JSON object in ``text``, in order: the text itself when it is one, else each
    object that starts at a ``{`` outside an object already found (prose, fences and
    echoed examples around the answer are common)."""
    stripped = text.strip()
    try:
        whole = json.loads(stripped)
    except (ValueError, RecursionError):  # RecursionError: thousands of "[" (no JSON)
        whole = None
    if isinstance(whole, dict):
        return [whole]
    found: list[dict[str, Any]] = []
    decoder = json.JSONDecoder()
    position = 0
    while (start := stripped.find("{", position)) >= 0:
        decoded = _decode_at(decoder, stripped, start)
        if decoded is not None and isinstance(decoded[0], dict):
            found.append(decoded[0])
            position = decoded[1]
        else:
            position = start + 1
    return found


_WINDOW = 256
# The most a failing scan reads past the position its error names (``-Infinity``, a
# ``\uXXXX\uXXXX`` pair): an error before the window's end less this is not the cut's.
_LOOKAHEAD = 16


def _decode_at(decoder: json.JSONDecoder, text: str, start: int) -> tuple[Any, int] | None:
    """``decoder.raw_decode(text, start)``, or ``None`` where it fails; read from a window
    of the text that grows until the answer does not depend on where it ends. A failure's
    error counts the lines before it: on the whole text that was O(start) for each of many
    ``{`` (quadratic: 100 kB of them took seconds)."""
    size = _WINDOW
    while True:
        window = text[start:start + size]
        whole = start + size >= len(text)
        try:
            # NUL, a control character JSON refuses, ends an object or string cut short.
            value, end = decoder.raw_decode(window if whole else window + "\x00")
        except json.JSONDecodeError as exc:
            if whole or exc.pos < size - _LOOKAHEAD:
                return None
            size *= 4
            continue
        except (ValueError, RecursionError):  # a number past int()'s limit; deep nesting
            return None
        return value, start + end


def _last_verdict(text: str, read: Callable[[dict[str, Any]], _V | None]) -> _V | None:
    """The verdict of the last JSON object in ``text`` that gives a readable one: a judge
    may echo the prompt's format (``{"score": "<1-5>"}``) or an example before its answer.
    ``read`` returns ``None`` for an object without the verdict's key and raises
    :class:`JudgeParseError` for an unreadable value; that error is raised only when no
    object gives a verdict."""
    problem: JudgeParseError | None = None
    for obj in reversed(find_json_objects(text)):
        try:
            verdict = read(_lower_keys(obj))
        except JudgeParseError as exc:
            problem = problem or exc
            continue
        if verdict is not None:
            return verdict
    if problem is not None:
        raise problem
    return None


def _lower_keys(obj: dict[str, Any]) -> dict[str, Any]:
    return {str(k).strip().lower(): v for k, v in obj.items()}


def _rationale(obj: dict[str, Any]) -> str:
    for key in ("rationale", "reason", "reasoning", "explanation", "justification"):
        value = obj.get(key)
        if isinstance(value, str):
            return value.strip()
    return ""


def _is(digits: str, number: int) -> bool:
    """Whether a run of digits spells ``number`` (no ``int()``: a model may write
    thousands of digits, past Python's conversion limit)."""
    return (digits.lstrip("0") or "0") == str(number)


def _out_of(score: str, denominator: str | None, high: int) -> float:
    """``score`` as a number; a fraction's denominator must be the scale's top (``2/10``
    on a 1–5 scale is not a 2)."""
    if denominator is not None and not _is(denominator, high):
        raise JudgeParseError(f"the score must be out of {high}, got {score}/{denominator}")
    return float(score)


def _number(value: object, high: int) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = re.match(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:(?:/|out\s+of)\s*(\d+))?\s*$", value,
                         re.IGNORECASE)
        if match:
            return _out_of(match.group(1), match.group(2), high)
    return None


def _checked_score(value: float, low: int, high: int) -> int:
    if not math.isfinite(value) or value != int(value):
        raise JudgeParseError(f"the score must be a whole number from {low} to {high}, "
                              f"got {value:g}")
    if not low <= value <= high:
        raise JudgeParseError(f"the score must be from {low} to {high}, got {value:g}")
    return int(value)


def _given(text: str, match: re.Match[str]) -> bool:
    """Whether a score match is a verdict, not the rubric quoted (``a score of 1 means``)."""
    return _DESCRIBED.match(text, match.end()) is None


def _scale_top(match: re.Match[str]) -> str | None:
    """The top of the scale a ``Score (0-10): 4`` names in its parenthesis (its largest
    number), read as the score's denominator; ``None`` when it names no number."""
    numbers = _INTEGER.findall(match.group("scale") or "")
    return max(numbers, key=lambda n: (len(n.lstrip("0")), n.lstrip("0"))) if numbers else None


def _prose_verdict(text: str, low: int, high: int) -> tuple[str, str | None] | None:
    """The score (and its denominator) a prose answer gives, as written: judges reason or
    quote the rubric first and give their verdict last, so in each form the last one
    counts, and the forms are tried from the most explicit (``[[4]]``, ``Score: 4``) to
    the least (``score of 4``, ``4/5``, a lone number)."""
    brackets = list(_SCORE_BRACKETS.finditer(text))
    if brackets:
        return brackets[-1].group(1), brackets[-1].group(2)
    named = [m for m in _SCORE_TEXT.finditer(text) if _given(text, m)]
    for labelled in (True, False):
        found = [m for m in named if (m.group("label") is not None) is labelled]
        if found:
            last = found[-1]
            if last.group("odd") is not None:
                written = last.group("score") + last.group("odd")
                raise JudgeParseError(f"the score must be one whole number from {low} to "
                                      f"{high} in digits, got {written}")
            return last.group("score"), last.group("den") or _scale_top(last)
    fractions = [m for m in _FRACTION.finditer(text) if _is(m.group(2), high)
                 and _given(text, m)]
    if fractions:
        return fractions[-1].group(1), fractions[-1].group(2)
    bare = _BARE.match(text)
    if bare is not None:
        return bare.group(1), bare.group(2)
    return None


def parse_score(text: str, low: int, high: int) -> tuple[int, str]:
    """The score and rationale of a rubric answer.

    Reads, in order: a JSON object with a ``score`` key (fenced, bare, or inside prose; the
    score an integer, an integral float or a string such as ``"4"`` or ``"4/5"``); else
    the prose verdict (:func:`_prose_verdict`): the last ``[[4]]``, else the last labelled
    ``Score: 4`` / ``Rating = 4/5`` / ``score is 4``, else the last ``score of 4``, else
    the last lone fraction ``4/5`` whose denominator is ``high``, else an answer that is
    only a number. A score followed by ``means``, ``=``, ``would`` ... describes the
    rubric (``a score of 1 means ...``) and is not a verdict.

    :returns: ``(score, rationale)``; the rationale is the JSON's ``rationale`` (or
        ``reason``, ``explanation``), else the whole answer.
    :raises JudgeParseError: no score, a non-integral or non-finite one (``4.5``, a
        decimal comma ``4,5``, ``4½``, ``1e1``), a range (``3-4``), one outside
        ``low..high``, or a fraction out of another number than ``high`` (``2/10``).
    """
    def read(lowered: dict[str, Any]) -> tuple[float, str] | None:
        if "score" not in lowered:
            return None
        value = _number(lowered["score"], high)
        if value is None:
            raise JudgeParseError(f"the JSON's score must be a number from {low} to {high}, "
                                  f"got {lowered['score']!r}")
        return value, _rationale(lowered)

    given = _last_verdict(text, read)
    if given is not None:  # the last readable score counts, in range or not
        return _checked_score(given[0], low, high), given[1]
    match = _prose_verdict(text, low, high)
    if match is not None:
        score, denominator = match
        value = _out_of(score, denominator, high)
        return _checked_score(value, low, high), text.strip()
    raise JudgeParseError(
        f'no score found: answer with JSON {{"score": <{low}-{high}>, "rationale": "..."}}; '
        f"got {_excerpt(text)!r}")


_WINNERS = {"a": "a", "b": "b", "c": "tie", "tie": "tie", "draw": "tie", "neither": "tie",
            "equal": "tie"}


def _verdict_letter(text: str, match: re.Match[str]) -> bool:
    """Whether a winner match names an answer: not the article in "the verdict is a
    close call"."""
    return not (match.group(1) == "a" and _ARTICLE.match(text, match.end(1)))


def parse_winner(text: str) -> tuple[str, str]:
    """The winner (``"a"``, ``"b"`` or ``"tie"``) and rationale of a pairwise answer.

    Reads a JSON object with a ``winner`` (or ``verdict`` / ``better``) key, MT-Bench's
    ``[[A]]`` / ``[[B]]`` / ``[[C]]`` (C: tie), ``Winner: A`` / ``Better answer: B`` (the
    last one: the reasoning comes first), else the last ``Output A is better``, or an
    answer that is just ``A``, ``B`` or ``tie``.

    :raises JudgeParseError: no verdict, contradictory ones (``[[A]]`` and ``[[B]]``), or
        one naming both answers (``Winner: A or B``, ``A/B``).
    """
    def read(lowered: dict[str, Any]) -> tuple[str, str] | None:
        for key in ("winner", "verdict", "better", "preferred"):
            if key in lowered:
                value = str(lowered[key]).strip().lower().strip("[]() ")
                for prefix in ("answer ", "output ", "response ", "assistant "):
                    value = value.removeprefix(prefix)
                value = value.strip("[]() ")
                article, _, rest = value.partition(" ")
                if article in ("a", "an") and rest.strip() in ("tie", "draw"):
                    value = rest.strip()  # "a tie", as the prose form reads it
                if value in _WINNERS:
                    return _WINNERS[value], _rationale(lowered)
                raise JudgeParseError(f'the JSON\'s {key} must be "A", "B" or "tie", '
                                      f"got {lowered[key]!r}")
        return None

    given = _last_verdict(text, read)
    if given is not None:
        return given
    brackets = {_WINNERS[m.group(1).lower()] for m in _BRACKETS.finditer(text)}
    if len(brackets) > 1:
        raise JudgeParseError(f"contradictory verdicts {sorted(brackets)} in one answer")
    if brackets:
        return brackets.pop(), text.strip()
    for pattern in (_WINNER_TEXT, _NAMED):  # the verdict comes last, after the reasoning
        matches = [m for m in pattern.finditer(text)
                   if pattern is _NAMED or _verdict_letter(text, m)]
        if matches:
            last = matches[-1]
            if pattern is _WINNER_TEXT and last.group(1).lower() in ("a", "b") \
                    and _BOTH.match(text, last.end(1)):
                raise JudgeParseError("the verdict names both answers: give one of A, B or "
                                      f"tie; got {_excerpt(text[last.start():])!r}")
            return _WINNERS[last.group(1).lower()], text.strip()
    bare = text.strip().strip(".*\"'[]() ").lower()
    if bare in _WINNERS:
        return _WINNERS[bare], ""
    raise JudgeParseError(
        'no verdict found: answer with JSON {"winner": "A" | "B" | "tie", "rationale": "..."}; '
        f"got {_excerpt(text)!r}")


_SUPPORT = {"yes": True, "true": True, "supported": True, "no": False, "false": False,
            "unsupported": False, "not supported": False}


def parse_support(text: str) -> tuple[bool, str]:
    """Whether a claim is supported, from a JSON ``{"supported": "yes" | "no" | true |
    false}``, else the last labelled ``Supported: no`` (the judge's final word, as for
    scores and winners), else an answer starting with yes / no.

    :raises JudgeParseError: no yes / no found, a labelled value that is neither
        (``Supported: partially``), or both at once (``yes and no``, ``yes/no``, or
        unlabelled one sentence after the other: ``Yes. No.``).
    """
    def read(lowered: dict[str, Any]) -> tuple[bool, str] | None:
        if "supported" not in lowered:
            return None
        value = lowered["supported"]
        key = str(value).strip().lower() if not isinstance(value, bool) else str(value).lower()
        if key in _SUPPORT:
            return _SUPPORT[key], _rationale(lowered)
        raise JudgeParseError(f'the JSON\'s supported must be "yes" or "no", got {value!r}')

    given = _last_verdict(text, read)
    if given is not None:
        return given
    # "Supported: no" starts with a word that reads as yes: the labelled form goes first,
    # and of several the last counts (the judge's final word, as for scores and winners).
    labelled = list(_SUPPORT_TEXT.finditer(text))
    match = labelled[-1] if labelled else _YES_NO.search(text)
    if match is None:
        raise JudgeParseError(
            f'no verdict found: answer with JSON {{"supported": "yes" | "no"}}; '
            f"got {_excerpt(text)!r}")
    if not labelled and _SUPPORT_LABEL.match(text):
        raise JudgeParseError(f'"supported" must be "yes" or "no", got {_excerpt(text)!r}')
    if _BOTH_YES_NO.match(text, match.end(1)):
        raise JudgeParseError('the verdict says both yes and no: answer one of "yes" or '
                              f'"no"; got {_excerpt(text[match.start():])!r}')
    verdict = _SUPPORT[" ".join(match.group(1).lower().split())]
    following = None if labelled else _NEXT_YES_NO.match(text, match.end(1))
    if following is not None and _SUPPORT[following.group(1).lower()] is not verdict:
        raise JudgeParseError('the answer gives both yes and no, neither labelled as the '
                              'verdict: answer one of "yes" or "no" (or "Supported: no"); '
                              f'got {_excerpt(text[match.start():])!r}')
    return verdict, text.strip()
