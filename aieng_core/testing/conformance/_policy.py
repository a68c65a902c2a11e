"""The conformance suite of the ``agent`` role: agent policies."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import pytest
from hypothesis import given

from aieng_hookspecs.types import AgentAction, AgentState, Message, ToolCall, ToolSpec

from ...kernel import Kernel
from ...pipeline import Pipeline
from .. import strategies as aist
from .._kit import EventCapture
from ..doubles import ScriptedBackend
from ..reference import EchoTool
from ._base import PROPERTY, STAGE, SUBJECT, RoleSuite, check_valid, left_unchanged

__all__ = ["DEFAULT_TOOLS", "AgentPolicySuite", "default_agent_states"]

#: The tools of the suite's default states.
DEFAULT_TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec("add", "Add numbers.", {
        "type": "object", "properties": {"numbers": {"type": "array",
                                                     "items": {"type": "number"}}},
        "required": ["numbers"]}),
    ToolSpec("search", "Search the web.", {
        "type": "object", "properties": {"query": {"type": "string"}},
        "required": ["query"]}),
)


def default_agent_states() -> list[AgentState]:
    """States from a first step to the last one: with and without tools, a transcript of
    earlier calls and results, Unicode, a long and an empty message, one-step budgets."""
    call = ToolCall(id="call-1", name="add", arguments={"numbers": [2, 3]})
    transcript = (
        Message("system", "Be brief."),
        Message("user", "What is 2 + 3, and who won?"),
        Message("assistant", "I add first.", tool_calls=(call,)),
        Message("tool", "5", tool_call_id="call-1"),
    )
    return [
        AgentState(messages=(Message("user", "What is 2 + 3?"),), tools=DEFAULT_TOOLS),
        AgentState(messages=(Message("system", "Be brief."), Message("user", "Say hello.")),
                   tools=()),
        AgentState(messages=transcript, step=1, max_steps=5, cost=0.01, tools=DEFAULT_TOOLS),
        AgentState(messages=transcript, step=4, max_steps=5, tools=DEFAULT_TOOLS),
        AgentState(messages=(Message("user", "Add 1 and 2."),), step=0, max_steps=1,
                   tools=DEFAULT_TOOLS[:1]),
        AgentState(messages=(Message("user", "Wie spät ist es in 東京? 🙂"),),
                   tools=DEFAULT_TOOLS[1:]),
        AgentState(messages=(Message("user", "Summarize: " + "word " * 5000),),
                   tools=DEFAULT_TOOLS),
        AgentState(messages=(Message("user", ""),), tools=()),
    ]


def _decision(action: AgentAction | None) -> object:
    """An action as compared for determinism: call ids left out (the runner makes them
    unique; a fresh id per call is fine)."""
    if action is None:
        return None
    return (action.kind, action.text,
            [(call.name, json.dumps(call.arguments, sort_keys=True))
             for call in action.tool_calls])


class AgentPolicySuite(RoleSuite):
    """Conformance of an agent policy (``aieng_agent_step``).

    Subclass it with a ``component`` fixture returning the policy::

        class TestMyPolicy(AgentPolicySuite):
            @pytest.fixture
            def component(self) -> MyPolicy:
                return MyPolicy()

    A step answers ``None`` ("no opinion") or a valid :class:`AgentAction`: a
    ``tool_calls`` action carries at least one call, each naming a tool of
    ``state.tools`` (so a state without tools never gets one) with a JSON object of
    arguments; an ``answer`` or ``stop`` carries none. Every state is handled, the last
    step's (``step == max_steps - 1``) included, and is left as it was given.

    Fixtures it may override: ``agent_states`` (the states every test steps, besides the
    generated ones: :func:`default_agent_states`); ``companions`` (the other components of
    the suite's pipelines, by name: by default a backend double, ``llm``, answering
    ``"done"`` to every request, for a policy that generates through ``context.generate``;
    give one that answers as a function of the request, so that two pipelines get the
    same answers); ``policy_factory`` and ``policy_seed`` (below).

    **Determinism.** A policy that decides alike given a seed gets a ``policy_factory``
    fixture, a function of a seed (``policy_seed``, 1234 by default) returning a fresh
    policy: two policies built from one seed must decide alike, state after state (call
    ids aside). A policy declaring ``deterministic = True`` (as a greedy one may) must
    decide one state alike when asked twice. Neither: the test skips.
    """

    role = "agent"
    required_hooks = ("aieng_agent_step",)
    role_hooks = ("aieng_agent_step",)

    # -- fixtures ------------------------------------------------------------------------

    @pytest.fixture
    def agent_states(self) -> Sequence[AgentState]:
        """The states every test steps (:func:`default_agent_states`)."""
        return default_agent_states()

    @pytest.fixture
    def companions(self) -> Mapping[str, object]:
        """The other components of the suite's pipelines: a backend double (holding its
        latest requests only: the steady-state check measures the policy, not it)."""
        return {"llm": ScriptedBackend(lambda request: "done", keep=8)}

    @pytest.fixture
    def policy_seed(self) -> int:
        """The seed ``policy_factory`` is given."""
        return 1234

    @pytest.fixture
    def policy_factory(self) -> Callable[[int], object] | None:
        """A function of a seed returning a fresh policy (``None``: not seeded)."""
        return None

    @pytest.fixture
    async def conformance_pipeline(self, aieng_kernel: Kernel, component: object,
                                   companions: Mapping[str, object]) -> Pipeline:
        """A pipeline of the kit's kernel holding the policy (``subject``) and its
        ``companions``."""
        return self.compose(aieng_kernel, component, others=companions)

    # -- calling the hook through the kernel --------------------------------------------

    async def step(self, pipeline: Pipeline, state: AgentState) -> Any:
        """``aieng_agent_step`` through the dispatcher; ``None`` when the policy has no
        opinion (failing when the impl changes the state in place). The pipeline is opened
        first: a policy generates through the context its opening gives it."""
        await pipeline.open()
        found = await left_unchanged(
            pipeline.dispatcher.first("aieng_agent_step", {"state": state}, stage=STAGE),
            "aieng_agent_step", state=state)
        return None if found is None else found[0]

    async def exercise(self, pipeline: Pipeline, request: pytest.FixtureRequest) -> None:
        """Open the pipeline and step each of the ``agent_states``."""
        await pipeline.open()
        for state in request.getfixturevalue("agent_states"):
            await self.step(pipeline, state)

    async def steady_call(self, pipeline: Pipeline, i: int) -> None:
        """A step of a first state of its own (a question made of ``i``, the default
        tools)."""
        await self.step(pipeline, AgentState(
            messages=(Message("user", f"What is {i} + {i}?"),), tools=DEFAULT_TOOLS))

    # -- checks --------------------------------------------------------------------------

    def check_action(self, action: object, state: AgentState) -> AgentAction | None:
        """``None``, or a valid action for ``state``: tool calls only of its tools, each
        with a JSON object of arguments; an answer or a stop without calls."""
        if action is None:  # "no opinion"
            return None
        assert isinstance(action, AgentAction), (
            f"aieng_agent_step returned {type(action).__name__}, expected AgentAction")
        check_valid(action, "the action")
        tools = [spec.name for spec in state.tools]
        if action.kind != "tool_calls":
            assert not action.tool_calls, (
                f"the {action.kind!r} action carries tool calls, which the runner never runs: "
                "return a 'tool_calls' action to call tools")
            return action
        assert action.tool_calls, "a 'tool_calls' action carries no call"
        for call in action.tool_calls:
            assert call.name in tools, (
                f"the action calls {call.name!r}, which the state does not offer (its tools: "
                f"{tools or 'none'}): call only tools of state.tools")
            assert isinstance(call.arguments, dict) and all(
                isinstance(key, str) for key in call.arguments), (
                f"the arguments of {call.name!r} are no JSON object: {call.arguments!r:.200}")
            try:
                json.dumps(call.arguments, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise AssertionError(f"the arguments of {call.name!r} are no JSON: {exc}"
                                     ) from None
        return action

    # -- tests ---------------------------------------------------------------------------

    async def test_steps_the_states(
        self, conformance_pipeline: Pipeline, agent_states: Sequence[AgentState]
    ) -> None:
        """Each of the fixture's states gets None or a valid action for it."""
        for state in agent_states:
            self.check_action(await self.step(conformance_pipeline, state), state)

    async def test_no_tools_no_tool_calls(
        self, conformance_pipeline: Pipeline, agent_states: Sequence[AgentState]
    ) -> None:
        """A state offering no tool never gets tool calls, whatever the conversation
        (earlier calls in the transcript included)."""
        for state in [attrs.evolve(s, tools=()) for s in agent_states]:
            action = await self.step(conformance_pipeline, state)
            kind = getattr(action, "kind", None)
            assert kind != "tool_calls", (
                f"a state without tools got tool calls: {getattr(action, 'tool_calls', ())!r:.200}")
            self.check_action(action, state)

    async def test_the_last_step_is_handled(
        self, conformance_pipeline: Pipeline, agent_states: Sequence[AgentState]
    ) -> None:
        """At the last step the budget allows (``step == max_steps - 1``, a one-step budget
        included) the policy still answers None or a valid action."""
        for state in agent_states:
            for max_steps in (1, state.max_steps):
                last = attrs.evolve(state, step=max_steps - 1, max_steps=max_steps)
                self.check_action(await self.step(conformance_pipeline, last), last)

    @PROPERTY
    @given(state=aist.agent_states())
    async def test_any_state_gets_a_valid_action(
        self, conformance_pipeline: Pipeline, state: AgentState
    ) -> None:
        """Any state the runner may give (any conversation and tools, any step before the
        budget's end) gets None or a valid action for it."""
        state = attrs.evolve(state, step=min(state.step, state.max_steps - 1))
        self.check_action(await self.step(conformance_pipeline, state), state)

    async def test_deterministic_policies_repeat(
        self, aieng_kernel: Kernel, component: object, conformance_pipeline: Pipeline,
        companions: Mapping[str, object], agent_states: Sequence[AgentState],
        policy_factory: Callable[[int], object] | None, policy_seed: int,
    ) -> None:
        """Two policies of one seed decide alike, state after state; a policy declaring
        ``deterministic = True`` decides one state alike twice (call ids aside)."""
        declared = getattr(component, "deterministic", False) is True
        if policy_factory is None and not declared:
            pytest.skip("the policy gives no policy_factory and does not declare "
                        "deterministic = True")
        if declared:
            for state in agent_states:
                first = await self.step(conformance_pipeline, state)
                again = await self.step(conformance_pipeline, state)
                assert _decision(first) == _decision(again), (
                    f"a deterministic policy decided {_decision(first)!r:.200}, then "
                    f"{_decision(again)!r:.200} for the same state")
        if policy_factory is not None:
            decided = []
            for number in range(2):
                policy = policy_factory(policy_seed)
                async with aieng_kernel.compose({SUBJECT: policy, **companions},
                                                name=f"conformance-seeded-{number}") as pipe:
                    decided.append([_decision(await self.step(pipe, state))
                                    for state in agent_states])
            for state, first, again in zip(agent_states, *decided, strict=True):
                assert first == again, (
                    f"two policies of seed {policy_seed} decided {first!r:.200} and "
                    f"{again!r:.200} for the state at step {state.step}")

    async def test_decides_in_an_agent_run(
        self, aieng_kernel: Kernel, component: object, companions: Mapping[str, object]
    ) -> None:
        """Run by the agent runner with a tool, the policy's steps are valid actions and
        the run ends with one of the runner's statuses."""
        from ...agent import STATUSES, Agent, AgentOptions  # the runner imports the kit

        pipeline = self.compose(aieng_kernel, component,
                                others={**companions, "conformance_echo": EchoTool()})
        async with pipeline:
            result = await Agent(pipeline, AgentOptions(max_steps=3)).run(
                "Echo the word hello, then answer.")
        assert result.status in STATUSES
        tools = (EchoTool.spec,)
        for step in result.steps:
            if step.source == SUBJECT:
                self.check_action(step.action, AgentState(messages=(), tools=tools))

    async def test_does_not_block_the_loop(
        self, conformance_pipeline: Pipeline, captured_events: EventCapture,
        agent_states: Sequence[AgentState],
    ) -> None:
        """Deciding never stalls the event loop."""
        async with self.loop_watch(captured_events):
            for state in agent_states:
                await self.step(conformance_pipeline, state)
