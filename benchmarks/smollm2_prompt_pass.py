"""SmolLM2-135M's prompt pass (the first forward pass, which sets the time to first token)
on ONNX Runtime with and without the finite attention masks of ``smollm2-onnx``'s export,
and on torch for reference.

One process, one thread, the same random prompt of each ``--lengths`` (batch of one, no
cache, logits for the last position only), the variants interleaved in a rotated order,
CPU seconds (``time.process_time``) per pass, the median of ``--repeats``:

- **ORT, -inf masks + NaN guards**: optimum-onnx's export with only the ``logits_to_keep``
  rewrite (``keep_logits_input``): what ``smollm2-onnx`` ran before
  ``finite_attention_masks``;
- **ORT, finite masks**: the same file after ``finite_attention_masks`` (the export
  ``smollm2-onnx`` makes now);
- **torch**: aieng-transformers' ``smollm2`` model, ``logits_to_keep=1``;
- **torch bf16**: the same with ``dtype = "bfloat16"`` (AMX on recent Intel CPUs).

The two ONNX files' logits are asserted equal (to the last bit) on each prompt.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/smollm2_prompt_pass.py --repeats 7
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _args import positive


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (or write) the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=positive, nargs="+", default=[100, 512])
    parser.add_argument("--repeats", type=positive, default=7)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    from aieng_core.logs import configure_logging

    # Warnings to stderr: stdout carries the JSON report.
    configure_logging(level="WARNING", stream=sys.stderr)
    import onnxruntime as ort
    from aieng_onnx._export import (
        CAUSAL_TASK,
        EXPORT_FILE,
        _export,
        finite_attention_masks,
        keep_logits_input,
    )
    from aieng_transformers import SmolLM2Backend, SmolLM2Options

    torch.set_num_threads(1)
    backend = SmolLM2Backend()
    lm = backend.load()
    half = SmolLM2Backend(SmolLM2Options(dtype="bfloat16")).load()
    folder = backend._folder(backend.source())
    work = Path(tempfile.mkdtemp(prefix="aieng-prompt-pass-"))
    try:
        _export(folder, work / "export", 18, CAUSAL_TASK)
        plain = work / "export" / EXPORT_FILE
        keep_logits_input(plain)
        finite = work / "export" / "finite.onnx"
        shutil.copyfile(plain, finite)
        guards = finite_attention_masks(finite)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        sessions = {name: ort.InferenceSession(str(file), options,
                                               providers=["CPUExecutionProvider"])
                    for name, file in (("ORT, -inf masks + NaN guards", plain),
                                       ("ORT, finite masks", finite))}
        past = [i.name for i in sessions["ORT, finite masks"].get_inputs()
                if i.name.startswith("past_key_values.")]
        rows: list[dict[str, Any]] = []
        for length in args.lengths:
            ids = np.random.default_rng(length).integers(100, 40_000, (1, length))
            feed: dict[str, Any] = {
                "input_ids": ids.astype(np.int64),
                "attention_mask": np.ones((1, length), dtype=np.int64),
                "position_ids": np.arange(length, dtype=np.int64)[None],
                "logits_to_keep": np.array([1], dtype=np.int64),
                **dict.fromkeys(past, np.zeros((1, 3, 0, 64), dtype=np.float32))}
            outputs = [s.run(["logits"], feed)[0] for s in sessions.values()]
            assert np.array_equal(outputs[0], outputs[1]), "the rewrite changed the logits"
            tensor = torch.from_numpy(ids)

            def run_torch(tensor: torch.Tensor = tensor, model: Any = lm.model) -> None:
                with torch.inference_mode():
                    model(input_ids=tensor, use_cache=True, logits_to_keep=1)

            calls = {name: (lambda s=session, f=feed: s.run(["logits"], f))
                     for name, session in sessions.items()}
            calls["torch"] = run_torch
            calls["torch bf16"] = lambda t=tensor, m=half.model: run_torch(t, m)
            times: dict[str, list[float]] = {name: [] for name in calls}
            for call in calls.values():
                call()  # warm-up
            for repeat in range(args.repeats):
                names = list(calls)
                names = names[repeat % len(names):] + names[:repeat % len(names)]
                for name in names:
                    started = time.process_time()
                    calls[name]()
                    times[name].append(time.process_time() - started)
            for name, samples in times.items():
                row = {"tokens": length, "variant": name,
                       "cpu_ms": round(1000 * statistics.median(samples), 1),
                       "min_ms": round(1000 * min(samples), 1),
                       "max_ms": round(1000 * max(samples), 1)}
                rows.append(row)
                print(f"{length:>5} tokens  {name:<30} {row['cpu_ms']:8.1f} ms "
                      f"({row['min_ms']}–{row['max_ms']})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {"benchmark": "smollm2_prompt_pass", "repeats": args.repeats,
              "guards_dropped": guards, "onnxruntime": ort.__version__,
              "torch": torch.__version__, "results": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")
    else:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
