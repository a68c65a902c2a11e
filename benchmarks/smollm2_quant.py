"""SmolLM2-135M: fp32 vs torch dynamic int8 vs bitsandbytes int8 vs bitsandbytes nf4.

Each scheme is produced by the ``torch-int8`` component (``aieng_quantize``), saved, and
loaded back with ``load_quantized`` (so the figures are of the saved folder). Reported:
weight size on disk (MB), perplexity on a held-out text (the prose paragraphs of
``docs/user-guide.md``, about 2,000 tokens, scored in windows of 512) and greedy tokens/s
(48 tokens after a short prompt, median of ``--repeats``).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/smollm2_quant.py [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _args import positive
from aieng_hookspecs.types import Message, Request
from aieng_transformers import TorchInt8Quantizer, TorchQuantizeOptions, load_quantized
from aieng_transformers._causal import CausalLM
from aieng_transformers._convert import cached_folder, dtype_argument
from aieng_transformers._paths import cache_root, packaged_smollm2
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent


def heldout(limit: int = 9000) -> str:
    """Prose paragraphs of docs/user-guide.md (no code, tables or headings)."""
    text = (ROOT / "docs" / "user-guide.md").read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    keep = [p.strip() for p in text.split("\n\n")
            if p.strip() and not p.lstrip().startswith(("#", "|", "-", ">", "<"))]
    return "\n\n".join(keep)[:limit]


def speed(lm: CausalLM, repeats: int) -> float:
    """Greedy tokens/s for 48 tokens (EOS ignored by a long budget and a list prompt)."""
    request = Request(messages=(Message("user", "List twenty animals, one per line."),),
                      max_tokens=48)
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        generation = lm.start(request)
        while generation.finish is None:
            generation.step()
        rates.append(generation.completion_tokens / (time.perf_counter() - started))
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (or write) the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=positive, default=3)
    parser.add_argument("--threads", type=positive, default=1)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    from _peers import require

    from aieng_core.logs import configure_logging

    require("bitsandbytes")  # the bnb8 and nf4 rows
    # As the CLI does: warnings and up, on stderr (not model-load info lines in stdout).
    configure_logging(level="WARNING", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    folder = cached_folder(packaged_smollm2(), cache_root())
    if not (folder / "config.json").is_file():
        raise SystemExit("convert SmolLM2 first: aieng generate 'hi' --max-tokens 1")
    tokenizer: Any = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    text = heldout()
    tokens = len(tokenizer(text)["input_ids"])
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        quantizer = TorchInt8Quantizer(TorchQuantizeOptions(output_dir=scratch))
        for scheme in ("fp32", "int8", "bnb8", "nf4"):
            started = time.perf_counter()
            if scheme == "fp32":
                model = AutoModelForCausalLM.from_pretrained(
                    str(folder), local_files_only=True, **{dtype_argument(): torch.float32})
                size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
                small_ppl = None
            else:
                result = quantizer.quantize(folder, scheme)
                assert result is not None
                model = load_quantized(result.model)
                size = result.size_after
                small_ppl = result.quality["perplexity_after"]
            seconds = time.perf_counter() - started
            lm = CausalLM(model.eval(), tokenizer)
            row = {"scheme": scheme, "size_mb": round(size / 1e6, 1),
                   "perplexity": round(lm.perplexity(text, window=512), 3),
                   "perplexity_heldout_paragraph": small_ppl,
                   "tokens_per_s": round(speed(lm, args.repeats), 2),
                   "quantize_and_load_s": round(seconds, 1)}
            rows.append(row)
            print(row, file=sys.stderr, flush=True)
    base = rows[0]
    for row in rows:
        row["size_ratio"] = round(row["size_mb"] / base["size_mb"], 3)
        row["perplexity_change"] = round(row["perplexity"] - base["perplexity"], 3)
        row["speed_ratio"] = round(row["tokens_per_s"] / base["tokens_per_s"], 2)
    summary = {"benchmark": "smollm2_quant", "heldout_tokens": tokens,
               "threads": args.threads, "repeats": args.repeats, "rows": rows}
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
