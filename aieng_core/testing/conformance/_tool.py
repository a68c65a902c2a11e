"""The conformance suite of the ``tool`` role."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import anyio
import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aieng_hookspecs.types import ToolCall, ToolResult, ToolSpec

from ...pipeline import Pipeline
from .. import strategies as aist
from .._kit import EventCapture
from ._base import (
    PROPERTY,
    STAGE,
    RoleSuite,
    check_valid,
    left_unchanged,
    optional_fixture,
    unique,
)

__all__ = ["ToolSuite"]


class ToolSuite(RoleSuite):
    """Conformance of a tool component (``aieng_tools``, ``aieng_call_tool``).

    Subclass it with a ``component`` fixture returning the component, and (to run the
    tools) a ``tool_examples`` fixture mapping each listed tool's name to valid arguments::

        class TestMyTools(ToolSuite):
            @pytest.fixture
            def component(self) -> MyTools:
                return MyTools()

            @pytest.fixture
            def tool_examples(self) -> dict[str, dict[str, object]]:
                return {"search": {"query": "aieng"}}

    Each tool's ``parameters`` is an ``object`` JSON schema, and each example gives the
    arguments that schema requires; a call's arguments are left as they were given (they
    are the model's, in the agent's transcript); calls run at once each get the result of
    their own call id.

    The suite also calls every listed tool with arbitrary JSON arguments, as a confused
    model would: a tool must answer those with an error result, never an exception. Narrow
    that with the ``fuzz_tools`` fixture (the names to fuzz; ``[]`` for none) for tools
    whose side effects must not run on arbitrary input.
    """

    role = "tool"
    required_hooks = ("aieng_tools", "aieng_call_tool")
    role_hooks = ("aieng_tools", "aieng_call_tool")
    #: A tool name no component offers.
    unknown_tool = "aieng_conformance_no_such_tool"
    #: How many calls of each tool the concurrency test runs at once.
    concurrency: ClassVar[int] = 4
    #: The examples :meth:`steady_call` runs (tool name -> arguments): the
    #: ``tool_examples`` fixture's, or set before calling :meth:`check_steady` directly.
    steady_examples: Mapping[str, Mapping[str, Any]] = {}

    # -- fixtures ------------------------------------------------------------------------

    @pytest.fixture
    def tool_examples(self) -> Mapping[str, Mapping[str, Any]]:
        """Valid arguments per tool name: override to run the tools."""
        pytest.skip("give a tool_examples fixture (tool name -> valid arguments) to run "
                    "the component's tools")

    @pytest.fixture
    def fuzz_tools(self) -> list[str] | None:
        """The tools called with arbitrary arguments (``None``: every listed tool)."""
        return None

    # -- calling the hooks through the kernel -------------------------------------------

    async def tools(self, pipeline: Pipeline) -> Any:
        """``aieng_tools`` of the component through the dispatcher (the pipeline opened
        first, as the agent runner opens it: a tool may work through its context)."""
        await pipeline.open()
        gathered = await pipeline.dispatcher.gather("aieng_tools", {}, stage=STAGE)
        return gathered[0][0] if gathered else None

    async def call(self, pipeline: Pipeline, call: ToolCall) -> Any:
        """``aieng_call_tool`` through the dispatcher; ``None`` when not answered (failing
        when the impl changes the call's arguments in place)."""
        await pipeline.open()
        found = await left_unchanged(
            pipeline.dispatcher.first("aieng_call_tool", {"call": call}, stage=STAGE),
            "aieng_call_tool", call=call)
        return None if found is None else found[0]

    async def steady_setup(self, pipeline: Pipeline, request: pytest.FixtureRequest) -> None:
        """Open the pipeline and take the ``tool_examples`` the calls run (skipping the
        check without them)."""
        await pipeline.open()
        self.steady_examples = dict(request.getfixturevalue("tool_examples"))

    async def steady_call(self, pipeline: Pipeline, i: int) -> None:
        """A call of one of the ``steady_examples`` in turn, with an id of its own (made
        of ``i``)."""
        if not self.steady_examples:
            pytest.skip("no steady_examples (tool name -> valid arguments) to call")
        names = sorted(self.steady_examples)
        name = names[i % len(names)]
        await self.call(pipeline, ToolCall(id=f"call-{i}", name=name,
                                           arguments=dict(self.steady_examples[name])))

    # -- checks --------------------------------------------------------------------------

    def check_specs(self, specs: object) -> list[ToolSpec]:
        """``None`` or a list of ToolSpec with unique names, each with an ``object`` JSON
        schema of its arguments."""
        if specs is None:  # "no tools right now"
            return []
        assert isinstance(specs, (list, tuple)), (
            f"aieng_tools returned {type(specs).__name__}, expected a list of ToolSpec")
        for spec in specs:
            assert isinstance(spec, ToolSpec), f"{spec!r} is not a ToolSpec"
            check_valid(spec, f"tool spec {spec.name!r}")
            self.check_schema(spec)
        names = [s.name for s in specs]
        assert unique(names), f"tool names repeat: {names}"
        return list(specs)

    def check_schema(self, spec: ToolSpec) -> None:
        """The spec's ``parameters`` is an ``object`` schema, as models are told the arguments
        with: ``type`` ``"object"``, ``properties`` (when given) a mapping of schemas and
        ``required`` (when given) a list of argument names."""
        schema = spec.parameters
        assert schema.get("type") == "object", (
            f"tool {spec.name!r}: parameters must be an object JSON schema "
            f"({{'type': 'object', 'properties': ...}}), got {schema!r}")
        properties = schema.get("properties", {})
        assert isinstance(properties, Mapping) and all(
            isinstance(p, (Mapping, bool)) for p in properties.values()), (
            f"tool {spec.name!r}: 'properties' must map each argument to its schema, "
            f"got {properties!r}")
        required = schema.get("required", [])
        assert isinstance(required, list) and all(isinstance(r, str) for r in required), (
            f"tool {spec.name!r}: 'required' must be a list of argument names, got {required!r}")

    def check_result(self, result: object, call: ToolCall) -> ToolResult:
        """A ToolResult answering ``call`` (its ``call_id``)."""
        assert result is not None, f"aieng_call_tool returned None for its own tool {call.name!r}"
        assert isinstance(result, ToolResult), (
            f"aieng_call_tool returned {type(result).__name__}, expected ToolResult")
        check_valid(result, "the tool result")
        assert result.call_id == call.id, (
            f"the result answers call {result.call_id!r}, not {call.id!r}")
        return result

    async def listed(self, pipeline: Pipeline) -> list[ToolSpec]:
        """The component's tools, checked; skips the test when it lists none."""
        specs = self.check_specs(await self.tools(pipeline))
        if not specs:
            pytest.skip("the component lists no tools")
        return specs

    # -- tests ---------------------------------------------------------------------------

    async def test_tool_names_are_unique(self, conformance_pipeline: Pipeline) -> None:
        """The listing is None or ToolSpecs with unique names; listing twice agrees."""
        first = self.check_specs(await self.tools(conformance_pipeline))
        second = self.check_specs(await self.tools(conformance_pipeline))
        assert [s.name for s in first] == [s.name for s in second]

    async def test_unknown_tool_is_not_mine(self, conformance_pipeline: Pipeline) -> None:
        """A call of a tool the component does not offer gets None ("not my tool")."""
        names = [s.name for s in self.check_specs(await self.tools(conformance_pipeline))]
        assert self.unknown_tool not in names
        call = ToolCall(id="call-unknown", name=self.unknown_tool, arguments={"x": 1})
        result = await self.call(conformance_pipeline, call)
        assert result is None, f"a call of an unknown tool got {result!r}, expected None"

    async def test_examples_run(
        self, conformance_pipeline: Pipeline, tool_examples: Mapping[str, Mapping[str, Any]]
    ) -> None:
        """Each listed tool, called with its example arguments, answers its call id."""
        specs = await self.listed(conformance_pipeline)
        names = [s.name for s in specs]
        missing = [n for n in names if n not in tool_examples]
        assert not missing, f"tool_examples gives no arguments for {missing}"
        stray = [n for n in tool_examples if n not in names]
        assert not stray, f"tool_examples names tools the component does not list: {stray}"
        for number, spec in enumerate(specs):
            name = spec.name
            unmet = [r for r in spec.parameters.get("required", [])
                     if r not in tool_examples[name]]
            assert not unmet, (
                f"the example of {name} lacks the arguments its schema requires: {unmet} "
                "(the schema is what the model is told)")
            call = ToolCall(id=f"call-{number}", name=name, arguments=dict(tool_examples[name]))
            result = self.check_result(await self.call(conformance_pipeline, call), call)
            assert not result.is_error, f"{name} failed on its example: {result.content}"

    async def test_concurrent_calls_answer_their_own_ids(
        self, conformance_pipeline: Pipeline, tool_examples: Mapping[str, Mapping[str, Any]]
    ) -> None:
        """Calls run at once (the agent runner runs a step's calls concurrently), each tool
        several times with its example, each get the result of their own call id."""
        specs = await self.listed(conformance_pipeline)
        calls = [ToolCall(id=f"call-{number}-{spec.name}", name=spec.name,
                          arguments=dict(tool_examples[spec.name]))
                 for number in range(self.concurrency) for spec in specs
                 if spec.name in tool_examples]
        results: list[object] = [None] * len(calls)

        async def one(index: int) -> None:
            results[index] = await self.call(conformance_pipeline, calls[index])

        async with anyio.create_task_group() as group:
            for index in range(len(calls)):
                group.start_soon(one, index)
        for call, result in zip(calls, results):
            self.check_result(result, call)

    @PROPERTY
    @given(drawn=aist.tool_calls(), which=st.integers(min_value=0, max_value=10_000))
    async def test_any_arguments_give_a_result(
        self, conformance_pipeline: Pipeline, fuzz_tools: list[str] | None,
        drawn: ToolCall, which: int,
    ) -> None:
        """A listed tool called with arbitrary JSON arguments answers with a result (an
        error result when they are wrong), never with an exception."""
        names = [s.name for s in await self.listed(conformance_pipeline)]
        if fuzz_tools is not None:
            names = [n for n in names if n in fuzz_tools]
        if not names:
            pytest.skip("no tool to call with arbitrary arguments")
        call = attrs.evolve(drawn, name=names[which % len(names)])
        self.check_result(await self.call(conformance_pipeline, call), call)

    async def test_does_not_block_the_loop(
        self, conformance_pipeline: Pipeline, captured_events: EventCapture,
        request: pytest.FixtureRequest,
    ) -> None:
        """Listing tools and running them (with their examples, when given) never stalls
        the event loop."""
        examples = optional_fixture(request, "tool_examples") or {}
        async with self.loop_watch(captured_events):
            for spec in self.check_specs(await self.tools(conformance_pipeline)):
                if spec.name in examples:
                    await self.call(conformance_pipeline, ToolCall(
                        id="call-0", name=spec.name, arguments=dict(examples[spec.name])))
            await self.call(conformance_pipeline,
                            ToolCall(id="call-1", name=self.unknown_tool))
