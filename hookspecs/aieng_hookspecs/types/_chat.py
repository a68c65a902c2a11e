"""Messages, requests, completions and streamed deltas: what backends move around."""

from __future__ import annotations

from typing import Any, Literal

import attrs
from attrs import field
from attrs import validators as v

from ._checks import (
    finite,
    frozen_tuple,
    integer,
    json_mapping,
    non_empty,
    optional_json_mapping,
    unit_interval,
)
from ._tools import ToolCall, ToolSpec

__all__ = ["Completion", "Delta", "Message", "Request", "TokenLogprob", "Usage"]

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")
FINISH_REASONS: tuple[str, ...] = ("stop", "length", "tool_calls", "content_filter", "error")

_str = v.instance_of(str)
_opt_str = v.optional(_str)


@attrs.frozen
class Message:
    """One chat message.

    :param role: ``system``, ``user``, ``assistant`` or ``tool``.
    :param content: the text.
    :param name: optional author name.
    :param tool_call_id: for ``tool`` messages, the call this answers.
    :param tool_calls: for ``assistant`` messages, the tools it asked for.
    """

    role: Role = field(validator=v.in_(ROLES))
    content: str = field(validator=_str)
    name: str | None = field(default=None, validator=_opt_str)
    tool_call_id: str | None = field(default=None, validator=_opt_str)
    tool_calls: tuple[ToolCall, ...] = field(
        default=(), converter=frozen_tuple, validator=v.deep_iterable(v.instance_of(ToolCall))
    )


@attrs.frozen
class Request:
    """A generation request: messages plus sampling parameters.

    :param messages: the conversation, at least one message.
    :param model: the model id to use, or ``None`` for the backend's default.
    :param temperature: 0 means greedy.
    :param top_k: sample among the k most likely tokens (``None``: no limit).
    :param top_p: nucleus mass in (0, 1].
    :param max_tokens: most tokens to generate, at least 1.
    :param stop: strings that end generation (not included in the output).
    :param seed: seed for sampling, for reproducible runs.
    :param response_schema: a JSON schema the output must satisfy, when given.
    :param tools: tools the model may call.
    :param metadata: free JSON-able fields (the template version, the user id, ...).
    """

    messages: tuple[Message, ...] = field(
        converter=frozen_tuple,
        validator=v.and_(non_empty(), v.deep_iterable(v.instance_of(Message))),
    )
    model: str | None = field(default=None, validator=_opt_str)
    temperature: float = field(default=0.0, validator=v.and_(finite(), v.ge(0.0)))
    top_k: int | None = field(default=None, validator=v.optional(integer(1)))
    top_p: float = field(default=1.0, validator=unit_interval(closed=False))
    max_tokens: int = field(default=256, validator=integer(1))
    stop: tuple[str, ...] = field(
        # Whitespace is a legitimate stop ("\n\n"); only the empty string is meaningless.
        default=(), converter=frozen_tuple, validator=v.deep_iterable(v.and_(_str, v.min_len(1)))
    )
    seed: int | None = field(default=None, validator=v.optional(integer()))
    response_schema: dict[str, Any] | None = field(
        default=None,
        converter=optional_json_mapping,
        validator=v.optional(v.instance_of(dict)),
        hash=False,
    )
    tools: tuple[ToolSpec, ...] = field(
        default=(), converter=frozen_tuple, validator=v.deep_iterable(v.instance_of(ToolSpec))
    )
    metadata: dict[str, Any] = field(factory=dict, converter=json_mapping, hash=False)

    @property
    def prompt(self) -> str:
        """The content of the last user message (empty when there is none)."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return ""


@attrs.frozen
class Usage:
    """Token counts of one model call."""

    prompt_tokens: int = field(default=0, validator=integer(0))
    completion_tokens: int = field(default=0, validator=integer(0))

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@attrs.frozen
class TokenLogprob:
    """The log-probability of one generated token."""

    token: str = field(validator=_str)
    logprob: float = field(validator=v.and_(finite(), v.le(0.0)))


@attrs.frozen
class Completion:
    """A backend's answer to a request.

    :param text: the generated text.
    :param finish_reason: ``stop``, ``length``, ``tool_calls``, ``content_filter`` or ``error``.
    :param usage: token counts.
    :param model: the model that produced it.
    :param logprobs: per-token log-probabilities when the backend reports them.
    :param cached: whether this came from a cache rather than a model.
    :param tool_calls: the tool calls the model asked for.
    """

    text: str = field(validator=_str)
    finish_reason: FinishReason = field(default="stop", validator=v.in_(FINISH_REASONS))
    usage: Usage = field(factory=Usage, validator=v.instance_of(Usage))
    model: str = field(default="", validator=_str)
    logprobs: tuple[TokenLogprob, ...] | None = field(
        default=None,
        converter=attrs.converters.optional(frozen_tuple),
        validator=v.optional(v.deep_iterable(v.instance_of(TokenLogprob), v.instance_of(tuple))),
    )
    cached: bool = field(default=False, validator=v.instance_of(bool))
    tool_calls: tuple[ToolCall, ...] = field(
        default=(), converter=frozen_tuple, validator=v.deep_iterable(v.instance_of(ToolCall))
    )


@attrs.frozen
class Delta:
    """One streamed piece of a completion.

    :param text: the new text (may be empty on the final delta).
    :param index: 0-based position of this delta in its stream.
    :param finish_reason: set on the last delta only.
    :param logprob: the log-probability of the token(s), when known.
    :param usage: the completion's exact token counts, on the last delta (when the backend
        knows them; otherwise the kernel counts the deltas that carry text).
    :param tool_calls: the tool calls the completion asks for, whole (not fragments of
        their arguments), on the delta that ends the stream; the kernel copies them into
        the streamed :class:`Completion`.
    :param model: the model producing the stream, on any of its deltas (``""``: not said
        here); the last non-empty one wins, and the kernel copies it into the streamed
        :class:`Completion`'s ``model``.
    """

    text: str = field(validator=_str)
    index: int = field(default=0, validator=integer(0))
    finish_reason: FinishReason | None = field(
        default=None, validator=v.optional(v.in_(FINISH_REASONS))
    )
    logprob: float | None = field(default=None, validator=v.optional(v.and_(finite(), v.le(0.0))))
    usage: Usage | None = field(default=None, validator=v.optional(v.instance_of(Usage)))
    tool_calls: tuple[ToolCall, ...] = field(
        default=(), converter=frozen_tuple, validator=v.deep_iterable(v.instance_of(ToolCall))
    )
    model: str = field(default="", validator=_str)
