"""The string ``format`` values constrained JSON enforces, each as a pattern of
:mod:`._regexfsm` that the whole string must match.

JSON Schema 2020-12 makes ``format`` an annotation by default, but a document that only
JSON-validates is of little use to a caller who reads it back through its model: Pydantic
parses a ``datetime`` field's ``"format": "date-time"``, a ``UUID4``'s ``"uuid4"``, an
``HttpUrl``'s ``"uri"``, and refuses what does not parse. So the formats below are
enforced (a stricter language is still valid under the schema); any other ``format`` stays
an annotation — Pydantic's ``base64`` among them, whose ``Base64Str`` also needs the
decoded bytes to be UTF-8, which a pattern over the encoded text cannot promise.

Each pattern is *conservative*: it writes only texts that JSON Schema's format
(``jsonschema``'s format checker with its format packages), Pydantic's parser for the type
that emits the format, and Python's standard parser (``datetime.fromisoformat``,
``uuid.UUID``, ``ipaddress``) all accept, and leaves out forms some of them refuse:

- ``date``: ``YYYY-MM-DD`` with years 1000–9999, real days of each month, February 29th
  in leap years only.
- ``date-time``: a date, ``T``, ``HH:MM:SS``, at most 6 fraction digits (Python keeps
  microseconds), and ``Z`` or an offset ``±HH:MM`` — RFC 3339 requires the offset, so
  Pydantic's ``NaiveDatetime`` (same format, no offset allowed) cannot be written.
  No leap second (Python refuses ``:60``), upper-case ``T`` / ``Z``.
- ``time``: RFC 3339's full-time: the time part of ``date-time`` with its offset.
- ``duration``: ISO 8601 years, days, hours, minutes and seconds (``P3D``, ``PT1H30M``,
  ``P1Y35DT0.5S``: what Pydantic writes for a ``timedelta``, a year read as 365 days),
  each at most 6 digits; no months or weeks, whose length in days parsers disagree on.
- ``uuid``: the 36-character lower-case hexadecimal form; ``uuid1`` … ``uuid8``
  (Pydantic's ``UUID1`` …) also fix the version digit and the RFC 4122 variant.
- ``ipv4``: dotted decimal without leading zeros; ``ipv6``: hexadecimal groups, full or
  ``::``-compressed (no embedded IPv4); ``ipvanyaddress``: either.
- ``hostname``: one to three labels of at most 63 lower-case letters, digits and inner
  hyphens.
- ``email``: ``local@domain.tld`` with a lower-case local part of dot-, plus-, hyphen- or
  underscore-separated words and a domain of one to three labels and a letters-only
  top-level label of 2–6 letters other than the special-use ones (``test``, ``local``,
  ``onion``, ``arpa``), which the ``email-validator`` package behind Pydantic's
  ``EmailStr`` refuses; at most 183 characters.
- ``uri``: ``http://`` or ``https://`` (Pydantic's ``HttpUrl`` allows nothing else; its
  ``AnyUrl`` emits the same format), a host whose last label starts with a letter (so URL
  parsers do not read it as an IPv4 number), an optional port, up to 8 path segments, a
  query and a fragment of unreserved characters, ``=`` and ``&`` — no percent-escapes;
  at most 520 characters.
"""

from __future__ import annotations

import string

__all__ = ["FORMATS"]

_YEAR = "[1-9][0-9]{3}"
#: Leap years of four digits: a multiple of 4 but not of 100, or a multiple of 400.
_LEAP_YEAR = "(?:[1-9][0-9](?:0[48]|[2468][048]|[13579][26])|(?:[2468][048]|[13579][26])00)"
_MONTH_DAY = ("(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
              "|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)")
_DATE = f"(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
_OFFSET = "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"

_NUMBER = "[0-9]{1,6}"
_SECONDS = rf"{_NUMBER}(?:\.[0-9]{{1,6}})?S"
_CLOCK = (f"T(?:{_NUMBER}H(?:{_NUMBER}M)?(?:{_SECONDS})?"
          f"|{_NUMBER}M(?:{_SECONDS})?|{_SECONDS})")
_DURATION = (f"P(?:{_NUMBER}Y(?:{_NUMBER}D)?(?:{_CLOCK})?|{_NUMBER}D(?:{_CLOCK})?"
             f"|{_CLOCK})")

_HEX = "[0-9a-f]"


def _uuid(version: str | None) -> str:
    if version is None:
        return f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"
    return f"{_HEX}{{8}}-{_HEX}{{4}}-{version}{_HEX}{{3}}-[89ab]{_HEX}{{3}}-{_HEX}{{12}}"


_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"


def _ipv6() -> str:
    group = f"{_HEX}{{1,4}}"

    def groups(count: int) -> str:  # ``count`` groups joined by colons
        if count == 0:
            return ""
        return group if count == 1 else f"(?:{group}:){{{count - 1}}}{group}"

    forms = [groups(8)]
    forms += [f"{groups(before)}::{groups(after)}"
              for before in range(8) for after in range(8 - before)]
    return "(?:" + "|".join(forms) + ")"


_IPV6 = _ipv6()


def _letters_except(words: set[str], least: int, most: int) -> str:
    """Lower-case words of ``least`` to ``most`` letters other than ``words``."""
    forms = []
    for size in range(least, most + 1):
        banned = {w for w in words if len(w) == size}
        if not banned:
            forms.append(f"[a-z]{{{size}}}")
            continue
        # a word leaves the banned ones at its first letter no banned word has there
        prefixes = {w[:i] for w in banned for i in range(size)}
        for prefix in sorted(prefixes):
            taken = {w[len(prefix)] for w in banned if w.startswith(prefix)}
            others = "".join(c for c in string.ascii_lowercase if c not in taken)
            rest = size - len(prefix) - 1
            forms.append(f"{prefix}[{others}]" + (f"[a-z]{{{rest}}}" if rest else ""))
    return "(?:" + "|".join(forms) + ")"
_LABEL = "[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_WORD = "[a-z0-9]{1,20}"
#: Bounded parts (a URL of at most 520 characters, under ``HttpUrl``'s ``maxLength`` of
#: 2083, which then costs the automaton nothing to count).
_URL_HOST = rf"(?:{_WORD}(?:-{_WORD})?\.){{0,3}}[a-z][a-z0-9]{{0,19}}(?:-{_WORD})?"
_URL_CHARS = "[A-Za-z0-9._~-]"
#: Top-level domains of special use (RFC 6761 and after) that ``email-validator`` refuses.
_SPECIAL_USE = {"arpa", "invalid", "local", "localhost", "onion", "test"}

#: ``format`` name -> the pattern every string of that format matches whole.
FORMATS: dict[str, str] = {
    "date": _DATE,
    "date-time": f"{_DATE}T{_TIME}{_OFFSET}",
    "time": f"{_TIME}{_OFFSET}",
    "duration": _DURATION,
    "uuid": _uuid(None),
    **{f"uuid{v}": _uuid(str(v)) for v in range(1, 9)},
    "ipv4": _IPV4,
    "ipv6": _IPV6,
    "ipvanyaddress": f"(?:{_IPV4}|{_IPV6})",
    "hostname": rf"{_LABEL}(?:\.{_LABEL}){{0,2}}",
    "email": (r"[a-z0-9]{1,16}(?:[._+-][a-z0-9]{1,16}){0,2}"
              r"@(?:[a-z0-9]{1,20}(?:-[a-z0-9]{1,20})?\.){1,3}"
              + _letters_except(_SPECIAL_USE, 2, 6)),
    "uri": (rf"https?://{_URL_HOST}(?::[1-9][0-9]{{0,3}})?(?:/{_URL_CHARS}{{0,30}}){{0,8}}"
            rf"(?:\?[A-Za-z0-9._~=&-]{{0,60}})?(?:#{_URL_CHARS}{{0,30}})?"),
}
