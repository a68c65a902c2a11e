"""Tests of :mod:`aieng_core.testing.strategies`: every value is valid, every type is covered."""

from __future__ import annotations

import inspect
import itertools
import json
import math
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from aieng_hookspecs import types
from aieng_hookspecs.types import Event, Hit
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from aieng_core.testing import strategies as aist

#: Boundary type -> the strategy function that draws it (events are covered separately).
CASES: dict[type[Any], Callable[[], SearchStrategy[Any]]] = {
    types.Document: aist.documents,
    types.Chunk: aist.chunks,
    types.Query: aist.queries,
    types.Hit: aist.hits,
    types.Message: aist.messages,
    types.Request: aist.requests,
    types.Usage: aist.usages,
    types.TokenLogprob: aist.token_logprobs,
    types.Completion: aist.completions,
    types.Delta: aist.deltas,
    types.Sample: aist.samples,
    types.Score: aist.scores,
    types.Finding: aist.findings,
    types.GuardVerdict: aist.guard_verdicts,
    types.Route: aist.routes,
    types.ToolSpec: aist.tool_specs,
    types.ToolCall: aist.tool_calls,
    types.ToolResult: aist.tool_results,
    types.QuantizeResult: aist.quantize_results,
    types.TrainJob: aist.train_jobs,
    types.TrainResult: aist.train_results,
    types.Record: aist.records,
    types.MemoryItem: aist.memory_items,
    types.AgentState: aist.agent_states,
    types.AgentAction: aist.agent_actions,
    types.Feedback: aist.feedbacks,
}

#: ``find`` without shrinking: only whether an example exists matters, not the smallest one.
_EXISTS = settings(phases=[Phase.generate], database=None, max_examples=2_000)

_EVENT_CLASSES = [
    obj
    for name in types.__all__
    if inspect.isclass(obj := getattr(types, name)) and issubclass(obj, Event) and obj is not Event
]


def _finite_throughout(value: object) -> bool:
    """No NaN or infinity anywhere inside (``==`` cannot tell: tuples compare by identity first)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if attrs.has(type(value)):
        return all(_finite_throughout(v) for v in attrs.asdict(value, recurse=False).values())  # type: ignore[arg-type]
    if isinstance(value, dict):
        return all(_finite_throughout(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite_throughout(v) for v in value)
    return True


def _assert_valid(value: object, cls: type[Any]) -> None:
    """The checks every generated boundary value must pass."""
    assert type(value) is cls
    attrs.validate(value)  # type: ignore[arg-type]
    # evolve re-runs converters and validators: a value the contract forbids fails here.
    copy = attrs.evolve(value)  # type: ignore[misc]
    assert copy == value
    assert _finite_throughout(value)
    assert hash(copy) == hash(value)


def test_every_boundary_type_has_a_strategy() -> None:
    """Each class exported by ``aieng_hookspecs.types`` is drawn by some strategy."""
    exported = {
        getattr(types, name) for name in types.__all__ if inspect.isclass(getattr(types, name))
    }
    covered = set(CASES) | set(aist.EVENT_TYPES) | {Event}
    assert exported - covered == set()
    assert set(aist.EVENT_TYPES) == set(_EVENT_CLASSES)


def test_public_names_are_exported() -> None:
    """Every public function of the module is in ``__all__``, and ``__all__`` names exist."""
    public = {
        name
        for name, obj in vars(aist).items()
        if inspect.isfunction(obj) and not name.startswith("_") and obj.__module__ == aist.__name__
    }
    assert public <= set(aist.__all__)
    assert all(hasattr(aist, name) for name in aist.__all__)
    assert aist.__all__ == sorted(aist.__all__, key=lambda n: (not n.isupper(), n))


@pytest.mark.parametrize(
    ("cls", "strategy"), list(CASES.items()), ids=[cls.__name__ for cls in CASES]
)
@given(data=st.data())
def test_values_are_valid_instances(
    cls: type[Any], strategy: Callable[[], SearchStrategy[Any]], data: st.DataObject
) -> None:
    """A strategy draws instances of its type that pass validation and equal their evolve copy."""
    _assert_valid(data.draw(strategy()), cls)


@pytest.mark.parametrize("cls", _EVENT_CLASSES, ids=[cls.__name__ for cls in _EVENT_CLASSES])
@given(data=st.data())
def test_events_of_one_type(cls: type[Event], data: st.DataObject) -> None:
    """``events(cls)`` draws valid instances of exactly that event class."""
    _assert_valid(data.draw(aist.events(cls)), cls)


@given(aist.events())
def test_events_of_any_type(event: Event) -> None:
    """``events()`` draws valid instances of the concrete event classes."""
    assert type(event) in aist.EVENT_TYPES
    _assert_valid(event, type(event))


def test_events_rejects_unknown_type() -> None:
    """Asking for an event class without a strategy fails with the known ones listed."""

    @attrs.frozen(kw_only=True)
    class Drifted(Event):
        name = "drift.detected"

    with pytest.raises(ValueError, match="Drifted.*known: RunStarted"):
        aist.events(Drifted)


@given(aist.json_values())
def test_json_values_round_trip(value: aist.JsonValue) -> None:
    """Every JSON value survives a strict dump and load unchanged."""
    assert json.loads(json.dumps(value, allow_nan=False)) == value


@given(aist.runs())
def test_runs_are_well_formed(runs: list[list[Hit]]) -> None:
    """Each run is ranked 1..n with scores not increasing, unique documents and one source;
    a document id means the same document in every run."""
    assert 1 <= len(runs) <= 4
    sources = [run[0].source for run in runs if run]
    assert len(sources) == len(set(sources))
    by_id: dict[str, types.Document] = {}
    for run in runs:
        assert [hit.rank for hit in run] == list(range(1, len(run) + 1))
        assert all(a.score >= b.score for a, b in itertools.pairwise(run))
        ids = [hit.document.id for hit in run]
        assert len(ids) == len(set(ids))
        assert len({hit.source for hit in run}) <= 1
        for hit in run:
            _assert_valid(hit, Hit)
            assert by_id.setdefault(hit.document.id, hit.document) == hit.document


@given(aist.runs(min_runs=0, max_runs=2, max_hits=3, pool_size=2, scores=st.just(1.0)))
def test_runs_options_are_respected(runs: list[list[Hit]]) -> None:
    """``runs`` honours its size bounds and the given score strategy."""
    assert len(runs) <= 2
    assert all(len(run) <= 2 for run in runs)  # never more hits than pooled documents
    assert all(hit.score == 1.0 for run in runs for hit in run)


def test_runs_share_documents() -> None:
    """Runs overlap (the same document in two runs) and tie (equal scores) often enough to find."""
    shared = find(
        aist.runs(),
        lambda rs: (
            len(rs) >= 2 and bool({h.document.id for h in rs[0]} & {h.document.id for h in rs[1]})
        ),
        settings=_EXISTS,
    )
    assert len(shared) >= 2
    tied = find(
        aist.runs(),
        lambda rs: any(a.score == b.score for r in rs for a, b in itertools.pairwise(r)),
        settings=_EXISTS,
    )
    assert tied


@pytest.mark.parametrize(
    "kwargs",
    [{"min_runs": 3, "max_runs": 2}, {"min_runs": -1}, {"pool_size": 0}, {"max_hits": -1}],
)
def test_runs_rejects_bad_bounds(kwargs: dict[str, Any]) -> None:
    """Impossible size bounds are an error at construction, not a silent empty strategy."""
    with pytest.raises(ValueError):
        aist.runs(**kwargs)


@given(aist.chunks())
def test_chunk_offsets_span_text(chunk: types.Chunk) -> None:
    """A chunk's offsets cover exactly its text."""
    assert chunk.end - chunk.start == len(chunk.text)


@given(aist.messages())
def test_message_tool_fields_follow_role(message: types.Message) -> None:
    """Only assistant messages carry tool calls and only tool messages a tool_call_id."""
    assert not message.tool_calls or message.role == "assistant"
    assert (message.tool_call_id is not None) == (message.role == "tool")


@given(aist.completions())
def test_completion_tool_calls_follow_finish_reason(completion: types.Completion) -> None:
    """A completion carries tool calls exactly when it finished to call tools."""
    assert bool(completion.tool_calls) == (completion.finish_reason == "tool_calls")


@given(aist.agent_actions())
def test_agent_action_tool_calls_follow_kind(action: types.AgentAction) -> None:
    """An agent action carries tool calls exactly when its kind is ``tool_calls``."""
    assert bool(action.tool_calls) == (action.kind == "tool_calls")


@given(aist.hits(documents=aist.documents(ids=st.just("d1"))))
def test_hits_use_given_documents(hit: Hit) -> None:
    """``hits(documents=...)`` draws its documents from the given strategy."""
    assert hit.document.id == "d1"


_FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter", "error")


def test_every_choice_is_reachable() -> None:
    """Every role, finish reason, guard action, memory kind and action kind is generated."""
    cases: list[tuple[SearchStrategy[Any], str, set[str | None]]] = [
        (aist.messages(), "role", {"system", "user", "assistant", "tool"}),
        (aist.completions(), "finish_reason", set(_FINISH_REASONS)),
        (aist.deltas(), "finish_reason", {None, *_FINISH_REASONS}),
        (aist.guard_verdicts(), "action", {"allow", "redact", "block"}),
        (aist.memory_items(), "kind", {"short", "long"}),
        (aist.agent_actions(), "kind", {"tool_calls", "answer", "stop"}),
    ]
    for strategy, attribute, values in cases:
        for wanted in values:

            def has_value(x: object, a: str = attribute, w: str | None = wanted) -> bool:
                return bool(getattr(x, a) == w)

            find(strategy, has_value, settings=_EXISTS)


def test_request_parameters_reach_their_boundaries() -> None:
    """Requests carry whitespace-only stop sequences (``"\\n\\n"``, the commonest), sampling
    parameters past their usual ranges and negative seeds, and tokens with log-probabilities
    far below -1e4: every one valid for the types, and where components slip."""
    cases: list[tuple[SearchStrategy[Any], Callable[[Any], bool]]] = [
        (aist.requests(), lambda r: any(not stop.strip() for stop in r.stop)),
        (aist.requests(), lambda r: r.temperature > 2.0),
        (aist.requests(), lambda r: r.seed is not None and r.seed < 0),
        (aist.requests(), lambda r: r.max_tokens > 4_096),
        (aist.requests(), lambda r: r.top_k is not None and r.top_k > 1_000),
        (aist.token_logprobs(), lambda t: t.logprob < -1e4),
        (aist.deltas(), lambda d: d.logprob is not None and d.logprob < -1e4),
    ]
    for strategy, wanted in cases:
        find(strategy, wanted, settings=_EXISTS)


def _default(field: attrs.Attribute[Any]) -> Any:
    default: Any = field.default
    factory = getattr(default, "factory", None)  # an attrs.Factory default
    return factory() if callable(factory) else default


@pytest.mark.parametrize(
    ("cls", "field"),
    [(cls, field.name) for cls in CASES for field in attrs.fields(cls)
     if field.default is not attrs.NOTHING],
    ids=lambda value: value if isinstance(value, str) else value.__name__,
)
def test_every_optional_field_is_generated(cls: type[Any], field: str) -> None:
    """Every field with a default also takes another value: a strategy that always leaves
    a field at its default (a delta's ``usage``) never shows a component that value."""
    default = _default(attrs.fields_dict(cls)[field])
    find(CASES[cls](), lambda value: getattr(value, field) != default, settings=_EXISTS)
