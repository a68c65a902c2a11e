"""Samples and scores (judges), guard verdicts and routes."""

from __future__ import annotations

from typing import Any, Literal

import attrs
from attrs import field
from attrs import validators as v

from ._chat import Message
from ._checks import finite, frozen_tuple, integer, json_mapping, non_empty
from ._tools import ToolCall

__all__ = ["Finding", "GuardVerdict", "Route", "Sample", "Score"]

_str = v.instance_of(str)
_non_blank = v.and_(_str, non_empty())
GuardAction = Literal["allow", "redact", "block"]
GUARD_ACTIONS: tuple[str, ...] = ("allow", "redact", "block")


def _reference(value: object) -> str | tuple[str, ...] | None:
    if value is None or isinstance(value, str):
        return value
    return frozen_tuple(value)  # type: ignore[arg-type]


@attrs.frozen
class Sample:
    """What a judge scores: an input, the output under test, and optional references.

    :param input: the prompt or question.
    :param output: the answer being judged.
    :param reference: the expected answer, or several acceptable ones.
    :param context: retrieved passages the answer should be grounded in.
    :param id: identifier within a dataset.
    """

    input: str = field(validator=_str)
    output: str = field(validator=_str)
    reference: str | tuple[str, ...] | None = field(
        default=None,
        converter=_reference,
        validator=v.optional(v.or_(_str, v.deep_iterable(_str))),
    )
    context: tuple[str, ...] = field(
        default=(), converter=frozen_tuple, validator=v.deep_iterable(_str)
    )
    id: str = field(default="", validator=_str)
    metadata: dict[str, Any] = field(factory=dict, converter=json_mapping, hash=False)


@attrs.frozen
class Score:
    """One judged value.

    :param name: the metric (``"exact_match"``, ``"faithfulness"``, ...).
    :param value: the score; its scale is the metric's own (documented by the judge).
    :param rationale: the judge's explanation, when it gives one.
    :param judge: the component that produced it.
    """

    name: str = field(validator=_non_blank)
    value: float = field(validator=finite())
    rationale: str = field(default="", validator=_str)
    judge: str = field(default="", validator=_str)


@attrs.frozen
class Finding:
    """Something a guardrail found.

    :param kind: what it is (``"email"``, ``"prompt_injection"``, ...).
    :param start: offset of the span in the guarded text (``end == start`` when not a span).
    :param end: offset one past the span; ``end >= start``.
    :param detail: a human-readable explanation; never the raw secret.
    """

    kind: str = field(validator=_non_blank)
    start: int = field(default=0, validator=integer(0))
    end: int = field(default=0, validator=integer(0))
    detail: str = field(default="", validator=_str)

    @end.validator
    def _end_after_start(self, attribute: attrs.Attribute[int], value: int) -> None:
        if value < self.start:
            raise ValueError(f"end ({value}) must not precede start ({self.start})")


def _optional_tuple(value: object) -> tuple[Any, ...] | None:
    return None if value is None else frozen_tuple(value)  # type: ignore[arg-type]


@attrs.frozen
class GuardVerdict:
    """A guardrail's decision.

    :param action: ``allow`` (text unchanged), ``redact`` (text changed) or ``block``.
    :param text: the text after the guard: what the next stage sees.
    :param findings: what was found.
    :param guard: the component that decided.
    :param messages: an input guard's ``redact`` of more than the last user message: the
        whole conversation after the guard, which replaces the request's messages (``text``
        is then its last user message). ``None``: only the last user message changes.
    :param tool_calls: an output guard's ``redact`` of the completion's tool calls: the
        calls after the guard (their arguments changed), which replace the completion's.
        ``None``: the tool calls stay as they are.

    .. versionchanged:: 0.1.0 ``messages`` and ``tool_calls`` (a guard redacting tool
       results, or restoring values in the arguments of the calls a model made).
    """

    action: GuardAction = field(validator=v.in_(GUARD_ACTIONS))
    text: str = field(validator=_str)
    findings: tuple[Finding, ...] = field(
        default=(), converter=frozen_tuple, validator=v.deep_iterable(v.instance_of(Finding))
    )
    guard: str = field(default="", validator=_str)
    messages: tuple[Message, ...] | None = field(
        default=None, converter=_optional_tuple,
        validator=v.optional(v.and_(v.deep_iterable(v.instance_of(Message)), non_empty())))
    tool_calls: tuple[ToolCall, ...] | None = field(
        default=None, converter=_optional_tuple,
        validator=v.optional(v.deep_iterable(v.instance_of(ToolCall), v.instance_of(tuple))))


@attrs.frozen
class Route:
    """A router's choice.

    :param target: the name of the chosen candidate component.
    :param reason: why (``"intent:billing"``, ``"cheapest healthy"``, ...).
    :param score: the router's confidence, when it has one.
    :param fallbacks: candidates to try next, in order, when the target fails.
    """

    target: str = field(validator=_non_blank)
    reason: str = field(default="", validator=_str)
    score: float | None = field(default=None, validator=v.optional(finite()))
    fallbacks: tuple[str, ...] = field(
        default=(), converter=frozen_tuple, validator=v.deep_iterable(_str)
    )
