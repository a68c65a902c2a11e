"""Real Pydantic models through the JSON-schema automaton: every document it writes is
one the model's own validation accepts (enums, nested models, tagged and key-tagged
unions, patterns, recursion, sets)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from _constraints import accepts, model_walks
from aieng_transformers import SchemaError
from aieng_transformers._jsonschema import JsonMachine


def test_pydantic_models_validate_what_the_automaton_writes() -> None:
    """The schema a real Pydantic model writes (``model_json_schema()``: an ``Enum`` and a
    nested model in ``$defs``, ``Optional`` fields, ``Field`` bounds and lengths,
    ``Literal``, ``dict[str, int]``, ``Any``, a tuple) compiles, and every random document the
    automaton lets through is accepted by the model's own validation."""
    import enum
    from typing import Literal

    from pydantic import BaseModel, Field

    class Kind(str, enum.Enum):
        cat = "cat"
        dog = "dog"

    class Pet(BaseModel):
        kind: Kind
        name: str = Field(min_length=1, max_length=12)
        age: int | None = Field(default=None, ge=0, le=40)

    class Review(BaseModel):
        title: str
        rating: int = Field(ge=1, le=5)
        score: float = Field(gt=0, lt=1)
        pets: list[Pet] = Field(max_length=2)
        status: Literal["ok", "late"]
        tags: dict[str, int]
        note: str | None = None
        extra: Any = None
        where: tuple[int, str] = (0, "")

    assert "prefixItems" in json.dumps(Review.model_json_schema())
    model_walks(Review, seed=7, slack=40, count=60)


def test_discriminated_unions() -> None:
    """Object alternatives with a discriminator (a key each requires, with string values
    no two share — Pydantic's ``Cat | Dog`` with ``Literal`` tags, with or without
    ``Field(discriminator=...)``) are supported: the tag is written first and picks the
    object; Pydantic validates every document. In ``oneOf`` (where a document must match
    exactly one) they are refused without one, naming what is missing; in ``anyOf``
    they are followed side by side (``test_overlapping_alternatives``)."""
    from typing import Literal

    from pydantic import BaseModel, Field

    class Cat(BaseModel):
        pet_type: Literal["cat"]
        meows: int = Field(ge=0)

    class Dog(BaseModel):
        pet_type: Literal["dog", "puppy"]
        barks: float
        name: str | None = None

    class Owner(BaseModel):
        pet: Cat | Dog = Field(discriminator="pet_type")
        others: list[Cat | Dog]

    assert "discriminator" in json.dumps(Owner.model_json_schema())
    machine, _, _ = model_walks(Owner, seed=5, slack=40)
    assert accepts(machine, '{"pet":{"pet_type": "puppy","barks":1.5},"others":[]}')
    assert not accepts(machine, '{"pet":{"barks":1.5,"pet_type":"dog"},"others":[]}')
    assert machine.feed(machine.start(), '{"pet":{"pet_type":"cat","barks"') is None
    assert machine.feed(machine.start(), '{"pet":{"pet_type":"cow"') is None
    untagged = {"oneOf": [{"type": "object", "properties": {"a": {"type": "string"}}},
                          {"type": "object", "properties": {"b": {"type": "string"}}}]}
    with pytest.raises(SchemaError, match="discriminator.*nor does each require a key"):
        JsonMachine(untagged)  # neither requires its key: nothing tells them apart
    with pytest.raises(SchemaError, match="'kind' is not"):
        JsonMachine({**untagged, "discriminator": {"propertyName": "kind"}})


def test_patterns_in_json_strings() -> None:
    """``pattern`` (Pydantic's ``Field(pattern=...)``) is searched in the string's decoded
    characters, as JSON Schema has it, with its lengths folded in: characters that leave
    no finishable match are refused at once, escapes count as the characters they stand
    for, and the characters still needed are exact."""
    from pydantic import BaseModel, Field

    class Contact(BaseModel):
        phone: str = Field(pattern=r"^\d{3}-\d{4}$")
        code: str = Field(pattern=r"[A-Z]{2}", min_length=3, max_length=5)
        handle: str | None = Field(default=None, pattern=r"^@\w+$")

    machine, _, _ = model_walks(Contact, seed=3, slack=12)
    shortest = '{"phone":"000-0000","code":"AAA"}'
    assert machine.min_chars(machine.start()) == len(shortest)
    assert accepts(machine, shortest)
    assert machine.feed(machine.start(), '{"phone":"12a') is None
    assert machine.feed(machine.start(), '{"phone":"123-45678') is None
    assert machine.feed(machine.start(), '{"code":"abcd') is None  # no room left for [A-Z]{2}
    assert machine.feed(machine.start(), '{"code":"abc') is not None  # "abcXY" still fits
    assert machine.feed(machine.start(), '{"handle":"@') is not None
    escaped = JsonMachine({"type": "string", "pattern": '^"\\\\\n$'})  # quote, backslash, newline
    assert escaped.min_chars(escaped.start()) == len('"\\"\\\\\\n"')
    assert accepts(escaped, '"\\"\\\\\\n"')
    assert escaped.feed(escaped.start(), '"\\u0022') is None  # no \u escapes here
    assert escaped.feed(escaped.start(), '"\\n') is None
    values = JsonMachine({"type": "string", "enum": ["ab", "b1", "c"], "pattern": r"\d"})
    assert accepts(values, '"b1"') and not accepts(values, '"ab"')
    with pytest.raises(SchemaError, match="matches 'pattern'"):
        JsonMachine({"enum": ["a"], "pattern": "b"})
    with pytest.raises(SchemaError, match=r"#/properties/p/pattern: .*lookaround"):
        JsonMachine({"properties": {"p": {"type": "string", "pattern": "(?!a)"}}})
    with pytest.raises(SchemaError, match="no text"):
        JsonMachine({"type": "string", "pattern": "^abc$", "maxLength": 2})


def test_recursive_models() -> None:
    """A self-referencing Pydantic model (a comment with replies, a thread with an
    optional next thread: ``$ref`` back into ``$defs``) compiles; every document a random
    walk writes — nesting as deep as the budget lets it — validates with the model's own
    validation; the shortest document is exact (a fixed point over the recursion)."""
    from pydantic import BaseModel, Field

    class Comment(BaseModel):
        text: str = Field(max_length=6)
        replies: list[Comment] = Field(default_factory=list, max_length=2)

    class Thread(BaseModel):
        head: Comment
        next: Thread | None = None

    machine, texts, _ = model_walks(Thread, seed=11, slack=80)
    assert max(text.count("{") for text in texts) >= 3  # it does nest
    assert machine.min_chars(machine.start()) == len('{"head":{"text":""}}')
    assert accepts(machine, '{"head":{"text":"a","replies":[{"text":"b","replies":[]}]},'
                            '"next":{"head":{"text":""},"next":null}}')
    assert machine.feed(machine.start(), '{"head":{"text":"a","replies":[{"text":1') is None
    # the cheapest way out of a recursion counts the recursion's own cheapest document
    nested = JsonMachine({"$defs": {"A": {"type": "array", "minItems": 1, "items": {
        "anyOf": [{"$ref": "#/$defs/A"}, {"type": "null"}]}}}, "$ref": "#/$defs/A"})
    state = nested.feed(nested.start(), "[[[")
    assert state is not None and nested.min_chars(state) == len("null]]]")
    assert nested.min_chars(nested.start()) == len("[null]")
    with pytest.raises(SchemaError, match="first character"):
        JsonMachine({"$defs": {"A": {"anyOf": [{"$ref": "#/$defs/A"}, {"type": "null"}]}},
                     "$ref": "#/$defs/A"})


def test_arrays_of_distinct_items() -> None:
    """``uniqueItems`` (Pydantic's ``set[X]``) over free strings, free integers, enums,
    booleans / null and literal sets: an item equal to one the array has (as JSON Schema
    compares: decoded strings, ``1`` and ``1.0`` one number) is refused as it closes, a
    prefix that can only repeat one at once; the characters still needed count the
    cheapest *distinct* items, so walks in that budget end in documents Pydantic
    validates. Items outside those kinds are refused before generating."""
    import enum
    from typing import Literal

    from pydantic import BaseModel, Field

    class Color(str, enum.Enum):
        red = "red"
        green = "green"
        blue = "blue"

    class Bag(BaseModel):
        tags: set[str] = Field(min_length=3)
        nums: frozenset[int] = Field(min_length=12, max_length=14)
        colors: set[Color] = Field(min_length=2)
        flags: set[bool | None]
        odd: set[Literal["a", 1, 1.0, 2]]

    machine, _, _ = model_walks(Bag, seed=2, slack=30)
    # ten one-digit integers, then two of two characters; "" and two one-character strings
    shortest = ('{"tags":["","a","b"],"nums":[0,1,2,3,4,5,6,7,8,9,-1,-2],'
                '"colors":["red","blue"],"flags":[],"odd":[]}')
    assert machine.min_chars(machine.start()) == len(shortest)
    assert accepts(machine, shortest)
    for repeated in ('{"tags":["a","a"', '{"tags":["a","\\u0061"', '{"nums":[0,-0',
                     '{"nums":[0,0', '{"colors":["red","red"', '{"flags":[true,true',
                     '{"odd":[1,1.0'):
        assert machine.feed(machine.start(), repeated) is None, repeated
    assert machine.feed(machine.start(), '{"nums":[1,1') is not None  # may become 10…19
    assert machine.feed(machine.start(), '{"flags":[true,false,null,') is None  # none left
    state = machine.feed(machine.start(), '{"colors":["red","')
    assert state is not None
    rest = ',"tags":["","a","b"],"nums":[0,1,2,3,4,5,6,7,8,9,-1,-2],"flags":[],"odd":[]}'
    assert machine.min_chars(state) == len('blue"]') + len(rest)  # "red" is taken
    for schema_, message in (
            ({"type": "array", "items": {"type": "object"}, "uniqueItems": True},
             "supported for items"),
            ({"type": "array", "items": {"type": "boolean"}, "uniqueItems": True,
              "minItems": 3}, "distinct items"),
            ({"type": "array", "prefixItems": [{}], "uniqueItems": True}, "prefixItems"),
            ({"type": "array", "items": {}, "uniqueItems": "yes"}, "true or false")):
        with pytest.raises(SchemaError, match=message):
            JsonMachine(schema_)


def test_sets_of_patterned_formatted_and_bounded_strings() -> None:
    """``uniqueItems`` over strings with a ``pattern``, a ``format`` or lengths
    (``set[UUID]``, ``frozenset[date]``, ``set[constr(...)]``): the automaton of the
    strings lists their texts cheapest first, so a repeat is refused as soon as a prefix
    can only become one the set has, and the characters still needed are exact."""
    import datetime
    import ipaddress
    import uuid
    from typing import Annotated

    from pydantic import BaseModel, Field, StringConstraints

    class Ids(BaseModel):
        ids: set[uuid.UUID] = Field(min_length=2)
        days: frozenset[datetime.date] = Field(min_length=1, max_length=3)
        codes: set[Annotated[str, StringConstraints(pattern=r"^[A-C][0-9]$")]] = Field(
            min_length=3)
        short: set[Annotated[str, StringConstraints(min_length=1, max_length=2)]] = Field(
            min_length=2)
        hosts: set[ipaddress.IPv4Address]

    machine, _, bags = model_walks(Ids, seed=4, slack=40, count=30)
    assert all(len(b.ids) >= 2 and len(b.codes) >= 3 for b in bags)
    zero = str(uuid.UUID(int=0))
    shortest = (f'{{"ids":["{zero}","{uuid.UUID(int=1)}"],"days":["2024-01-01"],'
                '"codes":["A0","A1","B2"],"short":["a","b"],"hosts":[]}')
    assert machine.min_chars(machine.start()) == len(shortest)
    assert accepts(machine, shortest)
    assert machine.feed(machine.start(), f'{{"ids":["{zero}","{zero[:-1]}') is not None
    assert machine.feed(machine.start(), f'{{"ids":["{zero}","{zero}') is None
    assert machine.feed(machine.start(), '{"codes":["A0","A0') is None
    assert machine.feed(machine.start(), '{"short":["ab","ab"') is None
    state = machine.feed(machine.start(), '{"codes":["A0","')
    assert state is not None
    rest = f',"ids":["{zero}","{zero}"],"days":["2024-01-01"],"short":["a","b"],"hosts":[]}}'
    assert machine.min_chars(state) == len('A1","A2"]') + len(rest)
    # an escape inside a patterned item counts; two texts only, so the second is known
    quoted = JsonMachine({"type": "array", "items": {"type": "string", "pattern": '^["a]$'},
                          "uniqueItems": True, "minItems": 2})
    after = quoted.feed(quoted.start(), '["\\""')
    assert after is not None and quoted.min_chars(after) == len(',"a"]')
    assert quoted.feed(quoted.start(), '["a","a') is None
    assert accepts(quoted, '["a","\\""]') and not accepts(quoted, '["a"]')


def test_sets_of_bounded_integers() -> None:
    """``uniqueItems`` over integers with bounds or ``multipleOf`` (``set[conint(...)]``):
    the integers in range are listed shortest first per interval, so a set that has all
    of them cannot open another item, and the fewest characters count the shortest."""
    from typing import Annotated

    from pydantic import BaseModel, Field

    class Poll(BaseModel):
        ratings: set[Annotated[int, Field(ge=1, le=5)]] = Field(min_length=3)
        debts: frozenset[Annotated[int, Field(ge=-30, lt=0, multiple_of=7)]] = Field(
            min_length=2)

    machine, _, polls = model_walks(Poll, seed=6, slack=20)
    assert all(min(p.ratings) >= 1 and max(p.debts) < 0 for p in polls)
    shortest = '{"ratings":[1,2,3],"debts":[-7,-14]}'
    assert machine.min_chars(machine.start()) == len(shortest) and accepts(machine, shortest)
    full = machine.feed(machine.start(), '{"ratings":[1,2,3,4,5')
    assert full is not None and machine.feed(full, ",") is None  # no rating is left
    assert machine.feed(machine.start(), '{"debts":[-7,-7') is None
    assert machine.feed(machine.start(), '{"debts":[-2') is not None  # -21 or -28
    with pytest.raises(SchemaError, match="distinct items"):
        JsonMachine({"type": "array", "items": {"type": "integer", "minimum": 0,
                                                "maximum": 2}, "uniqueItems": True,
                     "minItems": 4})


def test_sets_of_numbers() -> None:
    """``uniqueItems`` over numbers (``set[float]``, ``frozenset[confloat(...)]``, a
    multiple of 0.5): written in plain decimal, so the numbers of a length are grids of
    decimals, listed per grid; equal values are one item however spelled (``1``,
    ``1.0``, ``1.00``), a prefix that can only repeat one is refused at once, and the
    fewest characters count the cheapest distinct values."""
    from typing import Annotated

    from pydantic import BaseModel, Field

    class Sample(BaseModel):
        readings: set[float]
        shares: frozenset[Annotated[float, Field(ge=0, le=1)]] = Field(min_length=3)
        halves: set[Annotated[float, Field(multiple_of=0.5, gt=0, lt=2)]] = Field(
            min_length=3)
        many: set[float] = Field(min_length=12)

    machine, _, samples = model_walks(Sample, seed=8, slack=30, count=25)
    assert all(len(s.shares) >= 3 and s.halves == {0.5, 1, 1.5} for s in samples)
    assert any(not all(float(v).is_integer() for v in s.shares) for s in samples)
    many = ",".join(map(str, range(12)))
    shortest = f'{{"readings":[],"shares":[0,1,0.1],"halves":[1,0.5,1.5],"many":[{many}]}}'
    assert machine.min_chars(machine.start()) == len(shortest) and accepts(machine, shortest)
    for repeat in ('{"readings":[1,1.0]', '{"readings":[2.50,2.5]', '{"shares":[0,1,1',
                   '{"halves":[0.5,1,1.5,'):
        assert machine.feed(machine.start(), repeat) is None, repeat
    halves_many = f'"halves":[1,0.5,1.5],"many":[{many}]}}'
    for prefix, rest in (('{"shares":[0,1,', '0.1],"readings":[],' + halves_many),  # not 2
                         ('{"readings":[1,2,1', '0],"shares":[0,1,0.1],' + halves_many)):
        state = machine.feed(machine.start(), prefix)
        assert state is not None and accepts(machine, prefix + rest)
        assert machine.min_chars(state) == len(rest), prefix


def test_maps_with_a_key_schema() -> None:
    """Dictionaries whose keys Pydantic constrains (``propertyNames``: ``dict[Enum, X]``,
    ``dict[Literal[...], X]``, ``dict[UUID, X]``, ``dict[date, X]``, keys with lengths;
    ``patternProperties``: keys with a pattern): every key is a value of its schema, no
    key twice (a prefix that can only repeat a key is refused at once), and the fewest
    characters count the cheapest distinct keys."""
    import datetime
    import enum
    import uuid
    from typing import Annotated, Literal

    from pydantic import BaseModel, Field, StringConstraints

    class Color(str, enum.Enum):
        red = "red"
        blue = "blue"

    class Maps(BaseModel):
        by_color: dict[Color, int] = Field(min_length=2)
        by_name: dict[Literal["x", "yy"], bool]
        by_id: dict[uuid.UUID, str]
        by_day: dict[datetime.date, int] = Field(min_length=1)
        short: dict[Annotated[str, StringConstraints(max_length=2)], None]
        scores: dict[Annotated[str, StringConstraints(pattern=r"^[a-z]+$")], int] = Field(
            min_length=3, max_length=4)

    machine, _, maps = model_walks(Maps, seed=5, slack=40, count=30)
    assert all(len(m.scores) >= 3 and len(m.by_color) == 2 for m in maps)
    shortest = ('{"by_color":{"red":0,"blue":0},"by_name":{},"by_id":{},'
                '"by_day":{"2024-01-01":0},"short":{},"scores":{"a":0,"b":0,"c":0}}')
    assert machine.min_chars(machine.start()) == len(shortest)
    assert accepts(machine, shortest)
    one = str(uuid.UUID(int=7))
    assert accepts(machine, shortest.replace('"by_id":{}', f'"by_id":{{"{one}":"a"}}'))
    assert machine.feed(machine.start(), f'{{"by_id":{{"{one}":"a","{one}"') is None
    for bad in ('{"by_color":{"green"', '{"by_color":{"red":1,"red"', '{"by_day":{"2023-02-29',
                '{"scores":{"A', '{"scores":{"a":1,"a"', '{"short":{"abc'):
        assert machine.feed(machine.start(), bad) is None, bad
    state = machine.feed(machine.start(), '{"by_color":{"red":1,"')
    assert state is not None
    rest = (',"by_name":{},"by_id":{},"by_day":{"2024-01-01":0},"short":{},'
            '"scores":{"a":0,"b":0,"c":0}}')
    assert machine.min_chars(state) == len('blue":0}') + len(rest)  # "red" is taken
    for schema, message in (
            ({"type": "object", "patternProperties": {"a": {}, "b": {}}}, "one pattern"),
            ({"type": "object", "properties": {"a": {}}, "propertyNames": {"maxLength": 2}},
             "beside 'properties'"),
            ({"type": "object", "patternProperties": {"a": {}},
              "additionalProperties": {"type": "integer"}}, "alone"),
            ({"type": "object", "propertyNames": {"type": "integer"}}, "strings"),
            ({"type": "object", "propertyNames": {"enum": ["a"]}, "minProperties": 2},
             "distinct keys")):
        with pytest.raises(SchemaError, match=message):
            JsonMachine(schema)


def test_unions_told_apart_by_a_key_of_their_own() -> None:
    """Objects without a discriminator, each requiring a key no other alternative has
    (Pydantic's ``Success | Failure``): that key is written first and picks the object;
    Pydantic validates every document, the characters still needed count the key's
    value, and a shared key cannot come first."""
    from pydantic import BaseModel

    class Success(BaseModel):
        value: int
        note: str | None = None

    class Failure(BaseModel):
        error: str
        code: int = 0
        note: str | None = None

    class Result(BaseModel):
        outcome: Success | Failure
        history: list[Success | Failure] = []

    machine, _, results = model_walks(Result, seed=4, slack=40)
    assert {type(r.outcome).__name__ for r in results} == {"Success", "Failure"}
    assert machine.min_chars(machine.start()) == len('{"outcome":{"value":0}}')
    assert accepts(machine, '{"outcome":{"error":"x","code":2,"note":null}}')
    assert not accepts(machine, '{"outcome":{"code":2,"error":"x"}}')  # its key first
    assert machine.feed(machine.start(), '{"outcome":{"note"') is None  # shared by both
    assert machine.feed(machine.start(), '{"outcome":{"value":1,"error"') is None
    state = machine.feed(machine.start(), '{"outcome":{"err')
    assert state is not None and machine.min_chars(state) == len('or":""}}')


def test_overlapping_alternatives() -> None:
    """``anyOf`` alternatives that start alike — Pydantic's ``A | B`` of objects sharing
    keys without a discriminator, ``list[int] | list[str]``, ``dict[str, int] | A``, two
    bounded integers, strings of different lengths or formats, a tuple beside a list —
    are followed side by side until the text tells them apart: Pydantic validates every
    document the automaton writes, each alternative can be written, a prefix no
    alternative continues is refused at once, and the characters still needed are the
    fewest of any alternative still possible."""
    import datetime

    from pydantic import BaseModel, conint, constr

    class Named(BaseModel):
        name: str
        x: int | None = None

    class Aged(BaseModel):
        name: str
        age: int

    class Mixed(BaseModel):
        who: Named | Aged
        items: list[int] | list[str]
        table: dict[str, int] | Named
        level: conint(le=5) | conint(ge=100)  # type: ignore[valid-type]
        code: constr(max_length=3) | datetime.date  # type: ignore[valid-type]
        pair: tuple[int, int] | list[str]

    machine, _, docs = model_walks(Mixed, seed=9, slack=40, count=80)
    assert {type(d.who).__name__ for d in docs} == {"Named", "Aged"}
    head = '{"who":{"name":"a","age":3},"items":["x"],"table":{"name":"q"},'
    assert accepts(machine, head + '"level":100,"code":"2020-01-02","pair":[1,2]}')
    assert isinstance(Mixed.model_validate_json(
        head + '"level":100,"code":"2020-01-02","pair":[1,2]}').table, Named)
    assert accepts(machine, head + '"level":-3,"code":"","pair":["a"]}')
    assert accepts(machine, '{"who":{"age":3,"name":"a"},"items":[],"table":{"x":1},'
                            '"level":5,"code":"abc","pair":[]}')
    for bad in ('{"who":{"name":"a","x":1,"age":', '{"who":{"age":1}', '{"who":{}',
                '{"items":[1,"', '{"level":7,', '{"level":10,', '{"code":"abcd"',
                '{"pair":[1,2,', '{"table":{"name":"q","x":"'):
        assert machine.feed(machine.start(), bad) is None, bad
    for prefix, rest in (('{"who":{"name":"a"', '}'), ('{"who":{"name":"a","age":', "0}"),
                         ('{"level":1', ""), ('{"level":10', "0"), ('{"code":"2', '"'),
                         ('{"code":"2020', '-01-01"'), ('{"pair":[', "]")):
        state = machine.feed(machine.start(), prefix)
        assert state is not None, prefix
        finish = machine.feed(state, rest)
        assert finish is not None, prefix + rest
        # the cheapest way on: what ``rest`` writes of this value, then the rest of the
        # document, counted from where the value closes
        assert machine.min_chars(state) == len(rest) + machine.min_chars(finish), prefix
    # a number that another alternative could still lengthen closes on the next ","
    state = machine.feed(machine.start(), '{"level":1')
    assert state is not None and machine.feed(state, ',"items":[]') is not None
    assert machine.feed(state, "0,") is None and machine.feed(state, "00,") is not None
    with pytest.raises(SchemaError, match="same character"):  # oneOf: still refused
        JsonMachine({"oneOf": [{"type": "integer", "maximum": 5},
                               {"type": "integer", "minimum": 3}]})
    with pytest.raises(SchemaError, match="first character tells apart"):  # no set of them
        JsonMachine({"type": "array", "uniqueItems": True, "items": {"anyOf": [
            {"type": "integer", "maximum": 5}, {"type": "integer", "minimum": 100}]}})
