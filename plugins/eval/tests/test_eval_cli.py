"""``aieng eval`` end to end: run, reports, replay, compare, errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import _evalkit as kit
import pytest
from aieng_eval import read_results


@pytest.fixture(autouse=True)
def _reset() -> None:
    """Each test starts with no recorded calls."""
    kit.CALLS.clear()


def dataset(folder: Path, rows: list[dict[str, object]], name: str = "ds.jsonl") -> Path:
    """Write rows as a JSON Lines dataset."""
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def two_word_items(n: int = 40) -> list[dict[str, object]]:
    """``a{i} b{i}``; references alternate between the first and the last word (slice
    ``even`` / ``odd``); the label is 1 on odd items."""
    rows: list[dict[str, object]] = []
    for i in range(n):
        text = f"a{i} b{i}"
        rows.append({"id": f"i{i}", "input": text,
                     "reference": f"a{i}" if i % 2 == 0 else f"b{i}",
                     "slice": "even" if i % 2 == 0 else "odd", "label": i % 2})
    return rows


def test_a_resume_over_changed_files_is_refused_or_warned(tmp_path: Path) -> None:
    """Changed weights refuse a resume (exit 1, naming the file); a changed file the run
    writes itself (a cache) resumes with a warning line."""
    ds = dataset(tmp_path, two_word_items(4))
    weights, journal = tmp_path / "w.bin", tmp_path / "journal.txt"
    weights.write_bytes(b"v1")
    journal.write_text("", encoding="utf-8")
    pipeline = str(kit.pipeline_file(tmp_path, weights=str(weights), journal=str(journal)))
    out = str(tmp_path / "run")
    assert kit.invoke(pipeline, str(ds), "--out", out, "-q", "--limit", "2").exit_code == 0
    journal.write_text("edited\n", encoding="utf-8")
    resumed = kit.invoke(pipeline, str(ds), "--out", out, "-q", "--limit", "3")
    assert resumed.exit_code == 0, resumed.output
    assert re.search(r"warning: resuming .*journal\.txt .*changed", resumed.output)
    assert "ran 1 items, 2 already done" in resumed.output
    weights.write_bytes(b"v2")
    refused = kit.invoke(pipeline, str(ds), "--out", out, "-q")
    assert refused.exit_code == 1 and re.search(r"w\.bin .*changed.*--force", refused.output)
    forced = kit.invoke(pipeline, str(ds), "--out", out, "-q", "--force")
    assert forced.exit_code == 0 and "ran 4 items, 0 already done" in forced.output


def test_judge_failures_are_counted_in_the_summary(tmp_path: Path) -> None:
    """An AI judge that could not read its verdict on some items: the CLI summary and
    --json say how often, per judge."""
    ds = dataset(tmp_path, [{"id": "a", "input": "x 1"}, {"id": "b", "input": "x y"},
                            {"id": "c", "input": "z"}])
    pipeline = tmp_path / "p.toml"
    pipeline.write_text('[pipeline]\nname = "p"\n\n[components.llm]\nuse = "scripted-echo"'
                        '\n\n[components.rate]\nuse = "asking-number"\n', encoding="utf-8")
    out = str(tmp_path / "run")
    result = kit.invoke(str(pipeline), str(ds), "--out", out, "-q")
    assert result.exit_code == 0, result.output
    assert "judge rate gave no score 2 time(s) on 2 item(s)" in result.output
    rebuilt = kit.invoke("report", out)
    assert "judge rate gave no score 2 time(s)" in rebuilt.output
    for report in ("report.md", "report.html"):  # both reports have the section
        assert "Judge failures" in (tmp_path / "run" / report).read_text(encoding="utf-8")


def test_run_writes_results_lock_and_reports(tmp_path: Path) -> None:
    """A run prints the summary and writes results, lockfile and both reports, whose
    numbers are the run's: per-metric mean, CI and n, slices, agreement, failures."""
    ds = dataset(tmp_path, two_word_items(20) + [{"id": "bad", "input": "boom now",
                                                  "reference": "x"}])
    out = tmp_path / "run"
    result = kit.invoke(str(kit.pipeline_file(tmp_path, mode="first", fail_on="boom")),
                        str(ds), "--out", str(out), "--quiet", "--seed", "4")
    assert result.exit_code == 1, result.output  # one item failed
    assert "1 item(s) failed" in result.output
    assert re.search(r"exact_match\s+mean 0\.5000\s+95% CI \[0\.\d+, 0\.\d+\]\s+n=20",
                     result.output)
    assert {p.name for p in out.iterdir()} >= {"results.jsonl", "lock.json", "report.md",
                                                "report.html", "summary.json"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"total": 21, "ok": 20, "blocked": 0, "error": 1}
    assert summary["metrics"]["exact_match"]["mean"] == 0.5
    assert summary["slices"]["slice"]["even"]["metrics"]["exact_match"]["mean"] == 1.0
    assert summary["slices"]["slice"]["odd"]["metrics"]["exact_match"]["mean"] == 0.0
    # labels are 1 on odd items, where "first" misses: perfect disagreement
    assert summary["agreement"]["exact_match"]["kappa"] == pytest.approx(-1.0)
    assert summary["agreement"]["exact_match"]["spearman"] == pytest.approx(-1.0)
    assert summary["agreement"]["words"]["spearman"] is None  # constant: undefined
    md = (out / "report.md").read_text()
    assert "| exact_match | em | 0.500 |" in md and "| 20 |" in md
    assert "## Slices by `slice`" in md and "| even | 10 | 0 |" in md
    assert "Cohen's κ" in md and "-1.000" in md
    assert "`bad` (line 21): HookError" in md and "scripted failure" in md
    html = (out / "report.html").read_text()
    assert "<svg" in html and "exact_match" in html and "0.500" in html
    assert "label against judge score" in html and "scripted failure" in html


def test_html_is_self_contained(tmp_path: Path) -> None:
    """The HTML report fetches nothing: no script, no external src or href, no import."""
    ds = dataset(tmp_path, two_word_items(6))
    out = tmp_path / "run"
    assert kit.invoke(str(kit.pipeline_file(tmp_path)), str(ds), "--out", str(out),
                      "-q").exit_code == 0
    html = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert "<script" not in html.lower() and "@import" not in html
    assert "http://" not in html and "https://" not in html
    assert html.count("<svg") >= 3  # means, histograms, slices


def test_rerun_resumes_and_json_summary(tmp_path: Path) -> None:
    """The same command again runs nothing new and says so; --json prints the summary."""
    ds = dataset(tmp_path, two_word_items(8))
    pipeline = str(kit.pipeline_file(tmp_path))
    out = str(tmp_path / "run")
    assert kit.invoke(pipeline, str(ds), "--out", out, "-q", "--limit", "5").exit_code == 0
    result = kit.invoke(pipeline, str(ds), "--out", out, "-q", "--json")
    data = json.loads(result.stdout[result.stdout.index("{"):])
    assert (data["ran"], data["skipped"], data["counts"]["total"]) == (3, 5, 8)


def test_judge_pipeline_option(tmp_path: Path) -> None:
    """--judge-pipeline adds the second pipeline's judges' scores to the summary."""
    ds = dataset(tmp_path, two_word_items(4))
    judges = tmp_path / "judges.toml"
    judges.write_text('[pipeline]\nname = "j"\n[components.llm]\nuse = "scripted-echo"\n'
                      '[components.m]\nuse = "exact-match"\n')
    result = kit.invoke(str(kit.pipeline_file(tmp_path, mode="first", judges=False)),
                        str(ds), "--out",
                        str(tmp_path / "run"), "-q", "--judge-pipeline", str(judges))
    assert result.exit_code == 0, result.output
    assert re.search(r"exact_match\s+mean 0\.5000 .* n=4", result.output)
    replayed = kit.invoke("replay", str(tmp_path / "run"), "-q")
    assert replayed.exit_code == 0 and "outputs and scores match" in replayed.output


def test_replay_warns_when_a_model_file_changed(tmp_path: Path) -> None:
    """A file a component was given (its weights) that changed since the run is named in
    the replay's warnings, with both hashes."""
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"v1")
    ds = dataset(tmp_path, two_word_items(2))
    run_dir = tmp_path / "run"
    assert kit.invoke(str(kit.pipeline_file(tmp_path, weights=str(weights))), str(ds),
                      "--out", str(run_dir), "-q").exit_code == 0
    weights.write_bytes(b"v2")
    result = kit.invoke("replay", str(run_dir), "-q")
    assert result.exit_code == 0
    assert re.search(rf"warning: file {re.escape(str(weights))} changed \(sha256 \w{{12}} -> "
                     r"\w{12}\)", result.output)


def test_default_run_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --out the run goes to eval-runs/PIPELINE__DATASET (so reruns resume)."""
    monkeypatch.chdir(tmp_path)
    ds = dataset(tmp_path, two_word_items(3))
    assert kit.invoke("run", str(kit.pipeline_file(tmp_path)), str(ds), "-q").exit_code == 0
    assert (tmp_path / "eval-runs" / "p__ds" / "results.jsonl").exists()


def test_malformed_dataset_exits_2_naming_the_line(tmp_path: Path) -> None:
    """A bad line stops the run before anything runs: exit 2, file and line named."""
    ds = tmp_path / "ds.jsonl"
    ds.write_text('{"input": "ok"}\n{"input": ["x"]}\n')
    result = kit.invoke(str(kit.pipeline_file(tmp_path)), str(ds), "--out",
                        str(tmp_path / "run"), "-q")
    assert result.exit_code == 2
    assert f"{ds} line 2: input[0] must be an object" in result.output
    assert kit.CALLS == []


def test_bad_pipeline_and_foreign_run_dir(tmp_path: Path) -> None:
    """An invalid pipeline file exits 2 with the key; a run directory of another pipeline
    exits 1 and says to use --force, which then starts over."""
    ds = dataset(tmp_path, two_word_items(3))
    bad = tmp_path / "bad.toml"
    bad.write_text('[pipeline]\nname = "b"\n[components.llm]\nuse = "scripted-echo"\n'
                   'mood = "x"\n')
    result = kit.invoke(str(bad), str(ds), "--out", str(tmp_path / "r"), "-q")
    assert result.exit_code == 2 and "components.llm" in result.output
    missing = tmp_path / "missing.toml"
    result = kit.invoke(str(missing), str(ds), "--out", str(tmp_path / "r"), "-q")
    assert result.exit_code == 2
    assert f"{missing}: cannot read the pipeline file" in result.output
    out = str(tmp_path / "run")
    assert kit.invoke(str(kit.pipeline_file(tmp_path)), str(ds), "--out", out,
                      "-q").exit_code == 0
    other = kit.pipeline_file(tmp_path, mode="upper", name="q")
    refused = kit.invoke(str(other), str(ds), "--out", out, "-q")
    assert refused.exit_code == 1 and "different pipeline" in refused.output
    forced = kit.invoke(str(other), str(ds), "--out", out, "-q", "--force")
    assert forced.exit_code == 0 and "ran 3 items, 0 already done" in forced.output


def test_replay_matches_and_warns_on_drift(tmp_path: Path) -> None:
    """A replay of a deterministic run matches; a pipeline file edited since is reported
    and the locked configuration is replayed instead, still matching."""
    ds = dataset(tmp_path, two_word_items(6))
    pipeline = kit.pipeline_file(tmp_path, mode="first")
    run_dir = tmp_path / "run"
    assert kit.invoke(str(pipeline), str(ds), "--out", str(run_dir), "-q",
                      "--seed", "2").exit_code == 0
    same = kit.invoke("replay", str(run_dir), "--out", str(tmp_path / "r1"), "-q", "--json")
    assert same.exit_code == 0, same.output
    report = json.loads(same.stdout[same.stdout.index("{"):])
    assert report["matches"] and report["compared"] == 6 and report["drift"] == []
    assert json.loads((tmp_path / "r1" / "lock.json").read_text())["seed"] == 2
    kit.pipeline_file(tmp_path, mode="upper")  # edit the file
    drifted = kit.invoke("replay", str(run_dir), "--out", str(tmp_path / "r2"), "-q")
    assert drifted.exit_code == 0, drifted.output
    assert "changed since the run: replaying the locked configuration" in drifted.output
    assert "outputs and scores match" in drifted.output


def test_replay_reports_differences(tmp_path: Path) -> None:
    """A pipeline whose output changes between runs: replay exits 1 naming the items."""
    ds = dataset(tmp_path, two_word_items(3))
    run_dir = tmp_path / "run"
    assert kit.invoke(str(kit.pipeline_file(tmp_path, mode="calls")), str(ds), "--out",
                      str(run_dir), "-q", "--concurrency", "1").exit_code == 0
    result = kit.invoke("replay", str(run_dir), "-q")
    assert result.exit_code == 1 and "outputs and scores DIFFER" in result.output
    assert "outputs differ: i0, i1, i2" in result.output
    assert len(list(run_dir.glob("replay-*"))) == 1  # the default --out


def test_a_run_narrowed_by_limit_reports_and_replays_its_own_items(tmp_path: Path) -> None:
    """A resume with a smaller --limit keeps the earlier records of the items past it in
    results.jsonl: ``report`` rebuilds the same summary as the run wrote (its first
    ``limit`` items), and ``replay`` (which replays the limit) matches, not counting the
    items past it as missing."""
    ds = dataset(tmp_path, two_word_items(5))
    pipeline = str(kit.pipeline_file(tmp_path))
    run_dir = tmp_path / "run"
    assert kit.invoke(pipeline, str(ds), "--out", str(run_dir), "-q").exit_code == 0
    narrowed = kit.invoke(pipeline, str(ds), "--out", str(run_dir), "-q", "--limit", "2")
    assert narrowed.exit_code == 0 and "2 items: 2 ok" in narrowed.output
    written = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    rebuilt = kit.invoke("report", str(run_dir))
    assert rebuilt.exit_code == 0 and "2 items: 2 ok" in rebuilt.output, rebuilt.output
    assert json.loads((run_dir / "summary.json").read_text(encoding="utf-8")) == written
    assert len(read_results(run_dir / "results.jsonl")) == 5  # the records stay
    replayed = kit.invoke("replay", str(run_dir), "--out", str(tmp_path / "r"), "-q",
                          "--json")
    assert replayed.exit_code == 0, replayed.output
    report = json.loads(replayed.stdout[replayed.stdout.index("{"):])
    assert report["matches"] and report["compared"] == 2 and report["missing"] == []


def test_replay_without_a_lockfile(tmp_path: Path) -> None:
    """Replaying a folder that is no run directory fails with a clear message."""
    result = kit.invoke("replay", str(tmp_path))
    assert result.exit_code == 1 and "no lock.json" in result.output


def _run(tmp_path: Path, name: str, mode: str, ds: Path) -> Path:
    """Run the echo pipeline in ``mode`` into ``tmp_path/name``."""
    out = tmp_path / name
    result = kit.invoke(str(kit.pipeline_file(tmp_path, mode=mode, name=name)), str(ds),
                        "--out", str(out), "-q")
    assert result.exit_code == 0, result.output
    return out


def test_compare_a_known_difference(tmp_path: Path) -> None:
    """echo vs first on two-word items whose reference is the whole input: first never
    matches, so the paired interval of exact_match excludes 0; echo ranks higher."""
    rows = [{"id": f"i{i}", "input": f"a{i} b{i}", "reference": f"a{i} b{i}"}
            for i in range(30)]
    ds = dataset(tmp_path, rows)
    echo, first = _run(tmp_path, "echo", "echo", ds), _run(tmp_path, "first", "first", ds)
    out = tmp_path / "cmp"
    result = kit.invoke("compare", str(echo), str(first), "--out", str(out), "--json",
                        "--samples", "300")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    em = data["pairs"][0]["metrics"]["exact_match"]
    assert (em["mean_a"], em["mean_b"], em["mean_diff"], em["n"]) == (1.0, 0.0, -1.0, 30)
    assert em["high"] < 0 and em["p_value"] < 0.01
    elo = data["ranking"]["elo"]
    assert elo["echo"]["estimate"] > elo["first"]["estimate"]
    assert elo["echo"]["low"] <= elo["echo"]["estimate"] <= elo["echo"]["high"]
    bt = data["ranking"]["bradley_terry"]
    assert bt["echo"]["estimate"] > bt["first"]["estimate"]
    assert data["ranking"]["games"] == 30 * 3  # 30 items x 3 metrics, one pair
    assert {p.name for p in out.iterdir()} == {"comparison.json", "compare.md", "report.html"}
    html = (out / "report.html").read_text()
    assert "Elo" in html and "Bradley–Terry" in html and "<svg" in html
    assert "http://" not in html and "https://" not in html
    assert "| exact_match | 30 | 1.000 | 0.000 | -1.000 |" in (out / "compare.md").read_text()


def test_compare_no_difference_and_three_runs(tmp_path: Path) -> None:
    """first vs last, each right on half the items: the interval includes 0; a third
    run adds a second pair and a third system to the ranking."""
    ds = dataset(tmp_path, two_word_items(40))
    first, last = _run(tmp_path, "first", "first", ds), _run(tmp_path, "last", "last", ds)
    echo = _run(tmp_path, "echo", "echo", ds)
    result = kit.invoke("compare", str(first), str(last), str(echo), "--json",
                        "--samples", "200", "--seed", "7")
    data = json.loads(result.stdout)
    em = data["pairs"][0]["metrics"]["exact_match"]
    assert em["mean_diff"] == 0.0 and em["low"] < 0 < em["high"] and em["p_value"] > 0.2
    assert [(p["a"], p["b"]) for p in data["pairs"]] == [("first", "last"), ("first", "echo")]
    assert set(data["ranking"]["elo"]) == {"first", "last", "echo"}
    text = kit.invoke("compare", str(first), str(last), "--samples", "100").output
    assert "## last − first" in text and "| exact_match | 40 |" in text


def test_compare_counts_the_items_of_each_runs_limit(tmp_path: Path) -> None:
    """A run narrowed by a resume with a smaller --limit is compared on the items its
    report counts, not on the older records past the limit its results.jsonl keeps."""
    ds = dataset(tmp_path, two_word_items(6))
    wide = _run(tmp_path, "wide", "echo", ds)
    narrowed = kit.invoke(str(tmp_path / "wide.toml"), str(ds), "--out", str(wide), "-q",
                          "--limit", "2")
    assert narrowed.exit_code == 0 and "2 items: 2 ok" in narrowed.output
    other = _run(tmp_path, "other", "first", ds)
    result = kit.invoke("compare", str(wide), str(other), "--json", "--samples", "50")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["items"] for r in data["runs"]] == [2, 6]
    pair = data["pairs"][0]
    assert (pair["common_items"], pair["only_a"], pair["only_b"]) == (2, 0, 4)
    assert data["ranking"]["games"] == 2 * 3  # 2 items x 3 metrics, one pair


def test_compare_refuses_one_run_under_two_spellings(tmp_path: Path) -> None:
    """A run directory named relatively and absolutely is the same run: refused, not
    compared with itself."""
    run = _run(tmp_path, "run", "echo", dataset(tmp_path, two_word_items(3)))
    result = kit.invoke("compare", str(run), str(run.resolve() / ".." / "run"))
    assert result.exit_code == 1 and "given twice" in result.output


def test_a_negative_seed_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """--seed seeds the reports' bootstraps, which need a non-negative seed: a negative
    one is a usage error up front (it once failed after every item had run, with numpy's
    "expected non-negative integer"), for compare too."""
    ds = dataset(tmp_path, two_word_items(2))
    out = tmp_path / "run"
    result = kit.invoke(str(kit.pipeline_file(tmp_path)), str(ds), "--out", str(out), "-q",
                        "--seed", "-1")
    assert result.exit_code == 2 and "--seed" in result.output, result.output
    assert kit.CALLS == [] and not out.exists()
    run = _run(tmp_path, "a", "echo", ds)
    other = _run(tmp_path, "b", "first", ds)
    refused = kit.invoke("compare", str(run), str(other), "--seed", "-3")
    assert refused.exit_code == 2 and "--seed" in refused.output


def test_compare_needs_two_runs(tmp_path: Path) -> None:
    """One run, or a folder without results, is refused with the reason."""
    assert "at least two" in kit.invoke("compare", str(tmp_path)).output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = kit.invoke("compare", str(tmp_path), str(empty))
    assert result.exit_code == 1 and "no results.jsonl" in result.output


def test_report_command_rebuilds_reports(tmp_path: Path) -> None:
    """``aieng eval report`` rebuilds the reports from results.jsonl alone."""
    ds = dataset(tmp_path, two_word_items(4))
    out = tmp_path / "run"
    assert kit.invoke(str(kit.pipeline_file(tmp_path)), str(ds), "--out", str(out),
                      "-q").exit_code == 0
    (out / "report.md").unlink()
    result = kit.invoke("report", str(out), "--samples", "50")
    assert result.exit_code == 0 and (out / "report.md").exists()
    assert "exact_match" in result.output and len(read_results(out / "results.jsonl")) == 4



@pytest.mark.parametrize("lock", ["{", "[]", ""])
def test_report_command_on_a_broken_lockfile(tmp_path: Path, lock: str) -> None:
    """A damaged lock.json is a clear error naming the file, as for replay, not a
    traceback."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "lock.json").write_text(lock, encoding="utf-8")
    (out / "results.jsonl").write_text("", encoding="utf-8")
    result = kit.invoke("report", str(out))
    assert result.exit_code == 1, result.exception
    assert f"{out / 'lock.json'}: not a valid lockfile" in result.output

def test_console_script_lists_the_command() -> None:
    """The installed ``aieng`` finds ``eval`` through the plugin's entry point."""
    aieng = Path(sys.executable).with_name("aieng")
    result = subprocess.run([str(aieng), "eval", "--help"], capture_output=True, text=True,
                            timeout=60, env={"AIENG_PLUGINS": "eval", "PATH": ""},
                            check=False)
    assert result.returncode == 0, result.stderr
    for command in ("run", "replay", "compare", "report"):
        assert command in result.stdout


def test_games_lower_is_better_for_perplexity() -> None:
    """A run with the lower perplexity / NLL / bits per byte wins those games (also when
    a second judge's copy is kept as ``name@judge``); on other metrics higher wins."""
    from aieng_eval import ItemResult
    from aieng_eval._compare import games_of

    scores_a = {"perplexity": 3.0, "mean_nll@lm": 1.1, "bits_per_byte": 0.5,
                "exact_match": 1.0}
    scores_b = {"perplexity": 9.0, "mean_nll@lm": 2.2, "bits_per_byte": 0.9,
                "exact_match": 0.0}
    runs = {"a": {"i": ItemResult(id="i", status="ok", scores=scores_a)},
            "b": {"i": ItemResult(id="i", status="ok", scores=scores_b)}}
    assert games_of(runs) == [("a", "b", 1.0)] * 4
    assert games_of(runs, "perplexity") == [("a", "b", 1.0)]
