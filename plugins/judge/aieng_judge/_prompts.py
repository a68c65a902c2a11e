"""The judges' prompts and the JSON schemas their answers are constrained to."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from aieng_hookspecs.types import Message

__all__ = [
    "PROMPT_STYLES",
    "RUBRIC",
    "SUPPORT_SCHEMA",
    "answer_shape",
    "clip",
    "pairwise_messages",
    "pairwise_schema",
    "rubric_messages",
    "score_schema",
    "support_messages",
]

#: The built-in rubric: criterion -> what 1, 3 and 5 mean on the 1–5 scale.
RUBRIC: dict[str, str] = {
    "accuracy": (
        "Is the answer factually correct, and does it answer the question asked? "
        "1 = wrong or off-topic; 2 = mostly wrong; 3 = partly correct, with clear errors; "
        "4 = correct with minor inaccuracies; 5 = entirely correct."),
    "completeness": (
        "Does the answer cover everything the question asks for? "
        "1 = misses the point entirely; 2 = covers a small part; 3 = covers the main point "
        "but leaves out important parts; 4 = nearly complete; 5 = covers every part."),
    "clarity": (
        "Is the answer clear, well organized and easy to read, without padding? "
        "1 = incomprehensible; 2 = hard to follow; 3 = understandable with effort; "
        "4 = clear; 5 = clear, direct and concise."),
}

#: Grader personas (system prompts) the ``ensemble`` component varies across members.
PROMPT_STYLES: dict[str, str] = {
    "default": (
        "You are an impartial grader. You rate one answer on one criterion, on a scale "
        "from 1 to 5, following the rubric exactly. Judge the content, not its length: a "
        "longer answer is not better for being longer."),
    "strict": (
        "You are a strict examiner. Rate the answer on one criterion from 1 to 5. Give 5 "
        "only to an answer without any flaw; any error or omission costs at least a point."),
    "reference": (
        "You are a grader comparing an answer with the reference answer. Rate the answer "
        "on one criterion from 1 to 5; the reference is what a 5 looks like. Judge the "
        "content, not its length."),
}

_TRUNCATED = " […]"
#: A line that reads as one of the prompts' block headers (``[Answer B]``, ``[Criterion:
#: x]``, ...), in any case and spacing: in a text shown inside a block (an answer, the
#: question, a passage) it would open a block of its own, and an answer could add a fake
#: ``[Answer B]`` to the judge's prompt. A line starts after any line break (``\r``,
#: ``\u2028``, ... as ``str.splitlines`` reads them), not only after ``\n``, and ends at
#: the next one: a criterion's name is read possessively up to ``]`` or the line's end
#: (backtracking over it, or past a ``\r`` to the text's end from every line start, was
#: quadratic: minutes for a long crafted answer under a large ``max_chars``).
_HEADER = re.compile(r"(?:^|(?<=[\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]))"
                     r"([ \t]*)\[[ \t]*((?:question|context|reference answer|answer"
                     r"(?:[ \t]+(?:a|b|to grade))?|claim|criterion[ \t]*:"
                     r"[^\]\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]*+)[ \t]*)\]",
                     re.IGNORECASE | re.MULTILINE)


def clip(text: str, limit: int) -> str:
    """``text`` as a block of a prompt shows it: cut to ``limit`` characters (marked when
    cut), a line that reads as a block header shown in parentheses (``(Answer B)``), so
    that the text cannot open a block of its own."""
    text = text if len(text) <= limit else text[:limit] + _TRUNCATED
    return _HEADER.sub(r"\1(\2)", text)


def score_schema(low: int, high: int, *, rationale: bool = True) -> dict[str, Any]:
    """The JSON schema of a rubric answer: the score as one of the allowed digits (an enum
    of strings, which constrained decoders support where integer bounds are not), and a
    rationale unless ``rationale`` is false."""
    properties: dict[str, Any] = {
        "score": {"type": "string", "enum": [str(n) for n in range(low, high + 1)]}}
    if rationale:
        properties["rationale"] = {"type": "string"}
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}


def pairwise_schema(*, rationale: bool = True) -> dict[str, Any]:
    """The JSON schema of a pairwise answer: the winner, and a rationale unless
    ``rationale`` is false."""
    properties: dict[str, Any] = {"winner": {"type": "string", "enum": ["A", "B", "tie"]}}
    if rationale:
        properties["rationale"] = {"type": "string"}
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}


def answer_shape(key: str, values: str, rationale: bool) -> str:
    """The JSON answer the prompt asks for, e.g. ``{"score": "<1-5>", "rationale": ...}``."""
    tail = ', "rationale": "<one sentence>"' if rationale else ""
    return f'{{"{key}": {values}{tail}}}'

SUPPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"supported": {"type": "string", "enum": ["yes", "no"]}},
    "required": ["supported"],
    "additionalProperties": False,
}


def _blocks(question: str, context: Sequence[str], reference: str | None,
            limit: int) -> list[str]:
    parts = [f"[Question]\n{clip(question, limit)}"]
    if context:
        joined = "\n".join(f"- {clip(c, limit)}" for c in context)
        parts.append(f"[Context]\n{clip(joined, limit)}")
    if reference is not None:
        parts.append(f"[Reference answer]\n{clip(reference, limit)}")
    return parts


def rubric_messages(
    *, style: str, criterion: str, description: str, question: str, answer: str,
    context: Sequence[str], reference: str | None, low: int, high: int, limit: int,
    rationale: bool = True,
) -> list[Message]:
    """The conversation asking for one criterion's score of one answer."""
    parts = _blocks(question, context, reference, limit)
    parts.append(f"[Answer to grade]\n{clip(answer, limit)}")
    parts.append(
        f"[Criterion: {criterion}]\n{description}\n\n"
        f"Rate the answer on {criterion} from {low} to {high}. Reply with only JSON: "
        + answer_shape("score", f'"<{low}-{high}>"', rationale))
    return [Message(role="system", content=PROMPT_STYLES[style]),
            Message(role="user", content="\n\n".join(parts))]


def pairwise_messages(
    *, criterion: str, question: str, first: str, second: str, context: Sequence[str],
    limit: int, rationale: bool = True,
) -> list[Message]:
    """The conversation asking which of two answers (shown as A and B) is better."""
    parts = _blocks(question, context, None, limit)
    parts.append(f"[Answer A]\n{clip(first, limit)}")
    parts.append(f"[Answer B]\n{clip(second, limit)}")
    parts.append(
        f"Which answer is better on {criterion}? The order of the answers says nothing "
        "about their quality, and a longer answer is not better for being longer. Reply "
        "with only JSON: " + answer_shape("winner", '"A" | "B" | "tie"', rationale))
    system = ("You are an impartial judge comparing two answers to the same question.")
    return [Message(role="system", content=system),
            Message(role="user", content="\n\n".join(parts))]


def support_messages(*, claim: str, context: Sequence[str], limit: int) -> list[Message]:
    """The conversation asking whether the context supports one claim."""
    joined = "\n".join(f"- {clip(c, limit)}" for c in context)
    user = (f"[Context]\n{clip(joined, limit)}\n\n[Claim]\n{clip(claim, limit)}\n\n"
            "Is the claim fully supported by the context (stated or directly implied by it)? "
            'Reply with only JSON: {"supported": "yes" | "no"}')
    system = ("You check claims against a context. Use only the context, not what you know.")
    return [Message(role="system", content=system), Message(role="user", content=user)]
