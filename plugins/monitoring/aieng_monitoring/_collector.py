"""The monitor's metrics in a host's own ``prometheus_client`` registry.

The monitor never touches ``prometheus_client``'s default ``REGISTRY`` (nor imports the
library): its exposition is written by hand (:meth:`Monitor.prometheus_text`). A host that
serves its own ``/metrics`` with ``prometheus_client`` registers a :class:`MonitorCollector`
(or one monitor, which is a collector too) in the registry it chooses.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from ._monitor import Monitor

__all__ = ["MonitorCollector", "families"]

log = structlog.get_logger(__name__)


def _parser() -> Any:
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError as exc:  # an optional dependency: only a host using it needs it
        raise ImportError(
            "registering the monitor in a prometheus_client registry needs prometheus_client "
            "(pip install 'aieng-monitoring[prometheus]'); Monitor.prometheus_text() gives "
            "the same metrics as text without it") from exc
    return text_string_to_metric_families


def families(texts: Iterable[str]) -> list[Any]:
    """The metric families of several monitors' expositions, merged: one family per name
    (a registry refuses, and Prometheus rejects a scrape with, a family twice). A series
    that several monitors hold (pipelines of the same name: one closed and rebuilt, say)
    is added up when it is a counter or histogram (so a counter never goes down when a
    rebuilt pipeline's monitor is added next to the old one's); of a gauge (a ratio, a
    recent quantile, which cannot be added up) the first monitor's value is kept.

    :returns: ``prometheus_client`` ``Metric`` objects.
    """
    parse = _parser()
    merged: dict[str, Any] = {}
    index: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
    for text in texts:
        for family in parse(text):
            kept = merged.get(family.name)
            if kept is None:
                kept = merged[family.name] = type(family)(family.name, family.documentation,
                                                          family.type)
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                at = index.get(key)
                if at is None:
                    index[key] = len(kept.samples)
                    kept.samples.append(sample)
                elif kept.type in ("counter", "histogram"):
                    old = kept.samples[at]
                    kept.samples[at] = old._replace(value=old.value + sample.value)
    return list(merged.values())


class MonitorCollector:
    """A ``prometheus_client`` custom collector of one or more monitors' metrics.

    ``registry.register(MonitorCollector(monitor_a, monitor_b))`` exposes both pipelines'
    metrics through the host's registry and ``/metrics`` (its own metrics beside them);
    :meth:`add` a rebuilt pipeline's monitor and :meth:`remove` one no longer wanted
    without registering again. Families are merged as :func:`families` says.
    ``prometheus_client`` is imported when the registry first collects (it is an optional
    dependency: ``aieng-monitoring[prometheus]``).
    """

    def __init__(self, *monitors: Monitor) -> None:
        self._monitors: list[Monitor] = list(monitors)
        self._lock = threading.Lock()  # a registry collects from its server's thread

    def add(self, monitor: Monitor) -> None:
        """Expose ``monitor``'s metrics too (once: adding it again changes nothing)."""
        with self._lock:
            if not any(m is monitor for m in self._monitors):
                self._monitors.append(monitor)

    def remove(self, monitor: Monitor) -> None:
        """Stop exposing ``monitor``'s metrics (absent: nothing happens)."""
        with self._lock:
            self._monitors = [m for m in self._monitors if m is not monitor]

    def collect(self) -> Iterator[Any]:
        """The merged families, for the registry's scrape."""
        with self._lock:
            monitors = list(self._monitors)
        return iter(families(m.prometheus_text() for m in monitors))

    def describe(self) -> Iterator[Any]:
        """The families' names and types (without values): what the registry checks against
        its other collectors' when this one is registered, ``auto_describe`` or not."""
        from ._monitor import Monitor

        return iter(families([Monitor().prometheus_text()]))
