"""The typed options of the ``rubric``, ``pairwise``, ``ensemble`` and ``factual``
components (pipeline-file keys)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Literal

import attrs
from aieng_hookspecs import did_you_mean, listed
from attrs import validators as v

from ._prompts import PROMPT_STYLES, RUBRIC

__all__ = [
    "EnsembleOptions",
    "FactualOptions",
    "PairwiseOptions",
    "RubricOptions",
]

# The shortest constrained answers (compact JSON), for the max_tokens checks.
SHORTEST_SCORE = '{"score":"1"}'
SHORTEST_SCORE_RATIONALE = '{"score":"1","rationale":""}'
SHORTEST_WINNER = '{"winner":"A"}'
SHORTEST_WINNER_RATIONALE = '{"winner":"A","rationale":""}'
SHORTEST_SUPPORT = '{"supported":"no"}'

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps|xpu(:\d+)?)$")
_opt_str = v.optional(v.and_(v.instance_of(str), v.min_len(1)))


def int_at_least(low: int) -> Callable[[object, attrs.Attribute[int], int], None]:
    """Validator: an ``int`` (not a ``bool``) of at least ``low``."""

    def check(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{attribute.name} must be an integer, got {value!r}")
        if value < low:
            raise ValueError(f"{attribute.name} must be at least {low}, got {value}")

    return check


def number_in(low: float, high: float) -> Callable[[object, attrs.Attribute[float], float],
                                                   None]:
    """Validator: a finite number (not a ``bool``) from ``low`` to ``high``."""

    def check(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{attribute.name} must be a number, got {value!r}")
        if not math.isfinite(value) or not low <= value <= high:
            raise ValueError(f"{attribute.name} must be a number from {low:g} to {high:g}, "
                             f"got {value!r}")

    return check


def _criteria(instance: object, attribute: attrs.Attribute[tuple[str, ...]],
              value: tuple[str, ...]) -> None:
    for name in value:
        if name not in RUBRIC:
            raise ValueError(f"{attribute.name}: unknown criterion "
                             f"{name!r}{did_you_mean(name, RUBRIC)}; built in: "
                             f"{', '.join(RUBRIC)} (add others under 'custom')")
    if len(set(value)) != len(value):
        raise ValueError(f"{attribute.name}: a criterion is listed twice: {list(value)}")


def _custom(instance: object, attribute: attrs.Attribute[Mapping[str, str]],
            value: Mapping[str, str]) -> None:
    if not isinstance(value, Mapping):
        raise TypeError(f"{attribute.name} must be a table of criterion = description")
    for name, description in value.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"{attribute.name}: criterion names are lower-case words "
                             f"(a-z, 0-9, _), got {name!r}")
        if name in RUBRIC:
            raise ValueError(f"{attribute.name}: {name!r} is a built-in criterion; list it in "
                             "'criteria' or give yours another name")
        if not isinstance(description, str) or not description.strip():
            raise ValueError(f"{attribute.name}.{name}: describe what 1 and 5 mean")


def _styles(instance: object, attribute: attrs.Attribute[tuple[str, ...]],
            value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError(f"{attribute.name}: give at least one of {', '.join(PROMPT_STYLES)}")
    for name in value:
        if name not in PROMPT_STYLES:
            raise ValueError(f"{attribute.name}: unknown prompt style "
                             f"{name!r}{did_you_mean(name, PROMPT_STYLES)}; choose from "
                             f"{', '.join(PROMPT_STYLES)}")


def _device(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not _DEVICE.match(value):
        raise ValueError(f"{attribute.name} must be cpu, cuda, cuda:N, mps, xpu or xpu:N, "
                         f"got {value!r}")


def _check_rubric(criteria: tuple[str, ...], custom: Mapping[str, str]) -> None:
    if not criteria and not custom:
        raise ValueError("no criterion to judge: list built-in 'criteria' or add 'custom' ones")


def check_budget(max_tokens: int, shortest: str, constrained: bool) -> None:
    """Refuse a ``max_tokens`` below the shortest constrained answer's length in characters:
    a constrained decoder (``smollm2``) budgets one token per character still needed, so a
    smaller budget may leave the JSON unfinished."""
    if constrained and max_tokens < len(shortest):
        raise ValueError(f"max_tokens must be at least {len(shortest)} for the constrained "
                         f"JSON answer ({shortest}), got {max_tokens}")


@attrs.frozen(kw_only=True)
class RubricOptions:
    """Options of the ``rubric`` judge.

    :param criteria: built-in criteria to score (``accuracy``, ``completeness``,
        ``clarity``), each 1–5.
    :param custom: further criteria, ``name = "what 1 and 5 mean"``; scored 1–5 the same way.
    :param style: the grader prompt: ``default``, ``strict`` or ``reference``.
    :param model: the model asked (``Request.model``); ``None``: the backend's default.
    :param temperature: the sampling temperature (0: greedy).
    :param max_tokens: the most tokens of each answer (JSON with a one-sentence rationale).
    :param retries: asks again this many times, with the parse error, when an answer
        cannot be read; then the criterion gets no score.
    :param constrained: send the answer's JSON schema as ``request.response_schema``
        (backends that constrain decoding then always write valid JSON).
    :param max_chars: each of question, answer, reference and context is cut to this many
        characters in the prompt.
    :param length_penalty: points taken off the ``rubric.length_controlled`` score per
        doubling of the answer's length over the reference's (0: no such score).
    :param rationale: ask for a one-sentence rationale with each score (``false``: the
        score alone, a few tokens: cheaper, and the score's rationale is empty).
    """

    criteria: tuple[str, ...] = attrs.field(default=tuple(RUBRIC), converter=listed,
                                            validator=_criteria)
    custom: dict[str, str] = attrs.field(factory=dict, validator=_custom, hash=False)
    style: str = attrs.field(default="default", validator=v.in_(tuple(PROMPT_STYLES)))
    model: str | None = attrs.field(default=None, validator=_opt_str)
    temperature: float = attrs.field(default=0.0, validator=number_in(0.0, 2.0))
    max_tokens: int = attrs.field(default=96, validator=int_at_least(16))
    retries: int = attrs.field(default=1, validator=int_at_least(0))
    constrained: bool = attrs.field(default=True, validator=v.instance_of(bool))
    max_chars: int = attrs.field(default=3000, validator=int_at_least(1))
    length_penalty: float = attrs.field(default=0.0, validator=number_in(0.0, 4.0))
    rationale: bool = attrs.field(default=True, validator=v.instance_of(bool))

    def __attrs_post_init__(self) -> None:
        _check_rubric(self.criteria, self.custom)
        check_budget(self.max_tokens, SHORTEST_SCORE if not self.rationale
                     else SHORTEST_SCORE_RATIONALE, self.constrained)


@attrs.frozen(kw_only=True)
class PairwiseOptions:
    """Options of the ``pairwise`` judge.

    :param criterion: what "better" means, in the prompt.
    :param model: the model asked; ``None``: the backend's default.
    :param temperature: the sampling temperature (0: greedy).
    :param max_tokens: the most tokens of each answer.
    :param retries: asks again this many times when an answer cannot be read.
    :param constrained: send the verdict's JSON schema as ``request.response_schema``.
    :param max_chars: each text is cut to this many characters in the prompt.
    :param rationale: ask for a one-sentence rationale with each verdict.
    """

    criterion: str = attrs.field(
        default="overall quality: correctness, helpfulness and clarity",
        validator=v.and_(v.instance_of(str), v.min_len(1)))
    model: str | None = attrs.field(default=None, validator=_opt_str)
    temperature: float = attrs.field(default=0.0, validator=number_in(0.0, 2.0))
    max_tokens: int = attrs.field(default=96, validator=int_at_least(8))
    retries: int = attrs.field(default=1, validator=int_at_least(0))
    constrained: bool = attrs.field(default=True, validator=v.instance_of(bool))
    max_chars: int = attrs.field(default=3000, validator=int_at_least(1))
    rationale: bool = attrs.field(default=True, validator=v.instance_of(bool))

    def __attrs_post_init__(self) -> None:
        check_budget(self.max_tokens, SHORTEST_WINNER if not self.rationale
                     else SHORTEST_WINNER_RATIONALE, self.constrained)


@attrs.frozen(kw_only=True)
class EnsembleOptions:
    """Options of the ``ensemble`` judge: one rubric judge per (model, style) pair.

    :param models: the models asked (each a ``Request.model`` one of the pipeline's
        backends answers to); empty: the default backend only.
    :param styles: the grader prompts (``default``, ``strict``, ``reference``).
    :param aggregate: ``mean``, ``median`` or ``majority`` (the most common score; a tie
        between modes goes to the lower one).
    :param criteria: built-in criteria, as ``rubric``'s.
    :param custom: further criteria, as ``rubric``'s.
    :param temperature: the sampling temperature of every member.
    :param max_tokens: the most tokens of each answer.
    :param retries: as ``rubric``'s, per member.
    :param constrained: as ``rubric``'s.
    :param max_chars: as ``rubric``'s.
    """

    models: tuple[str, ...] = attrs.field(default=(), converter=listed,
                                          validator=v.deep_iterable(v.and_(
                                              v.instance_of(str), v.min_len(1))))
    styles: tuple[str, ...] = attrs.field(default=("default", "strict", "reference"),
                                          converter=listed, validator=_styles)
    aggregate: Literal["mean", "median", "majority"] = attrs.field(
        default="median", validator=v.in_(("mean", "median", "majority")))
    criteria: tuple[str, ...] = attrs.field(default=("accuracy",), converter=listed,
                                            validator=_criteria)
    custom: dict[str, str] = attrs.field(factory=dict, validator=_custom, hash=False)
    temperature: float = attrs.field(default=0.0, validator=number_in(0.0, 2.0))
    max_tokens: int = attrs.field(default=96, validator=int_at_least(16))
    retries: int = attrs.field(default=1, validator=int_at_least(0))
    constrained: bool = attrs.field(default=True, validator=v.instance_of(bool))
    max_chars: int = attrs.field(default=3000, validator=int_at_least(1))

    def __attrs_post_init__(self) -> None:
        _check_rubric(self.criteria, self.custom)
        check_budget(self.max_tokens, SHORTEST_SCORE_RATIONALE, self.constrained)


@attrs.frozen(kw_only=True)
class FactualOptions:
    """Options of the ``factual`` (factual consistency) judge.

    :param nli_model_path: a local Hugging Face sequence-classification folder trained for
        NLI (labels named entailment / neutral / contradiction); when given, each claim is
        scored by the model's entailment probability instead of by asking the backend.
    :param threshold: a claim counts as supported when its entailment probability is at
        least this (NLI path).
    :param device: where the NLI model runs: ``cpu``, ``cuda``, ``cuda:N``, ``mps``, ``xpu``.
    :param batch_size: (context, claim) pairs per NLI forward pass.
    :param max_length: tokens per NLI pair (the context is truncated first).
    :param max_claims: claims checked per answer (the first ones; the rest are reported).
    :param model: the model asked (LLM path); ``None``: the backend's default.
    :param temperature: the sampling temperature (LLM path).
    :param max_tokens: the most tokens of each yes / no answer (LLM path).
    :param retries: asks again this many times when an answer cannot be read.
    :param constrained: send the answer's JSON schema as ``request.response_schema``.
    :param max_chars: the context is cut to this many characters in the prompt.
    """

    nli_model_path: str | None = attrs.field(default=None, validator=_opt_str)
    threshold: float = attrs.field(default=0.5, validator=number_in(0.0, 1.0))
    device: str = attrs.field(default="cpu", validator=_device)
    batch_size: int = attrs.field(default=8, validator=int_at_least(1))
    max_length: int = attrs.field(default=512, validator=int_at_least(16))
    max_claims: int = attrs.field(default=20, validator=int_at_least(1))
    model: str | None = attrs.field(default=None, validator=_opt_str)
    temperature: float = attrs.field(default=0.0, validator=number_in(0.0, 2.0))
    max_tokens: int = attrs.field(default=24, validator=int_at_least(4))
    retries: int = attrs.field(default=1, validator=int_at_least(0))
    constrained: bool = attrs.field(default=True, validator=v.instance_of(bool))
    max_chars: int = attrs.field(default=4000, validator=int_at_least(1))

    def __attrs_post_init__(self) -> None:
        check_budget(self.max_tokens, SHORTEST_SUPPORT, self.constrained)

