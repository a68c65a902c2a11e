"""Verifiable instruction checks: each kind, properties (built to pass passes, mutated
fails), options by name and per-sample checks, the conformance suite."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import aieng_judge
import pytest
from aieng_hookspecs.types import Sample
from aieng_judge import InstructionCheck, InstructionsJudge, InstructionsOptions, run_check
from hypothesis import assume, given
from hypothesis import strategies as st

from aieng_core import ConfigError, Kernel
from aieng_core.registry import PluginInfo
from aieng_core.testing.conformance import JudgeSuite, ScoreRanges

Register = Callable[..., AbstractContextManager[PluginInfo]]

WORD = st.from_regex(r"[a-z]{1,8}", fullmatch=True)
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"},
                                           "age": {"type": "integer", "minimum": 0}},
          "required": ["name", "age"]}


def check(kind: str, **fields: Any) -> InstructionCheck:
    """A check of ``kind``."""
    return InstructionCheck(kind=kind, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("made", "text", "passed"), [
    (check("json"), '{"a": 1}', True),
    (check("json"), '```json\n{"a": 1}\n```', True),
    (check("json"), '{"a": 1', False),
    (check("json_schema", schema=SCHEMA), '{"name": "x", "age": 3}', True),
    (check("json_schema", schema=SCHEMA), '{"name": "x", "age": -1}', False),
    (check("json_schema", schema=SCHEMA), '{"name": "x"}', False),
    (check("words", at_least=3), "one two three", True),
    (check("words", at_most=2), "one two three", False),
    (check("words", exactly=4), "don't stop-me now, please", True),
    (check("sentences", exactly=3), "One. Two! Three?", True),
    (check("sentences", at_most=1), "Version 2.5 is out. Really.", False),
    (check("paragraphs", exactly=2), "First para.\n\nSecond para.\n\n\n", True),
    (check("bullets", exactly=2), "Intro\n* one\n- two\nnot a bullet", True),
    (check("bullets", at_least=1), "no bullets **here**", False),
    (check("keywords", keywords=("Paris", "Seine")), "paris lies on the seine", True),
    (check("keywords", keywords=("Paris",), case_sensitive=True), "paris", False),
    (check("keywords", keywords=("cat",)), "concatenate", False),
    (check("forbidden", keywords=("sorry",)), "I am Sorry.", False),
    (check("forbidden", keywords=("sorry",)), "All good.", True),
    (check("lowercase"), "all lower, 123!", True),
    (check("lowercase"), "Not lower", False),
    (check("lowercase"), "123", False),
    (check("uppercase"), "SHOUT 1!", True),
    (check("ends_with", phrase="Any other questions?"), "Done. any other questions?  ", True),
    (check("ends_with", phrase="Bye", case_sensitive=True), "bye", False),
    (check("starts_with", phrase="Dear"), "  Dear Sir", True),
    (check("starts_with", phrase="Dear"), "Hello Dear", False),
])
def test_each_check(made: InstructionCheck, text: str, passed: bool) -> None:
    """Each kind passes and fails where IFEval's definition says."""
    result = run_check(made, text)
    assert result.passed is passed, result.rationale
    assert result.rationale


@given(st.lists(WORD, min_size=1, max_size=60), st.integers(0, 5))
def test_word_counts_built_to_pass_pass_and_mutants_fail(words: list[str], slack: int) -> None:
    """A text of n words passes exactly=n, at_least=n-slack and at_most=n+slack; adding a
    word breaks exactly and at_most=n."""
    text = " ".join(words)
    n = len(words)
    assert run_check(check("words", exactly=n), text).passed
    assert run_check(check("words", at_least=max(n - slack, 0)), text).passed
    assert run_check(check("words", at_most=n + slack), text).passed
    mutated = text + " extra"
    assert not run_check(check("words", exactly=n), mutated).passed
    assert not run_check(check("words", at_most=n), mutated).passed


@given(st.lists(st.lists(WORD, min_size=1, max_size=6), min_size=1, max_size=8))
def test_sentences_and_paragraphs(sentences: list[list[str]]) -> None:
    """n sentences joined with ". " count n; each on its own paragraph counts n
    paragraphs; merging two paragraphs changes the count."""
    made = [" ".join(words).capitalize() + "." for words in sentences]
    n = len(made)
    assert run_check(check("sentences", exactly=n), " ".join(made)).passed
    assert run_check(check("paragraphs", exactly=n), "\n\n".join(made)).passed
    if n > 1:
        merged = made[0] + " " + "\n\n".join(made[1:])
        assert not run_check(check("paragraphs", exactly=n), merged).passed


@given(st.lists(WORD, min_size=1, max_size=5, unique=True), st.lists(WORD, max_size=20))
def test_keywords_present_pass_removed_fail(keywords: list[str], filler: list[str]) -> None:
    """A text holding every keyword passes ``keywords`` and fails ``forbidden``; without
    one of them (removed everywhere) ``keywords`` fails."""
    filler = [w for w in filler if w not in keywords]
    text = " ".join(filler + keywords)
    assert run_check(check("keywords", keywords=tuple(keywords)), text).passed
    assert not run_check(check("forbidden", keywords=tuple(keywords)), text).passed
    removed = " ".join(filler + keywords[1:])
    assert not run_check(check("keywords", keywords=tuple(keywords)), removed).passed


@given(st.dictionaries(WORD, st.integers() | WORD | st.booleans(), max_size=5))
def test_json_documents_pass_and_truncations_fail(document: dict[str, Any]) -> None:
    """Any JSON object passes ``json``; cutting its last character makes it fail."""
    text = json.dumps(document)
    assert run_check(check("json"), text).passed
    assert not run_check(check("json"), text[:-1]).passed


@given(st.text(min_size=1, max_size=40))
def test_case_checks(text: str) -> None:
    """``text.lower()`` passes ``lowercase`` whenever it has a cased letter, and then
    upper-casing one letter makes it fail."""
    lowered = text.lower()
    assume(any(c.isalpha() and c.upper() != c for c in lowered))
    assume(lowered.lower() == lowered)
    assert run_check(check("lowercase"), lowered).passed
    index = next(i for i, c in enumerate(lowered) if c.isalpha() and c.upper() != c)
    mutated = lowered[:index] + lowered[index].upper() + lowered[index + 1:]
    assume(mutated != mutated.lower())
    assert not run_check(check("lowercase"), mutated).passed


@given(st.text(max_size=30), st.from_regex(r"[A-Za-z]{1,10}", fullmatch=True))
def test_starts_and_ends_with(body: str, phrase: str) -> None:
    """phrase + body starts with phrase, body + phrase ends with it."""
    assert run_check(check("starts_with", phrase=phrase), phrase + body).passed
    assert run_check(check("ends_with", phrase=phrase), body + phrase).passed


@pytest.mark.parametrize(("fields", "message"), [
    ({"kind": "words"}, "needs at_least, at_most or exactly"),
    ({"kind": "words", "exactly": 3, "at_most": 4}, "not both"),
    ({"kind": "words", "at_least": 5, "at_most": 4}, "exceeds"),
    ({"kind": "json", "at_least": 1}, "takes no"),
    ({"kind": "keywords"}, "keywords"),
    ({"kind": "ends_with"}, "phrase"),
    ({"kind": "json_schema"}, "schema"),
    ({"kind": "json_schema", "schema": {"type": "nonsense"}}, "schema is invalid"),
    ({"kind": "words", "exactly": 1, "name": "Bad Name"}, "lower-case"),
    ({"kind": "lowercase", "name": "all"}, "taken"),
    ({"kind": "spelling"}, "kind"),
])
def test_bad_checks_are_refused(fields: dict[str, Any], message: str) -> None:
    """Malformed checks fail at construction, saying what is wrong."""
    with pytest.raises(ValueError, match=message):
        InstructionCheck(**fields)


def test_judge_scores_every_check_and_all() -> None:
    """One 1.0 / 0.0 score per check, and instruction.all; no checks, no score."""
    judge = InstructionsJudge(InstructionsOptions(checks=(
        check("words", at_most=5), check("lowercase"),
        check("keywords", keywords=("paris",), name="mentions_paris"))))
    scores = judge.aieng_judge(Sample(input="q", output="paris is nice"))
    assert [(s.name, s.value) for s in scores or []] == [
        ("instruction.words", 1.0), ("instruction.lowercase", 1.0),
        ("instruction.mentions_paris", 1.0), ("instruction.all", 1.0)]
    failing = judge.aieng_judge(Sample(input="q", output="Paris Is Nice"))
    assert {s.name: s.value for s in failing or []}["instruction.all"] == 0.0
    assert "instruction.lowercase" in (failing or [])[-1].rationale
    assert InstructionsJudge().aieng_judge(Sample(input="q", output="x")) is None


def test_per_sample_checks_from_metadata() -> None:
    """A sample brings its own checks under metadata["instructions"] (IFEval style);
    malformed ones are named with the sample's id."""
    judge = InstructionsJudge()
    sample = Sample(input="q", output="HELLO", id="s1",
                    metadata={"instructions": [{"kind": "uppercase"},
                                               {"kind": "words", "exactly": 1}]})
    assert [s.value for s in judge.aieng_judge(sample) or []] == [1.0, 1.0, 1.0]
    bad = Sample(input="q", output="x", id="s2", metadata={"instructions": [{"kind": "nope"}]})
    with pytest.raises(ValueError, match=r"sample s2 metadata\['instructions'\]\[0\]"):
        judge.aieng_judge(bad)
    twice = Sample(input="q", output="x", id="s3", metadata={"instructions": [
        {"kind": "lowercase"}, {"kind": "lowercase"}]})
    with pytest.raises(ValueError, match="two checks are named"):
        judge.aieng_judge(twice)
    # A sample's check named as an option's replaces it for that sample (it failed the item).
    limited = InstructionsJudge(InstructionsOptions(checks=(check("words", at_most=1),)))
    longer = Sample(input="q", output="three words here", id="s4",
                    metadata={"instructions": [{"kind": "words", "at_most": 5}]})
    assert [(s.name, s.value) for s in limited.aieng_judge(longer) or []] == [
        ("instruction.words", 1.0)]


def test_options_from_dicts() -> None:
    """Options accept check tables (as Python dicts) and refuse unknown fields."""
    options = InstructionsOptions(checks=({"kind": "json"},))  # type: ignore[arg-type]
    assert options.checks == (check("json"),)
    with pytest.raises(ValueError, match=r"checks\[0\].*unexpected keyword"):
        InstructionsOptions(checks=({"kind": "json", "minimum": 1},))  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_by_name_in_a_pipeline(aieng_kernel: Kernel, register_plugin: Register) -> None:
    """``use = "instructions"`` with ``[[checks]]`` tables builds and scores in a run."""
    config = {"pipeline": {"name": "ifeval", "stages": ["judge"]},
              "components": {"format": {"use": "instructions", "checks": [
                  {"kind": "words", "at_least": 1}, {"kind": "ends_with", "phrase": "?"}]}}}
    with register_plugin(aieng_judge, "judge"):
        pipeline = aieng_kernel.pipeline(config)
        async with pipeline:
            result = await pipeline.run("hello")
    assert {s.name: s.value for s in result.scores} == {
        "instruction.words": 0.0, "instruction.ends_with": 0.0, "instruction.all": 0.0}
    assert all(s.judge == "format" for s in result.scores)
    with register_plugin(aieng_judge, "judge"):
        again = aieng_kernel.pipeline(pipeline.to_dict())
    assert again.to_dict() == pipeline.to_dict()  # save -> load is the identity
    bad = {"pipeline": {"name": "bad", "stages": ["judge"]},
           "components": {"format": {"use": "instructions", "checks": [
               {"kind": "words", "at_least": "three"}]}}}
    with register_plugin(aieng_judge, "judge"), pytest.raises(ConfigError, match="format"):
        aieng_kernel.pipeline(bad)


class TestInstructionsConformance(JudgeSuite):
    """``instructions`` passes the judge conformance suite."""

    score_ranges: ClassVar[ScoreRanges] = {f"instruction.{name}": (0.0, 1.0) for name in (
        "json", "words", "lowercase", "forbidden", "ends_with", "all")}

    @pytest.fixture
    def component(self) -> InstructionsJudge:
        """A judge with one check of each family."""
        return InstructionsJudge(InstructionsOptions(checks=(
            check("json"), check("words", at_most=10), check("lowercase"),
            check("forbidden", keywords=("lyon",)), check("ends_with", phrase="."))))
