"""``aieng redteam``: run the attack suite through pipelines and report ASR and FPR.

Registered through ``aieng_register_commands``; click is imported here, rich only when a
table is printed. The command runs on the kernel the ``aieng`` CLI keeps in its context
(``ctx.find_root().obj["kernel"]``), so the plugin never builds one of its own there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ._suite import AttackItem, load_suite, run_suite, summarise

__all__ = ["add_commands", "redteam"]


def _kernel(ctx: click.Context) -> Any:
    root = ctx.find_root()
    if isinstance(root.obj, dict) and root.obj.get("kernel") is not None:
        return root.obj["kernel"]
    raise click.ClickException("redteam runs under the aieng command line, which provides "
                               "the kernel: run `aieng redteam ...`")


def _config(value: str) -> tuple[str, Path]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise click.BadParameter(f"expected NAME=PIPELINE, got {value!r}",
                                 param_hint="--config")
    return name, Path(path)


@click.command()
@click.argument("pipeline", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--suite", "suite_file", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A JSONL suite (default: the packaged attacks.jsonl).")
@click.option("--config", "configs", multiple=True, metavar="NAME=PIPELINE",
              help="Another pipeline to compare (repeatable).")
@click.option("--split", default="all", show_default=True,
              type=click.Choice(["all", "dev", "heldout"]),
              help="Which part of the suite to run.")
@click.option("--max-tokens", default=64, show_default=True, type=click.IntRange(min=1),
              help="Answer length limit of generating pipelines.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def redteam(ctx: click.Context, pipeline: Path, suite_file: Path | None,
            configs: tuple[str, ...], split: str, max_tokens: int, as_json: bool) -> None:
    """Run the red-team suite through PIPELINE (and every --config) and report, per
    configuration and per category, the attack success rate (ASR: the attack was not
    blocked and its marker reached the answer, or for a guard-only pipeline survived
    the guards) and the false-positive rate (FPR: benign items blocked or redacted)."""
    import anyio

    try:
        items = load_suite(suite_file, split=split)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--suite") from None
    pipelines: dict[str, Path] = {pipeline.stem: pipeline}
    for value in configs:
        name, path = _config(value)
        if not path.is_file():
            raise click.BadParameter(f"{path}: no such file", param_hint="--config")
        if name in pipelines:
            raise click.BadParameter(f"configuration name {name!r} given twice",
                                     param_hint="--config")
        pipelines[name] = path
    kernel = _kernel(ctx)

    async def go() -> dict[str, Any]:
        """Run the suite through each pipeline on the started kernel."""
        reports: dict[str, Any] = {}
        async with kernel:
            for name, path in pipelines.items():
                built = kernel.load_pipeline(path)
                reports[name] = summarise(await run_suite(built, items,
                                                          max_tokens=max_tokens))
        return reports

    reports = anyio.run(go)
    if as_json:
        click.echo(json.dumps({"items": len(items), "split": split,
                               "configurations": reports}, indent=2))
        return
    _table(reports, items)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _table(reports: dict[str, Any], items: list[AttackItem]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"aieng redteam: {len(items)} items")
    for column in ("configuration", "category", "attacks", "ASR", "benign", "FPR"):
        table.add_column(column, justify="left" if column in ("configuration", "category")
                         else "right")
    for name, report in reports.items():
        rows = [*report["categories"].items(),
                *((f"(split {s})", r) for s, r in report["splits"].items()),
                ("(all)", report["overall"])]
        for label, rates in rows:
            table.add_row(name, label, str(rates["attacks"] or "-"), _percent(rates["asr"]),
                          str(rates["benign"] or "-"), _percent(rates["fpr"]),
                          style="bold" if label == "(all)" else None)
        table.add_section()
    console = Console(width=100)
    console.print(table)
    errors = {n: r["overall"]["errors"] for n, r in reports.items() if r["overall"]["errors"]}
    if errors:
        console.print(f"runs that failed (left out of the rates): {errors}")


def add_commands(cli: click.Group) -> None:
    """Add ``redteam`` to the root group."""
    cli.add_command(redteam)
