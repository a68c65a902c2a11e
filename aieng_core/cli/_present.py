"""The CLI's presentation layer: the only code that writes to the terminal."""

from __future__ import annotations

import codecs
import errno
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from ..logs import escaped
from ..pipeline import RunResult, finite_json
from ..registry import PluginInfo

__all__ = [
    "answer",
    "hooks_table",
    "json_document",
    "message",
    "plugins_table",
    "progress",
    "run_result",
    "score_text",
    "scores",
    "stream_piece",
    "visible",
]

#: A run of the surrogates Python makes of the bytes 0x80-0xff it could not decode
#: (``surrogateescape``): a path or an argument typed under an ASCII locale (``LC_ALL=C``
#: with Python's UTF-8 mode off) holds its UTF-8 letters so (``d\udcc3\udcbcr``).
_UNDECODED_BYTES = re.compile("[\udc80-\udcff]+")  # the pattern holds the surrogates


def _decoded(run: re.Match[str]) -> str:
    r"""A run of undecoded bytes as the UTF-8 text it is; a byte no UTF-8 sequence holds
    stays the surrogate it was (written as an escape, ``\udce9``, as before)."""
    return bytes(ord(char) - 0xDC00 for char in run[0]).decode("utf-8", "surrogateescape")


def visible(text: str) -> str:
    r"""``text`` safe to write to a terminal: its control characters but tab and line feed
    written as escapes (``\x1b``), carriage returns left out (as rich leaves them out):
    an escape sequence in an answer cannot clear the screen or set the clipboard.

    UTF-8 bytes Python could not decode under an ASCII locale (lone surrogates,
    ``\udcc3\udcbc``) are shown as the letters they are (``ü``), as the file a path names
    is the one the user typed; other lone surrogates stay escapes. The decoding comes
    first, so a control character they hold (U+009B, the C1 CSI) is escaped too.
    """
    return escaped(_UNDECODED_BYTES.sub(_decoded, text).replace("\r", ""), lines=True)


def score_text(score: float) -> str:
    """A hit's score with four significant digits, whatever its size (a cross-encoder's
    logit ``-12.35``, a probability ``1.000e-05``, a raw dot product ``3.200e+07``): ``:.3f``
    showed ``0.000`` for the one and hid the sign of ``-0.0004``. Plain decimals from
    0.001 to 9999 (``0.8123``, ``12.35``, ``1234``), as most retrievers' scores are, and
    scientific notation beyond, where decimals would need a dozen zeros. ``--json`` keeps
    the exact float."""
    size = abs(score)
    if size == 0 or not math.isfinite(score):
        return f"{score:g}"  # 0, -0, nan, inf, -inf
    if not 1e-3 <= size < 1e4:
        return f"{score:.3e}"
    decimals = max(0, 3 - math.floor(math.log10(size)))
    return f"{score:.{decimals}f}"


def json_document(data: Any, *, ensure_ascii: bool = False) -> None:
    r"""Print ``data`` as an indented JSON document on standard output (every ``--json``).

    Text is written as it is on a UTF-8 stream (unless ``ensure_ascii``), and as JSON
    escapes (``\u00e9``, ``\ud83d\ude00``) on any other: a Latin-1 terminal's encoding
    cannot hold an emoji, whose backslash escape (``\U0001f600``) is not valid JSON.

    The document is strict JSON: a number that is not finite (a document's metadata, a
    model's tool arguments may hold one) is the string ``"NaN"``, ``"Infinity"`` or
    ``"-Infinity"``, as in ``AgentResult.to_json``; ``json.dumps`` wrote the bare
    ``NaN`` / ``Infinity`` that strict JSON readers (``jq``, JavaScript) refuse.
    """
    encoding = getattr(sys.stdout, "encoding", None)
    click.echo(json.dumps(finite_json(data), indent=2, allow_nan=False,
                          ensure_ascii=ensure_ascii or not _holds_any_text(encoding)))


def _holds_any_text(encoding: str | None) -> bool:
    """Whether a stream of this encoding writes any text as it is: UTF-8, or no encoding
    at all (a text buffer such as :class:`io.StringIO`)."""
    if encoding is None:
        return True
    try:
        return codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")
    except LookupError:
        return False


class _Console(Console):
    """rich's console, but a closed pipe (``aieng hooks | head -1``) is the command's
    ``BrokenPipeError`` again, which the root group turns into the exit status for it,
    where rich's own would exit 1, as a failure does."""

    def on_broken_pipe(self) -> None:
        self.quiet = True  # nothing more is written
        raise BrokenPipeError(errno.EPIPE, "the output's reader went away")


def _console(**options: Any) -> Console:
    # No emoji codes: ":b:" in "a:b:c" or ":smile:" in an answer are text, not emoji.
    return _Console(**{"highlight": False, "soft_wrap": False, "emoji": False, **options})


def _line(console: Console, text: str) -> None:
    """Text as it is: no markup, no control characters (:func:`visible`), and no line
    breaks added (the terminal wraps it)."""
    console.print(visible(text), markup=False, soft_wrap=True)


def plugins_table(infos: Sequence[PluginInfo]) -> None:
    """Plugins as a rich table; broken ones in red with their error, loaded ones with a
    warning (made for another contract) in yellow with it."""
    table = Table(title="aieng plugins")
    for column in ("plugin", "distribution", "version", "status", "components", "hooks"):
        table.add_column(column, overflow="fold")
    for info in infos:
        status = {"loaded": "[green]loaded[/]", "broken": "[red]broken[/]",
                  "disabled": "[yellow]disabled[/]"}[info.status]
        # Text, not markup: a name or an error with "[...]" in it is shown as it is; and
        # visible: rich's Text drops BEL but writes ESC, so an error (a path in a plugin's
        # ImportError) could open an escape sequence.
        table.add_row(*(Text(visible(cell)) for cell in (
            info.name, info.distribution, info.version)), status,
            Text(visible(", ".join(info.components))), Text(visible(", ".join(info.hooks))))
    console = _console()
    console.print(table)
    for info in infos:
        if info.status == "broken":
            console.print(Text.assemble((visible(info.name), "red"),
                                        visible(f" ({info.dist_label}): {info.error}")))
        elif info.warning:
            console.print(Text.assemble((visible(info.name), "yellow"),
                                        visible(f": {info.warning}")))


def hooks_table(rows: Iterable[dict[str, Any]]) -> None:
    """Hook specs as a table."""
    table = Table(title="aieng hooks")
    for column in ("hook", "role", "mode", "signature"):
        table.add_column(column, overflow="fold")
    for row in rows:
        # Text, not markup: "Sequence[str]" would lose its "[str]".
        table.add_row(*(Text(str(row[key])) for key in ("hook", "role", "mode", "signature")))
    _console().print(table)


def run_result(result: RunResult, *, explain: bool, answer_shown: bool) -> None:
    """A run's answer, sources and (with ``explain``) prompts, raw outputs and timings."""
    console = _console()
    if not answer_shown:
        _line(console, result.answer or "(no answer)")
    if result.status != "ok":
        console.print(f"[yellow]status: {result.status}[/]")
    if result.hits:
        console.print("\n[bold]sources[/]")
        for hit in result.hits:
            title = f" {hit.document.title}" if hit.document.title else ""
            _line(console, f"  [{hit.rank}] {hit.document.id}{title}  "
                           f"(score {score_text(hit.score)})")
    if not explain:
        return
    for call in result.model_calls:
        rendered = "\n\n".join(f"<{m.role}>\n{m.content}" for m in call.messages)
        console.print(Panel(visible(rendered), title=f"prompt to {call.component}",
                            expand=False), markup=False)
        console.print(Panel(visible(call.raw_output or "(empty)"), title="raw output",
                            expand=False), markup=False)
        _line(console, f"parameters: {call.parameters}")
    table = Table(title="stages")
    for column in ("stage", "status", "ms"):
        table.add_column(column)
    for record in result.stages:
        table.add_row(record.name, record.status, f"{record.duration_s * 1000:.2f}")
    console.print(table)


@contextmanager
def progress(label: str, *, total: int | None,
             unit: str = "") -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr (hidden when stderr is not a terminal); yields ``advance``.

    :param total: how many steps there are; None when unknown (documents streamed): the
        bar then shows ``N/?`` while it runs, and ``N/N`` once the block ends without an
        exception (the total is what was done).
    :param unit: what a step is (``documents``), shown after the count.
    """
    console = Console(stderr=True)
    bar = Progress("[progress.description]{task.description}", BarColumn(),
                   MofNCompleteColumn(), TextColumn(unit), TimeElapsedColumn(),
                   console=console, disable=not console.is_terminal)
    with bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)
        if total is None:  # ended, not by an exception: what was done was all of it
            bar.update(task, total=bar.tasks[0].completed)


def message(text: str) -> None:
    """One line of information on stderr."""
    _line(_console(stderr=True), text)


def stream_piece(text: str) -> None:
    """A streamed piece of an answer, as it arrives (nowhere without standard output)."""
    if sys.stdout is None:
        return
    sys.stdout.write(visible(text))
    sys.stdout.flush()


def answer(data: dict[str, Any], *, answer_shown: bool) -> None:
    """An answer with its citations, hits and timings (``aieng ask``)."""
    console = _console()
    if answer_shown:
        console.print()
    else:
        _line(console, data["answer"] or "(no answer)")
    if data["status"] != "ok":
        console.print(f"[yellow]status: {data['status']}[/]")
    if data["citations"]:
        console.print("\n[bold]cited[/]")
        for cite in data["citations"]:
            _line(console, f"  [{cite['n']}] {cite['id']}  {cite['title'] or ''}")
    if data["hits"]:
        console.print("\n[bold]retrieved[/]")
        for hit in data["hits"]:
            scorer = hit["scored_by"]
            found = "" if scorer == hit["source"] else f"{hit['source']}, "
            _line(console, f"  {hit['rank']:>2}. {hit['id']}  ({found}{scorer} "
                           f"{score_text(hit['score'])})")
    timing = "  ".join(f"{name} {ms:.1f} ms" for name, ms in data["stages_ms"].items())
    console.print(f"\n[dim]{timing}[/]")
    if data["ttft_ms"] is not None:
        tpot = "" if data["tpot_ms"] is None else f", TPOT {data['tpot_ms']:.1f} ms"
        console.print(f"[dim]TTFT {data['ttft_ms']:.1f} ms{tpot}[/]")


def score_columns(data: dict[str, Any]) -> tuple[str, ...]:
    """The columns of :func:`scores`: Recall@100 over fewer hits (``--k``) says so, and
    ``queries`` are those scored (judged), beside the queries run that queries/s counts."""
    k = data.get("k", 100)
    recall = "Recall@100" if k >= 100 else f"Recall@100 (top {k})"
    return ("nDCG@10", recall, "MRR@10", "queries judged", "queries/s", "index docs/s")


def scores(data: dict[str, Any]) -> None:
    """Retrieval scores as a table (``aieng bench retrieval``)."""
    # Text, not markup: a path with "[...]" in it is shown as it is.
    table = Table(title=Text(f"{data['pipeline']} on {data['data']}", style="table.title"))
    for column in score_columns(data):
        table.add_column(column, justify="right")
    table.add_row(f"{data['ndcg@10']:.4f}", f"{data['recall@100']:.4f}",
                  f"{data['mrr@10']:.4f}", str(data["queries"]),
                  f"{data['queries_per_s']:.1f}", f"{data['index_docs_per_s']:.0f}")
    _console().print(table)
