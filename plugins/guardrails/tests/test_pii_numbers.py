"""The numbers ``pii`` writes are true and repeat: checksums against implementations
written here (not the plugin's), placeholders numbered by first appearance and the same in
another process, findings that name exactly the placeholders written, a conversation's
earlier turns keeping their numbers, and a guarded stream cut anywhere giving the answer
of the whole text."""

from __future__ import annotations

import json
import os
import string
import subprocess
import sys
from collections.abc import AsyncIterator

import anyio
import pytest
from aieng_guardrails import (
    OutputGuard,
    OutputGuardOptions,
    PIIGuard,
    PIIOptions,
    find_pii,
    iban_valid,
    luhn_valid,
    redact,
)
from aieng_guardrails._redact import PLACEHOLDER
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Delta, Message, Request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_pii import texts_with_pii

from aieng_core import Kernel
from aieng_core.testing import ScriptedBackend

PROPERTY = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


# -- checksums by other means -------------------------------------------------------------


def luhn_oracle(digits: str) -> bool:
    """Luhn by its definition: from the right, every second digit doubled and the digits
    of the products summed (not the plugin's ``-9``)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += sum(int(d) for d in str(value))
    return total % 10 == 0


def luhn_check_digit(body: str) -> str:
    """The digit that makes ``body + digit`` Luhn-valid, by brute force over the oracle."""
    return next(d for d in string.digits if luhn_oracle(body + d))


def mod97_oracle(iban: str) -> int:
    """ISO 13616 mod 97 by pieces of 9 digits (no big integer), letters A=10 .. Z=35 by
    their code points."""
    compact = iban.replace(" ", "")
    moved = compact[4:] + compact[:4]
    digits = "".join(c if c.isdigit() else str(ord(c) - ord("A") + 10) for c in moved)
    remainder = 0
    for at in range(0, len(digits), 7):
        remainder = int(f"{remainder}{digits[at:at + 7]}") % 97
    return remainder


def with_check_digits(country: str, bban: str) -> str:
    """The compact IBAN of ``country`` and ``bban`` with its check digits computed by the
    oracle (98 minus the remainder of the number with ``00``)."""
    check = 98 - mod97_oracle(f"{country}00{bban}")
    return f"{country}{check:02d}{bban}"


#: Text around the values: letters, spaces and punctuation that glue to no value.
SAFE_FILLER = st.text(alphabet="abcdefghij klmnop,;!?", max_size=20)
ISSUERS = ["4", "51", "55", "2221", "2720", "34", "37", "6011", "65", "35"]


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    """A card of a known issuer with its Luhn digit computed by the oracle."""
    prefix = draw(st.sampled_from(ISSUERS))
    length = 15 if prefix in ("34", "37") else draw(st.sampled_from([16, 16, 19]))
    middle = draw(st.text(alphabet=string.digits, min_size=length - len(prefix) - 1,
                          max_size=length - len(prefix) - 1))
    return prefix + middle + luhn_check_digit(prefix + middle)


@PROPERTY
@given(st.text(alphabet=string.digits, min_size=1, max_size=25))
def test_luhn_valid_is_luhn(digits: str) -> None:
    """``luhn_valid`` agrees with the definition on every digit string."""
    assert luhn_valid(digits) == luhn_oracle(digits)


@PROPERTY
@given(card_numbers(), st.sampled_from(["", " ", "-"]), SAFE_FILLER, SAFE_FILLER,
       st.data())
def test_a_valid_card_is_caught_and_one_changed_digit_is_not(
        number: str, separator: str, before: str, after: str, data: st.DataObject) -> None:
    """A Luhn-valid card of a known issuer is one ``credit_card`` detection, its exact
    span; with one digit changed (Luhn catches every single-digit error) it is none (of a
    grouped 19-digit one, its first 16 digits may still be a card by chance, as the
    README's rule says: the longest valid run of groups)."""
    grouped = separator.join(number[i:i + 4] for i in range(0, len(number), 4))
    text = f"{before} {grouped} {after}"
    start = len(before) + 1
    assert [(d.kind, d.start, d.end) for d in find_pii(text)] == [
        ("credit_card", start, start + len(grouped))]
    at = data.draw(st.integers(0, len(number) - 1))
    digit = data.draw(st.sampled_from([d for d in string.digits if d != number[at]]))
    changed = number[:at] + digit + number[at + 1:]
    assert not luhn_oracle(changed)
    grouped = separator.join(changed[i:i + 4] for i in range(0, len(changed), 4))
    found = find_pii(f"{before} {grouped} {after}")
    assert not [d for d in found if d.end - d.start == len(grouped)]
    if not separator or len(number) <= 16:  # no shorter run of groups has 13+ digits
        assert found == []


IBAN_COUNTRIES = ["DE", "FR", "GB", "NL", "ES", "IT", "CH", "BE", "PL"]


@st.composite
def iban_numbers(draw: st.DrawFn) -> str:
    """A compact IBAN: a country, check digits by the oracle, 11-30 upper-case
    alphanumerics."""
    country = draw(st.sampled_from(IBAN_COUNTRIES))
    bban = draw(st.text(alphabet=string.ascii_uppercase + string.digits, min_size=11,
                        max_size=30))
    return with_check_digits(country, bban)


@PROPERTY
@given(st.sampled_from(IBAN_COUNTRIES),
       st.text(alphabet=string.ascii_uppercase + string.digits, min_size=11, max_size=30),
       st.integers(0, 99))
def test_iban_valid_is_mod_97(country: str, bban: str, check: int) -> None:
    """``iban_valid`` agrees with ISO 13616's remainder 1 (computed piecewise here)."""
    candidate = f"{country}{check:02d}{bban}"
    assert iban_valid(candidate) == (mod97_oracle(candidate) == 1)


@PROPERTY
@given(iban_numbers(), st.booleans(), SAFE_FILLER, SAFE_FILLER, st.data())
def test_a_valid_iban_is_caught_and_one_changed_digit_is_not(
        iban: str, grouped: bool, before: str, after: str, data: st.DataObject) -> None:
    """A mod-97-valid IBAN, compact or grouped by four, is one ``iban`` detection, its
    exact span; with one digit changed it is no IBAN (mod 97 catches every single-digit
    change): no ``iban`` detection covers it (a shorter run of its groups may still be one
    by chance, as the README's rule says: the longest valid run)."""
    shown = " ".join(iban[i:i + 4] for i in range(0, len(iban), 4)) if grouped else iban
    text = f"{before} {shown} {after}"
    start = len(before) + 1
    assert [(d.kind, d.start, d.end) for d in find_pii(text)] == [
        ("iban", start, start + len(shown))]
    places = [i for i, c in enumerate(iban) if c.isdigit() and i >= 2]
    at = data.draw(st.sampled_from(places))
    digit = data.draw(st.sampled_from([d for d in string.digits if d != iban[at]]))
    changed = iban[:at] + digit + iban[at + 1:]
    assert mod97_oracle(changed) != 1
    shown = " ".join(changed[i:i + 4] for i in range(0, len(changed), 4)) if grouped \
        else changed
    found = find_pii(f"{before} {shown} {after}")
    assert not [d for d in found if d.kind == "iban" and d.end - d.start == len(shown)]
    if not grouped:
        assert not [d for d in found if d.kind == "iban"]


@pytest.mark.parametrize("text, phone", [
    ("call +1 415 555 0132 now", "+1 415 555 0132"),
    ("call +44 20 7946 0958.", "+44 20 7946 0958"),
    ("call +49-30-1234567 today", "+49-30-1234567"),
    ("call (212) 555-0199 now", "(212) 555-0199"),
    ("call (212)555-0199 now", "(212)555-0199"),
    ("call 415-555-0132 now", "415-555-0132"),
    ("call 415.555.0132 now", "415.555.0132"),
])
def test_documented_phone_formats_are_caught_whole(text: str, phone: str) -> None:
    """The README's phone formats: ``+CC ...`` with 8-15 digits, US ``(212) 555-0199``,
    ``415-555-0132``, ``415.555.0132``; the span is the whole number."""
    assert [(d.kind, d.value) for d in find_pii(text)] == [("phone", phone)]


@pytest.mark.parametrize("text", [
    "call +1 234 567",                    # 7 digits: too short
    "call +1 234 567 890 123 456 78",     # 16 digits: too long
    "call 115-555-0132",                  # a US area code starts with 2-9
    "on 2024-05-12 at 12:30",             # a date and a time
    "order 4155550132",                   # a plain digit string
])
def test_what_the_phone_formats_exclude(text: str) -> None:
    """Outside the documented formats (digit count, US area code, plain digits, dates)
    nothing is a phone."""
    assert [d for d in find_pii(text) if d.kind == "phone"] == []


# -- placeholders and findings ------------------------------------------------------------


def first_appearance_numbers(redacted: str) -> dict[str, list[int]]:
    """Per label, the placeholder numbers in order of first appearance."""
    seen: dict[str, list[int]] = {}
    for label, number in PLACEHOLDER.findall(redacted):
        numbers = seen.setdefault(label, [])
        if int(number) not in numbers:
            numbers.append(int(number))
    return seen


@PROPERTY
@given(texts_with_pii())
def test_placeholders_are_numbered_by_first_appearance(case: tuple[str, list[str]]) -> None:
    """In a text holding no placeholder, each label's placeholders read 1, 2, 3... in the
    order their values first appear, and one value has one placeholder."""
    text, _ = case
    if PLACEHOLDER.search(text):
        return
    result = redact(text)
    for numbers in first_appearance_numbers(result.text).values():
        assert numbers == list(range(1, len(numbers) + 1))
    assert len(set(result.mapping.values())) == len(result.mapping)


@PROPERTY
@given(texts_with_pii())
def test_findings_name_exactly_the_placeholders_written(case: tuple[str, list[str]]) -> None:
    """The guard's findings are true: the original text with each finding's span replaced
    by the placeholder its detail names is the redacted text, so there are as many
    findings as placeholders written, at the places they say."""
    text, _ = case
    verdict = PIIGuard().check_input(Request(messages=(Message("user", text),)))
    assert verdict is not None and verdict.text is not None
    pieces, at = [], 0
    for finding in sorted(verdict.findings, key=lambda f: f.start):
        assert finding.detail.startswith(f"{finding.kind} ({finding.end - finding.start} "
                                         "characters) replaced by <")
        pieces += [text[at:finding.start], finding.detail.rpartition(" ")[2]]
        at = finding.end
    pieces.append(text[at:])
    assert "".join(pieces) == verdict.text


@PROPERTY
@given(st.lists(texts_with_pii().map(lambda c: c[0]), min_size=2, max_size=4))
def test_earlier_turns_keep_their_placeholders(turns: list[str]) -> None:
    """A chat sends its whole history each turn: the values of the earlier turns keep the
    placeholders they had when those turns were the conversation (numbering by first
    appearance is stable under appending messages)."""
    if any(PLACEHOLDER.search(turn) for turn in turns):
        return
    guard = PIIGuard()
    messages = [Message("user" if i % 2 == 0 else "assistant", turn)
                for i, turn in enumerate(turns)]
    whole = guard.check_input(Request(messages=tuple(messages)))
    assert whole is not None and whole.messages is not None
    for size in range(1, len(messages)):
        prefix = guard.check_input(Request(messages=tuple(messages[:size])))
        if prefix is None:  # nothing to redact in these turns
            contents = [m.content for m in messages[:size]]
        elif prefix.messages is None:  # one message: the verdict's text is it
            contents = [prefix.text]
        else:
            contents = [m.content for m in prefix.messages]
        assert contents == [m.content for m in whole.messages[:size]]


_CHILD = """
import json, sys
from aieng_guardrails import redact
print(json.dumps([[r.text, r.mapping] for r in map(redact, json.loads(sys.stdin.read()))]))
"""


def test_placeholders_are_the_same_in_another_process() -> None:
    """Two processes with different hash seeds write the same placeholders for the same
    texts (no ``hash()`` or set order reaches a number)."""
    texts = ["mail a@x.io, b@y.io, a@x.io; card 4111 1111 1111 1111 and c@z.io",
             "ip 10.0.0.1 and 10.0.0.2, ssn 123-45-6789, <EMAIL_1> taken, d@w.io",
             ("iban DE89 3704 0044 0532 0130 00 then GB82WEST12345698765432 then again "
              "DE89 3704 0044 0532 0130 00; key sk-proj-Abc123Def456Ghi789Jkl012")]
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "OMP_NUM_THREADS": "1"}
        done = subprocess.run([sys.executable, "-c", _CHILD], input=json.dumps(texts),
                              capture_output=True, text=True, env=env, check=True,
                              timeout=60)
        outputs.append(json.loads(done.stdout))
    here = [[r.text, r.mapping] for r in map(redact, texts)]
    assert outputs[0] == outputs[1] == here


# -- a guarded stream cut anywhere ----------------------------------------------------------


class CutStream(ScriptedBackend):
    """A backend double that streams its reply in the pieces it is given."""

    def __init__(self, reply: str, cuts: list[int]) -> None:
        super().__init__([reply])
        self.pieces = [reply[a:b] for a, b in zip([0, *cuts], [*cuts, len(reply)],
                                                  strict=True)]

    @hookimpl
    def aieng_stream(self, request: Request) -> AsyncIterator[Delta] | None:
        return self._pieces(request)

    async def _pieces(self, request: Request) -> AsyncIterator[Delta]:
        self.requests.append(request)
        for index, piece in enumerate(self.pieces):
            yield Delta(text=piece, index=index)
        yield Delta(text="", index=len(self.pieces), finish_reason="stop")


async def answer_of(reply: str, cuts: list[int] | None) -> tuple[str, str]:
    """``(answer, shown)`` of a pipeline (``output-guard``, ``pii`` with ``scan_output``)
    whose model writes ``reply``: not streamed (``cuts`` None) or streamed in pieces."""
    deltas: list[Delta] = []
    async with Kernel() as kernel:
        pipeline = kernel.compose(
            {"out": OutputGuard(OutputGuardOptions(policy="redact",
                                                   blocked_terms=["internal use only"])),
             "pii": PIIGuard(PIIOptions(restore=True)),
             "llm": CutStream(reply, cuts or [])},
            stream="guarded")
        result = await pipeline.run("hello", on_delta=None if cuts is None
                                    else deltas.append)
    return result.answer, "".join(d.text for d in deltas)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts_with_pii(), st.data())
def test_a_guarded_stream_cut_anywhere_gives_the_whole_text_answer(
        case: tuple[str, list[str]], data: st.DataObject) -> None:
    """A model's answer with e-mails, cards, IBANs... streamed in random pieces (values cut
    in the middle) reaches the caller as exactly the answer of the same text unstreamed."""
    reply = case[0] + " for internal use only"
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(reply) - 1)), max_size=12)))
    whole, _ = anyio.run(answer_of, reply, None)
    streamed, shown = anyio.run(answer_of, reply, cuts)
    assert streamed == shown == whole
    assert "internal use only" not in whole
