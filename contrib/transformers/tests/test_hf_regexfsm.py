"""The regular-expression automaton of constrained decoding (``_regexfsm``), against
Python's ``re`` and the ``regex`` package, and against brute force for the characters a
state still needs."""

from __future__ import annotations

import itertools
import random
import re

import pytest
import regex
from _constraints import walk
from aieng_transformers._regexfsm import JSON_COST, Pattern, RegexError
from hypothesis import given, settings
from hypothesis import strategies as st

#: What texts are made of: the characters the random patterns name, and a spare one ('z')
#: that they never name, so that every class, ``.`` and complement has a member here.
ALPHABET = "ab0 -z"

ATOMS = st.sampled_from(["a", "b", "0", " ", "-", r"\d", r"\w", r"\s", r"\D", r"\W", r"\S",
                         ".", "[ab]", "[^a0]", "[a-b0]", r"[\d ]", r"[^\w]", r"\-", r"\x61",
                         "(?:)"])


def _extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.lists(inner, min_size=2, max_size=3).map("".join),
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: "(" + "|".join(xs) + ")"),
        st.tuples(inner, st.sampled_from(["*", "+", "?", "{2}", "{1,3}", "{0,2}", "{2,}",
                                          "*?", "+?", "{1,2}?"])).map(
            lambda t: f"(?:{t[0]}){t[1]}"))


PATTERNS = st.recursive(ATOMS, _extend, max_leaves=6).flatmap(
    lambda p: st.sampled_from([p, "^" + p, p + "$", "^" + p + "$", f"0|^{p}"]))
TEXTS = st.text(ALPHABET, max_size=7)
LENGTHS = st.sampled_from([(0, None), (2, None), (0, 3), (1, 4), (3, 3)])


def _python(source: str, text: str, search: bool, lengths: tuple[int, int | None]) -> bool:
    least, most = lengths
    if not least <= len(text) <= (most if most is not None else len(text)):
        return False
    return (re.search if search else re.fullmatch)(source, text) is not None


@settings(max_examples=300, deadline=None)
@given(source=PATTERNS, texts=st.lists(TEXTS, min_size=1, max_size=8),
       search=st.booleans(), lengths=LENGTHS)
def test_matches_what_python_matches(source: str, texts: list[str], search: bool,
                                     lengths: tuple[int, int | None]) -> None:
    """On texts of the alphabet, the automaton (full match, or search as JSON Schema's
    ``pattern`` has it; with or without length bounds) accepts exactly what Python's
    ``re`` matches — and, for full matches, what the ``regex`` package does."""
    try:
        pattern = Pattern(source, search=search, lengths=lengths)
    except RegexError as exc:
        assert "no text" in str(exc)  # the subset parses all of these; only emptiness
        assert not any(_python(source, "".join(t), search, lengths)
                       for n in range(6) for t in itertools.product(ALPHABET, repeat=n))
        return
    for text in texts:
        assert pattern.matches(text) == _python(source, text, search, lengths), text
        if not search and lengths == (0, None):
            assert pattern.matches(text) == (regex.fullmatch(source, text) is not None)


def _shortest(source: str, prefix: str, search: bool, lengths: tuple[int, int | None],
              deepest: int) -> int | None:
    """The fewest characters of the alphabet that make ``prefix`` match, by brute force."""
    for n in range(deepest + 1):
        for tail in itertools.product(ALPHABET, repeat=n):
            if _python(source, prefix + "".join(tail), search, lengths):
                return n
    return None


@settings(max_examples=150, deadline=None)
@given(source=PATTERNS, prefix=st.text(ALPHABET, max_size=4), search=st.booleans(),
       lengths=LENGTHS)
def test_characters_still_needed_are_exact(source: str, prefix: str, search: bool,
                                          lengths: tuple[int, int | None]) -> None:
    """``left`` is the length of the shortest completion (brute force over the alphabet, up
    to 4 characters), and a prefix is refused exactly when no completion exists."""
    try:
        pattern = Pattern(source, search=search, lengths=lengths)
    except RegexError:
        return  # matches nothing: covered above
    state = pattern.feed(pattern.start(), prefix)
    expected = _shortest(source, prefix, search, lengths, 4)
    if state is None:
        assert expected is None
        return
    left = pattern.left(state)
    if expected is None:
        assert left > 4
    else:
        assert left == expected


@settings(max_examples=150, deadline=None)
@given(source=PATTERNS, seed=st.integers(0, 2**32 - 1), slack=st.integers(0, 6),
       lengths=LENGTHS)
def test_walks_finish_within_the_budget(source: str, seed: int, slack: int,
                                        lengths: tuple[int, int | None]) -> None:
    """Random walks that keep ``left`` within the characters left never get stuck, end in
    a match as soon as the automaton says nothing may follow, and match under ``re``."""
    try:
        pattern = Pattern(source, lengths=lengths)
    except RegexError:
        return
    out = walk(_Walked(pattern), random.Random(seed), slack, ALPHABET)  # within budget
    assert _python(source, out, False, lengths), out
    state = pattern.feed(pattern.start(), out)
    assert state is not None
    if pattern.closed(state):  # nothing may follow: no character steps on
        assert all(pattern.step(state, c) is None for c in ALPHABET)


class _Walked:
    """A pattern (with lengths, which ``RegexConstraint`` does not take) as the
    :class:`~aieng_transformers._constrain.Constraint` that :func:`_constraints.walk` drives."""

    def __init__(self, pattern: Pattern) -> None:
        self.start, self.feed, self.accepting = pattern.start, pattern.feed, pattern.accepting
        self.complete = pattern.closed
        self.min_chars = lambda state: int(pattern.left(state))


@pytest.mark.parametrize(("source", "message"), [
    ("(", "missing"), ("a)", "unbalanced"), ("a**", "multiple repeat"), ("*a", "nothing"),
    ("(?=a)", "lookaround"), ("(?<!a)b", "lookaround"), (r"(a)\1", "backreference"),
    (r"\bword", "word boundar"), (r"\p{L}", "unsupported escape"), ("(?i)a", "inline"),
    ("[]", "different things"), ("a{,3}", "ambiguous"), ("[z-a]", "range"),
    (r"[\d-z]", "class escape"), ("a{3,1}", "below"), (r"\x4", "hex"), (r"\07", "octal"),
    ("a{100000}", "too large"), (r"^a$b", "no text"),
])
def test_refusals_name_the_problem(source: str, message: str) -> None:
    with pytest.raises(RegexError, match=message):
        Pattern(source)


def test_what_engines_disagree_on_is_not_written() -> None:
    """``\\d``, ``\\w``, ``\\s`` write their ASCII members only, and their complements
    ASCII characters outside them (a Unicode digit is ``\\d`` in Python and Rust, not in
    ECMA-262); ``.`` writes no line terminator of any engine; ``$`` is the end."""
    digit = Pattern(r"\d")
    assert digit.matches("7") and not digit.matches("\u0663")  # ARABIC-INDIC DIGIT THREE
    for source in (r"\D", r"[^\d]", r"\W", r"\S"):
        assert not Pattern(source).matches("\u0663"), source
        assert not Pattern(source).matches("\u00e9"), source
    assert Pattern(r"\D").matches("a") and Pattern(r"\S").matches("\u0020") is False
    assert not Pattern(r"\s").matches("\x1c")  # \s in Python only
    assert not Pattern(r"\S").matches("\x1c")  # … so not its complement either
    dot = Pattern(".")
    assert dot.matches("\u00e9")
    assert not any(dot.matches(c) for c in "\n\r\u2028\u2029")
    assert Pattern("[^,]+").matches("caf\u00e9")  # a class of literals: all of Unicode
    assert not Pattern("a$", search=True).matches("a\n")  # Python's $ would match


def test_closed_and_counted() -> None:
    """A match that nothing may extend is closed (generation can end at once); length
    bounds fold into the automaton; JSON costs count escapes."""
    choice = Pattern("(yes|no)")
    assert choice.closed(choice.feed(choice.start(), "yes"))  # type: ignore[arg-type]
    assert not choice.closed(choice.feed(choice.start(), "ye"))  # type: ignore[arg-type]
    many = Pattern("a+")
    assert not many.closed(many.feed(many.start(), "aaa"))  # type: ignore[arg-type]
    capped = Pattern("a+", lengths=(0, 2))
    assert capped.closed(capped.feed(capped.start(), "aa"))  # type: ignore[arg-type]
    assert capped.feed(capped.start(), "aaa") is None
    pairs = Pattern("^(ab)+$", search=True, lengths=(3, None))
    assert pairs.left(pairs.start()) == 4  # "abab": 3 characters are not a match
    quoted = Pattern('^"\\\\$', search=True, cost=JSON_COST)
    assert quoted.left(quoted.start()) == 4  # \" and \\ written as escapes
    assert Pattern("\\n", cost=JSON_COST).left(Pattern("\\n", cost=JSON_COST).start()) == 2
    with pytest.raises(RegexError, match="no text"):
        Pattern("\x01", cost=JSON_COST)  # a control character needs \u: never written


def test_bounds_the_pattern_keeps_are_not_counted() -> None:
    """A length bound the pattern already keeps costs the automaton nothing (it would
    otherwise count every length up to it): a bounded pattern with a huge ``maxLength``
    compiles, and still matches exactly what ``re`` does with the bounds."""
    for source, lengths in ((r"[a-z]{1,5}(-[0-9]{2})?", (1, 10**6)),
                            (r"x[ab]*", (0, None)), (r"(ab|c){2,3}", (2, 400_000))):
        pattern = Pattern(source, lengths=lengths)
        for n in range(5):
            for text in map("".join, itertools.product("ab-c1x", repeat=n)):
                assert pattern.matches(text) == _python(source, text, False, lengths), text
    with pytest.raises(RegexError, match="too large"):
        Pattern(r"[a-z]+", lengths=(0, 10**6))  # unbounded: every length would be counted
    tight = Pattern(r"[a-z]{1,5}", lengths=(2, 3))  # bounds inside the pattern's: kept
    assert [tight.matches(t) for t in ("a", "ab", "abc", "abcd")] == [False, True, True, False]


#: Patterns over ``a`` and ``b`` only, whose every completion brute force can list.
SMALL = st.recursive(st.sampled_from(["a", "b", "[ab]", "(?:)"]), _extend,
                     max_leaves=5).flatmap(lambda p: st.sampled_from([p, f"^{p}$", f"a|{p}"]))


@settings(max_examples=150, deadline=None)
@given(source=SMALL, prefix=st.text("ab", max_size=3), lengths=LENGTHS)
def test_completions_list_every_text_cheapest_first(source: str, prefix: str,
                                                    lengths: tuple[int, int | None]) -> None:
    """``completions`` (what lists the values of distinct items) gives exactly the texts
    that finish a match — brute force over the alphabet up to 5 characters — each once,
    cheapest first; and the same again when asked twice (it keeps what it listed)."""
    try:
        pattern = Pattern(source, lengths=lengths)
    except RegexError:
        return
    state = pattern.feed(pattern.start(), prefix)
    if state is None:
        return
    listed = list(itertools.takewhile(lambda c: c[0] <= 5, pattern.completions(state)))
    costs = [cost for cost, _ in listed]
    assert costs == sorted(costs) and all(cost == len(text) for cost, text in listed)
    assert len({text for _, text in listed}) == len(listed)
    assert {text for _, text in listed} == {
        tail for n in range(6) for tail in map("".join, itertools.product("ab", repeat=n))
        if _python(source, prefix + tail, False, lengths)}
    if listed:
        assert costs[0] == pattern.left(state)
    assert list(itertools.islice(pattern.completions(state), len(listed))) == listed


_JSON_TWO = frozenset('"\\\b\f\n\r\t')


@settings(max_examples=150, deadline=None)
@given(source=PATTERNS, prefix=st.text(ALPHABET, max_size=3), search=st.booleans())
def test_completions_in_json_cost(source: str, prefix: str, search: bool) -> None:
    """On any pattern of the subset (classes, ``.``, complements, searched or whole) the
    first 25 completions inside a JSON string are distinct texts that finish a match,
    each costing its output characters (an escape two), cheapest first from ``left``."""
    try:
        pattern = Pattern(source, search=search, cost=JSON_COST)
    except RegexError:
        return
    state = pattern.feed(pattern.start(), prefix)
    if state is None:
        return
    listed = list(itertools.islice(pattern.completions(state), 25))
    assert listed and listed[0][0] == pattern.left(state)
    assert [c for c, _ in listed] == sorted(c for c, _ in listed)
    assert len({text for _, text in listed}) == len(listed)
    for cost, text in listed:
        assert cost == sum(2 if c in _JSON_TWO else 1 for c in text)
        assert _python(source, prefix + text, search, (0, None)), text
