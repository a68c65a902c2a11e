"""SmolLM2-135M on ONNX Runtime (``smollm2-onnx``: fp32, int8, q8, q4) vs torch (``smollm2``).

The five retrieval-style prompts of ``smollm2_speed.py``, greedy, ``--max-tokens`` each,
through the same decoding loop (aieng-transformers' ``Generation``): only the forward pass
differs. Per mode: generated tokens per second over the five prompts (the median of
``--repeats`` runs, the modes interleaved within each repeat; a ratio is taken within a
repeat, then the median), the median time to the first token (the prompt's pass plus the
first choice), and CPU seconds per token (``time.process_time``). ORT fp32's ids are
asserted identical to torch's; for int8, q8 and q4 the share of prompts whose ids are identical and
the perplexity on held-out prose (``docs/user-guide.md``, as ``smollm2_quant.py``) beside
fp32's. torch threads: ``torch.set_num_threads``; ONNX Runtime: ``intra_op_threads``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/smollm2_ort.py --threads 1 --json out.json

``--keep-fp32 down_proj`` adds int8 with those products left in float32 (``keep_fp32``).
``--io-binding`` adds fp32 with the KV cache kept in ONNX Runtime's memory between passes
(``io_binding = true``: the GPU providers' default), its ids asserted identical too.
``--torch-bf16`` adds torch in bfloat16 (``smollm2``'s ``dtype = "bfloat16"``), reported
like the quantized modes (identical prompts, perplexity); ``--precisions`` picks the ORT
modes (all four by default).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _args import positive
from aieng_onnx import SmolLM2OnnxBackend, SmolLM2OnnxOptions
from aieng_transformers import SmolLM2Backend, SmolLM2Options
from aieng_transformers._causal import CausalLM
from smollm2_speed import attrs_evolve, prompts

ROOT = Path(__file__).resolve().parent.parent


def decode(lm: CausalLM, request: Any) -> tuple[list[int], float]:
    """Greedy ids and the seconds to the first generated token."""
    started = time.perf_counter()
    generation = lm.start(request)
    first = None
    while generation.finish is None:
        generation.step()
        if first is None and generation.generated:
            first = time.perf_counter() - started
    return generation.generated, first if first is not None else 0.0


def heldout(tokens: int) -> str:
    """About ``tokens`` tokens of prose from docs/user-guide.md (code blocks dropped)."""
    text = (ROOT / "docs" / "user-guide.md").read_text(encoding="utf-8")
    kept, inside = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
            continue
        if not inside and line.strip() and not line.startswith(("#", "|")):
            kept.append(line)
    return " ".join(kept)[: tokens * 4]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (or write) the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=positive, default=64)
    parser.add_argument("--repeats", type=positive, default=3)
    parser.add_argument("--threads", type=positive, nargs="+", default=[1, 2])
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--perplexity-tokens", type=positive, default=2000)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--io-binding", action="store_true",
                        help="add 'ORT fp32 bound': the KV cache kept in ONNX Runtime's "
                             "memory between passes (I/O binding), as on a GPU provider")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8", "q8", "q4"],
                        choices=["fp32", "int8", "q8", "q4"], help="the ORT modes")
    parser.add_argument("--torch-bf16", action="store_true",
                        help="add 'torch bf16': smollm2 with dtype = 'bfloat16'")
    parser.add_argument("--keep-fp32", nargs="+", metavar="FRAGMENT", default=None,
                        help="add 'ORT int8 keep': int8 with these MatMuls left float32 "
                             "(keep_fp32, e.g. down_proj)")
    args = parser.parse_args(argv)
    from aieng_core.logs import configure_logging

    # Warnings to stderr: stdout carries the JSON report.
    configure_logging(level="WARNING", stream=sys.stderr)
    cache = args.cache_dir or tempfile.mkdtemp(prefix="aieng-bench-")

    requests = [attrs_evolve(r, args.max_tokens) for r in prompts()]
    loads = [os.getloadavg()[0]]
    torch_lm = SmolLM2Backend().load()
    results: list[dict[str, Any]] = []
    quality: dict[str, Any] = {}
    for threads in args.threads:
        modes: dict[str, CausalLM] = {"torch fp32": torch_lm}
        if args.torch_bf16:
            modes["torch bf16"] = SmolLM2Backend(SmolLM2Options(dtype="bfloat16")).load()
        for precision in args.precisions:
            started = time.perf_counter()
            backend = SmolLM2OnnxBackend(SmolLM2OnnxOptions(
                precision=precision, cache_dir=cache, providers=("cpu",),
                intra_op_threads=threads))
            modes[f"ORT {precision}"] = backend.load()
            print(f"ORT {precision} x{threads}: loaded in {time.perf_counter() - started:.1f} s "
                  f"(exported: {backend.exported})", file=sys.stderr)
        if args.keep_fp32:
            modes["ORT int8 keep"] = SmolLM2OnnxBackend(SmolLM2OnnxOptions(
                precision="int8", keep_fp32=tuple(args.keep_fp32), cache_dir=cache,
                providers=("cpu",), intra_op_threads=threads)).load()
        if args.io_binding:
            modes["ORT fp32 bound"] = SmolLM2OnnxBackend(SmolLM2OnnxOptions(
                cache_dir=cache, providers=("cpu",), intra_op_threads=threads,
                io_binding=True)).load()
        torch.set_num_threads(threads)
        for lm in modes.values():  # warm-up: first-call allocations, caches
            decode(lm, attrs_evolve(requests[0], 8))
        rates: dict[str, list[float]] = {name: [] for name in modes}
        cpu: dict[str, list[float]] = {name: [] for name in modes}
        firsts: dict[str, list[float]] = {name: [] for name in modes}
        outputs: dict[str, list[list[int]]] = {}
        for repeat in range(args.repeats):
            names = list(modes)
            names = names[repeat % len(names):] + names[:repeat % len(names)]
            for name in names:
                lm = modes[name]
                wall, process = time.perf_counter(), time.process_time()
                decoded = [decode(lm, r) for r in requests]
                wall, process = time.perf_counter() - wall, time.process_time() - process
                tokens = sum(len(ids) for ids, _ in decoded)
                rates[name].append(tokens / wall)
                cpu[name].append(process / tokens)
                firsts[name] += [first for _, first in decoded]
                outputs[name] = [ids for ids, _ in decoded]
        for name in ("ORT fp32", "ORT fp32 bound"):
            assert outputs.get(name, outputs["torch fp32"]) == outputs["torch fp32"], \
                f"{name} ids differ from torch"
        loads.append(os.getloadavg()[0])
        for name in modes:
            ratios = [a / b for a, b in zip(rates[name], rates["torch fp32"], strict=True)]
            same = sum(a == b for a, b in zip(outputs[name], outputs["torch fp32"], strict=True))
            row = {"threads": threads, "mode": name,
                   "tokens_per_s": round(statistics.median(rates[name]), 2),
                   "runs": [round(r, 2) for r in rates[name]],
                   "ratio": round(statistics.median(ratios), 2),
                   "ratio_runs": [round(r, 2) for r in ratios],
                   "cpu_ms_per_token": round(1000 * statistics.median(cpu[name]), 2),
                   "ttft_ms": round(1000 * statistics.median(firsts[name]), 1),
                   "prompts_identical_to_torch": f"{same}/{len(requests)}"}
            results.append(row)
            print(f"{threads} thread(s)  {name:<11} {row['tokens_per_s']:7.2f} tok/s  "
                  f"x{row['ratio']:.2f} {row['ratio_runs']}  {row['cpu_ms_per_token']} "
                  f"CPU-ms/token  TTFT {row['ttft_ms']} ms  ids {row['prompts_identical_to_torch']}",
                  file=sys.stderr)
        if not quality:
            text = heldout(args.perplexity_tokens)
            quality = {name: round(lm.perplexity(text), 3) for name, lm in modes.items()}
            print(f"perplexity {quality}", file=sys.stderr)
    report = {"benchmark": "smollm2_ort", "max_tokens": args.max_tokens,
              "repeats": args.repeats, "torch": torch.__version__, "results": results,
              "perplexity": quality, "load_average": loads}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")
    else:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
