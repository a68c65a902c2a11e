"""Completions to JSON text and back, exactly (usage, finish reason, logprobs, tool calls)."""

from __future__ import annotations

import json
from typing import Any

from aieng_hookspecs.types import Completion, TokenLogprob, ToolCall, Usage

__all__ = ["CodecError", "decode_completion", "encode_completion", "payload_namespace"]

_FORMAT = 1


class CodecError(ValueError):
    """A stored value is not a completion this version can read.

    :param newer: the value is of a newer format (a newer aieng-cache sharing the store
        wrote it): its writer still reads it, so it is not to be deleted.
    """

    def __init__(self, message: str, *, newer: bool = False) -> None:
        super().__init__(message)
        self.newer = newer


def encode_completion(completion: Completion, *, namespace: str | None = None) -> str:
    """The completion as compact ASCII JSON (the ``cached`` flag is not stored: a value read
    back from a cache is always ``cached=True``).

    :param namespace: the namespace of the cache storing it, written beside the completion
        (``"ns"``) so that a store shared by namespaces can clear one of them (see
        :func:`payload_namespace`); ``None`` writes none. Readers ignore it.
    """
    value: dict[str, Any] = {
        "f": _FORMAT,
        "text": completion.text,
        "finish_reason": completion.finish_reason,
        "usage": [completion.usage.prompt_tokens, completion.usage.completion_tokens],
        "model": completion.model,
        "logprobs": None if completion.logprobs is None
        else [[t.token, t.logprob] for t in completion.logprobs],
        "tool_calls": [[c.id, c.name, c.arguments] for c in completion.tool_calls],
    }
    if namespace is not None:
        value["ns"] = namespace
    # ensure_ascii: lone surrogates survive; repr-exact floats: logprobs round-trip exactly;
    # NaN / Infinity in tool-call arguments (as a model wrote them) round-trip too.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=True)


def decode_completion(payload: str | bytes) -> Completion:
    """A completion from :func:`encode_completion`'s text, with ``cached=True``.

    :raises CodecError: when the payload is not such a text.
    """
    try:
        value = json.loads(payload)
        if not isinstance(value, dict) or value.get("f") != _FORMAT:
            found = value.get("f") if isinstance(value, dict) else None
            newer = isinstance(found, int) and not isinstance(found, bool) and found > _FORMAT
            raise CodecError(f"not a cached completion of format {_FORMAT}"
                             + (f" (format {found}: written by a newer aieng-cache)"
                                if newer else ""), newer=newer)
        logprobs = value["logprobs"]
        return Completion(
            text=value["text"],
            finish_reason=value["finish_reason"],
            usage=Usage(prompt_tokens=value["usage"][0], completion_tokens=value["usage"][1]),
            model=value["model"],
            logprobs=None if logprobs is None
            else tuple(TokenLogprob(token=t, logprob=p) for t, p in logprobs),
            cached=True,
            tool_calls=tuple(ToolCall(id=i, name=n, arguments=a)
                             for i, n, a in value["tool_calls"]),
        )
    except CodecError:
        raise
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise CodecError(f"unreadable cached completion: {exc}") from None


def payload_namespace(payload: str | bytes) -> str | None:
    """The namespace an encoded completion was stored with, or ``None`` when it has none
    (stored by a version before namespaces were written, or not a readable entry): such an
    entry's namespace is unknown."""
    try:
        value = json.loads(payload)
    except ValueError:  # UnicodeDecodeError included
        return None
    namespace = value.get("ns") if isinstance(value, dict) else None
    return namespace if isinstance(namespace, str) else None
