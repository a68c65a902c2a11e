"""Guardrails (aieng-guardrails): attack success and false positives on the red-team suite,
and PII redaction throughput.

1. **ASR / FPR** of four guard-only configurations on the packaged suite
   (``aieng_guardrails/data/attacks.jsonl``): no guard, ``pii`` only, ``injection`` only,
   and ``pii`` + ``injection``; reported on the ``dev`` split (the detector was tuned on
   it) and the ``heldout`` split (written before any tuning, never tuned on) separately.
   Guard-only: an attack succeeds when it is not blocked and its marker was not redacted
   away; a benign item is a false positive when it is blocked or changed.
2. **Throughput** of ``redact`` (all kinds) and of ``scan_injection`` on a seeded
   synthetic corpus (``--docs`` documents of ~1 KiB of filler words with planted
   e-mails, phones, cards, IBANs, IPs, SSNs and keys), one thread, median of
   ``--repeats``; plus the share of planted values that redaction removed.

No peer: presidio-analyzer needs a spaCy model (``en_core_web_lg``) that is distributed
only through GitHub releases, which this machine cannot reach, so ours is reported alone.
Run it::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/guardrails.py [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import string
import time
from typing import Any

import anyio
from _args import positive
from aieng_guardrails import (
    InjectionGuard,
    PIIGuard,
    load_suite,
    luhn_valid,
    redact,
    run_suite,
    scan_injection,
    summarise,
)
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import GuardVerdict, Request

from aieng_core import Kernel


class NoGuard:
    """The baseline: a guard that allows everything."""

    @hookimpl
    def aieng_guard_input(self, request: Request) -> GuardVerdict | None:
        return None


CONFIGS = {
    "none": lambda: {"none": NoGuard()},
    "pii": lambda: {"pii": PIIGuard()},
    "injection": lambda: {"injection": InjectionGuard()},
    # injection first: it must see encoded payloads before pii redacts them as secrets
    "injection+pii": lambda: {"injection": InjectionGuard(), "pii": PIIGuard()},
}


async def suite_rates() -> dict[str, Any]:
    """ASR / FPR per configuration, split and category."""
    items = load_suite()
    reports: dict[str, Any] = {}
    async with Kernel(env={}, entry_points=[]) as kernel:
        for name, components in CONFIGS.items():
            pipeline = kernel.compose(components(), name=name)
            reports[name] = summarise(await run_suite(pipeline, items))
    return reports


# -- throughput -----------------------------------------------------------------------------

_WORDS = ["the", "of", "and", "to", "in", "is", "for", "on", "that", "with", "as", "by", "at", "from", "this", "be", "are", "or", "an", "it", "invoice", "order", "meeting", "report", "customer", "account", "server", "network", "update", "release", "payment", "shipment", "support", "ticket", "version", "2024", "10", "3.5", "contact", "please", "thanks"]


def _card(rng: random.Random) -> str:
    body = "4" + "".join(rng.choice(string.digits) for _ in range(14))
    check = next(d for d in string.digits if luhn_valid(body + d))
    number = body + check
    return " ".join(number[i:i + 4] for i in range(0, 16, 4))


def _iban(rng: random.Random) -> str:
    bban = "".join(rng.choice(string.digits) for _ in range(18))
    check = 98 - int("".join(str(int(c, 36)) for c in bban + "DE00")) % 97
    return f"DE{check:02d}{bban}"


def _planted(rng: random.Random) -> str:
    kind = rng.randrange(8)
    if kind == 0:
        return f"{rng.choice(['ann', 'bob', 'li.wei'])}{rng.randrange(999)}@example.com"
    if kind == 1:
        return f"+1 ({rng.randrange(200, 999)}) {rng.randrange(200, 999)}-{rng.randrange(10**4):04d}"
    if kind == 2:
        return _card(rng)
    if kind == 3:
        return _iban(rng)
    if kind == 4:
        return ".".join(str(rng.randrange(1, 255)) for _ in range(4))
    if kind == 5:
        return f"{rng.randrange(1, 899):03d}-{rng.randrange(1, 99):02d}-{rng.randrange(1, 9999):04d}"
    if kind == 6:
        return "sk-" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(32))
    return "AKIA" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16))


def corpus(docs: int, seed: int = 7) -> tuple[list[str], list[list[str]]]:
    """``docs`` texts of ~1 KiB with a planted value every ~25 words, and the values."""
    rng = random.Random(seed)
    texts, planted = [], []
    for _ in range(docs):
        words: list[str] = []
        values: list[str] = []
        while sum(len(w) + 1 for w in words) < 1024:
            if rng.random() < 0.04:
                value = _planted(rng)
                values.append(value)
                words.append(value)
            else:
                words.append(rng.choice(_WORDS))
        texts.append(" ".join(words))
        planted.append(values)
    return texts, planted


def throughput(docs: int, repeats: int) -> dict[str, Any]:
    """KB/s and docs/s of ``redact`` and ``scan_injection``; share of values removed."""
    texts, planted = corpus(docs)
    size_kb = sum(len(t.encode()) for t in texts) / 1000
    out: dict[str, Any] = {"docs": docs, "kb": round(size_kb, 1),
                           "planted": sum(len(p) for p in planted)}
    for name, function in (("redact", lambda t: redact(t).text),
                           ("scan_injection", scan_injection)):
        function(texts[0])  # warm-up (regex compilation is at import, caches are not)
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            for text in texts:
                function(text)
            samples.append(time.perf_counter() - started)
        seconds = statistics.median(samples)
        out[name] = {"seconds": round(seconds, 3), "kb_per_s": round(size_kb / seconds, 1),
                     "docs_per_s": round(docs / seconds, 1)}
    survived = sum(value in redact(text).text for text, values in zip(texts, planted)
                   for value in values)
    out["planted_removed"] = round(1 - survived / out["planted"], 4)
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def main() -> None:
    """Run both parts and print (or write) the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=positive, default=2000)
    parser.add_argument("--repeats", type=positive, default=3)
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args()
    reports = anyio.run(suite_rates)
    speed = throughput(args.docs, args.repeats)
    result = {"machine": platform.platform(), "python": platform.python_version(),
              "suite": reports, "throughput": speed}
    print(f"{'config':<14} {'split':<8} {'attacks':>7} {'ASR':>7} {'benign':>6} {'FPR':>7}")
    for name, report in reports.items():
        for split, rates in [*report["splits"].items(), ("all", report["overall"])]:
            print(f"{name:<14} {split:<8} {rates['attacks']:>7} {_pct(rates['asr']):>7} "
                  f"{rates['benign']:>6} {_pct(rates['fpr']):>7}")
    print("\nper category (injection+pii):")
    for category, rates in reports["injection+pii"]["categories"].items():
        rate = rates["asr"] if rates["attacks"] else rates["fpr"]
        label = "ASR" if rates["attacks"] else "FPR"
        print(f"  {category:<20} {label} {_pct(rate)} (n={rates['attacks'] or rates['benign']})")
    print(f"\nfailures (injection+pii): {reports['injection+pii']['failures']}")
    print(f"\nthroughput on {speed['docs']} docs ({speed['kb']} kB, {speed['planted']} "
          f"planted values): redact {speed['redact']['kb_per_s']} kB/s "
          f"({speed['redact']['docs_per_s']} docs/s), scan_injection "
          f"{speed['scan_injection']['kb_per_s']} kB/s "
          f"({speed['scan_injection']['docs_per_s']} docs/s); planted values removed: "
          f"{_pct(speed['planted_removed'])}")
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
