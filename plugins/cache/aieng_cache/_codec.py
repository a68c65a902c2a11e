"""Completions to JSON text and back, exactly (usage, finish reason, logprobs, tool calls)."""

from __future__ import annotations

import json
from typing import Any

from aieng_hookspecs.types import Completion, TokenLogprob, ToolCall, Usage

__all__ = ["CodecError", "decode_completion", "encode_completion"]

_FORMAT = 1


class CodecError(ValueError):
    """A stored value is not a completion this version can read."""


def encode_completion(completion: Completion) -> str:
    """The completion as compact ASCII JSON (the ``cached`` flag is not stored: a value read
    back from a cache is always ``cached=True``)."""
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
    # ensure_ascii: lone surrogates survive; repr-exact floats: logprobs round-trip exactly.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def decode_completion(payload: str | bytes) -> Completion:
    """A completion from :func:`encode_completion`'s text, with ``cached=True``.

    :raises CodecError: when the payload is not such a text.
    """
    try:
        value = json.loads(payload)
        if not isinstance(value, dict) or value.get("f") != _FORMAT:
            raise CodecError(f"not a cached completion of format {_FORMAT}")
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
