"""aieng-drift: drift detection on a pipeline's traffic.

The ``drift`` component subscribes to its pipeline's events and compares a sliding
current window with a frozen reference window: request length (two-sample
Kolmogorov–Smirnov test and PSI), request vocabulary (PSI over token frequencies),
request embeddings (cosine distance between the windows' centroids, permutation p-value)
and judge scores (KS and PSI per metric). A detector that fires publishes a
``drift.detected`` event (:class:`DriftDetected`). The statistics and the
:class:`DriftMonitor` work without a pipeline too. Importing this module imports nothing
heavy (numpy loads at the first check).
"""

from __future__ import annotations

from aieng_hookspecs import ComponentRegistry, EventRegistry, hookimpl

from ._component import DriftComponent
from ._events import DriftDetected
from ._monitor import DriftMonitor, DriftResult, Window, prometheus_text, tokenize
from ._options import DETECTORS, DriftOptions
from ._reference import ReferenceFileError, ReferenceStore, SavedReference
from ._stats import (
    KSResult,
    categorical_psi,
    centroid_distance,
    centroid_permutation_test,
    kolmogorov_sf,
    ks_2samp,
    psi,
    quantile_edges,
)

__all__ = [
    "DETECTORS",
    "DriftComponent",
    "DriftDetected",
    "DriftMonitor",
    "DriftOptions",
    "DriftResult",
    "KSResult",
    "ReferenceFileError",
    "ReferenceStore",
    "SavedReference",
    "Window",
    "aieng_register_components",
    "aieng_register_events",
    "categorical_psi",
    "centroid_distance",
    "centroid_permutation_test",
    "kolmogorov_sf",
    "ks_2samp",
    "prometheus_text",
    "psi",
    "quantile_edges",
    "tokenize",
]

__version__ = "0.1.0"


@hookimpl
def aieng_register_components(registry: ComponentRegistry) -> None:
    """Offer the ``drift`` component with its typed options."""
    registry.add("drift", DriftComponent, options=DriftOptions,
                 description="Drift of request length, vocabulary, embeddings and judge "
                             "scores (KS, PSI, permutation test)")


@hookimpl
def aieng_register_events(registry: EventRegistry) -> None:
    """Declare the ``drift.detected`` event."""
    registry.add(DriftDetected)
