"""MiniLM int8 on ONNX Runtime with signed against unsigned weights, on this CPU.

``minilm-onnx`` quantizes with signed (s8) weights, except on an x86 CPU without VNNI,
where ONNX Runtime's u8 × s8 kernels add pairs of products in 16 bits with saturation and
it quantizes with unsigned (u8) weights instead (``aieng_onnx._quantize.int8_weights``).
This measures what that choice costs and buys on the machine it runs on: sentences per
CPU-second of ``session.run`` plus tokenization and pooling (the component's own
``OnnxEncoder``, least-padding batches of 32), one thread, for fp32, s8 and u8 files of
the same export, and sentence-transformers (torch) when it is installed (the peer of
docs/benchmarks.md's MiniLM section); and each int8 variant's mean and lowest cosine to
the fp32 vectors.

Run it alone::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/minilm_int8_weights.py [--repeats 5]

(Peer, optional: ``.venv/bin/pip install "sentence-transformers==5.7.*"``.)
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _args import positive
from minilm_ort import machine, sentences  # the same sentences and machine line


def cosines(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    values = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(values.mean()), float(values.min())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=positive, default=500)
    parser.add_argument("--repeats", type=positive, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from aieng_core.logs import configure_logging

    # As the CLI does: warnings and up, on stderr (not model-load info lines in stdout).
    configure_logging(level="WARNING", stream=sys.stderr)

    from aieng_onnx import exported
    from aieng_onnx._embedder import load_tokenizer
    from aieng_onnx._quantize import int8_weights, quantize_int8
    from aieng_onnx._runtime import OnnxEncoder, open_session
    from aieng_transformers._paths import packaged_minilm

    texts = sentences(args.sentences)
    source = packaged_minilm()
    variants: dict[str, Callable[[Sequence[str]], Any]] = {}
    with tempfile.TemporaryDirectory() as cache:
        folder, _ = exported(source, Path(cache), opset=18)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        files = {"ORT fp32": folder / "model.onnx"}
        for weights in ("s8", "u8"):
            files[f"ORT int8, {weights} weights"] = folder / f"model.{weights}.onnx"
            quantize_int8(folder / "model.onnx", files[f"ORT int8, {weights} weights"],
                          weights=weights)  # type: ignore[arg-type]
        for name, file in files.items():
            encoder = OnnxEncoder(open_session(file, providers=("cpu",), threads=1),
                                  load_tokenizer(folder), dimension=int(config["hidden_size"]),
                                  batch_size=32, max_length=256)
            variants[name] = encoder.encode
        try:
            import torch
            from sentence_transformers import SentenceTransformer

            torch.set_num_threads(1)
            peer = SentenceTransformer(str(source), device="cpu")
            peer.max_seq_length = 256
            variants["sentence-transformers (torch)"] = lambda t: peer.encode(
                list(t), batch_size=32, normalize_embeddings=True)
        except ImportError:
            print("(sentence-transformers not installed: no peer row)")
        vectors = {name: np.asarray(encode(texts)) for name, encode in variants.items()}
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for repeat in range(args.repeats):
            for name in names[repeat % len(names):] + names[:repeat % len(names)]:
                started = time.process_time()
                variants[name](texts)
                seconds[name].append(time.process_time() - started)

    reference = vectors["ORT fp32"]
    peer_rate = None
    if "sentence-transformers (torch)" in seconds:
        peer_rate = len(texts) / statistics.median(seconds["sentence-transformers (torch)"])
    rows = []
    print(f"{machine()}; this CPU's int8 weights: {int8_weights()}; "
          f"{len(texts)} sentences, {args.repeats} repeats, 1 thread")
    print("| variant | sentences per CPU-second (median) | min | max | ÷ ST | mean cosine vs "
          "ORT fp32 | lowest |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in names:
        rates = sorted(len(texts) / s for s in seconds[name])
        rate = statistics.median(rates)
        mean, low = cosines(vectors[name], reference)
        ratio = f"{rate / peer_rate:.2f}×" if peer_rate else "—"
        print(f"| {name} | {rate:.0f} | {rates[0]:.0f} | {rates[-1]:.0f} | {ratio} | "
              f"{mean:.5f} | {low:.5f} |")
        rows.append({"variant": name, "rate": rate, "rates": rates, "cosine_mean": mean,
                     "cosine_min": low})
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(),
                                               "int8_weights": int8_weights(),
                                               "rows": rows}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
