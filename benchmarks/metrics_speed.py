"""Reference metrics speed: aieng-metrics against rouge-score and sacrebleu, in one process.

On 5,000 synthetic (hypothesis, reference) pairs (seeded: Zipf-distributed words from a
2,000-word vocabulary with punctuation, numbers and dashes; each reference a perturbed
copy of its hypothesis: words dropped, substituted, swapped), measures pairs/s of

* ROUGE-1/2/L together (precision, recall, F of each), one pair per call:
  ``aieng_metrics.rouge`` vs ``rouge_score.rouge_scorer.RougeScorer.score``;
* sentence BLEU, one pair per call: ``aieng_metrics.sentence_bleu`` vs one reused
  ``sacrebleu.metrics.BLEU(effective_order=True).sentence_score``;
* corpus BLEU over all pairs: ``aieng_metrics.corpus_bleu`` vs ``BLEU().corpus_score``;
* sentence chrF, one pair per call: ``aieng_metrics.sentence_chrf`` vs ``CHRF()``.

Before timing, every score of every pair is asserted equal to the peer's (to 1e-9; they
are bit-identical in practice). Each measurement is the median of ``--repeats`` (5)
repeats, ours and the peer's interleaved; sacrebleu's tokenizer caches (``lru_cache`` on
the 13a tokenizer) are cleared before each of its repeats so that both sides tokenize
every pair, as a first evaluation does. Run it alone::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/metrics_speed.py [--pairs 5000] [--json]

``--runaway N`` measures instead ROUGE-1/2/L of one runaway answer (N tokens drawn from
the words of a 100-word reference, seeded) against that reference, ours and rouge-score's,
scores asserted equal, median of ``--repeats``: what a model that degenerates into a long
answer costs an evaluation::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/metrics_speed.py --runaway 20000 --repeats 3

Peers (test and benchmark dependencies of aieng-metrics, not runtime ones):
``pip install sacrebleu==2.6.0 rouge-score==0.1.2``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

from _args import positive
from aieng_metrics import corpus_bleu, rouge, sentence_bleu, sentence_chrf

try:
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
    from sacrebleu.tokenizers.tokenizer_re import TokenizerRegexp
except ImportError:  # a missing peer: say which, and how to install it
    from _peers import require

    require("rouge_score", "sacrebleu")
    raise

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_PUNCT = [",", ".", ";", ":", "!", "?", "(", ")", "-", "'s", "&"]


def make_pairs(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """``count`` (hypothesis, reference) pairs, reproducible from ``seed``."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "shi", "en", "dor", "al", "ix"]
    vocab = sorted({"".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(4000)})
    vocab = vocab[:2000]
    weights = [1.0 / (rank + 1) for rank in range(len(vocab))]
    pairs = []
    for _ in range(count):
        words = rng.choices(vocab, weights=weights, k=rng.randint(8, 40))
        tokens: list[str] = []
        for word in words:
            roll = rng.random()
            if roll < 0.08:
                tokens.append(rng.choice(_PUNCT))
            elif roll < 0.12:
                tokens.append(f"{rng.randint(0, 999)}{rng.choice(['', '.5', '-3', ',000'])}")
            tokens.append(word.capitalize() if rng.random() < 0.1 else word)
        reference = list(tokens)
        for _edit in range(rng.randint(0, len(reference) // 3)):
            i = rng.randrange(len(reference))
            action = rng.random()
            if action < 0.4:
                reference[i] = rng.choices(vocab, weights=weights)[0]
            elif action < 0.7 and len(reference) > 1:
                del reference[i]
            else:
                j = rng.randrange(len(reference))
                reference[i], reference[j] = reference[j], reference[i]
        pairs.append((" ".join(tokens) + ".", " ".join(reference) + "."))
    return pairs


def _clear_sacrebleu_caches() -> None:
    Tokenizer13a.__call__.cache_clear()  # type: ignore[attr-defined]
    TokenizerRegexp.__call__.cache_clear()  # type: ignore[attr-defined]


def check_equal(pairs: list[tuple[str, str]]) -> None:
    """Assert every score equals the peer's before anything is timed."""
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES))
    bleu = BLEU(effective_order=True)
    chrf = CHRF()
    for hyp, ref in pairs:
        ours = rouge(hyp, ref, ROUGE_TYPES)
        theirs = scorer.score(ref, hyp)
        for kind in ROUGE_TYPES:
            for field in ("precision", "recall", "fmeasure"):
                a, b = getattr(ours[kind], field), getattr(theirs[kind], field)
                assert math.isclose(a, b, abs_tol=1e-9), (kind, field, a, b, hyp, ref)
        a, b = sentence_bleu(hyp, ref), bleu.sentence_score(hyp, [ref]).score
        assert math.isclose(a, b, abs_tol=1e-9), ("bleu", a, b, hyp, ref)
        a, b = sentence_chrf(hyp, ref), chrf.sentence_score(hyp, [ref]).score
        assert math.isclose(a, b, abs_tol=1e-9), ("chrf", a, b, hyp, ref)
    hyps, refs = [h for h, _ in pairs], [r for _, r in pairs]
    a, b = corpus_bleu(hyps, refs).score, BLEU().corpus_score(hyps, [refs]).score
    assert math.isclose(a, b, abs_tol=1e-9), ("corpus bleu", a, b)


def timed(run: Callable[[], object], before: Callable[[], None] | None = None) -> float:
    """Seconds one call of ``run`` takes (``before`` runs untimed first)."""
    if before is not None:
        before()
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(pairs: list[tuple[str, str]], repeats: int) -> list[dict[str, Any]]:
    """Median pairs/s of each metric, ours and the peer's, interleaved per repeat."""
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES))
    bleu_sentence = BLEU(effective_order=True)
    bleu_corpus = BLEU()
    chrf = CHRF()
    hyps, refs = [h for h, _ in pairs], [r for _, r in pairs]
    ref_lists = [[r] for r in refs]
    cases: list[tuple[str, str, Callable[[], object], str, Callable[[], object]]] = [
        ("ROUGE-1/2/L (sentence)", "rouge-score",
         lambda: [rouge(h, r, ROUGE_TYPES) for h, r in pairs], "rouge-score",
         lambda: [scorer.score(r, h) for h, r in pairs]),
        ("BLEU (sentence)", "sacrebleu",
         lambda: [sentence_bleu(h, r) for h, r in pairs], "sacrebleu",
         lambda: [bleu_sentence.sentence_score(h, rl) for h, rl in zip(hyps, ref_lists)]),
        ("BLEU (corpus)", "sacrebleu",
         lambda: corpus_bleu(hyps, refs), "sacrebleu",
         lambda: bleu_corpus.corpus_score(hyps, [refs])),
        ("chrF (sentence)", "sacrebleu",
         lambda: [sentence_chrf(h, r) for h, r in pairs], "sacrebleu",
         lambda: [chrf.sentence_score(h, rl) for h, rl in zip(hyps, ref_lists)]),
    ]
    rows = []
    for name, peer, ours, _peer, theirs in cases:
        ours_s, theirs_s = [], []
        for _repeat in range(repeats):
            ours_s.append(timed(ours))
            theirs_s.append(timed(theirs, _clear_sacrebleu_caches))
        ours_rate = len(pairs) / statistics.median(ours_s)
        peer_rate = len(pairs) / statistics.median(theirs_s)
        rows.append({"metric": name, "peer": peer, "ours_pairs_per_s": round(ours_rate, 1),
                     "peer_pairs_per_s": round(peer_rate, 1),
                     "ratio": round(ours_rate / peer_rate, 2)})
    return rows


def runaway(tokens: int, repeats: int, seed: int = 0) -> dict[str, Any]:
    """Seconds of ROUGE-1/2/L on one answer of ``tokens`` words drawn from a 100-word
    reference, ours and rouge-score's (medians), the scores asserted equal first."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(100)]
    reference = " ".join(words)
    answer = " ".join(rng.choice(words) for _ in range(tokens))
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES))
    ours, theirs = rouge(answer, reference, ROUGE_TYPES), scorer.score(reference, answer)
    for kind in ROUGE_TYPES:
        assert math.isclose(ours[kind].fmeasure, theirs[kind].fmeasure, abs_tol=1e-9), kind
    ours_s, theirs_s = [], []
    for _repeat in range(repeats):
        ours_s.append(timed(lambda: rouge(answer, reference, ROUGE_TYPES)))
        theirs_s.append(timed(lambda: scorer.score(reference, answer)))
    ours_t, theirs_t = statistics.median(ours_s), statistics.median(theirs_s)
    return {"tokens": tokens, "repeats": repeats, "ours_s": round(ours_t, 6),
            "peer_s": round(theirs_t, 6), "ratio": round(theirs_t / ours_t, 1)}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table (or JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=positive, default=5000)
    parser.add_argument("--repeats", type=positive, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--runaway", type=positive, default=None, metavar="TOKENS",
                        help="time ROUGE-1/2/L of one answer this long instead")
    args = parser.parse_args(argv)
    if args.runaway is not None:
        row = runaway(args.runaway, args.repeats, args.seed)
        print(json.dumps(row, indent=2) if args.json else
              f"ROUGE-1/2/L, one {row['tokens']:,}-token answer vs a 100-word reference: "
              f"aieng-metrics {row['ours_s']:.3f} s, rouge-score {row['peer_s']:.3f} s "
              f"({row['ratio']}x), scores equal")
        return 0
    pairs = make_pairs(args.pairs, args.seed)
    check_equal(pairs)
    rows = measure(pairs, args.repeats)
    report = {
        "pairs": args.pairs, "repeats": args.repeats, "seed": args.seed,
        "python": platform.python_version(), "machine": platform.machine(),
        "versions": {name: metadata.version(name)
                     for name in ("aieng-metrics", "sacrebleu", "rouge-score")},
        "scores_equal": True, "results": rows,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.pairs} pairs, median of {args.repeats} repeats, scores asserted equal "
          f"(sacrebleu {report['versions']['sacrebleu']}, rouge-score "
          f"{report['versions']['rouge-score']})")
    print(f"{'metric':<24} {'aieng pairs/s':>14} {'peer':>12} {'peer pairs/s':>13} "
          f"{'ours/peer':>10}")
    for row in rows:
        print(f"{row['metric']:<24} {row['ours_pairs_per_s']:>14,.0f} {row['peer']:>12} "
              f"{row['peer_pairs_per_s']:>13,.0f} {row['ratio']:>9.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
