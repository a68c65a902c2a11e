"""Constrained decoding: only tokens that keep the text a valid prefix are ever chosen.

A request with ``response_schema`` (JSON valid against the schema, see
:mod:`aieng_transformers._jsonschema` for the supported subset) or
``metadata["regex"]`` (text the regular expression fully matches: :mod:`._regexfsm`'s
automaton for its subset, else the ``regex`` package's partial matching) decodes under a
character-level automaton. Each step:

1. greedy first tests the model's few favourite tokens (a top-k, ties as a stable sort
   orders them) and takes the first allowed; otherwise, and when sampling, the logits
   (after temperature) are sorted once, best first (O(V log V) in torch);
2. tokens whose first character the automaton refuses are dropped at once (a mask per
   state, from one check per distinct first character of the vocabulary: :class:`Heads`);
   the other candidates are tested in that order: a token is allowed when its text
   (precomputed once per tokenizer for the whole vocabulary) keeps the text a valid
   prefix, and when the characters still needed to finish fit the tokens left
   (``max_tokens``); an end-of-sequence token only where the text is whole;
3. greedy takes the first allowed token; sampling collects allowed tokens until ``top_k``
   of them, or until they hold ``top_p`` of the probability that could still be allowed
   (with ``top_p`` 1: until the untested tokens could add at most 1% to the collected
   probability, or 256 allowed tokens are collected), renormalizes, applies top-p, and
   draws. The tail this leaves out is what makes sampling affordable (an approximation:
   allowed tokens that together hold under ~1% of the allowed probability are never drawn).

So a step costs a top-k when one of greedy's favourites is allowed, else O(V log V) for
the sort and the mask of a new state (452 one-character checks for SmolLM2), plus one
automaton check per candidate tested, each O(length of the token's text): the model's
favourite token is usually allowed, and a scan of every candidate happens only when the
model wants none of the allowed tokens. Results of (state, token) checks are memoized per request
(the state inside a free JSON string is one state, so long strings cost almost nothing).

Limits: tokens whose text is empty (special tokens, but the marker tokens of Mistral's
tool formats, read as characters of their own: :func:`marked_texts`) or holds part of a
multi-byte character are never chosen under a constraint; a character the vocabulary spells only
across several byte tokens cannot be written. JSON output, and regex output of a pattern
in :mod:`._regexfsm`'s subset, always completes when ``max_tokens`` is at least the
shortest valid text; a pattern outside that subset has no known remaining length, so its
output may end incomplete under ``max_tokens`` (finish reason ``length``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import torch

from ._jsonschema import JsonMachine, SchemaError
from ._regexfsm import Pattern, RegexError
from ._sampling import tempered
from ._toolcalls import MARKS, ToolPlan
from ._toolfsm import call_constraint

__all__ = ["Constraint", "Guide", "Heads", "JsonConstraint", "RegexConstraint", "SchemaError",
           "constraint_for", "marked_texts", "token_heads", "token_texts"]

# Sampling stops testing candidates once the untested tokens hold at most this share of
# the allowed probability collected so far (top_p = 1), or at this many allowed ones.
_TAIL = 1e-2
_MAX_CANDIDATES = 256
_MEMO_LIMIT = 200_000
#: Candidate masks kept per request (one per automaton state; a mask is a bool per id).
_MASK_LIMIT = 256
#: Greedy tests this many of the model's favourite tokens before masking the vocabulary.
_FIRST_TRIES = 8
# Seconds of matching one request's regex outside the automaton's subset may take in all:
# a backreference or lookaround pattern can backtrack exponentially on the text. Counted
# in the matching thread's CPU time: the wall time a thread waits on a busy machine (for
# the GIL, for a core) or a VM spends paused is no matching, and spent no budget.
_REGEX_BUDGET_S = 10.0
_texts_lock = threading.Lock()


class Constraint(Protocol):
    """A character-level automaton over immutable, hashable states."""

    def start(self) -> Hashable: ...
    def feed(self, state: Any, text: str) -> Any | None: ...
    def accepting(self, state: Any) -> bool: ...
    def complete(self, state: Any) -> bool: ...
    def min_chars(self, state: Any) -> int: ...


class JsonConstraint:
    """JSON text valid against a schema (the subset of :mod:`._jsonschema`).

    :raises SchemaError: when the schema is outside the subset.
    """

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self._machine = JsonMachine(schema)

    def start(self) -> Hashable:
        return self._machine.start()

    def feed(self, state: Any, text: str) -> Any | None:
        return self._machine.feed(state, text)

    def accepting(self, state: Any) -> bool:
        return self._machine.accepting(state)

    def complete(self, state: Any) -> bool:
        return self._machine.complete(state)

    def min_chars(self, state: Any) -> int:
        return self._machine.min_chars(state)


class RegexConstraint:
    """Text that the pattern fully matches.

    A pattern of :mod:`._regexfsm`'s subset (ECMA-262-like: classes, groups, alternation,
    quantifiers, anchors) runs as that automaton: a state is an id, a step a table lookup
    once seen, and the characters still needed are exact, so the output always completes
    within a ``max_tokens`` of at least its shortest match, and generation ends once
    nothing may follow. Any other pattern the ``regex`` package compiles (lookarounds,
    backreferences, flags…) is checked by that package's partial matching: a state is the
    text so far, a check one match over it, and the characters still needed unknown;
    those checks share a budget of ``_REGEX_BUDGET_S`` seconds of the matching thread's
    CPU time per request, after which a check raises ``ValueError`` (a pattern
    backtracking exponentially would hang).

    :raises ValueError: when the pattern does not compile.
    """

    def __init__(self, pattern: str) -> None:
        import regex  # type: ignore[import-untyped]  # (no stubs; types-regex not needed)

        try:
            self._pattern = regex.compile(pattern)
        except regex.error as exc:
            raise ValueError(f"metadata['regex'] does not compile: {exc}") from None
        try:
            #: The automaton, or ``None`` for a pattern outside its subset.
            self.fsm: Pattern | None = Pattern(pattern)
        except RegexError:
            self.fsm = None
        self._source = pattern
        self._left = _REGEX_BUDGET_S  # matching time left (the fallback only)

    def start(self) -> Hashable:
        return "" if self.fsm is None else self.fsm.start()

    def feed(self, state: Any, text: str) -> Any | None:
        if self.fsm is not None:
            return self.fsm.feed(state, text)
        candidate = state + text
        return candidate if self._match(candidate, partial=True) else None

    def accepting(self, state: Any) -> bool:
        if self.fsm is not None:
            return self.fsm.accepting(state)
        return self._match(state, partial=False)

    def _match(self, text: str, *, partial: bool) -> bool:
        # The ``regex`` package's full match, within what is left of the budget (the
        # thread's CPU time: on a busy machine wall time would spend it waiting, and leave
        # an honest pattern's later matches 1 ms each, then refused as backtracking).
        started = time.thread_time()
        try:
            found = self._pattern.fullmatch(text, partial=partial,
                                            timeout=max(self._left, 1e-3))
        except TimeoutError:
            raise ValueError(
                f"metadata['regex'] {self._source!r:.80} spent its {_REGEX_BUDGET_S:g} s "
                "of matching (catastrophic backtracking: nested quantifiers with a "
                "backreference or lookaround); write it without them") from None
        finally:
            self._left -= time.thread_time() - started
        return found is not None

    def complete(self, state: Any) -> bool:
        # without the automaton, whether nothing may follow is not known: EOS (or a limit)
        # ends the text
        return self.fsm is not None and self.fsm.closed(state)

    def min_chars(self, state: Any) -> int:
        if self.fsm is not None:
            return int(self.fsm.left(state))
        return 0 if self.accepting(state) else 1


def constraint_for(response_schema: Mapping[str, Any] | None, metadata: Mapping[str, Any],
                   plan: ToolPlan | None = None) -> Constraint | None:
    """The request's constraint, or ``None`` for free text.

    With a tool plan (:func:`~._toolcalls.tool_plan`, whose ``tool_choice`` is not
    ``none``) the output is text and tool calls in the plan's format
    (:func:`~._toolfsm.call_constraint`); with ``tool_choice`` ``auto`` and a
    ``response_schema``, either the schema's document or calls (``hermes`` format only).

    :raises ValueError: when both a schema and a regex are given, a regex with tools, when
        the regex is not a string or does not compile, a bad ``tool_choice``, and
        (:class:`SchemaError`) for an unsupported schema or tool parameters.
    """
    pattern = metadata.get("regex")
    if response_schema is not None and pattern is not None:
        raise ValueError("a request may constrain its output by response_schema or by "
                         "metadata['regex'], not both")
    if plan is not None and plan.constrained:
        if pattern is not None:
            raise ValueError("metadata['regex'] cannot constrain a request that lists tools "
                             "(set metadata['tool_choice'] to 'none' to use both)")
        answer = None if response_schema is None else JsonMachine(response_schema)
        return call_constraint(plan, answer)
    if response_schema is not None:
        return JsonConstraint(response_schema)
    if pattern is not None:
        if not isinstance(pattern, str):
            raise ValueError("metadata['regex'] must be a string")
        return RegexConstraint(pattern)
    return None


def token_texts(tokenizer: Any) -> list[str | None]:
    """The text of every vocabulary id as it reads after other text, computed once per
    tokenizer (cached on it); ``None`` for ids whose text is empty (special tokens) or holds
    part of a multi-byte character."""
    cached = getattr(tokenizer, "_aieng_token_texts", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    with _texts_lock:
        cached = getattr(tokenizer, "_aieng_token_texts", None)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        size = len(tokenizer)
        # Decoding each id after an anchor keeps the leading space a SentencePiece
        # tokenizer drops from a text's first token.
        anchor = tokenizer.convert_tokens_to_ids(tokenizer.tokenize("a")[-1:])[0] \
            if tokenizer.tokenize("a") else None
        specials = set(getattr(tokenizer, "all_special_ids", ()))
        if anchor is not None:
            head = tokenizer.decode([anchor], skip_special_tokens=True,
                                    clean_up_tokenization_spaces=False)
            rows = tokenizer.batch_decode([[anchor, i] for i in range(size)],
                                          skip_special_tokens=True,
                                          clean_up_tokenization_spaces=False)
        else:
            head = ""
            rows = tokenizer.batch_decode([[i] for i in range(size)], skip_special_tokens=True,
                                          clean_up_tokenization_spaces=False)
        texts: list[str | None] = []
        for index, row in enumerate(rows):
            text = row[len(head):] if row.startswith(head) else None
            if index in specials or not text or "\ufffd" in text:
                text = None
            texts.append(text)
        tokenizer._aieng_token_texts = texts
        return texts


class Heads:
    """The vocabulary grouped by the first character of each token's text: a token whose
    first character the automaton refuses is refused whole, so one check per distinct
    first character (452 for SmolLM2's 49,152 ids) rules most of the vocabulary out.

    :param texts: :func:`token_texts` of a tokenizer.
    """

    def __init__(self, texts: Sequence[str | None]) -> None:
        chars: dict[str, int] = {}
        index = [chars.setdefault(t[0], len(chars)) if t else -1 for t in texts]
        #: The distinct first characters.
        self.chars = list(chars)
        #: Per id, the index of its first character in :attr:`chars` (-1: no text).
        self.index = torch.tensor(index, dtype=torch.long)


def token_heads(tokenizer: Any) -> Heads:
    """:class:`Heads` of the tokenizer's :func:`token_texts`, computed once (cached on it)."""
    cached = getattr(tokenizer, "_aieng_token_heads", None)
    if cached is None:
        cached = Heads(token_texts(tokenizer))
        tokenizer._aieng_token_heads = cached
    return cached


def marked_texts(tokenizer: Any, marks: Mapping[int, str]) -> tuple[list[str | None], Heads]:
    """:func:`token_texts` with the special tokens of ``marks`` (Mistral's marker tokens'
    ids) read as the characters it gives them (:data:`~._toolcalls.MARKS`) and no other
    token holding one of those characters, and its :class:`Heads`; computed once per
    ``marks`` (cached on the tokenizer)."""
    cached: dict[tuple[tuple[int, str], ...], tuple[list[str | None], Heads]] | None = \
        getattr(tokenizer, "_aieng_marked_texts", None)
    if cached is None:
        cached = {}
        tokenizer._aieng_marked_texts = cached
    key = tuple(sorted(marks.items()))
    found = cached.get(key)
    if found is None:
        reserved = set(MARKS.values())
        texts = [None if t is not None and reserved.intersection(t) else t
                 for t in token_texts(tokenizer)]
        for token, mark in marks.items():
            texts[token] = mark
        found = cached[key] = (texts, Heads(texts))
    return found


def _favourites(scores: torch.Tensor, count: int) -> list[int]:
    """The first ``count`` ids of ``scores`` ranked best first, ties by id — what a stable
    descending sort of the whole row starts with — from a top-k (a full sort of a 49k
    vocabulary costs ~3.6 ms, this ~0.2): every id scoring at least the ``count``-th best
    score, ties included, sorted stably."""
    count = min(count, scores.shape[-1])
    if count == 0:
        return []
    floor = torch.topk(scores, count).values[-1]
    near = torch.nonzero(scores >= floor).flatten()  # ascending ids: stable ties
    order = torch.argsort(scores[near], descending=True, stable=True)
    return [int(t) for t in near[order][:count].tolist()]


#: Candidates ranked by a top-k before the whole row is sorted (sampling mostly collects
#: what it needs among the first ones).
_FIRST_RANKS = 64


def _best_first(ids: torch.Tensor, scores: torch.Tensor,
                chances: torch.Tensor | None) -> Iterator[tuple[int, float]]:
    """``ids`` (ascending) with their probability (0 without ``chances``), best score
    first, ties by id — a stable descending sort — from a top-k of the first
    :data:`_FIRST_RANKS`, then from a sort of the rest when more are asked for."""
    first = _favourites(scores, _FIRST_RANKS)
    head = torch.tensor(first, dtype=torch.long)
    yield from zip(ids[head].tolist(), [0.0] * len(first) if chances is None
                   else chances[head].tolist(), strict=True)
    if len(first) < len(ids):
        rest = torch.argsort(scores, descending=True, stable=True)[len(first):]
        yield from zip(ids[rest].tolist(), [0.0] * len(rest) if chances is None
                       else chances[rest].tolist(), strict=True)


class Guide:
    """One request's constrained choice of tokens (see the module docstring).

    :param constraint: the automaton.
    :param texts: :func:`token_texts` of the tokenizer.
    :param stop_ids: end-of-sequence ids, allowed only where the text is whole.
    :param heads: :func:`token_heads` of the tokenizer (computed from ``texts`` if not
        given).
    """

    def __init__(self, constraint: Constraint, texts: Sequence[str | None],
                 stop_ids: frozenset[int], heads: Heads | None = None) -> None:
        self.constraint = constraint
        self.state: Any = constraint.start()
        self._texts = texts
        self._stops = stop_ids
        self._heads = heads if heads is not None else Heads(texts)
        self._memo: dict[tuple[Any, int], Any] = {}
        self._masks: dict[tuple[Any, int], torch.Tensor] = {}
        #: Candidates tested so far (for measurements).
        self.checks = 0
        #: Whether the token budget was already missed (a token past it was taken): from
        #: then on the text is only kept valid, without looking for tokens within it.
        self.over_budget = False

    def _candidates(self, size: int) -> torch.Tensor:
        """Per id of a ``size``-long logits row: whether the token may continue the text
        from this state, as far as its first character (or being a stop id) tells."""
        key = (self.state, size)
        mask = self._masks.get(key)
        if mask is None:
            heads = self._heads
            firsts = torch.tensor([self.constraint.feed(self.state, c) is not None
                                   for c in heads.chars] + [False])
            index = heads.index
            if size > len(index):  # ids past the tokenizer's texts: none
                index = torch.cat([index, index.new_full((size - len(index),), -1)])
            mask = firsts[index[:size]]
            stops = [i for i in self._stops if i < size]
            if stops:
                mask[torch.tensor(stops)] = True
            if len(self._masks) >= _MASK_LIMIT:
                self._masks.clear()
            self._masks[key] = mask
        return mask

    @property
    def complete(self) -> bool:
        """Whether the text is whole and nothing may follow it."""
        return self.constraint.complete(self.state)

    def _next(self, token: int) -> Any | None:
        key = (self.state, token)
        if key in self._memo:
            return self._memo[key]
        self.checks += 1
        text = self._texts[token] if token < len(self._texts) else None
        after = None if text is None else self.constraint.feed(self.state, text)
        if len(self._memo) > _MEMO_LIMIT:
            self._memo.clear()
        self._memo[key] = after
        return after

    def _allowed(self, token: int, left: int) -> tuple[bool, bool]:
        """(allowed, allowed if the token budget were ignored)."""
        if token in self._stops:
            ok = self.constraint.accepting(self.state)
            return ok, ok
        after = self._next(token)
        if after is None:
            return False, False
        return self.over_budget or self.constraint.min_chars(after) <= left, True

    def choose(self, logits: torch.Tensor, *, temperature: float, top_k: int | None,
               top_p: float, generator: torch.Generator | None, left: int) -> int:
        """The next token among the allowed ones.

        :param left: tokens that may follow this one (``max_tokens`` minus those generated,
            this one included).
        :raises ValueError: when no token of the vocabulary continues the text.
        """
        # None: greedy (a temperature of 0, or one so close to 0 that it overflows)
        sampled = None if temperature <= 0.0 or generator is None \
            else tempered(logits, temperature)
        greedy = sampled is None
        scores = logits if sampled is None else sampled
        if greedy:  # the model's favourites first: usually one of them is allowed
            for token in _favourites(scores, _FIRST_TRIES):
                if self._allowed(token, left)[0]:
                    return int(token)
        # the candidates (tokens the first character does not refuse), best first
        ids = torch.nonzero(self._candidates(scores.shape[-1])).flatten()
        probabilities = None if greedy else torch.softmax(scores, dim=-1)
        chances = None if probabilities is None else probabilities[ids]
        fallback: int | None = None
        picked: list[int] = []
        # ``tested`` counts down from the candidates' probability, not from 1: tokens
        # refused by their first character could never be collected
        mass = 0.0
        tested = 0.0 if chances is None else 1.0 - float(chances.double().sum())
        p = 0.0
        for token, chance in _best_first(ids, scores[ids], chances):
            ok, loose = self._allowed(token, left)
            if not greedy:
                p = chance
                tested += p
            if not ok:
                if loose and fallback is None:
                    fallback = token
                continue
            if greedy:
                return int(token)
            picked.append(token)
            mass += p
            rest = 1.0 - tested
            if len(picked) >= (top_k if top_k is not None else _MAX_CANDIDATES):
                break
            if mass >= top_p * (mass + rest) or rest <= _TAIL * mass:
                break
        if not picked:
            if fallback is None:
                raise ValueError(
                    "no token of the vocabulary continues the constrained text with a "
                    "character the constraint allows next (a character this tokenizer "
                    "spells only across several byte tokens cannot be written under a "
                    "constraint)")
            # The budget cannot be met: keep the text valid anyway, and stop searching the
            # whole vocabulary for a token within it at every step that follows.
            self.over_budget = True
            return int(fallback)
        # Renormalized from the picked tokens' scores, not their probabilities: at a low
        # temperature, with the model's favourites refused, every allowed token's
        # probability can underflow to 0 (0 / 0 made the draw fail).
        weights = torch.softmax(scores[torch.tensor(picked)], dim=-1)
        if top_p < 1.0:
            keep = int((weights.cumsum(0) < top_p).sum()) + 1
            weights = weights[:keep] / weights[:keep].sum()
        return picked[int(torch.multinomial(weights, 1, generator=generator).item())]

    def advance(self, token: int) -> None:
        """Move the automaton past a chosen (non end-of-sequence) token."""
        after = self._next(token)
        if after is None:
            raise ValueError(f"token {token} does not continue the constrained text")
        self.state = after
