"""The typed options of the ``monitor`` and ``feedback-sqlite`` components."""

from __future__ import annotations

import math
from typing import Any

import attrs
from aieng_hookspecs import listed

__all__ = ["DEFAULT_LATENCY_BUCKETS", "DEFAULT_STEP_BUCKETS", "DEFAULT_TOKEN_BUCKETS",
           "DEFAULT_VALUE_RANGES", "FeedbackOptions", "MonitorOptions", "Price"]

#: Seconds: end-to-end, stage and TTFT histograms (Prometheus' defaults, stretched to 2 min
#: because CPU models answer in seconds).
DEFAULT_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                           30.0, 60.0, 120.0)
#: Seconds per output token (TPOT): 1 ms (a GPU server) to 1 s (a big model on CPU).
DEFAULT_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
#: Steps per agent run: the default ``max_steps`` is 10; long-running agents take dozens.
DEFAULT_STEP_BUCKETS = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 50.0,
                        100.0)


def _price(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name} must be a number (USD per 1000 tokens)")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{attribute.name} must be a finite price >= 0, got {value!r}")


@attrs.frozen
class Price:
    """The price of one model, in USD per 1000 tokens.

    :param input_per_1k: per 1000 prompt tokens.
    :param output_per_1k: per 1000 completion tokens.
    """

    input_per_1k: float = attrs.field(default=0.0, validator=_price)
    output_per_1k: float = attrs.field(default=0.0, validator=_price)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """The cost of one call, in USD."""
        return (prompt_tokens * self.input_per_1k + completion_tokens * self.output_per_1k) / 1000


def _prices(value: Any) -> dict[str, Price]:
    if not isinstance(value, dict):
        raise TypeError("prices must map model names to {input_per_1k, output_per_1k}")
    out: dict[str, Price] = {}
    for model, price in value.items():
        if not isinstance(model, str) or not model:
            raise ValueError(f"prices: model names must be non-empty strings, got {model!r}")
        if isinstance(price, Price):
            out[model] = price
        elif isinstance(price, dict):
            unknown = set(price) - {"input_per_1k", "output_per_1k"}
            if unknown:
                raise ValueError(f"prices.{model}: unknown key {min(unknown)!r} "
                                 "(choices: input_per_1k, output_per_1k)")
            out[model] = Price(**price)
        else:
            raise TypeError(f"prices.{model} must be a table of input_per_1k / output_per_1k")
    return out


def _buckets(instance: object, attribute: attrs.Attribute[tuple[float, ...]],
             value: tuple[float, ...]) -> None:
    if not value:
        raise ValueError(f"{attribute.name} must hold at least one bucket bound")
    for bound in value:
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) \
                or not math.isfinite(bound) or bound <= 0:
            unit = "step counts" if attribute.name == "step_buckets" else "seconds"
            raise ValueError(f"{attribute.name} must hold finite positive {unit}, got {bound!r}")
    if list(value) != sorted(set(value)):
        raise ValueError(f"{attribute.name} must be strictly increasing, got {list(value)}")


def _max_label_values(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an integer >= 1, got {value!r}")


def _window(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 10 <= value <= 1_000_000:
        raise ValueError(f"{attribute.name} must be an integer from 10 to 1000000, got {value!r}")


@attrs.frozen
class MonitorOptions:
    """Options of the ``monitor`` component.

    :param prices: USD per 1000 tokens by model name (the request's model, else the backend
        component's name): ``{gpt-4o-mini = {input_per_1k = 0.00015, output_per_1k = 0.0006}}``.
        A model missing from the table costs 0 and is counted in ``aieng_unpriced_calls_total``.
    :param latency_buckets: upper bounds (seconds) of the latency and TTFT histograms.
    :param tpot_buckets: upper bounds (seconds per token) of the TPOT histogram.
    :param step_buckets: upper bounds of the histogram of steps per agent run.
    :param window: the percentiles (p50/p90/p99) are exact over the last ``window`` samples
        of each series (a bounded sliding window, so memory stays constant).
    :param log_runs: log one ``run.summary`` line per finished run through structlog.
    :param max_label_values: at most this many distinct values per label (``model``,
        ``pipeline``, ``stage``, ...) get series of their own; later ones are counted under
        ``other`` (a warning is logged once per label), so a client choosing model names
        cannot grow memory and the scrape without bound. Models of ``prices`` always keep
        their own series.
    """

    prices: dict[str, Price] = attrs.field(factory=dict, converter=_prices, hash=False)
    latency_buckets: tuple[float, ...] = attrs.field(default=DEFAULT_LATENCY_BUCKETS,
                                                     converter=listed, validator=_buckets)
    tpot_buckets: tuple[float, ...] = attrs.field(default=DEFAULT_TOKEN_BUCKETS,
                                                  converter=listed, validator=_buckets)
    step_buckets: tuple[float, ...] = attrs.field(default=DEFAULT_STEP_BUCKETS,
                                                  converter=listed, validator=_buckets)
    window: int = attrs.field(default=2048, validator=_window)
    log_runs: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    max_label_values: int = attrs.field(default=100, validator=_max_label_values)


def _path(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{attribute.name} must be a file path (the SQLite database)")


def _retention(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"{attribute.name} must be a number of days >= 0 (0 keeps every "
                         f"signal), got {value!r}")


#: The values a kind of signal may take unless ``value_ranges`` says otherwise: a thumbs is
#: down (-1), up (1) or withdrawn (0); a rating's scale is the application's to set.
DEFAULT_VALUE_RANGES = {"thumbs": (-1.0, 1.0)}


def _ranges(value: Any) -> dict[str, tuple[float, float]]:
    if not isinstance(value, dict):
        raise TypeError("value_ranges must map kinds to [low, high]")
    out: dict[str, tuple[float, float]] = {}
    for kind, bounds in value.items():
        if not isinstance(kind, str) or not kind.strip():
            raise ValueError(f"value_ranges: kinds must be non-empty strings, got {kind!r}")
        if not isinstance(bounds, list | tuple) or len(bounds) != 2 or any(
                isinstance(b, bool) or not isinstance(b, int | float) or not math.isfinite(b)
                for b in bounds) or bounds[0] > bounds[1]:
            raise ValueError(f"value_ranges.{kind} must be [low, high], finite numbers with "
                             f"low <= high, got {bounds!r}")
        out[kind] = (float(bounds[0]), float(bounds[1]))
    return out


@attrs.frozen
class FeedbackOptions:
    """Options of the ``feedback-sqlite`` component.

    :param path: the SQLite database file (created with its folder; WAL journal).
    :param retention_days: signals older than this many days are deleted when the file
        opens and then at most once an hour as the store is used (0, the default, keeps
        every signal).
    :param value_ranges: the values each kind of signal may take, ``[low, high]``
        inclusive (``{thumbs = [-1, 1], rating = [1, 5]}``); a signal outside its kind's
        range is refused (``ValueError``), not stored. The default bounds ``thumbs`` to
        -1 .. 1 (a table given replaces it); a kind not listed takes any finite value.
    """

    path: str = attrs.field(default=".aieng/feedback.sqlite3", validator=_path)
    retention_days: float = attrs.field(default=0.0, validator=_retention)
    value_ranges: dict[str, tuple[float, float]] = attrs.field(
        factory=lambda: dict(DEFAULT_VALUE_RANGES), converter=_ranges, hash=False)
