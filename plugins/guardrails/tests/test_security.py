"""Guards on adversarial input: detectors in linear time on near-matches, placeholders
that user text cannot forge."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

from hypothesis import given, settings
from hypothesis import strategies as st

#: The IPv6 candidate pattern before its repetitions were bounded (quadratic on a long run
#: of hex digits and colons): what the bounded one must still find.
_IPV6_UNBOUNDED = re.compile(
    r"(?<![A-Za-z0-9_:.])[0-9A-Fa-f:]*:[0-9A-Fa-f:]*(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3})?"
    r"(?![A-Za-z0-9_:]|\.[0-9])", re.ASCII)


def _scan_in_a_subprocess(code: str, limit: float = 60.0) -> str:
    """Run ``code`` in a fresh interpreter, killed after ``limit`` seconds: a regular
    expression cannot be interrupted, so a quadratic scan would hang the test run."""
    try:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], timeout=limit,
                              capture_output=True, text=True, check=True)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the scan did not end within {limit} s") from None
    return done.stdout.strip()


def test_a_long_run_of_colons_and_hex_digits_scans_in_linear_time() -> None:
    """``:::...:g`` (or ``a:a:...``) made the IPv6 candidate pattern try every split of
    the run around a colon: quadratic, some 30 s per 50,000 characters, holding the GIL.
    Its repetitions are now bounded by an address's length; an address after the run is
    still found. (The wall-clock limit only keeps the test from hanging: unbounded, this
    scan takes minutes.)"""
    out = _scan_in_a_subprocess("""
        from aieng_guardrails import _pii
        _pii.SEGMENT = 10**7  # the whole text in one scan
        for run in (":" * 100_000 + "g", "a:" * 50_000 + "g", "1:" * 50_000 + "1.1.1.1x"):
            assert _pii.find_pii(run, ["ipv6"]) == [], run[:10]
        found = _pii.find_pii("a:" * 50_000 + "g 2001:db8::1 ok", ["ipv6"])
        print([d.value for d in found])
    """)
    assert out == "['2001:db8::1']"


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="0123456789abcdefABCDEF:.xg_ ", max_size=120))
def test_the_bounded_ipv6_pattern_finds_every_address_the_unbounded_one_did(
        text: str) -> None:
    """Bounding the pattern changed no detection: every valid address the unbounded
    pattern proposed is still proposed (a longer candidate is never a valid address)."""
    import ipaddress

    def valid(spans: list[re.Match[str]]) -> list[tuple[int, int]]:
        found = []
        for match in spans:
            try:
                ipaddress.IPv6Address(match.group())
            except ValueError:
                continue
            found.append(match.span())
        return found

    from aieng_guardrails import _pii

    assert valid(list(_pii._IPV6.finditer(text))) == \
        valid(list(_IPV6_UNBOUNDED.finditer(text)))


def test_a_caller_writing_a_placeholder_never_gets_another_callers_value() -> None:
    """Outside a run the vault key is the redacted prompt. A caller who writes another's
    redacted prompt literally (``mail <EMAIL_1>``, nothing to redact) had the same key: its
    answer got the other caller's address restored, whichever came first. Such a prompt now
    marks its key as taken, so that neither answer gets a value (the documented ambiguity)."""
    from aieng_guardrails import PIIGuard, PIIOptions
    from aieng_hookspecs.types import Completion, Message, Request

    def ask(text: str) -> Request:
        return Request(messages=(Message("user", text),))

    for forger_first in (False, True):
        for history in ((), (Message("assistant", "Whom to?"),)):
            guard = PIIGuard(PIIOptions(restore=True))

            def check(text: str, guard: PIIGuard = guard,
                      history: tuple[Message, ...] = history) -> str:
                request = Request(messages=(*history, Message("user", text)))
                verdict = guard.check_input(request)
                return request.prompt if verdict is None else verdict.text

            if forger_first:
                forged = check("mail <EMAIL_1>")
                check("mail alice@example.com")
            else:
                check("mail alice@example.com")
                forged = check("mail <EMAIL_1>")
            assert forged == "mail <EMAIL_1>"
            answer = guard.check_output(ask(forged), Completion(text="Sent to <EMAIL_1>."))
            assert answer is None or "alice@example.com" not in answer.text, \
                (forger_first, history)
