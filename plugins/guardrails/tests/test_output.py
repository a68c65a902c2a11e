"""The output guard: each check, each policy, and the ``fix`` retry through a pipeline."""

from __future__ import annotations

import pytest
from aieng_guardrails import OutputGuard, OutputGuardOptions, PIIGuard, PIIOptions, leak_spans
from aieng_hookspecs.types import Completion, Message, Request
from hypothesis import given, settings
from hypothesis import strategies as st

from aieng_core import Kernel
from aieng_core.testing import ScriptedBackend

pytestmark = pytest.mark.anyio

SYSTEM = ("You are the billing assistant of ACME. Never discuss refunds above fifty dollars "
          "without a manager. The escalation code is ZEBRA-7741.")
SCHEMA = {"type": "object", "properties": {"amount": {"type": "number"}},
          "required": ["amount"], "additionalProperties": False}


def request(text: str = "Hi", **kwargs: object) -> Request:
    """A request with the billing system message."""
    return Request(messages=(Message("system", SYSTEM), Message("user", text)),
                   **kwargs)  # type: ignore[arg-type]


async def check(guard: OutputGuard, text: str, req: Request | None = None) -> object:
    """The guard's verdict on ``text``."""
    return await guard.aieng_guard_output(req or request(), Completion(text=text))


def test_leak_spans_merge_overlapping_windows() -> None:
    """A long shared run of words is one span; a short one is none."""
    answer = "Sure! never discuss refunds above fifty dollars without a manager, ok?"
    spans = leak_spans(SYSTEM, answer, 6)
    assert [answer[s:e] for s, e in spans] == [
        "never discuss refunds above fifty dollars without a manager"]
    assert leak_spans(SYSTEM, "refunds above fifty", 6) == []


async def test_clean_answer_passes() -> None:
    """An answer with no violation gets no verdict."""
    assert await check(OutputGuard(), "Your invoice is attached.") is None


async def test_redact_policy_per_check() -> None:
    """Leak, canary, PII and blocked terms are replaced; findings never carry values."""
    guard = OutputGuard(OutputGuardOptions(canaries=("zebra-7741",),
                                           blocked_terms=("darn", "c++")))
    text = ("My rules: never discuss refunds above fifty dollars without a manager. "
            "Code ZEBRA-7741. Mail me at x@y.io. Darn, C++ is fun; darned.")
    verdict = await check(guard, text)
    assert verdict.action == "redact"
    assert verdict.text == ("My rules: [REDACTED]. Code [REDACTED]. Mail me at <EMAIL_1>. "
                            "[REDACTED], [REDACTED] is fun; darned.")
    kinds = [f.kind for f in verdict.findings]
    assert kinds.count("blocked_term") == 2
    assert {"system_prompt_leak", "canary_leak", "email"} <= set(kinds)
    assert not any("ZEBRA" in f.detail or "x@y.io" in f.detail for f in verdict.findings)
    assert await check(guard, verdict.text) is None  # idempotent


async def test_canary_spans_hold_after_characters_lower_case_lengthens() -> None:
    """``İ`` lower-cases to two characters: a canary after many of them is still redacted
    whole (its span is the original text's, not the lower-cased copy's)."""
    guard = OutputGuard(OutputGuardOptions(canaries=("ZEBRA-7741",)))
    verdict = await check(guard, "İİİİİİİİİ ZEBRA-7741 ok")
    assert verdict.action == "redact"
    assert verdict.text == "İİİİİİİİİ [REDACTED] ok"


@pytest.mark.parametrize("text", [
    "the code: ZEBRA\u200b-7741.",             # a zero-width space inside
    "the code: Z\u00adE\u200dBRA-7741.",      # a soft hyphen, a zero-width joiner
    "the code: \uff3a\uff25\uff22\uff32\uff21\uff0d\uff17\uff17\uff14\uff11.",  # fullwidth
])
async def test_hidden_and_fullwidth_characters_do_not_hide_a_canary_or_term(
    text: str,
) -> None:
    """As for PII, zero-width characters, soft hyphens and fullwidth forms cannot hide a
    canary or a blocked term: the whole span, hidden characters included, is redacted."""
    guard = OutputGuard(OutputGuardOptions(canaries=("zebra-7741",),
                                           blocked_terms=("internal use only",)))
    verdict = await check(guard, text)
    assert verdict.action == "redact"
    assert verdict.text == "the code: [REDACTED]."
    term = await check(guard, "INTERNAL\u200b USE \uff2f\uff2e\uff2c\uff39 draft")
    assert term.text == "[REDACTED] draft"
    assert [f.kind for f in term.findings] == ["blocked_term"]


@pytest.mark.parametrize("spacing", ["  ", "\n", " \t "])
async def test_a_blocked_term_matches_across_any_whitespace(spacing: str) -> None:
    """A line break or extra spaces between a blocked phrase's words do not hide it."""
    guard = OutputGuard(OutputGuardOptions(blocked_terms=("internal use only",)))
    verdict = await check(guard, f"this is internal{spacing}use only, see")
    assert verdict.action == "redact" and verdict.text == "this is [REDACTED], see"


async def test_block_policy() -> None:
    """``block`` replaces the answer with the block message."""
    guard = OutputGuard(OutputGuardOptions(policy="block", canaries=("ZEBRA-7741",)))
    verdict = await check(guard, "the code is ZEBRA-7741")
    assert verdict.action == "block" and verdict.text == "I can't share that answer."


async def test_schema_violations_cannot_be_redacted() -> None:
    """An answer that is not valid for the response schema is blocked under ``redact``."""
    guard = OutputGuard()
    req = request(response_schema=SCHEMA)
    assert await check(guard, '{"amount": 12.5}', req) is None
    verdict = await check(guard, '{"amount": "twelve"}', req)
    assert verdict.action == "block"
    assert "amount" in verdict.findings[0].detail
    verdict = await check(guard, "twelve dollars", req)
    assert verdict.findings[0].kind == "schema_invalid"
    assert "not JSON" in verdict.findings[0].detail


@pytest.mark.parametrize(("text", "problem"), [
    ('{"amount": NaN}', "NaN"),
    ('{"amount": -Infinity}', "Infinity"),
    ('{"amount": ' + "9" * 5000 + "}", "digits"),
    ("[" * 100_000 + "]" * 100_000, "nested"),
])
async def test_answers_json_parsers_refuse_are_schema_invalid(text: str, problem: str) -> None:
    """NaN and Infinity are no JSON (a strict parser refuses them), and a number or a
    nesting too large for Python's parser cannot be checked: each is a ``schema_invalid``
    block, not a pass and not an exception out of the guard."""
    verdict = await check(OutputGuard(), text, request(response_schema=SCHEMA))
    assert verdict.action == "block"
    assert [f.kind for f in verdict.findings] == ["schema_invalid"]
    assert problem in verdict.findings[0].detail


async def test_a_recursive_schema_over_a_deep_answer_is_schema_invalid() -> None:
    """A recursive schema (``$ref``) over a deeply nested answer exhausts Python's stack
    in validation: that is a ``schema_invalid`` block, not an exception out of the guard."""
    recursive = {"type": "array", "items": {"$ref": "#"}}
    req = request(response_schema=recursive)
    assert await check(OutputGuard(), "[[[]]]", req) is None
    verdict = await check(OutputGuard(), "[" * 900 + "]" * 900, req)
    assert verdict.action == "block"
    assert "nested" in verdict.findings[0].detail


async def test_fix_policy_retries_once_through_the_pipeline(aieng_kernel: Kernel) -> None:
    """``fix`` asks the backend again with the violation explained and keeps the fixed
    answer."""
    backend = ScriptedBackend(["amount: twelve", '{"amount": 12}'])
    guard = OutputGuard(OutputGuardOptions(policy="fix"))
    pipeline = aieng_kernel.compose({"llm": backend, "guard": guard})
    result = await pipeline.run(request("How much?", response_schema=SCHEMA))
    assert result.status == "ok" and result.answer == '{"amount": 12}'
    assert len(backend.requests) == 2
    retry = backend.requests[1].messages
    assert retry[-2] == Message("assistant", "amount: twelve")
    assert retry[-1].role == "user" and "not valid JSON" in retry[-1].content
    assert "fixed by one retry" in result.output_verdicts[0].findings[0].detail


async def test_fix_policy_blocks_when_the_retry_fails(aieng_kernel: Kernel) -> None:
    """A retry that still leaks the canary is blocked."""
    backend = ScriptedBackend(["code ZEBRA-7741", "still ZEBRA-7741"])
    guard = OutputGuard(OutputGuardOptions(policy="fix", canaries=("ZEBRA-7741",)))
    pipeline = aieng_kernel.compose({"llm": backend, "guard": guard})
    result = await pipeline.run(request("What's the code?"))
    assert result.status == "blocked" and len(backend.requests) == 2
    assert "ZEBRA" not in result.answer
    assert "confidential marker" in backend.requests[1].prompt
    assert any("still present" in f.detail for f in result.output_verdicts[0].findings)


async def test_fix_without_a_pipeline_blocks() -> None:
    """Outside a pipeline there is nothing to retry through: the answer is blocked."""
    guard = OutputGuard(OutputGuardOptions(policy="fix", canaries=("ZEBRA",)))
    verdict = await check(guard, "ZEBRA")
    assert verdict.action == "block" and "no pipeline context" in verdict.findings[0].detail


def test_options_are_validated() -> None:
    """Bad options fail with the option's name."""
    with pytest.raises(ValueError, match="policy"):
        OutputGuardOptions(policy="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="redaction marker"):
        OutputGuardOptions(blocked_terms=("redacted",))
    with pytest.raises(ValueError, match="pii_kinds"):
        OutputGuardOptions(pii_kinds=("email", "dna"))


@pytest.mark.parametrize("field", ["canaries", "blocked_terms", "pii_kinds"])
def test_a_lone_string_is_no_list(field: str) -> None:
    """``canaries="XYZ-123"`` from Python is a type error, not seven one-character canaries
    (which every answer would contain, so every answer would be blocked)."""
    with pytest.raises(TypeError, match="got the string 'XYZ-123'"):
        OutputGuardOptions(**{field: "XYZ-123"})  # type: ignore[arg-type]
    assert OutputGuardOptions(canaries=["XYZ-123"]).canaries == ("XYZ-123",)


@pytest.mark.parametrize("field", ["canaries", "blocked_terms"])
@pytest.mark.parametrize("blank", [" ", "\t", "  \n "])
def test_a_blank_canary_or_term_is_refused(field: str, blank: str) -> None:
    """A canary or blocked term of whitespace only matched every space of every answer
    (``"hello there"`` became ``"hello[REDACTED]there"``): it is a configuration error."""
    with pytest.raises(ValueError, match=f"{field}: .*blank"):
        OutputGuardOptions(**{field: ["ok", blank]})  # type: ignore[arg-type]


async def test_redacted_pii_gets_one_placeholder_per_value() -> None:
    """Two different e-mails in one answer get two placeholders, and one repeated gets
    one: each span used to be redacted on its own, every one as ``<EMAIL_1>``."""
    verdict = await check(OutputGuard(), "cc a@one.example, b@two.example and a@one.example")
    assert verdict.text == "cc <EMAIL_1>, <EMAIL_2> and <EMAIL_1>"


async def test_redaction_never_reuses_a_placeholder_of_the_request_or_answer() -> None:
    """Placeholders the input guards put in the request (``pii`` with ``restore``) or that
    the answer already holds are not reused: ``pii``, after this guard, would restore the
    model's own e-mail into the user's."""
    verdict = await check(OutputGuard(), "Sure, I will cc eve@evil.example.",
                          request("Write to <EMAIL_1> and <EMAIL_2>"))
    assert verdict.text == "Sure, I will cc <EMAIL_3>."
    verdict = await check(OutputGuard(), "To <EMAIL_1>, cc eve@evil.example.")
    assert verdict.text == "To <EMAIL_1>, cc <EMAIL_2>."


async def test_a_model_written_value_is_not_restored_as_the_users(aieng_kernel: Kernel) -> None:
    """The README's order, ``output-guard`` then ``pii`` with ``restore``: the user gets
    their own e-mail back, and the e-mail the model wrote stays redacted (it came back as
    the user's)."""
    backend = ScriptedBackend(lambda r: f"{r.prompt}; I cc eve@evil.example")
    pipeline = aieng_kernel.compose({"out": OutputGuard(),
                                     "pii": PIIGuard(PIIOptions(restore=True)),
                                     "llm": backend})
    result = await pipeline.run("write to bob@corp.example")
    assert backend.requests[0].prompt == "write to <EMAIL_1>"
    assert result.answer == "write to bob@corp.example; I cc <EMAIL_2>"


async def test_a_value_known_by_its_context_is_redacted() -> None:
    """``password = ...``: the secret is known by the words before it; each span used to
    be scanned again on its own, where nothing marks it, and stayed in the answer."""
    verdict = await check(OutputGuard(), "the password = hunter22! ok")
    assert verdict.action == "redact" and verdict.text == "the password = <SECRET_1> ok"


_LETTERS = "abcdefghijklmnopqrstuvwxyzéüøçñ"
_TERMS = st.lists(st.text(alphabet=_LETTERS, min_size=1, max_size=6), min_size=1,
                  max_size=3)
_AROUND = st.text(alphabet=" ,.;:!?()\"'\n", max_size=6)


def _any_case(data: st.DataObject, text: str) -> str:
    return "".join(c.upper() if data.draw(st.booleans()) else c for c in text)


@settings(max_examples=150, deadline=None)
@given(_TERMS, _AROUND, _AROUND, st.data())
def test_a_blocked_term_is_found_whole_in_any_case_and_spacing(
        words: list[str], before: str, after: str, data: st.DataObject) -> None:
    """A blocked term, written in any case with any whitespace between its words, between
    non-word characters is one violation whose span is exactly where it was written."""
    term = " ".join(words)
    shown = "".join(_any_case(data, word) + (data.draw(st.sampled_from([" ", "  ", "\n",
                                                                      "\t "]))
                                              if i < len(words) - 1 else "")
                    for i, word in enumerate(words))
    guard = OutputGuard(OutputGuardOptions(blocked_terms=[term]))
    found = guard.violations(request(), before + shown + after)
    assert [(v.kind, v.start, v.end, v.detail) for v in found] == [
        ("blocked_term", len(before), len(before) + len(shown), "blocked term #1")]


@settings(max_examples=150, deadline=None)
@given(_TERMS, st.sampled_from(["x", "é", "e\u0301", "9", "_", "\u0301"]), st.booleans())
def test_a_blocked_term_inside_a_longer_word_is_not_found(
        words: list[str], glued: str, left: bool) -> None:
    """Whole words only: a letter, a digit, an underscore or a combining accent (a
    decomposed ``é``, the same word as the composed one) glued to the term makes another
    word."""
    term = " ".join(words)
    glued = "e\u0301" if left and glued == "\u0301" else glued  # a mark follows a letter
    text = f"say {glued}{term} now" if left else f"say {term}{glued} now"
    guard = OutputGuard(OutputGuardOptions(blocked_terms=[term]))
    assert guard.violations(request(), text) == []


@pytest.mark.parametrize(("term", "text"), [
    ("हिन्द", "भाषा हिन्दी है"),   # a vowel sign (category Mc) ends the word
    ("cafe", "les cafe\u0301s"),      # a decomposed accent
    ("क", "कि"),                      # a dependent vowel after the term
])
def test_a_term_followed_by_a_combining_mark_of_any_script_is_inside_a_word(
        term: str, text: str) -> None:
    """Every combining mark (Unicode category M) belongs to the word it follows, not only
    the Latin accents: हिन्द is not a blocked term inside हिन्दी (its vowel sign is a
    mark that ``\\w`` leaves out)."""
    guard = OutputGuard(OutputGuardOptions(blocked_terms=[term]))
    assert guard.violations(request(), text) == []
    assert guard.violations(request(), f"{text} {term}.") != []
