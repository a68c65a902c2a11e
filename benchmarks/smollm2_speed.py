"""SmolLM2-135M greedy decoding: plain vs prompt-lookup vs draft-model speculation.

Five retrieval-style prompts (context passages plus a question whose answer copies from
them), greedy, ``--max-tokens`` each, at 1 and 2 torch threads. Every mode's output ids
are asserted identical to plain greedy decoding's. Tokens/s are the medians of
``--repeats`` runs of the five prompts, the modes interleaved within each repeat; a
speed-up is the median over repeats of the ratio to plain decoding in the same repeat.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/smollm2_speed.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/smollm2_speed.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import torch
from _args import positive
from aieng_hookspecs.types import Message, Request
from aieng_transformers import SmolLM2Backend
from aieng_transformers._causal import CausalLM
from aieng_transformers._speculative import Speculation, truncated_draft

PASSAGES = [
    (
        ('The aieng kernel dispatches every hook through pluggy. A component declares '
         'the roles it fills by implementing hook specifications, and the kernel calls '
         'all implementations of a hook either concurrently or in order, depending on '
         "the hook's call mode."),
        ('How does the aieng kernel call the implementations of a hook? Answer by '
         'quoting the passage.'),
    ),
    (
        ('Mount Kilimanjaro is a dormant volcano in Tanzania. It has three volcanic '
         'cones: Kibo, Mawenzi and Shira. Its summit, Uhuru Peak on Kibo, is 5,895 '
         'metres above sea level, which makes it the highest mountain in Africa.'),
        'What are the three volcanic cones of Kilimanjaro and how high is its summit?',
    ),
    (
        ('To reset the router, hold the reset button on the back for ten seconds until '
         'the power light blinks orange. Then wait two minutes for the router to '
         'restart, and connect to the network named in the label on the bottom of the '
         'device.'),
        'How do I reset the router? Give the steps from the manual.',
    ),
    (
        ('The Treaty of Westphalia was signed in 1648 in the cities of Osnabrück and '
         "Münster. It ended the Thirty Years' War in the Holy Roman Empire and the "
         "Eighty Years' War between Spain and the Dutch Republic."),
        'Which wars did the Treaty of Westphalia end, and where was it signed?',
    ),
    (
        ('Photosynthesis converts light energy into chemical energy. In the light '
         'reactions, chlorophyll absorbs light and water is split, releasing oxygen. In '
         'the Calvin cycle, the energy stored in ATP and NADPH is used to fix carbon '
         'dioxide into sugars.'),
        'Explain the two stages of photosynthesis using the text.',
    ),
]


def prompts() -> list[Request]:
    """The five retrieval-style requests."""
    return [Request(messages=(
        Message("system", "Answer from the context. Copy its wording where you can."),
        Message("user", f"Context:\n{passage}\n\nQuestion: {question}")))
        for passage, question in PASSAGES]


def decode(lm: CausalLM, request: Request) -> tuple[list[int], int, int]:
    """Greedy ids, forward passes, accepted proposals."""
    generation = lm.start(request)
    while generation.finish is None:
        generation.step()
    return generation.generated, generation.passes, generation.accepted


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (or write) the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=positive, default=64)
    parser.add_argument("--repeats", type=positive, default=3)
    parser.add_argument("--threads", type=positive, nargs="+", default=[1, 2])
    parser.add_argument("--draft-layers", type=positive, default=8)
    parser.add_argument("--proposal", type=positive, default=8)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    from aieng_core.logs import configure_logging

    # As the CLI does: warnings and up, on stderr (not model-load info lines in stdout).
    configure_logging(level="WARNING", stream=sys.stderr)

    lm = SmolLM2Backend().load()
    requests = [attrs_evolve(r, args.max_tokens) for r in prompts()]
    draft = CausalLM(truncated_draft(lm.model, args.draft_layers), lm.tokenizer)
    modes: dict[str, Speculation | None] = {
        "plain": None,
        "prompt-lookup": Speculation("prompt-lookup", max_proposal=args.proposal,
                                     ngram_size=3),
        f"draft ({args.draft_layers} of {lm.model.config.num_hidden_layers} layers)":
            Speculation("draft", max_proposal=min(args.proposal, 4), draft=draft),
    }
    results: list[dict[str, Any]] = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        reference: list[list[int]] | None = None
        rates: dict[str, list[float]] = {name: [] for name in modes}
        counts: dict[str, tuple[int, int, int]] = {}
        # Modes interleave within each repeat, so load from other processes hits all
        # of them alike; a ratio is taken within a repeat, then the median of those.
        for _ in range(args.repeats):
            for name, speculation in modes.items():
                lm.speculation = speculation
                started = time.perf_counter()
                outputs = [decode(lm, r) for r in requests]
                elapsed = time.perf_counter() - started
                ids = [o[0] for o in outputs]
                if reference is None:
                    reference = ids
                assert ids == reference, f"{name}: output differs from plain greedy"
                tokens = sum(len(i) for i in ids)
                counts[name] = (tokens, sum(o[1] for o in outputs), sum(o[2] for o in outputs))
                rates[name].append(tokens / elapsed)
        for name in modes:
            tokens, passes, accepted = counts[name]
            ratios = [a / b for a, b in zip(rates[name], rates["plain"], strict=True)]
            row = {"threads": threads, "mode": name, "tokens": tokens,
                   "tokens_per_s": round(statistics.median(rates[name]), 2),
                   "runs": [round(r, 2) for r in rates[name]],
                   "forward_passes": passes, "tokens_per_pass": round(tokens / passes, 2),
                   "accepted_proposals": accepted,
                   "speedup": round(statistics.median(ratios), 2),
                   "speedup_runs": [round(r, 2) for r in ratios]}
            results.append(row)
            print(f"{threads} thread(s)  {name:<28} {row['tokens_per_s']:7.2f} tok/s  "
                  f"x{row['speedup']:.2f} {row['speedup_runs']}  "
                  f"{row['tokens_per_pass']:.2f} tok/pass  runs {row['runs']}")
    lm.speculation = None
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"benchmark": "smollm2_speed", "max_tokens": args.max_tokens,
                       "repeats": args.repeats, "torch": torch.__version__,
                       "results": results}, handle, indent=2)
    return 0


def attrs_evolve(request: Request, max_tokens: int) -> Request:
    """``request`` with another token budget."""
    import attrs

    return attrs.evolve(request, max_tokens=max_tokens)


if __name__ == "__main__":
    raise SystemExit(main())
