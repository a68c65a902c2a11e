"""The OpenAI wire format: request bodies checked field by field, responses and chunks."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from typing import Any

from aieng_hookspecs.types import Completion, Message, Request, ToolCall, ToolSpec, Usage

__all__ = ["FEEDBACK_ID", "IDEMPOTENCY_KEY", "ApiError", "ChatCall", "billed_usage",
           "chat_chunk", "chat_response", "estimated_tokens", "feedback_id", "logprob_content",
           "parse_chat", "parse_dimensions", "parse_embeddings", "parse_feedback",
           "prompt_chars", "scoped_feedback_id"]

ROLES = ("system", "user", "assistant", "tool", "developer")
#: ``seed``'s range: a signed 64-bit integer, as OpenAI and the backends' samplers take it.
SEED_RANGE = (-(2**63), 2**63 - 1)


class ApiError(Exception):
    """An error answered as OpenAI's ``{"error": {...}}`` with an HTTP status.

    :param status: the HTTP status (400, 401, 404, 413, 422, 429, 502, 504...).
    :param param: the request field at fault, when one is.
    :param headers: extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, kind: str = "invalid_request_error",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind
        self.headers = headers or {}

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only fields: Exception's own reduce calls ApiError(message) alone, which
        # fails to unpickle (a host sending the error to a worker process, pytest-xdist).
        return (_rebuild_api_error, (self.status, self.message, self.param, self.code,
                                     self.kind, dict(self.headers)))

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}


def _rebuild_api_error(status: int, message: str, param: str | None, code: str | None,
                       kind: str, headers: dict[str, str]) -> ApiError:
    return ApiError(status, message, param=param, code=code, kind=kind, headers=headers)


def _bad(param: str, message: str) -> ApiError:
    return ApiError(422, f"{param}: {message}", param=param, code="invalid_value")


def _number(body: dict[str, Any], name: str, low: float, high: float, *,
            low_open: bool = False) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    # math.isfinite on an int past 1e308 raises OverflowError: ints are finite, compare
    # them exactly.
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or (isinstance(value, float) and not math.isfinite(value)):
        raise _bad(name, f"must be a number, got {json.dumps(value)[:40]}")
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise _bad(name, f"must be in {bracket}{low}, {high}], got {str(value)[:40]}")
    return float(value)


def _integer(body: dict[str, Any], name: str, low: int | None = None,
             high: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(name, f"must be an integer, got {json.dumps(value)[:40]}")
    if low is not None and high is not None and not low <= value <= high:
        raise _bad(name, f"must be in [{low}, {high}], got {str(value)[:40]}")
    if low is not None and value < low:
        raise _bad(name, f"must be at least {low}, got {value}")
    return value


#: The most tokens a request may ask for without a cap (a 32-bit signed integer): a count
#: of hundreds of digits would overflow whatever turns it into a float (a price estimate).
MOST_TOKENS = 2**31 - 1


def _tokens(body: dict[str, Any], name: str, cap: int | None) -> int | None:
    """A token count (``max_tokens``, ``max_completion_tokens``): a positive integer up to
    :data:`MOST_TOKENS`, a whole float too (``5.0``: OpenAI checks JSON numbers by value,
    as JSON Schema's ``integer``), and at most ``cap`` when the server sets one.

    :raises ApiError: 422 for anything else; 400 over the cap (as OpenAI answers a
        ``max_tokens`` past what the model allows), naming the field and the cap.
    """
    value = body.get(name)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if cap is not None and isinstance(value, int) and not isinstance(value, bool) \
            and value > cap:  # over the cap is the cap's 400, however far over
        raise ApiError(400, f"{name}: {str(value)[:40]} is more than this server allows: at "
                            f"most {cap} tokens per request (a request that asks for none "
                            f"gets {cap})", param=name, code="invalid_value")
    return _integer({name: value}, name, 1, MOST_TOKENS)


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, list):  # content parts: only text parts are understood
        texts = []
        for i, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text" \
                    or not isinstance(part.get("text"), str):
                raise _bad(f"{where}[{i}]", "only {\"type\": \"text\", \"text\": ...} content "
                                            "parts are supported")
            texts.append(part["text"])
        return "".join(texts)
    raise _bad(where, "must be a string or a list of text parts")


def _messages(value: Any) -> tuple[Message, ...]:
    if value is None:
        raise ApiError(400, "messages: required (a non-empty list of {role, content})",
                       param="messages", code="missing_required_parameter")
    if not isinstance(value, list) or not value:
        raise _bad("messages", "must be a non-empty list of {role, content}")
    out = []
    answerable: frozenset[str] | None = None  # the calls a tool message may answer here
    for i, item in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(item, dict):
            raise _bad(where, "must be an object with role and content")
        role = item.get("role")
        if role not in ROLES:
            raise _bad(f"{where}.role", f"unknown role {json.dumps(role)[:40]} "
                                        f"(choices: {', '.join(ROLES)})")
        name = item.get("name")
        if name is not None and not isinstance(name, str):
            raise _bad(f"{where}.name", "must be a string")
        call = item.get("tool_call_id")
        if call is not None and not isinstance(call, str):
            raise _bad(f"{where}.tool_call_id", "must be a string")
        calls = _calls(item.get("tool_calls"), f"{where}.tool_calls") \
            if role == "assistant" else ()
        if role == "tool":
            _answers(call, answerable, where)
        else:  # an assistant's calls may be answered until another role speaks
            answerable = frozenset(c.id for c in calls) if calls else None
        content = _content(item.get("content"), f"{where}.content")
        if role == "user" and not content:  # OpenAI answers 400 for a user turn without text
            missing = item.get("content") is None
            raise ApiError(400, f"{where}.content: " + (
                "required (a user message needs text)" if missing else
                "a user message needs text, got an empty content"), param=f"{where}.content",
                code="missing_required_parameter" if missing else "invalid_value")
        try:
            out.append(Message(role="system" if role == "developer" else role,
                               content=content, name=name, tool_call_id=call,
                               tool_calls=calls))
        except (TypeError, ValueError) as exc:  # a contract check of Message
            raise _bad(where, str(exc)) from None
    return tuple(out)


def _answers(call: str | None, answerable: frozenset[str] | None, where: str) -> None:
    """Check that a ``tool`` message answers a call of the assistant message before it
    (only tool messages between), as OpenAI does (400, naming the field)."""
    if call is None:
        raise ApiError(400, f"{where}.tool_call_id: required (a tool message answers the "
                            "call with this id)", param=f"{where}.tool_call_id",
                       code="missing_required_parameter")
    if answerable is None:
        raise ApiError(400, f"{where}.role: a tool message must answer a preceding assistant "
                            "message with tool_calls (only tool messages between)",
                       param=f"{where}.role", code="invalid_value")
    if call not in answerable:
        raise ApiError(400, f"{where}.tool_call_id: {json.dumps(call)[:80]} is not the id of a "
                            "call of the assistant message before it (ids: "
                            f"{', '.join(sorted(answerable))[:200]})",
                       param=f"{where}.tool_call_id", code="invalid_value")


def _calls(value: Any, where: str) -> tuple[ToolCall, ...]:
    """An assistant message's ``tool_calls`` (arguments as a JSON string or an object)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _bad(where, "must be a list of tool calls")
    calls = []
    for i, item in enumerate(value):
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _bad(f"{where}[{i}].function", "must be an object with a name")
        arguments = function.get("arguments") or "{}"
        try:
            decoded = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            raise _bad(f"{where}[{i}].function.arguments", "must be a JSON object (as a "
                                                           "string)") from None
        except RecursionError:  # the body parsed, but the string inside it is too deep
            raise _bad(f"{where}[{i}].function.arguments", "is nested too deeply") from None
        if not isinstance(decoded, dict):
            raise _bad(f"{where}[{i}].function.arguments", "must be a JSON object")
        try:
            calls.append(ToolCall(id=str(item.get("id") or f"call_{i}"), name=function["name"],
                                  arguments=decoded))
        except (TypeError, ValueError, RecursionError) as exc:
            raise _bad(f"{where}[{i}]", str(exc)) from None
    return tuple(calls)


def _tools(value: Any) -> tuple[ToolSpec, ...]:
    """``tools``: function tools (``{"type": "function", "function": {name, description,
    parameters}}``)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _bad("tools", "must be a list of {\"type\": \"function\", \"function\": {...}}")
    specs = []
    for i, item in enumerate(value):
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(item, dict) or item.get("type", "function") != "function" \
                or not isinstance(function, dict):
            raise _bad(f"tools[{i}]", "only {\"type\": \"function\", \"function\": {...}} "
                                      "tools are supported")
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict):
            raise _bad(f"tools[{i}].function.parameters", "must be a JSON schema object")
        description = function.get("description", "")
        try:
            specs.append(ToolSpec(name=function.get("name"),  # type: ignore[arg-type]
                                  description=description if isinstance(description, str)
                                  else "", parameters=parameters))
        except (TypeError, ValueError) as exc:
            raise _bad(f"tools[{i}].function.name", f"must be 1–64 letters, digits, _ . -: "
                                                    f"{exc}") from None
    return tuple(specs)


def _tool_choice(value: Any, tools: tuple[ToolSpec, ...]) -> Any:
    if value is None:
        return None
    if value in ("auto", "none", "required"):
        return value
    if isinstance(value, dict) and value.get("type") == "function" \
            and isinstance(value.get("function"), dict) \
            and isinstance(value["function"].get("name"), str):
        name = value["function"]["name"]
        if name not in {t.name for t in tools}:
            raise _bad("tool_choice", f"names the function {name!r}, which is not in tools")
        return value
    raise _bad("tool_choice", "must be \"auto\", \"none\", \"required\" or "
                              "{\"type\": \"function\", \"function\": {\"name\": ...}}")


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or len(value) > 4 \
            or not all(isinstance(s, str) and s for s in value):
        raise _bad("stop", "must be a non-empty string or a list of up to 4 of them")
    return tuple(value)


def _schema(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad("response_format", "must be an object with a type")
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":  # JSON mode: any object (keys and values free)
        return {"type": "object", "additionalProperties": True}
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise _bad("response_format.json_schema.schema", "must be a JSON schema object")
        return schema
    raise _bad("response_format.type", f"unknown type {json.dumps(kind)[:40]} "
                                       "(choices: text, json_object, json_schema)")


class ChatCall:
    """A checked ``/v1/chat/completions`` body.

    :param request: the aieng request.
    :param model: the model name the client asked for (echoed back).
    :param stream: whether to answer with server-sent events.
    :param include_usage: send the usage chunk at the end of a stream.
    :param logprobs: answer with the tokens' log-probabilities.
    """

    __slots__ = ("include_usage", "logprobs", "model", "request", "stream")

    def __init__(self, request: Request, model: str, stream: bool, include_usage: bool,
                 logprobs: bool = False) -> None:
        self.request = request
        self.model = model
        self.stream = stream
        self.include_usage = include_usage
        self.logprobs = logprobs


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object", code="invalid_json")
    return body


#: Fields the gateway cannot honour: ignoring them would answer another question than the
#: one asked (a function never called, a bias never applied). Their neutral values pass.
_UNSUPPORTED = {
    "functions": "the legacy functions API is not supported: send them as tools "
                 '([{"type": "function", "function": {...}}])',
    "function_call": "the legacy functions API is not supported: use tool_choice",
    "logit_bias": "not supported by the gateway's backends",
    "presence_penalty": "not supported by the gateway's backends (only 0)",
    "frequency_penalty": "not supported by the gateway's backends (only 0)",
}


def _refuse_unsupported(body: dict[str, Any]) -> None:
    for name, why in _UNSUPPORTED.items():
        value = body.get(name)
        if value is None or value == {} or (name.endswith("_penalty") and value == 0
                                           and not isinstance(value, bool)):
            continue  # absent, null or neutral: what SDKs send by default
        raise _bad(name, why)


def parse_chat(body: Any, *, pipeline: str, max_tokens: int | None = None) -> ChatCall:
    """Check a chat body and build the request.

    The model named ``pipeline`` (or none) is the pipeline's default backend; another name
    is passed to the backends, which answer for the models they serve. ``max_tokens``: the
    server's cap (``GatewaySettings.max_tokens``): asking more is a 400, asking nothing
    gets it.

    :raises ApiError: 400 / 422 naming the field at fault.
    """
    body = _object(body)
    messages = _messages(body.get("messages"))
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise _bad("model", "must be a non-empty string")
    temperature = _number(body, "temperature", 0.0, 2.0)
    top_p = _number(body, "top_p", 0.0, 1.0)
    if top_p == 0.0:  # no probability mass but the likeliest token's: greedy decoding
        temperature, top_p = 0.0, None
    cap = max_tokens  # the server's cap; from here on, what the request asks
    max_tokens = _tokens(body, "max_tokens", cap)
    completion_tokens = _tokens(body, "max_completion_tokens", cap)  # checked either way
    if max_tokens is None:
        max_tokens = completion_tokens if completion_tokens is not None else cap
    seed = _integer(body, "seed", *SEED_RANGE)
    logprobs = _logprobs(body)
    n = _integer(body, "n", 1)
    if n not in (None, 1):
        raise _bad("n", "only n = 1 is supported")
    _refuse_unsupported(body)
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _bad("stream", "must be true or false")
    options = body.get("stream_options")
    include_usage = False  # as OpenAI: the usage chunk (choices: []) only when asked
    if options is not None:
        if not isinstance(options, dict) or not isinstance(options.get("include_usage", False),
                                                           bool):
            raise _bad("stream_options", "must be an object like {\"include_usage\": true}")
        include_usage = options.get("include_usage", False)
        if not stream:  # as OpenAI answers it
            raise ApiError(400, "stream_options: only allowed when \"stream\" is true",
                           param="stream_options", code="invalid_value")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _bad("metadata", "must be an object")
    regex = body.get("guided_regex")  # vLLM's extension: text the pattern fully matches
    if regex is not None and not isinstance(regex, str):
        raise _bad("guided_regex", "must be a string (a regular expression)")
    fields: dict[str, Any] = {
        "messages": messages,
        "model": None if model in (None, pipeline) else model,
        "stop": _stop(body.get("stop")),
        "seed": seed,
        "response_schema": _schema(body.get("response_format")),
    }
    if temperature is not None:
        fields["temperature"] = temperature
    if top_p is not None:
        fields["top_p"] = top_p
    if max_tokens is not None:
        fields["max_tokens"] = max_tokens
    extra: dict[str, Any] = {}
    if regex is not None:
        extra["regex"] = regex
    tools = _tools(body.get("tools"))
    choice = _tool_choice(body.get("tool_choice"), tools)
    if choice not in (None, "none", "auto") and not tools:
        raise _bad("tool_choice", "needs tools")
    if tools:
        fields["tools"] = tools
    if choice is not None:
        extra["tool_choice"] = choice
    parallel = body.get("parallel_tool_calls")
    if parallel is not None:
        if not isinstance(parallel, bool):
            raise _bad("parallel_tool_calls", "must be true or false")
        extra["parallel_tool_calls"] = parallel
    if logprobs:
        extra["logprobs"] = True  # the contract's convention (the local backends read it)
    if fields["response_schema"] is not None:  # the client's own object, for a backend
        extra["response_format"] = body["response_format"]  # that speaks OpenAI's API
    if extra:
        fields["metadata"] = extra
    try:
        request = Request(**fields)
    except (TypeError, ValueError) as exc:  # a contract check the above did not foresee
        raise ApiError(422, f"invalid request: {exc}", code="invalid_value") from None
    return ChatCall(request, model or pipeline, stream, include_usage, logprobs)


def _logprobs(body: dict[str, Any]) -> bool:
    """``logprobs`` (true / false) and ``top_logprobs``: only 0 alternatives can be given
    (the contract carries the chosen token's log-probability, not the runners-up)."""
    wanted = body.get("logprobs")
    if wanted is None:
        wanted = False
    if not isinstance(wanted, bool):
        raise _bad("logprobs", "must be true or false")
    top = _integer(body, "top_logprobs", 0, 20)
    if top is not None and not wanted:
        raise _bad("top_logprobs", "needs \"logprobs\": true")
    if top:
        raise ApiError(422, f"top_logprobs: {top} alternatives per token are not supported: "
                            "the backends report only the chosen token's log-probability "
                            "(send top_logprobs 0 or none)", param="top_logprobs",
                       code="unsupported_value")
    return wanted


def parse_embeddings(body: Any) -> tuple[list[str], str | None, str]:
    """Check an embeddings body: ``(texts, model, encoding_format)`` (``float`` or
    ``base64``, which the openai SDK sends when its caller names no format).

    :raises ApiError: on a missing or non-text input.
    """
    body = _object(body)
    value = body.get("input")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
        raise ApiError(400 if value is None else 422,
                       "input: must be a string or a non-empty list of strings "
                       "(token arrays are not supported)", param="input")
    if len(value) > 2048:
        raise _bad("input", f"at most 2048 texts per request, got {len(value)}")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("model", "must be a string")
    encoding = body.get("encoding_format")
    if encoding is None:
        encoding = "float"
    if encoding not in ("float", "base64"):
        raise _bad("encoding_format", "must be \"float\" or \"base64\"")
    return value, model, encoding


def parse_dimensions(body: Any) -> int | None:
    """An embeddings body's ``dimensions`` (a positive integer), or ``None`` when unset.

    :raises ApiError: 422 for anything else.
    """
    return _integer(_object(body), "dimensions", 1)


def parse_feedback(body: Any) -> tuple[str, str, float, str, dict[str, Any]]:
    """Check a feedback body: ``(run_id, kind, value, text, metadata)``.

    :raises ApiError: naming the field at fault.
    """
    body = _object(body)
    run_id, kind = body.get("run_id"), body.get("kind")
    if not isinstance(run_id, str) or not run_id.strip():
        raise ApiError(400 if run_id is None else 422,
                       "run_id: required, the id of the response (its `id` field or the "
                       "x-aieng-run-id header)", param="run_id")
    if not isinstance(kind, str) or not kind.strip():
        raise ApiError(400 if kind is None else 422,
                       "kind: required (thumbs, rating, correction, ...)", param="kind")
    value = _number(body, "value", -1e9, 1e9) or 0.0
    text = body.get("text", "")
    if not isinstance(text, str):
        raise _bad("text", "must be a string")
    metadata = body.get("metadata", {})
    if not isinstance(metadata, dict):
        raise _bad("metadata", "must be an object")
    return run_id, kind, value, text, metadata


#: The request header naming one feedback signal (the IETF draft "The Idempotency-Key HTTP
#: Header Field"): a POST sent again with it is one signal.
IDEMPOTENCY_KEY = "Idempotency-Key"
#: The metadata key a feedback sink reads the signal's id from (``feedback-sqlite`` stores a
#: signal once per run, kind and id).
FEEDBACK_ID = "feedback_id"


def feedback_id(keys: list[str], metadata: dict[str, Any]) -> dict[str, Any]:
    """A feedback body's ``metadata`` with the ``Idempotency-Key`` header's value (``keys``:
    each one the request sent) as its ``feedback_id``; a body's own
    ``metadata.feedback_id`` is taken as it is.

    :raises ApiError: 400 on an empty header or two different ones; 422 naming
        ``metadata.feedback_id`` when the body's id is not the header's.
    """
    if not keys:
        return metadata
    if len(set(keys)) > 1:
        raise ApiError(400, f"{IDEMPOTENCY_KEY}: sent {len(keys)} times with different "
                            "values: send one", param=IDEMPOTENCY_KEY, code="invalid_value")
    key = keys[0]
    if not key:
        raise ApiError(400, f"{IDEMPOTENCY_KEY}: empty: send the signal's id (a UUID, say) "
                            "or leave the header out", param=IDEMPOTENCY_KEY,
                       code="invalid_value")
    found = metadata.get(FEEDBACK_ID, key)
    if found != key:
        raise _bad(f"metadata.{FEEDBACK_ID}", f"{found!r} is not the {IDEMPOTENCY_KEY} "
                   f"header's {key!r}: one signal has one id (send it in either, or the same "
                   "in both)")
    return {**metadata, FEEDBACK_ID: key}


#: The longest id a client may give a signal when a key sends it: ``feedback-sqlite``'s
#: 200 characters less the key's id and the ``:`` the gateway puts before it.
MAX_FEEDBACK_ID = 191


def scoped_feedback_id(metadata: dict[str, Any], key_id: str) -> dict[str, Any]:
    """``metadata`` with its ``feedback_id`` scoped by the sending key, ``<key id>:<id>``:
    a signal's id is then one key's, so another key sending the same id for the same run
    (a run id passed around, an id guessed or reused) is another signal, never taken for
    this one's retry nor refusing it. An id that is no non-blank string is left as it is,
    for the sink to refuse.

    :raises ApiError: 422 on an id over :data:`MAX_FEEDBACK_ID` characters.
    """
    found = metadata.get(FEEDBACK_ID)
    if not isinstance(found, str) or not found.strip():
        return metadata
    if len(found) > MAX_FEEDBACK_ID:
        raise ApiError(422, f"invalid feedback: a signal's id ({IDEMPOTENCY_KEY} or "
                            f"metadata.{FEEDBACK_ID}) must be at most {MAX_FEEDBACK_ID} "
                            f"characters, got {len(found)}", param=f"metadata.{FEEDBACK_ID}",
                       code="invalid_feedback")
    return {**metadata, FEEDBACK_ID: f"{key_id}:{found}"}


def prompt_chars(request: Request) -> int:
    """Characters in the request's messages (the token estimate is this / 4)."""
    return sum(len(m.content) for m in request.messages)


def estimated_tokens(chars: int) -> int:
    """A token count estimated from characters (code points): ``chars / 4`` rounded up,
    at least 1 (an embeddings request's usage; an answer whose backend counted none)."""
    return max(1, math.ceil(chars / 4))


def billed_usage(usage: Usage, *, prompt_estimate: int, text: str,
                 tool_calls: tuple[ToolCall, ...] = ()) -> Usage:
    """What a model run is charged (and reports): ``usage`` as the backend reported it,
    with a count it left at 0 estimated: the prompt as the reservation did
    (``prompt_estimate``), the completion from what the model generated when it generated
    anything: the answer's ``text`` and its ``tool_calls`` (each name and its arguments as
    :func:`wire_calls` writes them)."""
    completion = usage.completion_tokens
    if not completion:  # only then are the calls written out to be counted
        generated = len(text) + sum(len(call["function"]["name"]) +
                                    len(call["function"]["arguments"])
                                    for call in wire_calls(tool_calls))
        completion = estimated_tokens(generated) if generated else 0
    return Usage(prompt_tokens=usage.prompt_tokens or prompt_estimate,
                 completion_tokens=completion)


def _usage(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens}


def wire_calls(calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
    """Tool calls as OpenAI writes them (arguments as a JSON string)."""
    return [{"id": call.id, "type": "function",
             "function": {"name": call.name,
                          "arguments": json.dumps(call.arguments, ensure_ascii=False)}}
            for call in calls]


def logprob_content(tokens: Iterable[tuple[str, float]]) -> dict[str, Any]:
    """OpenAI's ``choices[].logprobs`` of ``(token, logprob)`` pairs (no alternatives)."""
    return {"content": [{"token": token, "logprob": logprob,
                         "bytes": list(token.encode("utf-8", "surrogatepass")),
                         "top_logprobs": []} for token, logprob in tokens],
            "refusal": None}


def chat_response(run_id: str, model: str, completion: Completion | None,
                  finish: str | None = None, logprobs: dict[str, Any] | None = None,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``chat.completion`` object (``completion`` None: a blocked run, empty answer;
    ``logprobs``: the choice's, from :func:`logprob_content`; ``extra``: top-level fields
    added, which OpenAI clients ignore)."""
    text = completion.text if completion is not None else ""
    usage = completion.usage if completion is not None else Usage()
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if completion is not None and completion.tool_calls and finish is None:
        message["tool_calls"] = wire_calls(completion.tool_calls)
        message["content"] = text or None  # OpenAI's null content beside calls
    return {
        "id": run_id, "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message,
                     "finish_reason": finish or (completion.finish_reason
                                                 if completion is not None else "stop"),
                     "logprobs": logprobs}],
        "usage": _usage(usage),
        **(extra or {}),
    }


def chat_chunk(run_id: str, model: str, created: int, *, text: str | None = None,
               role: bool = False, finish: str | None = None,
               usage: Usage | None = None, calls: tuple[ToolCall, ...] = (),
               logprobs: dict[str, Any] | None = None,
               extra: dict[str, Any] | None = None) -> bytes:
    """One ``data: {chat.completion.chunk}`` event (``usage`` set: the usage-only chunk;
    ``calls``: whole tool calls, one entry per ``index``; ``logprobs``: the text's, from
    :func:`logprob_content`; ``extra``: top-level fields added)."""
    chunk: dict[str, Any] = {"id": run_id, "object": "chat.completion.chunk",
                             "created": created, "model": model}
    if usage is not None:
        chunk["choices"] = []
        chunk["usage"] = _usage(usage)
    else:
        delta: dict[str, Any] = {}
        if role:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        if calls:
            delta["tool_calls"] = [{"index": i, **call}
                                   for i, call in enumerate(wire_calls(calls))]
        chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish,
                             "logprobs": logprobs}]
    chunk.update(extra or {})
    return b"data: " + sse_json(chunk) + b"\n\n"


#: Characters JSON leaves raw that ``str.splitlines`` (and httpx's ``iter_lines``, which
#: many SSE readers use) take for line breaks: escaped, so a data line stays one line.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028",
                              "\u2029": "\\u2029"})


def sse_json(value: Any) -> bytes:
    """``value`` as JSON for one SSE data line: UTF-8, with no character any line reader
    splits at (JSON escapes CR, LF and the other controls; U+0085, U+2028 and U+2029 are
    escaped here)."""
    return json.dumps(value, ensure_ascii=False).translate(_LINE_BREAKS).encode("utf-8")
