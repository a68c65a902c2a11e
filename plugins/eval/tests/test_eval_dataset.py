"""Datasets: validation names the line and the problem; ids are stable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aieng_eval import DatasetError, load_dataset, parse_dataset
from aieng_hookspecs.types import Message, Request
from hypothesis import given
from hypothesis import strategies as st


def parse(*lines: str) -> object:
    """Parse dataset lines as the file ``ds.jsonl``."""
    return parse_dataset("\n".join(lines).encode("utf-8"), source="ds.jsonl")


def test_fields_are_read() -> None:
    """Every field is parsed: chat input, reference list, context string, slicing
    metadata (``slice`` included) and a per-metric label."""
    data = parse(
        '{"id": 7, "input": [{"role": "system", "content": "s"}, '
        '{"role": "user", "content": "q?"}], "reference": ["a", "b"], "context": "c", '
        '"metadata": {"lang": "en", "hard": true}, "slice": "x", "label": {"em": 1}}')
    item = data.items[0]  # type: ignore[attr-defined]
    assert item.id == "7" and item.line == 1
    assert item.input == (Message("system", "s"), Message("user", "q?"))
    assert item.prompt == "q?"
    assert item.reference == ("a", "b") and item.context == ("c",)
    assert item.metadata == {"lang": "en", "hard": "true", "slice": "x"}
    assert item.label_for("em") == 1.0 and item.label_for("other") is None
    request = item.request(seed=3)
    assert isinstance(request, Request) and request.seed == 3 and len(request.messages) == 2


def test_metadata_lists_and_objects_are_for_the_judges() -> None:
    """A metadata list or object (an IFEval item's instructions) is kept as given for the
    judges' Sample.metadata; it is no slice dimension (only scalars are)."""
    data = parse('{"input": "q", "metadata": {"lang": "en", "instructions": '
                 '[{"kind": "words", "at_most": 3}], "tags": ["a", 1]}}')
    item = data.items[0]  # type: ignore[attr-defined]
    assert item.metadata == {"lang": "en"}
    assert item.judge_data == {"instructions": [{"kind": "words", "at_most": 3}],
                               "tags": ["a", 1]}
    assert item.sample_metadata == {"lang": "en", **item.judge_data}


def test_text_input_without_a_seed_runs_as_text() -> None:
    """A plain string input with no seed runs as the string; with a seed, as a Request."""
    item = parse('{"input": "hi"}').items[0]  # type: ignore[attr-defined]
    assert item.request() == "hi"
    assert item.request(5).seed == 5  # type: ignore[union-attr]


@pytest.mark.parametrize(("line", "message"), [
    ('{"input": "a"', "line 2: invalid JSON"),
    ('["input"]', "line 2: expected a JSON object, got an array"),
    ('{"reference": "x"}', "line 2: missing 'input'"),
    ('{"input": ""}', "line 2: 'input' is empty"),
    ('{"input": 3}', "line 2: 'input' must be a string or a non-empty list"),
    ('{"input": []}', "line 2: 'input' must be a string or a non-empty list"),
    ('{"input": [{"role": "robot", "content": "x"}]}', "line 2: input[0]: invalid message"),
    ('{"input": [{"role": "user"}]}', "line 2: input[0]: 'content' must be a string"),
    ('{"input": "a", "reference": 5}', "'reference' must be a string or a list of strings"),
    ('{"input": "a", "reference": []}', "'reference' is an empty list"),
    ('{"input": "a", "context": [1]}', "'context' must be a string or a list of strings"),
    ('{"input": "a", "metadata": []}', "'metadata' must be an object"),
    ('{"input": "a", "metadata": {"k": [{"x": NaN}]}}', "metadata.k holds a number that is "
     + "not finite"),
    ('{"input": "a", "label": "good"}', "'label' must be a finite number"),
    ('{"input": "a", "id": 1.5}', "'id' must be a string or an integer"),
    ('{"input": "a", "answer": "b"}', "unknown key(s) 'answer'; valid keys"),
    ('{"input": "a", "id": "first"}', "line 2: duplicate id 'first' (first used on line 1)"),
    ('{"input": "a \\ud83d"}', "line 2: a string holds a lone surrogate '\\ud83d'"),
    ('{"input": "a", "metadata": {"\\udc00": "x"}}', "line 2: a string holds a lone surrogate"),
])
def test_malformed_lines_name_the_line_and_problem(line: str, message: str) -> None:
    """Each malformed line fails with the file, its line number and what is wrong."""
    with pytest.raises(DatasetError) as caught:
        parse('{"id": "first", "input": "ok"}', line)
    assert str(caught.value).startswith("ds.jsonl line 2") or "ds.jsonl" in str(caught.value)
    assert message in str(caught.value)


@pytest.mark.parametrize(("line", "message"), [
    ('{"input": "a", "label": 1' + "0" * 400 + "}", "line 2: 'label' must be a finite number"),
    ('{"input": "a", "label": {"em": -1' + "0" * 400 + "}}", "line 2: label.em must be a finite"),
    ('{"input": "a", "id": 1' + "0" * 5000 + "}", "line 2: invalid JSON: Exceeds the limit"),
    ('{"input": "a", "metadata": ' + "[" * 100_000 + "]" * 100_000 + "}",
     "line 2: invalid JSON: nested too deeply"),
], ids=["label-beyond-float", "label-metric-beyond-float", "id-of-5001-digits", "deep-nesting"])
def test_numbers_and_nesting_past_the_limits_are_dataset_errors(line: str, message: str) -> None:
    """A number no float holds, an integer past Python's digit limit and nesting past the
    recursion limit are malformed lines (exit 2, naming the line), not a crash."""
    with pytest.raises(DatasetError) as caught:
        parse('{"id": "first", "input": "ok"}', line)
    assert str(caught.value).startswith("ds.jsonl line 2") and message in str(caught.value)

def test_non_utf8_and_empty_files(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 and a file without items are errors; a missing file too."""
    with pytest.raises(DatasetError, match="line 1: not UTF-8"):
        parse_dataset(b'{"input": "\xff"}\n', source="ds.jsonl")
    with pytest.raises(DatasetError, match="no items"):
        parse_dataset(b"\n  \n", source="ds.jsonl")
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "nope.jsonl")


def test_blank_lines_are_skipped_and_line_numbers_kept() -> None:
    """Blank lines hold nothing; the items keep their real line numbers."""
    data = parse('{"input": "a"}', "", '{"input": "b"}')
    assert [i.line for i in data.items] == [1, 3]  # type: ignore[attr-defined]


def test_a_byte_order_mark_is_not_part_of_the_first_line() -> None:
    """A file a Windows editor saved with a UTF-8 byte-order mark reads like one without."""
    plain = b'{"input": "hi", "reference": "hello"}\n{"input": "yo"}\n'
    marked = parse_dataset(b"\xef\xbb\xbf" + plain)
    assert marked.items == parse_dataset(plain).items


def test_identical_lines_get_numbered_ids() -> None:
    """Two identical lines without ids are two items with distinct, stable ids."""
    data = parse('{"input": "a"}', '{"input": "a"}', '{"input": "a"}')
    ids = [i.id for i in data.items]  # type: ignore[attr-defined]
    assert ids[1] == f"{ids[0]}-2" and ids[2] == f"{ids[0]}-3"


def test_many_identical_lines_are_numbered_in_linear_time() -> None:
    """A prompt repeated 20,000 times (to sample it often) gets ids ``-2`` ... ``-20000``
    without retrying each earlier number (quadratic before: a 300 kB file took ~25 s); an id
    of the file shaped like a made-up one is skipped, as before."""
    made_up = parse('{"input": "a"}').items[0].id  # type: ignore[attr-defined]
    data = parse(f'{{"id": "{made_up}-3", "input": "b"}}', *['{"input": "a"}'] * 20_000)
    ids = [i.id for i in data.items]  # type: ignore[attr-defined]
    assert ids[1:4] == [made_up, f"{made_up}-2", f"{made_up}-4"]
    assert ids[-1] == f"{made_up}-20001" and len(set(ids)) == len(ids)


@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from([None, 2, 3, 5])),
                max_size=12))
def test_numbered_ids_follow_the_rule(lines: list[tuple[str, int | None]]) -> None:
    """A repeat takes the first free ``-2``, ``-3``... of its made-up id, whatever ids of
    that shape the file holds (an id of the file taken by a repeat before it is a
    duplicate)."""
    made_up = {text: parse(f'{{"input": "{text}"}}').items[0].id  # type: ignore[attr-defined]
               for text in ("a", "b")}
    rows = [f'{{"input": "{text}"}}' if n is None
            else f'{{"id": "{made_up[text]}-{n}", "input": "x"}}' for text, n in lines]
    expected: list[str] = []
    for text, n in lines:
        if n is not None:
            expected.append(f"{made_up[text]}-{n}")
            continue
        name, count = made_up[text], 2
        while name in expected:
            name, count = f"{made_up[text]}-{count}", count + 1
        expected.append(name)
    if not rows:
        return
    if len(set(expected)) < len(expected):  # a file's id repeated, or taken before it
        with pytest.raises(DatasetError, match="duplicate id"):
            parse(*rows)
        return
    assert [i.id for i in parse(*rows).items] == expected  # type: ignore[attr-defined]


def test_a_repeated_id_of_the_file_is_an_error_whatever_it_looks_like() -> None:
    """Only made-up ids are numbered on a repeat: a repeated ``id`` of the file, even one
    shaped like a made-up id, is a duplicate, naming both lines."""
    with pytest.raises(DatasetError, match=r"line 2: duplicate id 'item-1' .*line 1"):
        parse('{"id": "item-1", "input": "a"}', '{"id": "item-1", "input": "b"}')
    made_up = parse('{"input": "a"}').items[0].id  # type: ignore[attr-defined]
    with pytest.raises(DatasetError, match="line 2: duplicate id"):
        parse('{"input": "a"}', f'{{"id": "{made_up}", "input": "b"}}')


def test_an_id_repeated_in_another_unicode_normalization_is_a_duplicate() -> None:
    """"café" composed (NFC) and decomposed (NFD) look the same in every report: the second
    is refused as a duplicate naming both lines and both spellings, escaped so they can be
    told apart; ids differing otherwise, and each spelling alone, are read as given."""
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    with pytest.raises(DatasetError, match=r"line 3: duplicate id 'cafe\\u0301' .*line 1.*"
                                           r"'caf\\xe9'.*normaliz"):
        parse(json.dumps({"id": nfc, "input": "a"}), '{"input": "x"}',
              json.dumps({"id": nfd, "input": "b"}))
    for one in (nfc, nfd):
        (item,) = parse(json.dumps({"id": one, "input": "a"})).items  # type: ignore[attr-defined]
        assert item.id == one
    ids = [i.id for i in parse(json.dumps({"id": nfc, "input": "a"}),  # type: ignore[attr-defined]
                               json.dumps({"id": "cafe", "input": "b"})).items]
    assert ids == [nfc, "cafe"]


@given(st.dictionaries(st.sampled_from(["reference", "slice"]), st.text(min_size=1)),
       st.text(min_size=1).filter(str.strip), st.booleans())
def test_hash_ids_ignore_key_order_and_whitespace(extra: dict[str, str], text: str,
                                                  spaced: bool) -> None:
    """An item's generated id depends on its content only, not on key order or spacing."""
    obj = {"input": text, **extra}
    a = json.dumps(obj)
    b = json.dumps(dict(reversed(list(obj.items()))), indent=None,
                   separators=(" , ", " : ") if spaced else (",", ":"))
    first = parse_dataset(a.encode(), source="a").items[0]
    second = parse_dataset(b.encode(), source="b").items[0]
    assert first.id == second.id and first.id.startswith("item-")


@given(st.one_of(st.binary(max_size=200),
                 st.lists(st.dictionaries(st.sampled_from(["id", "input", "reference",
                                                           "context", "metadata", "label"]),
                                          st.recursive(st.none() | st.booleans()
                                                       | st.integers() | st.text(max_size=5),
                                                       lambda c: st.lists(c, max_size=3)
                                                       | st.dictionaries(st.text(max_size=3),
                                                                         c, max_size=2),
                                                       max_leaves=5)),
                          max_size=4).map(lambda rows: "\n".join(json.dumps(r) for r in rows)
                                          .encode())))
def test_any_bytes_give_a_dataset_or_a_dataset_error(raw: bytes) -> None:
    """Whatever the bytes, parsing returns items or raises DatasetError naming the source;
    nothing else escapes."""
    try:
        data = parse_dataset(raw, source="fuzz.jsonl")
    except DatasetError as exc:
        assert str(exc).startswith("fuzz.jsonl")
    else:
        assert len(data) >= 1 and len({i.id for i in data.items}) == len(data)


def test_the_hash_ignores_line_endings_and_a_byte_order_mark() -> None:
    """git's autocrlf (CRLF <-> LF) or an editor's byte-order mark changes no item, and
    so no dataset hash; a changed item does. ``file_sha256`` is of the bytes as they are,
    the same as ``sha256`` for a file with LF endings and no mark."""
    lf = b'{"id": "a", "input": "x"}\n{"id": "b", "input": "y"}\n'
    plain = parse_dataset(lf)
    for variant in (lf.replace(b"\n", b"\r\n"), b"\xef\xbb\xbf" + lf.replace(b"\n", b"\r\n")):
        other = parse_dataset(variant)
        assert other.items == plain.items and other.sha256 == plain.sha256
        assert other.file_sha256 != plain.file_sha256
    assert plain.sha256 == plain.file_sha256
    assert parse_dataset(lf.replace(b'"y"', b'"z"')).sha256 != plain.sha256


@pytest.mark.parametrize(("line", "hint"), [
    ('{"input": "a", "refernce": "b"}', "'refernce' (did you mean 'reference'?)"),
    ('{"Input": "a"}', "'Input' (did you mean 'input'?)"),
    ('{"input": "a", "labels": 1, "contxt": "c"}',
     "'contxt' (did you mean 'context'?), 'labels' (did you mean 'label'?)"),
])
def test_a_misspelt_key_suggests_the_close_one(line: str, hint: str) -> None:
    """A misspelt key names the file, the line and the key it is close to."""
    with pytest.raises(DatasetError) as caught:
        parse('{"input": "fine"}', line)
    assert str(caught.value).startswith("ds.jsonl line 2: unknown key(s) ")
    assert hint in str(caught.value)
    assert "(put extra fields in 'metadata')" in str(caught.value)
