"""BM25 on a synthetic 100k-document corpus (issue 4): aieng-bm25 against bm25s and rank_bm25.

The corpus is seeded and made in memory, nothing downloaded:

* **Vocabulary**: the index terms of the Cranfield collection (../shared/data/cranfield:
  real English, aeronautics), i.e. the Snowball stems of its words (``boundari``,
  ``laminar``), kept when every tokenizer here leaves them as they are: letters only, at
  least two, not a stopword of bm25s's list, their own stem for PyStemmer and for our
  analyzer (4,067 terms). So all systems see the very same terms: tokenization is equal
  by construction (the script checks it on a sample).
* **Frequencies**: Zipf–Mandelbrot over the words ranked by their Cranfield frequency,
  ``p(r) ∝ 1 / (r + 2.7)``, the shape of real text.
* **Documents**: ``--docs`` (100,000) of 50–200 terms (uniform), terms drawn independently.
* **Queries**: ``--queries`` (500) of 2–6 distinct terms from the same distribution.

``scorer=impacts`` is aieng-bm25 with its second engine (precomputed BM25 term weights,
exact document lengths; see plugins/bm25/README.md); its indexing time includes building
the impacts after the commit (``refresh()``: the first search after writes would build
them otherwise).

Measured, one query per call on one thread: queries/s at k=10 and k=100, indexing docs/s
(from text, commit included), top-10 overlap. rank_bm25 scores every document in Python
per query term (~0.1 s a query here): it is timed on the first ``--rank-bm25-queries``
queries only, indexed once, and its overlap is over those queries. ``--repeats`` rounds,
each building every system afresh and running the queries at k=10 then k=100, systems in
a rotated order; the first round first takes the rankings (a warm-up pass: numba compiles
here). The median is reported::

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 .venv/bin/python benchmarks/bm25_synthetic.py [--json PATH]

Peers: ``.venv/bin/pip install bm25s PyStemmer rank_bm25 numba`` (not plugin dependencies).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse
import datetime
import json
import statistics
import sys
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from _args import positive
from aieng_bm25 import MEMORY, BM25Index, BM25Options
from aieng_hookspecs.types import Document
from bm25_cranfield import (
    CRANFIELD,
    Bm25s,
    Ours,
    RankBm25,
    System,
    _machine,
    _revision,
    _timed,
    _versions,
    overlap_at_10,
)

from aieng_core.evaluation import load_beir

OURS, OURS_TEXT = "aieng-bm25, disk, default options", "aieng-bm25, disk, text only"
OURS_MEMORY = "aieng-bm25, memory, text only"
OURS_NO_CACHE = "aieng-bm25, disk, text only, document_cache=0"
OURS_IMPACTS = "aieng-bm25, disk, text only, scorer=impacts"
BM25S, BM25S_NUMBA, RANK_BM25 = "bm25s, numpy", "bm25s, numba", "rank_bm25 BM25Okapi"


def vocabulary(data: Path) -> tuple[list[str], np.ndarray]:
    """Cranfield's index terms that every tokenizer keeps unchanged, most frequent first,
    and their Zipf–Mandelbrot probabilities."""
    import Stemmer
    from bm25s.stopwords import STOPWORDS_EN

    counts: Counter[str] = Counter()
    analyzer = BM25Index(BM25Options(path=MEMORY))
    for doc in load_beir(data.resolve()).documents:
        counts.update(analyzer.terms(doc.text))
    stem = Stemmer.Stemmer("english").stemWord
    stop = set(STOPWORDS_EN)
    words = [word for word, _ in counts.most_common()
             if len(word) >= 2 and word.isalpha() and word not in stop
             and stem(word) == word and analyzer.terms(word) == [word]]
    ranks = np.arange(len(words), dtype=np.float64)
    weights = 1.0 / (ranks + 2.7)
    return words, weights / weights.sum()


def make_corpus(words: list[str], p: np.ndarray, n_docs: int, n_queries: int,
                seed: int) -> tuple[list[Document], dict[str, str]]:
    """The seeded documents and queries."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(50, 201, size=n_docs)
    drawn = rng.choice(len(words), size=int(lengths.sum()), p=p)
    vocab = np.array(words, dtype=object)
    docs, start = [], 0
    for i, length in enumerate(lengths):
        docs.append(Document(f"d{i}", " ".join(vocab[drawn[start:start + length]])))
        start += length
    queries = {}
    for i in range(n_queries):
        terms = dict.fromkeys(vocab[rng.choice(len(words), size=int(rng.integers(2, 7)), p=p)])
        queries[f"q{i}"] = " ".join(terms)
    return docs, queries


def check_equal_tokens(docs: list[Document], queries: dict[str, str]) -> None:
    """Raise unless our analyzer and bm25s's recipe cut the same terms (a sample)."""
    import bm25s
    import Stemmer

    analyzer = BM25Index(BM25Options(path=MEMORY))
    texts = [doc.text for doc in docs[:200]] + list(queries.values())[:200]
    theirs = bm25s.tokenize(texts, stopwords="en", stemmer=Stemmer.Stemmer("english"),
                            return_ids=False, show_progress=False)
    for text, tokens in zip(texts, theirs, strict=True):
        if analyzer.terms(text) != list(tokens) or text.split() != list(tokens):
            raise AssertionError(f"tokenizations differ on {text[:60]!r}")


def run(systems: list[System], rank: System, docs: list[Document], queries: dict[str, str],
        repeats: int, rank_queries: int) -> dict[str, dict[str, Any]]:
    """Rankings (k=10) and timing samples of every system."""
    texts = list(queries.values())
    out: dict[str, dict[str, Any]] = {s.name: {"index_s": [], "query10_s": [],
                                               "query100_s": []} for s in systems}
    for repeat in range(repeats):
        print(f"  repeat {repeat + 1}/{repeats}", file=sys.stderr)
        shift = repeat % len(systems)
        for system in systems[shift:] + systems[:shift]:
            samples = out[system.name]
            samples["index_s"].append(_timed(partial(system.build, docs)))
            if repeat == 0:  # the rankings, and the queries' warm-up (numba compiles here)
                samples["rankings"] = {qid: system.search(text, 10)
                                       for qid, text in queries.items()}
            samples["query10_s"].append(_timed(partial(system.run_queries, texts, 10)))
            samples["query100_s"].append(_timed(partial(system.run_queries, texts, 100)))
            system.close()
    print(f"  {rank.name}: once, {rank_queries} queries", file=sys.stderr)
    subset = texts[:rank_queries]
    row: dict[str, Any] = {"index_s": [_timed(partial(rank.build, docs))]}
    row["query10_s"] = [_timed(partial(rank.run_queries, subset, 10))]
    row["query100_s"] = [_timed(partial(rank.run_queries, subset, 100))]
    row["rankings"] = {qid: rank.search(text, 10)
                       for qid, text in list(queries.items())[:rank_queries]}
    out[rank.name] = row
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=positive, default=100_000)
    parser.add_argument("--queries", type=positive, default=500)
    parser.add_argument("--rank-bm25-queries", type=positive, default=20)
    parser.add_argument("--repeats", type=positive, default=3)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--data", type=Path, default=CRANFIELD, help="the vocabulary's source")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    from _peers import require

    require("bm25s", "Stemmer", "rank_bm25", "numba")

    from aieng_core.logs import configure_logging

    configure_logging(level="WARNING", stream=sys.stderr)
    machine = _machine()
    words, p = vocabulary(args.data)
    docs, queries = make_corpus(words, p, args.docs, args.queries, args.seed)
    check_equal_tokens(docs, queries)
    # rank_bm25 runs a subset of the queries: never more than there are.
    args.rank_bm25_queries = min(args.rank_bm25_queries, len(queries))
    n_tokens = sum(len(doc.text.split()) for doc in docs)
    print(f"{len(docs)} documents ({n_tokens / len(docs):.0f} terms each on average, "
          f"{len(words)} distinct words), {len(queries)} queries", file=sys.stderr)
    systems: list[System] = [
        Ours(OURS), Ours(OURS_TEXT, title_boost=0.0),
        Ours(OURS_MEMORY, memory=True, title_boost=0.0),
        Ours(OURS_NO_CACHE, title_boost=0.0, document_cache=0),
        Ours(OURS_IMPACTS, title_boost=0.0, scorer="impacts"),
        Bm25s(BM25S), Bm25s(BM25S_NUMBA, backend="numba"),
    ]
    raw = run(systems, RankBm25(RANK_BM25), docs, queries, args.repeats,
              args.rank_bm25_queries)
    machine["loadavg_end"] = os.getloadavg()
    rows: dict[str, dict[str, Any]] = {}
    for name, samples in raw.items():
        n_q = args.rank_bm25_queries if name == RANK_BM25 else len(queries)
        row: dict[str, Any] = {}
        for key, count, label in (("index_s", len(docs), "index_docs_per_s"),
                                  ("query10_s", n_q, "qps_k10"),
                                  ("query100_s", n_q, "qps_k100")):
            per_s = [count / seconds for seconds in samples[key]]
            row[label] = {"median": statistics.median(per_s), "min": min(per_s),
                          "max": max(per_s), "samples": len(per_s)}
        rows[name] = row
    rankings = {name: samples["rankings"] for name, samples in raw.items()}
    subset = {q: rankings[BM25S][q] for q in rankings[RANK_BM25]}
    overlaps = {f"{name} vs {BM25S}": overlap_at_10(rankings[name], rankings[BM25S])
                for name in (OURS, OURS_TEXT, OURS_MEMORY, OURS_NO_CACHE, OURS_IMPACTS,
                             BM25S_NUMBA)}
    overlaps[f"{RANK_BM25} vs {BM25S} ({len(subset)} queries)"] = overlap_at_10(
        rankings[RANK_BM25], subset)
    results = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": ("OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 .venv/bin/python "
                    "benchmarks/bm25_synthetic.py "
                    + " ".join(argv if argv is not None else sys.argv[1:])).strip(),
        "params": {"docs": len(docs), "queries": len(queries), "repeats": args.repeats,
                   "seed": args.seed, "vocabulary": len(words),
                   "mean_doc_terms": n_tokens / len(docs),
                   "rank_bm25_queries": args.rank_bm25_queries},
        "revision": _revision(), "machine": machine, "versions": _versions(),
        "systems": rows, "overlap@10": overlaps,
    }
    print(render(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def render(results: dict[str, Any]) -> str:
    """The results as markdown tables."""
    rows = results["systems"]

    def rate(row: dict[str, Any], key: str) -> str:
        return f"{row[key]['median']:,.0f}"

    lines = ["| system | queries/s, k=10 | queries/s, k=100 | indexing docs/s |",
             "|---|---:|---:|---:|"]
    for name, row in rows.items():
        lines.append(f"| {name} | {rate(row, 'qps_k10')} | {rate(row, 'qps_k100')} "
                     f"| {rate(row, 'index_docs_per_s')} |")
    lines += ["", "| ours ÷ peer | queries/s, k=10 | queries/s, k=100 | indexing docs/s |",
              "|---|---:|---:|---:|"]
    for ours in (OURS, OURS_TEXT, OURS_MEMORY, OURS_IMPACTS):
        for peer in (BM25S_NUMBA, BM25S, RANK_BM25):
            cells = [f"{rows[ours][key]['median'] / rows[peer][key]['median']:.2f}×"
                     for key in ("qps_k10", "qps_k100", "index_docs_per_s")]
            lines.append(f"| {ours} ÷ {peer} | " + " | ".join(cells) + " |")
    lines += ["", "| pair (equal tokenization) | mean overlap@10 |", "|---|---:|"]
    for pair, value in results["overlap@10"].items():
        lines.append(f"| {pair} | {value:.3f} |")
    m, prm = results["machine"], results["params"]
    lines += ["", (f"Corpus: {prm['docs']:,} documents, {prm['mean_doc_terms']:.0f} terms on "
                   f"average, {prm['vocabulary']:,} distinct words, seed {prm['seed']}; "
                   f"{prm['queries']:,} queries ({prm['rank_bm25_queries']} for rank_bm25); "
                   f"{prm['repeats']} repeats."),
              (f"Machine: {m['cpu']}, {m['cores']} cores, {m['implementation']} "
               f"{m['python']}, load average {m['loadavg_start'][0]:.2f} → "
               f"{m['loadavg_end'][0]:.2f}."),
              "Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + ".",
              (f"Date: {results['date']}. Revision: {results['revision']}. "
               f"Command: `{results['command']}`.")]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
