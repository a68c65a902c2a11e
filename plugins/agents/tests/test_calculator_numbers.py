"""How a rounded result is printed: one rule for a fraction without a short decimal form
and for a float, ``repr(float)``'s — plain for ``1e-4 <= |x| < 1e16``, an exponent outside
— with ``digits`` significant digits for both, checked against the exact value
(:class:`fractions.Fraction`), not against the calculator's own code."""

from __future__ import annotations

import math
import re
from fractions import Fraction

import pytest
from aieng_agents import CalculatorOptions, calculate
from aieng_agents._calculator import _render
from hypothesis import assume, given, settings
from hypothesis import strategies as st

_FORM = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?(e[+-][0-9]{2,})?")


def _check(text: str, exact: Fraction, digits: int) -> None:
    """``text`` is ``exact`` rounded to ``digits`` significant digits, printed by the rule."""
    assert _FORM.fullmatch(text), text
    shown = Fraction(text)
    # Rounding to d significant digits is off by at most half a unit of the last digit:
    # 0.5 * 10**(E - d + 1) <= 5 * 10**-d * |exact|, since 10**E <= |exact|.
    assert abs(shown - exact) <= abs(exact) * Fraction(5, 10 ** digits), (text, exact)
    plain = Fraction(1, 10_000) <= abs(shown) < 10 ** 16
    assert ("e" not in text) == plain, text
    mantissa = text.lstrip("-").split("e")[0].replace(".", "")
    assert len(mantissa.strip("0")) <= digits, text  # trailing integer zeros are padding


@pytest.mark.parametrize(("expression", "value"), [
    ("1/300000", "3.33333333333333e-06"),
    ("sqrt(2)/1000000", "1.4142135623731e-06"),
    ("1/3000", "0.000333333333333333"),
    ("sqrt(2)/1000", "0.0014142135623731"),
    ("10**15 + 1/3", "1000000000000000"),
    ("sqrt(2) * 10**15", "1414213562373100"),
    ("10**16 + 1/3", "1e+16"),
    ("sqrt(2) * 10**16", "1.4142135623731e+16"),
])
def test_a_rounded_fraction_and_a_float_of_one_size_print_alike(expression: str,
                                                                 value: str) -> None:
    """``1/300000`` was printed plain (``0.00000333333333333333``) while ``sqrt(2)/1000000``
    had an exponent: both now follow ``repr(float)``'s bounds."""
    assert calculate(expression) == value


_DIGITS = st.integers(1, 20)


@settings(max_examples=300, deadline=None)
@given(numerator=st.integers(-(10 ** 20), 10 ** 20).filter(bool),
       denominator=st.integers(2, 10 ** 6), scale=st.integers(-30, 30), digits=_DIGITS)
def test_a_rounded_fraction_is_its_exact_value_to_digits(numerator: int, denominator: int,
                                                          scale: int, digits: int) -> None:
    """For any fraction without a finite decimal form, the printed text is the exact value
    within half a unit of its last significant digit, in the form its size asks for."""
    exact = Fraction(numerator, denominator) * Fraction(10) ** scale
    rest = exact.denominator
    for factor in (2, 5):
        while rest % factor == 0:
            rest //= factor
    assume(rest != 1)  # a finite decimal form is printed exactly (and is tested elsewhere)
    sign = "-" if exact < 0 else ""
    expression = f"{sign}{abs(exact.numerator)}/{exact.denominator}"
    _check(calculate(expression, CalculatorOptions(digits=digits)), exact, digits)


_FLOATS = st.floats(allow_nan=False, allow_infinity=False).filter(
    lambda x: not x.is_integer())


@settings(max_examples=300, deadline=None)
@given(value=_FLOATS, digits=_DIGITS)
def test_a_float_is_its_exact_value_to_digits(value: float, digits: int) -> None:
    """For any float (not a whole number), the printed text is its exact binary value within
    half a unit of the last significant digit, in the form its size asks for, and it is the
    text of the same value held as a fraction (one rule for both kinds)."""
    text = _render(value, digits, 1000)
    _check(text, Fraction(value), digits)
    assert text == _render(Fraction(value), digits, 1)  # max_digits 1: rounded, never exact


@settings(max_examples=200, deadline=None)
@given(value=_FLOATS)
def test_seventeen_digits_give_the_float_back(value: float) -> None:
    """With 17 significant digits every float reads back as itself (``float(text)``)."""
    assert float(_render(value, 17, 1000)) == value


@pytest.mark.parametrize(("value", "text"), [
    (math.nextafter(1e16, 0), "1e+16"), (1e16, "1e+16"),
    (math.nextafter(1e-4, 0), "0.0001"), (1e-4, "0.0001"),
    (math.nextafter(1e-4, 0) / 10, "1e-05"), (5e-324, "4.94065645841247e-324"),
    (-0.0, "0"), (0.0, "0"),
], ids=["below-1e16", "1e16", "below-1e-4", "1e-4", "below-1e-5", "subnormal", "-0", "0"])
def test_the_form_follows_the_rounded_value(value: float, text: str) -> None:
    """The bounds are judged after rounding: a float just under ``1e16`` rounds up to it
    and gets an exponent, one just under ``1e-4`` rounds up to it and is plain; zero is
    ``0``, never ``-0``."""
    assert _render(value, 15, 1000) == text
