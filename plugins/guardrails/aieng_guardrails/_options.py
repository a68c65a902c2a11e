"""Typed options of the guardrail components (unknown keys in a pipeline file are errors)."""

from __future__ import annotations

import math
import re
from typing import Any, Literal

import attrs
from aieng_hookspecs import listed
from attrs import field
from attrs import validators as v

from ._pii import KINDS

__all__ = ["InjectionOptions", "OutputGuardOptions", "PIIOptions", "RetrievalGuardOptions"]


def _kinds(instance: Any, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    unknown = [k for k in value if k not in KINDS]
    if unknown:
        raise ValueError(f"{attribute.name}: unknown PII kind(s) {unknown}; valid: "
                         f"{', '.join(KINDS)}")


def _unit(instance: Any, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not 0.0 < value <= 1.0:
        raise ValueError(f"{attribute.name} must be in (0, 1], got {value}")


def _seconds(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A duration in seconds: a positive, finite number (not a boolean, nor a string with
    a unit: ``"10m"`` is refused with a hint rather than read as minutes or metres)."""
    name = attribute.name
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        got = f"the string {value!r}" if isinstance(value, str) else type(value).__name__
        raise TypeError(f"{name} is a number of seconds without a unit (600 for ten "
                        f"minutes), got {got}")
    if not 0 < value < math.inf:  # NaN compares false: refused too
        raise ValueError(f"{name} must be a positive, finite number of seconds, got {value!r}")


#: What a tool's name may be (as :class:`~aieng_hookspecs.types.ToolSpec` checks it).
_TOOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


def _tool_names(value: Any) -> Any:
    """The converter of ``restore_calls``: a list of names as a tuple, anything else as it
    is (the validator judges it)."""
    return tuple(value) if isinstance(value, list) else value


def _restore_calls(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, str):
        raise TypeError(f"{attribute.name} must be true, false or a list of tool names, got "
                        f"the string {value!r} (write [{value!r}] for a list of one)")
    if not isinstance(value, tuple) or not all(isinstance(name, str) for name in value):
        raise TypeError(f"{attribute.name} must be true, false or a list of tool names, got "
                        f"{type(value).__name__} {value!r}")
    bad = [name for name in value if _TOOL_NAME.fullmatch(name) is None]
    if bad:
        raise ValueError(f"{attribute.name}: {bad[0]!r} is not a tool name (letters, digits, "
                         "'_', '.', '-'; at most 64 characters; one name per item)")


_tuple_of_str = v.deep_iterable(v.and_(v.instance_of(str), v.min_len(1)),
                                v.instance_of(tuple))


@attrs.frozen
class PIIOptions:
    """Options of the ``pii`` guard.

    :param kinds: the kinds to detect (``email``, ``phone``, ``credit_card``, ``iban``,
        ``ipv4``, ``ipv6``, ``ssn``, ``api_key``, ``jwt``, ``private_key``, ``secret``).
    :param action: ``redact`` (placeholders such as ``<EMAIL_1>``) or ``block``.
    :param restore: the output guard puts the input's values back in place of their
        placeholders in the model's answer.
    :param scan_output: redact personal data the model itself writes in its answer.
    :param min_entropy: bits per character a long mixed token needs to count as a secret.
    :param vault_size: the most runs whose mappings are kept at once.
    :param vault_ttl: seconds a run's mapping is kept (a positive, finite number; measured
        on a monotonic clock, so a wall-clock jump neither keeps nor drops mappings).
    :param restore_calls: with ``restore``, the tools whose calls get the values back in
        their arguments: ``True`` every tool's, ``False`` none (the placeholders stay; the
        answer is still restored), or a list of tool names. A value given to a tool leaves
        with it: a ``fetch`` a fetched page talked the model into can carry a key in its
        URL, so list the tools that need real values.
    :param all_messages: redact the whole conversation (every message but the system ones,
        and the string values of earlier tool calls' arguments: an agent's tool results, a
        chat's earlier turns), with one placeholder per value across it; ``False``: the last
        user message only.
    """

    kinds: tuple[str, ...] = field(default=KINDS, converter=listed,
                                   validator=[_tuple_of_str, _kinds])
    action: Literal["redact", "block"] = field(default="redact",
                                               validator=v.in_(("redact", "block")))
    restore: bool = field(default=False, validator=v.instance_of(bool))
    scan_output: bool = field(default=True, validator=v.instance_of(bool))
    min_entropy: float = field(default=4.0, validator=[v.instance_of((int, float)), v.gt(0)])
    vault_size: int = field(default=1024, validator=[v.instance_of(int), v.ge(1)])
    vault_ttl: float = field(default=600.0, validator=_seconds)
    all_messages: bool = field(default=True, validator=v.instance_of(bool))
    restore_calls: bool | tuple[str, ...] = field(default=True, converter=_tool_names,
                                                  validator=_restore_calls)


@attrs.frozen
class InjectionOptions:
    """Options of the ``injection`` guard.

    :param block_threshold: block when the score reaches it.
    :param redact_threshold: below ``block_threshold`` and at or above this, remove the
        matched sentences instead (``None``: never redact, only block).
    :param max_depth: layers of encoding to peel (base64 of hex of ...).
    :param all_messages: scan every user and tool message, not just the last user one.
    :param tool_results: scan the tool results that follow the last user message (an
        agent's observations in this model call: a fetched web page may carry an indirect
        injection); a block names the tool result it came from.
    """

    block_threshold: float = field(default=0.6, validator=_unit)
    redact_threshold: float | None = field(default=None, validator=_unit)
    max_depth: int = field(default=2, validator=[v.instance_of(int), v.ge(0), v.le(4)])
    all_messages: bool = field(default=False, validator=v.instance_of(bool))
    tool_results: bool = field(default=True, validator=v.instance_of(bool))

    def __attrs_post_init__(self) -> None:
        if self.redact_threshold is not None and self.redact_threshold >= self.block_threshold:
            raise ValueError(f"redact_threshold ({self.redact_threshold}) must be below "
                             f"block_threshold ({self.block_threshold})")


@attrs.frozen
class RetrievalGuardOptions:
    """Options of the ``retrieval-guard`` reranker, which scans retrieved hits.

    :param threshold: an injection score at which a hit counts as injected.
    :param action: ``drop`` the hit, ``flag`` it (kept, with ``guardrails.injection_score``
        in its document's metadata), or ``redact`` the matched sentences from its title
        and text.
    :param max_depth: layers of encoding to peel.
    """

    threshold: float = field(default=0.5, validator=_unit)
    action: Literal["drop", "flag", "redact"] = field(
        default="drop", validator=v.in_(("drop", "flag", "redact")))
    max_depth: int = field(default=2, validator=[v.instance_of(int), v.ge(0), v.le(4)])


def _not_blank(instance: Any, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    # A string of whitespace only would match every space of every answer.
    if any(not text.strip() for text in value):
        raise ValueError(f"{attribute.name}: a blank entry (whitespace only) would match "
                         "every space of every answer")


def _terms(instance: Any, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    if any(term.strip().lower() == "redacted" for term in value):
        raise ValueError(f"{attribute.name}: 'redacted' is the redaction marker itself")


@attrs.frozen
class OutputGuardOptions:
    """Options of the ``output-guard``.

    :param policy: on a violation, ``block`` the answer, ``redact`` the offending spans
        (an invalid JSON answer cannot be redacted and is blocked), or ``fix``: ask the
        backend once more with the violations explained, re-check, block if still failing.
    :param system_prompt_leak: check for long word n-grams shared with the system message.
    :param leak_ngram: the n-gram length (in words) that counts as a leak.
    :param canaries: strings that must never appear in an answer (case-insensitive).
    :param pii: check the answer for personal data and secrets.
    :param pii_kinds: the kinds to check.
    :param json_schema: validate the answer against ``request.response_schema`` when set.
    :param blocked_terms: words or phrases never allowed (whole words, case-insensitive,
        any run of whitespace between a phrase's words).
    :param block_message: the answer that replaces a blocked one.
    """

    policy: Literal["block", "redact", "fix"] = field(
        default="redact", validator=v.in_(("block", "redact", "fix")))
    system_prompt_leak: bool = field(default=True, validator=v.instance_of(bool))
    leak_ngram: int = field(default=8, validator=[v.instance_of(int), v.ge(3)])
    canaries: tuple[str, ...] = field(default=(), converter=listed,
                                      validator=[_tuple_of_str, _not_blank])
    pii: bool = field(default=True, validator=v.instance_of(bool))
    pii_kinds: tuple[str, ...] = field(default=KINDS, converter=listed,
                                       validator=[_tuple_of_str, _kinds])
    json_schema: bool = field(default=True, validator=v.instance_of(bool))
    blocked_terms: tuple[str, ...] = field(default=(), converter=listed,
                                           validator=[_tuple_of_str, _not_blank, _terms])
    block_message: str = field(default="I can't share that answer.",
                               validator=v.instance_of(str))
