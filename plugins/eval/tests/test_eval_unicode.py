"""Text the run cannot choose: file names that are not UTF-8 and errors quoting half an
emoji still give a lockfile and reports, which read back the same."""

from __future__ import annotations

import json
import os
from pathlib import Path

import _evalkit as kit
import anyio
from aieng_eval import run_eval
from aieng_eval.report import write_reports


def run(pipeline: Path, dataset: Path, out: Path):  # type: ignore[no-untyped-def]
    """run_eval on a fresh test kernel, from sync code."""
    return anyio.run(lambda: run_eval(pipeline, dataset, out=out, kernel=kit.make_kernel(),
                                      hash_cache=out.parent / "hashes.json"))


def test_a_dataset_whose_file_name_is_not_utf8(tmp_path: Path) -> None:
    """A dataset named in Latin-1 bytes (Python reads the name with surrogate escapes):
    the run writes its lockfile and reports (the lockfile's path reads back as the
    file's), and the same command resumes."""
    name = os.fsdecode(b"caf\xe9.jsonl")
    dataset = tmp_path / name
    dataset.write_text('{"id": "a", "input": "x y", "reference": "x y"}\n', encoding="utf-8")
    pipeline, out = kit.pipeline_file(tmp_path), tmp_path / "run"
    first = run(pipeline, dataset, out)
    assert first.ran == 1 and not first.failed
    lock = json.loads((out / "lock.json").read_text(encoding="utf-8"))
    assert Path(lock["dataset"]["path"]) == dataset.resolve()
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "caf\\udce9.jsonl" in report  # the undecodable byte, shown escaped
    again = run(pipeline, dataset, out)
    assert again.ran == 0 and again.skipped == 1


def test_an_error_quoting_half_an_emoji_is_reported(tmp_path: Path) -> None:
    """A judge whose error quotes an output cut in the middle of a UTF-16 pair fails its
    item: the run still writes summary.json (the error reads back exactly), report.md and
    report.html (the half shown escaped)."""
    dataset = tmp_path / "ds.jsonl"
    dataset.write_text('{"id": "a", "input": "boom x"}\n{"id": "b", "input": "fine"}\n',
                       encoding="utf-8")
    pipeline = tmp_path / "p.toml"
    pipeline.write_text('[pipeline]\nname = "p"\n\n[components.llm]\nuse = "scripted-echo"\n'
                        'mode = "half"\n\n[components.fixed]\nuse = "fixed-score"\n'
                        'raise_on = "boom"\n', encoding="utf-8")
    out = tmp_path / "run"
    result = run(pipeline, dataset, out)
    (failed,) = result.failed
    assert "boom x \ud83d" in failed.error
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["failures"][0]["error"] == failed.error
    assert summary["counts"] == {"total": 2, "ok": 1, "blocked": 0, "error": 1}
    for report in ("report.md", "report.html"):
        assert "boom x \\ud83d" in (out / report).read_text(encoding="utf-8")
    rebuilt = write_reports(out, result.results, result.lock, samples=10)
    assert rebuilt["failures"] == summary["failures"]


def test_compare_runs_in_folders_named_in_latin1(tmp_path: Path) -> None:
    """Runs whose folders are named in Latin-1 bytes compare: compare.md and report.html
    are written (the names shown escaped), not a traceback."""
    dataset = tmp_path / "ds.jsonl"
    dataset.write_text('{"id": "a", "input": "x y", "reference": "x y"}\n', encoding="utf-8")
    runs = [tmp_path / os.fsdecode(name) for name in (b"r\xe9-1", b"r\xe9-2")]
    for out in runs:
        assert not run(kit.pipeline_file(tmp_path), dataset, out).failed
    out = tmp_path / "cmp"
    result = kit.invoke("compare", *map(str, runs), "--out", str(out), "--samples", "10",
                        "--json")
    assert result.exit_code == 0, result.output
    assert "r\\udce9-1" in (out / "compare.md").read_text(encoding="utf-8")
    assert "r\\udce9-2" in (out / "report.html").read_text(encoding="utf-8")
    assert json.loads((out / "comparison.json").read_text(encoding="utf-8"))
