"""RAG commands: ``aieng index``, ``aieng ask`` and ``aieng bench retrieval``."""

from __future__ import annotations

import contextlib
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import click

from aieng_hookspecs.types import Document, Message, Request

from . import _present
from ._app import cli, kernel_of, utf8_text

if TYPE_CHECKING:
    from ..ingest import Reader

__all__ = ["ask", "bench", "index"]

_CITATION = re.compile(r"\[(\d+)\]")
#: Components taking part in retrieval (or serving those that do): the rest are left out
#: of ``aieng bench retrieval``.
_RETRIEVAL_HOOKS = frozenset({
    "aieng_retrieve", "aieng_index", "aieng_delete", "aieng_fuse", "aieng_rerank",
    "aieng_query_expand", "aieng_chunk_document", "aieng_embed", "aieng_generate",
    "aieng_stream",
})


@cli.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1),
              help="Documents (or chunks) written to the indexes per call.")
@click.pass_context
def index(ctx: click.Context, pipeline: Path, paths: tuple[Path, ...], batch_size: int) -> None:
    """Index files, folders (.md, .txt, plugins' formats) and BEIR corpus.jsonl files into
    PIPELINE's indexes.

    Documents are named by their file's path relative to the working directory (absolute
    outside it), however it was typed (docs, ./docs/, /abs/docs, a link to it). Indexing
    a file again replaces what it held: the numbered documents it no longer has (a markdown
    file's sections, a table's rows) are deleted from the indexes. A file deleted from a
    folder stays indexed. A document id read from two files is an error (name a BEIR
    folder's corpus.jsonl). A file that cannot be read (a permission refused, deleted
    while indexing) is named on stderr and the others are indexed; the exit status is
    then 1. Files are read as they are indexed, a batch at a time (a BEIR corpus line by
    line, so memory holds a batch, not the corpus), and what a file no longer holds is
    deleted once its documents are written: a malformed row stops the command
    (status 2, naming file and line) once the documents before it are written. A run
    stopped part way (Ctrl-C, killed) keeps what its indexes committed; indexing the same
    paths again reads them all again and replaces what is there (no duplicates, nothing
    skipped).
    """
    import anyio

    for path in paths:
        if not path.exists():
            raise click.BadParameter(f"{path} does not exist", param_hint="PATHS")
    kernel = kernel_of(ctx)
    built = kernel.load_pipeline(pipeline)
    if not built.dispatcher.impls("aieng_index"):
        raise click.UsageError(f"{pipeline}: no component indexes documents "
                               "(none implements aieng_index): nothing to index into")
    readers = {s: r.reader for s, r in kernel.registry.readers.items()}
    unread: list[Path] = []

    def cannot_read(file: Path, exc: OSError) -> None:  # the others are read and indexed
        unread.append(file)
        _present.message(f"aieng: cannot read {file}: {exc.strerror or exc}")

    reading = _Reading(paths, readers, cannot_read)

    async def go() -> tuple[int, int, int, ValueError | None]:
        async with kernel:
            written = done = stale = 0
            try:
                with _present.progress("indexing", total=None, unit="documents") as advance:
                    while True:
                        # Read in the event loop a batch at a time (memory holds a batch),
                        # Ctrl-C stopping the reading at once.
                        batch, error = reading.batch(batch_size)
                        if batch:
                            indexed = await built.index(batch, batch_size=batch_size)
                            # deleted: chunks a section indexed again no longer has
                            written, stale = written + indexed, stale + indexed.deleted
                            done += len(batch)
                            advance(len(batch))
                        # A file read to its end as numbered documents (markdown's
                        # <path>#0, #1, ..., a table's <path>#row-1, ...) held more of
                        # them if the next number is indexed: those go, with their chunks
                        # (Pipeline.delete), once its documents are written.
                        stale += await reading.delete_stale(built.delete)
                        if error is not None:  # what was read before it is indexed
                            return reading.read, written, stale, error
                        if not batch:
                            break
            except (KeyboardInterrupt, anyio.get_cancelled_exc_class()):
                # Ctrl-C: what the indexes took stays
                of = (f"{reading.read}" if reading.finished
                      else f"the {reading.read} read so far of the")
                _present.message(f"interrupted: at least {done} of {of} documents written "
                                 f"(the indexes reported {written}); index the same paths "
                                 "again to finish")
                raise
            return reading.read, written, stale, None

    read, written, removed, error = anyio.run(go)
    if error is not None:
        before = (f"\n{read} documents read before it were written (the indexes reported "
                  f"{written}): fix it and index the same paths again") if read else ""
        raise click.UsageError(f"{error}{before}")
    # Counted by the indexes: a section chunked into three counts three.
    gone = (f" and {removed} deleted (documents or chunks no longer in the files)"
            if removed else "")
    _present.message(f"read {read} documents from {len(paths)} path(s); the indexes reported "
                     f"{written} written{gone}")
    if unread:  # what they held before stays indexed
        files_word = "file" if len(unread) == 1 else "files"
        _present.message(f"{len(unread)} {files_word} could not be read (named above): "
                         "index them again once they can be")
        ctx.exit(1)


def numbered_runs(file: str, ids: Sequence[str]) -> dict[str, int]:
    """Where the numbered ids a file was read as end: for each stem under ``<file>#`` whose
    numbers run without a gap from 0 or 1 (``a.md#0``, ``a.md#1``; ``t.csv#row-1``,
    ``t.csv#row-2``), the next number. A file read as nothing ends ``<file>#`` at 0."""
    numbers: dict[str, list[int]] = {}
    for doc_id in ids:
        if doc_id.startswith(f"{file}#"):
            found = _numbered(doc_id[len(file) + 1:])
            if found:
                numbers.setdefault(f"{file}#{found[0]}", []).append(found[1])
    if not ids:
        return {f"{file}#": 0}
    runs = {}
    for stem, seen in numbers.items():
        first = min(seen)
        if first in (0, 1) and sorted(seen) == list(range(first, first + len(seen))):
            runs[stem] = first + len(seen)
    return runs


def _numbered(part: str) -> tuple[str, int] | None:
    """A numbered document id's part after ``<file>#`` as its stem and number (the digits
    it ends with), or None. By hand: ``(.*?)(\\d+)`` backtracked over a long run of digits
    not at the end for a time growing with the run's square. More than 18 digits is no
    number a file was read as (and past 4,300 no number ``int`` reads)."""
    cut = len(part)
    while cut and part[cut - 1].isdecimal():
        cut -= 1
    return None if not 0 < len(part) - cut <= 18 else (part[:cut], int(part[cut:]))


class _Reading:
    """The documents of ``aieng index``'s paths as they are read, a batch at a time, with
    what deleting the numbered documents files no longer hold needs: a run's end per
    stem (:func:`numbered_runs`) for each file read to its end since the last deletion
    (:meth:`delete_stale`), and the ids read holding a ``#`` that could be in another
    file's run (read from a file they do not name: a BEIR corpus's ``a.md#3``).

    What it holds is bounded by a batch's files, not the folder's: the runs go with each
    deletion, and a file's own numbered ids are never in a run (its runs start past them)."""

    def __init__(self, paths: Sequence[Path], readers: Mapping[str, Reader],
                 on_error: Callable[[Path, OSError], None]) -> None:
        self.read = 0
        self.finished = False
        self.runs: dict[str, int] = {}
        self.keep: set[str] = set()
        self._unread: list[Path] = []

        def failed(file: Path, exc: OSError) -> None:
            self._unread.append(file)
            on_error(file, exc)

        self._documents = self._each(paths, readers, failed)

    def _each(self, paths: Sequence[Path], readers: Mapping[str, Reader],
              on_error: Callable[[Path, OSError], None]) -> Iterator[Document]:
        from ..ingest import stream_files

        for file, documents in stream_files(*paths, readers=readers, on_error=on_error):
            numbered: list[str] = []
            count = 0
            own = f"{file}#"
            for document in documents:
                count += 1
                if "#" in document.id:
                    if document.id.startswith(own):
                        numbered.append(document.id)
                    if not document.id.startswith(own) or "#" in str(file):
                        self.keep.add(document.id)  # (a file named with a # is rare)
                self.read += 1
                yield document
            if file not in self._unread and (numbered or not count):
                # a file that failed part way keeps what it held indexed
                self.runs.update(numbered_runs(str(file), numbered))

    async def delete_stale(self, delete: Callable[[Sequence[str]], Awaitable[int]]) -> int:
        """Delete the stale runs of the files read to their end since the last call
        (``delete``: ``Pipeline.delete``); how many the indexes reported deleted."""
        from ..pipeline._indexing import delete_runs

        if not self.runs:
            return 0
        runs, self.runs = self.runs, {}
        return await delete_runs(delete, runs, nested=True, keep=self.keep)

    def batch(self, size: int) -> tuple[list[Document], ValueError | None]:
        """The next documents, at most ``size`` (none: all read), with the error that
        stopped the reading (bad content, a named file with no reader) or None."""
        batch, error, done = _next_batch(self._documents, size)
        self.finished = self.finished or done
        return batch, error


def _next_batch(documents: Iterator[Document], size: int
                ) -> tuple[list[Document], ValueError | None, bool]:
    """The next ``size`` documents at most, read with Ctrl-C raising at once; the error that
    stopped the reading (a malformed row, naming file and line) or None; whether all are
    read."""
    batch: list[Document] = []
    try:
        with _ctrl_c_raises():
            for document in documents:
                batch.append(document)
                if len(batch) == size:
                    return batch, None, False
    except ValueError as exc:
        return batch, exc, False
    return batch, None, True


@contextlib.contextmanager
def _ctrl_c_raises() -> Iterator[None]:
    """Ctrl-C raises :class:`KeyboardInterrupt` at once, where the code runs, as outside an
    event loop: in it, asyncio's runner turns Ctrl-C into a cancellation seen only at the
    next await (a huge file would be read to its end first)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous) or previous is signal.default_int_handler:
        yield  # ignored (a background job), or raising already
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _citations(result: Any) -> list[dict[str, Any]]:
    passages = {int(p["n"]): p for p in result.request.metadata.get("context", [])
                if isinstance(p, dict) and "n" in p}
    cited = []
    for number in dict.fromkeys(int(n) for n in _CITATION.findall(result.answer)):
        passage = passages.get(number)
        if passage is not None:
            cited.append({"n": number, "id": passage.get("id"), "title": passage.get("title")})
    return cited


def _timings(result: Any) -> dict[str, Any]:
    stages = {s.name: round(s.duration_s * 1000, 3) for s in result.stages}
    ttft = tpot = None
    for call in result.model_calls:
        tokens = call.usage.completion_tokens
        if call.ttft_s is not None:
            ttft = call.ttft_s
            if tokens > 1:
                tpot = (call.duration_s - call.ttft_s) / (tokens - 1)
    return {"stages_ms": stages, "ttft_ms": None if ttft is None else round(ttft * 1000, 3),
            "tpot_ms": None if tpot is None else round(tpot * 1000, 3)}


@cli.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.argument("question", callback=utf8_text)
@click.option("--json", "as_json", is_flag=True,
              help="Print answer, citations, hits (ids, scores) and timings (TTFT and TPOT "
                   "too: the answer is streamed unseen unless --no-stream) as JSON.")
@click.option("--stream/--no-stream", default=None,
              help="Stream the answer (default: when stdout is a terminal).")
@click.option("--max-tokens", type=click.IntRange(1), default=256, show_default=True,
              help="The most tokens the answer may take.")
@click.option("--temperature", type=click.FloatRange(0.0), default=0.0, show_default=True,
              help="0 decodes greedily.")
@click.pass_context
def ask(ctx: click.Context, pipeline: Path, question: str, as_json: bool,
        stream: bool | None, max_tokens: int, temperature: float) -> None:
    """Ask PIPELINE a QUESTION: the answer with its cited sources and timings."""
    import anyio

    if stream and as_json:
        raise click.UsageError("--stream and --json cannot be combined")
    if not question.strip():  # nothing to retrieve for, nor to answer
        raise click.BadParameter("is blank: ask a question", param_hint="QUESTION")
    # --json streams without printing, so that its timings hold TTFT and TPOT as well.
    unseen = as_json and stream is None
    if stream is None:
        # No standard output at all (closed: cron, a daemon): nothing to stream to.
        stream = sys.stdout is not None and sys.stdout.isatty() and not as_json
    try:  # click's FloatRange lets NaN through; the request refuses it (and inf)
        request = Request(messages=[Message("user", question)], max_tokens=max_tokens,
                          temperature=temperature)
    except (TypeError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    kernel = kernel_of(ctx)
    shown: list[str] = []

    def on_delta(delta: Any) -> None:
        if unseen:
            return
        shown.append(delta.text)
        _present.stream_piece(delta.text)

    async def go() -> Any:
        async with kernel:
            built = kernel.load_pipeline(pipeline)
            return await built.run(request, on_delta=on_delta if stream or unseen else None)

    result = anyio.run(go)
    if result.status == "ok" and result.runs and not any(result.runs.values()):
        # The usual cause: a pipeline asked before anything was indexed into it.
        _present.message(f"warning: no passage retrieved: are the indexes empty? "
                         f"`aieng index {pipeline} PATH...` fills them")
    # Rerankers set a hit's score and keep its source (the retriever or fuser that found
    # it): the score is then the rerank stage's.
    reranked = any(s.name == "rerank" and s.status == "ok" for s in result.stages)
    data = {
        "run_id": result.run_id,
        "status": result.status,
        "answer": result.answer,
        "citations": _citations(result),
        "hits": [{"rank": h.rank, "id": h.document.id, "title": h.document.title,
                  "score": h.score, "source": h.source,
                  "scored_by": "rerank" if reranked else h.source} for h in result.hits],
        **_timings(result),
    }
    if as_json:
        _present.json_document(data)
    else:
        _present.answer(data, answer_shown=bool(shown))


@cli.group()
def bench() -> None:
    """Measure pipelines on test collections."""


@bench.command("retrieval")
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.argument("data_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
@click.option("--k", "depth", default=100, show_default=True, type=click.IntRange(1),
              help="Hits per query kept by the retrieval stages (Recall@100 needs 100; "
                   "under it the table says how many).")
@click.option("--limit", type=click.IntRange(1), help="Only the first N queries.")
@click.pass_context
def retrieval(ctx: click.Context, pipeline: Path, data_dir: Path, as_json: bool, depth: int,
              limit: int | None) -> None:
    """Index DATA_DIR (a BEIR collection) into a temporary place with PIPELINE's retrieval
    stages, run its queries, and print nDCG@10, Recall@100, MRR@10 and queries/s.

    Indexes (components implementing aieng_index) with a `path` option get a fresh
    temporary directory instead, so nothing the pipeline normally uses is touched, and
    start empty (a `documents` folder they would load is left out); components that take
    no part in retrieval (prompts, guards, caches) are left out. The corpus is read line by
    line as it is indexed, 128 documents at a time: a malformed row stops the command
    (status 1, naming file and line) once those before it are indexed.
    """
    import anyio

    from ..evaluation import iter_corpus, load_beir, score_runs
    from ..evaluation._beir import _warn_unknown
    from ..pipeline import STAGE_HOOKS, PipelineConfig, StageConfig

    kernel = kernel_of(ctx).load()
    try:
        collection = load_beir(data_dir, corpus=False)  # its documents are streamed
    except (OSError, ValueError) as exc:  # a missing file, a malformed row: named in exc
        raise click.ClickException(str(exc)) from None
    queries = collection.queries[:limit] if limit else collection.queries
    judged = {q.id: collection.qrels[q.id] for q in queries if q.id in collection.qrels}
    if not any(grade > 0 for grades in judged.values() for grade in grades.values()):
        # Every metric would be 0 over 0 queries: another split's qrels, other query ids.
        first = f" (the first {limit})" if limit else ""
        raise click.ClickException(
            f"no query in {data_dir / 'queries.jsonl'}{first} has a relevant document "
            f"in {data_dir / 'qrels' / 'test.tsv'}: nothing to score")
    config = PipelineConfig.load(pipeline, kernel.registry)

    wanted = {d for grades in collection.qrels.values() for d in grades}
    found: set[str] = set()  # the judged documents the corpus holds
    corpus = iter_corpus(data_dir)

    def next_batch() -> tuple[list[Document], ValueError | None]:
        # At most 128 documents, and the malformed row that stopped the reading or None.
        batch, error, _ = _next_batch(corpus, 128)
        found.update(d.id for d in batch if d.id in wanted)
        return batch, error

    async def go(workdir: str) -> tuple[dict[str, list[str]], float, float, int]:
        components = {}
        present: set[str] = set()
        for name, comp in config.components.items():
            info = kernel.registry.component(comp.use)
            # A factory function's hooks are only known once built: keep such components.
            hooks = set(info.hooks) if isinstance(info.factory, type) else set(_RETRIEVAL_HOOKS)
            if not hooks & _RETRIEVAL_HOOKS:
                continue  # prompts, guards, caches, judges take no part in retrieval
            present |= hooks
            options = comp.options
            fields = attrs.fields_dict(type(options)) if options is not None else {}
            if "aieng_index" in hooks and "path" in fields:
                # An index's storage goes to the temporary place; a model's path stays.
                options = attrs.evolve(options, path=str(Path(workdir) / name))
            empty = fields["documents"].default if "documents" in fields else None
            if "aieng_index" in hooks and isinstance(empty, str):
                # Documents an index loads at start (memory's folder) are not the collection's.
                options = attrs.evolve(options, documents=empty)
            components[name] = attrs.evolve(comp, options=options)
        stage = dict(config.stage)
        for name in ("retrieve", "rerank"):
            stage[name] = attrs.evolve(stage.get(name, StageConfig()), k=depth)
        stages = tuple(s for s in ("retrieve", "rerank")
                       if present.intersection(STAGE_HOOKS[s]))
        if "retrieve" not in stages:
            raise click.UsageError(f"{pipeline} has no retrieve stage")
        async with kernel:
            built = kernel.pipeline(attrs.evolve(config, components=components, stage=stage,
                                                 stages=stages))
            started = time.perf_counter()
            count = 0
            with _present.progress("indexing", total=None, unit="documents") as advance:
                while True:  # a batch at a time in memory
                    batch, error = next_batch()
                    if batch:
                        await built.index(batch)
                        count += len(batch)
                        advance(len(batch))
                    if error is not None:  # a malformed row, named in error
                        raise click.ClickException(str(error))
                    if not batch:
                        break
            indexing = time.perf_counter() - started
            _warn_unknown(data_dir / "qrels" / "test.tsv", collection.qrels, None, found)
            runs: dict[str, list[str]] = {}
            started = time.perf_counter()
            with _present.progress("querying", total=len(queries), unit="queries") as advance:
                for query in queries:
                    result = await built.run(query)
                    runs[query.id] = [h.document.id for h in result.hits]
                    advance(1)
            return runs, time.perf_counter() - started, indexing, count

    with tempfile.TemporaryDirectory(prefix="aieng-bench-") as workdir:
        runs, querying, indexing, count = anyio.run(go, workdir)
    scores = score_runs(runs, judged)
    # queries: those scored (judged); queries_run: every one asked, as queries_per_s counts
    data = {**scores.to_json(), "queries_run": len(queries), "k": depth,
            "queries_per_s": len(queries) / querying if querying else 0.0,
            "documents": count,
            "index_docs_per_s": count / indexing if indexing else 0.0,
            "pipeline": str(pipeline), "data": str(data_dir)}
    if as_json:
        _present.json_document(data, ensure_ascii=True)
    else:
        _present.scores(data)
