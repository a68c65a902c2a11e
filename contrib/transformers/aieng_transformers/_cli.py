"""The plugin's commands: ``aieng generate`` and ``aieng models``.

Registered through ``aieng_register_commands``; click is imported here, torch and
transformers only inside the commands that need them, so ``aieng --help`` stays fast.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from ._memory import footprint

__all__ = ["add_commands", "generate", "models"]


@click.command()
@click.argument("prompt")
@click.option("--max-tokens", default=128, show_default=True, type=click.IntRange(min=1),
              help="Most tokens to generate.")
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(min=0.0),
              help="0 is greedy.")
@click.option("--seed", default=None, type=int, help="Sampling seed.")
@click.option("--model-path", default=None, type=click.Path(exists=True, path_type=Path),
              help="A local Hugging Face model folder or .gguf file (default: SmolLM2).")
@click.option("--schema", "schema_file", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A JSON schema file: the output is JSON valid against it.")
@click.option("--regex", default=None, help="The output fully matches this regular expression.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (text, finish reason, usage, timings) at the end "
                   "instead of streaming.")
def generate(prompt: str, max_tokens: int, temperature: float, seed: int | None,
             model_path: Path | None, schema_file: Path | None, regex: str | None,
             as_json: bool) -> None:
    """Generate from PROMPT with SmolLM2 (or --model-path), streaming the tokens; then
    print the time to first token (TTFT) and time per output token (TPOT)."""
    import anyio
    from aieng_hookspecs.types import Message, Request

    from ._generator import GenerationStream, SmolLM2Backend
    from ._options import SmolLM2Options

    backend = SmolLM2Backend(SmolLM2Options(path=str(model_path) if model_path else None))
    schema = json.loads(schema_file.read_text(encoding="utf-8")) if schema_file else None
    metadata = {"regex": regex} if regex is not None else {}
    try:
        request = Request(messages=(Message("user", prompt),), max_tokens=max_tokens,
                          temperature=temperature, seed=seed, response_schema=schema,
                          metadata=metadata)
    except (TypeError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    started = time.perf_counter()
    try:
        backend.load()
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    loaded = time.perf_counter()

    async def stream() -> tuple[list[str], list[float], GenerationStream]:
        pieces: list[str] = []
        stamps: list[float] = []
        deltas = backend.aieng_stream(request)
        assert deltas is not None
        try:
            async for delta in deltas:
                if delta.text:
                    stamps.append(time.perf_counter())
                    pieces.append(delta.text)
                    if not as_json:
                        click.echo(delta.text, nl=False)
        finally:
            await deltas.aclose()
        return pieces, stamps, deltas

    request_started = time.perf_counter()
    try:
        pieces, stamps, deltas = anyio.run(stream)
    except ValueError as exc:  # an unsupported schema or a bad regex
        raise click.UsageError(str(exc)) from None
    finished = time.perf_counter()
    tokens = deltas.usage.completion_tokens
    ttft = (stamps[0] - request_started) if stamps else None
    tpot = (finished - stamps[0]) / (tokens - 1) if stamps and tokens > 1 else None
    report: dict[str, Any] = {
        "model": backend.model, "text": "".join(pieces), "finish_reason": deltas.finish_reason,
        "usage": {"prompt_tokens": deltas.usage.prompt_tokens, "completion_tokens": tokens},
        "load_s": round(loaded - started, 3),
        "ttft_s": None if ttft is None else round(ttft, 4),
        "tpot_s": None if tpot is None else round(tpot, 4),
        "tokens_per_s": None if not tpot else round(1.0 / tpot, 2),
    }
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False))
        return
    click.echo("")
    timing = (f"TTFT {ttft * 1000:.0f} ms" if ttft is not None else "TTFT -") + " · " + (
        f"TPOT {tpot * 1000:.1f} ms ({1.0 / tpot:.1f} tokens/s)" if tpot else "TPOT -")
    click.echo(f"[{backend.model}: {tokens} tokens, finish {deltas.finish_reason}, "
               f"load {loaded - started:.2f} s · {timing}]", err=True)


@click.command()
@click.option("--model-path", "paths", multiple=True,
              type=click.Path(exists=True, path_type=Path),
              help="Also list this local model folder or .gguf file (repeatable).")
@click.option("--context", default=None, type=click.IntRange(min=1),
              help="Context length for the KV-cache estimate (default: the model's own).")
@click.option("--dtype", "bytes_per_param", default="fp32", show_default=True,
              type=click.Choice(["fp32", "fp16", "bf16", "int8"]),
              help="Precision of the weights and the KV cache in the estimate (CPU runs fp32).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def models(paths: tuple[Path, ...], context: int | None, bytes_per_param: str,
           as_json: bool) -> None:
    """List this plugin's backends (smollm2, minilm, and any --model-path) with model id,
    size on disk and a memory estimate: weights x bytes-per-param + KV cache
    (2 x layers x kv_heads x head_dim x context x bytes), read from the model's config
    without loading its weights."""
    from ._generator import _default_name
    from ._options import DEFAULT_EMBED_MODEL, DEFAULT_GENERATE_MODEL
    from ._paths import ModelNotFound, packaged_minilm, packaged_smollm2

    size = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}[bytes_per_param]
    rows: list[tuple[str, str, Path | None, str | None]] = []
    for component, model, find in (("smollm2", DEFAULT_GENERATE_MODEL, packaged_smollm2),
                                   ("minilm", DEFAULT_EMBED_MODEL, packaged_minilm)):
        try:
            rows.append((component, model, find(), None))
        except ModelNotFound as exc:
            rows.append((component, model, None, str(exc)))
    for extra in paths:
        rows.append(("smollm2", _default_name(str(extra)), extra, None))
    entries = []
    for component, model, path, problem in rows:
        entry: dict[str, Any] = {"component": component, "model": model,
                                 "path": None if path is None else str(path)}
        if path is not None:
            try:
                entry.update(footprint(path).estimate(bytes_per_param=size, context=context))
            except (OSError, ValueError, KeyError) as exc:
                problem = f"cannot read the model's config: {exc}"
        entry["problem"] = problem
        entries.append(entry)
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    header = f"{'component':<10} {'model':<24} {'disk':>9} {'params':>8} " \
             f"{'weights':>9} {'KV cache':>14} {'total':>9}"
    click.echo(header)
    for e in entries:
        if e["problem"]:
            click.echo(f"{e['component']:<10} {e['model']:<24} {'-':>9}  {e['problem']}")
            continue
        kv = f"{_size(e['kv_cache_bytes'])} @{e['context']}" if e["context"] else "-"
        click.echo(f"{e['component']:<10} {e['model']:<24} {_size(e['disk_bytes']):>9} "
                   f"{e['parameters'] / 1e6:>7.1f}M {_size(e['weights_bytes']):>9} "
                   f"{kv:>14} {_size(e['total_bytes']):>9}")
    click.echo(f"(estimate at {bytes_per_param}: weights x {size} bytes + KV cache "
               f"2 x layers x kv_heads x head_dim x context x {size} bytes)")


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def add_commands(cli: click.Group) -> None:
    """Add ``generate`` and ``models`` to the root group."""
    cli.add_command(generate)
    cli.add_command(models)

