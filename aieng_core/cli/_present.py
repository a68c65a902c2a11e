"""The CLI's presentation layer: the only code that writes to the terminal."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from ..pipeline import RunResult
from ..registry import PluginInfo

__all__ = ["hooks_table", "plugins_table", "run_result"]


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def plugins_table(infos: Sequence[PluginInfo]) -> None:
    """Plugins as a rich table; broken ones in red with their error."""
    table = Table(title="aieng plugins")
    for column in ("plugin", "distribution", "version", "status", "components", "hooks"):
        table.add_column(column, overflow="fold")
    for info in infos:
        status = {"loaded": "[green]loaded[/]", "broken": "[red]broken[/]",
                  "disabled": "[yellow]disabled[/]"}[info.status]
        table.add_row(info.name, info.distribution, info.version, status,
                      ", ".join(info.components), ", ".join(info.hooks))
    console = _console()
    console.print(table)
    for info in infos:
        if info.status == "broken":
            console.print(f"[red]{info.name}[/] ({info.dist_label}): {info.error}",
                          markup=True, highlight=False)


def hooks_table(rows: Iterable[dict[str, Any]]) -> None:
    """Hook specs as a table."""
    table = Table(title="aieng hooks")
    for column in ("hook", "role", "mode", "signature"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["hook"], row["role"], row["mode"], row["signature"])
    _console().print(table)


def run_result(result: RunResult, *, explain: bool, answer_shown: bool) -> None:
    """A run's answer, sources and (with ``explain``) prompts, raw outputs and timings."""
    console = _console()
    if not answer_shown:
        console.print(result.answer or "(no answer)", markup=False)
    if result.status != "ok":
        console.print(f"[yellow]status: {result.status}[/]")
    if result.hits:
        console.print("\n[bold]sources[/]")
        for hit in result.hits:
            title = f" {hit.document.title}" if hit.document.title else ""
            console.print(f"  [{hit.rank}] {hit.document.id}{title}  (score {hit.score:.3f})",
                          markup=False)
    if not explain:
        return
    for call in result.model_calls:
        rendered = "\n\n".join(f"<{m.role}>\n{m.content}" for m in call.messages)
        console.print(Panel(rendered, title=f"prompt to {call.component}", expand=False),
                      markup=False)
        console.print(Panel(call.raw_output or "(empty)", title="raw output", expand=False),
                      markup=False)
        console.print(f"parameters: {call.parameters}", markup=False)
    table = Table(title="stages")
    for column in ("stage", "status", "ms"):
        table.add_column(column)
    for record in result.stages:
        table.add_row(record.name, record.status, f"{record.duration_s * 1000:.2f}")
    console.print(table)
