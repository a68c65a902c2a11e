"""Property tests of the exact key: a change the answer depends on always splits the key,
metadata the backends never read never does."""

from __future__ import annotations

from typing import Any

import attrs
from aieng_cache import request_key
from aieng_hookspecs.types import Message, Request, ToolCall, ToolSpec
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from aieng_core.testing import strategies as aist

#: Request fields a backend reads, each with a strategy of a new value.
_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "model": st.none() | st.text(min_size=1, max_size=8).filter(str.strip),
    "temperature": st.floats(min_value=0.0, max_value=2.0),
    "top_p": st.floats(min_value=0.0, max_value=1.0, exclude_min=True),
    "top_k": st.none() | st.integers(min_value=1, max_value=100),
    "max_tokens": st.integers(min_value=1, max_value=5000),
    "stop": st.lists(st.sampled_from(["\n", "\n\n", "###", "END"]), max_size=2).map(tuple),
    "seed": st.none() | st.integers(min_value=-5, max_value=5),
    "response_schema": st.none() | st.sampled_from(
        [{"type": "object"}, {"type": "object", "required": ["a"]}]),
    "tools": st.lists(aist.tool_specs(), max_size=2).map(tuple),
}

#: ``metadata`` fields the backends read as constraints on the output, and the per-request
#: template version: each with values that ask for something.
_METADATA: dict[str, st.SearchStrategy[Any]] = {
    "logprobs": st.just(True),
    "regex": st.sampled_from([r"\d+", "[a-z]+"]),
    "tool_choice": st.sampled_from(["none", "required", "auto",
                                    {"type": "function", "function": {"name": "f"}}]),
    "parallel_tool_calls": st.booleans(),
    "response_format": st.sampled_from([{"type": "json_object"}, {"type": "text"}]),
    "template_version": st.sampled_from(["v1", "v2"]),
}


def _answer_part(request: Request) -> Any:
    """What of ``request`` the answer depends on, in a comparable form (whitespace runs of
    the messages collapsed as the key does; 0 and 0.0 one temperature)."""
    return (
        [(m.role, " ".join(m.content.split()), m.name, m.tool_call_id,
          [(c.id, c.name, repr(c.arguments)) for c in m.tool_calls]) for m in request.messages],
        request.model, float(request.temperature) + 0.0, request.top_p, request.top_k,
        request.max_tokens, request.stop, request.seed, repr(request.response_schema),
        [(t.name, t.description, repr(t.parameters)) for t in request.tools],
        bool(request.metadata.get("logprobs")),
        [repr(request.metadata.get(name)) for name in _METADATA if name != "logprobs"],
    )


@settings(max_examples=100, deadline=None)
@given(request=aist.requests(), data=st.data())
def test_a_change_the_answer_depends_on_splits_the_key(request: Request,
                                                       data: st.DataObject) -> None:
    """Two requests differing in one field a backend reads (a sampling parameter, an
    output constraint in ``metadata``) never share an entry."""
    name = data.draw(st.sampled_from(sorted(_FIELDS) + sorted(_METADATA)), label="field")
    if name in _FIELDS:
        changed = attrs.evolve(request, **{name: data.draw(_FIELDS[name], label=name)})
    else:
        value = data.draw(_METADATA[name], label=name)
        changed = attrs.evolve(request, metadata={**request.metadata, name: value})
    assume(_answer_part(changed) != _answer_part(request))
    assert request_key(changed) != request_key(request)


_EDITS = st.sampled_from(["content", "role", "name", "call", "order"])


@settings(max_examples=100, deadline=None)
@given(request=aist.requests(), edit=_EDITS, text=st.text(min_size=1, max_size=6))
def test_a_change_of_the_conversation_splits_the_key(request: Request, edit: str,
                                                     text: str) -> None:
    """Another word in a message, another role or author, other tool-call arguments or
    ids, or the messages in another order: never the same entry."""
    messages = list(request.messages)
    first = messages[0]
    if edit == "content":
        messages[0] = attrs.evolve(first, content=first.content + " " + text)
    elif edit == "role":
        messages[0] = Message("user" if first.role != "user" else "system", first.content,
                              name=first.name)
    elif edit == "name":
        messages[0] = attrs.evolve(first, name=(first.name or "") + text)
    elif edit == "call":
        call = ToolCall(id="c-" + text, name="lookup", arguments={"q": text})
        messages[0] = Message("assistant", first.content, tool_calls=(*first.tool_calls, call))
    else:
        messages.append(Message("user", text))
        messages = messages[::-1]
    changed = attrs.evolve(request, messages=tuple(messages))
    assume(_answer_part(changed) != _answer_part(request))
    assert request_key(changed) != request_key(request)


_IRRELEVANT = st.dictionaries(
    st.sampled_from(["user", "trace", "session", "tags", "cache_type", "question_id"]),
    aist.json_values(max_leaves=3), min_size=1, max_size=3)


@settings(max_examples=100, deadline=None)
@given(request=aist.requests(), extra=_IRRELEVANT)
def test_metadata_no_backend_reads_shares_the_entry(request: Request,
                                                    extra: dict[str, Any]) -> None:
    """User ids, trace tags, the TTL's content type: the same answer, one entry."""
    tagged = attrs.evolve(request, metadata={**request.metadata, **extra})
    assert request_key(tagged) == request_key(request)


def test_tool_specs_in_another_order_are_another_request() -> None:
    """The tool list is sent in order (a model may prefer the first): kept in the key."""
    a, b = ToolSpec(name="a"), ToolSpec(name="b")
    base = Request(messages=(Message("user", "hi"),), tools=(a, b))
    assert request_key(attrs.evolve(base, tools=(b, a))) != request_key(base)
