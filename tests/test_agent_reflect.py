"""Agent planning (a plan before the first step, kept in the conversation) and reflection
(an answer reviewed before it is accepted), on a real kernel with a named test double."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import (
    Completion,
    GuardVerdict,
    MemoryItem,
    Message,
    Query,
    Request,
    ToolCall,
    Usage,
)
from click.testing import CliRunner

from aieng_core import Kernel
from aieng_core.agent import Agent, AgentOptions
from aieng_core.agent._reflect import (
    FORMAT_NOTE,
    PLAN_HEADER,
    PLAN_PROMPT,
    REVIEW_PROMPT,
    approved,
)
from aieng_core.cli import _agent, cli
from aieng_core.testing import kernel_with
from aieng_core.testing.reference import AddTool

pytestmark = pytest.mark.anyio


class Planner:
    """A backend double that tells the three kinds of call apart: a planning call (system
    message starts with the planning prompt) gets ``plan``, a review call (system message is
    the review prompt) gets the next of ``reviews``, and a decision call asks for ``add``
    once and then answers the next of ``answers``. Every call costs 10 + 5 tokens."""

    def __init__(self, *, plan: str = "1. add 40 and 2\n2. answer",
                 reviews: Sequence[str] = ("OK",), answers: Sequence[str] = ("42",)) -> None:
        self.plan = plan
        self.reviews = list(reviews)
        self.answers = list(answers)
        self.requests: list[tuple[str, Request]] = []

    def kind(self, request: Request) -> str:
        system = request.messages[0].content if request.messages[0].role == "system" else ""
        if PLAN_PROMPT in system:
            return "plan"
        if request.messages[-1].content == FORMAT_NOTE:
            return "format"
        return "review" if system == REVIEW_PROMPT else "decide"

    @hookimpl
    async def aieng_generate(self, request: Request) -> Completion:
        kind = self.kind(request)
        self.requests.append((kind, request))
        usage = Usage(10, 5)
        if kind == "plan":
            return Completion(text=f"  {self.plan}\n", usage=usage)
        if kind == "review":
            return Completion(text=self.reviews.pop(0), usage=usage)
        if kind == "format":  # the answer again, in the required format
            return Completion(text=request.messages[-2].content, usage=usage)
        if not any(m.role == "tool" for m in request.messages):
            call = ToolCall(id="c1", name="add", arguments={"a": 40, "b": 2})
            return Completion(text="", finish_reason="tool_calls", tool_calls=(call,),
                              usage=usage)
        return Completion(text=self.answers.pop(0), usage=usage)

    def of(self, kind: str) -> list[Request]:
        return [r for k, r in self.requests if k == kind]




class Notebook:
    """A memory double: keeps what it is given, recalls what it was built with."""

    def __init__(self, *known: str) -> None:
        self.items: list[MemoryItem] = []
        self.known = [MemoryItem(text, score=1.0) for text in known]

    @hookimpl
    def aieng_memory_store(self, items: Sequence[MemoryItem]) -> None:
        self.items.extend(items)

    @hookimpl
    def aieng_memory_recall(self, query: Query, k: int) -> list[MemoryItem]:
        return self.known[:k]


def compose(kernel: Kernel, **components: object) -> Any:
    return kernel.compose(components, name="reflect-test", timeout=5.0)


async def test_plan_comes_first_and_stays_in_the_conversation() -> None:
    """The planning call offers no tools and carries the planning prompt, the caller's
    system prompt and the tool list; the plan then joins the system message of every later
    call (one system message: strict templates refuse a second), is the first step's
    ``plan``, and its tokens are that step's."""
    llm = Planner()
    async with Kernel(env={}, entry_points=[]) as kernel:
        pipeline = compose(kernel, llm=llm, tools=AddTool())
        request = Request(messages=(Message("system", "Be brief."), Message("user", "40+2?")),
                          metadata={"tool_choice": "required", "user": "u1",
                                    "response_format": {"type": "json_object"}})
        result = await Agent(pipeline, AgentOptions(plan=True)).run(request)
    assert result.status == "answered" and result.answer == "42"
    assert result.plan == "1. add 40 and 2\n2. answer" == result.steps[0].plan
    assert [s.plan for s in result.steps[1:]] == [""]
    (planning,) = llm.of("plan")
    assert planning.tools == () and planning.metadata == {"user": "u1"}
    assert [m.role for m in planning.messages] == ["system", "user"]
    system = planning.messages[0].content
    assert system.startswith("Be brief.\n\n" + PLAN_PROMPT)
    assert "- add: Add two integers." in system
    for decision in llm.of("decide"):
        assert [m.role for m in decision.messages[:2]] == ["system", "user"]
        assert decision.messages[0].content == f"Be brief.\n\n{PLAN_HEADER}\n{result.plan}"
        assert decision.metadata["tool_choice"] == "required" and decision.tools
    # The plan's call is the first step's; the answer's step adds the formatting call that
    # response_format asks for.
    assert result.steps[0].usage == Usage(20, 10) and result.usage == Usage(40, 20)
    assert result.messages[0].content.startswith(f"Be brief.\n\n{PLAN_HEADER}")


async def test_a_rejected_answer_is_revised_and_the_review_goes_back() -> None:
    """A review that is not OK keeps the run going: the answer and the review (as a user
    turn) join the conversation and the model answers again; with one reflection allowed the
    revised answer is accepted without a second review."""
    llm = Planner(reviews=["The sum is wrong: 40 + 2 is 42."], answers=["41", "42"])
    notes = Notebook()
    async with Kernel(env={}, entry_points=[]) as kernel:
        pipeline = compose(kernel, llm=llm, tools=AddTool(), memory=notes)
        result = await Agent(pipeline, AgentOptions(reflect=True)).run("What is 40 + 2?")
    assert result.status == "answered" and result.answer == "42"
    assert [s.action.kind for s in result.steps] == ["tool_calls", "answer", "answer"]
    rejected = result.steps[1]
    assert rejected.review == "The sum is wrong: 40 + 2 is 42."
    assert "40 + 2 is 42" in rejected.note and rejected.usage == Usage(20, 10)
    assert result.steps[2].review == "" and len(llm.of("review")) == 1
    assert [m.role for m in result.messages] == [
        "user", "assistant", "tool", "assistant", "user", "assistant"]
    assert result.messages[3].content == "41" and result.messages[4].content == rejected.note
    (review,) = llm.of("review")
    assert review.tools == () and review.messages[0].content == REVIEW_PROMPT
    text = review.messages[1].content
    assert "Task:\nWhat is 40 + 2?" in text and '- add({"a": 40, "b": 2}) -> 42' in text
    assert text.endswith("Proposed answer:\n41")
    # Only the accepted answer is remembered as a long-term item.
    assert [i.metadata["answer"] for i in notes.items if i.kind == "long"] == ["42"]


async def test_an_approved_answer_ends_the_run() -> None:
    """An ``OK`` review accepts the answer at once; the review is kept on the step."""
    llm = Planner(reviews=["**OK.**"])
    async with Kernel(env={}, entry_points=[]) as kernel:
        pipeline = compose(kernel, llm=llm, tools=AddTool())
        result = await Agent(pipeline, AgentOptions(reflect=True)).run("What is 40 + 2?")
    assert result.status == "answered" and len(result.steps) == 2
    assert result.steps[1].review == "**OK.**" and result.steps[1].note == ""


@pytest.mark.parametrize("options", [
    AgentOptions(reflect=True, max_steps=2),
    AgentOptions(reflect=True, max_tokens=30),
    AgentOptions(reflect=True, max_cost=0.02, input_price_per_1k=1.0),
], ids=["last-step", "token-budget", "cost-budget"])
async def test_no_review_without_room_to_revise(options: AgentOptions) -> None:
    """No review at the last step, nor when this step's calls spent the token or cost
    budget: the answer is accepted as it is."""
    llm = Planner(reviews=["wrong"])
    async with Kernel(env={}, entry_points=[]) as kernel:
        pipeline = compose(kernel, llm=llm, tools=AddTool())
        result = await Agent(pipeline, options).run("What is 40 + 2?")
    assert result.status == "answered" and llm.of("review") == []


async def test_planning_and_reflection_need_a_model() -> None:
    """An agent of policies alone cannot plan or reflect: a clear error before any step."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        pipeline = compose(kernel, tools=AddTool())
        for options in (AgentOptions(plan=True), AgentOptions(reflect=True)):
            with pytest.raises(LookupError, match="no backend"):
                await Agent(pipeline, options).run("x")


class BlockPlans:
    """An input guard double that blocks the planning call."""

    @hookimpl
    def aieng_guard_input(self, request: Request) -> GuardVerdict:
        if PLAN_PROMPT in request.messages[0].content:
            return GuardVerdict("block", "")
        return GuardVerdict("allow", request.prompt)


async def test_a_blocked_planning_call_ends_the_run_blocked() -> None:
    """A guardrail that blocks the planning call ends the run ``blocked`` in its first
    step: no decision call follows."""
    llm = Planner()
    async with Kernel(env={}, entry_points=[]) as kernel:
        pipeline = compose(kernel, guard=BlockPlans(), llm=llm, tools=AddTool())
        result = await Agent(pipeline, AgentOptions(plan=True)).run("What is 40 + 2?")
    assert result.status == "blocked" and "planning call" in result.reason
    assert len(result.steps) == 1 and llm.of("decide") == [] and result.plan == ""


@pytest.mark.parametrize(("reply", "accepted"), [
    ("OK", True), ("ok.", True), ("  **OK!**\n", True), ('"Okay"', True), ("LGTM", True),
    ("", True), ("Correct", True), ("OK, but the unit is missing.", False),
    ("Not OK: wrong sum.", False), ("OK - it is right", False), ("The answer is 41.", False),
])
def test_what_counts_as_approval(reply: str, accepted: bool) -> None:
    """Approval is the word alone (decorated or not); anything said after it is a critique."""
    assert approved(reply) is accepted


def test_the_cli_prints_the_plan_and_the_review(tmp_path: Path) -> None:
    """``aieng agent --plan --reflect`` prints the plan before the first step and the
    review under the answer it rejected."""
    kernel = kernel_with({"planner": lambda: Planner(reviews=["Wrong sum."],
                                                     answers=["41", "42"]),
                          "adder": AddTool})
    path = tmp_path / "agent.toml"
    path.write_text('[pipeline]\nname = "r"\n[components.llm]\nuse = "planner"\n'
                    '[components.tools]\nuse = "adder"\n', encoding="utf-8")
    assert _agent.agent.name == "agent"  # imported: the command is registered
    result = CliRunner().invoke(cli, ["agent", str(path), "40+2?", "--plan", "--reflect"],
                                obj={"kernel": kernel})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:3] == ["plan:", "  1. add 40 and 2", "  2. answer"]
    assert lines[3].startswith("step 1 [model] add(")
    assert lines[4] == "step 2 [model] answer"
    assert lines[5].strip() == "review: Wrong sum."
    assert lines[-1] == "42"


@pytest.mark.parametrize(("roles", "expected"), [
    ([], [("system", "NEW")]),
    ([("user", "u")], [("system", "NEW"), ("user", "u")]),
    ([("system", "a"), ("user", "u")], [("system", "a\n\nNEW"), ("user", "u")]),
    ([("system", "a"), ("system", "b"), ("user", "u"), ("system", "late")],
     [("system", "a"), ("system", "b\n\nNEW"), ("user", "u"), ("system", "late")]),
    ([("system", " "), ("user", "u")], [("system", "NEW"), ("user", "u")]),
])
def test_system_text_joins_the_leading_system_message(
        roles: list[tuple[str, str]], expected: list[tuple[str, str]]) -> None:
    """Memory and the plan are added to the last leading system message (or a system
    message put first), never as a second system message mid-conversation."""
    from aieng_core.agent._messages import with_system

    messages = [Message(role, text) for role, text in roles]  # type: ignore[arg-type]
    assert [(m.role, m.content) for m in with_system(messages, "NEW")] == expected


async def test_the_plan_is_made_with_the_recalled_memory() -> None:
    """Memory is recalled before the plan, and the planning call sees it (a plan should
    use what the agent already knows); the first decision gets the same items."""
    llm = Planner()
    async with Kernel(env={}, entry_points=[]) as kernel:
        pipeline = compose(kernel, llm=llm, tools=AddTool(),
                           memory=Notebook("40 + 2 was 42 last time"))
        result = await Agent(pipeline, AgentOptions(plan=True)).run("What is 40 + 2?")
    (planning,) = llm.of("plan")
    assert "Relevant memory:\n- 40 + 2 was 42 last time" in planning.messages[0].content
    assert PLAN_PROMPT in planning.messages[0].content
    assert [i.text for i in result.steps[0].recalled] == ["40 + 2 was 42 last time"]
