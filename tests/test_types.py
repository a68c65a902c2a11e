"""Tests of the validators and converters of :mod:`aieng_hookspecs.types`."""

from __future__ import annotations

import inspect
import math
import typing
from typing import Any

import attrs
import pytest
from aieng_hookspecs import types
from aieng_hookspecs.types import (
    CacheHit,
    Delta,
    Document,
    Event,
    Finding,
    FirstToken,
    GuardBlocked,
    HookCalled,
    LoopBlocked,
    Message,
    ModelCall,
    QuantizeResult,
    Query,
    Request,
    RunFinished,
    StageFinished,
    TokenLogprob,
    TrainResult,
    Usage,
)

_MESSAGES = (Message("user", "hi"),)
_NAN = math.nan
_INF = math.inf


def _classes() -> list[type[Any]]:
    return [
        obj
        for name in types.__all__
        if inspect.isclass(obj := getattr(types, name)) and attrs.has(obj)
    ]


@pytest.mark.parametrize(
    ("cls", "kwargs", "error"),
    [
        (Delta, {"text": "", "logprob": 0.5}, ValueError),
        (Delta, {"text": "", "logprob": _NAN}, ValueError),
        (Delta, {"text": "", "logprob": "-1"}, TypeError),
        (TokenLogprob, {"token": "a", "logprob": 0.1}, ValueError),
        (Document, {"id": " ", "text": ""}, ValueError),
        (Document, {"id": 7, "text": ""}, TypeError),
        (Request, {"messages": []}, ValueError),
        (Request, {"messages": ["hi"]}, TypeError),
    ],
)
def test_composed_validators_still_reject(
    cls: type[Any], kwargs: dict[str, Any], error: type[Exception]
) -> None:
    """Validators combined with ``and_`` (for mypy) reject what the validator lists rejected."""
    with pytest.raises(error):
        cls(**kwargs)
    assert Delta("", logprob=None).logprob is None
    assert Delta("", logprob=-0.5).logprob == -0.5
    assert Document(id="d", text="").id == "d"


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (CacheHit, {"component": "c", "ts": _NAN}),
        (CacheHit, {"component": "c", "ts": _INF}),
        (CacheHit, {"component": "c", "ts": "now"}),
        (ModelCall, {"component": "m", "messages": ["x"]}),
        (ModelCall, {"component": "m", "messages": _MESSAGES, "ttft_s": "soon"}),
        (ModelCall, {"component": "m", "messages": _MESSAGES, "streamed": "yes"}),
        (ModelCall, {"component": "m", "messages": _MESSAGES, "usage": {"prompt_tokens": 1}}),
        (GuardBlocked, {"component": "g", "stage": "guard_input", "findings": ["pii"]}),
        (LoopBlocked, {"duration_s": 0.1, "active": [1]}),
    ],
    ids=[
        "ts-nan",
        "ts-inf",
        "ts-str",
        "messages-str",
        "ttft-str",
        "streamed-str",
        "usage-dict",
        "findings-str",
        "active-int",
    ],
)
def test_event_fields_are_validated(cls: type[Event], kwargs: dict[str, Any]) -> None:
    """Event fields reject a non-finite ``ts`` and elements or values of the wrong type."""
    with pytest.raises((TypeError, ValueError)):
        cls(**kwargs)
    call = ModelCall(
        component="m",
        messages=list(_MESSAGES),
        usage=Usage(1, 2),
        ttft_s=0.2,
        streamed=True,
        ts=1.5,
    )
    assert call.messages == _MESSAGES
    assert GuardBlocked(component="g", stage="s", findings=[Finding("pii")]).findings
    assert LoopBlocked(duration_s=0.1, active=["a"]).active == ("a",)


_DURATIONS: list[tuple[type[Event], str, dict[str, Any]]] = [
    (RunFinished, "duration_s", {"status": "ok"}),
    (StageFinished, "duration_s", {"stage": "s", "status": "ok"}),
    (HookCalled, "duration_s", {"hook": "h", "plugin": "p"}),
    (ModelCall, "duration_s", {"component": "m", "messages": _MESSAGES}),
    (ModelCall, "ttft_s", {"component": "m", "messages": _MESSAGES}),
    (FirstToken, "ttft_s", {"component": "m"}),
    (LoopBlocked, "duration_s", {}),
]


@pytest.mark.parametrize(
    ("cls", "field", "kwargs"), _DURATIONS, ids=[f"{c.__name__}.{f}" for c, f, _ in _DURATIONS]
)
def test_durations_accept_any_finite_non_negative_number(
    cls: type[Event], field: str, kwargs: dict[str, Any]
) -> None:
    """A duration takes an int or a float ``>= 0`` and rejects negatives, NaN, infinity, bools."""
    good: dict[str, Any]
    bad: dict[str, Any]
    for value in (0, 3, 0.0, 1.25):
        good = {**kwargs, field: value}
        assert getattr(cls(**good), field) == value
    for wrong in (-1, -0.5, _NAN, _INF, True, "1"):
        bad = {**kwargs, field: wrong}
        with pytest.raises((TypeError, ValueError)):
            cls(**bad)


def test_finding_end_must_not_precede_start() -> None:
    """A finding whose ``end`` is before its ``start`` is rejected, an empty span is not."""
    with pytest.raises(ValueError, match="must not precede"):
        Finding("email", start=5, end=4)
    assert Finding("email", start=5, end=5).end == 5
    assert Finding("email", start=5, end=9).end == 9


@pytest.mark.parametrize("bad", [_NAN, _INF, "0.9", None, True, [0.9]])
def test_named_numbers_must_be_finite(bad: object) -> None:
    """``QuantizeResult.quality`` and ``TrainResult.metrics`` take only finite numbers."""
    with pytest.raises((TypeError, ValueError), match=r"\['x'\]"):
        QuantizeResult("m", "int8", 2, 1, quality={"x": bad})
    with pytest.raises((TypeError, ValueError), match=r"\['x'\]"):
        TrainResult("a", metrics={"x": bad})
    assert QuantizeResult("m", "int8", 2, 1, quality={"cosine": 0.99, "n": 3}).quality["n"] == 3
    assert TrainResult("a", metrics={"loss": 0.5}).metrics == {"loss": 0.5}


def test_response_schema_is_copied() -> None:
    """``Request.response_schema`` is a copy of the caller's mapping; ``None`` stays ``None``."""
    schema: dict[str, Any] = {"type": "object"}
    request = Request(_MESSAGES, response_schema=schema)
    schema["type"] = "array"
    assert request.response_schema == {"type": "object"}
    assert Request(_MESSAGES).response_schema is None
    assert hash(request) == hash(Request(_MESSAGES, response_schema={"type": "string"}))
    with pytest.raises(TypeError):
        Request(_MESSAGES, response_schema=["type"])  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", _classes(), ids=lambda c: c.__name__)
def test_boundary_types_are_frozen_with_tuple_collections(cls: type[Any]) -> None:
    """Every boundary type is frozen, turns sequences into tuples and shares no mutable default."""
    blank = object.__new__(cls)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        blank.__setattr__(attrs.fields(cls)[0].name, None)
    hints = typing.get_type_hints(cls)
    for field in attrs.fields(cls):
        hint = hints[field.name]
        origins = {typing.get_origin(hint), *(typing.get_origin(a) for a in typing.get_args(hint))}
        if tuple in origins or dict in origins:
            assert field.converter is not None, field.name
        if dict in origins:
            assert field.hash is False, field.name
        assert not isinstance(field.default, (list, dict, set)), field.name


def test_unchecked_builds_the_same_value_and_rejects_unknown_fields() -> None:
    """`unchecked` builds a value equal to the checked constructor's, fills defaults and
    factories, and still refuses unknown or missing fields."""
    from aieng_hookspecs.types import Message, Request, StageFinished, unchecked

    built = unchecked(StageFinished, stage="s", status="ok", duration_s=0.5, ts=1.0)
    assert built == StageFinished(stage="s", status="ok", duration_s=0.5, ts=1.0)
    request = unchecked(Request, messages=(unchecked(Message, role="user", content="hi"),))
    assert request == Request(messages=[Message("user", "hi")])
    assert request.metadata == {} and request.metadata is not unchecked(
        Request, messages=request.messages).metadata
    with pytest.raises(TypeError, match="unknown field"):
        unchecked(StageFinished, stage="s", status="ok", duration_s=0.5, colour="red")
    with pytest.raises(TypeError, match="missing field 'status'"):
        unchecked(StageFinished, stage="s", duration_s=0.5)


def test_whitespace_stop_sequences_are_allowed_but_empty_is_not() -> None:
    """`"\\n\\n"` is a common stop sequence; only the empty string is refused."""
    from aieng_hookspecs.types import Message, Request

    assert Request(messages=[Message("user", "x")], stop=["\n\n", " "]).stop == ("\n\n", " ")
    with pytest.raises(ValueError):
        Request(messages=[Message("user", "x")], stop=[""])


_HIT_DOC = Document(id="d", text="x")
_INTEGERS: list[tuple[type[Any], str, dict[str, Any]]] = [
    (Request, "max_tokens", {"messages": _MESSAGES}),
    (Request, "top_k", {"messages": _MESSAGES}),
    (Request, "seed", {"messages": _MESSAGES}),
    (Usage, "prompt_tokens", {}),
    (Usage, "completion_tokens", {}),
    (Delta, "index", {"text": ""}),
    (types.Chunk, "start", {"id": "c", "document_id": "d", "text": "", "end": 5}),
    (types.Chunk, "end", {"id": "c", "document_id": "d", "text": ""}),
    (types.Hit, "rank", {"document": _HIT_DOC, "score": 1.0}),
    (Finding, "end", {"kind": "email"}),
    (QuantizeResult, "size_before", {"model": "m", "scheme": "int8", "size_after": 1}),
    (types.AgentState, "step", {"messages": _MESSAGES}),
    (types.AgentState, "max_steps", {"messages": _MESSAGES}),
    (types.TokenEvent, "index", {"component": "c", "text": "t"}),
    (types.BusDropped, "dropped", {"subscriber": "s"}),
]


@pytest.mark.parametrize(
    ("cls", "field", "kwargs"), _INTEGERS, ids=[f"{c.__name__}.{f}" for c, f, _ in _INTEGERS]
)
def test_integer_fields_refuse_bools_naming_the_field(
    cls: type[Any], field: str, kwargs: dict[str, Any]
) -> None:
    """A count, an offset, a rank or a seed is an int: ``True`` (an int subclass) is a
    caller's bug, refused as the float fields refuse it, with the field's name."""
    assert getattr(cls(**{**kwargs, field: 1}), field) == 1
    for wrong in (True, False):
        with pytest.raises(TypeError, match=field):
            cls(**{**kwargs, field: wrong})
    with pytest.raises(TypeError, match=field):
        cls(**{**kwargs, field: 1.0})


def test_top_p_must_be_a_number_not_none() -> None:
    """``Request.top_p`` is a float in (0, 1]: ``None`` is refused (backends compare it)."""
    with pytest.raises(TypeError, match="top_p"):
        Request(_MESSAGES, top_p=None)  # type: ignore[arg-type]
    assert Request(_MESSAGES, top_p=0.5).top_p == 0.5


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (types.Score, {"name": "s", "value": 10**400}),
        (types.Hit, {"document": _HIT_DOC, "score": -(10**400)}),
        (Request, {"messages": _MESSAGES, "temperature": 10**400}),
        (TrainResult, {"artifact": "a", "metrics": {"loss": 10**400}}),
    ],
    ids=["score", "hit", "temperature", "metrics"],
)
def test_an_int_too_large_for_a_float_is_refused_naming_the_field(
    cls: type[Any], kwargs: dict[str, Any]
) -> None:
    """An int past the float range is no finite number: a ValueError naming the field,
    not a bare OverflowError from the check."""
    field = next(k for k in kwargs if k not in ("name", "document", "messages", "artifact"))
    with pytest.raises(ValueError, match=field):
        cls(**kwargs)


@pytest.mark.parametrize(("metadata", "filters", "expected"), [
    ({"draft": 1}, {"draft": True}, False),  # JSON keeps booleans apart from numbers
    ({"draft": True}, {"draft": 1}, False),
    ({"draft": True}, {"draft": True}, True),
    ({"n": 1}, {"n": 1.0}, True),  # one number
    ({"tags": ["a", "b"]}, {"tags": ["a", "b"]}, True),
    ({"tags": [1]}, {"tags": [True]}, False),
    ({"meta": {"x": 0}}, {"meta": {"x": False}}, False),
    ({}, {"lang": None}, True),  # a missing key reads as null
    ({"lang": None}, {"lang": None}, True),
    ({"lang": "en"}, {"lang": None}, False),
    ({"lang": 0}, {"lang": None}, False),
    ({"lang": "en"}, {}, True),
])
def test_query_filters_use_json_equality(metadata: dict[str, Any], filters: dict[str, Any],
                                         expected: bool) -> None:
    """``Query.matches`` is the contract's filter rule; the kernel's ``memory`` retriever
    follows it (it used Python's ``==``: ``{"draft": True}`` found ``"draft": 1``)."""
    from aieng_core.builtins import MemoryOptions, MemoryRetriever

    query = Query("alpha", filters=filters)
    assert query.matches(metadata) is expected
    retriever = MemoryRetriever(MemoryOptions())
    retriever.aieng_index([Document("a", "alpha", metadata=metadata)])
    assert [h.document.id for h in retriever.aieng_retrieve(query, 5)] == (
        ["a"] if expected else [])
    assert retriever.aieng_retrieve(Query("alpha"), 0) == []  # k = 0 asks for nothing


def test_valid_utf8_replaces_lone_surrogates_and_joins_pairs() -> None:
    """Text that encodes is returned as it is; a lone surrogate is U+FFFD; a high and a low
    surrogate side by side are the character they spell."""
    from aieng_hookspecs import valid_utf8

    text = "plain é 😀"
    assert valid_utf8(text) is text
    assert valid_utf8("a\udcffb\ud800") == "a\ufffdb\ufffd"
    assert valid_utf8("\ud83d\ude00!") == "😀!"
    valid_utf8("\udc80" * 3 + "x").encode("utf-8")


def test_json_equal_keeps_numbers_of_other_libraries_apart_from_lists() -> None:
    """A numpy number in a document's metadata (as embedders and data frames leave them)
    against a list in a filter: numpy compared item by item, so ``np.float64(1.0)`` equalled
    ``[1.0]`` and ``np.float64(0.5)`` against ``["a", "b"]`` raised ValueError out of a
    filtered search. A number is no list; numbers of other types still compare as numbers."""
    from decimal import Decimal

    import numpy as np
    from aieng_hookspecs.types import json_equal

    assert json_equal(np.float64(1.0), [1.0]) is False
    assert json_equal(["a", "b"], np.float64(0.5)) is False
    assert json_equal(np.float64(0.5), {"a": 1}) is False
    assert Query("q", filters={"score": ["a", "b"]}).matches(
        {"score": np.float64(0.5)}) is False
    assert json_equal(np.float64(0.5), 0.5) and json_equal(np.int64(3), 3.0)
    assert json_equal(Decimal(1), np.int64(1)) and not json_equal(Decimal(2), np.int64(1))
    assert json_equal(np.int64(1), [1]) is False
