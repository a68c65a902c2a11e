"""The typed options of the ``context`` component."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

from ._templates import TEMPLATES, Example, TemplateName

__all__ = ["ContextOptions", "Order"]

#: ``rank``: passages in rank order, best first. ``lost-in-the-middle``: the best passages
#: at the start and the end of the context, the weakest in the middle, where long-context
#: models attend least (Liu et al., 2023, "Lost in the Middle").
Order = Literal["rank", "lost-in-the-middle"]
ORDERS: tuple[str, ...] = ("rank", "lost-in-the-middle")


def _count(minimum: int) -> Any:
    def check(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{attribute.name} must be an integer, got {type(value).__name__}")
        if value < minimum:
            raise ValueError(f"{attribute.name} must be at least {minimum}, got {value!r}")

    return check


def _optional_count(instance: object, attribute: attrs.Attribute[int | None],
                    value: int | None) -> None:
    if value is not None:
        _count(1)(instance, attribute, value)


def _share(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be a number from 0 to 1, got {value!r}")


def _optional_text(instance: object, attribute: attrs.Attribute[str | None],
                   value: str | None) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{attribute.name} must be a string, got {type(value).__name__}")


def _path(instance: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"{attribute.name} must be a string, got {type(value).__name__}")
    if not value.strip() or "\x00" in value:
        raise ValueError(f"{attribute.name} must name a local tokenizer.json file or a model "
                         "folder holding one")


def _choice(choices: Iterable[str]) -> Any:
    valid = tuple(choices)

    def check(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
        if value not in valid:
            raise ValueError(f"{attribute.name} must be one of "
                             f"{', '.join(repr(c) for c in valid)}; got {value!r}")

    return check


def _examples(value: Iterable[Example | Mapping[str, Any]]) -> tuple[Example, ...]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        got = ("a string" if isinstance(value, (str, bytes)) else
               "one table (put it in a list)" if isinstance(value, Mapping) else repr(value))
        raise TypeError(f"examples must be a list of {{input, output}} tables, got {got}")
    examples: list[Example] = []
    for index, item in enumerate(value):
        if isinstance(item, Example):
            examples.append(item)
            continue
        if not isinstance(item, Mapping):
            raise TypeError(f"examples[{index}] must be an {{input, output}} table, "
                            f"got {item!r}")
        try:
            examples.append(Example(**item))
        except TypeError as exc:  # a key missing or unknown, or a value not a string
            raise TypeError(f"examples[{index}]: {exc.args[0] if exc.args else exc}") from None
    return tuple(examples)


@attrs.frozen
class ContextOptions:
    """Options of the ``context`` builder.

    :param template: the built-in template: ``grounded-qa`` (answer a question from the
        passages, citing them), ``summarize`` (summarize the passages on a topic) or
        ``extract-json`` (extract fields as a JSON object).
    :param system: the system message; ``None`` keeps the template's.
    :param task: the task section; ``None`` keeps the template's, ``""`` leaves it out.
    :param examples: worked examples (``{input, output}``) shown before the task.
    :param output_format: the output format section; ``None`` keeps the template's, ``""``
        leaves it out.
    :param max_context_tokens: the most tokens of fenced passages (their fences, titles and
        text, as rendered), counted with the tokenizer. Passages are taken best first; the
        lower-ranked ones that do not fit are dropped.
    :param min_passage_tokens: the first passage that does not fit whole is cut at a word
        boundary to the room left when at least this many of its tokens fit; otherwise it
        is dropped with the rest.
    :param max_prompt_tokens: when set, the most tokens of the whole rendered prompt (every
        message's content). The oldest conversation turns are dropped to leave the
        passages their share (see ``history_share``), then passages, lowest-ranked first,
        to stay under it. Leave room for the chat template's few tokens per message and
        for the answer.
    :param order: ``rank`` or ``lost-in-the-middle`` (best passages first and last).
    :param tokenizer_path: a local Hugging Face ``tokenizer.json`` or model folder whose
        tokenizer counts the tokens, loaded on first use (or when the pipeline opens);
        ``None`` counts with a fast approximation (:func:`approximate_tokens`).
    :param history_share: with ``max_prompt_tokens``, the most of the room left by the
        system message, sections and question that the earlier turns may take from
        passages that need it: the passages are given up to ``1 - history_share`` of it
        (at most ``max_context_tokens``), the turns what the passages leave, oldest
        dropped first. ``1`` keeps every turn that fits beside the prompt without
        passages (passages only get what the turns leave); ``0`` gives the passages
        first claim.
    """

    template: TemplateName = attrs.field(default="grounded-qa", validator=_choice(TEMPLATES))
    system: str | None = attrs.field(default=None, validator=_optional_text)
    task: str | None = attrs.field(default=None, validator=_optional_text)
    examples: tuple[Example, ...] = attrs.field(default=(), converter=_examples)
    output_format: str | None = attrs.field(default=None, validator=_optional_text)
    max_context_tokens: int = attrs.field(default=2000, validator=_count(1))
    min_passage_tokens: int = attrs.field(default=32, validator=_count(1))
    max_prompt_tokens: int | None = attrs.field(default=None, validator=_optional_count)
    order: Order = attrs.field(default="rank", validator=_choice(ORDERS))
    tokenizer_path: str | None = attrs.field(default=None, validator=_path)
    history_share: float = attrs.field(default=0.5, validator=_share)
