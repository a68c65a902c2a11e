"""Tool specifications, calls and results: what agents and tools move around."""

from __future__ import annotations

import re
from typing import Any

import attrs
from attrs import field
from attrs import validators as v

from ._checks import json_mapping, non_empty

__all__ = ["ToolCall", "ToolResult", "ToolSpec"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_str = v.instance_of(str)
_non_blank = v.and_(_str, non_empty())


@attrs.frozen
class ToolSpec:
    """A tool a model may call.

    :param name: identifier (letters, digits, ``_ . -``; at most 64 characters).
    :param description: what the tool does, for the model.
    :param parameters: JSON schema of the arguments (an ``object`` schema).
    """

    name: str = field(validator=[_str, v.matches_re(_NAME)])
    description: str = field(default="", validator=_str)
    parameters: dict[str, Any] = field(
        factory=lambda: {"type": "object", "properties": {}},
        converter=json_mapping,
        hash=False,
    )


@attrs.frozen
class ToolCall:
    """A model's request to run a tool.

    :param id: identifier that the result refers back to.
    :param name: the tool's name.
    :param arguments: the decoded JSON arguments.
    """

    id: str = field(validator=_non_blank)
    name: str = field(validator=[_str, v.matches_re(_NAME)])
    arguments: dict[str, Any] = field(factory=dict, converter=json_mapping, hash=False)


@attrs.frozen
class ToolResult:
    """The outcome of a tool call.

    :param call_id: the :class:`ToolCall` id.
    :param content: the observation text given back to the model.
    :param is_error: whether the tool failed (the content then says why).
    """

    call_id: str = field(validator=_non_blank)
    content: str = field(validator=_str)
    is_error: bool = field(default=False, validator=v.instance_of(bool))
