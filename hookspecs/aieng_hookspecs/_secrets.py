"""Credentials kept out of what aieng writes for people to read or share: log lines,
lockfiles, reports, descriptions of a pipeline."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["REDACTED", "redact_url", "redacted", "secret_key"]

#: What a credential is written as.
REDACTED = "***"
#: Names whose values are credentials (case-insensitive): ``api_key``, ``password``,
#: ``token``, ``secret``, names ending ``_api_key``, ``_token``, ``_secret`` ..., and the
#: credential headers. ``max_tokens`` and ``token_count`` are no credentials.
_SECRET_KEY = re.compile(r"(?:.*[_-])?(?:api_?key|password|passwd|secret|token)"
                         r"|authorization|proxy-authorization|cookie|set-cookie|x-api-key",
                         re.IGNORECASE)
#: The password of a URL's user information: ``redis://:PASSWORD@host``,
#: ``postgresql://user:PASSWORD@host/db``.
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]{0,31}://[^:/?#@\s]*:)"
                           r"(?P<password>[^@/?#\s]+)(?=@)")
#: Deeper than any options, headers or event mapping: a cycle ends here.
_DEPTH = 32


def secret_key(name: object) -> bool:
    """Whether an option, a header or a log key named ``name`` holds a credential."""
    return isinstance(name, str) and _SECRET_KEY.fullmatch(name) is not None


def redact_url(text: str) -> str:
    """``text`` with the password of each URL in it written :data:`REDACTED`
    (``redis://:***@host``)."""
    return _URL_PASSWORD.sub(rf"\g<head>{REDACTED}", text) if "://" in text else text


def redacted(value: Any, _depth: int = 0) -> Any:
    """``value`` with its credentials written :data:`REDACTED`: the values of
    :func:`secret_key` keys in the mappings it holds (at any depth; ``None`` and ``""``
    kept: no credential was given) and the passwords of URLs in its strings. Mappings,
    lists and tuples are copied (a named tuple is a value, kept whole); ``value`` itself is
    never changed."""
    if isinstance(value, str):
        return redact_url(value)
    if _depth >= _DEPTH:
        return value
    if isinstance(value, dict):
        return {key: REDACTED if item not in (None, "") and secret_key(key)
                else redacted(item, _depth + 1) for key, item in value.items()}
    if type(value) in (list, tuple):
        return type(value)(redacted(item, _depth + 1) for item in value)
    return value
