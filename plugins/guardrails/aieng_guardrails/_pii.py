"""Detect personal data and secrets in text: regular expressions plus validators.

Every detector proposes candidate spans with a regular expression and keeps only those a
validator accepts (Luhn for cards, mod-97 for IBANs, :mod:`ipaddress` for IPs, the SSA's
area / group / serial rules for SSNs), so plain numbers, dates and version strings are
not reported. Patterns are ASCII-only on purpose (``\\d`` would also match Arabic-Indic
digits, which no card or phone number uses), save e-mail addresses, whose letters may be
any script's (``josé@example.com``). Detectors see the text with invisible
characters (zero-width, soft hyphen, bidi controls) removed and fullwidth forms folded to
ASCII, so ``ada\\u200b@example.org`` or fullwidth card digits cannot hide a value; spans and
values are those of the original text.
"""

from __future__ import annotations

import bisect
import ipaddress
import itertools
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

import attrs
from aieng_hookspecs import stop_if_cancelled

from ._injection import _ZERO_WIDTH

__all__ = [
    "KINDS",
    "PLACEHOLDER_LABELS",
    "Detection",
    "find_pii",
    "iban_valid",
    "luhn_valid",
    "shannon_entropy",
    "ssn_valid",
]

#: Every kind this module detects, with the label of its placeholder (``<EMAIL_1>``).
PLACEHOLDER_LABELS: dict[str, str] = {
    "private_key": "PRIVATE_KEY",
    "jwt": "JWT",
    "api_key": "API_KEY",
    "email": "EMAIL",
    "iban": "IBAN",
    "credit_card": "CREDIT_CARD",
    "ssn": "SSN",
    "ipv6": "IP_ADDRESS",
    "ipv4": "IP_ADDRESS",
    "phone": "PHONE",
    "secret": "SECRET",
}
KINDS: tuple[str, ...] = tuple(PLACEHOLDER_LABELS)


@attrs.frozen
class Detection:
    """One piece of personal data or one secret found in a text.

    :param kind: one of :data:`KINDS`.
    :param start: offset of the first character.
    :param end: offset one past the last character.
    :param value: the matched text (never put into a finding's detail).
    """

    kind: str
    start: int
    end: int
    value: str


# -- validators ---------------------------------------------------------------------------


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn checksum."""
    if not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


_CARD_PREFIX = re.compile(r"4|5[1-5]|2(?:2[2-9][1-9]|2[3-9]|[3-6]|7[01]|720)|3[47]|3[0689]"
                          r"|6(?:011|5|4[4-9]|2)|35")


def iban_valid(candidate: str) -> bool:
    """Whether ``candidate`` (spaces allowed) is an IBAN with a valid mod-97 checksum."""
    compact = candidate.replace(" ", "").upper()
    if not (15 <= len(compact) <= 34) or not compact.isascii() or not compact.isalnum():
        return False
    if not (compact[:2].isalpha() and compact[2:4].isdigit()):
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


def ssn_valid(area: str, group: str, serial: str) -> bool:
    """Whether an SSN's parts follow the SSA rules: area not 000, 666 or 900-999,
    group not 00, serial not 0000."""
    return (area != "000" and area != "666" and not area.startswith("9")
            and group != "00" and serial != "0000")


def shannon_entropy(text: str) -> float:
    """Bits per character of ``text``'s character distribution."""
    if not text:
        return 0.0
    counts = Counter(text)
    size = len(text)
    return -sum(n / size * math.log2(n / size) for n in counts.values())


# -- detectors ----------------------------------------------------------------------------

_A = re.ASCII
#: What a taken span is overwritten with for the detectors that run after: no pattern
#: treats it as part of a value.
_MASK = "\x00"

# Internationalized addresses (``josé@example.com``, ``info@bücher.de``): a letter or digit
# beyond ASCII, or a combining mark, counts as a letter in both parts; scripts written
# without spaces (CJK, kana, Hangul, Thai...) do not, or an address would run into the
# words around it.
_INTL = (r"(?:[^\W\x00-\x7f\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u2e80-\u9fff"
         r"\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]|[\u0300-\u036f])")
_ATOM = rf"(?:[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~-]|{_INTL})"
_ALNUM = rf"(?:[A-Za-z0-9]|{_INTL})"
#: The ASCII-only form: what ``_EMAIL`` finds in ASCII text, three times as fast there (the
#: international classes are tried at every position of the text).
_EMAIL_ASCII = re.compile(
    r"(?<![A-Za-z0-9!#$%&'*+/=?^_`{|}~.-])"
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?![A-Za-z0-9-]|\.[A-Za-z0-9])", _A)
_EMAIL = re.compile(
    rf"(?<![A-Za-z0-9!#$%&'*+/=?^_`{{|}}~.-])(?<!{_INTL})"
    rf"{_ATOM}+(?:\.{_ATOM}+)*"
    rf"@(?:{_ALNUM}(?:(?:{_ALNUM}|-)*{_ALNUM})?\.)+"
    rf"(?:[A-Za-z]|{_INTL})(?:(?:{_ALNUM}|-)*{_ALNUM})?"
    rf"(?!{_ALNUM}|-|\.{_ALNUM})")

# A run of digit groups separated by single spaces or dashes; cards are searched inside.
_DIGIT_RUN = re.compile(r"(?<![0-9])[0-9]+(?:[ -][0-9]+)*(?![0-9])", _A)
_GROUP = re.compile(r"[0-9]+", _A)

# Each group possessive: a run of letters and digits is one group, never split into
# several (with the space optional, ``(?: ?[A-Z0-9]+)+`` could split a run of n characters
# 2^(n-1) ways, harmless only while nothing follows it that can fail).
_IBAN_RUN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]++)+", _A)

_SSN = re.compile(r"(?<![0-9-])([0-9]{3})([- ])([0-9]{2})\2([0-9]{4})(?![0-9]|-[0-9])", _A)

_IPV4 = re.compile(r"(?<![0-9.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![0-9]|\.[0-9])", _A)
# Each side of a colon is bounded by an address's length (39 characters): unbounded, a
# long run of colons and hex digits is tried at every split (quadratic).
_IPV6 = re.compile(r"(?<![A-Za-z0-9_:.])[0-9A-Fa-f:]{0,39}:[0-9A-Fa-f:]{0,39}"
                   r"(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3})?(?![A-Za-z0-9_:]|\.[0-9])", _A)

_PHONE_INTL = re.compile(
    r"(?<![\w+])\+[0-9]{1,3}(?:[ .-]?\(?[0-9]{1,4}\)?){1,2}(?:[ .-]?[0-9]{2,4}){1,4}(?![0-9])", _A)
_PHONE_US = re.compile(
    r"(?<![\w+(-])(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[-. ])[0-9]{3}[-. ][0-9]{4}(?![0-9]|-[0-9])",
    _A)

# A PEM key: a header, then the first footer after it (searched once per header found, so
# headers without a footer cost no rescans of the text after them).
_PEM_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----", _A)
_PEM_END = re.compile(r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----", _A)
_JWT = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"
                  r"(?![A-Za-z0-9_.-])", _A)
_KEY_PATTERNS = (
    r"sk-(?:proj-|live-|test-|ant-[a-z0-9]+-)?[A-Za-z0-9_-]{16,}",  # OpenAI, Anthropic
    r"(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}",                  # Stripe
    r"gh[pousr]_[A-Za-z0-9]{30,}",                                    # GitHub tokens
    r"github_pat_[A-Za-z0-9_]{22,}",
    r"(?:AKIA|ASIA|AGPA|AIDA|AROA)[A-Z0-9]{16}",                      # AWS key ids
    r"xox[abposr]-[A-Za-z0-9-]{10,}",                                 # Slack
    r"AIza[0-9A-Za-z_-]{35}",                                         # Google
    r"glpat-[A-Za-z0-9_-]{20,}",                                      # GitLab
    r"hf_[A-Za-z0-9]{30,}",                                           # Hugging Face
)
_API_KEY = re.compile(r"(?<![A-Za-z0-9_-])(?:" + "|".join(_KEY_PATTERNS) + r")(?![A-Za-z0-9_-])",
                      _A)
# ``password = hunter22``: the value after a secret-sounding name. It stops at a span
# another detector took (masked): running into it, it would be dropped whole.
_ASSIGNED = re.compile(
    r"(?i:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|password|passwd"
    r"|client[_-]?secret)[\"']?\s*[:=]\s*[\"']?([^\s\"'<>\x00]{6,})", _A)
_TOKEN = re.compile(r"(?<![A-Za-z0-9+/_=-])[A-Za-z0-9+/_=-]{24,}(?![A-Za-z0-9+/_=-])", _A)


# Characters RFC 5322 allows in a local part that delimit a URL's path and query (and a
# log line's ``key=value``): an address after one of them is the address, not the URL.
_URL_DELIMITERS = "/?#&="
# The password of a URL's userinfo (``scheme://user:password@host``): a secret whatever it
# looks like. Taken up to the last ``@`` before the host, as URL parsers read it.
_URL_PASSWORD = re.compile(
    r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:\x00]*:([^\s/?#\x00]+)@"
    r"(?=[^\s/?#@\x00])")
# A placeholder left by an earlier redaction (``_redact.PLACEHOLDER``): redacting again
# leaves it as it is.
_PLACEHOLDER = re.compile(r"<[A-Z][A-Z_]*_[0-9]+>")


def _emails(text: str) -> Iterator[Detection]:
    """The addresses in ``text``. A match whose local part holds a URL delimiter (an
    address in a URL's path or query, ``https://x.org/u/a@b.com``, or after ``email=``)
    is cut after the last one: the address is personal data, the URL before it is not.
    A local part made of delimiters alone (``/@x.org``, RFC-valid) is kept whole."""
    if "@" not in text:
        return
    for match in (_EMAIL_ASCII if text.isascii() else _EMAIL).finditer(text):
        start, value = match.start(), match.group()
        local = value[:value.rindex("@")]
        cut = max(local.rfind(c) for c in _URL_DELIMITERS) + 1
        if 0 < cut < len(local):
            start, value = start + cut, value[cut:]
        yield Detection("email", start, match.end(), value)


def _url_passwords(text: str) -> Iterator[Detection]:
    if "://" not in text:
        return
    for match in _URL_PASSWORD.finditer(text):
        if _PLACEHOLDER.fullmatch(match.group(1)):
            continue
        yield Detection("secret", match.start(1), match.end(1), match.group(1))


def _cards(text: str) -> Iterator[Detection]:
    for run in _DIGIT_RUN.finditer(text):
        groups = [(m.start() + run.start(), m.end() + run.start())
                  for m in _GROUP.finditer(run.group())]
        digits_in = [e - s for s, e in groups]
        if sum(digits_in) < 13:
            continue
        # The run's digits without separators, and where each group starts in them.
        digits = "".join(text[s:e] for s, e in groups)
        offsets = list(itertools.accumulate(digits_in, initial=0))
        at = 0
        while at < len(groups):  # the longest valid card starting at each group, left first
            found = None
            count = 0
            # No issuer prefix here, no card (checked once, not per candidate length).
            if _CARD_PREFIX.match(digits, offsets[at]) is None:
                at += 1
                continue
            for last in range(at, len(groups)):
                count += digits_in[last]
                if count > 19:
                    break
                if count >= 13 and luhn_valid(digits[offsets[at]:offsets[last + 1]]):
                    found = (last, groups[at][0], groups[last][1])
            if found is None:
                at += 1
                continue
            last, start, end = found
            yield Detection("credit_card", start, end, text[start:end])
            at = last + 1


def _ibans(text: str) -> Iterator[Detection]:
    for run in _IBAN_RUN.finditer(text):
        groups = [(m.start() + run.start(), m.end() + run.start())
                  for m in re.finditer(r"[A-Z0-9]+", run.group(), _A)]
        at = 0
        while at < len(groups):
            found = None
            start = groups[at][0]
            if re.match(r"[A-Z]{2}[0-9]{2}", text[start:start + 4], _A):
                # The longest run of groups that is a valid IBAN (text may follow it).
                size = 0
                for last in range(at, len(groups)):
                    size += groups[last][1] - groups[last][0]
                    if size > 34:
                        break
                    if size >= 15 and iban_valid(text[start:groups[last][1]]):
                        found = last
            if found is None:
                at += 1
                continue
            end = groups[found][1]
            yield Detection("iban", start, end, text[start:end])
            at = found + 1


def _ssns(text: str) -> Iterator[Detection]:
    for match in _SSN.finditer(text):
        if ssn_valid(match.group(1), match.group(3), match.group(4)):
            yield Detection("ssn", match.start(), match.end(), match.group())


def _ipv4s(text: str) -> Iterator[Detection]:
    for match in _IPV4.finditer(text):
        parts = match.group().split(".")
        if any(len(p) > 1 and p[0] == "0" for p in parts):
            continue  # leading zeros: more likely a version or a date than an address
        try:
            ipaddress.IPv4Address(match.group())
        except ValueError:
            continue
        yield Detection("ipv4", match.start(), match.end(), match.group())


def _ipv6s(text: str) -> Iterator[Detection]:
    for match in _IPV6.finditer(text):
        value = match.group()
        groups = [g for g in re.split(r":+", value) if g]
        if len(groups) < 2 or value.count(":") < 2:
            continue  # "::", "a::b"-like code, times (12:30) are not addresses
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            continue
        yield Detection("ipv6", match.start(), match.end(), value)


def _phones(text: str) -> Iterator[Detection]:
    for pattern in (_PHONE_INTL, _PHONE_US):
        for match in pattern.finditer(text):
            value = match.group()
            digits = sum(c.isdigit() for c in value)
            if 8 <= digits <= 15:
                yield Detection("phone", match.start(), match.end(), value)


def _private_keys(text: str) -> Iterator[Detection]:
    at = 0
    while (begin := _PEM_BEGIN.search(text, at)) is not None:
        end = _PEM_END.search(text, begin.end())
        if end is None:
            return  # no footer after this header: none after any later one either
        yield Detection("private_key", begin.start(), end.end(),
                        text[begin.start():end.end()])
        at = end.end()


def _jwts(text: str) -> Iterator[Detection]:
    for match in _JWT.finditer(text):
        yield Detection("jwt", match.start(), match.end(), match.group())


def _api_keys(text: str) -> Iterator[Detection]:
    for match in _API_KEY.finditer(text):
        yield Detection("api_key", match.start(), match.end(), match.group())


def _secrets(text: str, min_entropy: float) -> Iterator[Detection]:
    for match in _ASSIGNED.finditer(text):
        yield Detection("secret", match.start(1), match.end(1), match.group(1))
    for match in _TOKEN.finditer(text):
        token = match.group()
        if text[max(0, match.start() - 7):match.start()].lower() == "base64,":
            continue  # the payload of a data: URI is content (an image), not a credential
        classes = (any(c.isupper() for c in token), any(c.islower() for c in token),
                   any(c.isdigit() for c in token))
        if sum(classes) == 3 and shannon_entropy(token) >= min_entropy:
            yield Detection("secret", match.start(), match.end(), token)


_DETECTORS: dict[str, Callable[[str], Iterable[Detection]]] = {
    "private_key": _private_keys,
    "jwt": _jwts,
    "api_key": _api_keys,
    "email": _emails,
    "iban": _ibans,
    "credit_card": _cards,
    "ssn": _ssns,
    "ipv6": _ipv6s,
    "ipv4": _ipv4s,
    "phone": _phones,
}


def find_pii(text: str, kinds: Iterable[str] = KINDS, *,
             min_entropy: float = 4.0) -> list[Detection]:
    """Every piece of personal data or secret in ``text``, in text order, spans disjoint.

    Detectors run in :data:`KINDS` order (the most specific first: a private key before
    the high-entropy heuristic, a card before a phone number); the spans already taken
    are masked for the detectors that follow, so detections never overlap.

    :param kinds: the kinds to look for (a subset of :data:`KINDS`).
    :param min_entropy: bits per character a 24+ character token of mixed case and digits
        needs to count as a ``secret``.
    :raises ValueError: naming an unknown kind.
    """
    wanted = set(kinds)
    unknown = wanted.difference(KINDS)
    if unknown:
        raise ValueError(f"unknown PII kind(s) {sorted(unknown)}; valid: {', '.join(KINDS)}")
    folded, positions = _fold(text)
    found = _find_folded(folded, wanted, min_entropy)
    if positions is None and folded == text:
        return found
    # Back to the original text: its offsets, and its characters as the value (so that
    # restore(redact(x)) == x keeps holding).
    mapped = []
    for d in found:
        start, end = ((d.start, d.end) if positions is None
                      else (positions[d.start], positions[d.end - 1] + 1))
        mapped.append(Detection(d.kind, start, end, text[start:end]))
    return mapped


#: Characters a model does not show but a value may hide behind: zero-width ones, the soft
#: hyphen, bidi controls (the set the injection guard strips).
_HIDDEN = _ZERO_WIDTH
#: Fullwidth forms of ASCII (U+FF01..U+FF5E) and the ideographic space, as NFKC folds them.
_FULLWIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}


def _fold(text: str) -> tuple[str, list[int] | None]:
    """``text`` with fullwidth forms folded to ASCII and hidden characters removed, and
    the original offset of each kept character (``None``: none was removed)."""
    if text.isascii():
        return text, None
    folded = text.translate(_FULLWIDTH)  # one character for one: offsets unchanged
    if _HIDDEN.search(folded) is None:
        return folded, None
    positions: list[int] = []
    at = 0
    for match in _HIDDEN.finditer(folded):
        positions.extend(range(at, match.start()))
        at = match.end()
    positions.extend(range(at, len(folded)))
    return _HIDDEN.sub("", folded), positions


def _find_folded(text: str, wanted: set[str], min_entropy: float) -> list[Detection]:
    stop_if_cancelled()  # in a worker thread whose caller left (a deadline): stop here
    if len(text) <= SEGMENT + 2 * OVERLAP:
        return _find_all(text, wanted, min_entropy)
    # Long texts are scanned in overlapping windows: each regular-expression call then
    # holds the GIL for a short while only, so a scan in a worker thread leaves the event
    # loop free, and stops at the next window once its caller's deadline passed
    # (stop_if_cancelled above). A detection counts in the window whose core holds its start; values up to
    # OVERLAP characters long are found exactly as in one pass.
    found: list[Detection] = []
    for core in range(0, len(text), SEGMENT):
        if core:
            stop_if_cancelled()
        left = max(0, core - OVERLAP)
        window = text[left:core + SEGMENT + OVERLAP]
        for d in _find_all(window, wanted, min_entropy):
            start = d.start + left
            if core <= start < core + SEGMENT and (not found or start >= found[-1].end):
                found.append(Detection(d.kind, start, d.end + left, d.value))
    return found


#: Window size and overlap (characters) of the scan of long texts.
SEGMENT = 16_384
OVERLAP = 4_096


def _find_all(text: str, wanted: set[str], min_entropy: float) -> list[Detection]:
    taken: list[Detection] = []
    # The taken spans, disjoint and sorted: their starts and their ends (so sorted too).
    starts: list[int] = []
    ends: list[int] = []
    masked = text
    # A URL's password first: the e-mail detector would otherwise read ``password@host``
    # as an address (a host that is an IP address would leave the password in clear).
    steps = (["url_password"] if "secret" in wanted else []) + \
        [kind for kind in KINDS if kind in wanted]
    for kind in steps:
        found: Iterable[Detection]
        if kind == "url_password":
            found = _url_passwords(masked)
        elif kind == "secret":
            found = _secrets(masked, min_entropy)
        else:
            found = _DETECTORS[kind](masked)
        added: list[tuple[int, int]] = []
        for detection in found:
            start, end = detection.start, detection.end
            # Of the spans starting before ``end``, the last one ends last: it alone can
            # overlap (no scan of every span taken: quadratic on many detections).
            at = bisect.bisect_left(starts, end)
            if end <= start or (at and ends[at - 1] > start):
                continue
            starts.insert(at, start)
            ends.insert(at, end)
            taken.append(attrs.evolve(detection, value=text[start:end]))
            added.append((start, end))
        if added:
            # Later (less specific) detectors see what is taken as separators, so a span
            # that overlaps a taken one cannot hide a detection that fits beside it.
            pieces: list[str] = []
            at = 0
            for start, end in sorted(added):
                pieces += (masked[at:start], _MASK * (end - start))
                at = end
            pieces.append(masked[at:])
            masked = "".join(pieces)
    return sorted(taken, key=lambda d: d.start)
