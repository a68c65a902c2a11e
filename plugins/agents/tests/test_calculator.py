"""The ``calculator`` tool: the tool conformance suite, exactness, safety and bounds."""

from __future__ import annotations

import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import pytest
from aieng_agents import CalculationError, CalculatorOptions, CalculatorTool, calculate
from aieng_hookspecs.types import ToolCall
from hypothesis import given, settings
from hypothesis import strategies as st

from aieng_core.testing.conformance import ToolSuite


class TestCalculatorConformance(ToolSuite):
    """calculator passes every check the kit makes of a tool component."""

    @pytest.fixture
    def component(self) -> CalculatorTool:
        """The tool under test, with its default options."""
        return CalculatorTool(CalculatorOptions())

    @pytest.fixture
    def tool_examples(self) -> Mapping[str, Mapping[str, Any]]:
        """Valid arguments of the tool."""
        return {"calculate": {"expression": "(2 + 3) * 4 / 7"}}


@pytest.mark.parametrize(("expression", "value"), [
    ("0.1 + 0.2", "0.3"),
    ("1 - 0.9", "0.1"),
    ("(2 + 3) * 4", "20"),
    ("7 / 2", "3.5"),
    ("-7 // 2", "-4"),
    ("7 % 3", "1"),
    ("2 ** 3 ** 2", "512"),
    ("2 ^ 10", "1024"),
    ("3 × 4 ÷ 2 − 1", "5"),
    ("-(-3)", "3"),
    ("2 ** -3", "0.125"),
    ("1 / 3", "0.333333333333333"),
    ("2 ** 100", "1267650600228229401496703205376"),
    ("sqrt(16)", "4"),
    ("sqrt(1/4)", "0.5"),
    ("sqrt(2)", "1.4142135623731"),
    ("round(2.5)", "3"),
    ("round(-2.5)", "-3"),
    ("round(3.14159, 2)", "3.14"),
    ("factorial(20)", "2432902008176640000"),
    ("gcd(12, 18)", "6"),
    ("max(1, 2.5, -3)", "2.5"),
    ("log10(1000)", "3"),
    ("(-pi) ** 2", "9.86960440108936"),
    ("1e3 + 1_000", "2000"),
])
def test_values_are_exact_where_they_can_be(expression: str, value: str) -> None:
    """Decimal literals are exact fractions (0.1 + 0.2 is 0.3); functions without an exact
    value give a float shown with 15 significant digits; ``^`` means a power."""
    assert calculate(expression) == value


def test_a_long_sum_is_not_too_deep() -> None:
    """A chain of 500 additions is flat, not 500 levels deep."""
    assert calculate("+".join(["1"] * 500)) == "500"


@pytest.mark.parametrize(("expression", "reason"), [
    ("9**9**9", "digits"),
    ("10**100000", "digits"),
    ("(10**999) * (10**999)", "digits"),
    ("factorial(100000)", "too large"),
    ("factorial(-1)", "negative"),
    ("1 / 0", "division by zero"),
    ("5 % 0", "division by zero"),
    ("0 ** -1", "division by zero"),
    ("0 ** -0.5", "division by zero"),
    ("0 ** -(2 ** -1)", "division by zero"),
    ("(-8) ** (1/3)", "not real"),
    ("sqrt(-1)", "negative"),
    ("log(0)", "positive"),
    ("pi * 1e300 * 1e300", "finite"),
    ("exp(1000)", "too large"),
    ("(1+" * 150 + "1" + ")" * 150, "nests"),
    ("-" * 900 + "1", "nests"),
    ("(" * 300 + "1" + ")" * 300, "not a valid expression"),
    ("1" * 1001, "longer than"),
    ("", "empty"),
    ("   ", "empty"),
    ("\x00", "not a valid expression"),
    ("2 +", "not a valid expression"),
    ("__import__('os').system('true')", "can be called"),
    ("__import__('os')", "unknown function"),
    ("open('/etc/passwd')", "unknown function"),
    ("x + 1", "unknown name"),
    ("'a' * 3", "not a number"),
    ("True + 1", "not a number"),
    ("1j", "not a number"),
    ("[1, 2]", "not allowed"),
    ("1 < 2", "not allowed"),
    ("1 if 1 else 2", "not allowed"),
    ("~1", "not allowed"),
    ("3 & 1", "not allowed"),
    ("round(x=1)", "keyword"),
    ("sqrt(1, 2)", "argument"),
    ("abs.real", "not allowed"),
    ("factorial(2.5)", "whole number"),
])
def test_refusals_are_errors_that_say_why(expression: str, reason: str) -> None:
    """Unsafe, invalid or too large expressions raise CalculationError naming the reason
    (and never run code, hang or exhaust memory)."""
    with pytest.raises(CalculationError, match=reason):
        calculate(expression, CalculatorOptions(max_depth=100))


def test_limits_follow_the_options() -> None:
    """``max_digits`` and ``max_factorial`` set where work is refused."""
    small = CalculatorOptions(max_digits=10, max_factorial=5)
    assert calculate("10 ** 9", small) == "1000000000"
    with pytest.raises(CalculationError, match="10 digits"):
        calculate("10 ** 11", small)
    with pytest.raises(CalculationError, match="at most factorial"):
        calculate("factorial(6)", small)


@pytest.mark.parametrize("options", [
    {"max_length": 0}, {"max_depth": -1}, {"max_digits": 5000}, {"digits": True},
    {"max_factorial": 1.5},
])
def test_options_are_validated(options: dict[str, Any]) -> None:
    """Limits must be positive integers within their bounds."""
    with pytest.raises((ValueError, TypeError)):
        CalculatorOptions(**options)


def test_the_tool_answers_errors_with_error_results() -> None:
    """Through the hook, a failure is a ToolResult with ``is_error``, never an exception;
    another tool's call gets None."""
    tool = CalculatorTool()
    ok = tool.aieng_call_tool(ToolCall(id="a", name="calculate",
                                       arguments={"expression": "0.1+0.2"}))
    bad = tool.aieng_call_tool(ToolCall(id="b", name="calculate",
                                        arguments={"expression": "9**9**9"}))
    wrong = tool.aieng_call_tool(ToolCall(id="c", name="calculate", arguments={"expr": 1}))
    assert ok is not None and (ok.content, ok.is_error) == ("0.3", False)
    assert bad is not None and bad.is_error and bad.content.startswith("error:")
    assert wrong is not None and wrong.is_error and "string" in wrong.content
    assert tool.aieng_call_tool(ToolCall(id="d", name="now")) is None


@settings(max_examples=60, deadline=None)
@given(a=st.integers(-10**6, 10**6), b=st.integers(-10**6, 10**6),
       c=st.integers(1, 10**6))
def test_integer_arithmetic_agrees_with_python(a: int, b: int, c: int) -> None:
    """On integers the calculator agrees with Python's exact integer arithmetic."""
    assert calculate(f"{a} + {b} * {c}") == str(a + b * c)
    assert calculate(f"({a}) // {c}") == str(a // c)
    assert calculate(f"({a}) % {c}") == str(a % c)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=60))
def test_any_text_gives_a_value_or_a_calculation_error(text: str) -> None:
    """Whatever the text, the calculator returns a value or raises CalculationError."""
    try:
        assert isinstance(calculate(text), str)
    except CalculationError:
        pass


@pytest.mark.parametrize(("expression", "value"), [
    ("123456789012345678901234567890.5", "123456789012345678901234567890.5"),
    ("0.12345678901234567890123", "0.12345678901234567890123"),
    ("1e309 / 1e308", "10"),
    ("1e-400 * 1e400", "1"),
    ("1_000.000_1", "1000.0001"),
    ("(.5 + 5.) * 2E1", "110"),
    ("1e308 * 10", "1" + "0" * 309),
])
def test_a_decimal_literal_is_the_text_written(expression: str, value: str) -> None:
    """A literal is exact however many digits it has or however large its exponent: the
    text written, not the float Python reads it as (17 digits, overflow, underflow)."""
    assert calculate(expression) == value


@pytest.mark.parametrize("expression", ["1e999999999", "1e-999999999", "9.9e1001"])
def test_a_literal_past_max_digits_is_refused_at_once(expression: str) -> None:
    """A literal of more than ``max_digits`` digits is refused, without building it."""
    with pytest.raises(CalculationError, match="1000 digits"):
        calculate(expression)


def test_min_and_max_of_one_number_is_that_number() -> None:
    """``min(x)`` and ``max(x)`` take one argument, as listed, and give it back."""
    assert calculate("min(3)") == "3" and calculate("max(-2.5)") == "-2.5"


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_literals_on_later_lines_are_read_from_their_own_text(newline: str) -> None:
    """Any newline convention: each literal's text is found where the parser saw it."""
    expression = f"max(1,{newline}0.5,{newline}0.25) + min(0.125,{newline}7)"
    assert calculate(expression) == "1.125"


def _exact(text: str) -> Fraction:
    """A reference value: the expression evaluated by Python on exact fractions (each
    literal read as a Fraction of its text), so Python's own precedence applies."""
    return eval(re.sub(r"(\d+(?:\.\d+)?)", r"Fraction('\1')", text),
                {"Fraction": Fraction})


_LEAVES = st.one_of(st.integers(0, 99).map(str),
                    st.decimals(0, 99, places=2, allow_nan=False).map(str))


def _expression(leaves: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Small expressions of + - * / // % (and ** to a small whole power), unary minus
    and parentheses, written with Python's precedence left to the parser."""
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "//", "%"]), inner)
            .map(" ".join),
            st.tuples(inner, st.integers(-3, 3)).map(lambda p: f"{p[0]} ** {p[1]}"),
            inner.map(lambda e: f"-{e}"),
            inner.map(lambda e: f"({e})"))
    return st.recursive(leaves, extend, max_leaves=6)


@settings(max_examples=150, deadline=None)
@given(_expression(_LEAVES))
def test_random_expressions_agree_with_exact_fractions(expression: str) -> None:
    """Any small expression has the value Python computes on exact fractions (its own
    precedence and associativity): exactly when the decimal form ends, else to the 15
    significant digits shown; a division by zero is an error either way."""
    try:
        expected = _exact(expression)
    except ZeroDivisionError:
        with pytest.raises(CalculationError, match="division by zero"):
            calculate(expression, CalculatorOptions(max_digits=4000))
        return
    shown = Fraction(calculate(expression, CalculatorOptions(max_digits=4000)))
    if shown == expected:
        return
    assert expected != 0 and abs(shown - expected) <= abs(expected) * Fraction(1, 10**14), (
        expression, shown, expected)


@pytest.mark.parametrize(("expression", "value"), [
    ("2**3**2", "512"), ("-2**2", "-4"), ("(-2)**2", "4"), ("10 // -3", "-4"),
    ("-7 % 3", "2"), ("7 % -3", "-2"), ("2 - 3 - 4", "-5"), ("64 / 4 / 2", "8"),
    ("2 ** -1 ** 2", "0.5"), ("-3 // 2 * 2", "-4"),
])
def test_precedence_and_associativity_are_pythons(expression: str, value: str) -> None:
    """``**`` binds tighter than unary minus and groups to the right; ``//`` and ``%``
    floor toward minus infinity, as in Python."""
    assert calculate(expression) == value


@pytest.mark.parametrize(("expression", "value"), [
    ("10**14 + 1/3", "100000000000000"),
    ("10**15 + 1/3", "1000000000000000"),
    ("10**16 + 1/3", "1e+16"),
    ("10**20 / 3", "3.33333333333333e+19"),
    ("-10**20 / 3", "-3.33333333333333e+19"),
    ("1 / 3000000", "3.33333333333333e-07"),
    ("1 / 30000", "3.33333333333333e-05"),
    ("1 / 3000", "0.000333333333333333"),
    ("2/3 * 10**15", "666666666666667"),
])
def test_a_rounded_fraction_is_printed_as_a_float_is(expression: str, value: str) -> None:
    """A fraction without a short decimal form is shown with ``digits`` significant digits
    the way an inexact result is, by ``repr(float)``'s rule: plain for
    ``1e-4 <= |x| < 1e16`` (10**15 + 1/3 is not ``1e+15``), else a lower-case ``e`` and no
    trailing zeros (never ``1.00000000000000E+15``)."""
    assert calculate(expression) == value
    if "e" in value:  # as the float of the same value is printed
        assert value == format(float(_exact(expression)), ".15g")


@pytest.mark.parametrize(("expression", "value"), [
    ("round(cos(0) * 2.5)", "3"), ("round(-cos(0) * 2.5)", "-3"),
    ("round(cos(0) * 0.5)", "1"), ("round(cos(0) * 0.125, 2)", "0.13"),
])
def test_an_inexact_value_rounds_half_away_from_zero_too(expression: str, value: str) -> None:
    """``round`` rounds half away from zero for an inexact (float) value as for an exact
    one, not half to even as Python's round() does (cos(0) * 2.5 is the float 2.5)."""
    assert calculate(expression) == value


@pytest.mark.parametrize(("expression", "value"), [
    ("１２＋３", "15"), ("（２＋３）×４", "20"), ("٣ + ٤", "7"), ("२ * ५", "10"),
    ("5 \u2013 3", "2"), ("5 \u2212 3", "2"), ("2 \u22c5 3", "6"), ("2 \u2217 3", "6"),
    ("6 \u2215 2", "3"), ("2\u00a0+\u00a03", "5"), ("2\u2009+\u20093", "5"), ("２＾３", "8"),
])
def test_unicode_digits_signs_and_spaces_are_read(expression: str, value: str) -> None:
    """Fullwidth forms, decimal digits of any script, minus signs and dashes, the
    multiplication and division operators of Unicode and non-ASCII spaces (a no-break
    space pasted from a document) are read as their ASCII forms."""
    assert calculate(expression) == value


@pytest.mark.parametrize(("expression", "reason"), [
    ("1,000", "write 1000 or 1_000"), ("1,000 + 1", "not 1,000"), ("1,5 * 2", "1.5, not 1,5"),
    ("50%", "percentage"), ("200 * 15%", "15/100 \\* 200"), ("2²", "invalid character"),
    ("nan", "unknown name"), ("inf + 1", "unknown name"), ("1\u202f000", "invalid syntax"),
])
def test_thousands_separators_and_percentages_are_refused_saying_why(
        expression: str, reason: str) -> None:
    """A comma is never a thousands separator nor a decimal comma (``max(1,000)`` would be
    ambiguous) and ``%`` is the remainder, never a percentage (``50%+10`` would be): both
    are refused with a message saying what to write; ``nan`` and ``inf`` are no numbers."""
    with pytest.raises(CalculationError, match=reason):
        calculate(expression)


class TestCalculatorConformanceOnTrio(TestCalculatorConformance):
    """The calculator's suite again under trio (a host's ``anyio.run(main,
    backend="trio")``)."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "trio"
