"""``dbsf``: distribution-based score fusion (each run normalized by mean ± 3 std)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Hit

from ._runs import Run, ranked, read_runs, scaled

__all__ = ["DBSFFuser", "dbsf_fusion"]


def _normalized(run: Run) -> list[float]:
    values = scaled([entry.score for entry in run.entries])
    if not values:
        return []
    mean = math.fsum(values) / len(values)
    std = math.sqrt(math.fsum((value - mean) ** 2 for value in values) / len(values))
    if std == 0.0:  # one hit, or all tied: the middle of the range
        return [0.5] * len(values)
    low = mean - 3.0 * std
    return [min(1.0, max(0.0, (value - low) / (6.0 * std))) for value in values]


def dbsf_fusion(runs: Sequence[Sequence[Hit]]) -> list[Hit]:
    """Fuse runs by distribution-based score fusion.

    Each run's scores are mapped onto ``[0, 1]`` through the run's own distribution:
    ``mean - 3 std`` becomes 0 and ``mean + 3 std`` becomes 1 (population standard
    deviation; values beyond are clamped; a run of equal scores maps to 0.5). A document's
    fused score is the sum of its normalized scores over the runs, 0 where it is missing.
    Unlike min-max, one outlying score does not squash the rest of its run. The result
    does not depend on the order of ``runs`` (exact sums; ties broken by the number of
    runs holding the document, more first, then by document id).

    :returns: every document of the runs once, best first, ranks 1..n, ``source="dbsf"``.
    """
    read, documents = read_runs(runs)
    parts: dict[str, list[float]] = {doc_id: [] for doc_id in documents}
    for run in read:
        for entry, value in zip(run.entries, _normalized(run)):
            parts[entry.doc_id].append(value)
    return ranked(parts, documents, "dbsf")


class DBSFFuser:
    """Fuses runs by summing scores normalized by each run's mean ± 3 standard deviations."""

    @hookimpl
    def aieng_fuse(self, runs: Sequence[Sequence[Hit]]) -> list[Hit]:
        return dbsf_fusion(runs)
