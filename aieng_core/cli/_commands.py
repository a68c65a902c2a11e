"""Built-in commands: ``plugins``, ``hooks``, ``run``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import _present
from ._app import cli, kernel_of, read_stdin, utf8_text

__all__ = ["hooks", "plugins", "run"]


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List plugins: distribution, version, components, hooks, status and errors."""
    kernel = kernel_of(ctx)
    infos = kernel.registry.plugins
    if as_json:
        _present.json_document([info.to_json() for info in infos], ensure_ascii=True)
    else:
        _present.plugins_table(infos)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def hooks(as_json: bool) -> None:
    """List the hook specs: role, call mode, and signature."""
    from .._hookspecs_index import hook_rows

    rows = hook_rows()
    if as_json:
        _present.json_document(rows, ensure_ascii=True)
    else:
        _present.hooks_table(rows)


@cli.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.argument("text", callback=utf8_text)
@click.option("--json", "as_json", is_flag=True, help="Print the whole RunResult as JSON.")
@click.option("--explain", is_flag=True,
              help="Show each model call's rendered prompt and raw output, and stage timings.")
@click.option("--stream/--no-stream", default=None,
              help="Stream tokens as they arrive (default: on when stdout is a terminal "
                   "and --json is not given).")
@click.option("--trace-hooks", is_flag=True, help="Record a hook.called event per impl call.")
@click.pass_context
def run(ctx: click.Context, pipeline: Path, text: str, as_json: bool, explain: bool,
        stream: bool | None, trace_hooks: bool) -> None:
    """Run PIPELINE (a TOML file) on TEXT ('-' reads standard input, at most 256 MiB)."""
    import anyio

    if text == "-":
        text = read_stdin()
    kernel = kernel_of(ctx)
    if stream and as_json:
        raise click.UsageError("--stream and --json cannot be combined: tokens would be "
                               "written into the JSON document")
    if stream is None:
        # No standard output (started with it closed): nothing to stream to.
        stream = sys.stdout is not None and sys.stdout.isatty() and not as_json
    streamed: list[str] = []

    def on_delta(delta: object) -> None:
        piece = getattr(delta, "text", "")
        streamed.append(piece)
        click.echo(_present.visible(piece), nl=False)

    async def go() -> object:
        async with kernel:
            built = kernel.load_pipeline(pipeline, trace_hooks=trace_hooks)
            return await built.run(text, on_delta=on_delta if stream else None)

    result = anyio.run(go)
    if streamed:
        click.echo()
    if as_json:
        _present.json_document(result.to_json())  # type: ignore[attr-defined]
        return
    _present.run_result(result, explain=explain, answer_shown=bool(streamed))  # type: ignore[arg-type]
