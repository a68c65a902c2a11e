"""Values of the longer-running roles: quantizer, trainer, dataset, memory, agent, feedback."""

from __future__ import annotations

from typing import Any, Literal

import attrs
from attrs import field
from attrs import validators as v

from ._chat import Message
from ._checks import finite, finite_values, frozen_tuple, integer, json_mapping, non_empty
from ._tools import ToolCall, ToolSpec

__all__ = [
    "AgentAction",
    "AgentState",
    "Feedback",
    "MemoryItem",
    "QuantizeResult",
    "Record",
    "TrainJob",
    "TrainResult",
]

_str = v.instance_of(str)
_non_blank = v.and_(_str, non_empty())
_count = integer(0)


@attrs.frozen
class QuantizeResult:
    """The outcome of quantizing a model.

    :param model: where the quantized model now is (a path or a model id).
    :param scheme: the scheme applied (``"int8"``, ``"nf4"``, ...).
    :param size_before: bytes of weights before.
    :param size_after: bytes of weights after.
    :param quality: named quality changes (``{"cosine": 0.998}``, ``{"perplexity_delta": 0.4}``).
    """

    model: str = field(validator=_non_blank)
    scheme: str = field(validator=_non_blank)
    size_before: int = field(validator=_count)
    size_after: int = field(validator=_count)
    quality: dict[str, float] = field(
        factory=dict, converter=json_mapping, validator=finite_values(), hash=False
    )


@attrs.frozen
class TrainJob:
    """A finetuning job (LoRA / QLoRA and the like).

    :param base_model: the model to adapt (a local path or model id).
    :param dataset: path of the training data.
    :param method: ``"lora"``, ``"qlora"``, ...
    :param output_dir: where the adapter is written.
    :param hyperparameters: rank, alpha, learning rate, epochs, ...
    """

    base_model: str = field(validator=_non_blank)
    dataset: str = field(validator=_non_blank)
    method: str = field(validator=_non_blank)
    output_dir: str = field(validator=_non_blank)
    hyperparameters: dict[str, Any] = field(factory=dict, converter=json_mapping, hash=False)


@attrs.frozen
class TrainResult:
    """What a trainer produced: the adapter and its metrics."""

    artifact: str = field(validator=_non_blank)
    metrics: dict[str, float] = field(
        factory=dict, converter=json_mapping, validator=finite_values(), hash=False
    )


@attrs.frozen
class Record:
    """One dataset row moving through dataset processors (dedup, filters, formatting)."""

    id: str = field(validator=_non_blank)
    fields: dict[str, Any] = field(factory=dict, converter=json_mapping, hash=False)


@attrs.frozen
class MemoryItem:
    """An entry of an agent's or a conversation's memory."""

    text: str = field(validator=_str)
    kind: Literal["short", "long"] = field(default="short", validator=v.in_(("short", "long")))
    score: float = field(default=0.0, validator=finite())
    metadata: dict[str, Any] = field(factory=dict, converter=json_mapping, hash=False)


@attrs.frozen
class AgentState:
    """What an agent policy sees at one step: the conversation so far, its budgets and the
    tools the agent may call (those the pipeline's tool components list)."""

    messages: tuple[Message, ...] = field(
        converter=frozen_tuple, validator=v.deep_iterable(v.instance_of(Message))
    )
    step: int = field(default=0, validator=_count)
    max_steps: int = field(default=10, validator=integer(1))
    cost: float = field(default=0.0, validator=v.and_(finite(), v.ge(0.0)))
    tools: tuple[ToolSpec, ...] = field(
        default=(), converter=frozen_tuple, validator=v.deep_iterable(v.instance_of(ToolSpec))
    )


@attrs.frozen
class AgentAction:
    """An agent policy's decision: call tools, answer, or stop."""

    kind: Literal["tool_calls", "answer", "stop"] = field(
        validator=v.in_(("tool_calls", "answer", "stop"))
    )
    text: str = field(default="", validator=_str)
    tool_calls: tuple[ToolCall, ...] = field(
        default=(), converter=frozen_tuple, validator=v.deep_iterable(v.instance_of(ToolCall))
    )


@attrs.frozen
class Feedback:
    """A user's signal about one run.

    :param run_id: the run it is about.
    :param kind: ``thumbs``, ``rating``, ``correction``, ``regenerate``, ``early_stop``, ...
    :param value: the numeric value (1/-1 for thumbs, 1..5 for a rating, 0 when not numeric).
    :param text: a correction or comment.
    """

    run_id: str = field(validator=_non_blank)
    kind: str = field(validator=_non_blank)
    value: float = field(default=0.0, validator=finite())
    text: str = field(default="", validator=_str)
    metadata: dict[str, Any] = field(factory=dict, converter=json_mapping, hash=False)
