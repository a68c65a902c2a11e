"""From :class:`Request` to the chat-completions body, and from the answer back."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from aieng_hookspecs.types import (
    Completion,
    Message,
    Request,
    TokenLogprob,
    ToolCall,
    ToolSpec,
    Usage,
)

from ._options import OpenAIOptions

__all__ = ["StreamedCalls", "chat_body", "completion_from", "embed_body", "finish_reason",
           "logprobs_from", "usage_from", "vectors_from"]

# The contract's finish reasons (``Completion.finish_reason``); the contract does not export
# its alias, so it is spelled out here.
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]

# Finish reasons of compatible servers, as the contract names them.
_FINISH: dict[str, FinishReason] = {
    "stop": "stop", "eos": "stop", "eos_token": "stop", "stop_sequence": "stop",
    "end_turn": "stop",
    "length": "length", "max_tokens": "length", "model_length": "length",
    "tool_calls": "tool_calls", "function_call": "tool_calls",
    "content_filter": "content_filter",
    "error": "error", "abort": "error",
}


class ProtocolError(ValueError):
    """The server's answer is not what the OpenAI API promises."""


def _message(message: Message) -> dict[str, Any]:
    body: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name is not None:
        body["name"] = message.name
    if message.tool_call_id is not None:
        body["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        body["tool_calls"] = [
            {"id": call.id, "type": "function",
             "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}
            for call in message.tool_calls]
    return body


def _tool(spec: ToolSpec) -> dict[str, Any]:
    return {"type": "function", "function": {
        "name": spec.name, "description": spec.description, "parameters": spec.parameters}}


def chat_body(request: Request, options: OpenAIOptions, *, stream: bool) -> dict[str, Any]:
    """The JSON body of ``POST {base_url}/chat/completions`` for ``request``.

    :raises ValueError: for a ``metadata["regex"]`` that is not a string, or that this
        server cannot be asked to enforce (no ``regex_field``); a ``metadata["logprobs"]``
        that is not a boolean; a ``metadata["response_format"]`` that is not an object
        with a ``type``.
    """
    body: dict[str, Any] = {
        "model": request.model or options.model,
        "messages": [_message(m) for m in request.messages],
        "temperature": request.temperature,
        "top_p": request.top_p,
        options.max_tokens_field: request.max_tokens,
    }
    if request.stop:
        body["stop"] = list(request.stop)
    if request.seed is not None:
        body["seed"] = request.seed
    if request.top_k is not None and options.send_top_k:
        body["top_k"] = request.top_k
    fmt = request.metadata.get("response_format")
    if fmt is not None:  # OpenAI's own object (a gateway's client's), sent as it came
        if not isinstance(fmt, Mapping) or not isinstance(fmt.get("type"), str):
            raise ValueError("metadata['response_format'] must be OpenAI's response_format "
                             f"object (with a type), got {fmt!r:.60}")
        body["response_format"] = dict(fmt)
    elif request.response_schema is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "response", "schema": request.response_schema, "strict": True}}
    pattern = request.metadata.get("regex")
    if pattern is not None:
        if not isinstance(pattern, str):
            raise ValueError("metadata['regex'] must be a string")
        if options.regex_field is None:
            raise ValueError("this openai backend cannot enforce metadata['regex']: set its "
                             "option regex_field for a server that can (vLLM and aieng "
                             "serve: 'guided_regex')")
        body[options.regex_field] = pattern
    if request.tools:
        body["tools"] = [_tool(spec) for spec in request.tools]
    # OpenAI's own names, kept in metadata by the contract's convention (the gateway and
    # the local backends read the same keys)
    for name in ("tool_choice", "parallel_tool_calls"):
        if name in request.metadata:
            body[name] = request.metadata[name]
    wanted = request.metadata.get("logprobs")
    if wanted is not None and not isinstance(wanted, bool):  # "false" is truthy
        raise ValueError(f"metadata['logprobs'] must be true or false, got {wanted!r:.40}")
    if wanted:
        body["logprobs"] = True  # the chosen tokens' only: the contract has no alternatives
    if stream:
        body["stream"] = True
        if options.stream_usage:
            body["stream_options"] = {"include_usage": True}
    return body


def embed_body(texts: Sequence[str], model: str) -> dict[str, Any]:
    """The JSON body of ``POST {base_url}/embeddings``."""
    return {"model": model, "input": list(texts), "encoding_format": "float"}


def finish_reason(raw: object) -> FinishReason:
    """A server's finish reason as the contract names it (``stop`` when unknown)."""
    return _FINISH.get(raw, "stop") if isinstance(raw, str) else "stop"


def _natural(value: object) -> int | None:
    """A JSON number that is an integer >= 0: an ``int``, or a float that is one (``12.0``:
    JSON does not tell them apart, and some servers and proxies write numbers as floats)
    up to 2**53, where every integer is a float; else ``None`` (``true`` included)."""
    if isinstance(value, float) and value.is_integer() and 0 <= value <= 2**53:
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else None


def _count(value: object) -> int:
    """A token count of a ``usage`` object (:func:`_natural`), else 0."""
    return _natural(value) or 0


def usage_from(raw: object) -> Usage | None:
    """The ``usage`` object of an answer, or ``None`` when there is none."""
    if not isinstance(raw, Mapping):
        return None
    return Usage(prompt_tokens=_count(raw.get("prompt_tokens")),
                 completion_tokens=_count(raw.get("completion_tokens")))


def tool_calls_from(raw: object) -> tuple[ToolCall, ...]:
    """The ``tool_calls`` of an assistant message."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ProtocolError("message.tool_calls is not a list")
    calls = []
    for position, item in enumerate(raw):
        function = item.get("function") if isinstance(item, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise ProtocolError(f"tool call {position} has no function name")
        arguments = function.get("arguments") or "{}"
        try:
            decoded = json.loads(arguments) if isinstance(arguments, str) else arguments
        except json.JSONDecodeError as error:
            raise ProtocolError(f"tool call {position} ({function['name']}) has arguments "
                                f"that are not JSON: {error}") from None
        except RecursionError:  # a hostile or broken server: never a crash of ours
            raise ProtocolError(f"tool call {position} ({function['name']}) has arguments "
                                "nested too deeply to read") from None
        if not isinstance(decoded, Mapping):
            raise ProtocolError(f"tool call {position} ({function['name']}) has arguments "
                                "that are not a JSON object")
        call_id = item.get("id") or f"call_{position}"
        try:
            calls.append(ToolCall(id=str(call_id), name=function["name"],
                                  arguments=dict(decoded)))
        except (TypeError, ValueError, RecursionError) as error:
            raise ProtocolError(f"tool call {position} is invalid: {error}") from None
    return tuple(calls)


def logprobs_from(raw: object) -> tuple[TokenLogprob, ...] | None:
    """The tokens of a choice's ``logprobs`` (``{"content": [{"token", "logprob", ...}]}``,
    alternatives ignored), or ``None`` when the server sent none. A log-probability a hair
    above 0 (float rounding) is 0.

    :raises ProtocolError: when an entry has no string token or no finite number.
    """
    if raw is None:
        return None
    content = raw.get("content") if isinstance(raw, Mapping) else raw
    if content is None:
        return None
    if not isinstance(content, list):
        raise ProtocolError("logprobs.content is not a list")
    tokens = []
    for position, item in enumerate(content):
        token = item.get("token") if isinstance(item, Mapping) else None
        value = item.get("logprob") if isinstance(item, Mapping) else None
        if not isinstance(token, str):
            raise ProtocolError(f"logprobs.content[{position}] has no token string")
        if not isinstance(value, (int, float)) or isinstance(value, bool) \
                or not math.isfinite(value):
            raise ProtocolError(f"logprobs.content[{position}].logprob is not a finite number")
        tokens.append(TokenLogprob(token=token, logprob=min(0.0, float(value))))
    return tuple(tokens)


class StreamedCalls:
    """The tool calls of a stream, put together from the fragments its chunks carry
    (``delta.tool_calls``: per ``index``, the id and name once, the arguments in pieces)."""

    def __init__(self) -> None:
        self._parts: dict[int, dict[str, str]] = {}
        # Each call's argument fragments, joined once at the end: appending each one to a
        # growing string re-copies what came before (quadratic in a long argument streamed
        # token by token: a tool writing a whole file).
        self._arguments: dict[int, list[str]] = {}
        self._ids: dict[str, int] = {}  # the index of each id, for fragments without one
        self._last: int | None = None  # the call the last fragment without an index went to

    def _index(self, item: Mapping[str, Any], position: int) -> int:
        """The index of a fragment. Without one (Ollama, Gemini; ``null`` from some
        proxies) its id says which call it belongs to, a new id opening the next call, and a
        fragment with no id either continues the call the last such fragment went to."""
        index = item.get("index")
        if index is not None:
            if not isinstance(index, int) or isinstance(index, bool):
                raise ProtocolError(f"delta.tool_calls[{position}] has no integer index")
            return index
        call_id = item.get("id")
        if isinstance(call_id, str) and call_id:
            if call_id not in self._ids:
                self._ids[call_id] = max(self._parts, default=-1) + 1
            index = self._ids[call_id]
        else:
            index = position if self._last is None else self._last
        self._last = index
        return index

    def add(self, raw: object) -> None:
        """Take one chunk's ``delta.tool_calls``.

        :raises ProtocolError: when it is not a list of objects, or an index is not an
            integer.
        """
        if not isinstance(raw, list):
            raise ProtocolError("delta.tool_calls is not a list")
        for position, item in enumerate(raw):
            if not isinstance(item, Mapping):
                raise ProtocolError(f"delta.tool_calls[{position}] is not an object")
            index = self._index(item, position)
            part = self._parts.setdefault(index, {"id": "", "name": ""})
            pieces = self._arguments.setdefault(index, [])
            if isinstance(item.get("id"), str) and item["id"]:
                self._ids.setdefault(item["id"], index)
            if isinstance(item.get("id"), str) and not part["id"]:
                part["id"] = item["id"]
            function = item.get("function")
            if not isinstance(function, Mapping):
                continue
            name = function.get("name")
            if isinstance(name, str) and name != part["name"]:
                part["name"] += name
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                pieces.append(arguments)
            elif isinstance(arguments, Mapping):  # a server sending them decoded, whole
                pieces[:] = [json.dumps(arguments)]

    def calls(self) -> tuple[ToolCall, ...]:
        """The whole calls, in index order.

        :raises ProtocolError: as :func:`tool_calls_from` (no name, arguments not JSON).
        """
        return tool_calls_from([
            {"id": part["id"] or None, "type": "function",
             "function": {"name": part["name"],
                          "arguments": "".join(self._arguments[index]) or "{}"}}
            for index, part in sorted(self._parts.items())])


def completion_from(data: object, model: str) -> Completion:
    """The :class:`Completion` of a chat-completions answer.

    :raises ProtocolError: when the answer lacks ``choices[0].message``.
    """
    if not isinstance(data, Mapping):
        raise ProtocolError("the answer is not a JSON object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise ProtocolError("the answer has no choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, Mapping):
        raise ProtocolError("choices[0] has no message")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise ProtocolError("choices[0].message.content is not a string")
    served = data.get("model")
    return Completion(
        text=content or "",
        finish_reason=finish_reason(choice.get("finish_reason")),
        usage=usage_from(data.get("usage")) or Usage(),
        model=served if isinstance(served, str) and served else model,
        logprobs=logprobs_from(choice.get("logprobs")),
        tool_calls=tool_calls_from(message.get("tool_calls")),
    )


def vectors_from(data: object, count: int) -> list[list[float]]:
    """The vectors of an embeddings answer, in input order.

    :raises ProtocolError: on a wrong count, mixed dimensions or non-finite numbers.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("data"), list):
        raise ProtocolError("the answer has no data list")
    items = data["data"]
    if len(items) != count:
        raise ProtocolError(f"{len(items)} embeddings for {count} inputs")
    rows: list[list[float] | None] = [None] * count
    for position, item in enumerate(items):
        if not isinstance(item, Mapping) or not isinstance(item.get("embedding"), list):
            raise ProtocolError(f"data[{position}] has no embedding list")
        raw = item.get("index", position)
        index = _natural(raw)  # 1.0 too: a proxy that writes numbers as floats
        if index is None or index >= count or rows[index] is not None:
            raise ProtocolError(f"data[{position}] has a bad or repeated index {raw!r}")
        try:
            vector = [float(x) for x in item["embedding"]]
        except (TypeError, ValueError):
            raise ProtocolError(f"data[{position}].embedding holds a non-number") from None
        if not vector or not all(math.isfinite(x) for x in vector):
            raise ProtocolError(f"data[{position}].embedding is empty or not finite")
        rows[index] = vector
    vectors = [row for row in rows if row is not None]
    if len({len(row) for row in vectors}) > 1:
        raise ProtocolError("the embeddings have different dimensions")
    return vectors
