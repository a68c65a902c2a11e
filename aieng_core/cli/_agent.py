"""``aieng agent``: run a pipeline as an agent on one task, a line per step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from ._app import Seconds, cli, kernel_of, read_stdin, utf8_text
from ._present import json_document, visible

if TYPE_CHECKING:
    from ..agent import AgentDelta, AgentResult, AgentStep

__all__ = ["LiveAnswer", "agent", "short", "step_line", "summary_line"]

_SHORT = 80


def short(text: str, limit: int = _SHORT) -> str:
    """``text`` on one line (whitespace runs made one space), cut to ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def step_line(step: object) -> str:
    """One step of an agent run as ``aieng agent`` prints it (tool calls shortened)."""
    from ..agent import AgentStep

    assert isinstance(step, AgentStep)
    head = f"step {step.index} [{step.source}]"
    pad = " " * len(head)
    label = "plan:" if step.index == 1 else "revised plan:"
    plan_lines = [label, *(f"  {line.strip()}" for line in step.plan.splitlines()
                           if line.strip())] if step.plan else []
    action = step.action
    if action.kind != "tool_calls":
        lines = [*plan_lines, f"{head} {action.kind}"]
        if step.review:
            lines.append(f"{pad} review: {short(step.review)}")
        return "\n".join(lines)
    if not action.tool_calls:
        return f"{head} no tool call: {short(action.text)}"
    parts = []
    for call, result in zip(action.tool_calls, step.results):
        arguments = json.dumps(call.arguments, ensure_ascii=False, sort_keys=True)
        mark = "error: " if result.is_error and not result.content.startswith("error") else ""
        parts.append(f"{call.name}({short(arguments, 40)}) -> {mark}{short(result.content)}")
    if len(step.results) < len(action.tool_calls):
        parts.append("(not run)")
    lines = [*plan_lines, f"{head} {parts[0]}", *(f"{pad} {p}" for p in parts[1:])]
    if step.note:
        lines.append(f"{pad} note: {short(step.note)}")
    return "\n".join(lines)


def _count(n: int, what: str) -> str:
    return f"{n:,} {what}{'' if n == 1 else 's'}"


def summary_line(result: object) -> str:
    """An agent run in one line, as ``aieng agent`` prints it on stderr at the end (as
    ``aieng ask`` prints its timings after the answer): the status, the steps, the tool
    calls run (and how many failed), the tokens, the cost when there is one, and the
    seconds the run took (``AgentResult.duration_s``, read on a monotonic clock: the system
    clock set back or forward meanwhile changes nothing): ``answered: 2 steps, 2 tool calls
    (1 failed), 13 tokens (8 prompt, 5 completion), 0.01 s``. ``aieng chat --agent`` prints
    it after each turn. ``--json`` holds all of it (``AgentResult.to_json``)."""
    from ..agent import AgentResult

    assert isinstance(result, AgentResult)
    results = [r for step in result.steps for r in step.results]
    failed = sum(r.is_error for r in results)
    calls = _count(len(results), "tool call") + (f" ({failed:,} failed)" if failed else "")
    usage = result.usage
    tokens = (f"{_count(usage.total_tokens, 'token')} ({usage.prompt_tokens:,} prompt, "
              f"{usage.completion_tokens:,} completion)")
    cost = f", cost {result.cost:.4g}" if result.cost else ""
    return (f"{result.status}: {_count(len(result.steps), 'step')}, {calls}, {tokens}"
            f"{cost}, {result.duration_s:.2f} s")


class LiveAnswer:
    """Shows an agent run as it goes: the text of its decisions (and of a formatting call)
    on standard output as the model writes it, a line per step when the step ends
    (``steps_to_stderr``: there rather than on standard output), and at the end the
    answer, unless it was the text that streamed last."""

    def __init__(self, *, steps_to_stderr: bool = False) -> None:
        self.steps_to_stderr = steps_to_stderr
        self._call: tuple[int, str] | None = None  # the (step, purpose) streaming now
        # The pieces of the last call that streamed: a list, as ``str +=`` on an attribute
        # copies the text so far for every piece (a long answer's time grew as its square).
        self._last: list[str] = []
        self._open = False  # streamed text waits for its line's end

    def delta(self, piece: AgentDelta) -> None:
        """A streamed piece: shown when it is a decision's or the formatting call's."""
        if piece.purpose not in ("decide", "format"):
            return
        if (piece.step, piece.purpose) != self._call:
            self._end_line()
            self._call, self._last = (piece.step, piece.purpose), []
        if piece.text:
            click.echo(visible(piece.text), nl=False)
            self._last.append(piece.text)
            self._open = True

    def step(self, step: AgentStep) -> None:
        """A finished step: its line (:func:`step_line`)."""
        self._end_line()
        click.echo(visible(step_line(step)), err=self.steps_to_stderr)

    def finish(self, result: AgentResult) -> None:
        """The run's end: its answer, unless that streamed last."""
        self._end_line()
        if result.answer and result.answer != "".join(self._last):
            click.echo(visible(result.answer))

    def _end_line(self) -> None:
        if self._open:
            click.echo()
            self._open = False


@cli.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.argument("task", callback=utf8_text)
@click.option("--max-steps", type=click.IntRange(min=1), default=10, show_default=True,
              help="The most steps (decisions and their tool calls).")
@click.option("--timeout", type=Seconds(), default=None,
              help="Seconds the whole run may take, a number (30, 2.5; default: no limit).")
@click.option("--max-tokens", type=click.IntRange(min=1), default=None,
              help="Token budget of the model calls (default: none).")
@click.option("--system", default=None, callback=utf8_text,
              help="A system prompt put first in the conversation (e.g. when to use which "
                   "tool).")
@click.option("--context-chars", type=click.IntRange(min=1), default=None,
              help="The most characters of conversation sent to the model per step; older "
                   "tool results are left out first, then the oldest turns (default: all).")
@click.option("--plan", is_flag=True,
              help="Ask the model for a short plan before the first step.")
@click.option("--replan", type=click.Choice(["on_error", "every_step"]), default=None,
              help="With --plan: revise the plan after a step with a failed tool call "
                   "(on_error) or before every step (every_step); at most twice a run.")
@click.option("--reflect", is_flag=True,
              help="Ask the model to review an answer before accepting it (once).")
@click.option("--confirm", is_flag=True,
              help="Ask on the terminal before each tool call runs (declined calls are "
                   "error results the model sees).")
@click.option("--stream", is_flag=True,
              help="Print the model's text as it is generated (its words before a tool "
                   "call, and the answer), not only the answer at the end.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole AgentResult as JSON.")
@click.pass_context
def agent(ctx: click.Context, pipeline: Path, task: str, max_steps: int,
          timeout: float | None, max_tokens: int | None, system: str | None,
          context_chars: int | None, plan: bool,
          replan: Literal["on_error", "every_step"] | None, reflect: bool,
          confirm: bool, stream: bool, as_json: bool) -> None:
    """Run PIPELINE (a TOML file) as an agent on TASK ('-' reads standard input, at most
    256 MiB).

    Prints a line per step (its tool calls and their results, shortened) and the answer,
    then on stderr a summary (status, steps, tool calls, tokens, seconds). Exits 0 when
    the agent answered, 1 otherwise (the status and why on stderr).
    """
    import anyio
    from aieng_hookspecs.types import ToolCall

    from ..agent import Agent, AgentOptions

    if task == "-":
        if confirm:
            raise click.UsageError("--confirm reads its answers from standard input: give "
                                   "TASK as an argument, not '-'")
        task = read_stdin("TASK")
    if not task.strip():
        raise click.BadParameter("the task is empty", param_hint="TASK")
    if stream and as_json:
        raise click.UsageError("--stream and --json cannot go together: --json prints one "
                               "JSON document at the end")
    if replan is not None and not plan:
        raise click.UsageError("--replan revises the plan: give --plan too")
    kernel = kernel_of(ctx)
    options = AgentOptions(max_steps=max_steps, timeout=timeout, max_tokens=max_tokens,
                           system=system, context_chars=context_chars, plan=plan,
                           replan=replan or "never", reflect=reflect)

    async def ask(call: ToolCall) -> bool:
        arguments = json.dumps(call.arguments, ensure_ascii=False, sort_keys=True)
        question = f"run {call.name}({short(arguments, 60)})?"
        answer: bool = await anyio.to_thread.run_sync(
            lambda: click.confirm(question, default=False, err=True))
        return answer

    live = LiveAnswer()

    async def go() -> AgentResult:
        async with kernel:
            built = kernel.load_pipeline(pipeline)
            return await Agent(built, options).run(
                task, on_step=None if as_json else live.step,
                on_delta=live.delta if stream else None, approve=ask if confirm else None)

    result = anyio.run(go)
    if as_json:
        json_document(result.to_json())  # the summary's numbers are in it
    else:
        live.finish(result)
        click.echo(summary_line(result), err=True)
    if result.status != "answered":
        # A run cut by --timeout says which limit it was and how to give it longer.
        raise_it = (f": give a larger --timeout (it was {timeout:g} s) to let the run go on "
                    "longer" if result.status == "timeout" and timeout is not None else "")
        click.echo(f"aieng: the agent did not answer: {result.status} ({result.reason})"
                   f"{raise_it}", err=True)
        ctx.exit(1)
