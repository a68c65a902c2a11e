"""aieng-fusion: score-based fusers for hybrid retrieval, components ``convex`` and ``dbsf``.

The kernel fuses runs by reciprocal rank (``rrf``, built in) when no fuser answers; these
fusers use the retrievers' scores instead of their ranks:

- ``convex``: a convex combination of min-max normalized scores, dense runs weighted by
  ``alpha`` (hybrid search's alpha);
- ``dbsf``: distribution-based score fusion, each run normalized by mean ± 3 std, summed.

Both are independent of the order of the runs, exactly, ties included.
"""

from __future__ import annotations

from aieng_hookspecs import ComponentRegistry, hookimpl

from ._convex import ConvexFuser, ConvexOptions, convex_fusion
from ._dbsf import DBSFFuser, dbsf_fusion

__all__ = [
    "ConvexFuser",
    "ConvexOptions",
    "DBSFFuser",
    "aieng_register_components",
    "convex_fusion",
    "dbsf_fusion",
]

__version__ = "0.1.0"


@hookimpl
def aieng_register_components(registry: ComponentRegistry) -> None:
    """Offer the ``convex`` and ``dbsf`` fusers."""
    registry.add("convex", ConvexFuser, options=ConvexOptions,
                 description="Convex combination of min-max normalized scores (alpha).")
    registry.add("dbsf", DBSFFuser,
                 description="Distribution-based score fusion: mean ± 3 std, summed.")
