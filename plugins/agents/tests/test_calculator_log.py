"""``log`` of the calculator on exact numbers whose float form overflows or underflows:
big integers and fractions (``10**-999``) have logarithms well inside a float's range."""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import pytest
from aieng_agents import CalculationError, CalculatorOptions, calculate
from hypothesis import given, settings
from hypothesis import strategies as st

#: Long enough for two 1000-digit integers written out in one expression.
WIDE = CalculatorOptions(max_length=10_000)


@pytest.mark.parametrize(("expression", "value"), [
    ("log(10**999, 10**-999)", -1.0),
    ("log(10**-999)", -999 * math.log(10)),
    ("log10(10**-999)", -999.0),
    ("log(10**-999, 10)", -999.0),
    ("log2(2**-2000)", -2000.0),
    ("log(1e-400)", -400 * math.log(10)),
    ("log(10**999 / 3)", 999 * math.log(10) - math.log(3)),
    ("log(3 / 10**999)", math.log(3) - 999 * math.log(10)),
    ("log(10, 10**999 / 3)", math.log(10) / (999 * math.log(10) - math.log(3))),
    ("ln((10**50 + 1) / 10**50)", 1e-50),
    ("log(1/3)", -math.log(3)),
])
def test_logs_of_numbers_past_a_floats_range(expression: str, value: float) -> None:
    """The result, not ``math domain error`` (a float that underflowed to 0) nor "too
    large for a float" (one that overflowed)."""
    assert float(calculate(expression)) == pytest.approx(value, rel=1e-13)


def test_a_base_near_one_is_not_a_division_by_zero() -> None:
    """``1 + 10**-30`` is no base of 1: its logarithm is tiny, not 0."""
    assert float(calculate("log(2, 1 + 10**-30)")) == pytest.approx(math.log(2) * 1e30,
                                                                    rel=1e-13)


def test_a_base_whose_logarithm_underflows_is_refused_plainly() -> None:
    """``1 + 10**-999`` is a base, but its logarithm (1e-999) is no float: the error says
    so, not "division by zero"."""
    with pytest.raises(CalculationError, match="too close to 1"):
        calculate("log(2, 1 + 10**-999)")


@pytest.mark.parametrize("expression", ["log(0)", "log(-10**-999)", "log(5, 1)",
                                        "log(5, 10**-999 - 10**-999)"])
def test_non_positive_arguments_and_base_one_stay_refused(expression: str) -> None:
    """The domain is checked on the exact values, before any logarithm."""
    with pytest.raises(CalculationError, match="positive"):
        calculate(expression)


def _ln(top: int, bottom: int) -> Decimal:
    """``ln(top / bottom)`` by :mod:`decimal`, with enough digits that the quotient keeps
    its distance from 1 (``(10**50 + 1) / 10**50`` needs 50 more than the answer's)."""
    near = len(str(bottom)) - len(str(abs(top - bottom))) if top != bottom else 0
    with localcontext() as context:
        context.prec = 40 + max(0, near)
        return (Decimal(top) / Decimal(bottom)).ln()


_SIZES = st.one_of(st.integers(1, 10**6), st.integers(1, 10**999),
                   st.builds(lambda a, k: a * 10**k, st.integers(1, 999), st.integers(0, 995)))


@settings(max_examples=150, deadline=None)
@given(top=_SIZES, bottom=_SIZES, base=st.none() | st.tuples(_SIZES, _SIZES),
       near=st.integers(-3, 3))
def test_log_matches_decimal(top: int, bottom: int, base: tuple[int, int] | None,
                             near: int) -> None:
    """``log(top/bottom[, b1/b2])`` within a few units of the 15th digit of decimal's
    value, for integers of up to 1000 digits (quotients far past a float's range, and,
    with ``near``, within ``near/bottom`` of 1, as long as the logarithm itself is no
    smaller than a float can hold)."""
    if near and 10 < bottom < 10**300:  # a logarithm of at least 1e-300: a normal float
        top = bottom + near
    if base is not None and base[0] == base[1]:
        base = (base[0] * 2, base[1])
    expression = f"log({top} / {bottom}" + ("" if base is None
                                              else f", {base[0]} / {base[1]}") + ")"
    exact = _ln(top, bottom)
    if base is not None:
        with localcontext() as context:
            context.prec = 40
            exact = exact / _ln(*base)
    got = float(calculate(expression, WIDE))
    assert got == pytest.approx(float(exact), rel=1e-13, abs=0.0 if exact else 1e-300)
