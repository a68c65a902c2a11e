"""Every ``--json`` the built-in commands print is strict JSON (no bare ``NaN`` or
``Infinity``: ``jq`` and JavaScript refuse them), and the numbers in it read back exactly;
a progress bar names its unit and ends at the work done."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
import rich.console
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import (
    Completion,
    Document,
    Hit,
    Query,
    Request,
    ToolCall,
    Usage,
)
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from aieng_core.cli import _agent, _commands, _present, _rag, cli  # noqa: F401  (commands)
from aieng_core.testing import kernel_with
from aieng_core.testing.reference import AddTool

NOT_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def strict(text: str) -> Any:
    """``text`` read as strict JSON: a bare NaN / Infinity / -Infinity is an error."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


class Odd:
    """A model whose tool call has NaN in its arguments, then an answer."""

    @hookimpl
    def aieng_generate(self, request: Request) -> Completion:
        if request.messages[-1].role == "tool":
            return Completion(text="done", usage=Usage(5, 1))
        call = ToolCall(id="1", name="add", arguments={"a": float("nan"), "b": 1})
        return Completion(text="", finish_reason="tool_calls", tool_calls=(call,),
                          usage=Usage(7, 2))


class Weighed:
    """A retriever whose document's metadata holds numbers that are not finite."""

    @hookimpl
    def aieng_retrieve(self, query: Query, k: int) -> list[Hit]:
        metadata = {"weight": float("inf"), "lows": [float("-inf"), float("nan"), 0.1]}
        return [Hit(document=Document(id="d1", text="plate", metadata=metadata), score=2.5,
                    rank=1, source="docs")]


def _invoke(tmp_path: Path, *args: str) -> Any:
    (tmp_path / "p.toml").write_text(
        '[pipeline]\nname = "p"\n[components.llm]\nuse = "odd"\n'
        '[components.docs]\nuse = "weighed"\n[components.tools]\nuse = "adder"\n')
    kernel = kernel_with({"odd": Odd, "weighed": Weighed, "adder": AddTool})
    result = CliRunner().invoke(cli, [args[0], str(tmp_path / "p.toml"), *args[1:]],
                                obj={"kernel": kernel})
    assert result.exit_code == 0, result.output
    return strict(result.stdout)


def test_run_json_writes_numbers_that_are_not_finite_as_strings(tmp_path: Path) -> None:
    """A document's metadata (a JSONL corpus read by Python may hold ``NaN``) and a
    model's tool arguments reached ``aieng run --json`` as bare ``Infinity`` / ``NaN``:
    not JSON, and ``jq`` refused the whole document. They are strings now, as in
    ``aieng agent --json``."""
    data = _invoke(tmp_path, "run", "plate?", "--json")
    metadata = data["hits"][0]["document"]["metadata"]
    assert metadata == {"weight": "Infinity", "lows": ["-Infinity", "NaN", 0.1]}
    assert data["hits"][0]["score"] == 2.5
    arguments = data["completion"]["tool_calls"][0]["arguments"]
    assert arguments == {"a": "NaN", "b": 1}
    usage = data["completion"]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (7, 2)


def test_agent_json_is_strict_and_its_totals_add_up(tmp_path: Path) -> None:
    """``aieng agent --json``: strict JSON; tokens are ints, and the run's usage is the
    sum of its steps' (by definition: every model call finished in a step)."""
    data = _invoke(tmp_path, "agent", "add", "--json")
    assert data["status"] == "answered"
    steps = data["steps"]
    prompt = sum(s["usage"]["prompt_tokens"] for s in steps)
    completion = sum(s["usage"]["completion_tokens"] for s in steps)
    assert (data["usage"]["prompt_tokens"], data["usage"]["completion_tokens"]) == (12, 3)
    assert (prompt, completion) == (12, 3)
    assert data["tokens"] == 15 and isinstance(data["tokens"], int)
    assert data["duration_s"] >= sum(s["duration_s"] for s in steps) >= 0


def test_ask_json_is_strict(tmp_path: Path) -> None:
    """``aieng ask --json`` (its hits' scores and timings) reads as strict JSON."""
    data = _invoke(tmp_path, "ask", "plate?", "--json")
    assert [(h["id"], h["score"]) for h in data["hits"]] == [("d1", 2.5)]
    assert all(math.isfinite(ms) for ms in data["stages_ms"].values())


@pytest.mark.parametrize("command", ["plugins", "hooks"])
def test_listing_json_is_strict(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--json"],
                                obj={"kernel": kernel_with({"odd": Odd})})
    assert result.exit_code == 0, result.output
    assert strict(result.stdout)


def test_bench_retrieval_json_is_strict(tmp_path: Path) -> None:
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(
        '{"_id": "d1", "text": "plate"}\n{"_id": "d2", "text": "bowl"}\n')
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "plate"}\n')
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    (tmp_path / "p.toml").write_text(
        '[pipeline]\nname = "p"\n[components.docs]\nuse = "memory"\n')
    result = CliRunner().invoke(cli, ["bench", "retrieval", str(tmp_path / "p.toml"),
                                      str(beir), "--json"])
    assert result.exit_code == 0, result.output
    data = strict(result.stdout)
    assert (data["documents"], data["queries"], data["ndcg@10"]) == (2, 1, 1.0)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=20)


def _same(given_value: Any, read: Any) -> bool:
    """Whether ``read`` is ``given_value`` as JSON holds it: tuples as lists, numbers that
    are not finite as their names, every other number exactly."""
    if isinstance(given_value, float) and not math.isfinite(given_value):
        named = NOT_FINITE.get(read) if isinstance(read, str) else None
        return named is not None and (math.isnan(named) if math.isnan(given_value)
                                      else named == given_value)
    if isinstance(given_value, (list, tuple)):
        return (isinstance(read, list) and len(read) == len(given_value)
                and all(_same(g, r) for g, r in zip(given_value, read)))
    if isinstance(given_value, dict):
        return (isinstance(read, dict) and list(read) == list(given_value)
                and all(_same(given_value[k], read[k]) for k in given_value))
    return type(read) is type(given_value) and read == given_value


@given(_json)
def test_json_document_is_strict_and_reads_back(value: Any) -> None:
    """For any JSON-able value: the document is strict JSON, finite numbers (ints past
    2**53 too) read back exactly, the others as their names."""
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdout", out)
        _present.json_document(value)
    assert _same(value, strict(out.getvalue()))


def test_a_progress_bar_names_its_unit_and_ends_at_the_work_done(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown total (documents streamed) showed ``5/?`` at the end and no unit; it
    ends ``5/5 documents``. A known total ends at it exactly."""
    out = io.StringIO()
    real = rich.console.Console

    def terminal(**kwargs: Any) -> rich.console.Console:
        return real(file=out, force_terminal=True, color_system=None, width=100, **{
            k: v for k, v in kwargs.items() if k != "stderr"})

    monkeypatch.setattr(_present, "Console", terminal)
    with _present.progress("indexing", total=None, unit="documents") as advance:
        advance(2)
        advance(3)
    with _present.progress("querying", total=4, unit="queries") as advance:
        for _ in range(4):
            advance(1)
    text = out.getvalue()
    assert "5/5 documents" in text and "5/?" not in text.rsplit("indexing", 1)[-1]
    assert "4/4 queries" in text and "5/4" not in text
