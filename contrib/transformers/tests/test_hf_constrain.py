"""Constrained decoding through a model: JSON against a schema and regex, enforced while
decoding (the automata alone: test_hf_jsonschema, test_hf_jsonmodels, test_hf_regexfsm)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
import regex
from _constraints import ALPHABET, PERSON, SCHEMAS, validate
from _tiny import CHAIN_TEXT
from aieng_hookspecs.types import Completion, Message, Request
from aieng_transformers import SmolLM2Backend
from aieng_transformers._jsonschema import JsonMachine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.anyio


def ask(**params: Any) -> Request:
    return Request(messages=(Message("user", "hi"),), **params)


async def generate(backend: SmolLM2Backend, request: Request) -> Completion:
    completion = await backend.aieng_generate(request)
    assert completion is not None
    return completion


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=SCHEMAS, seed=st.integers(0, 2**16), temperature=st.sampled_from([0.0, 1.0]))
async def test_outputs_always_validate(random_backend: SmolLM2Backend, schema: dict[str, Any],
                                       seed: int, temperature: float) -> None:
    """Whatever the (small) schema, seed and temperature, the random model's output parses
    and validates: budget-aware decoding finishes the document within ``max_tokens``."""
    machine = JsonMachine(schema)
    budget = machine.min_chars(machine.start()) + 24
    completion = await generate(random_backend, ask(response_schema=schema, seed=seed,
                                                    temperature=temperature,
                                                    max_tokens=budget))
    validate(json.loads(completion.text), schema)
    assert completion.usage.completion_tokens <= budget


@pytest.mark.parametrize("temperature", [0.0, 1.0])
async def test_chain_model_is_steered_into_the_schema(chain_backend: SmolLM2Backend,
                                                      temperature: float) -> None:
    """The chain model, which wants to write ``CHAIN_TEXT``, writes schema-valid JSON instead;
    greedy and sampled alike, and a whole document ends generation at once."""
    for seed in range(3):
        completion = await generate(chain_backend, ask(response_schema=PERSON, max_tokens=60,
                                                       temperature=temperature, seed=seed))
        validate(json.loads(completion.text), PERSON)
        assert completion.finish_reason == "stop"


async def test_shortest_budget_still_completes(chain_backend: SmolLM2Backend) -> None:
    """With ``max_tokens`` equal to the shortest valid document, the output is that long and
    valid (each needed character is one byte token here)."""
    machine = JsonMachine(PERSON)
    shortest = machine.min_chars(machine.start())
    completion = await generate(chain_backend, ask(response_schema=PERSON,
                                                   max_tokens=shortest))
    assert len(completion.text) == shortest
    validate(json.loads(completion.text), PERSON)


@pytest.mark.parametrize("pattern", [r"[a-c]{2,4}-\d{2}", r"(yes|no)", r"x+y?z{0,3}",
                                     r"\d{3}-\d{4}"])
async def test_regex_outputs_fully_match(chain_backend: SmolLM2Backend, pattern: str) -> None:
    """Regex-constrained output fully matches the pattern, greedy and sampled."""
    for seed, temperature in ((0, 0.0), (1, 1.0), (2, 1.0)):
        completion = await generate(chain_backend, ask(metadata={"regex": pattern},
                                                       max_tokens=30, seed=seed,
                                                       temperature=temperature))
        assert regex.fullmatch(pattern, completion.text), completion.text


@pytest.mark.parametrize("constraint", [{"metadata": {"regex": r"\d{4}"}},
                                        {"response_schema": {"type": "integer"}}])
async def test_low_temperature_draws_among_the_allowed_tokens(chain_backend: SmolLM2Backend,
                                                              constraint: dict[str, Any]) -> None:
    """At a low temperature the allowed tokens' probabilities underflow to 0 when the model's
    favourites are refused (the chain model wants letters, the constraint digits): the draw
    renormalizes among the allowed ones and gives the greedy constrained text (regression:
    0 / 0 weights made ``torch.multinomial`` fail from T = 0.02 on the chain model, from
    T = 0.1 on SmolLM2 under a JSON schema); a temperature that overflows the logits
    decodes greedily."""
    greedy = await generate(chain_backend, ask(max_tokens=4, **constraint))
    for temperature in (1e-3, 1e-6, 1e-45):
        sampled = await generate(chain_backend, ask(max_tokens=4, temperature=temperature,
                                                    seed=0, **constraint))
        assert (sampled.text, sampled.finish_reason) == (greedy.text, greedy.finish_reason)


async def test_regex_that_agrees_with_the_model_changes_nothing(
        chain_backend: SmolLM2Backend) -> None:
    """A pattern the model's own greedy text already satisfies does not alter it, and the
    end-of-sequence token is taken where the pattern accepts."""
    completion = await generate(chain_backend, ask(metadata={"regex": r"abc-xyz:?"}))
    assert completion.text == "abc-xyz:"
    assert CHAIN_TEXT.startswith(completion.text)


async def test_regex_budget_and_end_are_exact(chain_backend: SmolLM2Backend) -> None:
    """A pattern of the automaton's subset knows the characters it still needs: with two
    tokens left the long alternative the model wants is refused at its first character
    (regression: the partial matcher counted one character still needed, let the model
    start ``abc-xyz:`` and ran out of tokens after ``ab``), and a match nothing may extend
    ends generation at once (finish ``stop``)."""
    pattern = "(abc-xyz:|q)"
    short = await generate(chain_backend, ask(metadata={"regex": pattern}, max_tokens=2))
    assert (short.text, short.finish_reason) == ("q", "stop")
    free = await generate(chain_backend, ask(metadata={"regex": pattern}, max_tokens=20))
    assert (free.text, free.finish_reason) == ("abc-xyz:", "stop")
    assert free.usage.completion_tokens == len("abc-xyz:")  # no end-of-sequence token needed


@pytest.mark.parametrize("pattern", [r"(?=\d)\w{3}", r"(a)\1b"])
async def test_regex_outside_the_subset_falls_back(chain_backend: SmolLM2Backend,
                                                    pattern: str) -> None:
    """Python-only syntax (a lookahead, a backreference) still constrains, through the
    ``regex`` package's partial matching."""
    completion = await generate(chain_backend, ask(metadata={"regex": pattern},
                                                   max_tokens=12))
    assert regex.fullmatch(pattern, completion.text), completion.text


@pytest.mark.parametrize(("request_params", "message"), [
    ({"response_schema": {"type": "string", "pattern": "(?=a)"}}, "pattern.*lookaround"),
    ({"response_schema": {"oneOf": [{"type": "object", "properties": {"a": {}}},
                                    {"properties": {}}]}},
     "discriminator"),
    ({"response_schema": {"oneOf": [{"type": "object", "additionalProperties": True},
                                    {"type": "array", "items": {}}, {"type": "object"}]}},
     "same character"),
    ({"response_schema": {"$defs": {"A": {"type": "object", "properties": {
        "a": {"$ref": "#/$defs/A"}}, "required": ["a"]}}, "$ref": "#/$defs/A"}},
     "no finite document"),
    ({"response_schema": {"type": "integer", "minimum": 5, "exclusiveMaximum": 5}}, "bounds"),
    ({"response_schema": {"type": "string", "minLength": 3, "maxLength": 2}}, "below"),
    ({"response_schema": {"type": "object", "properties": {"a": {}},
                          "minProperties": 1}}, "minProperties"),
    ({"response_schema": {"type": "object", "properties": {"a": {"type": "string"}},
                          "required": ["b"], "additionalProperties": False}},
     "no document is valid"),
    ({"response_schema": {"allOf": [{"type": "string"}, {"maxLength": 3}]}}, "allOf"),
    ({"metadata": {"regex": "("}}, "does not compile"),
    ({"metadata": {"regex": "a"}, "response_schema": {"type": "null"}}, "not both"),
])
async def test_unsupported_constraints_fail_before_generating(
        chain_backend: SmolLM2Backend, request_params: dict[str, Any], message: str) -> None:
    """A schema outside the subset, a bad regex, or both at once fail with a clear error
    before any token is generated."""
    with pytest.raises(ValueError, match=message):
        await generate(chain_backend, ask(**request_params))


@pytest.mark.parametrize("request_params", [
    {"response_schema": {"type": "string", "pattern": "^é+$"}},
    {"metadata": {"regex": "é"}},
    {"metadata": {"regex": "(?=.)[é✓]{2}"}},  # outside the subset: partial matching
])
async def test_a_character_only_byte_tokens_spell_fails_saying_so(
        chain_backend: SmolLM2Backend, request_params: dict[str, Any]) -> None:
    """The tiny model's vocabulary spells ``é`` only in byte tokens, each of which holds
    part of the character and is never chosen under a constraint: a constraint that needs
    it fails with an error that says why, not only that no token continues. (An ``enum``
    value with ``é`` is written with its ``\\u00e9`` escape instead.)"""
    with pytest.raises(ValueError, match="no token of the vocabulary continues.*byte tokens"):
        await generate(chain_backend, ask(max_tokens=20, **request_params))


@settings(max_examples=60, deadline=None)
@given(schema=SCHEMAS, seed=st.integers(0, 2**32 - 1),
       vocabulary=st.lists(st.text(st.characters(min_codepoint=32, max_codepoint=126),
                                   min_size=1, max_size=4), min_size=1, max_size=60))
def test_first_character_mask_drops_only_refused_tokens(schema: dict[str, Any], seed: int,
                                                        vocabulary: list[str]) -> None:
    """The candidate mask of a state (``Guide._candidates``) keeps exactly the tokens
    whose first character the automaton accepts there — every token it drops is refused
    whole — and the stop ids; ids past the vocabulary are dropped."""
    from aieng_transformers._constrain import Guide, JsonConstraint

    texts: list[str | None] = [*vocabulary, None]
    stop = len(texts) - 1
    constraint = JsonConstraint(schema)
    guide = Guide(constraint, texts, frozenset({stop}))
    rng = random.Random(seed)
    for _ in range(12):
        mask = guide._candidates(len(texts) + 2).tolist()
        assert mask[stop] and not mask[-1] and not mask[-2]
        for token, text in enumerate(vocabulary):
            whole = constraint.feed(guide.state, text) is not None
            head = constraint.feed(guide.state, text[0]) is not None
            assert mask[token] == head and (head or not whole), text
        options = [c for c in ALPHABET if constraint.feed(guide.state, c) is not None]
        if not options:
            break
        guide.state = constraint.feed(guide.state, rng.choice(options))


@settings(max_examples=200, deadline=None)
@given(scores=st.lists(st.sampled_from([-1.5, 0.0, 0.25, 2.0, 7.0, float("-inf")]) |
                       st.floats(-10, 10), min_size=1, max_size=40),
       count=st.integers(0, 12))
def test_greedy_favourites_are_a_stable_sorts_first(scores: list[float], count: int) -> None:
    """The few tokens greedy tests first come from a top-k, yet are exactly what a stable
    descending sort of the whole row starts with — ties (frequent here) by id."""
    import torch
    from aieng_transformers._constrain import _favourites

    row = torch.tensor(scores)
    expected = torch.argsort(row, descending=True, stable=True)[:count].tolist()
    assert _favourites(row, count) == expected


@settings(max_examples=100, deadline=None)
@given(scores=st.lists(st.sampled_from([-1.5, 0.0, 0.25, 2.0, 7.0]) | st.floats(-10, 10),
                       min_size=0, max_size=150),
       keep=st.integers(0, 2**150))
def test_candidates_come_in_the_order_of_a_stable_sort(scores: list[float], keep: int) -> None:
    """Sampling's candidates (the ids the first-character mask keeps) come best first with
    their probabilities — the first ones from a top-k, the rest from a sort when asked for
    — in exactly the order a stable descending sort of the whole row gives them."""
    import torch
    from aieng_transformers._constrain import _best_first

    row = torch.tensor(scores, dtype=torch.float32)
    mask = torch.tensor([bool(keep >> i & 1) for i in range(len(scores))], dtype=torch.bool)
    ids = torch.nonzero(mask).flatten()
    chances = torch.softmax(row, dim=-1) if scores else row
    ranked = torch.argsort(row, descending=True, stable=True)
    expected = [int(t) for t in ranked[mask[ranked]].tolist()]
    got = list(_best_first(ids, row[ids], chances[ids]))
    assert [t for t, _ in got] == expected
    assert [c for _, c in got] == [float(chances[t]) for t in expected]


def test_a_missed_budget_is_not_searched_again() -> None:
    """When no token keeps the text finishable within ``max_tokens`` (the budget was set
    too low for the schema), the best valid token is taken and, from then on, the text
    is only kept valid: later steps take the model's favourite valid token instead of
    checking the whole vocabulary for one within the budget again."""
    import torch
    from aieng_transformers._constrain import Guide, JsonConstraint

    texts: list[str | None] = [*"abcdefghij", '"', None]
    guide = Guide(JsonConstraint({"type": "string", "minLength": 8}), texts,
                  frozenset({len(texts) - 1}))
    logits = torch.arange(len(texts), dtype=torch.float32).flip(0)  # "a" first, then "b"…
    assert guide.choose(logits, temperature=0.0, top_k=None, top_p=1.0, generator=None,
                        left=50) == 10  # the opening quote: the only valid token
    guide.advance(10)
    before = guide.checks
    # 3 tokens left after this one, 9 characters still needed: no token is within budget
    assert guide.choose(logits, temperature=0.0, top_k=None, top_p=1.0, generator=None,
                        left=3) == 0
    # every letter checked (the quote is ruled out by its first character alone)
    assert guide.over_budget and guide.checks - before == len("abcdefghij")
    guide.advance(0)
    before = guide.checks
    assert guide.choose(logits, temperature=0.0, top_k=None, top_p=1.0, generator=None,
                        left=2) == 0
    assert guide.checks - before == 1  # the favourite, valid, is taken at once


def test_a_backtracking_regex_is_refused_not_hung() -> None:
    """A pattern outside the automaton's subset (a backreference) whose matching
    backtracks exponentially on the text (``(a|a)+\\1c`` against 40 ``a`` and a ``b``:
    ages) fails with a ``ValueError`` once its matching budget is spent. Run in a child
    process, whose timeout only turns a hang into a failure."""
    import subprocess
    import sys

    code = (
        "from aieng_transformers import _constrain as c\n"
        "c._REGEX_BUDGET_S = 0.2\n"
        "constraint = c.RegexConstraint(r'(a|a)+\\1c')\n"
        "try:\n"
        "    constraint.feed('a' * 40, 'b')\n"
        "except ValueError as exc:\n"
        "    print('refused:', exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.startswith("refused:"), done.stdout + done.stderr
    assert "metadata['regex']" in done.stdout and "backtrack" in done.stdout


def test_the_regex_budget_counts_matching_not_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The matching budget of a pattern outside the automaton's subset is the thread's
    CPU time: on a machine whose clocks move 11 s between two readings (a thread waiting
    for a core, a VM paused) an honest pattern keeps its budget, and each match may still
    take seconds (it was left 1 ms, then refused as backtracking on a busy machine)."""
    import itertools
    import time
    import types

    from aieng_transformers import _constrain

    jump = itertools.count()

    def jumping() -> float:  # a wall / monotonic clock 11 s further at each reading
        return 11.0 * next(jump)

    fake = types.SimpleNamespace(**{name: getattr(time, name) for name in dir(time)
                                    if not name.startswith("_")})
    fake.monotonic = fake.perf_counter = fake.time = jumping
    monkeypatch.setattr(_constrain, "time", fake)
    constraint = _constrain.RegexConstraint(r"(?=\d)\w{3}")
    timeouts: list[float] = []
    pattern = constraint._pattern

    class Spy:
        def fullmatch(self, text: str, **kwargs: Any) -> Any:
            timeouts.append(kwargs["timeout"])
            return pattern.fullmatch(text, **kwargs)

    constraint._pattern = Spy()
    state = constraint.start()
    for piece in "1ab":
        state = constraint.feed(state, piece)
        assert state is not None
    assert constraint.accepting(state)
    assert len(timeouts) == 4 and min(timeouts) > 9.0, timeouts
