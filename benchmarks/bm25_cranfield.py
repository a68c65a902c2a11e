"""BM25 on Cranfield (issue 4): aieng-bm25 against bm25s and rank_bm25, in one process.

Measures, on ../shared/data/cranfield (1,400 documents, 225 queries, graded qrels):

* nDCG@10, Recall@100 and MRR@10 (graded; the kernel's ``aieng_core.evaluation``);
* queries/s, one query per call as a retriever in a pipeline sees them, at k=10 and k=100,
  on one thread (bm25s also batched: all queries in one call, as bm25s prefers);
* indexing docs/s from raw text (tokenization included), one thread;
* top-10 overlap with bm25s: against bm25s's own tokenization, and against bm25s fed this
  plugin's analyzer tokens (equal tokenization: then only the BM25 arithmetic differs).

Systems: aieng-bm25 on disk (default options: title and text fields, title_boost 1.0),
aieng-bm25 on the text field only (title_boost 0, the input the peers get), aieng-bm25
in memory, and aieng-bm25 with ``scorer="impacts"`` (precomputed BM25 term weights, exact
lengths; title + text and text only); bm25s 0.3 (k1=1.2, b=0.75, method "lucene") with PyStemmer's English stemmer
and bm25s's English stopwords, numpy and numba backends; rank_bm25's BM25Okapi (k1=1.2,
b=0.75) on the same tokens as bm25s. Peers index the ``text`` field, which in Cranfield
starts with the title. Timings: a warm-up pass, then ``--repeats`` samples per variant,
interleaved in a rotated order; the median is reported. Run it alone::

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 .venv/bin/python benchmarks/bm25_cranfield.py [--json PATH]

Peers: ``.venv/bin/pip install bm25s PyStemmer rank_bm25 numba`` (not plugin dependencies).
"""

from __future__ import annotations

import os

# One thread for every library, set before numpy / numba load.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse
import datetime
import gc
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from _args import positive
from aieng_bm25 import MEMORY, BM25Index, BM25Options
from aieng_hookspecs.types import Document

from aieng_core.evaluation import load_beir, score_runs

ROOT = Path(__file__).resolve().parents[1]
CRANFIELD = ROOT / ".." / "shared" / "data" / "cranfield"
K_QUALITY = 100  # one run of k=100 gives both nDCG@10 (its top 10) and Recall@100


class System:
    """One retriever under test: ``build`` indexes the corpus, ``search`` answers one query
    with document ids, best first; ``batch`` (optional) answers many in one call."""

    name = ""
    speed = True  # whether its timings are reported (not for the equal-tokenization run)

    def build(self, corpus: Sequence[Document]) -> None:
        raise NotImplementedError

    def search(self, text: str, k: int) -> list[str]:
        raise NotImplementedError

    def batch(self, texts: Sequence[str], k: int) -> list[list[str]] | None:
        return None

    def run_queries(self, texts: Sequence[str], k: int) -> None:
        """Answer every query, one call each (what the queries/s columns time)."""
        for text in texts:
            self.search(text, k)

    def close(self) -> None:
        pass


class Ours(System):
    """aieng-bm25's BM25Index (what the ``bm25`` component's hooks call, minus the thread
    hop), returning full hits (documents with text and metadata), as a retriever does."""

    def __init__(self, name: str, *, memory: bool = False, title_boost: float = 1.0,
                 **options: Any) -> None:
        self.name, self.memory, self.title_boost = name, memory, title_boost
        self.options = options  # more BM25Options (document_cache, ...)
        self.folder: tempfile.TemporaryDirectory[str] | None = None
        self.index: BM25Index | None = None

    def build(self, corpus: Sequence[Document]) -> None:
        self.close()
        path = MEMORY
        if not self.memory:
            self.folder = tempfile.TemporaryDirectory(prefix="bm25-bench-")
            path = self.folder.name
        self.index = BM25Index(BM25Options(path=path, title_boost=self.title_boost,
                                           **self.options))
        self.index.add(corpus)
        # The impacts scorer rebuilds at the first search after writes: paid here, so
        # that indexing time holds it and the timed queries do not.
        self.index.refresh()

    def search(self, text: str, k: int) -> list[str]:
        assert self.index is not None
        return [hit.document.id for hit in self.index.search(text, k)]

    def close(self) -> None:
        if self.index is not None:
            self.index.close()
            self.index = None
        if self.folder is not None:
            self.folder.cleanup()
            self.folder = None


class OursPipeline(Ours):
    """The ``bm25`` component in a retrieve-only pipeline of a default ``Kernel()``
    (watchdog on, 30 s timeouts): ``Pipeline.run`` per query, the ``@blocking`` impl in a
    worker thread; what an application calling the kernel pays."""

    def run_queries(self, texts: Sequence[str], k: int) -> None:
        import anyio
        from aieng_bm25 import BM25Retriever

        from aieng_core import Kernel

        assert self.index is not None
        component = BM25Retriever(self.index.options)
        component.index = self.index  # the index built by build(), not a second one

        async def main() -> None:
            # No entry points: the benchmark composes its own component and must not load
            # (or time) whatever else is installed.
            async with Kernel(env={}, entry_points=(), default_embedder=None) as kernel:
                pipeline = kernel.compose({"bm25": component}, stages=["retrieve"],
                                          stage={"retrieve": {"k": k}})
                for text in texts:
                    await pipeline.run(text)

        anyio.run(main)


def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


class Bm25s(System):
    """bm25s with PyStemmer and its English stopwords (its documented recipe), or with
    pre-computed tokens (``tokens``: the equal-tokenization run)."""

    def __init__(self, name: str, *, backend: str = "numpy",
                 tokens: Callable[[str], list[str]] | None = None) -> None:
        self.name, self.backend, self.tokens = name, backend, tokens
        self.speed = tokens is None
        self.stemmer = _stemmer()
        self.model: Any = None
        self.ids: list[str] = []

    def _tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        import bm25s

        if self.tokens is not None:
            return [self.tokens(text) for text in texts]
        result: list[list[str]] = bm25s.tokenize(
            list(texts), stopwords="en", stemmer=self.stemmer, return_ids=False,
            show_progress=False)
        return result

    def build(self, corpus: Sequence[Document]) -> None:
        import bm25s

        self.ids = [doc.id for doc in corpus]
        self.model = bm25s.BM25(k1=1.2, b=0.75, backend=self.backend)
        self.model.index(self._tokenize([doc.text for doc in corpus]), show_progress=False)

    def _retrieve(self, tokens: list[list[str]], k: int) -> list[list[str]]:
        # n_threads=0 runs in the calling thread; n_threads=1 would start a thread pool
        # per call on the numpy backend (costing it 2-5x per query).
        found, _ = self.model.retrieve(tokens, k=min(k, len(self.ids)), n_threads=0,
                                       show_progress=False)
        return [[self.ids[i] for i in row] for row in found]

    def search(self, text: str, k: int) -> list[str]:
        return self._retrieve(self._tokenize([text]), k)[0]

    def batch(self, texts: Sequence[str], k: int) -> list[list[str]] | None:
        return self._retrieve(self._tokenize(texts), k)


class RankBm25(System):
    """rank_bm25's BM25Okapi on bm25s's tokenization (PyStemmer + English stopwords)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stemmer = _stemmer()
        self.model: Any = None
        self.ids: list[str] = []

    def _tokenize(self, text: str) -> list[str]:
        import bm25s

        tokens: list[list[str]] = bm25s.tokenize([text], stopwords="en", stemmer=self.stemmer,
                                                 return_ids=False, show_progress=False)
        return tokens[0]

    def build(self, corpus: Sequence[Document]) -> None:
        from rank_bm25 import BM25Okapi

        self.ids = [doc.id for doc in corpus]
        self.model = BM25Okapi([self._tokenize(doc.text) for doc in corpus], k1=1.2, b=0.75)

    def search(self, text: str, k: int) -> list[str]:
        scores = self.model.get_scores(self._tokenize(text))
        top = np.argsort(-scores, kind="stable")[:k]
        return [self.ids[i] for i in top]


# -- measuring ---------------------------------------------------------------------------


def _timed(work: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def measure(systems: list[System], corpus: list[Document], queries: dict[str, str],
            repeats: int) -> dict[str, dict[str, Any]]:
    """Rankings at k=100 and timing samples of every system, interleaved across repeats."""
    texts = list(queries.values())
    out: dict[str, dict[str, Any]] = {s.name: {"index_s": [], "query10_s": [],
                                               "query100_s": [], "batch10_s": []}
                                      for s in systems}
    for system in systems:  # warm-up (numba compiles here) and the quality run
        print(f"  {system.name}: warm-up and quality run", file=sys.stderr)
        system.build(corpus)
        out[system.name]["rankings"] = {qid: system.search(text, K_QUALITY)
                                        for qid, text in queries.items()}
        system.run_queries(texts[:20], 10)
        system.batch(texts[:20], 10)
    for repeat in range(repeats):
        print(f"  repeat {repeat + 1}/{repeats}", file=sys.stderr)
        shift = repeat % len(systems)
        for system in systems[shift:] + systems[:shift]:
            if not system.speed:
                continue
            samples = out[system.name]
            samples["index_s"].append(_timed(partial(system.build, corpus)))
            samples["query10_s"].append(_timed(partial(system.run_queries, texts, 10)))
            samples["query100_s"].append(_timed(partial(system.run_queries, texts, 100)))
            if system.batch(texts[:2], 10) is not None:
                samples["batch10_s"].append(_timed(partial(system.batch, texts, 10)))
    for system in systems:
        system.close()
    return out


def overlap_at_10(left: dict[str, list[str]], right: dict[str, list[str]]) -> float:
    """Mean over queries of |top-10 of left ∩ top-10 of right| / 10."""
    return statistics.fmean(len(set(left[q][:10]) & set(right[q][:10])) / 10 for q in left)


# -- the run -----------------------------------------------------------------------------


def _machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model or platform.processor(), "cores": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "loadavg_start": os.getloadavg()}


def _revision() -> str:
    """The commit measured, with ``+dirty`` when the working tree differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, cwd=ROOT).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True,
                               cwd=ROOT).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _versions() -> dict[str, str]:
    found = {}
    for dist in ("aieng-bm25", "tantivy", "bm25s", "PyStemmer", "rank-bm25", "numba",
                 "numpy"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    return found


OURS, OURS_TEXT, OURS_MEMORY = ("aieng-bm25, disk, title + text", "aieng-bm25, disk, text only",
                                "aieng-bm25, memory, title + text")
OURS_PIPELINE = "aieng-bm25, disk, title + text, through Pipeline.run"
OURS_IMPACTS, OURS_IMPACTS_TEXT = ("aieng-bm25, disk, title + text, scorer=impacts",
                                   "aieng-bm25, disk, text only, scorer=impacts")
BM25S, BM25S_NUMBA, BM25S_EQUAL = ("bm25s, numpy", "bm25s, numba",
                                   "bm25s, numpy, our tokens")
RANK_BM25 = "rank_bm25 BM25Okapi"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=positive, default=7)
    parser.add_argument("--data", type=Path, default=CRANFIELD, help="a BEIR-layout folder")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    from _peers import require

    require("bm25s", "Stemmer", "rank_bm25", "numba")

    from aieng_core.logs import configure_logging

    # As the CLI does: warnings and up. Unconfigured structlog prints every debug line.
    configure_logging(level="WARNING", stream=sys.stderr)
    collection = load_beir(args.data.resolve())
    corpus, qrels = list(collection.documents), collection.qrels
    queries = {query.id: query.text for query in collection.queries}
    machine = _machine()
    analyzer = BM25Index(BM25Options(path=MEMORY))  # our analyzer, for the equal-tokens run
    systems: list[System] = [
        Ours(OURS), Ours(OURS_TEXT, title_boost=0.0), Ours(OURS_MEMORY, memory=True),
        OursPipeline(OURS_PIPELINE),
        Ours(OURS_IMPACTS, scorer="impacts"),
        Ours(OURS_IMPACTS_TEXT, title_boost=0.0, scorer="impacts"),
        Bm25s(BM25S), Bm25s(BM25S_NUMBA, backend="numba"),
        Bm25s(BM25S_EQUAL, tokens=analyzer.terms), RankBm25(RANK_BM25),
    ]
    print(f"{len(corpus)} documents, {len(queries)} queries", file=sys.stderr)
    raw = measure(systems, corpus, queries, args.repeats)
    machine["loadavg_end"] = os.getloadavg()
    n_docs, n_queries = len(corpus), len(queries)
    rows: dict[str, dict[str, Any]] = {}
    for name, samples in raw.items():
        runs = samples["rankings"]
        scores = score_runs(runs, qrels)
        row: dict[str, Any] = {"ndcg@10": scores.ndcg_at_10,
                               "recall@100": scores.recall_at_100,
                               "mrr@10": scores.mrr_at_10}
        for key, count, label in (("index_s", n_docs, "index_docs_per_s"),
                                  ("query10_s", n_queries, "qps_k10"),
                                  ("query100_s", n_queries, "qps_k100"),
                                  ("batch10_s", n_queries, "qps_k10_batched")):
            if samples[key]:
                per_s = [count / seconds for seconds in samples[key]]
                row[label] = {"median": statistics.median(per_s), "min": min(per_s),
                              "max": max(per_s)}
        rows[name] = row
    rankings = {name: samples["rankings"] for name, samples in raw.items()}
    overlaps = {
        f"{OURS_TEXT} vs {BM25S_EQUAL} (equal tokenization)":
            overlap_at_10(rankings[OURS_TEXT], rankings[BM25S_EQUAL]),
        f"{OURS_IMPACTS_TEXT} vs {BM25S_EQUAL} (equal tokenization)":
            overlap_at_10(rankings[OURS_IMPACTS_TEXT], rankings[BM25S_EQUAL]),
        f"{OURS_IMPACTS_TEXT} vs {OURS_TEXT}":
            overlap_at_10(rankings[OURS_IMPACTS_TEXT], rankings[OURS_TEXT]),
        f"{OURS_IMPACTS} vs {OURS}": overlap_at_10(rankings[OURS_IMPACTS], rankings[OURS]),
        f"{OURS_TEXT} vs {BM25S}": overlap_at_10(rankings[OURS_TEXT], rankings[BM25S]),
        f"{OURS} vs {BM25S}": overlap_at_10(rankings[OURS], rankings[BM25S]),
        f"{BM25S_NUMBA} vs {BM25S}": overlap_at_10(rankings[BM25S_NUMBA], rankings[BM25S]),
        f"{RANK_BM25} vs {BM25S}": overlap_at_10(rankings[RANK_BM25], rankings[BM25S]),
    }
    results = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": ("OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 .venv/bin/python "
                    "benchmarks/bm25_cranfield.py "
                    + " ".join(argv if argv is not None else sys.argv[1:])).strip(),
        "params": {"repeats": args.repeats, "documents": n_docs, "queries": n_queries},
        "revision": _revision(), "machine": machine, "versions": _versions(),
        "systems": rows, "overlap@10": overlaps,
    }
    print(render(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


# -- the report ---------------------------------------------------------------------------


def _rate(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    return f"{value['median']:,.0f}" if value else "—"


def _ratio(row: dict[str, Any], peer: dict[str, Any], key: str) -> str:
    mine, theirs = row.get(key), peer.get(key)
    if not mine or not theirs:
        return "—"
    return f"{mine['median'] / theirs['median']:.2f}×"


def render(results: dict[str, Any]) -> str:
    """The results as markdown tables (what docs/benchmarks.md shows)."""
    rows = results["systems"]
    lines = ["#### Quality and speed (median of the repeats; min–max in the JSON)", "",
             ("| system | nDCG@10 | Recall@100 | MRR@10 | queries/s, k=10 | queries/s, k=100 "
              "| queries/s, k=10, batched | indexing docs/s |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['ndcg@10']:.4f} | {row['recall@100']:.4f} "
                     f"| {row['mrr@10']:.4f} "
                     f"| {_rate(row, 'qps_k10')} | {_rate(row, 'qps_k100')} "
                     f"| {_rate(row, 'qps_k10_batched')} | {_rate(row, 'index_docs_per_s')} |")
    for ours_name in (OURS, OURS_TEXT, OURS_MEMORY, OURS_IMPACTS, OURS_IMPACTS_TEXT):
        ours = rows[ours_name]
        lines += ["", f"#### Ratios: {ours_name} ÷ peer", "",
                  ("| peer | nDCG@10 | Recall@100 | queries/s, k=10 | queries/s, k=100 "
                   "| indexing docs/s |"),
                  "|---|---:|---:|---:|---:|---:|"]
        for peer_name in (BM25S, BM25S_NUMBA, RANK_BM25):
            peer = rows[peer_name]
            lines.append(
                f"| {peer_name} | {ours['ndcg@10'] / peer['ndcg@10']:.3f}× "
                f"| {ours['recall@100'] / peer['recall@100']:.3f}× "
                f"| {_ratio(ours, peer, 'qps_k10')} | {_ratio(ours, peer, 'qps_k100')} "
                f"| {_ratio(ours, peer, 'index_docs_per_s')} |")
    lines += ["", "#### Top-10 overlap", "", "| pair | mean overlap@10 |", "|---|---:|"]
    for pair, value in results["overlap@10"].items():
        lines.append(f"| {pair} | {value:.3f} |")
    m = results["machine"]
    lines += ["", (f"Machine: {m['cpu']}, {m['cores']} cores, {m['implementation']} "
                   f"{m['python']}, load average {m['loadavg_start'][0]:.2f} → "
                   f"{m['loadavg_end'][0]:.2f}."),
              "Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + ".",
              (f"Date: {results['date']}. Revision: {results['revision']}. "
               f"Command: `{results['command']}`.")]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
