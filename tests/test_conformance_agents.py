"""The memory and agent-policy conformance suites: small correct components pass them,
broken ones fail them, each on the check it breaks."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import (
    AgentAction,
    AgentState,
    MemoryItem,
    Message,
    Query,
    ToolCall,
    unchecked,
)

from aieng_core.dispatch import HookError
from aieng_core.kernel import Kernel
from aieng_core.testing.conformance import (
    DEFAULT_FACTS,
    DEFAULT_TOOLS,
    AgentPolicySuite,
    MemorySuite,
    default_agent_states,
)
from aieng_core.testing.conformance._resources import snapshot

pytestmark = pytest.mark.anyio

_WORD = re.compile(r"\w+")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.casefold()))


# ---------------------------------------------------------------------------- passing


class WordMemory:
    """A correct memory: one entry per text, scored by the share of query words held."""

    def __init__(self) -> None:
        self.items: dict[str, MemoryItem] = {}

    @hookimpl
    def aieng_memory_store(self, items: Sequence[MemoryItem]) -> None:
        for item in items:
            self.items.pop(item.text, None)
            self.items[item.text] = item

    @hookimpl
    def aieng_memory_recall(self, query: Query, k: int) -> list[MemoryItem] | None:
        wanted = _words(query.text)
        if not wanted:
            return None
        scored = [MemoryItem(text, item.kind, len(wanted & _words(text)) / len(wanted))
                  for text, item in reversed(self.items.items()) if wanted & _words(text)]
        return sorted(scored, key=lambda item: -item.score)[:k]


class TestWordMemory(MemorySuite):
    """The suite passes a correct memory, its steady-state check included (recalls from
    the facts the suite stored)."""

    steady_calls = 500

    @pytest.fixture
    def component(self) -> WordMemory:
        return WordMemory()


class LookUpPolicy:
    """A correct policy: calls the first tool offered, then answers with its result."""

    deterministic = True

    @hookimpl
    def aieng_agent_step(self, state: AgentState) -> AgentAction | None:
        if state.messages and state.messages[-1].role == "tool":
            return AgentAction("answer", text=state.messages[-1].content)
        if not state.tools:
            return None
        return AgentAction("tool_calls", tool_calls=(
            ToolCall(id=f"call-{state.step}", name=state.tools[0].name,
                     arguments={"asked": [m.content for m in state.messages[-1:]]}),))


class TestLookUpPolicy(AgentPolicySuite):
    """The suite passes a correct policy."""

    @pytest.fixture
    def component(self) -> LookUpPolicy:
        return LookUpPolicy()


# ---------------------------------------------------------------------------- memory


class TooMany(WordMemory):
    """Broken: returns one item more than ``k``."""

    @hookimpl
    def aieng_memory_recall(self, query: Query, k: int) -> list[MemoryItem] | None:
        return [MemoryItem(text) for text in self.items][: k + 1]


class WorstFirst(WordMemory):
    """Broken: the best item last."""

    @hookimpl
    def aieng_memory_recall(self, query: Query, k: int) -> list[MemoryItem] | None:
        return list(reversed(super().aieng_memory_recall(query, k) or []))


class NanScores(WordMemory):
    """Broken: scores built past the validators."""

    @hookimpl
    def aieng_memory_recall(self, query: Query, k: int) -> list[MemoryItem] | None:
        return [unchecked(MemoryItem, text=i.text, kind=i.kind, score=math.nan, metadata={})
                for i in super().aieng_memory_recall(query, k) or []]


@pytest.mark.parametrize(("broken", "message"), [
    (TooMany, "2 items for k=1"),
    (WorstFirst, "not best first"),
    (NanScores, "item 1 is no valid MemoryItem: score must be finite"),
])
async def test_memory_suite_catches_broken_recalls(aieng_kernel: Kernel, broken: type,
                                                   message: str) -> None:
    """More than ``k`` items, items worst first and invalid scores fail the recall check."""
    suite = MemorySuite()
    pipeline = suite.compose(aieng_kernel, broken())
    await suite.store(pipeline, [MemoryItem("a cat"), MemoryItem("a cat and a dog")])
    with pytest.raises(AssertionError, match=message):
        await suite.recalled(pipeline, "cat dog", 1 if broken is TooMany else 5)


class Forgetful(WordMemory):
    """Broken: stores nothing."""

    @hookimpl
    def aieng_memory_store(self, items: Sequence[MemoryItem]) -> None:
        return None


class ShortOnly(WordMemory):
    """Broken for the suite's default kind: keeps only short-term items."""

    @hookimpl
    def aieng_memory_store(self, items: Sequence[MemoryItem]) -> None:
        super().aieng_memory_store([item for item in items if item.kind == "short"])


class FirstComeFirst(WordMemory):
    """Broken: recalls in storage order, whatever the relevance."""

    @hookimpl
    def aieng_memory_recall(self, query: Query, k: int) -> list[MemoryItem] | None:
        wanted = _words(query.text)
        return [MemoryItem(t) for t in self.items if wanted & _words(t)][:k]


@pytest.mark.parametrize(("broken", "message"), [
    (Forgetful, "nothing recalled for 'cat Miso'"),
    (ShortOnly, "nothing recalled"),
])
async def test_memory_suite_catches_a_memory_that_does_not_recall(
        aieng_kernel: Kernel, broken: type, message: str) -> None:
    """A memory that keeps nothing, or not the suite's kind, or ranks by age fails."""
    suite = MemorySuite()
    pipeline = suite.compose(aieng_kernel, broken())
    with pytest.raises(AssertionError, match=message):
        await suite.test_recalls_what_was_stored(pipeline, DEFAULT_FACTS, "long")


async def test_memory_suite_catches_a_memory_ranking_by_age(aieng_kernel: Kernel) -> None:
    """A memory recalling in storage order, whatever the relevance, fails."""
    suite = MemorySuite()
    with pytest.raises(AssertionError, match="recalled 'zq.* another note 0' first"):
        await suite.test_the_best_match_comes_first(
            suite.compose(aieng_kernel, FirstComeFirst()), "long")


async def test_a_short_term_memory_passes_with_its_kind(aieng_kernel: Kernel) -> None:
    """The ``stored_kind`` fixture lets a short-term memory pass the same check."""
    suite = MemorySuite()
    pipeline = suite.compose(aieng_kernel, ShortOnly())
    await suite.test_recalls_what_was_stored(pipeline, DEFAULT_FACTS, "short")


class Remembers(WordMemory):
    """Broken: recalls a canned item from an empty memory."""

    @hookimpl
    def aieng_memory_recall(self, query: Query, k: int) -> list[MemoryItem] | None:
        return [MemoryItem("I remember everything", score=1.0)]


async def test_memory_suite_catches_recall_from_an_empty_memory(aieng_kernel: Kernel) -> None:
    """An empty memory that recalls something fails."""
    suite = MemorySuite()
    with pytest.raises(AssertionError, match="an empty memory recalled 'I remember"):
        await suite.test_an_empty_memory_recalls_nothing(
            suite.compose(aieng_kernel, Remembers()), DEFAULT_FACTS)


class EveryOccurrence(WordMemory):
    """Keeps a text each time it is stored (a conversation buffer)."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[MemoryItem] = []

    @hookimpl
    def aieng_memory_store(self, items: Sequence[MemoryItem]) -> None:
        self.log.extend(items)

    @hookimpl
    def aieng_memory_recall(self, query: Query, k: int) -> list[MemoryItem] | None:
        wanted = _words(query.text)
        return [MemoryItem(i.text, score=1.0) for i in self.log if wanted & _words(i.text)][:k]


async def test_memory_suite_catches_duplicates_unless_told(aieng_kernel: Kernel) -> None:
    """A text stored twice and recalled three times fails, unless the subclass sets
    ``distinct_texts = False``."""
    suite = MemorySuite()
    pipeline = suite.compose(aieng_kernel, EveryOccurrence())
    with pytest.raises(AssertionError, match="recalled 3 times in one answer"):
        await suite.test_storing_a_text_twice(pipeline, "long")

    class Buffer(MemorySuite):
        distinct_texts = False

    buffer = Buffer()
    await buffer.test_storing_a_text_twice(buffer.compose(aieng_kernel, EveryOccurrence()),
                                           "long")


class Racy(WordMemory):
    """Broken: a store reads the items, awaits, then writes back what it read plus its own
    (concurrent stores overwrite each other)."""

    @hookimpl
    async def aieng_memory_store(self, items: Sequence[MemoryItem]) -> None:
        kept = dict(self.items)
        await anyio.sleep(0.001)
        kept.update({item.text: item for item in items})
        self.items = kept


async def test_memory_suite_catches_lost_concurrent_stores(aieng_kernel: Kernel) -> None:
    """A memory whose concurrent stores overwrite each other fails."""
    suite = MemorySuite()
    with pytest.raises(AssertionError, match="nothing recalled for 'zq"):
        await suite.test_concurrent_stores_lose_nothing(
            suite.compose(aieng_kernel, Racy()), "long")


class Annotates(WordMemory):
    """Broken: writes into the metadata of the items it is given."""

    @hookimpl
    def aieng_memory_store(self, items: Sequence[MemoryItem]) -> None:
        for item in items:
            item.metadata["stored"] = True
        super().aieng_memory_store(items)


async def test_memory_suite_catches_items_changed_in_place(aieng_kernel: Kernel) -> None:
    """A memory that annotates the caller's items in place fails."""
    suite = MemorySuite()
    with pytest.raises(AssertionError, match=r"changed its argument in place: items\[0\]"):
        await suite.store(suite.compose(aieng_kernel, Annotates()), [MemoryItem("x")])


class LeaksAFile(WordMemory):
    """Broken: opens a journal file on the first store and never closes it."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.journal: Any = None

    @hookimpl
    def aieng_memory_store(self, items: Sequence[MemoryItem]) -> None:
        if self.journal is None:
            self.journal = self.path.open("a", encoding="utf-8")
        super().aieng_memory_store(items)


class Fixtures:
    """What the suite's ``exercise`` asks of a fixture request, outside a suite class."""

    def __init__(self, **values: object) -> None:
        self.values = values

    def getfixturevalue(self, name: str) -> object:
        return self.values[name]


class QuickRelease(MemorySuite):
    """The memory suite, waiting a tenth of a second for what a component holds to end."""

    release_grace = 0.1


async def test_memory_suite_catches_a_file_left_open(aieng_kernel: Kernel,
                                                     tmp_path: Path) -> None:
    """A memory holding a file after its pipeline closed fails the release check (its
    ``exercise`` stores, so what opens on the first store is opened)."""
    suite = QuickRelease()
    before = snapshot()
    memory = LeaksAFile(tmp_path / "journal.txt")
    request: Any = Fixtures(stored_kind="long", memory_facts=DEFAULT_FACTS)
    try:
        with pytest.raises(AssertionError, match=r"journal\.txt"):
            await suite.test_releases_what_it_opened(before, memory,
                                                     suite.compose(aieng_kernel, memory),
                                                     request)
    finally:
        memory.journal.close()
    assert memory.items, "the suite's exercise stored nothing"


# ---------------------------------------------------------------------------- policies


class CallsAnyway(LookUpPolicy):
    """Broken: calls ``search`` whether the state offers it or not."""

    @hookimpl
    def aieng_agent_step(self, state: AgentState) -> AgentAction | None:
        return AgentAction("tool_calls", tool_calls=(ToolCall(id="c", name="search"),))


class NanArguments(LookUpPolicy):
    """Broken: arguments that are no JSON (a NaN, as ``json.loads("NaN")`` gives)."""

    @hookimpl
    def aieng_agent_step(self, state: AgentState) -> AgentAction | None:
        names = [spec.name for spec in state.tools]
        if not names:
            return None
        return AgentAction("tool_calls", tool_calls=(
            ToolCall(id="c", name=names[0], arguments={"x": math.nan}),))


class AnswersWithCalls(LookUpPolicy):
    """Broken: an answer carrying tool calls the runner never runs."""

    @hookimpl
    def aieng_agent_step(self, state: AgentState) -> AgentAction | None:
        return AgentAction("answer", text="42", tool_calls=(
            ToolCall(id="c", name="add", arguments={}),))


class NoCalls(LookUpPolicy):
    """Broken: a ``tool_calls`` action without a call."""

    @hookimpl
    def aieng_agent_step(self, state: AgentState) -> AgentAction | None:
        return AgentAction("tool_calls")


class SaysSo(LookUpPolicy):
    """Broken: answers a plain string."""

    @hookimpl
    def aieng_agent_step(self, state: AgentState) -> Any:
        return "the answer is 42"


@pytest.mark.parametrize(("broken", "message"), [
    (CallsAnyway, "calls 'search', which the state does not offer"),
    (NanArguments, "the arguments of 'add' are no JSON: Out of range float"),
    (AnswersWithCalls, "the 'answer' action carries tool calls"),
    (NoCalls, "a 'tool_calls' action carries no call"),
    (SaysSo, "returned str, expected AgentAction"),
])
async def test_policy_suite_catches_invalid_actions(aieng_kernel: Kernel, broken: type,
                                                    message: str) -> None:
    """Calls of tools not offered, non-JSON arguments, an answer with calls, a
    ``tool_calls`` action without one, and something else than an action fail."""
    suite = AgentPolicySuite()
    pipeline = suite.compose(aieng_kernel, broken())
    with pytest.raises(AssertionError, match=message):
        await suite.test_steps_the_states(pipeline, default_agent_states())


async def test_policy_suite_catches_tool_calls_without_tools(aieng_kernel: Kernel) -> None:
    """A policy calling a tool of an earlier transcript in a state offering none fails."""
    suite = AgentPolicySuite()
    pipeline = suite.compose(aieng_kernel, CallsAnyway())
    with pytest.raises(AssertionError, match="a state without tools got tool calls"):
        await suite.test_no_tools_no_tool_calls(pipeline, default_agent_states())


class FailsAtTheEnd(LookUpPolicy):
    """Broken: raises at the last step of the budget."""

    @hookimpl
    def aieng_agent_step(self, state: AgentState) -> AgentAction | None:
        if state.step == state.max_steps - 1:
            raise IndexError("no step left to plan")
        return super().aieng_agent_step(state)


async def test_policy_suite_catches_a_failure_at_the_last_step(aieng_kernel: Kernel) -> None:
    """A policy raising at ``step == max_steps - 1`` fails, naming its error."""
    suite = AgentPolicySuite()
    states = [AgentState(messages=(Message("user", "hi"),), tools=DEFAULT_TOOLS)]
    await suite.test_steps_the_states(suite.compose(aieng_kernel, FailsAtTheEnd()), states)
    with pytest.raises(HookError, match="no step left to plan"):
        await suite.test_the_last_step_is_handled(
            suite.compose(aieng_kernel, FailsAtTheEnd()), states)


class EditsTheTranscript(LookUpPolicy):
    """Broken: rewrites the arguments of an earlier call in place."""

    @hookimpl
    def aieng_agent_step(self, state: AgentState) -> AgentAction | None:
        for message in state.messages:
            for call in message.tool_calls:
                call.arguments.clear()
        return super().aieng_agent_step(state)


async def test_policy_suite_catches_a_state_changed_in_place(aieng_kernel: Kernel) -> None:
    """A policy emptying the arguments of the transcript's calls fails."""
    suite = AgentPolicySuite()
    with pytest.raises(AssertionError, match=r"changed its argument in place: state\.messages"):
        await suite.test_steps_the_states(suite.compose(aieng_kernel, EditsTheTranscript()),
                                          default_agent_states())


class Dice:
    """Broken when it claims determinism: answers a random number."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng if rng is not None else random.Random()

    @hookimpl
    def aieng_agent_step(self, state: AgentState) -> AgentAction | None:
        return AgentAction("answer", text=str(self.rng.random()))


async def test_policy_suite_catches_false_determinism(aieng_kernel: Kernel) -> None:
    """A policy declaring ``deterministic = True`` that answers at random fails; so does a
    seeded factory ignoring its seed; a factory honouring it passes (a seeded policy
    asked twice may differ: its generator moved on)."""
    suite, states = AgentPolicySuite(), default_agent_states()[:2]
    liar = Dice()
    liar.deterministic = True  # type: ignore[attr-defined]
    with pytest.raises(AssertionError, match="a deterministic policy decided"):
        await suite.test_deterministic_policies_repeat(
            aieng_kernel, liar, suite.compose(aieng_kernel, liar), {}, states, None, 7)
    honest = Dice(random.Random(7))
    await suite.test_deterministic_policies_repeat(
        aieng_kernel, honest, suite.compose(aieng_kernel, honest), {}, states,
        lambda seed: Dice(random.Random(seed)), 7)
    with pytest.raises(AssertionError, match="two policies of seed 7 decided"):
        await suite.test_deterministic_policies_repeat(
            aieng_kernel, honest, suite.compose(aieng_kernel, honest), {}, states,
            lambda seed: Dice(), 7)
