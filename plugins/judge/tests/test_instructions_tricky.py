"""Instruction checks against outputs that slip past a literal reading: a phrase wrapped
over two lines, a JSON document only Python reads."""

from __future__ import annotations

from typing import Any

import pytest
from aieng_judge import InstructionCheck, run_check


def check(kind: str, **fields: Any) -> InstructionCheck:
    """A check of ``kind``."""
    return InstructionCheck(kind=kind, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", [
    "As an  AI, I cannot help.",
    "As an\nAI language model, I cannot help.",
    "As\tan AI, I cannot help.",
    "as an\u00a0AI, I cannot help.",
])
def test_a_phrase_matches_across_any_white_space(text: str) -> None:
    """A forbidden phrase wrapped over two lines (or spaced twice) is still present; a
    required one likewise."""
    assert run_check(check("forbidden", keywords=("as an AI",)), text).passed is False
    assert run_check(check("keywords", keywords=("as an AI",)), text).passed is True


def test_a_phrase_still_needs_its_words_whole() -> None:
    """White space is flexible, the words are not."""
    made = check("forbidden", keywords=("as an AI",))
    assert run_check(made, "has anAI").passed is True
    assert run_check(made, "as an AIM").passed is True


@pytest.mark.parametrize("text", ['{"a": NaN}', '{"a": Infinity}', "[-Infinity]",
                                  '```json\n{"score": NaN}\n```'])
def test_json_refuses_python_only_constants(text: str) -> None:
    """``NaN`` and ``Infinity`` are not JSON (RFC 8259; a browser's ``JSON.parse``
    refuses them), though Python's ``json.loads`` reads them."""
    result = run_check(check("json"), text)
    assert result.passed is False
    assert "not valid JSON" in result.rationale
    schema = {"type": "object"}
    assert run_check(check("json_schema", schema=schema), text).passed is False
