"""Key derivation (what makes two requests the same) and the completion codec."""

from __future__ import annotations

import attrs
import pytest
from aieng_cache import (
    CodecError,
    KeyScope,
    cacheable,
    content_type,
    decode_completion,
    encode_completion,
    partition_key,
    request_key,
)
from aieng_hookspecs.types import Completion, Message, Request, ToolSpec
from hypothesis import given, settings
from hypothesis import strategies as st

from aieng_core.testing import strategies as aist


def chat(*contents: str, **params: object) -> Request:
    roles = ["system", "user", "assistant", "user"]
    messages = tuple(Message(roles[i] if len(contents) > 1 else "user", c)  # type: ignore[arg-type]
                     for i, c in enumerate(contents))
    return Request(messages=messages, **params)  # type: ignore[arg-type]


def test_whitespace_is_normalized_but_order_is_kept() -> None:
    """Whitespace runs and ends do not change a key; message order and roles do."""
    base = request_key(chat("Be brief.", "What is  RRF?"))
    assert request_key(chat("  Be brief.\n", "What\tis RRF? ")) == base
    assert request_key(chat("What is RRF?", "Be brief.")) != base
    assert request_key(Request(messages=(Message("user", "Be brief."),
                                         Message("user", "What is RRF?")))) != base


@pytest.mark.parametrize("change", [
    {"model": "other"}, {"temperature": 0.5}, {"top_p": 0.9}, {"top_k": 5},
    {"max_tokens": 12}, {"stop": ("\n",)}, {"seed": 7},
    {"response_schema": {"type": "object"}}, {"tools": (ToolSpec(name="search"),)},
])
def test_every_output_parameter_is_in_the_key(change: dict[str, object]) -> None:
    """Each sampling parameter that changes the output changes the key."""
    request = chat("What is RRF?")
    assert request_key(attrs.evolve(request, **change)) != request_key(request)


def test_scope_and_template_version_are_in_the_key() -> None:
    """Namespace, template version (option or metadata) and pipeline name each split keys;
    other metadata does not."""
    request = chat("What is RRF?")
    base = request_key(request)
    assert request_key(request, KeyScope(namespace="a")) != base
    assert request_key(request, KeyScope(template_version="v2")) != base
    assert request_key(request, KeyScope(pipeline="rag")) != base
    assert request_key(attrs.evolve(request, metadata={"template_version": "v2"})) != base
    assert request_key(attrs.evolve(request, metadata={"user": "u1", "trace": 3})) == base


def test_asking_for_logprobs_is_in_the_key() -> None:
    """A request asking for log-probabilities (``metadata["logprobs"]``, as the backends
    read it) is another request: an answer stored without them is no answer to it. A
    request that does not ask keeps the key it always had."""
    request = chat("What is RRF?")
    base = request_key(request)
    asking = attrs.evolve(request, metadata={"logprobs": True})
    assert request_key(asking) != base
    assert partition_key(asking) != partition_key(request)
    assert request_key(attrs.evolve(request, metadata={"logprobs": False})) == base
    assert request_key(attrs.evolve(request, metadata={"logprobs": 1})) == request_key(asking)


@pytest.mark.parametrize("metadata", [
    {"regex": r"\d+"}, {"tool_choice": "required"}, {"tool_choice": "none"},
    {"tool_choice": {"type": "function", "function": {"name": "search"}}},
    {"parallel_tool_calls": False}, {"response_format": {"type": "json_object"}},
])
def test_output_constraints_in_metadata_are_in_the_key(metadata: dict[str, object]) -> None:
    """The metadata the backends send as output constraints (``regex``, ``tool_choice``,
    ``parallel_tool_calls``, OpenAI's ``response_format``) changes the answer: an answer
    stored without the constraint (or with another) must never answer a request with it,
    exactly or by similarity. A request without them keeps the key it always had; their
    dict order does not count."""
    request = chat("Give me a number", tools=(ToolSpec(name="search"),))
    constrained = attrs.evolve(request, metadata=metadata)
    assert request_key(constrained) != request_key(request)
    assert partition_key(constrained) != partition_key(request)
    assert request_key(attrs.evolve(request, metadata={**metadata, "user": "u1"})) == \
        request_key(constrained)
    assert request_key(attrs.evolve(request, metadata={"user": "u1"})) == request_key(request)
    choice = {"type": "function", "function": {"name": "search"}}
    reordered = {"function": {"name": "search"}, "type": "function"}
    assert request_key(attrs.evolve(request, metadata={"tool_choice": choice})) == \
        request_key(attrs.evolve(request, metadata={"tool_choice": reordered}))


def test_integer_and_float_temperatures_agree() -> None:
    """``temperature=0`` and ``temperature=0.0`` are the same request."""
    assert request_key(chat("hi", temperature=0)) == request_key(chat("hi", temperature=0.0))


def test_negative_zero_temperature_is_zero() -> None:
    """``temperature=-0.0`` (valid JSON a client may send) is greedy, the same request as
    ``temperature=0``: one key, not a second entry that never hits."""
    assert request_key(chat("hi", temperature=-0.0)) == request_key(chat("hi", temperature=0))


def test_partition_ignores_only_the_last_user_message() -> None:
    """The partition key is the same whatever the last user message says, and differs when
    the system prompt, an earlier turn or a parameter differs."""
    base = partition_key(chat("Be brief.", "What is RRF?"))
    assert partition_key(chat("Be brief.", "Explain BM25 please")) == base
    assert partition_key(chat("Be verbose.", "What is RRF?")) != base
    assert partition_key(chat("Be brief.", "What is RRF?", max_tokens=3)) != base
    assert partition_key(chat("Be brief.", "What is RRF?")) != request_key(
        chat("Be brief.", "What is RRF?"))


def test_the_embedding_model_is_in_the_partition_only() -> None:
    """A named embedding model splits partitions (two models' vectors are never compared)
    but not exact keys; the default model ('') keeps the partition it had."""
    request = chat("Be brief.", "What is RRF?")
    a, b = KeyScope(embedding_model="model-a"), KeyScope(embedding_model="model-b")
    assert len({partition_key(request), partition_key(request, a),
                partition_key(request, b)}) == 3
    assert partition_key(request, KeyScope(embedding_model="")) == partition_key(request)
    assert request_key(request, a) == request_key(request, b) == request_key(request)


def test_content_type_and_cacheability() -> None:
    """json with a schema, tools with tools, a metadata tag wins, chat otherwise; sampled
    requests without a seed are cacheable only when allowed."""
    assert content_type(chat("hi")) == "chat"
    assert content_type(chat("hi", response_schema={"type": "object"})) == "json"
    assert content_type(chat("hi", tools=(ToolSpec(name="t"),))) == "tools"
    assert content_type(chat("hi", metadata={"cache_type": "faq"})) == "faq"
    assert cacheable(chat("hi"), cache_sampled=False)
    assert cacheable(chat("hi", temperature=0.7, seed=3), cache_sampled=False)
    assert not cacheable(chat("hi", temperature=0.7), cache_sampled=False)
    assert cacheable(chat("hi", temperature=0.7), cache_sampled=True)


@settings(max_examples=100, deadline=None)
@given(request=aist.requests(), spaces=st.sampled_from([" ", "  ", "\n", "\t "]))
def test_key_is_deterministic_and_whitespace_blind(request: Request, spaces: str) -> None:
    """Any request has a 64-hex key, equal for an equal request and for the same request
    with extra whitespace around and inside its messages."""
    key = request_key(request)
    assert len(key) == 64 and int(key, 16) >= 0
    copy = Request(**attrs.asdict(request, recurse=False))
    assert request_key(copy) == key
    padded = attrs.evolve(request, messages=tuple(
        attrs.evolve(m, content=spaces + m.content.replace(" ", spaces) + spaces)
        for m in request.messages))
    assert request_key(padded) == key


@settings(max_examples=300, deadline=None)
@given(completion=aist.completions())
def test_completions_round_trip_exactly(completion: Completion) -> None:
    """Every field — text, finish reason, usage, model, logprobs, tool calls — survives
    encoding; the decoded completion is marked cached."""
    decoded = decode_completion(encode_completion(completion))
    assert decoded == attrs.evolve(completion, cached=True)
    assert encode_completion(decoded) == encode_completion(completion)


@pytest.mark.parametrize("payload", ["", "[]", '{"f": 99}', '{"f": 1, "text": "x"}', "\xff"])
def test_unreadable_payloads_are_codec_errors(payload: str) -> None:
    """A payload that is not a stored completion raises CodecError, saying so."""
    with pytest.raises(CodecError):
        decode_completion(payload)


def test_non_finite_tool_call_arguments_are_keyed_and_round_trip() -> None:
    """A model's tool-call arguments may hold NaN or an infinity (a lenient JSON parser
    reads them): the request still has a key (NaN-equal requests share it, others differ),
    and a completion carrying them is stored and read back."""
    import math

    from aieng_hookspecs.types import ToolCall

    def asked(value: float) -> Request:
        call = ToolCall("k", "echo", {"x": value})
        return Request(messages=(Message("user", "hi"),
                                 Message("assistant", "", tool_calls=(call,))))

    nan, inf = float("nan"), float("inf")
    assert request_key(asked(nan)) == request_key(asked(nan))
    assert len({request_key(asked(v)) for v in (nan, inf, -inf, 1.0)}) == 4
    completion = Completion(text="", finish_reason="tool_calls",
                            tool_calls=(ToolCall("k", "echo", {"x": nan, "y": inf}),))
    [call] = decode_completion(encode_completion(completion)).tool_calls
    assert math.isnan(call.arguments["x"]) and call.arguments["y"] == inf


def test_the_clients_response_format_object_is_in_the_key() -> None:
    """The gateway keeps a client's ``response_format`` in ``metadata`` and an ``openai``
    backend sends it unchanged: JSON mode and a non-strict schema are other requests than
    a strict schema of the same ``response_schema``, and never share an answer."""
    schema = {"type": "object", "additionalProperties": True}
    strict = {"type": "json_schema",
              "json_schema": {"name": "r", "schema": schema, "strict": True}}
    formats = [{"type": "json_object"}, strict,
               {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}]
    request = chat("Give me an object", response_schema=schema)
    keys = {request_key(attrs.evolve(request, metadata={"response_format": f}))
            for f in formats}
    assert len(keys) == len(formats)
    assert request_key(request) not in keys
