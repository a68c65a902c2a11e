"""The JSON automaton on big schemas: an ``enum`` of thousands of values, objects of
hundreds of properties, deep nesting. Growth is shown by counting the Python calls a step
makes (``sys.setprofile`` events), never by timing."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import pytest
from aieng_transformers._constrain import JsonConstraint
from aieng_transformers._jsoncompile import MAX_SCHEMA_DEPTH, SchemaError
from aieng_transformers._prefixes import Prefixes
from hypothesis import given
from hypothesis import strategies as st

#: What the first-character mask asks at a new state: one character each.
PRINTABLE = [chr(c) for c in range(32, 127)]


def calls(work: Callable[[], Any]) -> int:
    """The Python and C calls ``work`` makes (profile events), a count of its steps."""
    count = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(profile)
    try:
        work()
    finally:
        sys.setprofile(None)
    return count


def fed(constraint: JsonConstraint, text: str) -> Any:
    state = constraint.start()
    for char in text:
        state = constraint.feed(state, char)
        assert state is not None, (text, char)
    return state


def mask_work(schema: dict[str, Any], prefix: str) -> tuple[int, list[str]]:
    """The calls of one first-character mask at the state after ``prefix`` (as the guide
    asks it: one character at a time), and the characters it allows."""
    constraint = JsonConstraint(schema)
    state = fed(constraint, prefix)
    constraint.min_chars(state)
    allowed: list[str] = []
    work = calls(lambda: allowed.extend(c for c in PRINTABLE
                                        if constraint.feed(state, c) is not None))
    return work, allowed


def test_a_string_enum_step_does_not_scan_every_value() -> None:
    """Each character of an ``enum`` string is checked against the values starting with
    the text so far, found by bisection: a mask at a state costs about the same for 400
    or 3,200 values (a scan of them all cost ~0.7 s a token at 10,000 on SmolLM2)."""
    def schema(n: int) -> dict[str, Any]:
        return {"type": "object", "properties": {"a": {"enum": [f"v-{i}" for i in range(n)]}},
                "required": ["a"]}

    small, allowed = mask_work(schema(400), '{"a":"v-1')
    large, allowed_large = mask_work(schema(3200), '{"a":"v-1')
    assert allowed == sorted('"0123456789') == sorted(allowed_large)
    assert large < 1.5 * small, (small, large)
    constraint = JsonConstraint(schema(3200))
    assert constraint.accepting(fed(constraint, '{"a":"v-3199"}'))
    assert constraint.feed(fed(constraint, '{"a":"v-3199'), "9") is None


def test_an_integer_enum_step_does_not_scan_every_value() -> None:
    """The same for an ``enum`` of numbers (a set of literals; ~4 s a token at 10,000)."""
    small, allowed = mask_work({"type": "array", "items": {"enum": list(range(400))}}, "[12")
    large, allowed_large = mask_work({"type": "array", "items": {"enum": list(range(3200))}},
                                     "[12")
    assert allowed == sorted(",]0123456789") and sorted(allowed_large) == allowed
    assert large < 1.5 * small, (small, large)
    constraint = JsonConstraint({"type": "array", "items": {"enum": list(range(3200))}})
    assert constraint.accepting(fed(constraint, "[3199,0,17]"))
    assert constraint.feed(fed(constraint, "[319"), "9") is not None
    assert constraint.feed(fed(constraint, "[3199"), "0") is None


def test_a_key_step_does_not_scan_every_property() -> None:
    """An object of many required properties, half of them written: a mask inside the
    next key costs about the same for 100 or 800 properties."""
    def case(n: int) -> tuple[int, list[str]]:
        names = [f"p{i}" for i in range(n)]
        schema = {"type": "object", "properties": {k: {"type": "integer"} for k in names},
                  "required": names, "additionalProperties": False}
        written = json.dumps({k: 1 for k in names[: n // 2]}, separators=(",", ":"))
        return mask_work(schema, written[:-1] + ',"p7')

    small, allowed = case(100)
    large, allowed_large = case(800)
    assert allowed == list("0123456789") == allowed_large  # "p7" itself is written
    assert large < 1.5 * small, (small, large)


def test_a_full_object_of_many_properties_is_written_and_closed() -> None:
    """Every key once, in any order; a key written twice or unknown is refused."""
    names = [f"key{i}" for i in range(300)]
    schema = {"type": "object", "properties": {k: {"type": "integer"} for k in names},
              "required": names[::2], "additionalProperties": False}
    constraint = JsonConstraint(schema)
    document = json.dumps({k: 1 for k in reversed(names)}, separators=(",", ":"))
    state = fed(constraint, document)
    assert constraint.accepting(state) and constraint.complete(state)
    assert constraint.feed(fed(constraint, '{"key7":1,'), '"key7"') is None
    assert constraint.feed(fed(constraint, '{"key7":1,'), '"key300"') is None
    missing = fed(constraint, json.dumps({k: 1 for k in names[1:]}, separators=(",", ":"))[:-1])
    assert constraint.feed(missing, "}") is None  # key0, required, not written


@given(st.lists(st.text("ab\u00e9\U0001f600", max_size=4), max_size=12),
       st.text("ab\u00e9\U0001f600", max_size=3), st.data())
def test_prefix_search_agrees_with_a_scan(strings: list[str], prefix: str,
                                          data: st.DataObject) -> None:
    """:class:`Prefixes` answers what a scan of the strings answers."""
    index = Prefixes(strings)
    scan = sorted({s for s in strings if s.startswith(prefix)})
    assert list(index.starting(prefix)) == scan
    excluded = set(data.draw(st.lists(st.sampled_from([*strings, "zz"]), max_size=8)))
    assert index.any_starting(prefix, excluded) == any(s not in excluded for s in scan)
    assert (prefix in index) == (prefix in strings)
    assert index.heads == {s[0] for s in strings if s}


def nested(levels: int) -> dict[str, Any]:
    """Objects, one-item arrays and optional values in turn, ``levels`` deep."""
    schema: dict[str, Any] = {"type": "integer"}
    for level in range(levels):
        schema = [{"type": "object", "properties": {"a": schema}, "required": ["a"],
                   "additionalProperties": False},
                  {"type": "array", "items": schema, "minItems": 1, "maxItems": 1},
                  {"anyOf": [schema, {"type": "null"}]}][level % 3]
    return schema


def test_fifty_levels_of_nesting_compile_and_close() -> None:
    """A schema 50 levels deep compiles, and a document of it is written and closed."""
    constraint = JsonConstraint(nested(51))
    document: Any = 7
    for level in range(51):
        document = [{"a": document}, [document], document][level % 3]
    state = fed(constraint, json.dumps(document, separators=(",", ":")))
    assert constraint.accepting(state) and constraint.complete(state)


@pytest.mark.parametrize("levels", [MAX_SCHEMA_DEPTH + 1, 400, 5_000])
def test_a_schema_past_the_depth_limit_names_it(levels: int) -> None:
    """A schema nesting past ``MAX_SCHEMA_DEPTH`` is a ``SchemaError`` naming the limit
    (it was a ``RecursionError`` from deep in the compiler at ~330 levels of arrays)."""
    with pytest.raises(SchemaError, match=f"more than {MAX_SCHEMA_DEPTH} levels deep"):
        JsonConstraint(nested(levels))
    definitions = {f"d{i}": {"type": "array", "items": {"$ref": f"#/$defs/d{i + 1}"}}
                   for i in range(levels)}
    definitions[f"d{levels}"] = {"type": "integer"}
    with pytest.raises(SchemaError, match="MAX_SCHEMA_DEPTH"):
        JsonConstraint({"$ref": "#/$defs/d0", "$defs": definitions})


def test_an_enum_of_deeply_nested_values_is_a_schema_error() -> None:
    """Deep data inside ``enum`` is refused as a ``SchemaError`` too."""
    value: Any = 1
    for _ in range(5_000):
        value = [value]
    with pytest.raises(SchemaError, match="too deep"):
        JsonConstraint({"enum": [value]})


def test_documents_of_a_recursive_schema_nest_past_the_limit() -> None:
    """A recursive ``$ref`` is no nesting of the schema: its documents nest deeper."""
    constraint = JsonConstraint({"type": "array", "items": {"$ref": "#"}})
    depth = 3 * MAX_SCHEMA_DEPTH
    state = fed(constraint, "[" * depth + "]" * depth)
    assert constraint.accepting(state)
