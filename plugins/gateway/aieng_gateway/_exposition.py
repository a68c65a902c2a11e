"""One Prometheus text exposition from several components' texts.

Each component renders its own metrics (the monitor, every drift detector); two of the
same kind in one pipeline render the same metric families. Prometheus refuses a whole
scrape in which a family's ``# TYPE`` appears twice, or its samples are split, or one
series is repeated, so the gateway merges: one ``# HELP`` / ``# TYPE`` per family, every
family's samples together, and a series given twice kept once (the first; logged).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import structlog

__all__ = ["merge_exposition"]

log = structlog.get_logger(__name__)

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
#: What a family's samples may add to its name (histograms, summaries, counters).
_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created", "_info")


class _Family:
    __slots__ = ("help", "samples", "type")

    def __init__(self) -> None:
        self.help = ""
        self.type = ""
        self.samples: list[str] = []


def merge_exposition(texts: Iterable[str]) -> str:
    """The texts as one exposition (see the module's docstring); families in the order
    they first appear."""
    families: dict[str, _Family] = {}
    series: set[str] = set()
    repeated: list[str] = []
    for text in texts:
        current = ""
        # LF only ends a line of the text format: a label value may hold a raw CR, U+2028
        # or U+0085 (a client's model name), which str.splitlines would split at, making
        # a sample line of the client's choosing.
        for line in text.split("\n"):
            if not line.strip():
                continue
            if line.startswith(("# HELP ", "# TYPE ")):
                parts = line.split(" ", 3)
                current = parts[2] if len(parts) > 2 else ""
                family = families.setdefault(current, _Family())
                if line.startswith("# HELP "):
                    family.help = family.help or line
                else:
                    family.type = family.type or line
                continue
            if line.startswith("#"):
                continue
            found = _NAME.match(line)
            name = found.group() if found else line
            owner = current if current and _belongs(name, current) else name
            key = line.rsplit(" ", 1)[0]  # the series: its name and labels
            if key in series:
                repeated.append(key)
                continue
            series.add(key)
            families.setdefault(owner, _Family()).samples.append(line)
    if repeated:
        log.warning("gateway.metrics_repeated", series=repeated[:5], count=len(repeated),
                    hint="two components render the same series: give them distinct labels")
    lines: list[str] = []
    for family in families.values():
        lines.extend(line for line in (family.help, family.type) if line)
        lines.extend(family.samples)
    return "".join(f"{line}\n" for line in lines)


def _belongs(sample: str, family: str) -> bool:
    return sample == family or (sample.startswith(family)
                                and sample[len(family):] in _SUFFIXES)
