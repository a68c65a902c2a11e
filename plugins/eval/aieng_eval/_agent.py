"""Agent mode of the runner: each item's input runs through ``Agent(pipeline, options)``.

The agent runs the pipeline once per model call (a decision, a plan, a review); the
answer it ends with is the item's output, judged once by the pipeline's judge components
(called directly, as the ``judge`` stage calls them) and by the judge pipeline's. How the
run went is recorded as scores (:data:`AGENT_METRICS`) and as the record's ``agent``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import attrs
from aieng_hookspecs.types import ModelCall, Request, Score

from ._lock import jsonable

if TYPE_CHECKING:
    from aieng_core import Pipeline, RunResult
    from aieng_core.agent import AgentOptions, AgentResult

__all__ = ["AGENT_JUDGE", "AGENT_METRICS", "agent_changes", "agent_lock", "agent_problem",
           "agent_summary", "options_from_lock", "run_agent"]

#: The scores every agent item gets (status ``ok`` and ``blocked``): whether the agent
#: answered (1 / 0), its steps, the tokens of its model calls, its tool calls and how many
#: of those gave an error result.
AGENT_METRICS: tuple[str, ...] = ("agent_answered", "agent_steps", "agent_tokens",
                                  "agent_tool_calls", "agent_tool_errors")
#: The "judge" of the agent metrics in a record's ``judges`` (not a valid component name,
#: so no judge of a pipeline shares it).
AGENT_JUDGE = "(agent)"


def agent_lock(options: AgentOptions | None) -> dict[str, Any] | None:
    """The lockfile's ``agent``: every option of the run's agent, or ``None`` (no agent)."""
    return None if options is None else cast(dict[str, Any], jsonable(attrs.asdict(options)))


def options_from_lock(entry: Any) -> tuple[AgentOptions | None, list[str]]:
    """The agent options a lockfile's ``agent`` records (for a replay), with a warning for
    each recorded option this version does not know (left out)."""
    if not isinstance(entry, Mapping):
        return None, []
    from aieng_core.agent import AgentOptions

    known = {f.name for f in attrs.fields(AgentOptions)}
    unknown = sorted(str(k) for k in entry if k not in known)
    options = AgentOptions(**{k: v for k, v in entry.items() if k in known})
    return options, [f"the lockfile's agent option {name!r} is unknown to this version: "
                     "replayed without it" for name in unknown]


def agent_changes(old: Any, new: Any) -> str:
    """How the locked agent options differ (``""`` when they do not), for the refusal of
    a resume: ``agent setup (max_steps 5 -> 2)``, ``agent setup (it ran without --agent)``.
    Options that only one of them records are not compared."""
    if old == new:
        return ""
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return f"agent setup (it ran {'with' if old else 'without'} --agent)"
    # An option only one side knows is one an aieng upgrade added or removed, not the
    # user's change: the resume's version warning tells of the upgrade.
    diffs = [f"{k} {old[k]!r} -> {new[k]!r}" for k in sorted(set(old) & set(new))
             if old[k] != new[k]]
    return f"agent setup ({', '.join(diffs)})" if diffs else ""


def agent_problem(pipeline: Pipeline) -> str:
    """Why ``pipeline`` cannot run as an agent over a dataset (``""``: it can)."""
    if "judge" in pipeline.stages:
        keep = ", ".join(f'"{s}"' for s in pipeline.stages if s != "judge")
        fix = (f"list its stages without it (in [pipeline]: stages = [{keep}])" if keep
               else "it runs nothing else: give it a backend (generate) stage")
        return (f"pipeline {pipeline.name!r} runs the judge stage, and the agent runs the "
                "pipeline at every step, so its judges would score every step (and their "
                f"model calls would count in the agent's tokens); {fix}: its judge "
                "components still score the final answer, once")
    if "generate" not in pipeline.stages and not pipeline.dispatcher.impls("aieng_agent_step"):
        return (f"pipeline {pipeline.name!r} has no generate stage and no agent policy "
                "(aieng_agent_step): nothing would decide the agent's steps")
    return ""


class _Recording:
    """The pipeline as the agent sees it, keeping the result of each of its runs (the
    model calls of the decisions, the plan and the reviews: the item's models)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self.runs: list[RunResult] = []

    async def run(self, *args: Any, **kwargs: Any) -> RunResult:
        result = await self._pipeline.run(*args, **kwargs)
        self.runs.append(result)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipeline, name)


async def run_agent(pipeline: Pipeline, options: AgentOptions, task: str | Request
                    ) -> tuple[AgentResult, list[RunResult]]:
    """Run the agent on one item's task: its result and the pipeline runs it made."""
    from aieng_core.agent import Agent

    recording = _Recording(pipeline)
    result = await Agent(cast("Pipeline", recording), options).run(task)
    return result, recording.runs


def agent_summary(result: AgentResult) -> tuple[list[Score], dict[str, Any]]:
    """The agent metrics as scores (:data:`AGENT_METRICS`), and the record's ``agent``:
    ``status``, ``reason``, ``steps``, ``tokens``, ``cost`` and ``tools`` (the name of each
    tool call that got a result, in order: the calls that ran, and those refused with an
    error result, such as invalid arguments)."""
    tools: list[str] = []
    errors = 0
    for step in result.steps:
        tools += [call.name for call in step.action.tool_calls[:len(step.results)]]
        errors += sum(1 for r in step.results if r.is_error)
    values = {"agent_answered": 1.0 if result.status == "answered" else 0.0,
              "agent_steps": float(len(result.steps)),
              "agent_tokens": float(result.tokens),
              "agent_tool_calls": float(len(tools)),
              "agent_tool_errors": float(errors)}
    scores = [Score(name=name, value=values[name], judge=AGENT_JUDGE) for name in AGENT_METRICS]
    return scores, {"status": result.status, "reason": result.reason,
                    "steps": len(result.steps), "tokens": result.tokens,
                    "cost": result.cost, "tools": tools}


def policy_models(result: AgentResult) -> list[str]:
    """``component/model`` of the model calls the agent's policies made themselves."""
    return [f"{e.component}/{e.parameters.get('model') or '?'}" for e in result.events
            if isinstance(e, ModelCall)]
