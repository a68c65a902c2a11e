"""Tool-call arguments checked against the tool's JSON schema before the tool runs.

A subset of JSON Schema (draft 2020-12 wording, draft 4/7 forms accepted where they
differ): ``type``, ``enum``, ``const``, ``properties``, ``required``,
``additionalProperties``, ``minProperties`` / ``maxProperties``, ``items`` (a schema, or a
list: the draft 4 tuple form), ``prefixItems``, ``minItems`` / ``maxItems``,
``uniqueItems``, ``minLength`` / ``maxLength`` (code points), ``pattern`` (``re.search``),
``minimum`` / ``maximum`` / ``exclusiveMinimum`` / ``exclusiveMaximum`` (numbers, or the
draft 4 booleans), ``multipleOf``, ``allOf`` / ``anyOf`` / ``oneOf`` / ``not``, and local
``$ref`` (``#/$defs/...``, ``#/definitions/...``). Keywords outside the subset
(``format``, ``if`` / ``then``, ``dependentRequired``, remote ``$ref``, ...) are not
checked: the tool still sees those arguments and answers them itself. A schema the checker
cannot read (a bad pattern, a ``$ref`` it cannot resolve) never blames the model: that part
counts as valid.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from aieng_hookspecs.types import EQUALS_NOTHING, NO_KEY, json_key

__all__ = ["argument_errors", "describe_errors"]

_MAX_ERRORS = 5
_MAX_DEPTH = 64
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def argument_errors(arguments: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """What is wrong with ``arguments`` under ``schema``, as ``"$.path: problem"`` lines
    (at most five; empty when the arguments are valid)."""
    checker = _Checker(schema)
    checker.check(dict(arguments), schema, "$", 0)
    return checker.errors[:_MAX_ERRORS]


def describe_errors(tool: str, errors: Sequence[str], schema: Mapping[str, Any]) -> str:
    """The error result the model gets for invalid arguments: the problems and the schema."""
    text = json.dumps(schema, ensure_ascii=False, separators=(",", ":"), default=str)
    if len(text) > 600:
        text = text[:599] + "…"
    return (f"error: invalid arguments for tool {tool!r}: {'; '.join(errors)}. The tool was "
            f"not run; call it again with arguments matching its parameters: {text}")


def _where(path: str, key: str) -> str:
    return f"{path}.{key}" if _IDENT.match(key) else f"{path}[{json.dumps(key)}]"


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:39] + "…"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def _is(value: Any, name: str) -> bool:
    kind = _kind(value)
    if name == "number":
        return kind in ("integer", "number")
    if name == "integer":  # 3.0 is an integer in JSON Schema
        return kind == "integer" or (kind == "number" and math.isfinite(value)
                                     and float(value).is_integer())
    return kind == name


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: ``1 == 1.0`` but ``true != 1``; objects by keys, arrays in order."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if _kind(a) in ("integer", "number") and _kind(b) in ("integer", "number"):
        return bool(a == b)
    return _kind(a) == _kind(b) and bool(a == b)


def _repeated(items: Sequence[Any]) -> tuple[Any] | None:
    """The first item equal (:func:`_equal`) to an earlier one, or ``None``: by the
    contract's :func:`~aieng_hookspecs.types.json_key`, in one pass (comparing each item
    with those before it is quadratic on the long arrays a model may send). An item with
    NaN equals nothing; one the keys do not cover sends the check back to comparing pairs."""
    seen: set[Any] = set()
    for item in items:
        key = json_key(item)
        if key is NO_KEY:
            break
        if key is EQUALS_NOTHING:
            continue
        if key in seen:
            return (item,)
        seen.add(key)
    else:
        return None
    for i, item in enumerate(items):
        if any(_equal(item, items[j]) for j in range(i)):
            return (item,)
    return None


def _exact(value: float) -> Fraction:
    """A number as written: ``0.3`` is 3/10 (its shortest repr), not the binary float."""
    return Fraction(repr(value)) if isinstance(value, float) else Fraction(value)


def _number(value: Any) -> bool:
    return _kind(value) in ("integer", "number")


class _Checker:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.errors: list[str] = []

    def fail(self, path: str, problem: str) -> None:
        if len(self.errors) < _MAX_ERRORS:
            self.errors.append(f"{path}: {problem}")

    def valid(self, value: Any, schema: Any, depth: int) -> bool:
        """Whether ``value`` matches ``schema``, without recording errors."""
        probe = _Checker(self.root)
        probe.check(value, schema, "$", depth)
        return not probe.errors

    def resolve(self, ref: Any) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#"):
            return True  # remote or odd refs are not checked
        node: Any = self.root
        for part in ref[1:].split("/")[1:] if ref != "#" else []:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return True
        return node

    def check(self, value: Any, schema: Any, path: str, depth: int) -> None:
        if schema is False:
            self.fail(path, "no value is allowed here")
            return
        if depth > _MAX_DEPTH or not isinstance(schema, Mapping):
            return  # ``true``, or nothing this checker reads
        if "$ref" in schema:
            self.check(value, self.resolve(schema["$ref"]), path, depth + 1)
        if not self._type(value, schema, path):
            return  # the other keywords would only repeat the type error
        if "enum" in schema and isinstance(schema["enum"], list) \
                and not any(_equal(value, c) for c in schema["enum"]):
            choices = ", ".join(_show(c) for c in schema["enum"][:10])
            self.fail(path, f"{_show(value)} is not one of {choices}")
        if "const" in schema and not _equal(value, schema["const"]):
            self.fail(path, f"must be {_show(schema['const'])}, got {_show(value)}")
        self._combinators(value, schema, path, depth)
        if isinstance(value, Mapping):
            self._object(value, schema, path, depth)
        elif isinstance(value, (list, tuple)):
            self._array(value, schema, path, depth)
        elif isinstance(value, str):
            self._string(value, schema, path)
        elif _number(value):
            self._bounds(value, schema, path)

    def _type(self, value: Any, schema: Mapping[str, Any], path: str) -> bool:
        wanted = schema.get("type")
        names = [wanted] if isinstance(wanted, str) else wanted
        if not isinstance(names, list) or not names:
            return True
        if any(_is(value, str(n)) for n in names):
            return True
        self.fail(path, f"expected {' or '.join(map(str, names))}, got {_kind(value)} "
                        f"{_show(value)}")
        return False

    def _combinators(self, value: Any, schema: Mapping[str, Any], path: str,
                     depth: int) -> None:
        for sub in schema.get("allOf", []) if isinstance(schema.get("allOf"), list) else []:
            self.check(value, sub, path, depth + 1)
        alternatives = schema.get("anyOf")
        if isinstance(alternatives, list) and alternatives \
                and not any(self.valid(value, s, depth + 1) for s in alternatives):
            self.fail(path, f"{_show(value)} matches none of the {len(alternatives)} "
                            "allowed forms (anyOf)")
        alternatives = schema.get("oneOf")
        if isinstance(alternatives, list) and alternatives:
            matched = sum(self.valid(value, s, depth + 1) for s in alternatives)
            if matched != 1:
                self.fail(path, f"{_show(value)} matches {matched} of the "
                                f"{len(alternatives)} forms where exactly one must match "
                                "(oneOf)")
        if "not" in schema and self.valid(value, schema["not"], depth + 1):
            self.fail(path, f"{_show(value)} matches a form that is not allowed (not)")

    def _object(self, value: Mapping[str, Any], schema: Mapping[str, Any], path: str,
                depth: int) -> None:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        required = schema.get("required")
        for name in required if isinstance(required, list) else []:
            if isinstance(name, str) and name not in value:
                self.fail(path, f"missing required property {name!r}")
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                self.check(item, properties[key], _where(path, key), depth + 1)
            elif extra is False:
                known = ", ".join(repr(k) for k in properties) or "none"
                self.fail(path, f"unknown property {key!r} (known: {known})")
            elif isinstance(extra, Mapping):
                self.check(item, extra, _where(path, key), depth + 1)
        low, high = schema.get("minProperties"), schema.get("maxProperties")
        if isinstance(low, int) and len(value) < low:
            self.fail(path, f"needs at least {low} properties, got {len(value)}")
        if isinstance(high, int) and len(value) > high:
            self.fail(path, f"allows at most {high} properties, got {len(value)}")

    def _array(self, value: Sequence[Any], schema: Mapping[str, Any], path: str,
               depth: int) -> None:
        prefix = schema.get("prefixItems")
        items = schema.get("items")
        if isinstance(items, list):  # draft 4 tuple form
            prefix, items = items, schema.get("additionalItems")
        prefix = prefix if isinstance(prefix, list) else []
        for index, item in enumerate(value):
            where = f"{path}[{index}]"
            if index < len(prefix):
                self.check(item, prefix[index], where, depth + 1)
            elif items is not None:
                self.check(item, items, where, depth + 1)
        low, high = schema.get("minItems"), schema.get("maxItems")
        if isinstance(low, int) and len(value) < low:
            self.fail(path, f"needs at least {low} items, got {len(value)}")
        if isinstance(high, int) and len(value) > high:
            self.fail(path, f"allows at most {high} items, got {len(value)}")
        if schema.get("uniqueItems") is True:
            repeated = _repeated(value)
            if repeated:
                self.fail(path, f"items must be unique; {_show(repeated[0])} repeats")

    def _string(self, value: str, schema: Mapping[str, Any], path: str) -> None:
        low, high = schema.get("minLength"), schema.get("maxLength")
        if isinstance(low, int) and len(value) < low:
            self.fail(path, f"needs at least {low} characters, got {len(value)}")
        if isinstance(high, int) and len(value) > high:
            self.fail(path, f"allows at most {high} characters, got {len(value)}")
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            try:
                matched = re.search(pattern, value) is not None
            except re.error:
                return  # a pattern Python cannot read is not the model's fault
            if not matched:
                self.fail(path, f"{_show(value)} does not match the pattern {pattern!r}")

    def _bounds(self, value: float, schema: Mapping[str, Any], path: str) -> None:
        def limit(key: str) -> float | None:
            found = schema.get(key)
            return found if _number(found) else None

        low, high = limit("minimum"), limit("maximum")
        low_open, high_open = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        if low_open is True:  # draft 4: a flag on minimum
            low_open, low = low, None
        if high_open is True:
            high_open, high = high, None
        low_open = low_open if _number(low_open) else None
        high_open = high_open if _number(high_open) else None
        bounded = (low, high, low_open, high_open) != (None, None, None, None)
        if bounded and not math.isfinite(value):
            self.fail(path, f"must be a finite number, got {_show(value)}")
            return
        if low is not None and value < low:
            self.fail(path, f"must be >= {_show(low)}, got {_show(value)}")
        if high is not None and value > high:
            self.fail(path, f"must be <= {_show(high)}, got {_show(value)}")
        if low_open is not None and value <= low_open:
            self.fail(path, f"must be > {_show(low_open)}, got {_show(value)}")
        if high_open is not None and value >= high_open:
            self.fail(path, f"must be < {_show(high_open)}, got {_show(value)}")
        step = limit("multipleOf")
        if step is not None and step > 0 and math.isfinite(value) and math.isfinite(step) \
                and _exact(value) % _exact(step) != 0:
            self.fail(path, f"must be a multiple of {_show(step)}, got {_show(value)}")
