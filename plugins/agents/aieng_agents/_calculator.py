"""``calculator``: exact, safe arithmetic for agents, by walking Python's ``ast`` (no eval).

Numbers are exact fractions while they can be (``0.1 + 0.2`` is exactly ``0.3``: a literal
``0.1`` means one tenth, not the binary float nearest to it); a function or constant
without an exact value (``sqrt(2)``, ``pi``, ``sin``) makes the result inexact, a float.
Every operation is bounded before it runs: an exponent or factorial whose result would pass
``max_digits`` digits is refused with an error result, so no input hangs or exhausts memory.
"""

from __future__ import annotations

import ast
import math
import re
import sys
import unicodedata
from collections.abc import Callable
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

import attrs
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import ToolCall, ToolResult, ToolSpec

__all__ = ["CalculationError", "CalculatorOptions", "CalculatorTool", "calculate"]

#: The tool's name, as models call it.
TOOL = "calculate"

Number = Fraction | float

# Python refuses to print (or parse) an int of more than 4300 digits by default.
_MAX_DIGITS = 4000
_BITS_PER_DIGIT = math.log2(10)
# Written forms models and people use that Python spells otherwise.
_SPELLINGS = {"^": "**", "×": "*", "÷": "/", "−": "-", "·": "*"}
_SPELLING = re.compile("|".join(re.escape(s) for s in _SPELLINGS))
# Non-ASCII signs read as ASCII ones (before _SPELLINGS): dashes and minus signs, the
# operators of the Mathematical Operators block. Fullwidth forms (１２＋３) and decimal
# digits of any script (٣) are read as their ASCII forms too, other spaces as a space.
_SIGNS = {"\u2013": "-", "\u2012": "-", "\ufe63": "-", "\u2217": "*", "\u22c5": "*",
          "\u2215": "/"}
_FULLWIDTH = range(0xFF01, 0xFF5F)  # U+FF01..U+FF5E are U+0021..U+007E, fullwidth


class CalculationError(ValueError):
    """An expression the calculator refuses or cannot evaluate; the message says why."""


def _positive(name: str, most: int | None = None) -> Callable[[Any, Any, int], None]:
    def check(instance: Any, attribute: Any, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if most is not None and value > most:
            raise ValueError(f"{name} must be at most {most}, got {value!r}")
    return check


@attrs.frozen
class CalculatorOptions:
    """Options of the ``calculator`` tool.

    :param max_length: the longest expression accepted, in characters.
    :param max_depth: the deepest nesting of operations accepted.
    :param max_digits: the most digits of any number computed (numerator and denominator of
        an exact value); larger results are refused. At most 4000.
    :param max_factorial: the largest ``n`` of ``factorial(n)``.
    :param digits: significant digits shown for an inexact result or a fraction without a
        finite decimal form (``1/3``).
    """

    max_length: int = attrs.field(default=1000, validator=_positive("max_length", 100_000))
    max_depth: int = attrs.field(default=100, validator=_positive("max_depth", 500))
    max_digits: int = attrs.field(default=1000, validator=_positive("max_digits", _MAX_DIGITS))
    max_factorial: int = attrs.field(default=1000, validator=_positive("max_factorial", 5000))
    digits: int = attrs.field(default=15, validator=_positive("digits", 50))


def _float(value: Number) -> float:
    try:
        return float(value)
    except OverflowError:
        raise CalculationError("a number is too large for an inexact (float) operation") \
            from None


def _whole(value: Number, what: str) -> int:
    if isinstance(value, Fraction) and value.denominator == 1:
        return value.numerator
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise CalculationError(f"{what} needs a whole number, got {_render(value, 15, 50)}")


def _sqrt(value: Number) -> Number:
    if value < 0:
        raise CalculationError("sqrt of a negative number")
    if isinstance(value, Fraction):
        top, bottom = math.isqrt(value.numerator), math.isqrt(value.denominator)
        if top * top == value.numerator and bottom * bottom == value.denominator:
            return Fraction(top, bottom)  # exact: sqrt(16) is 4, sqrt(1/4) is 1/2
    return math.sqrt(_float(value))


def _round(value: Number, places: Number = Fraction(0)) -> Number:
    """Half away from zero, as taught at school (Python's round() rounds half to even),
    inexact values included: a float is rounded as the exact binary value it holds."""
    count = _whole(places, "round's second argument")
    if abs(count) > 1000:
        raise CalculationError("round to at most 1000 places")
    if isinstance(value, float):
        return float(_round(Fraction(value), places))
    scale = Fraction(10) ** count
    scaled = abs(value) * scale
    result = Fraction(math.floor(scaled + Fraction(1, 2))) / scale
    return -result if value < 0 else result


def _exact_or_float(exact: Callable[..., Any], inexact: Callable[..., float]
                    ) -> Callable[..., Number]:
    def apply(*args: Number) -> Number:
        if all(isinstance(a, Fraction) for a in args):
            return Fraction(exact(*args))
        return inexact(*(_float(a) for a in args))
    return apply


def _float_function(function: Callable[..., float]) -> Callable[..., Number]:
    def apply(*args: Number) -> Number:
        return function(*(_float(a) for a in args))
    return apply


def _ln(value: Number) -> float:
    """The natural logarithm of a positive number, an exact one without going through its
    float where that would overflow (``10**999 / 3``), underflow (``10**-999``, a float 0)
    or lose the distance to 1 (``1 + 10**-30``, a float 1)."""
    if isinstance(value, float):
        return math.log(value)
    top, bottom = value.numerator, value.denominator
    if bottom == 1:
        return math.log(top)  # math.log takes big ints exactly, without a float
    if abs(top - bottom) * 2 < bottom:  # within 1/2 of 1: log1p of the exact difference
        return math.log1p(float(Fraction(top - bottom, bottom)))
    try:
        near = float(value)
    except OverflowError:
        near = math.inf
    if sys.float_info.min <= near < math.inf:  # a normal float: every digit kept
        return math.log(near)
    return math.log(top) - math.log(bottom)  # far from 1: no digits cancel


def _log(value: Number, base: Number | None = None) -> Number:
    if value <= 0 or (base is not None and (base <= 0 or base == 1)):
        raise CalculationError("log is defined for positive numbers (and a base other than 1)")
    result = _ln(value)
    if base is None:
        return result
    divisor = _ln(base)
    if divisor == 0:  # a base within 1e-308 of 1: its logarithm underflows a float
        raise CalculationError("log's base is too close to 1 for an inexact (float) result")
    return result / divisor


def _integers(function: Callable[..., int], what: str) -> Callable[..., Number]:
    def apply(*args: Number) -> Number:
        return Fraction(function(*(_whole(a, what) for a in args)))
    return apply


_FUNCTIONS: dict[str, tuple[Callable[..., Number], int, int]] = {
    # name: (function, fewest arguments, most arguments)
    "abs": (abs, 1, 1),
    "round": (_round, 1, 2),
    "floor": (_exact_or_float(math.floor, lambda x: float(math.floor(x))), 1, 1),
    "ceil": (_exact_or_float(math.ceil, lambda x: float(math.ceil(x))), 1, 1),
    "sqrt": (_sqrt, 1, 1),
    "exp": (_float_function(math.exp), 1, 1),
    "log": (_log, 1, 2),
    "ln": (_log, 1, 1),
    "log10": (lambda x: _log(x, Fraction(10)), 1, 1),
    "log2": (lambda x: _log(x, Fraction(2)), 1, 1),
    "sin": (_float_function(math.sin), 1, 1),
    "cos": (_float_function(math.cos), 1, 1),
    "tan": (_float_function(math.tan), 1, 1),
    "asin": (_float_function(math.asin), 1, 1),
    "acos": (_float_function(math.acos), 1, 1),
    "atan": (_float_function(math.atan), 1, 1),
    "atan2": (_float_function(math.atan2), 2, 2),
    "sinh": (_float_function(math.sinh), 1, 1),
    "cosh": (_float_function(math.cosh), 1, 1),
    "tanh": (_float_function(math.tanh), 1, 1),
    "degrees": (_float_function(math.degrees), 1, 1),
    "radians": (_float_function(math.radians), 1, 1),
    "hypot": (_float_function(math.hypot), 1, 10),
    "min": (lambda *args: min(args), 1, 100),
    "max": (lambda *args: max(args), 1, 100),
    "gcd": (_integers(math.gcd, "gcd"), 1, 100),
    "lcm": (_integers(math.lcm, "lcm"), 1, 100),
}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}


class _Evaluator:
    """Walks a parsed expression, checking the size of every number it makes."""

    def __init__(self, options: CalculatorOptions, text: str = "") -> None:
        self.options = options
        self.max_bits = int(options.max_digits * _BITS_PER_DIGIT) + 1
        # The source's lines as UTF-8 (ast positions count bytes): a literal is read from
        # its text, since Python's float of it may have lost digits, overflowed or underflowed.
        self.lines = text.encode("utf-8").split(b"\n")

    def literal(self, node: ast.Constant, value: float) -> Number:
        """A float literal's exact value, from the text written (``0.1`` is one tenth);
        ``value`` is the float Python read it as."""
        text = ""
        if node.lineno == node.end_lineno and node.end_col_offset is not None \
                and 0 < node.lineno <= len(self.lines):
            line = self.lines[node.lineno - 1]
            text = line[node.col_offset:node.end_col_offset].decode("utf-8", "replace")
        try:
            number = Decimal(text.replace("_", ""))
        except ArithmeticError:  # decimal.InvalidOperation: no text (a tree built by hand)
            number = Decimal("NaN")
        if not number.is_finite() or float(number) != value:  # not this literal's text
            return Fraction(repr(value)) if math.isfinite(value) else value
        _, digits, exponent = number.as_tuple()
        assert isinstance(exponent, int)  # finite: a Python literal is no NaN or Infinity
        if not any(digits):
            return Fraction(0)
        # Refuse before building the fraction: 1e999999999 would be a billion digits.
        if len(digits) + max(exponent, -exponent) > 2 * self.options.max_digits + 2:
            raise CalculationError(
                f"a number would have more than {self.options.max_digits} digits")
        return Fraction(number)

    def check(self, value: Number) -> Number:
        if isinstance(value, float):
            if not math.isfinite(value):
                raise CalculationError("the result is not a finite number")
            return value
        if max(value.numerator.bit_length(), value.denominator.bit_length()) > self.max_bits:
            raise CalculationError(
                f"a number would have more than {self.options.max_digits} digits")
        return value

    def eval(self, node: ast.AST, depth: int = 0) -> Number:
        if depth > self.options.max_depth:
            raise CalculationError(
                f"the expression nests deeper than {self.options.max_depth} levels")
        if isinstance(node, ast.Expression):
            return self.eval(node.body, depth + 1)
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise CalculationError(f"{value!r} is not a number")
            # The literal as written: 0.1 is one tenth, not the float nearest to it.
            return self.check(Fraction(value) if isinstance(value, int)
                              else self.literal(node, value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            operand = self.eval(node.operand, depth + 1)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            # A chain of left-associative operations (1 + 2 + ... + 500) is a deep tree
            # down its left side: walk that side in a loop, so only real nesting counts.
            chain: list[ast.BinOp] = []
            leaf: ast.AST = node
            while isinstance(leaf, ast.BinOp) and not isinstance(leaf.op, ast.Pow):
                chain.append(leaf)
                leaf = leaf.left
            if not chain:  # ** is right-associative: 2 ** 3 ** 2 nests to the right
                left = self.eval(node.left, depth + 1)
                return self.check(self.binary(node.op, left, self.eval(node.right, depth + 1)))
            result = self.eval(leaf, depth + 1)
            for link in reversed(chain):
                result = self.check(
                    self.binary(link.op, result, self.eval(link.right, depth + 1)))
            return result
        if isinstance(node, ast.Name):
            if node.id in _CONSTANTS:
                return _CONSTANTS[node.id]
            raise CalculationError(f"unknown name {node.id!r}; known constants: "
                                   f"{', '.join(_CONSTANTS)}")
        if isinstance(node, ast.Call):
            return self.check(self.call(node, depth))
        if isinstance(node, ast.Tuple):  # 1,000 or 1,5: a comma between numbers
            raise CalculationError(
                "a comma only separates a function's arguments: write 1000 or 1_000, not "
                "1,000, and 1.5, not 1,5")
        raise CalculationError(f"{type(node).__name__} is not allowed in an expression "
                               "(numbers, + - * / // % **, parentheses and functions only)")

    def call(self, node: ast.Call, depth: int) -> Number:
        if not isinstance(node.func, ast.Name):
            raise CalculationError("only the calculator's functions can be called")
        name = node.func.id
        if node.keywords:
            raise CalculationError(f"{name}() takes no keyword arguments")
        if name == "factorial":
            fewest, most = 1, 1
        elif name in _FUNCTIONS:
            _, fewest, most = _FUNCTIONS[name]
        else:
            raise CalculationError(f"unknown function {name!r}; known functions: "
                                   f"{', '.join(sorted([*_FUNCTIONS, 'factorial']))}")
        if not fewest <= len(node.args) <= most:
            count = str(fewest) if fewest == most else f"{fewest} to {most}"
            raise CalculationError(f"{name}() takes {count} argument(s), got {len(node.args)}")
        args = [self.eval(arg, depth + 1) for arg in node.args]
        if name == "factorial":
            n = _whole(args[0], "factorial")
            if n < 0:
                raise CalculationError("factorial of a negative number")
            if n > self.options.max_factorial:
                raise CalculationError(
                    f"factorial({n}) is too large (at most factorial("
                    f"{self.options.max_factorial}))")
            return Fraction(math.factorial(n))
        return _FUNCTIONS[name][0](*args)

    def binary(self, op: ast.operator, left: Number, right: Number) -> Number:
        if isinstance(op, ast.Add):
            return left + right
        if isinstance(op, ast.Sub):
            return left - right
        if isinstance(op, ast.Mult):
            return left * right
        if isinstance(op, (ast.Div, ast.FloorDiv, ast.Mod)) and right == 0:
            raise CalculationError("division by zero")
        if isinstance(op, ast.Div):
            return left / right
        if isinstance(op, ast.FloorDiv):
            quotient = left // right
            return Fraction(quotient) if isinstance(quotient, int) else float(quotient)
        if isinstance(op, ast.Mod):
            return left % right
        if isinstance(op, ast.Pow):
            return self.power(left, right)
        raise CalculationError(f"the operator {type(op).__name__} is not allowed "
                               "(+ - * / // % ** only)")

    def power(self, base: Number, exponent: Number) -> Number:
        if base == 0 and exponent < 0:  # 0 ** -1 and 0 ** -0.5 alike
            raise CalculationError("division by zero (0 to a negative power)")
        if isinstance(base, Fraction) and isinstance(exponent, Fraction) \
                and exponent.denominator == 1:
            n = exponent.numerator
            if base in (0, 1) or n == 0:
                return Fraction(1) if n == 0 else base
            if base == -1:
                return Fraction(-1 if n % 2 else 1)
            # Refuse before computing: the result has about |n| times the base's bits.
            bits = max(base.numerator.bit_length(), base.denominator.bit_length())
            if (abs(n) - 1) * (bits - 1) > self.max_bits:
                raise CalculationError(
                    f"the power would have more than {self.options.max_digits} digits")
            return base ** n
        if base < 0 and not float(exponent).is_integer():
            raise CalculationError("a negative number to a fractional power is not real")
        return math.pow(_float(base), _float(exponent))


def _render(value: Number, digits: int, max_digits: int) -> str:
    """The value as decimal text: an integer in full; exact when its decimal form ends
    within ``max_digits`` digits; else (a float, or a fraction without such a form) rounded
    to ``digits`` significant digits and printed by :func:`_rounded`."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return format(value, f".{digits}g")
        with localcontext() as context:
            context.prec = digits
            return _rounded(+Decimal(value))  # Decimal(float) is exact: rounded once
    if value.denominator == 1:
        return str(value.numerator)
    rest, places = value.denominator, 0
    for factor in (2, 5):
        count = 0
        while rest % factor == 0:
            rest //= factor
            count += 1
        places = max(places, count)
    with localcontext() as context:
        if rest == 1 and places + len(str(abs(value.numerator))) <= max_digits:
            context.prec = places + len(str(abs(value.numerator))) + 2
            return format(Decimal(value.numerator) / Decimal(value.denominator), "f")
        context.prec = digits
        return _rounded(Decimal(value.numerator) / Decimal(value.denominator))


def _rounded(number: Decimal) -> str:
    """A rounded value as Python's ``repr(float)`` prints one: plain when
    ``1e-4 <= |x| < 1e16`` (judged after rounding), else with a lower-case exponent of at
    least two digits; never trailing zeros after the point, never ``-0``."""
    if not number:
        return "0"
    if -4 <= number.adjusted() < 16:
        text = format(number, "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    mantissa, exponent = format(number.normalize(), "e").split("e")
    return f"{mantissa}e{int(exponent):+03d}"


def _ascii(text: str) -> str:
    """``text`` with the non-ASCII signs, fullwidth forms, digits and spaces people and
    models write read as their ASCII forms (``１２ – ٣`` is ``12 - 3``)."""
    if text.isascii():
        return text

    def form(char: str) -> str:
        if char.isascii():
            return char
        if char in _SIGNS:
            return _SIGNS[char]
        if ord(char) in _FULLWIDTH:
            return chr(ord(char) - 0xFEE0)
        if char.isspace():
            return " "
        digit = unicodedata.decimal(char, None)
        return char if digit is None else str(digit)

    return "".join(map(form, text))


def calculate(expression: object, options: CalculatorOptions | None = None) -> str:
    """Evaluate an arithmetic expression and return its value as text.

    :param expression: numbers, ``+ - * / // % **`` (``^`` is read as ``**``), parentheses,
        unary minus, the calculator's functions and the constants ``pi``, ``e``, ``tau``.
    :param options: the limits (defaults when omitted).
    :raises CalculationError: when the expression is not allowed, not valid, or too large.
    """
    options = options if options is not None else CalculatorOptions()
    if not isinstance(expression, str):
        raise CalculationError("'expression' must be a string")
    if len(expression) > options.max_length:
        raise CalculationError(f"the expression is longer than {options.max_length} characters")
    text = _SPELLING.sub(lambda m: _SPELLINGS[m.group()], _ascii(expression)).strip()
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # ast's lines: literals' text
    if not text:
        raise CalculationError("the expression is empty")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError) as exc:
        hint = (" ('%' is the remainder of a division, 7 % 3 is 1; write a percentage as "
                "a fraction: 15/100 * 200 for 15% of 200)") if "%" in text else ""
        raise CalculationError(
            f"not a valid expression: {getattr(exc, 'msg', exc)}{hint}") from None
    except (RecursionError, MemoryError):
        raise CalculationError("the expression nests too deeply") from None
    evaluator = _Evaluator(options, text)
    try:
        value = evaluator.eval(tree)
    except CalculationError:
        raise
    except ZeroDivisionError:
        raise CalculationError("division by zero") from None
    except OverflowError:
        raise CalculationError("the result is too large") from None
    except RecursionError:
        raise CalculationError("the expression nests too deeply") from None
    except (ValueError, TypeError) as exc:
        raise CalculationError(f"math error: {exc}") from None
    return _render(value, options.digits, options.max_digits)


class CalculatorTool:
    """Offers the tool ``calculate``: exact, bounded arithmetic on one expression."""

    def __init__(self, options: CalculatorOptions | None = None) -> None:
        self.options = options if options is not None else CalculatorOptions()

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        """The tool ``calculate`` and the JSON schema of its argument."""
        return [ToolSpec(
            name=TOOL,
            description=("Evaluate an arithmetic expression exactly: numbers, + - * / // % "
                         "** (or ^), parentheses, pi, e, and the functions sqrt, log, exp, "
                         "sin, cos, tan, round, floor, ceil, abs, min, max, factorial, gcd."),
            parameters={"type": "object",
                        "properties": {"expression": {
                            "type": "string", "description": "for example (2 + 3) * 4 / 7",
                            "maxLength": self.options.max_length}},
                        "required": ["expression"]})]

    @hookimpl
    def aieng_call_tool(self, call: ToolCall) -> ToolResult | None:
        """Run ``calculate``; ``None`` for another tool's call; failures are error results."""
        if call.name != TOOL:
            return None
        try:
            content = calculate(call.arguments.get("expression"), self.options)
        except CalculationError as exc:
            return ToolResult(call_id=call.id, content=f"error: {exc}", is_error=True)
        return ToolResult(call_id=call.id, content=content)
