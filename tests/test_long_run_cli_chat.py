"""The long run for ``aieng chat``: a session of thousands of turns under
``--context-chars`` holds a window of the conversation, not all of it (memory and the work
of a turn flat), reads a large history a line at a time, appends each turn to its file
(never rewriting it), and still tells the model how many turns were left out."""

from __future__ import annotations

import gc
import json
import re
import tracemalloc
from pathlib import Path

import click.testing
from aieng_hookspecs.types import Request, ToolCall
from click.testing import CliRunner, Result

from aieng_core.agent import _messages
from aieng_core.cli import _chat, cli
from aieng_core.testing import ScriptedBackend, kernel_with
from aieng_core.testing.reference import AddTool

NOTE = re.compile(r"\[left out to fit the context: (\d+) earlier messages, (\d+) characters\]")


def _chat_run(tmp_path: Path, lines: str, answer: object, *args: str) -> Result:
    path = tmp_path / "chat.toml"
    path.write_text('[pipeline]\nname = "chat"\n[components.llm]\nuse = "model"\n',
                    encoding="utf-8")
    assert _chat.chat.name == "chat"
    # keep=1: the double's own record of requests is not what a long test measures
    kernel = kernel_with({"model": lambda: ScriptedBackend(answer, keep=1)})  # type: ignore[arg-type]
    return CliRunner().invoke(cli, ["chat", str(path), *args], input=lines,
                              obj={"kernel": kernel})


def _turns(n: int) -> str:
    return "".join(f"turn {i} " + "w" * 80 + "\n" for i in range(n))


def test_a_long_session_holds_a_window_not_every_turn(tmp_path: Path) -> None:
    """1,000 turns under --context-chars 2000: between turn 200 and turn 900 the process
    keeps no more memory (the chat held every turn's messages in a list for the whole
    session, about 400 bytes a turn: 280 KB here, gigabytes over weeks), and each turn
    measures as many messages as the first ones did (fitting a list that only grows cost
    more each turn)."""
    first, last, turns = 200, 900, 1_000
    taken: dict[int, tracemalloc.Snapshot] = {}
    sized = {"calls": 0}
    per_turn: dict[int, int] = {}
    original = _messages.size

    def counting(message: object) -> int:
        sized["calls"] += 1
        return original(message)  # type: ignore[arg-type]

    def answer(request: Request) -> str:
        turn = int(request.messages[-1].content.split()[1])
        if turn in (first, first + 1, last - 1, last):
            per_turn[turn] = sized["calls"]
        if turn in (first, last):
            gc.collect()
            # the test's snapshots and the runner's capture of standard output are not
            # the chat's
            taken[turn] = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, path)
                 for path in (click.testing.__file__, tracemalloc.__file__)])
        return f"answer {turn} " + "a" * 60

    _messages.size = counting  # type: ignore[assignment]  # fit calls it per message
    tracemalloc.start(1)
    try:
        result = _chat_run(tmp_path, _turns(turns), answer, "--context-chars", "2000")
    finally:
        tracemalloc.stop()
        _messages.size = original
    assert result.exit_code == 0, result.output
    stats = taken[last].compare_to(taken[first], "lineno")
    grown = sum(s.size_diff for s in stats)
    assert grown < 64 * (last - first), "\n".join(
        [f"{grown:,} B kept over {last - first} turns", *map(str, stats[:5])])
    early = per_turn[first + 1] - per_turn[first]
    late = per_turn[last] - per_turn[last - 1]
    assert late <= early + 4, (early, late)


def test_the_note_counts_the_turns_let_go_and_reset_forgets_them(tmp_path: Path) -> None:
    """The model is told how many earlier messages were left out, those the window let go
    of included: with what it gets, they make up the whole conversation. After /reset no
    note is left (and the window starts again)."""
    seen: list[Request] = []

    def answer(request: Request) -> str:
        seen.append(request)
        return "ok " + "b" * 50

    result = _chat_run(tmp_path, _turns(400) + "/reset\nafter\n", answer, "--system",
                       "be brief", "--context-chars", "1500")
    assert result.exit_code == 0, result.output
    for turn, request in enumerate(seen[:400]):
        sent = request.messages
        assert sum(map(_messages.size, sent)) <= 1500
        found = NOTE.search(sent[0].content)
        others = [m for m in sent if m.role != "system"]
        total = 2 * turn + 1  # the turns before, each a question and an answer, and this one
        assert (int(found[1]) if found else 0) + len(others) == total, (turn, found)
    assert [m.content for m in seen[-1].messages] == ["be brief", "after"]


def test_a_large_history_is_read_a_line_at_a_time(tmp_path: Path) -> None:
    """A 6 MB history and --context-chars 4000: reading it holds at most a few hundred KB
    (it was read whole, split, and every message kept: several times the
    file's size), and the chat goes on from its last turn."""
    history = tmp_path / "history.jsonl"
    with history.open("w", encoding="utf-8") as out:
        out.write(json.dumps({"role": "system", "content": "be brief"}) + "\n")
        for i in range(30_000):
            role = "user" if i % 2 == 0 else "assistant"
            out.write(json.dumps({"role": role, "content": f"{i} " + "h" * 180}) + "\n")
    size = history.stat().st_size
    peaks: list[int] = []

    def answer(request: Request) -> str:
        peaks.append(tracemalloc.get_traced_memory()[1])
        assert request.messages[-2].content.startswith("29999 ")
        return "fine"

    tracemalloc.start(1)
    try:
        result = _chat_run(tmp_path, "go on\n", answer, "--history", str(history),
                           "--context-chars", "4000")
    finally:
        tracemalloc.stop()
    assert result.exit_code == 0, result.output
    assert peaks and peaks[0] < size // 4, f"peak {peaks[0]:,} B for a {size:,} B file"


def test_each_turn_is_appended_never_the_file_rewritten(tmp_path: Path) -> None:
    """300 turns write the history file 300 times at its end, each turn's bytes once (no
    whole-file rewrite per turn: O(n^2) bytes over a session); only /reset replaces it."""
    history = tmp_path / "history.jsonl"
    rewrites: list[int] = []
    original = _chat.replace_file

    def counted(path: object, data: bytes, **kwargs: object) -> None:
        rewrites.append(len(data))
        original(path, data, **kwargs)  # type: ignore[arg-type]

    _chat.replace_file = counted  # type: ignore[assignment]
    try:
        result = _chat_run(tmp_path, _turns(300), lambda r: "ok", "--history", str(history),
                           "--context-chars", "1000")
    finally:
        _chat.replace_file = original
    assert result.exit_code == 0, result.output
    assert rewrites == []
    written = history.read_text(encoding="utf-8").splitlines()
    assert len(written) == 600 and written[-2].startswith('{"role": "user", "content": "turn 299')


def test_agent_turns_are_held_in_the_window_too(tmp_path: Path) -> None:
    """150 ``--agent`` turns of a tool call each under --context-chars 1500: the model is told
    of every message left out (the turns the chat let go of, in a note of their own, and
    those the step's fitting left out), which with what it gets make up the conversation."""
    seen: list[Request] = []

    def model(request: Request) -> object:
        seen.append(request)
        if request.messages[-1].role == "tool":
            return f"it is {request.messages[-1].content} " + "z" * 40
        return [ToolCall(id=f"c{len(seen)}", name="add", arguments={"a": 2, "b": 3})]

    path = tmp_path / "chat.toml"
    path.write_text('[pipeline]\nname = "chat"\n[components.llm]\nuse = "model"\n'
                    '[components.adder]\nuse = "adder"\n', encoding="utf-8")
    kernel = kernel_with({"model": lambda: ScriptedBackend(model, keep=1),  # type: ignore[arg-type]
                          "adder": AddTool})
    result = CliRunner().invoke(cli, ["chat", str(path), "--agent", "--context-chars", "1500",
                                      "--system", "be brief"], input=_turns(150),
                                obj={"kernel": kernel})
    assert result.exit_code == 0, result.output
    sent = seen[-1].messages
    assert sum(map(_messages.size, sent)) <= 1500
    left = sum(int(found[1]) for found in NOTE.finditer(sent[0].content))
    # each turn before: the question, the call, its result, the answer; then this one's three
    assert left + sum(m.role != "system" for m in sent) == 4 * 149 + 3
