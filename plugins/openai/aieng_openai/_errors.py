"""The one exception the component raises, with the status, an excerpt and a hint."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

__all__ = ["OpenAIError", "hint_for", "scrub"]

ErrorKind = Literal["http", "timeout", "connection", "protocol", "config"]

#: The longest body excerpt an error carries.
EXCERPT_CHARS = 500

_HINTS = {
    400: "the server rejected the request's parameters: read the body excerpt",
    401: "check api_key / api_key_env: the server rejected the credentials",
    403: "check api_key / api_key_env: the key lacks access to this model or endpoint",
    404: "check base_url (the API root, usually ending in /v1) and model "
         "(GET {base_url}/models lists what the server serves)",
    408: "the server timed out reading the request; retried up to max_retries",
    409: "the server reported a conflict; retried up to max_retries",
    413: "the request is too large for the server: shorten the prompt or the batch",
    422: "the server could not process the request's parameters: read the body excerpt",
    429: "rate limited: lower the request rate, or raise max_retries / backoff_max",
}


def hint_for(status: int) -> str:
    """What to do about an HTTP ``status``."""
    if status in _HINTS:
        return _HINTS[status]
    if 300 <= status < 400:
        return ("the server redirects (not followed): set base_url to the API root it "
                "redirects to (http:// where https:// is needed?)")
    if status >= 500:
        return "the server failed; retried up to max_retries: check the server's logs"
    return "read the body excerpt"


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret (and its 8+ character pieces at the ends) replaced by
    ``***``, so an API key echoed back by a server never reaches a message or a log."""
    for secret in secrets:
        if not secret:
            continue
        text = text.replace(secret, "***")
        # Servers echo keys partially masked ("sk-abc...wxyz"): hide the visible ends too.
        if len(secret) >= 16:
            text = text.replace(secret[:8], "***").replace(secret[-8:], "***")
    return text


class OpenAIError(Exception):
    """A call to the OpenAI-compatible server failed.

    :param message: what happened.
    :param kind: ``http`` (an error status), ``timeout``, ``connection``, ``protocol`` (an
        answer that is not what the API promises: bad JSON, a broken stream) or ``config``.
    :param status: the HTTP status, when there was one.
    :param body: an excerpt of the response body (at most 500 characters, secrets scrubbed).
    :param hint: what to do about it.
    :param url: the URL called (never with credentials).
    :param attempts: how many attempts were made.
    :param retry_after: the seconds the server asked to wait before calling again (its
        ``Retry-After`` or ``retry-after-ms``), when it asked: a proxy in front (``aieng
        serve``) hands it on to its clients with a 429.
    """

    def __init__(self, message: str, *, kind: ErrorKind, status: int | None = None,
                 body: str = "", hint: str = "", url: str = "", attempts: int = 1,
                 retry_after: float | None = None) -> None:
        self.message = message
        self.kind: ErrorKind = kind
        self.status = status
        self.body = body[:EXCERPT_CHARS]
        self.hint = hint
        self.url = url
        self.attempts = attempts
        self.retry_after = retry_after
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [self.message]
        if self.url:
            parts.append(f"url: {self.url}")
        if self.attempts > 1:
            parts.append(f"attempts: {self.attempts}")
        if self.body:
            parts.append(f"body: {self.body}")
        if self.hint:
            parts.append(f"hint: {self.hint}")
        return "; ".join(parts)

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only fields: pickle (process pools, pytest-xdist) rebuilds through this.
        return (_rebuild, (self.message, self.kind, self.status, self.body, self.hint,
                           self.url, self.attempts, self.retry_after))


def _rebuild(message: str, kind: ErrorKind, status: int | None, body: str, hint: str,
             url: str, attempts: int, retry_after: float | None = None) -> OpenAIError:
    return OpenAIError(message, kind=kind, status=status, body=body, hint=hint, url=url,
                       attempts=attempts, retry_after=retry_after)
