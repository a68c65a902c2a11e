"""The token budget: lowest-ranked passages dropped first, one cut to fit, ordering."""

from __future__ import annotations

import pytest
from aieng_context import ContextBuilder, ContextOptions, approximate_tokens
from aieng_hookspecs.types import Message, Query, Request
from context_helpers import ask, context_block, make_hits, parse_fences

WORDS = " ".join(f"word{i}" for i in range(200))  # 200 tokens by the approximation


def build(hits: list, **options: object) -> Request:  # type: ignore[type-arg]
    return ContextBuilder(ContextOptions(**options)).build(  # type: ignore[arg-type]
        Query("q"), hits, ask())


def test_approximation_counts_words_and_symbols() -> None:
    """The approximation counts words (long ones in pieces of 8), symbols and CJK
    characters, and nothing for whitespace."""
    assert approximate_tokens("") == approximate_tokens(" \n\t ") == 0
    assert approximate_tokens("Hello, world!") == 4
    assert approximate_tokens("internationalization") == 3
    assert approximate_tokens("日本語") == 3
    assert approximate_tokens("a b") == approximate_tokens("a") + approximate_tokens("b")


@pytest.mark.parametrize("text", [
    "\U00020000\U00020001\U0002a6d6\U0002b740\U0002b820\U0002ceb0\U00030000\U00031350",
    "\U0002f800\U0002f801\U0002f802\U0002f803\U0002f804\U0002f805\U0002f806\U0002f807",
])
def test_approximation_counts_cjk_beyond_the_bmp_one_a_character(text: str) -> None:
    """Han characters of the supplementary planes (extensions B to I, and the
    compatibility supplement: rare characters of names, Cantonese, classical texts) count
    one token each, as the BMP's do; they were counted as a word, one per 8."""
    assert approximate_tokens(text) == len(text) == 8
    assert approximate_tokens("\U00020b9f\u5b57") == 2


def test_lowest_ranked_dropped_first() -> None:
    """When not every passage fits, the best ones are kept whole and the rest dropped,
    and the context's tokens stay under the budget."""
    hits = make_hits("alpha " * 20, "beta " * 20, "gamma " * 20, "delta " * 20)
    request = build(hits, max_context_tokens=70, min_passage_tokens=30)
    report = request.metadata["context_build"]
    assert [p["id"] for p in request.metadata["context"]] == ["d1", "d2"]
    assert report["dropped"] == ["d3", "d4"] and report["cut"] == []
    assert approximate_tokens(context_block(request.prompt)) == report["context_tokens"] <= 70


def test_a_passage_too_long_alone_is_cut_at_a_word_boundary() -> None:
    """A first passage longer than the whole budget is cut at the end of a word to fit,
    rather than leaving the context empty, and the cut is marked in the prompt."""
    request = build(make_hits(WORDS, "short"), max_context_tokens=50, min_passage_tokens=10)
    (passage,) = request.metadata["context"]
    assert passage["cut"] and WORDS.startswith(passage["text"])
    assert WORDS[len(passage["text"])] == " "  # the cut ends a word
    assert 30 < approximate_tokens(passage["text"]) < 50
    assert "<<<UNTRUSTED [1] (excerpt, cut to fit)\n" in request.prompt
    assert approximate_tokens(context_block(request.prompt)) <= 50
    assert request.metadata["context_build"]["dropped"] == ["d2"]


def test_the_cut_needs_min_passage_tokens() -> None:
    """The passage that does not fit is cut only when at least ``min_passage_tokens`` of
    it fit; otherwise it is dropped with the rest."""
    hits = make_hits("alpha " * 40, WORDS, "tail")
    kept = build(hits, max_context_tokens=90, min_passage_tokens=10).metadata["context"]
    assert [(p["id"], p["cut"]) for p in kept] == [("d1", False), ("d2", True)]
    kept = build(hits, max_context_tokens=90, min_passage_tokens=25).metadata["context"]
    assert [(p["id"], p["cut"]) for p in kept] == [("d1", False)]


def test_a_giant_word_is_cut_between_characters() -> None:
    """A passage without any word boundary (one huge token string) is cut between
    characters rather than dropped."""
    blob = "x" * 5000
    (passage,) = build(make_hits(blob), max_context_tokens=40,
                       min_passage_tokens=5).metadata["context"]
    assert passage["cut"] and blob.startswith(passage["text"]) and passage["text"]


@pytest.mark.parametrize("unit", [
    "\ud83d\ude00",  # 😀 as a UTF-16 surrogate pair (text decoded with surrogatepass)
    "e\u0301",  # é as e + a combining acute accent
    "\u0928\u0947",  # ने: a Devanagari vowel sign (a mark of combining class 0)
    "\u2764\ufe0f",  # ❤️: a variation selector
    "\U0001f469\u200d\U0001f4bb",  # 👩‍💻: joined by a zero-width joiner
    "\U0001f44d\U0001f3fd",  # 👍🏽: a skin tone modifier
    "\U0001f1eb\U0001f1f7",  # 🇫🇷: a flag, a pair of regional indicators
    "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",  # 🏴󠁧󠁢󠁥󠁮󠁧󠁿: tags
    "\u1100\u1161\u11a8",  # 각 in conjoining jamo: leading, vowel and trailing
    "\u0915\u094d\u0937",  # क्ष: a Devanagari conjunct, a virama between two letters
    "\u0c38\u0c4d\u0c24",  # స్త: a Telugu conjunct
])
def test_a_cut_between_characters_keeps_each_character_whole(unit: str) -> None:
    """Cut between characters, a passage never ends inside a character as users see it:
    never between a surrogate pair's halves, in front of a mark, a joiner or an emoji
    modifier, or after a joiner, nor inside a flag or a Hangul syllable, whatever the
    room."""
    blob = "x" + unit * 300
    for room in range(20, 60):
        (passage,) = build(make_hits(blob), max_context_tokens=room,
                           min_passage_tokens=1).metadata["context"]
        text = passage["text"]
        assert passage["cut"] and blob.startswith(text)
        assert (len(text) - 1) % len(unit) == 0, (room, text[-4:])


def test_huge_passages_are_never_counted_whole() -> None:
    """Ten passages of a megabyte each are cut to the budget, and the builder counts a
    few budgets' worth of text, never the megabytes (what keeps it fast with a real
    tokenizer): under 3% of the input here."""
    hits = make_hits(*(["lorem ipsum dolor " * 60_000] * 10))
    counted: list[int] = []

    def count(text: str) -> int:
        counted.append(len(text))
        return approximate_tokens(text)

    for counter in (None, count):  # the inline approximation, and a counter of one's own
        request = ContextBuilder(ContextOptions(max_context_tokens=2000),
                                 count_tokens=counter).build(Query("q"), hits, ask())
        assert approximate_tokens(context_block(request.prompt)) <= 2000
        assert len(request.metadata["context"]) == 1
    assert 0 < sum(counted) < 0.03 * sum(len(h.document.text) for h in hits)


def test_huge_passages_are_never_copied_whole() -> None:
    """A retrieved text of megabytes ending in a line break is looked at, not copied,
    when the builder asks whether it is blank: the build's memory peak is a fraction of
    one such text (stripping each hit to test it copied every one of them)."""
    import tracemalloc

    text = "lorem ipsum dolor " * 200_000 + "\n"
    hits = make_hits(text, text, text)
    builder = ContextBuilder(ContextOptions(max_context_tokens=2000))
    tracemalloc.start()
    try:
        request = builder.build(Query("q"), hits, ask())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(request.metadata["context"]) == 1
    assert peak < len(text) // 4


def test_lost_in_the_middle_puts_the_best_at_both_ends() -> None:
    """With ``lost-in-the-middle`` ranks 1..5 are shown as 1, 3, 5, 4, 2 and numbered
    1..5 in that order; with ``rank`` they keep rank order."""
    hits = make_hits(*(f"passage {n}" for n in range(1, 6)))
    shown = build(hits, order="lost-in-the-middle").metadata["context"]
    assert [p["id"] for p in shown] == ["d1", "d3", "d5", "d4", "d2"]
    assert [p["n"] for p in shown] == [1, 2, 3, 4, 5]
    prompt = build(hits, order="lost-in-the-middle").prompt
    assert [f["body"] for f in parse_fences(context_block(prompt))] == [
        "passage 1", "passage 3", "passage 5", "passage 4", "passage 2"]
    assert [p["id"] for p in build(hits).metadata["context"]] == ["d1", "d2", "d3", "d4", "d5"]


def test_lost_in_the_middle_selects_by_rank_first() -> None:
    """The budget picks the best passages first; only then are they reordered."""
    hits = make_hits(*(f"passage {n} " + "x " * 10 for n in range(1, 7)))
    shown = build(hits, order="lost-in-the-middle", max_context_tokens=80,
                  min_passage_tokens=50).metadata["context"]
    assert sorted(p["id"] for p in shown) == [f"d{n}" for n in range(1, len(shown) + 1)]


def test_max_prompt_tokens_bounds_the_whole_prompt() -> None:
    """``max_prompt_tokens`` bounds every message's tokens together: passages make room
    first, then the oldest turns go (with tool results whose call went)."""
    hits = make_hits(*(["alpha " * 30] * 5))
    history = [Message("user", "old " * 50), Message("assistant", "reply " * 50),
               Message("user", "Now what?")]
    request = Request(history)
    builder = ContextBuilder(ContextOptions(max_prompt_tokens=400, min_passage_tokens=5))
    built = builder.build(Query("q"), hits, request)
    report = built.metadata["context_build"]
    assert sum(approximate_tokens(m.content) for m in built.messages) == \
        report["prompt_tokens"] <= 400
    assert report["dropped_turns"] == 0 and 1 <= len(built.metadata["context"]) < 5
    tight = ContextBuilder(ContextOptions(max_prompt_tokens=250)).build(Query("q"), hits,
                                                                        request)
    assert tight.metadata["context_build"]["dropped_turns"] >= 1
    assert sum(approximate_tokens(m.content) for m in tight.messages) <= 250


def test_max_prompt_tokens_too_small_for_the_question() -> None:
    """A prompt over ``max_prompt_tokens`` before any passage or turn is added fails with
    a message saying what to change."""
    with pytest.raises(ValueError, match="max_prompt_tokens"):
        ContextBuilder(ContextOptions(max_prompt_tokens=20)).build(Query("q"), [], ask())


def test_a_custom_counter_that_does_not_add_up() -> None:
    """With a counter whose count of a whole exceeds the sum of its parts, the builder
    still keeps the rendered context under the budget by that counter."""
    def lumpy(text: str) -> int:
        return (len(text) + 3) // 4 + text.count("\n\n") * 5

    builder = ContextBuilder(ContextOptions(max_context_tokens=120, min_passage_tokens=3),
                             count_tokens=lumpy)
    built = builder.build(Query("q"), make_hits(*(["some text here"] * 12)), ask())
    assert lumpy(context_block(built.prompt)) <= 120
    assert built.metadata["context_build"]["tokenizer"] == "custom"


def test_a_long_history_is_counted_about_once() -> None:
    """Dropping the oldest of many turns to fit ``max_prompt_tokens`` counts each turn
    about once, not the whole history again after every turn dropped (400 turns of 2 KB
    counted 200 times over made one build take seconds)."""
    history = [Message("user" if i % 2 == 0 else "assistant", f"turn {i} " + "blah " * 400)
               for i in range(400)]
    request = Request([*history, Message("user", "And now?")])
    counted: list[int] = []

    def count(text: str) -> int:
        counted.append(len(text))
        return approximate_tokens(text)

    built = ContextBuilder(ContextOptions(max_prompt_tokens=3000), count_tokens=count).build(
        Query("q"), make_hits("alpha " * 100), request)
    assert built.metadata["context_build"]["dropped_turns"] > 390
    assert sum(approximate_tokens(m.content) for m in built.messages) <= 3000
    assert sum(counted) < 4 * sum(len(m.content) for m in request.messages)


def test_a_budget_exactly_the_passages_size() -> None:
    """A budget of exactly the fenced passages' tokens keeps them whole; one token less
    drops (or cuts) the last of them."""
    hits = make_hits("alpha beta gamma", "delta epsilon")
    whole = build(hits, max_context_tokens=1000)
    size = whole.metadata["context_build"]["context_tokens"]
    assert size == approximate_tokens(context_block(whole.prompt))
    exact = build(hits, max_context_tokens=size, min_passage_tokens=1)
    assert exact.metadata["context"] == whole.metadata["context"]
    assert exact.metadata["context_build"]["context_tokens"] == size
    under = build(hits, max_context_tokens=size - 1, min_passage_tokens=1)
    assert [p["id"] for p in under.metadata["context"] if not p["cut"]] == ["d1"]
    assert under.metadata["context_build"]["context_tokens"] <= size - 1
