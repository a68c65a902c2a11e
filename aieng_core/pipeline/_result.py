"""What a run returns: every intermediate artifact and the run's event trace."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs

from aieng_hookspecs.types import (
    Completion,
    Event,
    GuardVerdict,
    Hit,
    Message,
    ModelCall,
    Query,
    Request,
    Route,
    Score,
    unchecked,
)

__all__ = ["RunInput", "RunResult", "StageRecord", "as_request", "finite_json",
           "to_jsonable"]

RunInput = str | Request | Query | Sequence[Message]


def as_request(value: RunInput) -> Request:
    """What a pipeline runs on, as a :class:`Request`."""
    if isinstance(value, Request):
        return value
    if isinstance(value, Query):
        return unchecked(Request, messages=(unchecked(Message, role="user",
                                                      content=value.text),))
    if isinstance(value, str):
        # A str is a valid user message by construction: skip re-validating (hot path).
        return unchecked(Request, messages=(unchecked(Message, role="user", content=value),))
    if isinstance(value, Sequence) and all(isinstance(m, Message) for m in value):
        return Request(messages=tuple(value))
    raise TypeError(f"cannot run a pipeline on {type(value).__name__}; "
                    "give a str, Query, Request or a list of Message")


@attrs.frozen
class StageRecord:
    """How one stage went: ``ok``, ``skipped`` (error under ``on_error = "skip"``),
    ``hit`` (a cache answered), ``blocked`` or ``error``."""

    name: str
    status: str
    duration_s: float
    error: str = ""


@attrs.frozen
class RunResult:
    """The outcome of :meth:`Pipeline.run`.

    :param run_id: the run's id (events and logs carry it).
    :param pipeline: the pipeline's name.
    :param status: ``ok`` or ``blocked`` (a guard stopped it); failures raise instead.
    :param input: the request as given.
    :param request: the request after input guards and the context stage: what the model saw.
    :param query: the query retrieval used.
    :param input_verdicts: the input guards' verdicts, in order.
    :param cache_hit: the cache component that answered, if one did.
    :param route: the router's choice, if a router ran.
    :param expansions: the extra queries expanders produced (``aieng_query_expand``).
    :param runs: each retriever's hits before fusion, by component name (``name@i`` for the
        run of the i-th expansion).
    :param retrieved: the hits after fusion.
    :param hits: the hits after reranking: what the context stage used.
    :param raw_completion: the backend's completion before output guards.
    :param completion: the final completion.
    :param output_verdicts: the output guards' verdicts, in order.
    :param scores: the judges' scores.
    :param stages: per-stage status and timing.
    :param events: every event the run emitted, in order.
    """

    run_id: str
    pipeline: str
    status: str
    input: Request
    request: Request
    query: Query
    input_verdicts: tuple[GuardVerdict, ...] = ()
    cache_hit: str | None = None
    route: Route | None = None
    expansions: tuple[Query, ...] = ()
    runs: dict[str, tuple[Hit, ...]] = attrs.field(factory=dict)
    retrieved: tuple[Hit, ...] = ()
    hits: tuple[Hit, ...] = ()
    raw_completion: Completion | None = None
    completion: Completion | None = None
    output_verdicts: tuple[GuardVerdict, ...] = ()
    scores: tuple[Score, ...] = ()
    stages: tuple[StageRecord, ...] = ()
    events: tuple[Event, ...] = ()

    @property
    def answer(self) -> str:
        """The final completion's text (empty when the run produced none)."""
        return self.completion.text if self.completion is not None else ""

    @property
    def model_calls(self) -> tuple[ModelCall, ...]:
        """The ``backend.call`` events: rendered messages, parameters and raw output."""
        return tuple(e for e in self.events if isinstance(e, ModelCall))

    def to_json(self) -> dict[str, Any]:
        """A dict of everything, as values strict JSON holds (``aieng run --json``): a
        number that is not finite (a document's metadata, a model's tool arguments) is the
        string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` (:func:`finite_json`)."""
        data: dict[str, Any] = to_jsonable(self)
        data["answer"] = self.answer
        data["events"] = [event_to_json(e) for e in self.events]
        strict: dict[str, Any] = finite_json(data)
        return strict


def event_to_json(event: Event) -> dict[str, Any]:
    """An event as a JSON-able dict with its ``name`` first."""
    return {"name": event.name, **to_jsonable(event)}


def finite_json(value: Any) -> Any:
    """``value`` (JSON-able: dicts, lists, tuples, numbers, text) with each float that is
    not finite (a value or a key) made the string ``"NaN"``, ``"Infinity"`` or
    ``"-Infinity"``, the rest as it is: what strict JSON readers (``jq``, JavaScript) take,
    where ``json.dumps`` writes bare ``NaN`` / ``Infinity``."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, dict):
        return {finite_json(key): finite_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(item) for item in value]
    return value


def to_jsonable(value: Any) -> Any:
    """attrs instances, tuples and mappings as plain JSON-able values."""
    if attrs.has(type(value)):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)
