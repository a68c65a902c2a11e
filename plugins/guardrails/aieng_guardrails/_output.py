"""The ``output-guard``: leaks, canaries, personal data, schema validity, blocked terms.

On a violation its policy decides: ``block`` the answer, ``redact`` the offending spans,
or ``fix``: ask the pipeline's backend once more (through the component's
:class:`~aieng_hookspecs.PipelineContext`) with the violations explained, check the new
answer, and block it if it still fails.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import attrs
import structlog
from aieng_hookspecs import PipelineContext, hookimpl, word_chars
from aieng_hookspecs.types import Completion, Finding, GuardVerdict, Message, Request

from ._guards import INLINE_LIMIT, _off_loop
from ._options import OutputGuardOptions
from ._pii import Detection, _fold, find_pii
from ._redact import PLACEHOLDER, redact_texts

__all__ = ["OutputGuard", "Violation", "leak_spans"]

log = structlog.get_logger(__name__)

#: What replaces a redacted leak, canary or blocked term.
MARKER = "[REDACTED]"
_WORD = re.compile(r"\w+")


@attrs.frozen
class Violation:
    """One thing wrong with an answer.

    :param kind: ``system_prompt_leak``, ``canary_leak``, a PII kind, ``schema_invalid``
        or ``blocked_term``.
    :param start: span start in the answer (0 with ``end == 0`` when not a span).
    :param end: span end.
    :param detail: what is wrong, never the secret itself.
    :param redactable: whether replacing the span fixes it.
    """

    kind: str
    start: int
    end: int
    detail: str
    redactable: bool = True


def leak_spans(system: str, answer: str, n: int) -> list[tuple[int, int]]:
    """Spans of ``answer`` covered by word n-grams (``n`` words, case-insensitive) that
    also occur in ``system``; overlapping windows are merged."""
    sys_words = [w.lower() for w in _WORD.findall(system)]
    if len(sys_words) < n:
        return []
    grams = {tuple(sys_words[i:i + n]) for i in range(len(sys_words) - n + 1)}
    words = list(_WORD.finditer(answer))
    spans: list[tuple[int, int]] = []
    for i in range(len(words) - n + 1):
        if tuple(w.group().lower() for w in words[i:i + n]) in grams:
            start, end = words[i].start(), words[i + n - 1].end()
            if spans and start <= spans[-1][1]:
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((start, end))
    return spans


def _term_pattern(term: str) -> re.Pattern[str]:
    # A word character, or a combining mark (not ``\w``: ``word_chars``): ``cafe\u0301``
    # (a decomposed ``café``) and हिन्दी are one word each, so ``cafe`` or हिन्द is not
    # found in them.
    word = word_chars()
    left = f"(?<!{word})" if re.match(word, term) else ""
    right = f"(?!{word})" if re.match(word, term[-1:]) else ""
    # Any run of whitespace between its words: a line break or two spaces hide no term.
    body = r"\s+".join(re.escape(word) for word in term.split()) or re.escape(term)
    return re.compile(left + body + right, re.IGNORECASE)


class OutputGuard:
    """Checks the model's answer before it is returned (see the module docstring)."""

    def __init__(self, options: OutputGuardOptions | None = None) -> None:
        self.options = options or OutputGuardOptions()
        # (A string of hidden characters only is kept as it is: folded, it would be empty.)
        self._terms = [(term, _term_pattern(_fold(term)[0] or term))
                       for term in self.options.blocked_terms]
        self._canaries = [re.compile(re.escape(_fold(canary)[0] or canary), re.IGNORECASE)
                          for canary in self.options.canaries]
        self._context: PipelineContext | None = None

    @hookimpl
    def aieng_pipeline_open(self, context: PipelineContext) -> None:
        """Keep the context: the ``fix`` policy generates through it."""
        self._context = context

    def violations(self, request: Request, text: str) -> list[Violation]:
        """Everything wrong with ``text`` as an answer to ``request``."""
        return list(self._violations(request, text))

    async def _checked(self, request: Request, text: str) -> list[Violation]:
        """:meth:`violations`, inline for short texts; in a worker thread for long ones and
        whenever a JSON schema is checked (the first check imports jsonschema, a blocking
        ~0.1-0.3 s, and validating is real work)."""
        schema = self.options.json_schema and request.response_schema is not None
        size = INLINE_LIMIT + 1 if schema else len(text)
        return await _off_loop(size, lambda: self.violations(request, text))

    def _violations(self, request: Request, text: str) -> Iterator[Violation]:
        opts = self.options
        if opts.system_prompt_leak:
            system = "\n".join(m.content for m in request.messages if m.role == "system")
            for start, end in leak_spans(system, text, opts.leak_ngram):
                yield Violation("system_prompt_leak", start, end,
                                f"{len(_WORD.findall(text[start:end]))} words of the system "
                                "message")
        # Canaries and terms are matched in the text with hidden characters removed and
        # fullwidth forms folded (as PII is), case-insensitively without lower-casing a
        # copy ("İ" lower-cases to two characters); spans are the original text's.
        folded, positions = _fold(text)

        def span(match: re.Match[str]) -> tuple[int, int]:
            if positions is None:
                return match.start(), match.end()
            return positions[match.start()], positions[match.end() - 1] + 1

        for number, pattern in enumerate(self._canaries, start=1):
            for match in pattern.finditer(folded):
                yield Violation("canary_leak", *span(match), f"canary #{number}")
        for number, (_, pattern) in enumerate(self._terms, start=1):
            for match in pattern.finditer(folded):
                yield Violation("blocked_term", *span(match), f"blocked term #{number}")
        if opts.pii:
            for d in find_pii(text, opts.pii_kinds):
                yield Violation(d.kind, d.start, d.end, f"{d.kind} in the answer")
        if opts.json_schema and request.response_schema is not None:
            problem = _schema_problem(text, request.response_schema)
            if problem:
                yield Violation("schema_invalid", 0, 0, problem, redactable=False)

    def _redacted(self, request: Request, text: str, found: list[Violation]) -> str:
        """``text`` with every violation's span replaced: PII by placeholders (one per
        value, none the request or the answer already holds: ``pii``'s ``restore`` after
        this guard would put the user's value in their place), the rest by the marker."""
        pii_spans = {(v.start, v.end): v.kind for v in found if v.kind in self.options.pii_kinds}
        spans = sorted((v.start, v.end) for v in found if v.end > v.start)
        merged: list[tuple[int, int]] = []
        for start, end in spans:
            if merged and start < merged[-1][1]:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
            else:
                merged.append((start, end))
        # The detections as found in the whole text: found again in a span alone, a value
        # its context identifies (``password = ...``) was not, and stayed in the answer.
        values = [(pii_spans[(start, end)], text[start:end]) for start, end in merged
                  if (start, end) in pii_spans]
        reserved = [match.group(0) for source in (text, *(m.content for m in request.messages))
                    for match in PLACEHOLDER.finditer(source)]
        redacted = iter(redact_texts([value for _, value in values],
                                     [[Detection(kind, 0, len(value), value)]
                                      for kind, value in values], reserved=reserved)[0])
        pieces, at = [], 0
        for start, end in merged:
            pieces.append(text[at:start])
            pieces.append(next(redacted) if (start, end) in pii_spans else MARKER)
            at = end
        pieces.append(text[at:])
        return "".join(pieces)

    @staticmethod
    def _findings(found: list[Violation], note: str = "") -> list[Finding]:
        return [Finding(kind=v.kind, start=v.start, end=v.end,
                        detail=v.detail + (f"; {note}" if note else "")) for v in found]

    @hookimpl
    async def aieng_guard_output(self, request: Request,
                                 completion: Completion) -> GuardVerdict | None:
        """Check the answer; on violations apply the policy."""
        opts = self.options
        text = completion.text
        found = await self._checked(request, text)
        if not found:
            return None
        kinds = sorted({v.kind for v in found})
        if opts.policy == "redact" and all(v.redactable for v in found):
            return GuardVerdict(action="redact", text=self._redacted(request, text, found),
                                findings=self._findings(found))
        if opts.policy == "fix":
            if self._context is None:
                return GuardVerdict(action="block", text=opts.block_message,
                                    findings=self._findings(found, "no pipeline context to "
                                                            "retry through"))
            retry = self._retry_request(request, text, found)
            answer = await self._context.generate(retry)
            again = await self._checked(request, answer.text)
            log.info("guardrails.output.fix", violations=kinds, fixed=not again)
            if not again:
                return GuardVerdict(action="redact", text=answer.text,
                                    findings=self._findings(found, "fixed by one retry"))
            return GuardVerdict(action="block", text=opts.block_message,
                                findings=self._findings(found) + self._findings(
                                    again, "still present after the retry"))
        log.info("guardrails.output.blocked", violations=kinds)
        return GuardVerdict(action="block", text=opts.block_message,
                            findings=self._findings(found))

    @staticmethod
    def _retry_request(request: Request, answer: str, found: list[Violation]) -> Request:
        reasons = []
        for kind in dict.fromkeys(v.kind for v in found):
            if kind == "schema_invalid":
                detail = next(v.detail for v in found if v.kind == kind)
                reasons.append(f"it is not valid JSON for the required schema ({detail})")
            elif kind == "system_prompt_leak":
                reasons.append("it repeats your instructions (the system message)")
            elif kind == "canary_leak":
                reasons.append("it contains a confidential marker string")
            elif kind == "blocked_term":
                reasons.append("it uses a term that is not allowed")
            else:
                reasons.append(f"it contains personal data or a secret ({kind})")
        feedback = ("Your previous answer was rejected because " + "; ".join(reasons)
                    + ". Answer the original request again without these problems.")
        if any(v.kind == "schema_invalid" for v in found):
            feedback += " Reply with the JSON only."
        messages = (*request.messages, Message("assistant", answer), Message("user", feedback))
        return attrs.evolve(request, messages=messages)


def _no_constant(name: str) -> Any:
    """``json.loads``' hook for ``NaN``, ``Infinity`` and ``-Infinity``: no JSON (a strict
    parser refuses them), so the answer is not valid JSON."""
    raise ValueError(f"{name} is not a JSON value")


def _schema_problem(text: str, schema: dict[str, Any]) -> str:
    """Why ``text`` is not a JSON document valid against ``schema`` ('' when it is)."""
    import jsonschema  # type: ignore[import-untyped]  # imported on first use (slow)

    try:
        document = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        return f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    except ValueError as exc:  # NaN / Infinity, or a number past Python's digit limit
        return f"not JSON: {str(exc)[:200]}"
    except RecursionError:
        return "not JSON that can be checked: nested too deeply"
    try:
        validator_class = jsonschema.validators.validator_for(schema)
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return f"the request's schema itself is invalid: {exc.message}"
    try:
        error = jsonschema.exceptions.best_match(
            validator_class(schema).iter_errors(document))
    except RecursionError:  # a recursive schema ($ref) over a deeply nested document
        return "not JSON that can be checked: nested too deeply"
    if error is None:
        return ""
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"at {where}: {error.message[:200]}"
