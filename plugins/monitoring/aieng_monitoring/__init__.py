"""aieng-monitoring: a monitoring subscriber and a SQLite feedback sink.

Components:

- ``monitor``: an ``aieng_on_event`` subscriber of its pipeline's events: TTFT, TPOT,
  end-to-end, stage and model-call latency (Prometheus histograms plus exact nearest-rank
  p50/p90/p99 over a sliding window), tokens in/out, cost from a price table, error and
  cache-hit rates, per stage and per model; :meth:`Monitor.prometheus_text` is the
  Prometheus text exposition (the gateway serves it at ``/metrics``); one ``run.summary``
  log line per run; the monitor (or a :class:`MonitorCollector` of several) is a
  ``prometheus_client`` custom collector for a host's own registry; agent runs
  (``agent.step`` / ``agent.finished``): runs by status, steps per run, tool calls and
  tool errors by tool, tokens and cost.
- ``feedback-sqlite``: ``aieng_feedback_record`` into a SQLite (WAL) file, written from a
  worker thread; :meth:`FeedbackStore.query` and :meth:`FeedbackStore.summary` read it back.

The kernel loads this module through the entry point ``monitoring`` of the group ``aieng``.
"""

from __future__ import annotations

from aieng_hookspecs import ComponentRegistry, hookimpl

from ._collector import MonitorCollector
from ._exposition import escape_help, escape_label, format_float
from ._feedback import FEEDBACK_ID, FeedbackRow, FeedbackStore, InvalidFeedback
from ._monitor import Monitor
from ._options import FeedbackOptions, MonitorOptions, Price
from ._stats import Series, percentile

__all__ = [
    "FEEDBACK_ID",
    "FeedbackOptions",
    "FeedbackRow",
    "FeedbackStore",
    "InvalidFeedback",
    "Monitor",
    "MonitorCollector",
    "MonitorOptions",
    "Price",
    "Series",
    "aieng_register_components",
    "escape_help",
    "escape_label",
    "format_float",
    "percentile",
]

__version__ = "0.1.0"


@hookimpl
def aieng_register_components(registry: ComponentRegistry) -> None:
    """Offer ``monitor`` and ``feedback-sqlite`` with their options."""
    registry.add("monitor", Monitor, options=MonitorOptions,
                 description="Metrics subscriber: TTFT, TPOT, latency percentiles, tokens, "
                             "cost, error and cache-hit rates (Prometheus text)")
    registry.add("feedback-sqlite", FeedbackStore, options=FeedbackOptions,
                 description="Feedback sink: explicit and implicit signals in SQLite (WAL)")
