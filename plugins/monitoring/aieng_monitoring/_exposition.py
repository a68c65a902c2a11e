"""Prometheus text exposition format (version 0.0.4): metric families written by hand.

The format is small enough not to need a client library at run time: ``# HELP`` and
``# TYPE`` lines, then one sample per line; label values escape backslash, double quote
and newline; HELP text escapes backslash and newline; histograms have cumulative
``_bucket{le="..."}`` samples ending at ``le="+Inf"``, then ``_sum`` and ``_count``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["escape_help", "escape_label", "format_float", "histogram_samples", "labels_text",
           "metric_family", "utf8_value"]

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_SURROGATE = re.compile("[\ud800-\udfff]")


def utf8_value(value: str) -> str:
    """``value`` with each lone surrogate, which no UTF-8 text can hold, as U+FFFD: the
    label value the exposition will show (the monitor keys its series by it, so that two
    names shown alike are one series, not a duplicate Prometheus refuses)."""
    return _SURROGATE.sub("\ufffd", value)


def escape_label(value: str) -> str:
    """A label value escaped for the text format (a lone surrogate, which no UTF-8 text
    can hold, becomes U+FFFD: else the whole exposition could not be encoded)."""
    value = utf8_value(value)
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    """A HELP text escaped for the text format."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_float(value: float) -> str:
    """A sample value: integers without a fraction, ``+Inf``, ``-Inf``, ``NaN``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def labels_text(labels: Mapping[str, str]) -> str:
    """``{a="1",b="2"}`` (empty string when there are no labels)."""
    if not labels:
        return ""
    for name in labels:
        if not _LABEL.match(name) or name.startswith("__"):
            raise ValueError(f"invalid Prometheus label name {name!r}")
    inner = ",".join(f'{k}="{escape_label(str(v))}"' for k, v in labels.items())
    return "{" + inner + "}"


def metric_family(name: str, kind: str, help_text: str,
                  samples: Iterable[tuple[str, Mapping[str, str], float]]) -> list[str]:
    """The lines of one family: HELP, TYPE, then ``(suffix, labels, value)`` samples.

    :raises ValueError: on an invalid metric name or type.
    """
    if not _NAME.match(name):
        raise ValueError(f"invalid Prometheus metric name {name!r}")
    if kind not in ("counter", "gauge", "histogram", "summary", "untyped"):
        raise ValueError(f"invalid Prometheus metric type {kind!r}")
    lines = [f"# HELP {name} {escape_help(help_text)}", f"# TYPE {name} {kind}"]
    for suffix, labels, value in samples:
        lines.append(f"{name}{suffix}{labels_text(labels)} {format_float(value)}")
    return lines


def histogram_samples(labels: Mapping[str, str], bounds: Sequence[float],
                      counts: Sequence[int], total: float, count: int
                      ) -> list[tuple[str, Mapping[str, str], float]]:
    """The samples of one histogram series: cumulative buckets, ``+Inf``, sum, count.

    :param counts: per-bucket (non-cumulative) counts, one per bound plus the overflow.
    """
    samples: list[tuple[str, Mapping[str, str], float]] = []
    running = 0
    for bound, n in zip(bounds, counts, strict=False):
        running += n
        samples.append(("_bucket", {**labels, "le": format_float(bound) if not float(bound)
                                    .is_integer() else f"{bound:.1f}"}, running))
    samples.append(("_bucket", {**labels, "le": "+Inf"}, count))
    samples.append(("_sum", labels, total))
    samples.append(("_count", labels, count))
    return samples
