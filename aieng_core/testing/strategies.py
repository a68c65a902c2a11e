"""Hypothesis strategies for every boundary type of :mod:`aieng_hookspecs.types`.

One public function per type, each returning a :class:`~hypothesis.strategies.SearchStrategy`
whose values pass the type's validators, so a property test of a plugin never trips on a
value the contract forbids::

    from hypothesis import given
    from aieng_core.testing import strategies as aist

    @given(aist.queries(), aist.runs())
    def test_fusion_ignores_run_order(query, runs):
        ...

Text is drawn from the whole of Unicode (surrogates excluded, as ``str`` from UTF-8 never
holds them), empty where the type allows it. Values never hold NaN, so ``x == x`` and
``attrs.evolve(x) == x`` hold for every generated value. Sizes are kept small: the point is
the shape of the values, not their volume.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

from aieng_hookspecs.types import (
    AgentAction,
    AgentFinished,
    AgentState,
    AgentStepped,
    BusDropped,
    CacheHit,
    Chunk,
    Completion,
    Delta,
    Document,
    ErrorEvent,
    Event,
    Feedback,
    Finding,
    FirstToken,
    GuardBlocked,
    JudgeScored,
    GuardVerdict,
    Hit,
    HookCalled,
    LoopBlocked,
    MemoryItem,
    Message,
    ModelCall,
    QuantizeResult,
    Query,
    Record,
    Request,
    Route,
    RunFinished,
    RunStarted,
    Sample,
    Score,
    StageFinished,
    StageStarted,
    TokenEvent,
    TokenLogprob,
    ToolCall,
    ToolResult,
    ToolSpec,
    TrainJob,
    TrainResult,
    Usage,
)
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

__all__ = [
    "EVENT_TYPES",
    "JsonValue",
    "agent_actions",
    "agent_states",
    "chunks",
    "completions",
    "deltas",
    "documents",
    "events",
    "feedbacks",
    "findings",
    "guard_verdicts",
    "hits",
    "json_values",
    "memory_items",
    "messages",
    "quantize_results",
    "queries",
    "records",
    "requests",
    "routes",
    "runs",
    "samples",
    "scores",
    "token_logprobs",
    "tool_calls",
    "tool_results",
    "tool_specs",
    "train_jobs",
    "train_results",
    "usages",
]

#: A JSON value as :func:`json.loads` returns it (objects are ``dict`` with ``str`` keys).
JsonValue: TypeAlias = "None | bool | int | float | str | list[JsonValue] | dict[str, JsonValue]"

#: The concrete event classes of the contract that :func:`events` draws from.
EVENT_TYPES: tuple[type[Event], ...] = (
    RunStarted,
    RunFinished,
    StageStarted,
    StageFinished,
    HookCalled,
    ModelCall,
    FirstToken,
    TokenEvent,
    CacheHit,
    GuardBlocked,
    JudgeScored,
    ErrorEvent,
    LoopBlocked,
    BusDropped,
    AgentStepped,
    AgentFinished,
)

# JSON numbers beyond 2**53 lose precision in most other languages (and SQLite stops at
# 2**63): metadata that leaves the process must survive the trip.
_JSON_INT_LIMIT = 2**53
_SHORT = 24
_LONG = 120

# ---------------------------------------------------------------------------- scalars


def _text(max_size: int = _LONG) -> SearchStrategy[str]:
    """Any text, the empty string included."""
    return st.text(max_size=max_size)


def _non_blank(max_size: int = _SHORT) -> SearchStrategy[str]:
    """Text with at least one character that is not whitespace (what ``non_empty`` wants)."""
    return st.text(min_size=1, max_size=max_size).filter(lambda s: bool(s.strip()))


def _finite(
    min_value: float | None = None, max_value: float | None = None
) -> SearchStrategy[float]:
    """Finite floats (no NaN, no infinity), optionally bounded."""
    return st.floats(
        min_value=min_value, max_value=max_value, allow_nan=False, allow_infinity=False
    )


def _seconds() -> SearchStrategy[float]:
    """Durations: non-negative finite floats of a plausible magnitude."""
    return st.floats(min_value=0.0, max_value=1e6, allow_nan=False)


def _tool_names() -> SearchStrategy[str]:
    """Names that :class:`ToolSpec` and :class:`ToolCall` accept."""
    return st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}", fullmatch=True)


def _choices(cls: type, field_name: str) -> tuple[Any, ...]:
    """The values of the ``Literal`` annotation of a field (``None`` left out).

    Read from the type rather than restated here, so a new finish reason or role in the
    contract is generated without touching this module. Typed ``Any``: each field has its
    own ``Literal`` type, which a checker cannot know from the field's name.
    """
    hint = typing.get_type_hints(cls)[field_name]
    stack: list[Any] = [hint]
    values: list[Any] = []
    while stack:
        current = stack.pop(0)
        if typing.get_origin(current) is typing.Literal:
            values.extend(typing.get_args(current))
        elif current is not type(None):
            stack.extend(typing.get_args(current))
    if not values:
        raise TypeError(f"{cls.__name__}.{field_name} is not annotated with a Literal")
    return tuple(values)


def json_values(*, max_leaves: int = 8) -> SearchStrategy[JsonValue]:
    """JSON values: ``None``, booleans, integers, finite floats, text, lists and objects.

    Integers stay within ``±2**53`` and floats are finite, so every value survives
    ``json.loads(json.dumps(value, allow_nan=False))`` unchanged.

    :param max_leaves: the most scalars in one value.
    :returns: a strategy of JSON values.
    """
    scalars: SearchStrategy[JsonValue] = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-_JSON_INT_LIMIT, max_value=_JSON_INT_LIMIT),
        _finite(),
        _text(_SHORT),
    )

    def extend(children: SearchStrategy[JsonValue]) -> SearchStrategy[JsonValue]:
        return st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(_text(_SHORT), children, max_size=4),
        )

    return st.recursive(scalars, extend, max_leaves=max_leaves)


def _json_objects(max_size: int = 4) -> SearchStrategy[dict[str, JsonValue]]:
    """JSON objects: the ``metadata`` of most types."""
    return st.dictionaries(_text(_SHORT), json_values(), max_size=max_size)


def _float_maps() -> SearchStrategy[dict[str, float]]:
    """Named finite numbers: metrics and quality changes."""
    return st.dictionaries(_non_blank(), _finite(), max_size=4)


@st.composite
def _object_schemas(draw: st.DrawFn) -> dict[str, JsonValue]:
    """Small JSON schemas of ``object`` type, as tools and response formats declare them."""
    kinds = st.sampled_from(["string", "integer", "number", "boolean", "array", "object"])
    properties = draw(st.dictionaries(_tool_names(), kinds, max_size=4))
    schema: dict[str, JsonValue] = {
        "type": "object",
        "properties": {name: {"type": kind} for name, kind in properties.items()},
    }
    if properties:
        required = draw(st.lists(st.sampled_from(sorted(properties)), unique=True))
        if required:
            schema["required"] = list(required)
    return schema


# ---------------------------------------------------------------------------- retrieval


def documents(*, ids: SearchStrategy[str] | None = None) -> SearchStrategy[Document]:
    """Documents with any text (empty included), an optional title and JSON metadata.

    :param ids: the strategy of document ids; by default any non-blank text.
    :returns: a strategy of :class:`Document`.
    """
    return st.builds(
        Document,
        id=_non_blank() if ids is None else ids,
        text=_text(),
        title=_text(_SHORT),
        metadata=_json_objects(),
    )


# ``hits(documents=...)`` shadows the function inside its body.
_all_documents = documents


@st.composite
def _chunks(draw: st.DrawFn) -> Chunk:
    text = draw(_text())
    start = draw(st.integers(min_value=0, max_value=10_000))
    return Chunk(
        id=draw(_non_blank()),
        document_id=draw(_non_blank()),
        text=text,
        start=start,
        end=start + len(text),
        metadata=draw(_json_objects()),
    )


def chunks() -> SearchStrategy[Chunk]:
    """Chunks whose offsets span their text (``end - start == len(text)``).

    :returns: a strategy of :class:`Chunk`.
    """
    return _chunks()


def queries() -> SearchStrategy[Query]:
    """Queries with any text (empty and whitespace-only included) and JSON filters.

    :returns: a strategy of :class:`Query`.
    """
    return st.builds(Query, text=_text(), id=_text(_SHORT), filters=_json_objects(max_size=2))


def hits(*, documents: SearchStrategy[Document] | None = None) -> SearchStrategy[Hit]:
    """Single hits: any document, a finite score, a rank of 1 or more.

    Use :func:`runs` for ranked lists whose ranks and scores agree.

    :param documents: where the documents come from; by default :func:`documents`.
    :returns: a strategy of :class:`Hit`.
    """
    return st.builds(
        Hit,
        document=_all_documents() if documents is None else documents,
        score=_finite(),
        rank=st.integers(min_value=1, max_value=1_000),
        source=_text(_SHORT),
    )


@st.composite
def _runs(
    draw: st.DrawFn,
    min_runs: int,
    max_runs: int,
    max_hits: int,
    pool_size: int,
    score_values: SearchStrategy[float],
) -> list[list[Hit]]:
    pool = draw(st.lists(documents(), min_size=1, max_size=pool_size, unique_by=lambda d: d.id))
    count = draw(st.integers(min_value=min_runs, max_value=max_runs))
    sources = draw(st.lists(_non_blank(), min_size=count, max_size=count, unique=True))
    result: list[list[Hit]] = []
    for source in sources:
        picked = draw(
            st.lists(
                st.sampled_from(pool),
                max_size=min(max_hits, len(pool)),
                unique_by=lambda d: d.id,
            )
        )
        values = sorted(
            draw(st.lists(score_values, min_size=len(picked), max_size=len(picked))),
            reverse=True,
        )
        result.append(
            [
                Hit(document=document, score=score, rank=rank, source=source)
                for rank, (document, score) in enumerate(zip(picked, values), start=1)
            ]
        )
    return result


def runs(
    *,
    min_runs: int = 1,
    max_runs: int = 4,
    max_hits: int = 8,
    pool_size: int = 10,
    scores: SearchStrategy[float] | None = None,
) -> SearchStrategy[list[list[Hit]]]:
    """Retrieval runs, as ``aieng_fuse`` receives them: one ranked list of hits per retriever.

    Within a run ranks are ``1..n``, scores do not increase (ties happen) and each document
    appears once; every run has its own non-blank ``source``. All runs draw their documents
    from one shared pool, so the same document (equal in every field) turns up in several
    runs and fusion has something to fuse. A run may be empty (a retriever with no hits).

    :param min_runs: the fewest runs.
    :param max_runs: the most runs.
    :param max_hits: the most hits in one run.
    :param pool_size: the most distinct documents across all runs.
    :param scores: where raw scores come from (sorted afterwards); by default finite floats
        with frequent ties.
    :returns: a strategy of lists of runs.
    """
    if not 0 <= min_runs <= max_runs:
        raise ValueError(f"need 0 <= min_runs <= max_runs, got {min_runs} and {max_runs}")
    if max_hits < 0 or pool_size < 1:
        raise ValueError("max_hits must be >= 0 and pool_size >= 1")
    # Ties are where fusers disagree about order: make them common, not a 1-in-2**64 event.
    score_values = (
        scores
        if scores is not None
        else st.one_of(st.sampled_from([0.0, 0.5, 1.0]), _finite(min_value=-1e6, max_value=1e6))
    )
    return _runs(min_runs, max_runs, max_hits, pool_size, score_values)


# ---------------------------------------------------------------------------- tools


def tool_specs() -> SearchStrategy[ToolSpec]:
    """Tool specifications with valid names and small ``object`` JSON schemas.

    :returns: a strategy of :class:`ToolSpec`.
    """
    return st.builds(
        ToolSpec, name=_tool_names(), description=_text(), parameters=_object_schemas()
    )


def tool_calls() -> SearchStrategy[ToolCall]:
    """Tool calls with valid names and JSON-object arguments.

    :returns: a strategy of :class:`ToolCall`.
    """
    return st.builds(ToolCall, id=_non_blank(), name=_tool_names(), arguments=_json_objects())


def tool_results() -> SearchStrategy[ToolResult]:
    """Tool results, errors included.

    :returns: a strategy of :class:`ToolResult`.
    """
    return st.builds(ToolResult, call_id=_non_blank(), content=_text(), is_error=st.booleans())


# ---------------------------------------------------------------------------- chat


@st.composite
def _messages(draw: st.DrawFn) -> Message:
    role = draw(st.sampled_from(_choices(Message, "role")))
    # Tool plumbing only where the chat protocol puts it: calls on assistant messages,
    # the answered call's id on tool messages.
    calls = draw(st.lists(tool_calls(), max_size=2)) if role == "assistant" else []
    call_id = draw(_non_blank()) if role == "tool" else None
    return Message(
        role=role,
        content=draw(_text()),
        name=draw(st.none() | _text(_SHORT)),
        tool_call_id=call_id,
        tool_calls=calls,
    )


def messages() -> SearchStrategy[Message]:
    """Chat messages of every role; only assistant messages carry tool calls and only tool
    messages a ``tool_call_id``.

    :returns: a strategy of :class:`Message`.
    """
    return _messages()


def _counts(minimum: int, usual: int) -> SearchStrategy[int]:
    """Integers from ``minimum`` up to what JSON carries, mostly at most ``usual``."""
    return st.one_of(st.integers(min_value=minimum, max_value=usual),
                     st.integers(min_value=minimum, max_value=_JSON_INT_LIMIT))


#: Stop sequences: any non-empty text, the common whitespace ones ("\n\n") included.
_STOPS = st.one_of(st.sampled_from(["\n", "\n\n", " ", "\t"]), st.text(min_size=1, max_size=8))


def requests() -> SearchStrategy[Request]:
    """Generation requests: one to four messages and sampling parameters across their range
    (temperatures past 2, negative seeds, whitespace stop sequences).

    :returns: a strategy of :class:`Request`.
    """
    return st.builds(
        Request,
        messages=st.lists(messages(), min_size=1, max_size=4),
        model=st.none() | _non_blank(),
        temperature=_finite(min_value=0.0, max_value=2.0) | _finite(min_value=0.0),
        top_k=st.none() | _counts(1, 1_000),
        top_p=st.floats(min_value=0.0, max_value=1.0, exclude_min=True),
        max_tokens=_counts(1, 4_096),
        stop=st.lists(_STOPS, max_size=3),
        seed=st.none() | st.integers(min_value=-_JSON_INT_LIMIT, max_value=_JSON_INT_LIMIT),
        response_schema=st.none() | _object_schemas(),
        tools=st.lists(tool_specs(), max_size=2),
        metadata=_json_objects(),
    )


def usages() -> SearchStrategy[Usage]:
    """Token counts.

    :returns: a strategy of :class:`Usage`.
    """
    counts = st.integers(min_value=0, max_value=1_000_000)
    return st.builds(Usage, prompt_tokens=counts, completion_tokens=counts)


def _logprobs() -> SearchStrategy[float]:
    """Log-probabilities: finite and ``<= 0``, mostly of a plausible size, down to -1e308
    (where ``exp`` underflows and a sum overflows)."""
    return _finite(min_value=-1e4, max_value=0.0) | _finite(max_value=0.0)


def token_logprobs() -> SearchStrategy[TokenLogprob]:
    """Tokens with finite log-probabilities ``<= 0``.

    :returns: a strategy of :class:`TokenLogprob`.
    """
    return st.builds(TokenLogprob, token=_text(8), logprob=_logprobs())


@st.composite
def _completions(draw: st.DrawFn) -> Completion:
    reason = draw(st.sampled_from(_choices(Completion, "finish_reason")))
    calls = draw(st.lists(tool_calls(), min_size=1, max_size=2)) if reason == "tool_calls" else []
    return Completion(
        text=draw(_text()),
        finish_reason=reason,
        usage=draw(usages()),
        model=draw(_text(_SHORT)),
        logprobs=draw(st.none() | st.lists(token_logprobs(), max_size=6)),
        cached=draw(st.booleans()),
        tool_calls=calls,
    )


def completions() -> SearchStrategy[Completion]:
    """Completions of every finish reason, with or without log-probabilities; those that
    finish with ``tool_calls`` carry at least one call, the others none.

    :returns: a strategy of :class:`Completion`.
    """
    return _completions()


def deltas() -> SearchStrategy[Delta]:
    """Streamed pieces, final ones (with a finish reason, and maybe the usage) included.

    :returns: a strategy of :class:`Delta`.
    """
    return st.builds(
        Delta,
        text=_text(_SHORT),
        index=st.integers(min_value=0, max_value=100_000),
        finish_reason=st.none() | st.sampled_from(_choices(Delta, "finish_reason")),
        logprob=st.none() | _logprobs(),
        usage=st.none() | usages(),
        tool_calls=st.lists(tool_calls(), max_size=2),
        model=_text(_SHORT),
    )


# ---------------------------------------------------------------------------- evaluation


def samples() -> SearchStrategy[Sample]:
    """Judge samples with no reference, one, or several, and optional context passages.

    :returns: a strategy of :class:`Sample`.
    """
    return st.builds(
        Sample,
        input=_text(),
        output=_text(),
        reference=st.none() | _text() | st.lists(_text(), max_size=3).map(tuple),
        context=st.lists(_text(), max_size=3),
        id=_text(_SHORT),
        metadata=_json_objects(),
    )


def scores() -> SearchStrategy[Score]:
    """Named finite scores.

    :returns: a strategy of :class:`Score`.
    """
    return st.builds(
        Score, name=_non_blank(), value=_finite(), rationale=_text(), judge=_text(_SHORT)
    )


@st.composite
def _findings(draw: st.DrawFn) -> Finding:
    start = draw(st.integers(min_value=0, max_value=10_000))
    end = draw(st.integers(min_value=start, max_value=start + 200))
    return Finding(kind=draw(_non_blank()), start=start, end=end, detail=draw(_text(_SHORT)))


def findings() -> SearchStrategy[Finding]:
    """Guardrail findings whose span is well-formed (``end >= start``).

    :returns: a strategy of :class:`Finding`.
    """
    return _findings()


def guard_verdicts() -> SearchStrategy[GuardVerdict]:
    """Verdicts of every action, with findings, and sometimes a whole conversation or
    tool calls.

    :returns: a strategy of :class:`GuardVerdict`.
    """
    return st.builds(
        GuardVerdict,
        action=st.sampled_from(_choices(GuardVerdict, "action")),
        text=_text(),
        findings=st.lists(findings(), max_size=3),
        guard=_text(_SHORT),
        messages=st.none() | st.lists(messages(), min_size=1, max_size=3),
        tool_calls=st.none() | st.lists(tool_calls(), max_size=2),
    )


def routes() -> SearchStrategy[Route]:
    """Routes with an optional confidence and fallbacks.

    :returns: a strategy of :class:`Route`.
    """
    return st.builds(
        Route,
        target=_non_blank(),
        reason=_text(_SHORT),
        score=st.none() | _finite(),
        fallbacks=st.lists(_non_blank(), max_size=3),
    )


# ---------------------------------------------------------------------------- jobs


def quantize_results() -> SearchStrategy[QuantizeResult]:
    """Quantization outcomes with sizes and quality changes.

    :returns: a strategy of :class:`QuantizeResult`.
    """
    sizes = st.integers(min_value=0, max_value=2**40)
    return st.builds(
        QuantizeResult,
        model=_non_blank(),
        scheme=_non_blank(),
        size_before=sizes,
        size_after=sizes,
        quality=_float_maps(),
    )


def train_jobs() -> SearchStrategy[TrainJob]:
    """Finetuning jobs with JSON hyperparameters.

    :returns: a strategy of :class:`TrainJob`.
    """
    return st.builds(
        TrainJob,
        base_model=_non_blank(),
        dataset=_non_blank(),
        method=st.sampled_from(["lora", "qlora"]) | _non_blank(),
        output_dir=_non_blank(),
        hyperparameters=_json_objects(),
    )


def train_results() -> SearchStrategy[TrainResult]:
    """Training outcomes with finite metrics.

    :returns: a strategy of :class:`TrainResult`.
    """
    return st.builds(TrainResult, artifact=_non_blank(), metrics=_float_maps())


def records() -> SearchStrategy[Record]:
    """Dataset rows with JSON fields.

    :returns: a strategy of :class:`Record`.
    """
    return st.builds(Record, id=_non_blank(), fields=_json_objects())


def memory_items() -> SearchStrategy[MemoryItem]:
    """Short- and long-term memory entries.

    :returns: a strategy of :class:`MemoryItem`.
    """
    return st.builds(
        MemoryItem,
        text=_text(),
        kind=st.sampled_from(_choices(MemoryItem, "kind")),
        score=_finite(),
        metadata=_json_objects(),
    )


@st.composite
def _agent_states(draw: st.DrawFn) -> AgentState:
    max_steps = draw(st.integers(min_value=1, max_value=100))
    return AgentState(
        messages=draw(st.lists(messages(), max_size=4)),
        step=draw(st.integers(min_value=0, max_value=max_steps)),
        max_steps=max_steps,
        cost=draw(_finite(min_value=0.0, max_value=1e6)),
        tools=draw(st.lists(tool_specs(), max_size=2, unique_by=lambda spec: spec.name)),
    )


def agent_states() -> SearchStrategy[AgentState]:
    """Agent states, from the first step to an exhausted budget (``step <= max_steps``).

    :returns: a strategy of :class:`AgentState`.
    """
    return _agent_states()


@st.composite
def _agent_actions(draw: st.DrawFn) -> AgentAction:
    kind = draw(st.sampled_from(_choices(AgentAction, "kind")))
    calls = draw(st.lists(tool_calls(), min_size=1, max_size=3)) if kind == "tool_calls" else []
    return AgentAction(kind=kind, text=draw(_text()), tool_calls=calls)


def agent_actions() -> SearchStrategy[AgentAction]:
    """Agent actions; ``tool_calls`` actions carry at least one call, the others none.

    :returns: a strategy of :class:`AgentAction`.
    """
    return _agent_actions()


def feedbacks() -> SearchStrategy[Feedback]:
    """User feedback of the documented kinds and any other non-blank kind.

    :returns: a strategy of :class:`Feedback`.
    """
    kinds = ["thumbs", "rating", "correction", "regenerate", "early_stop"]
    return st.builds(
        Feedback,
        run_id=_non_blank(),
        kind=st.sampled_from(kinds) | _non_blank(),
        value=_finite(),
        text=_text(),
        metadata=_json_objects(),
    )


# ---------------------------------------------------------------------------- events


def _event_fields() -> dict[str, SearchStrategy[Any]]:
    """The fields every event has."""
    return {
        "run_id": _text(_SHORT),
        "pipeline": _text(_SHORT),
        "ts": st.floats(min_value=0.0, max_value=4e9, allow_nan=False),
    }


def _event_strategies() -> dict[type[Event], Callable[[], SearchStrategy[Event]]]:
    names = _text(_SHORT)
    return {
        RunStarted: lambda: st.builds(RunStarted, input=_text(), parent=_text(_SHORT),
                                     **_event_fields()),
        RunFinished: lambda: st.builds(
            RunFinished,
            status=st.sampled_from(["ok", "blocked", "error", "cancelled"]),
            duration_s=_seconds(),
            **_event_fields(),
        ),
        StageStarted: lambda: st.builds(StageStarted, stage=names, **_event_fields()),
        StageFinished: lambda: st.builds(
            StageFinished,
            stage=names,
            status=st.sampled_from(["ok", "skipped", "error", "blocked", "hit"]),
            duration_s=_seconds(),
            **_event_fields(),
        ),
        HookCalled: lambda: st.builds(
            HookCalled,
            hook=names,
            plugin=names,
            stage=names,
            outcome=st.sampled_from(["ok", "none", "error", "timeout"]),
            duration_s=_seconds(),
            **_event_fields(),
        ),
        ModelCall: lambda: st.builds(
            ModelCall,
            component=names,
            messages=st.lists(messages(), min_size=1, max_size=3),
            parameters=_json_objects(),
            raw_output=_text(),
            usage=usages(),
            duration_s=_seconds(),
            ttft_s=st.none() | _seconds(),
            streamed=st.booleans(),
            **_event_fields(),
        ),
        FirstToken: lambda: st.builds(
            FirstToken, component=names, ttft_s=_seconds(), **_event_fields()
        ),
        TokenEvent: lambda: st.builds(
            TokenEvent,
            component=names,
            text=_text(_SHORT),
            index=st.integers(min_value=0, max_value=100_000),
            **_event_fields(),
        ),
        CacheHit: lambda: st.builds(CacheHit, component=names, **_event_fields()),
        GuardBlocked: lambda: st.builds(
            GuardBlocked,
            component=names,
            stage=st.sampled_from(["guard_input", "guard_output"]),
            findings=st.lists(findings(), max_size=3),
            **_event_fields(),
        ),
        JudgeScored: lambda: st.builds(
            JudgeScored, component=names, scores=st.lists(scores(), max_size=3),
            **_event_fields(),
        ),
        ErrorEvent: lambda: st.builds(
            ErrorEvent,
            stage=names,
            hook=names,
            plugin=names,
            error_type=_non_blank(),
            message=_text(),
            policy=st.sampled_from(["fail", "skip", "fallback"]),
            **_event_fields(),
        ),
        LoopBlocked: lambda: st.builds(
            LoopBlocked,
            duration_s=_seconds(),
            active=st.lists(names, max_size=3),
            **_event_fields(),
        ),
        BusDropped: lambda: st.builds(
            BusDropped,
            subscriber=names,
            dropped=st.integers(min_value=1, max_value=1_000_000),
            **_event_fields(),
        ),
        AgentStepped: lambda: st.builds(
            AgentStepped,
            step=st.integers(min_value=1, max_value=1_000),
            source=names,
            kind=st.sampled_from(["tool_calls", "answer", "stop"]),
            tools=st.lists(_tool_names(), max_size=3),
            errors=st.integers(min_value=0, max_value=3),
            usage=usages(),
            cost=st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False),
            duration_s=_seconds(),
            note=_text(),
            **_event_fields(),
        ),
        AgentFinished: lambda: st.builds(
            AgentFinished,
            status=st.sampled_from(["answered", "stopped", "max_steps", "budget", "timeout",
                                    "loop", "stalled", "blocked", "error", "cancelled"]),
            reason=_text(),
            steps=st.integers(min_value=0, max_value=1_000),
            usage=usages(),
            cost=st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False),
            duration_s=_seconds(),
            **_event_fields(),
        ),
    }


def events(*types: type[Event]) -> SearchStrategy[Event]:
    """Events of the concrete classes in :data:`EVENT_TYPES`.

    :param types: restrict to these classes (each one of :data:`EVENT_TYPES`); by default
        all of them.
    :returns: a strategy of :class:`Event` subclass instances.
    :raises ValueError: for a class this module has no strategy for (a plugin's own event
        type: build it with :func:`hypothesis.strategies.builds`).
    """
    table = _event_strategies()
    wanted: Sequence[type[Event]] = types or EVENT_TYPES
    unknown = [t.__qualname__ for t in wanted if t not in table]
    if unknown:
        raise ValueError(
            f"no strategy for event type(s) {', '.join(unknown)}; "
            f"known: {', '.join(t.__name__ for t in EVENT_TYPES)}"
        )
    return st.one_of([table[t]() for t in wanted])
