"""A test plugin for the eval tests: a scripted backend and two simple judges.

Test doubles, named as such: the backend answers deterministically from the prompt
(through the kit's ScriptedBackend), so a run's outputs and scores are known exactly.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import attrs
import click
from aieng_hookspecs import ComponentRegistry, hookimpl
from aieng_hookspecs.types import (
    Completion,
    Document,
    GuardVerdict,
    Hit,
    Message,
    Query,
    Request,
    Sample,
    Score,
    ToolCall,
    ToolResult,
    ToolSpec,
    Usage,
)
from aieng_judge import AskingJudge, JudgeParseError
from click.testing import CliRunner, Result

from aieng_core import Kernel
from aieng_core.testing import ScriptedBackend

#: prompts every ScriptedEcho answered, across a test (tests reset it).
CALLS: list[str] = []
#: prompts containing one of these words kill the run (a BaseException, as on SIGINT).
KILL_ON: list[str] = []
#: prompts containing one of these words are never answered (until cancelled); tests
#: reset it.
HANG_ON: set[str] = set()
#: generate calls in flight now and at most (tests reset it).
IN_FLIGHT = {"now": 0, "peak": 0}
#: ``peak``: generate calls wait until that many are in flight at once, then all go on (0:
#: none wait); ``after``: calls past that many answers wait until ``release`` is set
#: (0: none wait). Synchronisation on events, not on a backend's speed (tests reset it).
HOLD: dict[str, Any] = {"peak": 0, "after": 0, "release": None, "reached": None}
#: the flaky judges fail on inputs containing one of these words (tests set and reset it).
FAILING: set[str] = set()
#: each flaky judge call: (metric, the sample's input, its context) (tests reset it).
JUDGED: list[tuple[str, str, tuple[str, ...]]] = []
#: the agent backend double raises on tasks containing one of these words (tests reset it).
AGENT_FAIL: set[str] = set()
#: every call of the ``add`` tool double: (a, b) (tests reset it).
TOOL_CALLS: list[tuple[object, object]] = []


@attrs.frozen
class EchoOptions:
    """Options of the ``scripted-echo`` backend double.

    :param mode: ``echo`` (the prompt), ``upper`` (upper-cased), ``first`` / ``last`` (its
        first / last word), ``seed`` (the request's seed as text), ``calls`` (how many
        prompts were answered before: a different output on every run), ``half`` (the
        prompt and half an emoji: a lone surrogate, as a reply cut mid-pair decodes).
    :param fail_on: prompts containing this word raise (when not empty).
    :param delay: seconds to sleep (``anyio.sleep``) per answer.
    :param model: the model id it reports.
    :param weights: a file or folder it would load (hashed into the lockfile).
    :param journal: a file it appends each prompt to (as a cache or a monitoring store:
        a file the run itself writes).
    :param api_key: a credential it never uses (tests that a lockfile keeps none).
    :param url: a server address it never uses (``redis://:password@host``, likewise).
    """

    mode: str = "echo"
    fail_on: str = ""
    delay: float = 0.0
    model: str = "echo-1"
    weights: str = ""
    journal: str = ""
    api_key: str = ""
    url: str = ""


class Killed(BaseException):
    """Stands for the process being killed mid-run: no ``except Exception`` catches it."""


class ScriptedEcho(ScriptedBackend):
    """A backend double answering from the prompt, as its options say."""

    def __init__(self, options: EchoOptions) -> None:
        super().__init__(self._answer, model=options.model, delay=options.delay)
        self.options = options

    def _answer(self, request: Request) -> str:
        prompt = request.prompt
        CALLS.append(prompt)
        if self.options.journal:
            with Path(self.options.journal).open("a", encoding="utf-8") as journal:
                journal.write(prompt + "\n")
        if any(word in prompt for word in KILL_ON):
            raise Killed(prompt)
        if self.options.fail_on and self.options.fail_on in prompt:
            raise RuntimeError(f"scripted failure on {prompt!r}")
        if self.options.mode == "upper":
            return prompt.upper()
        if self.options.mode == "first":
            return prompt.split()[0] if prompt.split() else prompt
        if self.options.mode == "last":
            return prompt.split()[-1] if prompt.split() else prompt
        if self.options.mode == "seed":
            return f"seed {request.seed}"
        if self.options.mode == "calls":
            return f"call {len(CALLS)}"
        if self.options.mode == "half":
            return prompt + " \ud83d"
        return prompt

    @hookimpl
    async def aieng_generate(self, request: Request) -> Completion | None:
        IN_FLIGHT["now"] += 1
        IN_FLIGHT["peak"] = max(IN_FLIGHT["peak"], IN_FLIGHT["now"])
        try:
            await _held()
            if any(word in request.prompt for word in HANG_ON):
                await anyio.sleep_forever()
            return await super().aieng_generate(request)
        finally:
            IN_FLIGHT["now"] -= 1


def release() -> None:
    """Let every held generate call go on, and hold none from now on."""
    HOLD.update(peak=0, after=0)
    for event in (HOLD["release"], HOLD["reached"]):
        if event is not None:
            event.set()


def reset_hold() -> None:
    """No holding, no events (each test's ``anyio.run`` has its own loop)."""
    HOLD.update(peak=0, after=0, release=None, reached=None)


async def _held() -> None:
    """Wait as :data:`HOLD` says (on this event loop's events, made on first use)."""
    if HOLD["peak"]:
        if HOLD["reached"] is None:
            HOLD["reached"] = anyio.Event()
        if IN_FLIGHT["now"] >= HOLD["peak"]:
            HOLD["reached"].set()
        await HOLD["reached"].wait()
    after = HOLD["after"] or int(os.environ.get("EVALKIT_HOLD_AFTER", "0"))
    if after and len(CALLS) >= after:
        if HOLD["release"] is None:
            HOLD["release"] = anyio.Event()
        await HOLD["release"].wait()


class ExactMatch:
    """``exact_match``: 1 when the output equals a reference (case-insensitive), else 0;
    no score without a reference."""

    @hookimpl
    def aieng_judge(self, sample: Sample) -> list[Score] | None:
        if sample.reference is None:
            return None
        refs = [sample.reference] if isinstance(sample.reference, str) else sample.reference
        hit = sample.output.strip().lower() in {r.strip().lower() for r in refs}
        return [Score(name="exact_match", value=1.0 if hit else 0.0)]


class WordCount:
    """``words``: the output's word count; ``context_words``: the sample context's."""

    @hookimpl
    def aieng_judge(self, sample: Sample) -> list[Score]:
        return [Score(name="words", value=float(len(sample.output.split()))),
                Score(name="context_words",
                      value=float(sum(len(c.split()) for c in sample.context)))]


@attrs.frozen
class FixedOptions:
    """Options of the ``fixed-score`` judge: the metric, its value, and a word of the input
    on which it gives no score (as an AI judge whose answer could not be read)."""

    metric: str = "quality"
    value: float = 1.0
    skip_on: str = ""
    raise_on: str = ""


class FixedScore:
    """A judge giving one fixed score, or none when the input holds ``skip_on``; it
    raises when the input holds ``raise_on``."""

    def __init__(self, options: FixedOptions) -> None:
        self.options = options

    @hookimpl
    def aieng_judge(self, sample: Sample) -> list[Score] | None:
        if self.options.raise_on and self.options.raise_on in sample.input:
            # The output quoted as is (judges do): a lone surrogate of it reaches the error.
            raise RuntimeError(f"judge broke on {sample.input!r}: output {sample.output}")
        if self.options.skip_on and self.options.skip_on in sample.input:
            return None
        return [Score(name=self.options.metric, value=self.options.value)]


def agent_reply(request: Request) -> str | list[ToolCall]:
    """The agent backend double's script, from the task (the last user turn):

    ``add A B`` calls ``add(a=A, b=B)``, then answers the tool's result; ``bad`` calls
    ``add`` with a string (an invalid call: an error result), then answers ``gave up``;
    ``spin`` asks for ``add(1, 1)`` at every step (never answers); anything else is
    answered at once, as it is. A task holding a word of ``AGENT_FAIL`` raises."""
    task = request.prompt
    if any(word in task for word in AGENT_FAIL):
        raise RuntimeError(f"agent backend failed on {task!r}")
    results = [m.content for m in request.messages if m.role == "tool"]
    words = task.split()
    if words[:1] == ["add"] and len(words) == 3:
        if results:
            return results[-1]
        return [ToolCall(id="c1", name="add", arguments={"a": int(words[1]),
                                                          "b": int(words[2])})]
    if words[:1] == ["bad"]:
        return "gave up" if results else [ToolCall(id="c1", name="add",
                                                   arguments={"a": "x", "b": 1})]
    if words[:1] == ["spin"]:
        return [ToolCall(id=f"c{len(results)}", name="add", arguments={"a": 1, "b": 1})]
    return task


@attrs.frozen
class AgentBackendOptions:
    """Options of the ``scripted-agent`` backend double: the model id it reports, and the
    fixed token usage of every reply (prompt, completion)."""

    model: str = "agent-1"
    prompt_tokens: int = 10
    completion_tokens: int = 5


class ScriptedAgentBackend(ScriptedBackend):
    """A backend double deciding agent steps by :func:`agent_reply`, with a fixed usage."""

    def __init__(self, options: AgentBackendOptions) -> None:
        super().__init__(agent_reply, model=options.model,
                         usage=Usage(options.prompt_tokens, options.completion_tokens))


class AddTool:
    """A tool double: ``add(a, b)`` of two integers, each call recorded in
    ``TOOL_CALLS``."""

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        return [ToolSpec(name="add", description="Add two integers.",
                         parameters={"type": "object", "required": ["a", "b"],
                                     "properties": {"a": {"type": "integer"},
                                                    "b": {"type": "integer"}}})]

    @hookimpl
    def aieng_call_tool(self, call: ToolCall) -> ToolResult | None:
        if call.name != "add":
            return None
        TOOL_CALLS.append((call.arguments["a"], call.arguments["b"]))
        return ToolResult(call.id, str(call.arguments["a"] + call.arguments["b"]))


def _last_number(text: str) -> float:
    word = text.split()[-1] if text.split() else ""
    try:
        return float(word)
    except ValueError:
        raise JudgeParseError(f"no number at the end of {text[-40:]!r}") from None


class AskingNumber(AskingJudge):
    """An AI judge double: asks the pipeline's backend ``rate: OUTPUT`` and reads the
    last word of the answer as the ``rated`` score. Over the echo backend an output
    ending in a number is a readable verdict; any other is unreadable (after the retry:
    no score, a judge failure)."""

    @hookimpl
    async def aieng_judge(self, sample: Sample) -> list[Score] | None:
        value = await self.ask([Message("user", f"rate: {sample.output}")], _last_number,
                               metric="rated", model=None, temperature=0.0, max_tokens=8,
                               schema=None, retries=1, example="a number")
        return None if value is None else [Score(name="rated", value=value)]


@attrs.frozen
class FlakyOptions:
    """Options of the flaky judge doubles: the metric and the value they give."""

    metric: str = "flaky"
    value: float = 1.0


class FlakyScore:
    """A judge double that fails as the test scripts it: it raises on an input holding a
    word of ``FAILING`` (a judge that broke), else gives its fixed score; every call is
    recorded in ``JUDGED``."""

    def __init__(self, options: FlakyOptions) -> None:
        self.options = options

    @hookimpl
    def aieng_judge(self, sample: Sample) -> list[Score]:
        JUDGED.append((self.options.metric, sample.input, sample.context))
        if any(word in sample.input for word in FAILING):
            raise RuntimeError(f"flaky judge broke on {sample.input!r}")
        return [Score(name=self.options.metric, value=self.options.value)]


class FlakyAsking(AskingJudge):
    """An AI judge double whose verdict cannot be read (after its retry: no score, a judge
    failure of its metric) on an input holding a word of ``FAILING``; else it reads the
    last word of the backend's answer (``rate: OUTPUT``) as ``metric``, or gives
    ``value`` when that is no number."""

    def __init__(self, options: FlakyOptions) -> None:
        super().__init__()
        self.options = options

    @hookimpl
    async def aieng_judge(self, sample: Sample) -> list[Score] | None:
        JUDGED.append((self.options.metric, sample.input, sample.context))
        broken = any(word in sample.input for word in FAILING)

        def parse(text: str) -> float:
            if broken:
                raise JudgeParseError(f"unreadable verdict {text[-40:]!r}")
            try:
                return _last_number(text)
            except JudgeParseError:
                return self.options.value

        value = await self.ask([Message("user", f"rate: {sample.output}")], parse,
                               metric=self.options.metric, model=None, temperature=0.0,
                               max_tokens=8, schema=None, retries=1, example="a number")
        return None if value is None else [Score(name=self.options.metric, value=value)]


class ScriptedRetriever:
    """A retriever double: one passage naming the query's first word."""

    @hookimpl
    def aieng_retrieve(self, query: Query, k: int) -> list[Hit]:
        first = query.text.split()[0] if query.text.split() else "nothing"
        return [Hit(document=Document(id=f"d-{first}", text=f"passage about {first}"),
                    score=1.0)]


@attrs.frozen
class BlockOptions:
    """Options of the ``block-word`` guard: the word that blocks a request (with
    ``redact``: the word replaced by ``[X]``, the request let through)."""

    word: str = "forbidden"
    redact: bool = False


class BlockWord:
    """An input guard blocking (or redacting) prompts that contain its word."""

    def __init__(self, options: BlockOptions) -> None:
        self.word = options.word
        self.redact = options.redact

    @hookimpl
    def aieng_guard_input(self, request: Request) -> GuardVerdict | None:
        if self.word not in request.prompt:
            return None
        if self.redact:
            return GuardVerdict(action="redact", text=request.prompt.replace(self.word, "[X]"))
        return GuardVerdict(action="block", text=request.prompt)


@hookimpl
def aieng_register_components(registry: ComponentRegistry) -> None:
    """Offer the doubles."""
    registry.add("scripted-echo", ScriptedEcho, options=EchoOptions)
    registry.add("block-word", BlockWord, options=BlockOptions)
    registry.add("exact-match", ExactMatch)
    registry.add("word-count", WordCount)
    registry.add("fixed-score", FixedScore, options=FixedOptions)
    registry.add("asking-number", AskingNumber)
    registry.add("flaky-score", FlakyScore, options=FlakyOptions)
    registry.add("flaky-asking", FlakyAsking, options=FlakyOptions)
    registry.add("scripted-retriever", ScriptedRetriever)
    registry.add("scripted-agent", ScriptedAgentBackend, options=AgentBackendOptions)
    registry.add("add-tool", AddTool)


def make_kernel() -> Kernel:
    """A kernel that sees this test plugin and aieng_eval, and no installed plugin."""
    import aieng_eval

    kernel = Kernel(entry_points=[], default_embedder=None, loop_block_threshold=None)
    kernel.load()
    for module, name, dist in ((sys.modules[__name__], "evalkit", "evalkit-test"),
                               (aieng_eval, "eval", "aieng-eval")):
        info = kernel.registry.register(module, name=name, distribution=dist, version="0.1.0")
        assert info.status == "loaded", info.error
    return kernel


def pipeline_file(folder: Path, *, mode: str = "echo", fail_on: str = "", delay: float = 0.0,
                  weights: str = "", name: str = "p", judges: bool = True,
                  journal: str = "") -> Path:
    """Write a pipeline file: the echo backend and (optionally) both judges."""
    text = (f'[pipeline]\nname = "{name}"\n\n[components.llm]\nuse = "scripted-echo"\n'
            f'mode = "{mode}"\nfail_on = "{fail_on}"\ndelay = {delay}\n'
            f'weights = "{weights}"\njournal = "{journal}"\n')
    if judges:
        text += '\n[components.em]\nuse = "exact-match"\n\n[components.wc]\nuse = "word-count"\n'
    path = folder / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def agent_pipeline_file(folder: Path, *, name: str = "agent",
                        stages: str = '["generate"]', guard: bool = False,
                        extra: str = "") -> Path:
    """Write an agent pipeline file: the agent backend double, the ``add`` tool and the
    ``exact-match`` judge, with ``stages`` (``""``: the key left out, so the judge stage
    runs), optionally the ``block-word`` guard first, and ``extra`` TOML appended."""
    head = f'[pipeline]\nname = "{name}"\n' + (f"stages = {stages}\n" if stages else "")
    text = head + ('\n[components.guard]\nuse = "block-word"\n' if guard else "") + (
        '\n[components.llm]\nuse = "scripted-agent"\n\n[components.tools]\nuse = "add-tool"\n'
        '\n[components.em]\nuse = "exact-match"\n') + extra
    path = folder / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def invoke(*args: str, kernel: Kernel | None = None) -> Result:
    """``aieng eval ARGS`` through click's runner on a fresh test kernel."""
    import aieng_eval

    group = click.Group("aieng")
    aieng_eval.aieng_register_commands(group)
    return CliRunner().invoke(group, ["eval", *args],
                              obj={"kernel": kernel or make_kernel()})


def echo_dataset(folder: Path, n: int, name: str = "ds.jsonl") -> Path:
    """n items ``q0 .. q{n-1}`` whose reference is the input (the echo backend matches)."""
    path = folder / name
    path.write_text("".join(json.dumps({"id": f"q{i}", "input": f"w{i}", "reference": f"w{i}"})
                            + "\n" for i in range(n)), encoding="utf-8")
    return path


def run_sync(pipeline: Path, dataset: Path, out: Path, **kwargs: Any) -> Any:
    """run_eval on a fresh test kernel, from sync code (the hash cache beside ``out``)."""
    from aieng_eval import run_eval

    kwargs.setdefault("hash_cache", out.parent / "hashes.json")
    return anyio.run(lambda: run_eval(pipeline, dataset, out=out, kernel=make_kernel(),
                                      **kwargs))


def sliced_run(folder: Path, *extra: str) -> Path:
    """``aieng eval run`` of 9 items over 4 topics (t0: 3 items, the others 2), 10
    resamples and ``extra`` options, into ``folder/run``."""
    rows = [{"id": f"i{i}", "input": f"w{i}", "reference": f"w{i}",
             "metadata": {"topic": f"t{i % 4}"}} for i in range(9)]
    ds = folder / "ds.jsonl"
    ds.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = folder / "run"
    result = invoke("run", str(pipeline_file(folder)), str(ds), "--out", str(out), "-q",
                    "--samples", "10", *extra)
    assert result.exit_code == 0, result.output
    return out
