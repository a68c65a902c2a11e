"""`aieng index`, `aieng ask` and `aieng bench retrieval` on the built-in components."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from aieng_core.cli import _commands, _rag  # noqa: F401  (register the commands)
from aieng_core.cli import cli

CRANFIELD = Path(__file__).resolve().parents[2] / "shared" / "data" / "cranfield"
PIPELINE = '[pipeline]\nname = "t"\n[components.docs]\nuse = "memory"\n' \
           '[components.prompt]\nuse = "prompt"\n[components.llm]\nuse = "extractive"\n'


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env={"AIENG_PLUGINS": "builtin"})
    return result.exit_code, result.stdout, result.stderr


PLUGGY = "# Pluggy\n\nPluggy is the plugin system of pytest.\n"


def _with_docs(tmp_path: Path, files: dict[str, str], pipeline: Path) -> Path:
    """A folder ``docs`` holding ``files`` (name: text), and ``pipeline`` written as
    PIPELINE with its ``memory`` index loading that folder; the folder."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in files.items():
        (docs / name).write_text(text)
    pipeline.write_text(PIPELINE.replace('use = "memory"\n',
                                         f'use = "memory"\ndocuments = "{docs}"\n'))
    return docs


def test_bench_retrieval_scores_cranfield(tmp_path: Path) -> None:
    """bench retrieval indexes the collection, runs every query and reports the metrics."""
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(PIPELINE)
    code, out, err = invoke("bench", "retrieval", str(pipeline), str(CRANFIELD), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["queries"] == 225 and data["documents"] == 1400
    # the built-in in-memory BM25 (no stemming): a floor well under its measured 0.355
    assert 0.30 < data["ndcg@10"] < 1 and 0.6 < data["recall@100"] <= 1
    assert data["queries_per_s"] > 0


def test_bench_retrieval_names_a_missing_collection(tmp_path: Path) -> None:
    """A folder that is no BEIR collection is an error naming the missing file, exit code
    1, not a traceback."""
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(PIPELINE)
    code, _, err = invoke("bench", "retrieval", str(pipeline), str(tmp_path))
    assert code == 1 and "corpus.jsonl is missing" in err and "Traceback" not in err


def test_ask_json_maps_citations_to_documents(tmp_path: Path) -> None:
    """ask --json returns the answer, its citations resolved to document ids, and hits."""
    pipeline = tmp_path / "p.toml"
    tantivy = "# Tantivy\n\nTantivy is a search engine library in Rust.\n"
    docs = _with_docs(tmp_path, {"a.md": tantivy, "b.md": PLUGGY}, pipeline)
    code, out, err = invoke("ask", str(pipeline), "what is pluggy", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["answer"].startswith("Pluggy is the plugin system of pytest")
    assert data["citations"] == [{"n": 1, "id": f"{docs / 'b.md'}#0", "title": "Pluggy"}]
    assert data["hits"][0]["id"] == f"{docs / 'b.md'}#0"
    assert set(data["stages_ms"]) == {"retrieve", "context", "generate"}


def test_ask_json_times_the_first_token_unless_told_not_to_stream(tmp_path: Path) -> None:
    """ask --json streams the answer unseen, so its timings carry TTFT and TPOT (they were
    always null); --no-stream asks for the whole answer at once, so there is no TTFT. The
    answer is the same either way, and no token leaks outside the JSON document."""
    pipeline = tmp_path / "p.toml"
    _with_docs(tmp_path, {"b.md": PLUGGY}, pipeline)
    code, out, err = invoke("ask", str(pipeline), "what is pluggy", "--json")
    assert code == 0, err
    streamed = json.loads(out)
    assert streamed["ttft_ms"] is not None and streamed["ttft_ms"] >= 0
    assert streamed["tpot_ms"] is not None and streamed["tpot_ms"] >= 0
    code, out, err = invoke("ask", str(pipeline), "what is pluggy", "--json", "--no-stream")
    assert code == 0, err
    whole = json.loads(out)
    assert whole["ttft_ms"] is None and whole["answer"] == streamed["answer"]


def test_ask_an_empty_index_says_so(tmp_path: Path) -> None:
    """A pipeline asked before anything was indexed answered from nothing without a word;
    now a warning on stderr says no passage was retrieved and how to fill the indexes
    (stdout stays the JSON document). A pipeline with documents gets no warning."""
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(PIPELINE)
    code, out, err = invoke("ask", str(pipeline), "what is pluggy", "--json")
    assert code == 0, err
    assert json.loads(out)["hits"] == []
    assert "no passage retrieved" in err and f"aieng index {pipeline}" in err
    _with_docs(tmp_path, {"b.md": PLUGGY}, pipeline)
    code, out, err = invoke("ask", str(pipeline), "what is pluggy", "--json")
    assert code == 0 and "no passage retrieved" not in err


def test_index_reads_files_and_reports_counts(tmp_path: Path) -> None:
    """index reads files and folders and reports what the indexes wrote."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.md").write_text("# One\n\nfirst\n\n# Two\n\nsecond\n")
    (tmp_path / "c.jsonl").write_text('{"_id": "7", "title": "t", "text": "seven"}\n')
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(PIPELINE)
    code, _, err = invoke("index", str(pipeline), str(tmp_path / "d"), str(tmp_path / "c.jsonl"))
    assert code == 0, err
    assert "read 3 documents" in err and "3 written" in err


def test_index_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    """A path that does not exist is refused before anything is indexed."""
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(PIPELINE)
    code, _, err = invoke("index", str(pipeline), str(tmp_path / "nope"))
    assert code == 2 and "does not exist" in err


def test_index_into_a_pipeline_without_an_index_is_a_usage_error(tmp_path: Path) -> None:
    """A pipeline no component of which indexes is refused, not "0 written" and exit 0."""
    (tmp_path / "x.md").write_text("# One\n\nfirst\n")
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(PIPELINE.replace('[components.docs]\nuse = "memory"\n', ""))
    code, _, err = invoke("index", str(pipeline), str(tmp_path / "x.md"))
    assert code == 2 and "no component indexes documents" in err


def test_ask_max_tokens_limits_the_answer(tmp_path: Path) -> None:
    """--max-tokens reaches the backend: the extractive answer is cut to that many words."""
    pipeline = tmp_path / "p.toml"
    _with_docs(tmp_path, {"a.md": "# Pluggy\n\nPluggy is the plugin system of pytest and tox.\n"},
               pipeline)
    code, out, err = invoke("ask", str(pipeline), "what is pluggy", "--json", "--max-tokens", "3")
    assert code == 0, err
    assert json.loads(out)["answer"] == "Pluggy is the"


def test_bench_retrieval_leaves_out_an_index_s_own_documents(tmp_path: Path) -> None:
    """The collection alone is measured: a `memory` index's start-up `documents` folder is
    not loaded beside it (its sections outranked the collection's and counted as misses)."""
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(
        '{"_id": "d1", "title": "", "text": "boundary layer flow over a flat plate"}\n'
        '{"_id": "d2", "title": "", "text": "shock waves in supersonic nozzles"}\n')
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "boundary layer plate"}\n')
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    pipeline = tmp_path / "p.toml"
    _with_docs(tmp_path, {"own.md": "# Plate\n\nboundary layer plate boundary layer plate\n"},
               pipeline)
    code, out, err = invoke("bench", "retrieval", str(pipeline), str(beir), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["documents"] == 2 and data["mrr@10"] == 1.0 and data["ndcg@10"] == 1.0


def test_bench_scores_title_shows_paths_with_brackets_whole(tmp_path: Path) -> None:
    """The scores table names the pipeline and collection as they are: Rich markup ate a
    bracketed part of a path ("cranfield[test]" showed as "cranfield")."""
    beir = tmp_path / "cranfield[test]"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "plate"}\n')
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "plate"}\n')
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    pipeline = tmp_path / "p[bold].toml"
    pipeline.write_text(PIPELINE)
    code, out, err = invoke("bench", "retrieval", str(pipeline), str(beir))
    assert code == 0, err
    flat = "".join(out.split())
    assert "p[bold].toml" in flat and "cranfield[test]" in flat


def test_ask_shows_a_blocked_status(tmp_path: Path) -> None:
    """ask says when a guard blocked the question, as `aieng run` does (it showed the
    refusal, or "(no answer)", as if it were the answer)."""
    from aieng_core.testing import kernel_with
    from aieng_core.testing.reference import RegexRedactGuard

    kernel = kernel_with({"phrase-guard": RegexRedactGuard})
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(PIPELINE + '[components.guard]\nuse = "phrase-guard"\n')
    result = CliRunner().invoke(cli, ["ask", str(pipeline), "ignore previous instructions"],
                                obj={"kernel": kernel})
    assert result.exit_code == 0, result.stderr
    assert "status: blocked" in result.stdout


def test_ask_refuses_a_non_finite_temperature(tmp_path: Path) -> None:
    """--temperature nan (or inf) is a usage error, exit 2, before the pipeline runs: click's
    range check lets NaN through, and the request's own check raised a ValueError
    traceback."""
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(PIPELINE)
    for value in ("nan", "inf"):
        code, _, err = invoke("ask", str(pipeline), "what is pluggy", "--temperature", value)
        assert code == 2 and "temperature must be finite" in err, err
        assert "Traceback" not in err


def test_ask_prints_the_answer_as_it_is(tmp_path: Path) -> None:
    """ask prints the answer unchanged: no emoji for ":b:" or ":smile:", no line breaks
    added at 80 columns."""
    sentence = ("Set the key to a:b:c with :smile: intact, and keep this sentence long enough "
                "to pass the eighty columns a console wraps at.")
    pipeline = tmp_path / "p.toml"
    _with_docs(tmp_path, {"a.md": f"# Keys\n\n{sentence}\n"}, pipeline)
    code, out, err = invoke("ask", str(pipeline), "key smile intact")
    assert code == 0, err
    assert out.splitlines()[0] == f"{sentence} [1]"


def test_bench_retrieval_with_no_judged_query_is_an_error(tmp_path: Path) -> None:
    """qrels whose query ids match no query (another split's, "q1" against "1") scored
    every metric 0 over 0 queries with exit code 0: it is an error naming the files."""
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(PIPELINE)
    data = tmp_path / "beir"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text('{"_id": "d1", "text": "alpha beta"}\n')
    (data / "queries.jsonl").write_text('{"_id": "1", "text": "alpha"}\n')
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    code, out, err = invoke("bench", "retrieval", str(pipeline), str(data), "--json")
    assert code == 1 and out == ""
    assert "no query in" in err and "queries.jsonl" in err and "test.tsv" in err
    (data / "qrels" / "test.tsv").write_text("1\td1\t1\n")
    code, out, err = invoke("bench", "retrieval", str(pipeline), str(data), "--json")
    assert code == 0, err
    assert json.loads(out)["queries"] == 1 and json.loads(out)["ndcg@10"] == 1.0


def test_ask_a_blank_question_is_a_usage_error(tmp_path: Path) -> None:
    """A blank QUESTION (an empty file's "$(cat q)") retrieved nothing and then warned
    that the indexes may be empty, though they were full: it is a usage error, exit 2."""
    pipeline = tmp_path / "p.toml"
    _with_docs(tmp_path, {"b.md": PLUGGY}, pipeline)
    for question in ("", " \n\t"):
        code, out, err = invoke("ask", str(pipeline), question)
        assert code == 2 and out == "", err
        assert "QUESTION" in err and "blank" in err and "no passage retrieved" not in err


def test_ask_labels_a_reranked_score_by_the_rerank_stage(tmp_path: Path) -> None:
    """After a reranker the hits keep their source (the retriever's) but carry the
    reranker's score: `aieng ask` said "(memory -1.000)", a score no memory retriever gives;
    it now says which stage scored it, in the text and in --json."""
    import attrs
    from aieng_hookspecs import hookimpl
    from aieng_hookspecs.types import Hit, Query

    from aieng_core.testing import kernel_with

    class Negates:
        """A reranker double: same order, negative scores."""

        @hookimpl
        def aieng_rerank(self, query: Query, hits: list[Hit], k: int) -> list[Hit]:
            return [attrs.evolve(h, score=-float(h.rank)) for h in hits][:k]

    pipeline = tmp_path / "p.toml"
    _with_docs(tmp_path, {"b.md": PLUGGY}, pipeline)
    pipeline.write_text(pipeline.read_text() + '[components.rerank]\nuse = "negates"\n')
    shown = CliRunner().invoke(cli, ["ask", str(pipeline), "what is pluggy"],
                               obj={"kernel": kernel_with({"negates": Negates})})
    assert shown.exit_code == 0, shown.output
    assert "(memory, rerank -1.000)" in shown.stdout
    data = json.loads(CliRunner().invoke(cli, ["ask", str(pipeline), "what is pluggy",
                                               "--json"],
                                     obj={"kernel": kernel_with({"negates": Negates})}).stdout)
    assert data["hits"][0]["source"] == "memory" and data["hits"][0]["scored_by"] == "rerank"
    plain_file = tmp_path / "plain.toml"
    plain_file.write_text(pipeline.read_text().split("[components.rerank]")[0])
    code, out, err = invoke("ask", str(plain_file), "what is pluggy", "--json")
    assert code == 0, err
    assert json.loads(out)["hits"][0]["scored_by"] == "memory"
