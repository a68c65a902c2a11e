"""The input guards: ``pii`` (redact and restore) and ``injection`` (score and block)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import TypeVar

import anyio
import attrs
import structlog
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import (
    AgentFinished,
    Completion,
    Event,
    Finding,
    GuardVerdict,
    Message,
    Request,
    RunFinished,
    ToolCall,
)

from ._cache import ScanCache
from ._conversation import Slot, map_strings, rebuild, texts_of
from ._injection import InjectionMatch, InjectionScan, scan_injection
from ._options import InjectionOptions, PIIOptions
from ._pii import Detection, find_pii
from ._redact import PLACEHOLDER, Vault, redact, redact_texts, restore

__all__ = ["InjectionGuard", "PIIGuard", "injection_findings", "pii_findings",
           "remove_injections"]

log = structlog.get_logger(__name__)

#: What replaces a sentence the injection guard removes.
REMOVED = "[removed: possible prompt injection]"
#: Texts longer than this (characters) are scanned in a worker thread, not on the loop.
INLINE_LIMIT = 16_384

_T = TypeVar("_T")


async def _off_loop(size: int, function: Callable[[], _T]) -> _T:
    """``function()``, inline for small texts and in a worker thread for large ones.

    The caller's deadline (a host's ``fail_after``, the stage's timeout) ends the call
    within one window of the scan: the scans call ``stop_if_cancelled`` (aieng_hookspecs)
    between windows, which raises the cancellation in the thread; the thread has ended
    when this returns, so no scan runs on after its caller left."""
    if size <= INLINE_LIMIT:
        return function()
    return await anyio.to_thread.run_sync(function)


def pii_findings(detections: Sequence[Detection], placeholders: dict[str, str] | None = None,
                 ) -> list[Finding]:
    """Findings for detections: kind and span, and the placeholder — never the value."""
    by_value = {value: p for p, value in (placeholders or {}).items()}
    findings = []
    for d in detections:
        placeholder = by_value.get(d.value)
        detail = f"{d.kind} ({d.end - d.start} characters)"
        if placeholder:
            detail += f" replaced by {placeholder}"
        findings.append(Finding(kind=d.kind, start=d.start, end=d.end, detail=detail))
    return findings


def injection_findings(scan: InjectionScan) -> list[Finding]:
    """One ``prompt_injection`` finding per matched rule, each with the scan's score (as
    the thresholds compare it: all its 4 decimals, so a 0.5985 under a threshold of 0.6
    never reads 0.60)."""
    findings = [Finding(kind="prompt_injection", start=m.start, end=m.end,
                        detail=f"{m.rule} in {m.layer} (weight {m.weight:.4g}); "
                               f"score {scan.score:g}")
                for m in scan.matches]
    if scan.hidden_characters:
        findings.append(Finding(kind="hidden_characters",
                                detail=f"{scan.hidden_characters} zero-width or bidi "
                                       "characters"))
    return findings


def remove_injections(text: str, scan: InjectionScan) -> str:
    """``text`` with each sentence holding a directly matched rule replaced by
    :data:`REMOVED` (matches found only after decoding have no span: the whole text is
    replaced then)."""
    spans = [(m.start, m.end) for m in scan.matches if m.layer == "text"]
    if not spans or len(spans) < len(scan.matches):
        return REMOVED
    cuts: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        left = max(text.rfind(c, 0, start) for c in ".!?\n") + 1
        rights = [i for i in (text.find(c, end) for c in ".!?\n") if i >= 0]
        right = min(rights) + 1 if rights else len(text)
        if cuts and left <= cuts[-1][1]:
            cuts[-1] = (cuts[-1][0], max(cuts[-1][1], right))
        else:
            cuts.append((left, right))
    pieces, at = [], 0
    for left, right in cuts:
        pieces.append(text[at:left])
        pieces.append((" " if left and not text[left - 1].isspace() else "") + REMOVED)
        at = right
    pieces.append(text[at:])
    return "".join(pieces)


def _run_key(prefix: str) -> str | None:
    bound = structlog.contextvars.get_contextvars()
    run_id = bound.get("run_id")
    if not run_id:
        return None
    return f"{prefix}:{bound.get('pipeline', '')}:{run_id}"


def _tool_source(messages: Sequence[Message], index: int, *, earlier: bool) -> str:
    """How a finding names the tool message at ``index``: its tool (from the assistant
    turn that called it, or the message's ``name``) and its call id."""
    message = messages[index]
    call_id = message.tool_call_id
    name = message.name
    # The calling turn, read back from the message (not every earlier turn: in a long run,
    # naming each tool message would read the whole conversation, quadratic).
    for at in range(index - 1, -1, -1) if call_id is not None and name is None else ():
        turn = messages[at]
        if turn.role == "assistant":
            name = next((c.name for c in turn.tool_calls if c.id == call_id), None)
            if name is not None:
                break
    what = f"the tool result of {name!r}" if name is not None else "a tool result"
    if call_id is not None:
        what += f" (call {call_id!r})"
    return f"an earlier tool message, {what}" if earlier else what


def _other_texts(request: Request, *, all_messages: bool,
                 tool_results: bool) -> list[tuple[str, str]]:
    """``(source, text)`` of the messages an injection scan covers besides the prompt (the
    last user message): the tool results after it (``tool_results``), and every earlier
    user and tool message (``all_messages``)."""
    messages = request.messages
    last_user = next((i for i in range(len(messages) - 1, -1, -1)
                      if messages[i].role == "user"), -1)
    out: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        if i == last_user or not message.content:
            continue
        if message.role == "tool" and i > last_user:
            if tool_results or all_messages:
                out.append((_tool_source(messages, i, earlier=False), message.content))
        elif all_messages and message.role == "tool":
            out.append((_tool_source(messages, i, earlier=True), message.content))
        elif all_messages and message.role == "user":
            out.append(("history", message.content))
    return out


def _digest(text: str) -> str:
    return "prompt:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _task(messages: Sequence[Message]) -> str:
    """An agent run's task: its first user message (the same in each of its model calls)."""
    return next((m.content for m in messages if m.role == "user"), "")


class PIIGuard:
    """Redacts (or blocks) personal data and secrets on the way in, and restores the
    placeholders in the answer on the way out (``restore = true``).

    The mapping placeholder -> value stays in this component's :class:`Vault`, keyed by
    the run id (bound by the kernel for each run; outside a run, by a digest of the
    redacted prompt), so concurrent runs never see each other's values.
    """

    def __init__(self, options: PIIOptions | None = None) -> None:
        self.options = options or PIIOptions()
        self.vault = Vault(self.options.vault_size, self.options.vault_ttl)
        #: With ``restore``, each agent run's placeholders (and, under ``""``, a digest of
        #: its task), so a value keeps its placeholder across the run's model calls.
        self.agent_runs = Vault(self.options.vault_size, self.options.vault_ttl)
        #: What each text holds (an agent's conversation is scanned at every step).
        self._detections: ScanCache[tuple[Detection, ...]] = ScanCache(self._find, empty=())

    def _find(self, text: str) -> tuple[Detection, ...]:
        opts = self.options
        return tuple(find_pii(text, opts.kinds, min_entropy=opts.min_entropy))

    def _keys(self, prompt: str) -> list[str]:
        # In a run, only the run's own key: falling back to the prompt's digest could hand
        # one run another run's values (same redacted prompt, its own entry evicted).
        run = _run_key(f"pii-{id(self):x}")
        return [run] if run else [_digest(prompt)]

    def _take_key(self, prompt: str) -> None:
        """Outside a run, a prompt with nothing to redact that holds a placeholder (``mail
        <EMAIL_1>``, written by the caller) takes its key with an empty mapping: another
        caller's prompt that redacts to the same text then makes it ambiguous, whichever
        came first, and no answer gets that caller's values."""
        if self.options.restore and PLACEHOLDER.search(prompt) is not None \
                and _run_key("") is None:
            self.vault.put([_digest(prompt)], {})

    def _agent_key(self) -> str | None:
        """The key of the agent run being guarded (``None``: none, or no ``restore``)."""
        bound = structlog.contextvars.get_contextvars()
        agent = bound.get("agent_run_id")
        if not agent or not self.options.restore:
            return None
        return f"pii-{id(self):x}:{bound.get('pipeline', '')}:agent:{agent}"

    def _assigned(self, key: str | None, task: str) -> dict[str, str]:
        """The placeholders the agent run's earlier model calls gave, kept with the digest
        of the run's task (``task``): two runs given one run id (by a caller) have other
        tasks, and neither gets the other's values (its model call is numbered afresh)."""
        if key is None:
            return {}
        held = self.agent_runs.get([key])
        if held.get("") != task:
            return {}
        return {placeholder: value for placeholder, value in held.items() if placeholder}

    def _assign(self, key: str | None, task: str, placeholders: dict[str, str]) -> None:
        """Keep the agent run's placeholders (all of them so far) for its next model call."""
        if key is not None:
            # Replaced, not put over: the vault makes a key given two mappings ambiguous.
            self.agent_runs.pop([key])
            self.agent_runs.put([key], {**placeholders, "": task})

    @hookimpl
    def aieng_on_event(self, event: Event) -> None:
        """Drop a finished run's mapping: a run blocked, failed or cancelled before the
        output guard restored its answer would hold it for ``vault_ttl`` (taking the place
        of runs still waiting for theirs); and a finished agent run's placeholders."""
        if not event.run_id or not self.options.restore:
            return
        if isinstance(event, RunFinished):
            self.vault.pop([f"pii-{id(self):x}:{event.pipeline}:{event.run_id}"])
        elif isinstance(event, AgentFinished):
            self.agent_runs.pop([f"pii-{id(self):x}:{event.pipeline}:agent:{event.run_id}"])

    @hookimpl
    async def aieng_guard_input(self, request: Request) -> GuardVerdict | None:
        """:meth:`check_input`, off the event loop for long texts (with ``all_messages``,
        a long conversation)."""
        size = len(request.prompt)
        if self.options.all_messages and len(request.messages) > 1:
            size = sum(len(text) for _, text in texts_of(request.messages))
        return await _off_loop(size, lambda: self.check_input(request))

    @hookimpl
    async def aieng_guard_output(self, request: Request,
                                 completion: Completion) -> GuardVerdict | None:
        """:meth:`check_output`, off the event loop for long texts."""
        return await _off_loop(len(completion.text),
                               lambda: self.check_output(request, completion))

    def check_input(self, request: Request) -> GuardVerdict | None:
        """Redact or block the personal data and secrets of the conversation
        (``all_messages``: every message but the system ones, and the string values of
        earlier tool calls' arguments, one placeholder per value across them), or of the
        last user message only."""
        if self.options.all_messages and len(request.messages) > 1:
            return self._check_conversation(request)
        text = request.prompt
        opts = self.options
        detections = self._detections(text)
        if not detections:
            self._take_key(text)
            return None
        if opts.action == "block":
            return GuardVerdict(action="block", text=text, findings=pii_findings(detections))
        agent = self._agent_key()
        task = _digest(_task(request.messages)) if agent is not None else ""
        assigned = self._assigned(agent, task)
        texts, mapping = redact_texts([text], [detections], assigned=assigned)
        if opts.restore:  # the run's earlier placeholders are restored in its answer too
            self.vault.put(self._keys(texts[0]), {**assigned, **mapping})
            self._assign(agent, task, {**assigned, **mapping})
        log.debug("guardrails.pii.redacted", count=len(detections),
                  kinds=sorted({d.kind for d in detections}))
        return GuardVerdict(action="redact", text=texts[0],
                            findings=pii_findings(detections, mapping))

    def _check_conversation(self, request: Request) -> GuardVerdict | None:
        opts = self.options
        messages = request.messages
        places = texts_of(messages)
        found = self._detections.many([text for _, text in places])
        if not any(found):
            self._take_key(request.prompt)
            return None
        last_user = next((i for i in range(len(messages) - 1, -1, -1)
                          if messages[i].role == "user"), -1)
        prompt: Slot = (last_user, None)
        in_prompt: Sequence[Detection] = next(
            (f for (slot, _), f in zip(places, found) if slot == prompt), ())
        elsewhere = [(slot, f) for (slot, _), f in zip(places, found) if f and slot != prompt]
        if opts.action == "block":
            return GuardVerdict(action="block", text=request.prompt,
                                findings=[*pii_findings(in_prompt),
                                          *_elsewhere(messages, elsewhere, {})])
        agent = self._agent_key()
        task = _digest(_task(messages)) if agent is not None else ""
        assigned = self._assigned(agent, task)
        texts, mapping = redact_texts([text for _, text in places], found, assigned=assigned)
        changed = {slot: new for (slot, old), new in zip(places, texts) if new != old}
        redacted = rebuild(messages, changed)
        text = redacted[last_user].content if last_user >= 0 else request.prompt
        if opts.restore:  # the run's earlier placeholders are restored in its answer too
            self.vault.put(self._keys(text), {**assigned, **mapping})
            self._assign(agent, task, {**assigned, **mapping})
        log.debug("guardrails.pii.redacted", count=sum(map(len, found)),
                  kinds=sorted({d.kind for f in found for d in f}))
        return GuardVerdict(action="redact", text=text, messages=redacted,
                            findings=[*pii_findings(in_prompt, mapping),
                                      *_elsewhere(messages, elsewhere, mapping)])

    def check_output(self, request: Request, completion: Completion) -> GuardVerdict | None:
        """Redact personal data the model wrote (``scan_output``), then put the input's
        values back in place of their placeholders (``restore``)."""
        opts = self.options
        text = completion.text
        mapping: dict[str, str] = {}
        keys: list[str] = []
        if opts.restore:
            keys = self._keys(request.prompt)
            mapping = self.vault.get(keys)
        findings: list[Finding] = []
        if opts.scan_output:
            detections = find_pii(text, opts.kinds, min_entropy=opts.min_entropy)
            if detections and opts.action == "block":
                return GuardVerdict(action="block", text="[answer withheld: personal data]",
                                    findings=pii_findings(detections))
            if detections:
                redaction = redact(text, detections=detections, reserved=mapping)
                text = redaction.text
                findings = pii_findings(detections, redaction.mapping)
        calls = completion.tool_calls
        if mapping:
            restored = restore(text, mapping)
            if restored != text:
                # Spans in the guarded text (the model's), as every finding's: the output
                # redaction above may have moved the placeholders in ``text``.
                findings.extend(Finding(kind="restored", start=m.start(), end=m.end(),
                                        detail=f"{m.group()} restored")
                                for m in PLACEHOLDER.finditer(completion.text)
                                if m.group() in mapping)
                text = restored
            # The calls' arguments too: a tool must get the value, not its placeholder;
            # only the tools ``restore_calls`` lists (a value given to a tool leaves).
            calls = tuple(call if not self._restores(call) or (arguments := map_strings(
                call.arguments, lambda value: restore(value, mapping))) == call.arguments
                else attrs.evolve(call, arguments=arguments) for call in calls)
            for before, call in zip(completion.tool_calls, calls):
                if call is not before:
                    findings.extend(Finding(kind="restored", detail=f"{placeholder} restored "
                                            f"in the arguments of {call.name!r} (call "
                                            f"{call.id!r})")
                                    for placeholder in _placeholders(before, mapping))
                elif not self._restores(call) and (kept := _placeholders(call, mapping)):
                    findings.append(Finding(kind="restore_withheld", detail=(
                        f"{', '.join(kept)} left in the arguments of {call.name!r} (call "
                        f"{call.id!r}): the tool is not in restore_calls")))
                    log.info("guardrails.pii.restore_withheld", tool=call.name,
                             placeholders=kept)
            self.vault.pop(keys)
        if text == completion.text and calls == completion.tool_calls:
            # Calls left with their placeholders: the operator sees why (``allow``).
            return GuardVerdict(action="allow", text=text, findings=findings) \
                if findings else None
        return GuardVerdict(action="redact", text=text, findings=findings,
                            tool_calls=None if calls == completion.tool_calls else calls)

    def _restores(self, call: ToolCall) -> bool:
        """Whether ``call``'s arguments get the values back (``restore_calls``)."""
        allowed = self.options.restore_calls
        return allowed if isinstance(allowed, bool) else call.name in allowed


def _placeholders(call: ToolCall, mapping: dict[str, str]) -> list[str]:
    """The placeholders of ``mapping`` in the string values of a call's arguments."""
    found: set[str] = set()

    def collect(value: str) -> str:
        found.update(m.group() for m in PLACEHOLDER.finditer(value) if m.group() in mapping)
        return value

    map_strings(call.arguments, collect)
    return sorted(found)


def _elsewhere(messages: Sequence[Message], found: Sequence[tuple[Slot, Sequence[Detection]]],
               mapping: dict[str, str]) -> list[Finding]:
    """Findings for detections outside the last user message: no span (spans point into
    the guarded text, which these are not), the message named in the detail."""
    by_value = {value: p for p, value in mapping.items()}
    out = []
    for (index, leaf), detections in found:
        message = messages[index]
        if message.role == "tool":
            where = _tool_source(messages, index, earlier=False)
        elif leaf is not None:
            name = message.tool_calls[leaf[0]].name
            where = f"the arguments of an earlier call to {name!r}"
        else:
            where = f"an earlier {message.role} turn"
        for d in detections:
            placeholder = by_value.get(d.value)
            detail = f"{d.kind} in {where}" + (f" replaced by {placeholder}" if placeholder
                                               else "")
            out.append(Finding(kind=d.kind, detail=detail))
    return out


class InjectionGuard:
    """Scores the last user message and the tool results after it (or every user and tool
    message) for prompt injection, after normalising and decoding them, and blocks or
    redacts above the configured thresholds. A finding from another message than the last
    user one names it (``... in text of the tool result of 'fetch' (call 'c1')``)."""

    def __init__(self, options: InjectionOptions | None = None) -> None:
        self.options = options or InjectionOptions()
        #: Each text's scan (an agent's tool results are scanned at every step).
        self._scans = ScanCache(self._scan, empty=InjectionScan(0.0, ()))

    def _scan(self, text: str) -> InjectionScan:
        return scan_injection(text, max_depth=self.options.max_depth)

    def scan(self, text: str) -> InjectionScan:
        """The injection scan of ``text`` at this guard's depth."""
        return self._scans(text)

    @hookimpl
    async def aieng_guard_input(self, request: Request) -> GuardVerdict | None:
        """:meth:`check_input`, off the event loop for long texts."""
        opts = self.options
        size = len(request.prompt) + sum(len(text) for _, text in _other_texts(
            request, all_messages=opts.all_messages, tool_results=opts.tool_results))
        return await _off_loop(size, lambda: self.check_input(request))

    def check_input(self, request: Request) -> GuardVerdict | None:
        """Block (or redact) a request whose injection score reaches the thresholds.

        The message scoring highest decides. Only the last user message can be redacted (a
        verdict's text replaces it): an injection in a tool result or an earlier message
        that reaches ``redact_threshold`` blocks the request instead.
        """
        opts = self.options
        text = request.prompt
        scan = self.scan(text)
        source = ""  # where the deciding scan's text came from ("": the prompt)
        others = _other_texts(request, all_messages=opts.all_messages,
                              tool_results=opts.tool_results)
        # A conversation's earlier texts as one (its next step scans only what is new).
        for (where, _), extra in zip(others, self._scans.many([t for _, t in others]),
                                     strict=True):
            if extra.score > scan.score:
                # No span: the findings' spans are in the prompt, which this is not.
                scan = InjectionScan(extra.score, tuple(
                    InjectionMatch(m.rule, m.weight, 0, 0,
                                   f"history:{m.layer}" if where == "history"
                                   else f"{m.layer} of {where}")
                    for m in extra.matches), extra.hidden_characters)
                source = where
        if not scan.matches:
            return None
        findings = injection_findings(scan)
        redact = opts.redact_threshold is not None and scan.score >= opts.redact_threshold
        if scan.score >= opts.block_threshold or (redact and source):
            log.info("guardrails.injection.blocked", score=scan.score,
                     rules=sorted({m.rule for m in scan.matches}),
                     source=source or "the last user message")
            return GuardVerdict(action="block", text=text, findings=findings)
        if redact:
            cleaned = remove_injections(text, scan)
            if cleaned != text:
                return GuardVerdict(action="redact", text=cleaned, findings=findings)
        return GuardVerdict(action="allow", text=text, findings=findings)
