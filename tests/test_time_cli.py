"""Time as the CLI shows it: TTFT, TPOT and a run's seconds read on the monotonic clock
(``time.perf_counter``, moved here by hand: no test measures real time), a summary line
after each agent turn of ``aieng chat --agent``, and duration options that take seconds
only (a usage error naming the option for ``0``, ``nan``, ``inf``, ``30s``)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Completion, Delta, Request, ToolCall, Usage
from click.testing import CliRunner, Result

from aieng_core.cli import _agent, _chat, _commands, _rag, cli
from aieng_core.testing import ManualClock, ScriptedBackend, kernel_with
from aieng_core.testing.reference import AddTool

WORDS = ["one", "two", "three", "four", "five"]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> ManualClock:
    """``time.perf_counter`` (the kernel's and the agent's clock) moved by hand; the wall
    clock (``time.time``) is set back an hour at every reading, as an NTP step would: what
    the CLI shows must not depend on it."""
    hand = ManualClock(1000.0)
    wall = ManualClock(1_700_000_000.0)

    def stepping_back() -> float:
        wall.now -= 3600.0
        return wall.now

    monkeypatch.setattr(time, "perf_counter", hand)
    monkeypatch.setattr(time, "time", stepping_back)
    return hand


class Ticking:
    """A backend taking 0.5 s of the clock to its first token and 0.1 s for each next one
    (five tokens: 0.9 s in all), streamed or not."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock

    @hookimpl
    def aieng_generate(self, request: Request) -> Completion:
        self.clock.now += 0.9
        return Completion(text=" ".join(WORDS), usage=Usage(3, len(WORDS)))

    @hookimpl
    def aieng_stream(self, request: Request) -> AsyncIterator[Delta]:
        return self._deltas()

    async def _deltas(self) -> AsyncIterator[Delta]:
        for index, word in enumerate(WORDS):
            self.clock.now += 0.5 if index == 0 else 0.1
            yield Delta(text=word if index == 0 else f" {word}", index=index)
        yield Delta(text="", index=len(WORDS), finish_reason="stop",
                    usage=Usage(3, len(WORDS)))


class Adder:
    """Asks for add(2, 3), then answers with its result; each call takes 1.5 s of the
    clock."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock

    @hookimpl
    def aieng_generate(self, request: Request) -> Completion:
        self.clock.now += 1.5
        last = request.messages[-1]
        if last.role == "tool":
            return Completion(text=f"it is {last.content}", usage=Usage(4, 3))
        call = ToolCall(id=f"c{len(request.messages)}", name="add", arguments={"a": 2, "b": 3})
        return Completion(text="", finish_reason="tool_calls", tool_calls=(call,),
                          usage=Usage(4, 1))


def invoke(tmp_path: Path, clock: ManualClock, *args: str, input: str | None = None,
           tools: bool = False) -> Result:
    path = tmp_path / "p.toml"
    extra = '[components.tools]\nuse = "adder"\n' if tools else ""
    path.write_text(f'[pipeline]\nname = "timed"\n[components.llm]\nuse = "{args[1]}"\n'
                    f"{extra}", encoding="utf-8")
    kernel = kernel_with({"ticking": lambda: Ticking(clock), "adder-model": lambda: Adder(clock),
                          "adder": AddTool, "stuck": lambda: ScriptedBackend(delay=3600.0)})
    assert (_rag.ask.name, _agent.agent.name, _chat.chat.name) == ("ask", "agent", "chat")
    return CliRunner().invoke(cli, [args[0], str(path), *args[2:]], input=input,
                              obj={"kernel": kernel})


def test_ask_json_times_first_token_and_each_next_one_on_the_monotonic_clock(
        tmp_path: Path, clock: ManualClock) -> None:
    """``aieng ask --json``: TTFT is the 0.5 s to the first token and TPOT the 0.1 s of each
    next one, in milliseconds, read on the monotonic clock while the wall clock steps back
    an hour at every reading (it gave neither a negative nor an hour-long time)."""
    result = invoke(tmp_path, clock, "ask", "ticking", "what?", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["answer"] == " ".join(WORDS)
    assert (data["ttft_ms"], data["tpot_ms"]) == (pytest.approx(500.0), pytest.approx(100.0))
    assert data["stages_ms"]["generate"] == pytest.approx(900.0)


def test_ask_shows_the_timings_with_their_units(tmp_path: Path, clock: ManualClock) -> None:
    """The answer's timings are shown after it with their unit: ``TTFT 500.0 ms, TPOT
    100.0 ms``."""
    result = invoke(tmp_path, clock, "ask", "ticking", "what?", "--stream")
    assert result.exit_code == 0, result.output
    assert "TTFT 500.0 ms, TPOT 100.0 ms" in result.stdout
    assert "generate 900.0 ms" in result.stdout


def test_agent_summary_counts_the_seconds_on_the_monotonic_clock(
        tmp_path: Path, clock: ManualClock) -> None:
    """``aieng agent``'s summary line ends with the run's seconds: two model calls of 1.5 s
    each, 3.00 s, whatever the wall clock did meanwhile."""
    result = invoke(tmp_path, clock, "agent", "adder-model", "2+3?", tools=True)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[-1].endswith(", 3.00 s"), result.stderr


def test_chat_agent_prints_a_summary_line_after_each_turn(
        tmp_path: Path, clock: ManualClock) -> None:
    """``aieng chat --agent`` showed a turn's steps but not its totals, which ``aieng
    agent`` ends with: each turn now ends with the same summary line on stderr (status,
    steps, tool calls, tokens, seconds); standard output holds the answers only."""
    result = invoke(tmp_path, clock, "chat", "adder-model", "--agent", input="2+3?\nagain?\n",
                    tools=True)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["it is 5", "it is 5"]
    summaries = [line for line in result.stderr.splitlines() if line.startswith("answered:")]
    line = "answered: 2 steps, 1 tool call, 12 tokens (8 prompt, 4 completion), 3.00 s"
    assert summaries == [line, line], result.stderr
    # each summary comes after its turn's steps
    lines = result.stderr.splitlines()
    assert [i for i, line in enumerate(lines) if line.startswith("answered:")] == [2, 5]


def test_chat_agent_summary_of_a_turn_without_an_answer(tmp_path: Path,
                                                        clock: ManualClock) -> None:
    """A turn cut by --max-steps has its summary line, then why it did not answer."""
    result = invoke(tmp_path, clock, "chat", "adder-model", "--agent", "--max-steps", "1",
                    input="2+3?\n", tools=True)
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[-2].startswith("max_steps: 1 step, 1 tool call, 5 tokens"), lines
    assert lines[-2].endswith(", 1.50 s") and lines[-1].startswith("aieng: no answer:")


@pytest.mark.parametrize(("value", "says"), [
    ("0", "above 0"), ("-1", "above 0"), ("nan", "above 0"), ("inf", "above 0"),
    ("1e309", "above 0"), ("abc", "takes seconds as a number"),
    ("30s", "give --timeout 30"), ("2m", "give --timeout 120"),
    ("500ms", "give --timeout 0.5"), ("1.5 h", "give --timeout 5400"),
    ("3 fortnights", "takes seconds as a number"),
])
def test_agent_timeout_takes_seconds_only(tmp_path: Path, clock: ManualClock, value: str,
                                          says: str) -> None:
    """``--timeout`` is a number of seconds above 0: ``nan`` and ``inf`` were let through
    to fail as a ValueError naming no option (exit 1), and ``30s`` was "not a valid float
    range". Each is a usage error (exit 2) naming the option and its unit now, and a
    number written with a unit says the number of seconds to give instead."""
    result = invoke(tmp_path, clock, "agent", "adder-model", "2+3?", "--timeout", value,
                    tools=True)
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert "'--timeout'" in message and "seconds" in message and says in message, message


@pytest.mark.parametrize("value", ["30", "2.5", " 1e3 "])
def test_agent_timeout_takes_a_number_of_seconds(tmp_path: Path, clock: ManualClock,
                                                 value: str) -> None:
    """A plain number is seconds: the run goes through."""
    result = invoke(tmp_path, clock, "agent", "adder-model", "2+3?", "--timeout", value,
                    tools=True)
    assert result.exit_code == 0, result.output


def test_a_run_cut_by_timeout_names_the_limit_and_how_to_raise_it(tmp_path: Path,
                                                                  clock: ManualClock) -> None:
    """A run the --timeout cut short says which limit it was, its value and what to do:
    ``timeout (the run took longer than 0.05 s): give a larger --timeout (it was 0.05 s)``.
    (The backend would answer after an hour: the deadline fires first on any machine.)"""
    result = invoke(tmp_path, clock, "agent", "stuck", "hi", "--timeout", "0.05")
    assert result.exit_code == 1, result.output
    last = result.stderr.splitlines()[-1]
    assert re.fullmatch(r"aieng: the agent did not answer: timeout \(.*0\.05 s\): give a "
                        r"larger --timeout \(it was 0\.05 s\) to let the run go on longer",
                        last), last


@pytest.fixture
def st_johns(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local zone set to Newfoundland's (UTC-03:30, a half-hour offset) for
    the test, then put back."""
    monkeypatch.setenv("TZ", "America/St_Johns")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("st_johns")
def test_run_json_writes_event_times_as_utc_epoch_seconds(tmp_path: Path) -> None:
    """``aieng run --json`` writes each event's ``ts`` as seconds since the epoch, which no
    zone changes: under ``TZ=America/St_Johns`` they lie between the epoch seconds read
    before and after the run (a local time would be 3.5 hours off), and the run's
    durations are seconds, not negative."""
    path = tmp_path / "p.toml"
    path.write_text('[pipeline]\n[components.llm]\nuse = "scripted"\n', encoding="utf-8")
    kernel = kernel_with({"scripted": ScriptedBackend})
    assert _commands.run.name == "run"  # imported: the command is registered
    before = time.time()
    result = CliRunner().invoke(cli, ["run", str(path), "hi", "--json"],
                                obj={"kernel": kernel})
    after = time.time()
    assert result.exit_code == 0, result.output
    assert time.localtime(before).tm_gmtoff in (-12600, -9000)  # the zone took effect
    data = json.loads(result.stdout)
    stamps = [event["ts"] for event in data["events"]]
    assert stamps and all(before <= ts <= after for ts in stamps), (before, stamps, after)
    assert all(stage["duration_s"] >= 0 for stage in data["stages"])
