"""Cache keys: what makes two requests "the same request" for a cache.

A key is the SHA-256 of a canonical JSON form of the request: the messages in their order,
each message's content with its whitespace normalized (runs of whitespace become one space,
ends stripped, Unicode NFC), and every sampling parameter that changes the output — model,
temperature, top_p, top_k, max_tokens, stop, seed, response_schema, tools — plus the cache's
namespace, a prompt-template version and the pipeline's name. ``Request.metadata`` is left
out (user ids and trace tags would split the cache), except its ``template_version`` field,
whether it asks for log-probabilities (``logprobs``: an answer stored without them is
no answer to a request for them) and the output constraints the backends read from it
(``regex``, ``tool_choice``, ``parallel_tool_calls``, ``response_format``).
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from typing import Any

import attrs
from aieng_hookspecs.types import Message, Request

__all__ = [
    "KEY_FORMAT",
    "KeyScope",
    "cacheable",
    "content_type",
    "normalize_text",
    "partition_key",
    "request_key",
    "scope_key",
]

#: Bumped whenever the canonical form changes, so old entries stop matching.
KEY_FORMAT = 1
#: ``Request.metadata`` field that overrides the derived content type.
CONTENT_TYPE_FIELD = "cache_type"
#: ``Request.metadata`` field holding a per-request prompt-template version.
TEMPLATE_FIELD = "template_version"
#: ``Request.metadata`` field asking the backend for per-token log-probabilities.
LOGPROBS_FIELD = "logprobs"
#: ``Request.metadata`` fields the backends send as constraints on the output (a regular
#: expression the text must match, OpenAI's ``tool_choice`` and ``parallel_tool_calls``,
#: and the client's own ``response_format`` object, which the gateway keeps and an
#: ``openai`` backend sends unchanged: JSON mode, a strict or a lax schema).
OUTPUT_FIELDS = ("regex", "tool_choice", "parallel_tool_calls", "response_format")


@attrs.frozen
class KeyScope:
    """What a key is derived in besides the request.

    :param namespace: separates caches that share a store (a file, a Redis database).
    :param template_version: the prompt template's version: bump it to stop old answers.
    :param pipeline: the pipeline's name ('' outside a pipeline, or when not keyed by it).
    :param embedding_model: the model a semantic cache embeds prompts with; part of the
        partition key only (vectors of two models are never compared), not of the exact key.
    """

    namespace: str = ""
    template_version: str = ""
    pipeline: str = ""
    embedding_model: str = ""


def normalize_text(text: str) -> str:
    """Whitespace runs collapsed to one space, ends stripped, Unicode NFC."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def _message(message: Message) -> list[Any]:
    return [
        message.role,
        normalize_text(message.content),
        message.name,
        message.tool_call_id,
        [[c.id, c.name, c.arguments] for c in message.tool_calls],
    ]


def _parameters(request: Request, scope: KeyScope) -> dict[str, Any]:
    template = request.metadata.get(TEMPLATE_FIELD)
    value: dict[str, Any] = {
        "format": KEY_FORMAT,
        "namespace": scope.namespace,
        "template": [scope.template_version, template if isinstance(template, str) else None],
        "pipeline": scope.pipeline,
        "model": request.model,
        # float(): 0 and 0.0 are the same temperature and must give the same key; + 0.0
        # turns -0.0 (JSON allows it; json.dumps writes "-0.0") into 0.0.
        "temperature": float(request.temperature) + 0.0,
        "top_p": float(request.top_p),
        "top_k": request.top_k,
        "max_tokens": request.max_tokens,
        "stop": list(request.stop),  # order kept: it is what the backend receives
        "seed": request.seed,
        "response_schema": request.response_schema,
        "tools": [[t.name, t.description, t.parameters] for t in request.tools],
    }
    # Truthy as the backends read it. Only a request that asks gets the field, so every
    # other request keeps the key it had before (KEY_FORMAT unchanged): entries stored for
    # requests that asked, maybe without log-probabilities, are simply never found again.
    if request.metadata.get(LOGPROBS_FIELD):
        value["logprobs"] = True
    # Likewise only when given: they change what the backend answers (text or a tool call,
    # one call or several, text matching a pattern), so each is part of the request.
    for name in OUTPUT_FIELDS:
        if request.metadata.get(name) is not None:
            value[name] = request.metadata[name]
    return value


def _digest(value: Any) -> str:
    # ensure_ascii: lone surrogates (valid in a Python str) encode without error; NaN and
    # the infinities (a model's tool-call arguments, read by a lenient JSON parser) are
    # spelled as Python does, one spelling each: a key, never an error.
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def request_key(request: Request, scope: KeyScope = KeyScope()) -> str:
    """The exact-match key of a request (64 hex characters)."""
    value = _parameters(request, scope)
    value["messages"] = [_message(m) for m in request.messages]
    return _digest(value)


def scope_key(scope: KeyScope) -> str:
    """The key of the scope's part of every exact key (namespace, template version,
    pipeline): entries of another scope never answer a request of this one, so a cache
    reloading a shared file skips them."""
    return _digest({"format": KEY_FORMAT, "namespace": scope.namespace,
                    "template": scope.template_version, "pipeline": scope.pipeline})


def _last_user(request: Request) -> int:
    for index in range(len(request.messages) - 1, -1, -1):
        if request.messages[index].role == "user":
            return index
    return -1


def partition_key(request: Request, scope: KeyScope = KeyScope()) -> str:
    """The key of everything but the last user message's text: a semantic cache compares
    prompts only between requests of the same partition (same model, parameters, system
    prompt and earlier turns, and the same embedding model: ``scope.embedding_model``)."""
    value = _parameters(request, scope)
    last = _last_user(request)
    messages = [_message(m) for m in request.messages]
    if last >= 0:
        messages[last][1] = None  # the compared text; everything else must match exactly
    value["messages"] = messages
    value["semantic"] = True
    # Only a named model is in the partition, so entries of the default model ('') keep
    # theirs; entries embedded by another model are never compared (their cosine with this
    # model's vectors means nothing, even at the same size), they still hit exactly.
    if scope.embedding_model:
        value["embedding_model"] = scope.embedding_model
    return _digest(value)


def content_type(request: Request) -> str:
    """The request's content type for TTLs: ``metadata["cache_type"]`` when it is a
    string, else ``json`` when a response schema is set, ``tools`` when tools are offered,
    ``chat`` otherwise."""
    tag = request.metadata.get(CONTENT_TYPE_FIELD)
    if isinstance(tag, str) and tag:
        return tag
    if request.response_schema is not None:
        return "json"
    if request.tools:
        return "tools"
    return "chat"


def cacheable(request: Request, *, cache_sampled: bool) -> bool:
    """Whether a request may be cached: a sampled request (temperature > 0) without a seed
    has no single right answer, so it is cached only with ``cache_sampled``."""
    return cache_sampled or request.temperature == 0 or request.seed is not None
