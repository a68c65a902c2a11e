"""String ``format`` s in constrained JSON: what the automaton writes parses as the format
under jsonschema's format checker, Pydantic's type for it and Python's own parser; what
those libraries write in canonical form is accepted; formats stay annotations where the
automaton does not know them."""

from __future__ import annotations

import datetime
import ipaddress
import json
import random
import uuid
from typing import Any

import jsonschema
import pytest
from _constraints import FORMATS as CHECKER
from _constraints import accepts, model_walks, walk
from aieng_transformers import SchemaError
from aieng_transformers._jsonformats import FORMATS
from aieng_transformers._jsonschema import JsonMachine
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import (
    AnyUrl,
    AwareDatetime,
    BaseModel,
    EmailStr,
    HttpUrl,
    IPvAnyAddress,
    TypeAdapter,
)

#: Per format: the Pydantic type that emits it, and Python's own check (raises if invalid).
PARSERS: dict[str, tuple[Any, Any]] = {
    "date": (datetime.date, datetime.date.fromisoformat),
    "date-time": (AwareDatetime, datetime.datetime.fromisoformat),
    "time": (datetime.time, datetime.time.fromisoformat),
    "duration": (datetime.timedelta, None),
    "uuid": (uuid.UUID, uuid.UUID),
    "ipv4": (ipaddress.IPv4Address, ipaddress.IPv4Address),
    "ipv6": (ipaddress.IPv6Address, ipaddress.IPv6Address),
    "ipvanyaddress": (IPvAnyAddress, ipaddress.ip_address),
    "hostname": (None, None),
    "email": (EmailStr, None),
    "uri": (HttpUrl, None),
    **{f"uuid{v}": (None, uuid.UUID) for v in range(1, 9)},
}


def test_every_enforced_format_has_its_parsers() -> None:
    assert set(PARSERS) == set(FORMATS)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_what_the_automaton_writes_parses(name: str) -> None:
    """Random walks of each format's automaton (in a budget of its shortest plus up to 40
    characters) give strings jsonschema's format checker, Pydantic's type and Python's
    parser all accept — and for ``uuidN`` a UUID of version N."""
    schema = {"type": "string", "format": name}
    machine = JsonMachine(schema)
    kind, parse = PARSERS[name]
    adapter = TypeAdapter(kind) if kind is not None else None
    checked = {"type": "string", "format": _checked(name)} if _checked(name) else {}
    rng = random.Random(name)
    for _ in range(150):
        text = walk(machine, rng, rng.randint(0, 40))
        value = json.loads(text)
        jsonschema.validate(value, checked, format_checker=CHECKER)
        if adapter is not None:
            adapter.validate_json(text)
        if parse is not None:
            parse(value)
        if name[4:].isdigit():
            assert uuid.UUID(value).version == int(name[4:])


def _checked(name: str) -> str | None:
    """The format jsonschema checks for ``name``: ``uuidN`` is a ``uuid``;
    ``ipvanyaddress`` is Pydantic's own (Pydantic and Python check it)."""
    return "uuid" if name.startswith("uuid") else None if name == "ipvanyaddress" else name


@pytest.mark.parametrize("name", sorted({_checked(n) for n in FORMATS} - {None}))
def test_the_format_is_checked_by_jsonschema(name: str | None) -> None:
    """Each format is one jsonschema really checks here (its format packages are
    installed), so the walks above test something: a plain word fails it."""
    checked = {"type": "string", "format": name}
    assert not jsonschema.Draft202012Validator(checked, format_checker=CHECKER).is_valid(
        "not a value")


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_the_shortest_value(name: str) -> None:
    """What ``min_chars`` promises is a value the automaton writes: no format needs more
    characters than its shortest text."""
    machine = JsonMachine({"type": "string", "format": name})
    shortest = {"date": "1000-01-01", "date-time": "1000-01-01T00:00:00Z",
                "time": "00:00:00Z", "duration": "P0D", "ipv4": "0.0.0.0", "ipv6": "::",
                "ipvanyaddress": "::", "hostname": "a", "email": "a@a.aa",
                "uri": "http://a"}.get(name, str(uuid.UUID(int=0)))
    assert machine.min_chars(machine.start()) == len(json.dumps(shortest))
    if not name[4:].isdigit():
        assert accepts(machine, json.dumps(shortest))


_TIMEZONES = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(
    lambda minutes: datetime.timezone(datetime.timedelta(minutes=minutes)))
_DATETIMES = st.datetimes(min_value=datetime.datetime(1000, 1, 1),
                          timezones=_TIMEZONES | st.just(datetime.UTC))


@settings(max_examples=150, deadline=None)
@given(st.one_of(
    st.tuples(st.just("date-time"), _DATETIMES.map(lambda d: d.isoformat())),
    st.tuples(st.just("date-time"), _DATETIMES.map(
        lambda d: json.loads(TypeAdapter(datetime.datetime).dump_json(d)))),
    st.tuples(st.just("date"), st.dates(min_value=datetime.date(1000, 1, 1)).map(
        datetime.date.isoformat)),
    st.tuples(st.just("time"), st.times(timezones=_TIMEZONES).map(
        lambda t: t.isoformat())),
    st.tuples(st.just("duration"), st.timedeltas(
        min_value=datetime.timedelta(0), max_value=datetime.timedelta(days=999_999)).map(
        lambda d: json.loads(TypeAdapter(datetime.timedelta).dump_json(d)))),
    st.tuples(st.just("uuid"), st.uuids().map(str)),
    st.tuples(st.just("uuid4"), st.uuids(version=4).map(str)),
    st.tuples(st.just("ipv4"), st.ip_addresses(v=4).map(str)),
    st.tuples(st.just("ipv6"), st.ip_addresses(v=6).map(str)
              .filter(lambda a: "." not in a)),  # no embedded IPv4 (see the module)
    st.tuples(st.just("ipvanyaddress"), st.ip_addresses().map(str)
              .filter(lambda a: "." not in a or ":" not in a)),
))
def test_canonical_values_are_accepted(case: tuple[str, str]) -> None:
    """What Python's ``isoformat()`` / ``str()`` and Pydantic's serializer write for these
    types (years from 1000, offsets in whole minutes, non-negative durations under a
    million days) is accepted: the conservative patterns cut off rare spellings, not the
    usual ones."""
    name, value = case
    machine = JsonMachine({"type": "string", "format": name})
    assert accepts(machine, json.dumps(value)), value


@pytest.mark.parametrize(("name", "value"), [
    ("date", "2023-02-29"), ("date", "1900-02-29"), ("date", "2023-04-31"),
    ("date", "2023-13-01"), ("date-time", "2024-01-01T24:00:00Z"),
    ("date-time", "2024-01-01T12:00:00"), ("date-time", "2024-01-01T23:59:60Z"),
    ("time", "12:00"), ("uuid4", "12345678-1234-1234-8234-123456789abc"),
    ("uuid4", "12345678-1234-4234-7234-123456789abc"), ("ipv4", "1.2.3.256"),
    ("ipv4", "01.2.3.4"), ("ipv6", "1::2::3"), ("ipv6", "12345::"),
    ("email", "a@b.test"), ("email", "a@b.local"), ("email", "a..b@c.com"),
    ("uri", "ftp://a.com"), ("uri", "http://1.2"),
    ("duration", "P"), ("duration", "PT"), ("duration", "P1M"), ("duration", "P1W"),
])
def test_invalid_or_unsafe_values_are_refused(name: str, value: str) -> None:
    assert not accepts(JsonMachine({"type": "string", "format": name}), json.dumps(value))


@pytest.mark.parametrize(("value", "leap"), [
    ("2024", True), ("2000", True), ("1600", True), ("1900", False), ("2023", False),
    ("2100", False), ("1004", True), ("9996", True)])
def test_february_29th_in_leap_years_only(value: str, leap: bool) -> None:
    machine = JsonMachine({"type": "string", "format": "date"})
    assert accepts(machine, f'"{value}-02-29"') is leap


class Record(BaseModel):
    """A model of the formatted field types Pydantic users reach for."""

    when: AwareDatetime
    day: datetime.date
    at: datetime.time
    took: datetime.timedelta
    id: uuid.UUID
    address: IPvAnyAddress
    home: AnyUrl
    site: HttpUrl | None = None
    contact: EmailStr


def test_a_model_of_formatted_fields() -> None:
    """Every document the automaton writes for the model validates against the schema
    with formats checked and parses as the model (which refuses a bad date, address, URL
    or email)."""
    *_, records = model_walks(Record, seed=11, slack=60, count=60)
    assert len({r.id for r in records}) > 1  # the walks really vary


def test_a_model_written_by_pydantic_is_accepted() -> None:
    record = Record(when=datetime.datetime(2024, 5, 1, 9, 30, tzinfo=datetime.UTC),
                    day=datetime.date(2024, 2, 29),
                    at=datetime.time(7, 5, 1, 250, tzinfo=datetime.UTC),
                    took=datetime.timedelta(days=2, hours=3, seconds=1.5),
                    id=uuid.UUID(int=12345), address=ipaddress.ip_address("2001:db8::1"),
                    home=AnyUrl("https://example.com/a/b?x=1#top"),
                    contact="ada.lovelace@example.org")
    machine = JsonMachine(Record.model_json_schema())
    text = record.model_dump_json()
    assert accepts(machine, text), text
    # RFC 3339's full-time needs an offset: a naive time, as Pydantic writes it, is not one
    naive = record.model_copy(update={"at": datetime.time(7, 5)}).model_dump_json()
    assert not accepts(machine, naive)


def test_unions_of_formats_and_patterns() -> None:
    """``anyOf`` of strings with formats or patterns (Pydantic's ``datetime | date``,
    ``UUID | EmailStr``, two constrained strings, ``Literal[...] | date``) is one string
    of either: every document parses as the model, and each alternative's values are
    accepted."""
    from typing import Annotated, Literal

    from pydantic import StringConstraints

    class Union(BaseModel):
        when: datetime.datetime | datetime.date
        ref: uuid.UUID | EmailStr
        code: Annotated[str, StringConstraints(pattern="^A[0-9]$")] | Annotated[
            str, StringConstraints(pattern="^B")]
        later: datetime.date | uuid.UUID | None = None
        until: Literal["never", 'a "b"', 0] | datetime.date = "never"

    machine, *_ = model_walks(Union, seed=12, slack=40, count=40)
    base = '{"code":"A1","ref":"a@b.co","when":"2024-05-01","until":'
    for until in ('"never"', '"a \\"b\\""', "0", '"2030-01-01"'):
        assert accepts(machine, base + until + "}"), until
    assert not accepts(machine, base + '"nev"}')
    head = '{"code":"A1","ref":"a@b.co","when":'
    for when in ('"2024-05-01"', '"2024-05-01T10:00:00Z"'):
        assert accepts(machine, head + when + "}")
    assert not accepts(machine, head + '"2024-05-01T10:00"}')
    assert accepts(machine, f'{{"code":"Bxyz","ref":"{uuid.UUID(int=3)}","when":"2024-05-01"}}')
    assert not accepts(machine, '{"code":"C","ref":"a@b.co","when":"2024-05-01"}')
    # lengths differ: no one alternation, the two strings are followed side by side
    apart = JsonMachine({"anyOf": [{"type": "string", "format": "date", "minLength": 10},
                                   {"type": "string", "format": "uuid"}]})
    assert accepts(apart, '"2024-05-01"') and accepts(apart, f'"{uuid.UUID(int=3)}"')
    assert not accepts(apart, '"2024-05-01T10:00:00Z"')
    with pytest.raises(SchemaError, match="same character"):  # oneOf: still refused
        JsonMachine({"oneOf": [{"type": "string", "format": "date", "maxLength": 10},
                               {"type": "string", "format": "uuid"}]})


def test_other_formats_stay_annotations() -> None:
    """A format the automaton does not know (``color``, Pydantic's ``path`` or
    ``password``) is an annotation, as JSON Schema 2020-12 has it: any string."""
    for name in ("color", "path", "password", "binary", "base64"):
        assert accepts(JsonMachine({"type": "string", "format": name}), '"any text"')


def test_pattern_beside_format_is_enforced_and_the_format_is_not() -> None:
    machine = JsonMachine({"type": "string", "pattern": "^x", "format": "date"})
    assert accepts(machine, '"xyz"')
    assert not accepts(machine, '"2024-01-01"')


def test_format_with_lengths_and_enum() -> None:
    short = JsonMachine({"type": "string", "format": "hostname", "maxLength": 3})
    assert accepts(short, '"abc"') and not accepts(short, '"abcd"')
    dates = JsonMachine({"type": "string", "format": "date", "enum": ["2024-01-01", "soon"]})
    assert accepts(dates, '"2024-01-01"') and not accepts(dates, '"soon"')
    with pytest.raises(SchemaError, match="no 'uuid' string"):
        JsonMachine({"type": "string", "format": "uuid", "maxLength": 10})
    with pytest.raises(SchemaError, match="format: must be a string"):
        JsonMachine({"type": "string", "format": 3})
