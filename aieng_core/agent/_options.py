"""An agent's typed options: its budgets, its detectors and how it talks to the model."""

from __future__ import annotations

import math
from typing import Literal

import attrs
from attrs import validators as v

from ._reflect import PLAN_PROMPT, REPLAN_PROMPT, REVIEW_PROMPT

__all__ = ["AgentOptions"]


def _positive_int(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an integer >= 1, got {value!r}")


def _optional_positive(instance: object, attribute: attrs.Attribute[float | None],
                       value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not value > 0:
        raise ValueError(f"{attribute.name} must be a positive finite number or None, "
                         f"got {value!r}")


def _price(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class AgentOptions:
    """How an :class:`~aieng_core.agent.Agent` runs.

    :param max_steps: the most steps (one decision and its tool calls each).
    :param max_tokens: token budget: the run stops (status ``budget``) once the model calls
        of its steps used this many tokens, prompt and completion together (``None``: none).
    :param max_cost: cost budget in the unit of the prices (``None``: none).
    :param input_price_per_1k: price of 1,000 prompt tokens (0: not priced).
    :param output_price_per_1k: price of 1,000 completion tokens (0: not priced).
    :param timeout: wall-clock seconds for the whole run (status ``timeout``; ``None``: none).
    :param loop_repeats: how many times the same tool call (name and arguments) may occur
        within ``loop_window`` steps before it counts as a loop.
    :param loop_window: the number of most recent steps loop detection looks at.
    :param stall_steps: how many steps in a row whose tool results are all errors, or bring
        no observation text not seen before, stop the run (status ``stalled``).
    :param tool_concurrency: the most tool calls of one step running at once.
    :param tool_result_chars: the most characters of one tool result given back to the
        model; a longer result is cut there, with a note of how many characters were cut.
    :param recall_k: the most memory items recalled before each step.
    :param memory_chars: the most characters of recalled memory put before the conversation.
    :param system: a system prompt put first in the conversation (``None``: none added).
    :param context_chars: the most characters of conversation sent to the model at each
        step (``None``: all of it). Past it, the texts of older turns are replaced by a mark
        saying what was left out, oldest tool results first; when marks are not enough,
        the oldest turns are left out whole (a tool call with its results) and the system
        text says how many. The system text, the first and the latest user turn, the task
        and the latest step are never left out: longer than ``context_chars`` on their
        own, the latest step's tool results are cut to fit (200 characters each at the
        least, with a note), else the run ends with a ``ContextLimitError`` naming the
        sizes. The transcript keeps everything.
    :param plan: before the first step, ask the model for a short numbered plan (one model
        call without tools) and keep it in the conversation, added to its leading system
        message, for every later step.
    :param plan_prompt: the planning call's instruction (the tool list is added to it).
    :param plan_chars: the most characters of the plan kept.
    :param replan: revise the plan during the run (needs ``plan``): ``never``;
        ``on_error``, before a step that follows one with a failed tool call (the call's
        error is named to the model); ``every_step``, before every step after the first.
        A revision is one model call without tools, seeing the conversation so far; the
        revised plan replaces the old one in the system text.
    :param max_replans: the most revisions in one run.
    :param replan_prompt: the revising call's instruction.
    :param reflect: before accepting an answer, ask the model to review it against the task
        and the tool results (one model call without tools); a review that is not ``OK``
        goes back to the model, which revises its answer in the next steps.
    :param max_reflections: the most reviews in one run; later answers are accepted as
        they are. No review runs at the last step (there is no step left to revise in).
    :param review_prompt: the review call's instruction.
    :param validate_arguments: check each tool call's arguments against the tool's JSON
        schema (``ToolSpec.parameters``) before it runs; invalid arguments get an error
        result saying what is wrong, and the tool is not called.
    """

    max_steps: int = attrs.field(default=10, validator=_positive_int)
    max_tokens: int | None = attrs.field(default=None, validator=v.optional(_positive_int))
    max_cost: float | None = attrs.field(default=None, validator=_optional_positive)
    input_price_per_1k: float = attrs.field(default=0.0, validator=_price)
    output_price_per_1k: float = attrs.field(default=0.0, validator=_price)
    timeout: float | None = attrs.field(default=None, validator=_optional_positive)
    loop_repeats: int = attrs.field(default=3, validator=_positive_int)
    loop_window: int = attrs.field(default=6, validator=_positive_int)
    stall_steps: int = attrs.field(default=3, validator=_positive_int)
    tool_concurrency: int = attrs.field(default=4, validator=_positive_int)
    tool_result_chars: int = attrs.field(default=20_000, validator=_positive_int)
    recall_k: int = attrs.field(default=5, validator=_positive_int)
    memory_chars: int = attrs.field(default=2000, validator=_positive_int)
    system: str | None = attrs.field(default=None, validator=v.optional(v.instance_of(str)))
    context_chars: int | None = attrs.field(default=None,
                                            validator=v.optional(_positive_int))
    plan: bool = attrs.field(default=False, validator=v.instance_of(bool))
    plan_prompt: str = attrs.field(default=PLAN_PROMPT, validator=v.instance_of(str))
    plan_chars: int = attrs.field(default=2000, validator=_positive_int)
    replan: Literal["never", "on_error", "every_step"] = attrs.field(
        default="never", validator=v.in_(("never", "on_error", "every_step")))
    max_replans: int = attrs.field(default=2, validator=_positive_int)
    replan_prompt: str = attrs.field(default=REPLAN_PROMPT, validator=v.instance_of(str))
    reflect: bool = attrs.field(default=False, validator=v.instance_of(bool))
    max_reflections: int = attrs.field(default=1, validator=_positive_int)
    review_prompt: str = attrs.field(default=REVIEW_PROMPT, validator=v.instance_of(str))
    validate_arguments: bool = attrs.field(default=True, validator=v.instance_of(bool))

    @loop_repeats.validator
    def _at_least_two(self, attribute: attrs.Attribute[int], value: int) -> None:
        if value < 2:
            raise ValueError(f"loop_repeats must be >= 2 (a call made once is no loop), "
                             f"got {value!r}")

    @replan.validator
    def _needs_plan(self, attribute: attrs.Attribute[str], value: str) -> None:
        if value != "never" and not self.plan:
            raise ValueError(f"replan={value!r} revises a plan: set plan=True too")

    def cost_of(self, prompt_tokens: int, completion_tokens: int) -> float:
        """The price of one model call's tokens."""
        return (prompt_tokens * self.input_price_per_1k
                + completion_tokens * self.output_price_per_1k) / 1000.0
