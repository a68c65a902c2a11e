"""Inline SVG plots, drawn in Python: histograms, bars with interval whiskers, scatters.

No JavaScript, no fonts or images fetched: every plot is a self-contained ``<svg>``.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Sequence
from html import escape

__all__ = ["histogram", "interval_bars", "scatter"]

_W = 520
_BAR = "#4c78a8"
_ACCENT = "#e45756"


def _num(value: float) -> str:
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-2):
        return f"{value:.2g}"
    return f"{value:.3g}"


def _unit(value: float, lo: float, hi: float) -> float:
    """Where ``value`` lies between ``lo`` and ``hi`` (0 to 1), computed on the numbers
    divided by their magnitude first: ``hi - lo`` of scores near ±1.7e308 is past a float
    (``inf``), which put ``nan`` in the plots or divided by zero."""
    scale = max(1.0, abs(lo), abs(hi))
    return (value / scale - lo / scale) / (hi / scale - lo / scale)


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return (f'<svg width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
            f"<title>{escape(title)}</title>" + "".join(body) + "</svg>")


def histogram(values: Sequence[float], *, title: str, bins: int = 10) -> str:
    """A histogram of ``values`` over their range (one bar per distinct value when there
    are at most ``bins`` of them, as with 0/1 metrics)."""
    height, left, bottom, top = 180, 40, 30, 10
    if not values:
        return _svg(_W, 40, ['<text x="10" y="25">no values</text>'], title)
    left_out = sum(1 for v in values if not math.isfinite(v))
    if left_out:  # inf and nan have no bar
        values = [v for v in values if math.isfinite(v)]
        title = f"{title} ({left_out} not finite, not drawn)"
        if not values:
            none = f'<text x="10" y="25">{left_out} values, none finite</text>'
            return _svg(_W, 40, [none], title)
    distinct = sorted(set(values))
    if len(distinct) <= bins:
        labels = [_num(v) for v in distinct]
        counts = [sum(1 for x in values if x == v) for v in distinct]
    else:
        lo, hi = min(values), max(values)
        span = hi - lo  # past a float's range (inf) for scores near -1.7e308 and 1.7e308
        step = span / bins if math.isfinite(span) else hi / bins - lo / bins
        counts = [0] * bins
        for x in values:
            at = (x - lo) / step if math.isfinite(x - lo) else _unit(x, lo, hi) * bins
            counts[min(int(at), bins - 1)] += 1
        labels = [_num(lo + step * i) for i in range(bins)]
    peak = max(counts)
    plot_w, plot_h = _W - left - 10, height - bottom - top
    slot = plot_w / len(counts)
    body = [(f'<line x1="{left}" y1="{top + plot_h}" x2="{_W - 10}" y2="{top + plot_h}" '
            'stroke="#333"/>'),
            f'<text x="4" y="{top + 10}" font-size="10">{peak}</text>',
            f'<text x="4" y="{top + plot_h}" font-size="10">0</text>']
    for i, (count, label) in enumerate(zip(counts, labels, strict=True)):
        h = plot_h * count / peak if peak else 0
        x = left + i * slot
        body.append(f'<rect x="{x + 2:.1f}" y="{top + plot_h - h:.1f}" '
                    f'width="{max(slot - 4, 1):.1f}" height="{h:.1f}" fill="{_BAR}">'
                    f"<title>{escape(label)}: {count}</title></rect>")
        body.append(f'<text x="{x + slot / 2:.1f}" y="{height - 12}" font-size="10" '
                    f'text-anchor="middle">{escape(label)}</text>')
    return _svg(_W, height, body, title)


def interval_bars(rows: Sequence[tuple[str, float, float, float]], *, title: str,
                  zero_line: bool = False) -> str:
    """One horizontal row per ``(label, estimate, low, high)``: a dot (or bar from the
    axis) at the estimate and a whisker over the interval. ``zero_line`` marks 0, for
    differences."""
    if not rows:
        return _svg(_W, 40, ['<text x="10" y="25">nothing to plot</text>'], title)
    label_w, row_h, top = 150, 24, 20
    height = top + row_h * len(rows) + 24
    finite = [v for _, e, lo, hi in rows for v in (e, lo, hi) if math.isfinite(v)]
    lo_all = min([*finite, 0.0] if zero_line or not finite else finite)
    hi_all = max([*finite, 0.0] if zero_line or not finite else finite)
    if hi_all - lo_all < 1e-12:  # one value: ±0.5 around it (±0.1% of a huge one)
        half = max(0.5, abs(lo_all) * 1e-3)
        lo_all, hi_all = lo_all - half, hi_all + half
    # Padded by 5% on the numbers divided by their magnitude (the span of scores near
    # ±1.7e308 is past a float); the axis labels are clamped to a float's range.
    scale = max(1.0, abs(lo_all), abs(hi_all))
    pad = (hi_all / scale - lo_all / scale) * 0.05
    lo_s, hi_s = lo_all / scale - pad, hi_all / scale + pad
    top_value = sys.float_info.max
    lo_all = max(-top_value, min(top_value, lo_s * scale))
    hi_all = max(-top_value, min(top_value, hi_s * scale))
    plot_w = _W - label_w - 20

    def x(value: float) -> float:
        return label_w + plot_w * (value / scale - lo_s) / (hi_s - lo_s)

    body = [(f'<line x1="{label_w}" y1="{height - 22}" x2="{_W - 20}" y2="{height - 22}" '
            'stroke="#333"/>'),
            f'<text x="{label_w}" y="{height - 6}" font-size="10">{_num(lo_all)}</text>',
            (f'<text x="{_W - 20}" y="{height - 6}" font-size="10" text-anchor="end">'
            f"{_num(hi_all)}</text>")]
    if zero_line:
        body.append(f'<line x1="{x(0):.1f}" y1="{top - 10}" x2="{x(0):.1f}" '
                    f'y2="{height - 22}" stroke="#999" stroke-dasharray="4 3"/>')
    for i, (label, estimate, low, high) in enumerate(rows):
        y = top + i * row_h + row_h / 2
        body.append(f'<text x="{label_w - 6}" y="{y + 4:.1f}" font-size="11" '
                    f'text-anchor="end">{escape(label[:24])}</text>')
        if not all(math.isfinite(v) for v in (estimate, low, high)):  # no place on the axis
            body.append(f'<text x="{label_w + 4}" y="{y + 4:.1f}" font-size="11">n/a (not '
                        "finite)</text>")
            continue
        body.append(f'<line x1="{x(low):.1f}" y1="{y:.1f}" x2="{x(high):.1f}" y2="{y:.1f}" '
                    f'stroke="{_ACCENT}" stroke-width="2"/>')
        for end in (low, high):
            body.append(f'<line x1="{x(end):.1f}" y1="{y - 5:.1f}" x2="{x(end):.1f}" '
                        f'y2="{y + 5:.1f}" stroke="{_ACCENT}" stroke-width="2"/>')
        body.append(f'<circle cx="{x(estimate):.1f}" cy="{y:.1f}" r="4" fill="{_BAR}">'
                    f"<title>{escape(label)}: {_num(estimate)} [{_num(low)}, {_num(high)}]"
                    "</title></circle>")
    return _svg(_W, height, body, title)


def drawn_points(total: int, max_points: int | None) -> list[int]:
    """The indices of the points a scatter of ``total`` draws, in order: every one, or
    (more than ``max_points``) a sample of ``max_points`` of them, seeded, so a report is
    the same each time it is written."""
    if max_points is None or total <= max_points:
        return list(range(total))
    return sorted(random.Random(0).sample(range(total), max_points))


def scatter(points: Sequence[tuple[float, float]], *, title: str, x_label: str,
            y_label: str, max_points: int | None = None) -> str:
    """A scatter plot of ``(x, y)`` points (human label against judge score).

    :param max_points: draw at most this many (:func:`drawn_points`: a seeded sample; the
        axes still span every point): a circle per item made a multi-MB plot of 100k
        labelled items. ``None`` draws every one.
    """
    height, left, bottom, top, size = 240, 44, 34, 10, 240
    width = left + size + 20
    if not points:
        return _svg(_W, 40, ['<text x="10" y="25">no points</text>'], title)
    xs, ys = [p[0] for p in points], [p[1] for p in points]

    def scale(v: float, lo: float, hi: float) -> float:
        return 0.5 if hi - lo < 1e-12 else _unit(v, lo, hi)

    plot_h = height - bottom - top
    body = [(f'<rect x="{left}" y="{top}" width="{size}" height="{plot_h}" fill="none" '
            'stroke="#333"/>'),
            (f'<text x="{left + size / 2}" y="{height - 6}" font-size="11" '
            f'text-anchor="middle">{escape(x_label)}</text>'),
            (f'<text x="12" y="{top + plot_h / 2}" font-size="11" text-anchor="middle" '
            f'transform="rotate(-90 12 {top + plot_h / 2})">{escape(y_label)}</text>')]
    # The ranges once, not per point (that was quadratic: minutes for 100k labelled items).
    x_lo, x_hi, y_lo, y_hi = min(xs), max(xs), min(ys), max(ys)
    for index in drawn_points(len(points), max_points):
        px, py = points[index]
        cx = left + 6 + (size - 12) * scale(px, x_lo, x_hi)
        cy = top + plot_h - 6 - (plot_h - 12) * scale(py, y_lo, y_hi)
        body.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="{_BAR}" '
                    'fill-opacity="0.6"/>')
    return _svg(width, height, body, title)
