"""The agent runner: recall → decide (a policy, else the pipeline's model) → tools → store.

Every model call is a run of the agent's pipeline, so its guardrails, router, cache and
monitoring apply to each of them (docs/decisions.md, "The agent runner runs the pipeline").
"""

from __future__ import annotations

import inspect
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import anyio
import attrs
import structlog
from aieng_hookspecs.types import (
    AgentAction,
    AgentFinished,
    AgentState,
    AgentStepped,
    Completion,
    Event,
    MemoryItem,
    Message,
    ModelCall,
    Request,
    ToolResult,
    ToolSpec,
)

from .._errors import HookError
from .._scope import CURRENT_RUN, RunScope
from ..dispatch import expect
from . import _reflect
from ._closed import AgentClosedError, closed_reason, is_closed
from ._memory import recall, store
from ._messages import TaskInput, as_request, fit, swap_plan, unique_ids, with_memory, with_system
from ._options import AgentOptions
from ._result import AgentDelta, AgentResult, AgentStep, Purpose
from ._state import _Run
from ._tools import Approval, ToolRunner
from ._watch import LoopWatch, StallWatch

if TYPE_CHECKING:
    from ..dispatch import StagePolicy
    from ..pipeline import Pipeline

__all__ = ["Agent", "Approval", "DeltaCallback", "StepCallback", "TaskInput"]

log = structlog.get_logger(__name__)

#: Called with each finished step; may be ``async``.
StepCallback = Callable[[AgentStep], "Awaitable[None] | None"]
#: Called with each streamed piece of a model call's text (:class:`AgentDelta`); may be
#: ``async``.
DeltaCallback = Callable[[AgentDelta], "Awaitable[None] | None"]

_ACTION = expect(AgentAction)
_SPECS = expect((list, tuple), items=ToolSpec)
#: Request metadata that asks for tool calls, and that constrains the output.
_TOOL_KEYS = frozenset({"tool_choice", "parallel_tool_calls"})
_OUTPUT_KEYS = frozenset({"regex", "response_format"})
#: How each kind of model call is named in a blocked run's reason.
_WHAT: dict[Purpose, str] = {"plan": "planning call", "decide": "model call",
                             "review": "review call", "format": "formatting call"}


class Agent:
    """Runs a pipeline as an agent: each step recalls memory, lets a policy
    (``aieng_agent_step``) or else the pipeline's model decide, runs the tool calls
    (``aieng_call_tool``) and stores what the step produced (``aieng_memory_store``).

    :param pipeline: the pipeline whose components are the agent's backend, tools, memory
        and policy; every model call is a run of it.
    :param options: budgets, detectors and prompts (:class:`AgentOptions`).
    """

    def __init__(self, pipeline: Pipeline, options: AgentOptions | None = None) -> None:
        self.pipeline = pipeline
        self.options = options if options is not None else AgentOptions()

    @property
    def _policy(self) -> StagePolicy:
        # The pipeline's own timeout and error policy ([pipeline] timeout / on_error).
        return self.pipeline.default_policy

    # -- the run -------------------------------------------------------------------------

    async def run(self, task: TaskInput, *, on_step: StepCallback | None = None,
                  on_delta: DeltaCallback | None = None, approve: Approval | None = None,
                  run_id: str | None = None, left_out: tuple[int, int] = (0, 0)
                  ) -> AgentResult:
        """Run the agent on a task until it answers, stops, or a limit ends it.

        :param task: the user's text, a :class:`Request` (its messages start the
            conversation; its model and sampling parameters are used for every model call)
            or a list of messages.
        :param on_step: called with each finished :class:`AgentStep` (may be async).
        :param on_delta: stream the model calls: called with each piece of their text as
            it is generated, an :class:`AgentDelta` naming the step and what the call is
            for (may be async). The runner's own calls stream (a policy's do not); a
            backend that does not stream, a cache hit or a guarded stream is one piece.
        :param approve: asked before each tool call with valid arguments runs (may be
            async): ``True`` runs it; ``False`` or a reason declines it, and the model gets
            an error result saying so.
        :param run_id: the agent run's id (default ``agent-<12 hex>``): a server gives its
            response's id, so that feedback on it reaches the run's events.
        :param left_out: the messages and characters of earlier turns the caller let go of
            (a chat's window): the model is told of them in the one note that also counts
            what ``context_chars`` leaves out (``fit``'s ``left_out``).
        :returns: the status, the answer, every step, the totals and the transcript.
        :raises HookError: when a model call, policy or memory fails under the pipeline's
            error policy (a failing *tool* is an error result, not an exception).
        :raises LookupError: when neither a policy nor the pipeline's model decides a step;
            ``ContextLimitError`` when what ``context_chars`` never cuts is longer alone.
        :raises AgentClosedError: when the pipeline closed before or during the run.
        """
        template = as_request(task)
        messages = list(template.messages)
        if self.options.system is not None:
            messages.insert(0, Message("system", self.options.system))
        if run_id is None:
            run_id = f"agent-{uuid.uuid4().hex[:12]}"
        run = _Run(scope=RunScope(run_id, self.pipeline.name, self.pipeline.kernel.publish,
                                  source=self.pipeline),
                   template=template, task=template.prompt or messages[-1].content,
                   messages=messages,
                   loop=LoopWatch(self.options.loop_repeats, self.options.loop_window),
                   stall=StallWatch(self.options.stall_steps), approve=approve,
                   on_delta=on_delta, left_out=left_out)
        token = CURRENT_RUN.set(run.scope)
        log_tokens = structlog.contextvars.bind_contextvars(agent_run_id=run_id)
        started = time.perf_counter()
        try:
            with anyio.move_on_after(self.options.timeout) as deadline:
                await self._loop(run, on_step)
            if deadline.cancelled_caught and not run.status:
                run.finish("timeout", f"the run took longer than {self.options.timeout} s")
        except Exception as exc:
            if is_closed(self.pipeline):  # closed under the run: it ends with what it did
                run.finish("closed", closed_reason(self.pipeline.name, run_id, len(run.steps)))
                raise AgentClosedError(self._result(run, started)) from exc
            self._finished(run, "error", f"{type(exc).__name__}: {exc}", started)
            raise
        except BaseException as exc:
            ended = "cancelled" if isinstance(exc, anyio.get_cancelled_exc_class()) else "error"
            self._finished(run, ended, f"{type(exc).__name__}: {exc}", started)
            raise
        finally:
            structlog.contextvars.reset_contextvars(**log_tokens)
            CURRENT_RUN.reset(token)
        return self._result(run, started)

    def _result(self, run: _Run, started: float) -> AgentResult:
        duration = time.perf_counter() - started  # the event's and the result's, one reading
        events = self._finished(run, run.status, run.reason, started, duration)
        log.info("agent.finished", agent_run_id=run.scope.run_id, status=run.status,
                 reason=run.reason, steps=len(run.steps), tokens=run.usage.total_tokens)
        return AgentResult(
            run_id=run.scope.run_id, pipeline=self.pipeline.name, status=run.status,
            answer=run.answer, reason=run.reason, steps=tuple(run.steps),
            messages=tuple(run.messages), usage=run.usage, cost=run.cost,
            duration_s=duration, events=events)

    def _finished(self, run: _Run, status: str, reason: str, started: float,
                  duration: float | None = None) -> tuple[Event, ...]:
        """The run's last event; returns its trace and releases it (:meth:`RunScope.end`).
        A step cut short still counts its finished model calls."""
        run.settle(self.options.cost_of)
        run.scope.emit(AgentFinished(
            run_id=run.scope.run_id, pipeline=self.pipeline.name, status=status, reason=reason,
            steps=len(run.steps), usage=run.usage, cost=run.cost,
            duration_s=time.perf_counter() - started if duration is None else duration))
        events = tuple(run.scope.trace)
        run.scope.end()
        return events

    async def _loop(self, run: _Run, on_step: StepCallback | None) -> None:
        await self.pipeline.open()
        options = self.options
        if (options.plan or options.reflect) and not self.pipeline.backends:
            wanted = "plan" if options.plan else "reflect"
            raise LookupError(f"AgentOptions.{wanted} needs a model, and pipeline "
                              f"{self.pipeline.name!r} has no backend: add a backend "
                              "component (aieng_generate)")
        run.tools = await self._tools()
        run.runner = ToolRunner(self.pipeline.dispatcher, self._policy, options, run.tools,
                                run.approve)
        for index in range(1, self.options.max_steps + 1):
            run.step = index
            # Held as a pipeline run is: closing waits for it; once closed, no step starts.
            with self.pipeline._using():
                step = await self._step(run, index)
            run.steps.append(step)
            run.scope.emit(AgentStepped(
                run_id=run.scope.run_id, pipeline=self.pipeline.name, step=index,
                source=step.source, kind=step.action.kind,
                tools=[c.name for c in step.action.tool_calls],
                errors=sum(r.is_error for r in step.results), usage=step.usage,
                cost=step.cost, duration_s=step.duration_s, note=step.note))
            if on_step is not None:
                done = on_step(step)
                if inspect.isawaitable(done):
                    await done
            if run.status:
                return
        run.finish("max_steps", f"no answer within {self.options.max_steps} steps")

    async def _tools(self) -> tuple[ToolSpec, ...]:
        """Every tool the pipeline's components list; a name listed twice is an error."""
        gathered = await self.pipeline.dispatcher.gather(
            "aieng_tools", {}, stage="agent", policy=self._policy, check=_SPECS)
        owners: dict[str, str] = {}
        specs: list[ToolSpec] = []
        for listed, component in gathered:
            for spec in listed:
                if spec.name in owners:
                    raise HookError(
                        hook="aieng_tools", plugin=component, stage="agent",
                        message=f"tool {spec.name!r} is listed by both {owners[spec.name]!r} "
                                f"and {component!r}",
                        hint="rename one of the tools, or remove one of the components")
                owners[spec.name] = component
                specs.append(spec)
        return tuple(specs)

    # -- one step ------------------------------------------------------------------------

    async def _step(self, run: _Run, index: int) -> AgentStep:
        started = time.perf_counter()
        calls: list[ModelCall] = []  # every model call of the step, for its usage
        run.uncounted = calls  # counted even when the step ends the run unrecorded
        plan = review = run_id = ""
        source, action = "model", AgentAction("stop")
        recalled = await recall(self.pipeline.dispatcher, self._policy, run.messages,
                                run.task, self.options.recall_k)
        if index == 1 and self.options.plan:
            plan = await self._plan(run, calls, recalled)
        elif self._may_replan(run, calls):
            plan = await self._replan(run, calls, recalled)
        if not run.status:  # a guardrail may have blocked the planning call
            seen = fit(with_memory(run.messages, recalled, self.options.memory_chars),
                       self.options.context_chars, keep=run.task_message,
                       left_out=run.left_out)
            run.policy_mark = mark = len(run.scope.trace)
            state = AgentState(messages=seen, step=index - 1, max_steps=self.options.max_steps,
                               cost=run.cost, tools=run.tools)
            found = await self.pipeline.dispatcher.first(
                "aieng_agent_step", {"state": state}, stage="agent", policy=self._policy,
                check=_ACTION)
            # A policy's own model calls (context.generate) joined this run's trace: they
            # count whether or not a policy then decided (a policy may consult and pass).
            calls += [e for e in run.scope.trace[mark:] if isinstance(e, ModelCall)]
            run.policy_mark = None
            if found is not None:
                action, source = found
            else:
                action, run_id = await self._ask_model(run, seen, calls)
            action = unique_ids(action)
            if action.kind == "answer" and self._may_review(run, index, calls):
                review = await self._review(run, action.text, calls)
            if action.kind == "answer" and _reflect.approved(review) \
                    and _formatted(run.template) and run.tools:
                action = await self._format(run, seen, action, calls)
        run.uncounted = []
        usage, cost = run.count(calls, self.options.cost_of)
        results, note = await self._act(run, action, source, review)
        step = AgentStep(index=index, source=source, action=action, results=results,
                         usage=usage, cost=cost, recalled=recalled, run_id=run_id, note=note,
                         plan=plan, review=review)
        await store(self.pipeline.dispatcher, self._policy, step, run.scope.run_id, run.task,
                    run.answer if run.status == "answered" else None)
        # The step's time covers all it did: recall, decision, tools and memory store.
        return attrs.evolve(step, duration_s=time.perf_counter() - started)

    async def _ask(self, run: _Run, messages: Sequence[Message], calls: list[ModelCall],
                   purpose: Purpose = "decide") -> tuple[Completion | None, str]:
        """One model call: a run of the pipeline on ``messages``; ``None`` when a guardrail
        blocked it (the run ends ``blocked``). A decision offers the tools, without the
        request's output format when there are tools (a model held to a JSON schema could
        not call one); a plan or a review has neither; the final answer has the format
        only."""
        template = run.template
        free = purpose in ("plan", "review")
        dropped = _TOOL_KEYS | _OUTPUT_KEYS if free else _TOOL_KEYS if purpose == "format" \
            else _OUTPUT_KEYS if run.tools else frozenset()
        schema = None if free or (purpose == "decide" and run.tools) \
            else template.response_schema
        request = attrs.evolve(template, messages=tuple(messages), response_schema=schema,
                               tools=run.tools if purpose == "decide" else (), metadata={
                                   k: v for k, v in template.metadata.items()
                                   if k not in dropped})
        on_delta = run.on_delta
        forward = None if on_delta is None else \
            lambda delta: on_delta(AgentDelta(run.step, purpose, delta))
        result = await self.pipeline.run(request, on_delta=forward)
        calls.extend(result.model_calls)
        if result.status == "blocked":
            stage = next((s.name for s in result.stages if s.status == "blocked"), "a guard")
            run.finish("blocked", f"a guardrail blocked the {_WHAT[purpose]} ({stage})")
            return None, result.run_id
        if result.completion is None:
            raise LookupError(f"pipeline {self.pipeline.name!r} produced no completion: does "
                              "it list the generate stage?")
        return result.completion, result.run_id

    async def _ask_model(self, run: _Run, messages: tuple[Message, ...],
                         calls: list[ModelCall]) -> tuple[AgentAction, str]:
        """No policy decided: run the pipeline on the conversation with the tools."""
        if not self.pipeline.backends:
            raise LookupError(f"no agent policy decided the step and pipeline "
                              f"{self.pipeline.name!r} has no backend: add a backend "
                              "component (aieng_generate) or an agent policy "
                              "(aieng_agent_step)")
        completion, run_id = await self._ask(run, messages, calls)
        if completion is None:
            return AgentAction("stop"), run_id
        if completion.tool_calls:
            return AgentAction("tool_calls", text=completion.text,
                               tool_calls=completion.tool_calls), run_id
        return AgentAction("answer", text=completion.text), run_id

    async def _plan(self, run: _Run, calls: list[ModelCall],
                    recalled: Sequence[MemoryItem]) -> str:
        """Ask for a plan before the first step and keep it in the conversation."""
        options = self.options
        memory = with_memory(run.messages, recalled, options.memory_chars)
        asked = fit(_reflect.plan_messages(memory, run.tools, options.plan_prompt),
                    options.context_chars, keep=run.task_message,
                    left_out=run.left_out)
        completion, _ = await self._ask(run, asked, calls, "plan")
        if completion is None:
            return ""
        plan = _reflect.plan_text(completion.text, options.plan_chars)
        if plan:
            run.messages = list(with_system(run.messages, f"{_reflect.PLAN_HEADER}\n{plan}"))
            run.plan = plan
            log.info("agent.planned", agent_run_id=run.scope.run_id, plan_chars=len(plan))
        return plan

    def _may_replan(self, run: _Run, calls: Sequence[ModelCall]) -> bool:
        """Whether the plan is revised before this step: ``replan`` asks for it (after a
        step with a failed tool call, or always), revisions are left, the budgets are not
        spent."""
        options = self.options
        if options.replan == "never" or run.replans >= options.max_replans or not run.steps:
            return False
        if options.replan == "on_error" and not any(r.is_error for r in run.steps[-1].results):
            return False
        return self._within_budget(run, calls)

    async def _replan(self, run: _Run, calls: list[ModelCall],
                      recalled: Sequence[MemoryItem]) -> str:
        """Ask for a revised plan, seeing the conversation so far; it replaces the plan in
        the system text. The new plan, or ``""`` when the model gave none."""
        options = self.options
        run.replans += 1
        last = run.steps[-1]
        failed = [(c, r) for c, r in zip(last.action.tool_calls, last.results) if r.is_error]
        memory = with_memory(run.messages, recalled, options.memory_chars)
        asked = fit(_reflect.replan_messages(memory, run.tools, options.replan_prompt, failed),
                    options.context_chars, keep=run.task_message,
                    left_out=run.left_out)
        completion, _ = await self._ask(run, asked, calls, "plan")
        plan = "" if completion is None else _reflect.plan_text(completion.text,
                                                                options.plan_chars)
        if plan:
            run.messages = list(swap_plan(run.messages, run.plan, plan))
            run.plan = plan
            log.info("agent.replanned", agent_run_id=run.scope.run_id, plan_chars=len(plan),
                     failed=[c.name for c, _ in failed])
        return plan

    async def _format(self, run: _Run, seen: Sequence[Message], action: AgentAction,
                      calls: list[ModelCall]) -> AgentAction:
        """The answer again, in the request's required format (its ``response_schema``,
        ``regex`` or ``response_format``), which the decisions went without."""
        asked = [*seen, Message("assistant", action.text), Message("user", _reflect.FORMAT_NOTE)]
        completion, _ = await self._ask(run, asked, calls, "format")
        return AgentAction("stop") if completion is None else attrs.evolve(
            action, text=completion.text)

    def _may_review(self, run: _Run, index: int, calls: Sequence[ModelCall]) -> bool:
        """Whether an answer gets reviewed: reflection is on, reviews are left, a step is
        left to revise in, and the budgets are not spent (counting this step's calls)."""
        options = self.options
        if not options.reflect or run.reviews >= options.max_reflections \
                or index >= options.max_steps:
            return False
        return self._within_budget(run, calls)

    def _within_budget(self, run: _Run, calls: Sequence[ModelCall]) -> bool:
        """Whether the token and cost budgets are not spent, counting this step's calls."""
        options = self.options
        prompt = run.prompt_tokens + sum(c.usage.prompt_tokens for c in calls)
        completion = run.completion_tokens + sum(c.usage.completion_tokens for c in calls)
        if options.max_tokens is not None and prompt + completion >= options.max_tokens:
            return False
        cost = run.cost + options.cost_of(prompt - run.prompt_tokens,
                                          completion - run.completion_tokens)
        return options.max_cost is None or cost < options.max_cost

    async def _review(self, run: _Run, answer: str, calls: list[ModelCall]) -> str:
        """Ask the model to check an answer; its reply (``""`` when a guard blocked it)."""
        run.reviews += 1
        observed = [(c, r) for s in run.steps for c, r in zip(s.action.tool_calls, s.results)]
        asked = _reflect.review_messages(run.task, observed, answer,
                                         self.options.review_prompt,
                                         self.options.tool_result_chars,
                                         self.options.context_chars)
        completion, _ = await self._ask(run, asked, calls, "review")
        review = "" if completion is None else completion.text.strip()
        log.info("agent.reviewed", agent_run_id=run.scope.run_id,
                 approved=_reflect.approved(review), review_chars=len(review))
        return review

    async def _act(self, run: _Run, action: AgentAction, source: str,
                   review: str = "") -> tuple[tuple[ToolResult, ...], str]:
        """Carry an action out: end the run, or run its tool calls (unless a budget or a
        loop stops it first); returns the tool results and the note told to the model."""
        if run.status:  # blocked
            return (), ""
        if action.kind == "answer" and not _reflect.approved(review):
            note = _reflect.revise_note(review)
            run.messages.append(Message("assistant", action.text))
            run.messages.append(Message("user", note))
            return (), note
        if action.kind == "answer":
            run.messages.append(Message("assistant", action.text))
            run.finish("answered", f"answered by {source}", action.text)
            return (), ""
        if action.kind == "stop":
            run.finish("stopped", f"{source} stopped the run"
                       + (f": {action.text}" if action.text else ""), action.text)
            return (), ""
        if over := self._over_budget(run):
            run.finish("budget", over)
            return (), ""
        repeated = run.loop.check(action.tool_calls)
        if repeated is not None and run.loop.warned:
            run.finish("loop", f"the model kept repeating {repeated} after being told")
            return (), ""
        assert run.runner is not None  # set before the first step
        results = await run.runner.call_all(action.tool_calls)
        run.messages.append(Message("assistant", action.text, tool_calls=action.tool_calls))
        run.messages.extend(Message("tool", r.content, tool_call_id=r.call_id) for r in results)
        note = ""
        if repeated is not None:
            run.loop.warned = True
            note = (f"You are repeating yourself: {repeated} was called "
                    f"{run.loop.repeats} times within the last {self.options.loop_window} "
                    "steps and its result will not change. Use the results you have, try "
                    "something different, or give your final answer.")
            run.messages.append(Message("user", note))
            log.info("agent.loop_noted", tool=repeated.partition("(")[0])  # no arguments: values
        if run.stall.check(results):
            run.finish("stalled", f"{run.stall.run} steps in a row brought only errors or "
                       "nothing new")
        return results, note

    def _over_budget(self, run: _Run) -> str:
        options = self.options
        if options.max_tokens is not None and run.usage.total_tokens >= options.max_tokens:
            return (f"token budget spent: {run.usage.total_tokens} of "
                    f"{options.max_tokens} tokens")
        if options.max_cost is not None and run.cost >= options.max_cost:
            return f"cost budget spent: {run.cost:.6g} of {options.max_cost:.6g}"
        return ""


def _formatted(request: Request) -> bool:
    """Whether a request asks for a constrained output."""
    return request.response_schema is not None or any(k in request.metadata
                                                       for k in _OUTPUT_KEYS)
