"""``rule-router``: ordered rules on the request (pattern, size, metadata, tools, schema)."""

from __future__ import annotations

import math
import re
import time
import unicodedata
from collections.abc import Sequence

from aieng_hookspecs import HIDDEN, PipelineContext, hookimpl
from aieng_hookspecs.types import Event, Request, Route

from ._breaker import Clock
from ._health import Health
from ._options import Rule, RuleOptions

__all__ = ["RuleRouter", "estimate_tokens", "matches"]


def estimate_tokens(request: Request, chars_per_token: float = 4.0) -> int:
    """A token estimate of all of a request's messages: characters / ``chars_per_token``,
    rounded up (no tokenizer is loaded)."""
    return math.ceil(sum(len(m.content) for m in request.messages) / chars_per_token)


def _folded(text: str) -> str:
    """``text`` as a rule's pattern also reads it: without hidden characters, in Unicode's
    compatibility form (NFKC: fullwidth and mathematical letters become plain ones)."""
    if text.isascii():
        return text
    return unicodedata.normalize("NFKC", HIDDEN.sub("", text))


def _compile(rule: Rule) -> re.Pattern[str]:
    """``rule.pattern`` compiled, in Unicode's composed form (NFC) as the text it reads."""
    return re.compile(unicodedata.normalize("NFC", rule.pattern or ""),
                      re.IGNORECASE if rule.ignore_case else 0)


class _Prompt:
    """A request as the rules read it, each form computed once per request and shared by
    every rule (a 1 MB prompt against 1,000 rules is normalized once, not 1,000 times)."""

    __slots__ = ("_folded", "_tokens", "request", "text")

    def __init__(self, request: Request) -> None:
        self.request = request
        #: the last user message in NFC
        self.text = unicodedata.normalize("NFC", request.prompt)
        self._folded: str | None = None
        self._tokens: dict[float, int] = {}

    def folded(self) -> str:
        """:attr:`text` without hidden characters, in NFKC (see :func:`_folded`)."""
        if self._folded is None:
            self._folded = _folded(self.text)
        return self._folded

    def tokens(self, chars_per_token: float) -> int:
        """The token estimate of all the request's messages."""
        found = self._tokens.get(chars_per_token)
        if found is None:
            found = self._tokens[chars_per_token] = estimate_tokens(self.request,
                                                                    chars_per_token)
        return found


def matches(rule: Rule, request: Request, *, chars_per_token: float = 4.0,
            pattern: re.Pattern[str] | None = None) -> bool:
    """Whether every condition of ``rule`` holds for ``request``. The last user message is
    read in Unicode's composed form (NFC): "café" typed with a combining accent (NFD, as
    macOS hands text over) matches a rule's "café" and counts 4 characters. When the text
    does not match as it is, the pattern is searched once more in the text without hidden
    characters (zero-width ones, the soft hyphen, bidi controls) and in NFKC (fullwidth
    and other compatibility forms folded), so "password" split by a zero-width space or
    written in fullwidth letters cannot dodge a rule on ``password``; sizes count the
    text as it is.

    :param pattern: ``rule.pattern`` compiled (compiled here when not given).
    """
    return _matches(rule, _Prompt(request), chars_per_token, pattern)


def _matches(rule: Rule, prompt: _Prompt, chars_per_token: float,
             pattern: re.Pattern[str] | None) -> bool:
    text = prompt.text
    if rule.pattern is not None:
        if pattern is None:
            pattern = _compile(rule)
        if pattern.search(text) is None:
            folded = prompt.folded()
            if folded == text or pattern.search(folded) is None:
                return False
    if rule.min_chars is not None and len(text) < rule.min_chars:
        return False
    if rule.max_chars is not None and len(text) > rule.max_chars:
        return False
    if rule.min_tokens is not None or rule.max_tokens is not None:
        tokens = prompt.tokens(chars_per_token)
        if rule.min_tokens is not None and tokens < rule.min_tokens:
            return False
        if rule.max_tokens is not None and tokens > rule.max_tokens:
            return False
    request = prompt.request
    for key, value in rule.metadata.items():
        if key not in request.metadata or request.metadata[key] != value:
            return False
    if rule.tools is not None and bool(request.tools) != rule.tools:
        return False
    return rule.response_schema is None or (
        (request.response_schema is not None) == rule.response_schema)


class RuleRouter:
    """Routes by the first rule whose conditions all hold; ``default`` when none does.

    A rule whose target and fallbacks are all unavailable (not candidates, or circuit
    open) is passed over for the next matching rule.

    :param options: the typed options.
    :param clock: the circuit breakers' time source.
    """

    def __init__(self, options: RuleOptions, *, clock: Clock = time.monotonic) -> None:
        self.options = options
        self.health = Health("rule-router", options.breaker, clock=clock)
        self._patterns = [None if rule.pattern is None else _compile(rule)
                          for rule in options.rules]

    @hookimpl
    def aieng_pipeline_open(self, context: PipelineContext) -> None:
        """Check the backends the options name against the pipeline's, and keep the
        context, to publish circuit events through it."""
        self.health.check_named(self.named(), context)
        self.health.router = context.component
        self.health.context = context

    def named(self) -> list[tuple[str, str]]:
        """``(option, backend)`` for every backend the options name."""
        named: list[tuple[str, str]] = []
        for number, rule in enumerate(self.options.rules, start=1):
            label = f"rule {rule.name or number}"
            named.append((f"{label} target", rule.target))
            named.extend((f"{label} fallbacks", name) for name in rule.fallbacks)
        if self.options.default is not None:
            named.append(("default", self.options.default))
        named.extend(("fallbacks", name) for name in self.options.fallbacks)
        return named

    @hookimpl
    def aieng_on_event(self, event: Event) -> None:
        """Learn backend health from ``backend.call`` and ``error`` events."""
        self.health.observe(event)

    @hookimpl
    def aieng_route(self, request: Request, candidates: Sequence[str]) -> Route | None:
        """The first matching rule's target, its fallbacks after it."""
        if not candidates:
            return None
        self.health.fail_fast(candidates)
        per_token = self.options.chars_per_token
        prompt = _Prompt(request)  # normalized once, whatever the number of rules
        for number, (rule, pattern) in enumerate(zip(self.options.rules, self._patterns),
                                                 start=1):
            if not _matches(rule, prompt, per_token, pattern):
                continue
            found = self.health.route((rule.target, *rule.fallbacks), candidates,
                                      reason=f"rule:{rule.name or number}")
            if found is not None:
                return found
        if self.options.default is None:
            return None
        return self.health.route((self.options.default, *self.options.fallbacks), candidates,
                                 reason="rule:default")
