"""Credentials kept out of what aieng writes for people to read or share: log lines,
lockfiles, reports, descriptions of a pipeline."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["REDACTED", "masked_url", "redact_url", "redacted", "secret_key"]

#: What a credential is written as.
REDACTED = "***"
#: Names whose values are credentials (case-insensitive): ``api_key``, ``password``,
#: ``token``, ``secret``, names ending ``_api_key``, ``_token``, ``_secret`` ..., and the
#: credential headers. ``max_tokens`` and ``token_count`` are no credentials.
_SECRET_KEY = re.compile(r"(?:.*[_-])?(?:api_?key|password|passwd|secret|token)"
                         r"|authorization|proxy-authorization|cookie|set-cookie|x-api-key",
                         re.IGNORECASE)
#: A URL in a text: its scheme, then up to a blank or a quote.
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]{0,31}://[^\s'\"<>]*")
#: A URL's parts: what precedes the user information, the user information (``user:``,
#: ``:``, or a token alone), the host and path, the query, the fragment. Possessive runs:
#: a long URL with no ``@`` is one pass, not a try of each way to cut it at a ``:``.
_PARTS = re.compile(r"(?P<head>[^:]*+://)(?:(?P<user>[^/?#@:]*+)(?P<colon>:?)[^/?#@]*+@)?"
                    r"(?P<rest>[^?#]*)(?P<query>\?[^#]*)?(?P<fragment>#.*)?", re.DOTALL)
#: Deeper than any options, headers or event mapping: a cycle ends here.
_DEPTH = 32


def secret_key(name: object) -> bool:
    """Whether an option, a header or a log key named ``name`` holds a credential."""
    return isinstance(name, str) and _SECRET_KEY.fullmatch(name) is not None


def masked_url(url: str) -> str:
    """``url`` with what may be a credential in it written :data:`REDACTED`: the password
    of its user information (``redis://user:***@host``; a user alone is a token:
    ``https://***@host``), the values of query parameters with a :func:`secret_key` name
    (``?password=***``) or with none (``?***``), and its fragment (an OAuth token rides
    there). A URL without any of these is returned as it is."""
    parts = _PARTS.match(url)
    if parts is None:
        return url
    shown = parts["head"]
    if parts["user"] is not None:
        shown += f"{parts['user']}:{REDACTED}@" if parts["colon"] else f"{REDACTED}@"
    shown += parts["rest"]
    if parts["query"] is not None:
        shown += "?" + "&".join(_masked_item(item) for item in parts["query"][1:].split("&"))
    if parts["fragment"] is not None:
        shown += f"#{REDACTED}" if len(parts["fragment"]) > 1 else "#"
    return shown


def _masked_item(item: str) -> str:
    name, equals, value = item.partition("=")
    if not equals:
        return REDACTED if item else item
    return f"{name}={REDACTED}" if value and secret_key(name) else item


def redact_url(text: str) -> str:
    """``text`` with each URL in it :func:`masked_url` (``redis://:***@host``)."""
    return _URL.sub(lambda found: masked_url(found[0]), text) if "://" in text else text


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
