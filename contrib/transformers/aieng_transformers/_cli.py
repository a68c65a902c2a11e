"""The plugin's commands: ``aieng generate`` and ``aieng models``.

Registered through ``aieng_register_commands``; click is imported here, torch and
transformers only inside the commands that need them, so ``aieng --help`` stays fast.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import click

__all__ = ["add_commands", "generate", "models"]


def _json_file(path: Path, option: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise click.UsageError(f"{option} {path}: not a JSON file ({exc})") from None


def _unescaped(text: str) -> str:
    # A shell passes "\n" as two characters; a stop at a line end is the common case.
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t"}.get(m[1], "\\"), text)


def _tools(raw: Any) -> tuple[Any, ...]:
    # OpenAI's tool objects or plain {name, description, parameters} ones, as ToolSpecs.
    from aieng_hookspecs.types import ToolSpec

    if not isinstance(raw, list):
        raise click.UsageError("--tools: the file must hold a JSON list of tools")
    specs = []
    for position, item in enumerate(raw):
        spec = item.get("function", item) if isinstance(item, dict) else None
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise click.UsageError(f"--tools: item {position} has no function name")
        try:
            specs.append(ToolSpec(
                name=spec["name"], description=spec.get("description", ""),
                parameters=spec.get("parameters", {"type": "object", "properties": {}})))
        except (TypeError, ValueError) as exc:
            raise click.UsageError(f"--tools: item {position}: {exc}") from None
    return tuple(specs)


def _utf8(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    # Bytes that are not UTF-8 reach Python as lone surrogates: refuse them, as `aieng run`
    # and `aieng ask` do, instead of handing the model text no tokenizer reads back.
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise click.BadParameter(f"not valid UTF-8 (character {exc.start}): is the "
                                     "terminal's encoding UTF-8?") from None
    return value


@click.command()
@click.argument("prompt", callback=_utf8)
@click.option("--max-tokens", default=128, show_default=True, type=click.IntRange(min=1),
              help="Most tokens to generate.")
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(min=0.0),
              help="0 is greedy.")
@click.option("--top-k", default=None, type=click.IntRange(min=1),
              help="Sample from the K most likely tokens only (with --temperature > 0).")
@click.option("--top-p", default=1.0, show_default=True,
              type=click.FloatRange(min=0.0, max=1.0, min_open=True),
              help="Sample from the smallest set of tokens whose probability reaches P "
                   "(with --temperature > 0).")
@click.option("--seed", default=None, type=int, help="Sampling seed.")
@click.option("--stop", "stops", multiple=True,
              help="End the text before this string (repeatable; \\n, \\t and \\\\ "
                   "are a newline, a tab and a backslash); finish reason 'stop'.")
@click.option("--system", default=None, callback=_utf8,
              help="A system message before the prompt.")
@click.option("--model-path", default=None, type=click.Path(exists=True, path_type=Path),
              help="A local Hugging Face model folder or .gguf file (default: SmolLM2).")
@click.option("--schema", "schema_file", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A JSON schema file: the output is JSON valid against it.")
@click.option("--regex", default=None, help="The output fully matches this regular expression.")
@click.option("--dtype", default="auto", show_default=True,
              type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
              help="The model's torch type (auto: float32 on the CPU); bfloat16 makes the "
                   "prompt pass faster on CPUs with AMX.")
@click.option("--tools", "tools_file", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A JSON file listing tools the model may call: OpenAI's "
                   '[{"type": "function", "function": {...}}] or [{"name", "description", '
                   '"parameters"}]; calls are printed as JSON lines after the text.')
@click.option("--tool-choice", default=None,
              help="auto (default), required, none, or a tool's name.")
@click.option("--tool-format", default="auto", show_default=True,
              type=click.Choice(["auto", "hermes", "llama3", "mistral", "mistral-v11"]),
              help="How the model writes calls (auto: its template's format, else hermes).")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (text, finish reason, usage, timings) at the end "
                   "instead of streaming.")
def generate(prompt: str, max_tokens: int, temperature: float, top_k: int | None,
             top_p: float, seed: int | None, stops: tuple[str, ...], system: str | None,
             model_path: Path | None, schema_file: Path | None, regex: str | None,
             dtype: str, tools_file: Path | None, tool_choice: str | None, tool_format: str,
             as_json: bool) -> None:
    """Generate from PROMPT with SmolLM2 (or --model-path), streaming the tokens; then
    print the time to first token (TTFT) and time per output token (TPOT)."""
    import anyio
    from aieng_hookspecs.types import Message, Request

    from ._generator import GenerationStream, SmolLM2Backend
    from ._options import SmolLM2Options

    backend = SmolLM2Backend(SmolLM2Options(path=str(model_path) if model_path else None,
                                            dtype=dtype,  # type: ignore[arg-type]
                                            tool_format=tool_format))  # type: ignore[arg-type]
    schema = _json_file(schema_file, "--schema") if schema_file else None
    tools = _tools(_json_file(tools_file, "--tools")) if tools_file else ()
    metadata: dict[str, Any] = {"regex": regex} if regex is not None else {}
    if tool_choice is not None:
        metadata["tool_choice"] = tool_choice
    try:
        messages = ((Message("system", system),) if system is not None else ()) + (
            Message("user", prompt),)
        request = Request(messages=messages, max_tokens=max_tokens, temperature=temperature,
                          top_k=top_k, top_p=top_p,
                          stop=tuple(_unescaped(s) for s in stops), seed=seed,
                          response_schema=schema, tools=tools, metadata=metadata)
    except (TypeError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    started = time.perf_counter()
    # Importing the runtime is most of a cached load (seconds, against a fraction of one
    # for the model): timed apart, so a slow "load" does not read as a broken cache.
    import torch  # noqa: F401
    import transformers  # noqa: F401
    imported = time.perf_counter()
    try:
        backend.load()
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    except ValueError as exc:  # a --tool-format the tokenizer cannot write
        raise click.UsageError(str(exc)) from None
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
    calls = [{"name": c.name, "arguments": c.arguments} for c in deltas.tool_calls]
    report: dict[str, Any] = {
        "model": backend.model, "text": "".join(pieces), "finish_reason": deltas.finish_reason,
        "tool_calls": calls,
        "usage": {"prompt_tokens": deltas.usage.prompt_tokens, "completion_tokens": tokens},
        "load_s": round(loaded - started, 3),
        "import_s": round(imported - started, 3),
        "ttft_s": None if ttft is None else round(ttft, 4),
        "tpot_s": None if tpot is None else round(tpot, 4),
        "tokens_per_s": None if not tpot else round(1.0 / tpot, 2),
    }
    if as_json:
        # ASCII escapes: valid JSON on a terminal of any encoding (read back exactly).
        click.echo(json.dumps(report))
        return
    click.echo("")
    for call in calls:
        click.echo(json.dumps(call, ensure_ascii=False))
    timing = (f"TTFT {ttft * 1000:.0f} ms" if ttft is not None else "TTFT -") + " · " + (
        f"TPOT {tpot * 1000:.1f} ms ({1.0 / tpot:.1f} tokens/s)" if tpot else "TPOT -")
    click.echo(f"[{backend.model}: {tokens} tokens, finish {deltas.finish_reason}, "
               f"load {loaded - started:.2f} s (imports {imported - started:.2f} s) · {timing}]",
               err=True)


@click.command()
@click.argument("pipeline", required=False,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model-path", "paths", multiple=True,
              type=click.Path(exists=True, path_type=Path),
              help="Also list this local model folder or .gguf file (repeatable).")
@click.option("--context", default=None, type=click.IntRange(min=1),
              help="Context length for the KV-cache estimate (default: the model's own).")
@click.option("--dtype", "bytes_per_param", default=None,
              type=click.Choice(["fp32", "fp16", "bf16", "int8", "q8", "q4"]),
              help="Precision of the weights in the estimate, and of the KV cache for "
                   "fp16 / bf16 (quantized weights keep a float32 cache); default: fp32, "
                   "for a PIPELINE each component's own.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def models(pipeline: Path | None, paths: tuple[Path, ...], context: int | None,
           bytes_per_param: str | None, as_json: bool) -> None:
    """List backends with model id, size on disk and a memory estimate: weights x
    bytes-per-weight + KV cache (2 x layers x kv_heads x head_dim x context x bytes, per
    sequence held at once), read from the model's config and headers without loading
    its weights.

    With PIPELINE (a pipeline file): the generation and embedding components configured
    there, each at its own precision (``smollm2-onnx`` with ``precision = "int8"``: one
    byte per weight) and with the KV caches of its ``max_batch`` sequences; components
    that report no estimate (a remote API) are listed as such. Without: this plugin's
    backends (smollm2, minilm) and any --model-path.
    """
    entries = _configured(pipeline, context, bytes_per_param) if pipeline is not None \
        else _plugin_defaults(context, bytes_per_param or "fp32")
    from ._generator import _default_name

    for extra in paths:
        name = _default_name(str(extra))
        entries.append(_entry("smollm2", name, lambda e=extra, n=name: _estimate(
            e, n, bytes_per_param or "fp32", context)))
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    click.echo(f"{'component':<18} {'model':<24} {'precision':<9} {'disk':>9} {'params':>8} "
               f"{'weights':>9} {'KV cache':>18} {'total':>9}")
    for e in entries:
        if e["problem"]:
            click.echo(f"{e['component']:<18} {e['model'] or '-':<24} {'-':<9} {'-':>9}  "
                       f"{e['problem']}")
            continue
        kv = "-"
        if e["context"]:
            kv = f"{_size(e['kv_cache_bytes'])} @{e['context']}"
            if e["sequences"] > 1:
                kv += f" x{e['sequences']}"
        click.echo(f"{e['component']:<18} {e['model']:<24} {e['precision']:<9} "
                   f"{_size(e['disk_bytes']):>9} {e['parameters'] / 1e6:>7.1f}M "
                   f"{_size(e['weights_bytes']):>9} {kv:>18} {_size(e['total_bytes']):>9}")
    if pipeline is not None:
        known = [e["total_bytes"] for e in entries if not e["problem"]]
        click.echo(f"{'total':<18} {'':<24} {'':<9} {'':>9} {'':>8} {'':>9} {'':>18} "
                   f"{_size(sum(known)):>9}")
    precision = bytes_per_param or ("each component's" if pipeline is not None else "fp32")
    click.echo(f"(estimate at {precision} precision: weights x bytes per weight + KV cache "
               f"2 x layers x kv_heads x head_dim x context x bytes x sequences)")


def _entry(component: str, model: str | None, estimate: Any, **extra: Any) -> dict[str, Any]:
    """One row: ``estimate()``'s figures, or the problem that kept it from them."""
    from ._paths import ModelNotFound

    entry: dict[str, Any] = {"component": component, "model": model, "path": None, **extra}
    try:
        entry.update(estimate())
        entry["problem"] = None
    except ModelNotFound as exc:
        entry["problem"] = str(exc)
    except (OSError, ValueError, KeyError) as exc:
        entry["problem"] = f"cannot read the model's config: {exc}"
    return entry


def _estimate(path: Path, model: str, precision: str, context: int | None) -> dict[str, Any]:
    from ._memory import memory_estimate

    return memory_estimate(model, path, precision=precision, context=context)


def _plugin_defaults(context: int | None, precision: str) -> list[dict[str, Any]]:
    from ._options import DEFAULT_EMBED_MODEL, DEFAULT_GENERATE_MODEL
    from ._paths import packaged_minilm, packaged_smollm2

    return [_entry(component, model, lambda f=find, m=model: _estimate(f(), m, precision,
                                                                       context))
            for component, model, find in (
                ("smollm2", DEFAULT_GENERATE_MODEL, packaged_smollm2),
                ("minilm", DEFAULT_EMBED_MODEL, packaged_minilm))]


#: Hooks that make a component a backend for ``aieng models``.
_BACKEND_HOOKS = ("aieng_generate", "aieng_stream", "aieng_embed")


def _configured(pipeline: Path, context: int | None,
                precision: str | None) -> list[dict[str, Any]]:
    """The backends of a pipeline file, built (not loaded) by a kernel of the installed
    plugins."""
    from aieng_core import ConfigError, Kernel

    kernel = Kernel()
    try:
        built = kernel.load_pipeline(pipeline)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    components = dict(built.components)
    fallback = kernel.default_embedder_name
    if fallback and fallback in kernel.registry.components and not any(
            hasattr(instance, "aieng_embed") for instance in components.values()):
        # A pipeline without an embedder embeds (if a component asks, e.g. `vectors`) with
        # the kernel's default one: it takes memory too.
        components[f"({fallback}, default)"] = kernel.registry.component(fallback).build()
    entries = []
    for name, instance in components.items():
        if not any(hasattr(instance, hook) for hook in _BACKEND_HOOKS):
            continue
        config = built.config.components.get(name)
        use = config.use if config is not None else fallback
        estimator = getattr(instance, "memory_estimate", None)
        if estimator is None:
            entries.append({"component": name, "use": use,
                            "model": getattr(instance, "model", None), "path": None,
                            "problem": f"{use}: reports no memory estimate (a remote API, or "
                                       "a backend without local weights)"})
            continue
        entries.append(_entry(name, getattr(instance, "model", None),
                              lambda e=estimator: e(context=context, dtype=precision), use=use))
    return entries


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

