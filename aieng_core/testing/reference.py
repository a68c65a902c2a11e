"""Reference components: small, real implementations of the roles the kernel ships none for.

They are named as reference (test) components: each does the real job of its role in the
simplest honest way, passes its role's conformance suite, and serves as a worked example
for plugin authors. They are not production components (no persistence, no models).

- :class:`ScoreReranker`: orders hits by score and keeps the best ``k``;
- :class:`ExactMatchJudge`: normalized exact match against the reference;
- :class:`EchoTool`: a tool ``echo`` that returns its ``text`` argument;
- :class:`RegexRedactGuard`: redacts e-mail addresses, blocks a configured phrase;
- :class:`FirstCandidateRouter`: routes to the first candidate, the rest as fallbacks;
- :class:`MemoryCache`: an in-process LRU cache keyed on messages, model and parameters;
- :class:`CopyQuantizer`: scheme ``"copy"``: copies the weights and reports their sizes.
"""

from __future__ import annotations

import json
import re
import shutil
import string
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from pathlib import Path

import anyio
import attrs
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import (
    Completion,
    Finding,
    GuardVerdict,
    Hit,
    QuantizeResult,
    Request,
    Route,
    Sample,
    Score,
    ToolCall,
    ToolResult,
    ToolSpec,
)

from ._keep import kept_bound, trim_kept

__all__ = [
    "AddTool",
    "CopyQuantizer",
    "EchoTool",
    "ExactMatchJudge",
    "FirstCandidateRouter",
    "MemoryCache",
    "RegexRedactGuard",
    "ScoreReranker",
]


class ScoreReranker:
    """Reference reranker (a test component): orders hits by score, best first, cuts to ``k``.

    Ties keep the incoming order; a document that appears twice keeps its best hit. Ranks are
    renumbered ``1..n``; scores and sources are kept.
    """

    @hookimpl
    def aieng_rerank(self, hits: Sequence[Hit], k: int) -> list[Hit]:
        ordered = sorted(enumerate(hits), key=lambda pair: (-pair[1].score, pair[0]))
        kept: list[Hit] = []
        seen: set[str] = set()
        for _, hit in ordered:
            if len(kept) >= k:
                break
            if hit.document.id in seen:
                continue
            seen.add(hit.document.id)
            kept.append(attrs.evolve(hit, rank=len(kept) + 1))
        return kept


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD-style normalization: lower case, no punctuation, no articles, single spaces."""
    text = text.casefold().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


class ExactMatchJudge:
    """Reference judge (a test component): normalized exact match against the reference.

    Scores ``exact_match`` as 1.0 when the normalized output equals a normalized reference
    (any of several), else 0.0; returns ``None`` ("not applicable") without a reference.
    """

    metric = "exact_match"

    @hookimpl
    def aieng_judge(self, sample: Sample) -> list[Score] | None:
        if sample.reference is None:
            return None
        references = (sample.reference,) if isinstance(sample.reference, str) \
            else sample.reference
        if not references:
            return None
        output = normalize_answer(sample.output)
        matched = any(normalize_answer(ref) == output for ref in references)
        return [Score(name=self.metric, value=1.0 if matched else 0.0,
                      rationale="matches a reference" if matched else "matches no reference")]


class EchoTool:
    """Reference tool component (a test component): one tool, ``echo``, returning ``text``.

    A call with a missing or non-string ``text`` gets an error result, never an exception.
    """

    spec = ToolSpec(
        name="echo",
        description="Return the given text unchanged.",
        parameters={"type": "object", "properties": {"text": {"type": "string"}},
                    "required": ["text"]},
    )

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        return [self.spec]

    @hookimpl
    def aieng_call_tool(self, call: ToolCall) -> ToolResult | None:
        if call.name != self.spec.name:
            return None
        text = call.arguments.get("text")
        if not isinstance(text, str):
            return ToolResult(call_id=call.id, is_error=True,
                              content="echo needs a string argument 'text'")
        return ToolResult(call_id=call.id, content=text)


class AddTool:
    """Reference tool component (a test component): one tool, ``add``, adding the integers
    ``a`` and ``b`` (its schema requires both, and nothing else). It records the calls it
    ran (``calls``, oldest first; ``count`` counts them all); arguments that are not two
    integers get an error result, never an exception.

    :param keep: how many of the latest calls ``calls`` holds (``None``, the default: every
        one, which a test of a few calls reads; give a number in a long test).
    """

    spec = ToolSpec(
        name="add",
        description="Add two integers.",
        parameters={"type": "object",
                    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                    "required": ["a", "b"], "additionalProperties": False},
    )

    def __init__(self, *, keep: int | None = None) -> None:
        self.keep = kept_bound(keep)
        self.calls: list[ToolCall] = []
        self.count = 0

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        return [self.spec]

    @hookimpl
    def aieng_call_tool(self, call: ToolCall) -> ToolResult | None:
        if call.name != self.spec.name:
            return None
        self.calls.append(call)
        self.count += 1
        trim_kept(self.calls, self.keep)
        a, b = call.arguments.get("a"), call.arguments.get("b")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (a, b)):
            return ToolResult(call_id=call.id, is_error=True,
                              content=f"add needs two integers 'a' and 'b', got {a!r} and "
                                      f"{b!r}")
        return ToolResult(call_id=call.id, content=str(a + b))  # type: ignore[operator]


_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


class RegexRedactGuard:
    """Reference guardrail (a test component): redacts e-mail addresses, blocks a phrase.

    Input and output alike: text containing ``blocked_phrase`` (case-insensitively, before or
    after redaction) is blocked; otherwise every e-mail address becomes ``[EMAIL]``. The
    redaction is idempotent: ``[EMAIL]`` is no address, and a phrase that only appears once
    addresses are redacted is blocked on the first pass already.

    :param blocked_phrase: the phrase that blocks a text (empty: block nothing).
    :param refusal: the text a block leaves.
    """

    def __init__(self, blocked_phrase: str = "ignore previous instructions",
                 refusal: str = "This text was blocked by a guardrail.") -> None:
        self.blocked_phrase = blocked_phrase.casefold()
        self.refusal = refusal

    def check(self, text: str) -> GuardVerdict:
        """The verdict on one text."""
        redacted = _EMAIL.sub("[EMAIL]", text)
        phrase = self.blocked_phrase
        if phrase and (phrase in text.casefold() or phrase in redacted.casefold()):
            return GuardVerdict(action="block", text=self.refusal,
                                findings=(Finding(kind="blocked_phrase",
                                                  detail="a blocked phrase"),))
        findings = tuple(Finding(kind="email", start=m.start(), end=m.end(),
                                 detail="an e-mail address") for m in _EMAIL.finditer(text))
        if not findings:
            return GuardVerdict(action="allow", text=text)
        return GuardVerdict(action="redact", text=redacted, findings=findings)

    @hookimpl
    def aieng_guard_input(self, request: Request) -> GuardVerdict:
        return self.check(request.prompt)

    @hookimpl
    def aieng_guard_output(self, completion: Completion) -> GuardVerdict:
        return self.check(completion.text)


class FirstCandidateRouter:
    """Reference router (a test component): the first candidate, the others as fallbacks.

    With no candidates it has no opinion (``None``).
    """

    @hookimpl
    def aieng_route(self, candidates: Sequence[str]) -> Route | None:
        unique = list(dict.fromkeys(candidates))
        if not unique:
            return None
        return Route(target=unique[0], fallbacks=tuple(unique[1:]), reason="first candidate")


class MemoryCache:
    """Reference cache (a test component): an in-process LRU dict of completions.

    The key is the request's messages, model and sampling parameters (not its metadata), so
    only an identical request hits. A hit returns the stored completion with ``cached=True``.

    :param max_entries: the most completions kept; the least recently used goes first.
    """

    def __init__(self, max_entries: int = 1024) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, Completion] = OrderedDict()

    @staticmethod
    def key(request: Request) -> Hashable:
        """What identifies a request: messages, model, parameters, schema and tools."""
        schema = json.dumps(request.response_schema, sort_keys=True, default=repr)
        tools = tuple((t.name, t.description, json.dumps(t.parameters, sort_keys=True,
                                                         default=repr)) for t in request.tools)
        return (request.messages, request.model, request.temperature, request.top_k,
                request.top_p, request.max_tokens, request.stop, request.seed, schema, tools)

    def __len__(self) -> int:
        return len(self._entries)

    @hookimpl
    def aieng_cache_lookup(self, request: Request) -> Completion | None:
        key = self.key(request)
        found = self._entries.get(key)
        if found is None:
            return None
        self._entries.move_to_end(key)
        return attrs.evolve(found, cached=True)

    @hookimpl
    def aieng_cache_store(self, request: Request, completion: Completion) -> None:
        key = self.key(request)
        self._entries[key] = completion
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


class CopyQuantizer:
    """Reference quantizer (a test component): scheme ``"copy"`` copies the weights as they are.

    It shows the shape of a quantizer (the work in a worker thread, sizes before and after,
    a quality report) without any numerics; other schemes are not its business (``None``).

    :param output_dir: where copies go (default: next to the model, named ``NAME.copy``).
    """

    scheme = "copy"

    def __init__(self, output_dir: str | Path | None = None) -> None:
        self.output_dir = None if output_dir is None else Path(output_dir)

    def _copy(self, model: str) -> QuantizeResult:
        source = Path(model)
        if not source.exists():
            raise FileNotFoundError(f"no model at {source}: give a local file or folder")
        target = (self.output_dir or source.parent) / f"{source.name}.copy"
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copyfile(source, target)
        return QuantizeResult(model=str(target), scheme=self.scheme, size_before=_size(source),
                              size_after=_size(target), quality={"max_abs_error": 0.0})

    @hookimpl
    async def aieng_quantize(self, model: str, scheme: str) -> QuantizeResult | None:
        if scheme != self.scheme:
            return None
        return await anyio.to_thread.run_sync(self._copy, model)
