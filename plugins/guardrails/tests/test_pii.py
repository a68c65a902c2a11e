"""PII and secret detection, redaction and restoration: examples and properties."""

from __future__ import annotations

import base64
import json
import random
import re
import string

import pytest
from aieng_guardrails import (
    PIIGuard,
    Vault,
    find_pii,
    iban_valid,
    luhn_valid,
    redact,
    restore,
    ssn_valid,
)
from aieng_hookspecs.types import Message, Request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def kinds(text: str) -> list[str]:
    """The kinds found in ``text``, in order."""
    return [d.kind for d in find_pii(text)]


@pytest.mark.parametrize("text, kind", [
    ("write to jane.doe@example.com today", "email"),
    ("o'brien+tag@mail.example.co.uk", "email"),
    ("call +1 (555) 010-9999 now", "phone"),
    ("call +44 20 7946 0958", "phone"),
    ("call 415-555-0132", "phone"),
    ("call (212) 555 0199", "phone"),
    ("card 4111 1111 1111 1111", "credit_card"),
    ("card 5500-0000-0000-0004", "credit_card"),
    ("amex 378282246310005", "credit_card"),
    ("iban DE89 3704 0044 0532 0130 00", "iban"),
    ("iban GB82WEST12345698765432", "iban"),
    ("host 192.168.1.20 is down", "ipv4"),
    ("host 2001:db8::8a2e:370:7334", "ipv6"),
    ("link-local fe80::1%eth0 hmm", "ipv6"),
    ("ssn 123-45-6789", "ssn"),
    ("key sk-proj-Abc123Def456Ghi789Jkl012", "api_key"),
    ("token ghp_" + "a1B2" * 9, "api_key"),
    ("aws AKIAIOSFODNN7EXAMPLE", "api_key"),
    ("slack xoxb-1234567890-abcdefghij", "api_key"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
     "jwt"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
     "private_key"),
    ("password = hunter22!", "secret"),
    ("token Zx9Kq2Lm8Np4Rt6Vw1Yb3Cd5Ef7Gh0Ij here", "secret"),
])
def test_detects_each_kind(text: str, kind: str) -> None:
    """Each detector finds its kind in a typical sentence, and only that."""
    assert kinds(text) == [kind]


@pytest.mark.parametrize("text", [
    "the meeting is on 2024-01-15 at 12:30:45",
    "order number 123456789012 and 4111111111111112",  # the card fails Luhn
    "version 1.2.3 and build 10.0.19045",
    "the address 999.1.1.1 is not valid, nor is 01.02.03.04",
    "ssn 000-12-3456, 666-12-3456, 900-12-3456, 123-00-4567, 123-45-0000",
    "iban DE00 3704 0044 0532 0130 00",  # bad checksum
    "std::vector<int> and Foo::Bar::baz",
    "a git sha 3f786850e387550fdab836ed7e6dc881de23001b",
    "phone? 12345678 is just a number, as is 555 1234",
    "prices 1,234.56 and 9,999,999",
    "user@localhost has no domain",
])
def test_look_alikes_are_not_pii(text: str) -> None:
    """Dates, plain numbers, versions, invalid checksums and code are left alone."""
    assert kinds(text) == []


def test_validators() -> None:
    """Luhn, mod-97 and the SSA rules accept and reject known values."""
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("DE89 3704 0044 0532 0130 00") and not iban_valid("DE88370400440532013000")
    assert ssn_valid("123", "45", "6789") and not ssn_valid("666", "45", "6789")
    assert not luhn_valid("٤١١١")  # unicode digits are no card digits


def test_redaction_placeholders_and_findings_never_leak() -> None:
    """Placeholders are numbered per label; the same value gets the same placeholder."""
    text = "a@x.io, b@y.io and again a@x.io; card 4111 1111 1111 1111"
    result = redact(text)
    assert result.text == "<EMAIL_1>, <EMAIL_2> and again <EMAIL_1>; card <CREDIT_CARD_1>"
    assert result.mapping == {"<EMAIL_1>": "a@x.io", "<EMAIL_2>": "b@y.io",
                              "<CREDIT_CARD_1>": "4111 1111 1111 1111"}
    assert restore(result.text, result.mapping) == text


def test_existing_placeholders_are_not_reused() -> None:
    """A text that already holds ``<EMAIL_1>`` keeps it; the new email gets ``<EMAIL_2>``."""
    text = "literal <EMAIL_1> and real c@d.io"
    result = redact(text)
    assert result.text == "literal <EMAIL_1> and real <EMAIL_2>"
    assert restore(result.text, result.mapping) == text


def test_unknown_kind_is_an_error() -> None:
    """Asking for a kind that does not exist names the valid ones."""
    with pytest.raises(ValueError, match="unknown PII kind.*email"):
        find_pii("x", ["emial"])


def test_vault_is_bounded_and_expires() -> None:
    """The vault evicts the oldest mapping beyond its size, and forgets after its TTL."""
    now = [0.0]
    vault = Vault(max_entries=2, ttl=10.0, clock=lambda: now[0])
    vault.put(["a"], {"<EMAIL_1>": "a@x.io"})
    vault.put(["b"], {"<EMAIL_1>": "b@x.io"})
    vault.put(["c"], {"<EMAIL_1>": "c@x.io"})
    assert vault.get(["a"]) == {} and vault.get(["b"]) == {"<EMAIL_1>": "b@x.io"}
    now[0] = 11.0
    assert vault.get(["c"]) == {} and len(vault) == 0
    with pytest.raises(ValueError, match="max_entries"):
        Vault(max_entries=0)


# -- properties ---------------------------------------------------------------------------

_ALNUM = string.ascii_uppercase + string.digits


@st.composite
def cards(draw: st.DrawFn) -> str:
    """A Luhn-valid card number with a real prefix, maybe grouped by spaces or dashes."""
    prefix = draw(st.sampled_from(["4", "51", "55", "2221", "34", "37", "6011", "65"]))
    length = 15 if prefix in ("34", "37") else 16
    body = prefix + "".join(draw(st.lists(st.sampled_from(string.digits),
                                          min_size=length - len(prefix) - 1,
                                          max_size=length - len(prefix) - 1)))
    for check in string.digits:
        if luhn_valid(body + check):
            number = body + check
            break
    separator = draw(st.sampled_from(["", " ", "-"]))
    return separator.join(number[i:i + 4] for i in range(0, len(number), 4))


@st.composite
def ibans(draw: st.DrawFn) -> str:
    """An IBAN with a correct mod-97 check, compact or grouped by four."""
    country = draw(st.sampled_from(["DE", "FR", "GB", "NL", "ES", "IT", "CH"]))
    bban = "".join(draw(st.lists(st.sampled_from(_ALNUM), min_size=12, max_size=26)))
    number = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    compact = f"{country}{98 - number % 97:02d}{bban}"
    assert iban_valid(compact)
    if draw(st.booleans()):
        return " ".join(compact[i:i + 4] for i in range(0, len(compact), 4))
    return compact


@st.composite
def ssns(draw: st.DrawFn) -> str:
    """A US SSN that follows the SSA rules."""
    area = draw(st.integers(1, 899).filter(lambda a: a != 666))
    return f"{area:03d}-{draw(st.integers(1, 99)):02d}-{draw(st.integers(1, 9999)):04d}"


_KEY_CHARS = string.ascii_letters + string.digits


@st.composite
def keys(draw: st.DrawFn) -> str:
    """An API key, a JWT or a PEM private key."""
    def chars(n: int, alphabet: str = _KEY_CHARS) -> str:
        return "".join(draw(st.lists(st.sampled_from(alphabet), min_size=n, max_size=n)))

    kind = draw(st.sampled_from(["openai", "github", "aws", "slack", "jwt", "pem"]))
    if kind == "openai":
        return "sk-" + chars(draw(st.integers(20, 48)))
    if kind == "github":
        return "ghp_" + chars(36)
    if kind == "aws":
        return "AKIA" + chars(16, string.ascii_uppercase + string.digits)
    if kind == "slack":
        return "xoxb-" + chars(10, string.digits) + "-" + chars(24)

    def part(data: object) -> str:
        raw = json.dumps(data).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    if kind == "jwt":
        claims = {"sub": chars(8), "n": draw(st.integers(0, 10**9))}
        return f"{part({'alg': 'HS256'})}.{part(claims)}.{chars(43)}"
    body = "\n".join(chars(64, _KEY_CHARS + "+/") for _ in range(draw(st.integers(1, 3))))
    return f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----"


VALUES = st.one_of(st.emails(), cards(), ibans(), ssns(), keys(),
                   st.ip_addresses(v=4).map(str))
FILLER = st.text(max_size=30)
PROPERTY = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def texts_with_pii(draw: st.DrawFn) -> tuple[str, list[str]]:
    """Random text with 1-4 generated values embedded, separated by spaces."""
    values = draw(st.lists(VALUES, min_size=1, max_size=4))
    pieces = [draw(FILLER)]
    for value in values:
        pieces.extend([value, draw(FILLER)])
    return " ".join(pieces), values


@PROPERTY
@given(texts_with_pii())
def test_no_generated_value_survives(case: tuple[str, list[str]]) -> None:
    """No generated email, card, IBAN, SSN, key or IP is left in the redacted text."""
    text, values = case
    redacted = redact(text).text
    for value in values:
        assert value not in redacted, (value, redacted)


@PROPERTY
@given(st.one_of(texts_with_pii().map(lambda c: c[0]), st.text(max_size=200)))
def test_redaction_is_idempotent(text: str) -> None:
    """Redacting a redacted text changes nothing."""
    once = redact(text).text
    assert redact(once).text == once


@PROPERTY
@given(st.one_of(texts_with_pii().map(lambda c: c[0]), st.text(max_size=200),
                 st.text(alphabet="<>_EMAIL1234@ab.", max_size=40)))
def test_restore_inverts_redact(text: str) -> None:
    """Restoring the placeholders gives back exactly the original text."""
    result = redact(text)
    assert restore(result.text, result.mapping) == text


@PROPERTY
@given(texts_with_pii())
def test_findings_never_carry_the_value(case: tuple[str, list[str]]) -> None:
    """The guard's findings name kind, span and placeholder, never the value itself."""
    text, values = case
    verdict = PIIGuard().check_input(
        Request(messages=(Message("user", text),)))
    assert verdict is not None and verdict.action == "redact"
    for finding in verdict.findings:
        assert all(value not in finding.detail for value in values)
        assert 0 <= finding.start < finding.end <= len(text)


def test_long_texts_are_scanned_in_windows_with_the_same_result() -> None:
    """A text longer than one window gives the detections of a one-pass scan, values on
    the window boundaries included."""
    from aieng_guardrails import _pii

    rng = random.Random(3)
    values = ["a@b.io", "4111 1111 1111 1111", "DE89 3704 0044 0532 0130 00", "10.1.2.3"]
    pieces = []
    for _ in range(9000):
        pieces.append(rng.choice(["lorem", "ipsum", "dolor 12", "sit"]))
        if rng.random() < 0.05:
            pieces.append(rng.choice(values))
    text = " ".join(pieces)
    assert len(text) > _pii.SEGMENT + 2 * _pii.OVERLAP
    windowed = find_pii(text)
    one_pass = _pii._find_all(text, set(_pii.KINDS), 4.0)
    assert windowed == one_pass and len(windowed) > 100


_HIDDEN_CHARS = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u202e"]
_FULLWIDTH = str.maketrans({c: chr(ord(c) + 0xFEE0) for c in string.digits + "@.-"})


@PROPERTY
@given(texts_with_pii(), st.lists(st.tuples(st.integers(0, 10_000),
                                            st.sampled_from(_HIDDEN_CHARS)), max_size=6),
       st.booleans())
def test_hidden_and_fullwidth_characters_hide_no_value(
        case: tuple[str, list[str]], inserts: list[tuple[int, str]], wide: bool) -> None:
    """Zero-width, soft-hyphen and bidi characters inside a value, or its digits written
    fullwidth, do not let it through: the same kinds are found as in the plain text, and
    the placeholders restore the original characters exactly."""
    text, _ = case
    disguised = text.translate(_FULLWIDTH) if wide else text
    for at, char in sorted(inserts, reverse=True):
        at %= len(disguised) + 1
        disguised = disguised[:at] + char + disguised[at:]
    result = redact(disguised)
    assert [d.kind for d in result.detections] == kinds(text)
    assert restore(result.text, result.mapping) == disguised
    assert redact(result.text).text == result.text
    for d in result.detections:
        assert disguised[d.start:d.end] == d.value


def test_zero_width_characters_inside_an_email_are_redacted_with_it() -> None:
    """``ada\\u200b@example.org`` is an e-mail to the model: it is redacted whole."""
    text = "write to a\u200bda@exa\u00admple.org now, card ４１１１ １１１１ １１１１ １１１１"
    result = redact(text)
    assert result.text == "write to <EMAIL_1> now, card <CREDIT_CARD_1>"
    assert result.mapping == {"<EMAIL_1>": "a\u200bda@exa\u00admple.org",
                              "<CREDIT_CARD_1>": "４１１１ １１１１ １１１１ １１１１"}


@pytest.mark.parametrize("text, redacted", [
    ("write to josé@example.com today", "write to <EMAIL_1> today"),
    ("mail müller@example.de now", "mail <EMAIL_1> now"),  # was "mü<EMAIL_1>"
    ("info@bücher.de, please", "<EMAIL_1>, please"),
    ("адрес: почта@пример.рф.", "адрес: <EMAIL_1>."),
    ("jose\u0301@example.com", "<EMAIL_1>"),  # decomposed: e + combining acute
    ("連絡先はtaro@example.jpです", "連絡先は<EMAIL_1>です"),  # CJK around it stays
])
def test_internationalized_emails_are_redacted_whole(text: str, redacted: str) -> None:
    """Accented, Cyrillic and IDN addresses are e-mails too: redacted whole, never only
    their ASCII tail; words of scripts written without spaces are not swallowed."""
    result = redact(text)
    assert result.text == redacted
    assert restore(result.text, result.mapping) == text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=string.ascii_letters + string.digits + "@.-_+!#$%&'*/=?^`{|}~ \n()<>",
               max_size=80))
def test_the_ascii_fast_path_finds_what_the_full_pattern_finds(text: str) -> None:
    """ASCII text is searched with the ASCII-only e-mail pattern (three times as fast):
    it finds exactly the spans the international pattern finds there."""
    from aieng_guardrails import _pii

    assert [m.span() for m in _pii._EMAIL_ASCII.finditer(text)] == \
        [m.span() for m in _pii._EMAIL.finditer(text)]


def test_many_detections_in_one_window_cost_linear_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each detection was checked against every span taken before it, and the masked copy
    of the text rebuilt once per detection: quadratic in the detections of one scan
    (40,000 addresses: minutes). Spans are now kept sorted and masked once per kind."""
    from aieng_guardrails import _pii

    monkeypatch.setattr(_pii, "SEGMENT", 10**7)  # the whole text in one scan
    text = "host 10.0.0.1, " * 40_000
    found = find_pii(text, ["ipv4", "ssn"])
    assert len(found) == 40_000
    assert all(d.kind == "ipv4" and d.value == "10.0.0.1" for d in found)


def test_unterminated_private_key_headers_cost_linear_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``-----BEGIN ... PRIVATE KEY-----`` repeated with no END line: each header looked
    for its END through the rest of the text (quadratic: minutes for this text); a key
    after them is still found whole."""
    from aieng_guardrails import _pii

    monkeypatch.setattr(_pii, "SEGMENT", 10**7)
    header = "-----BEGIN RSA PRIVATE KEY-----"
    key = f"{header}\nMIIEow\n-----END RSA PRIVATE KEY-----"
    assert find_pii(header * 20_000, ["private_key"]) == []
    found = find_pii(header * 20_000 + key, ["private_key"])
    assert [(d.start, d.value) for d in found] == [(0, header * 20_000 + key)]


def _cards_by_definition(text: str) -> list[tuple[int, int]]:
    """Card spans as the README defines them, slowly: in each run of digit groups, from
    the left, the longest run of whole groups with 13-19 digits, an issuer prefix and a
    valid Luhn checksum."""
    from aieng_guardrails import _pii

    spans = []
    for run in re.finditer(r"(?<![0-9])[0-9]+(?:[ -][0-9]+)*(?![0-9])", text):
        groups = [(m.start() + run.start(), m.end() + run.start())
                  for m in re.finditer(r"[0-9]+", run.group())]
        at = 0
        while at < len(groups):
            best = None
            for last in range(at, len(groups)):
                digits = re.sub(r"[ -]", "", text[groups[at][0]:groups[last][1]])
                if (13 <= len(digits) <= 19 and _pii._CARD_PREFIX.match(digits)
                        and luhn_valid(digits)):
                    best = last
            if best is None:
                at += 1
                continue
            spans.append((groups[at][0], groups[best][1]))
            at = best + 1
    return spans


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(["4111111111111111", "4111 1111 1111 1111",
                                           "5500-0000-0000-0004", "378282246310005"]),
                          st.text(alphabet="0123456789", min_size=1, max_size=6)),
                max_size=12),
       st.lists(st.sampled_from([" ", "-", "  ", ", "]), min_size=12, max_size=12))
def test_card_detection_matches_its_definition(parts: list[str], seps: list[str]) -> None:
    """The card detector (digits joined once per run, the issuer prefix checked once per
    start) finds exactly the spans of the definition."""
    from aieng_guardrails import _pii

    text = "".join(part + sep for part, sep in zip(parts, seps, strict=False))
    assert [(d.start, d.end) for d in _pii._cards(text)] == _cards_by_definition(text)


@pytest.mark.parametrize("text, redacted", [
    ("password=aaaaaa10.0.0.1", "password=<SECRET_1><IP_ADDRESS_1>"),
    ("secret: hunter2a@b.io", "secret: <EMAIL_1>"),
    ("api_key=abcdef4111111111111111 ok", "api_key=<SECRET_1><CREDIT_CARD_1> ok"),
])
def test_an_assigned_secret_beside_another_value_is_redacted_too(
        text: str, redacted: str) -> None:
    """The value of ``password=`` ran into the span another detector had taken, so it was
    dropped whole and its other characters stayed in clear (and ``redact`` was not
    idempotent: a second pass found them). The part beside the taken span is a secret."""
    result = redact(text)
    assert result.text == redacted
    assert redact(result.text).text == result.text
    assert restore(result.text, result.mapping) == text
