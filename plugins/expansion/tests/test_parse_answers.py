"""Reading realistic model answers: chatty lists, every list marker, quotes, labels and
answers in other scripts."""

from __future__ import annotations

import pytest
from aieng_expansion import passage, rewrites
from hypothesis import given
from hypothesis import strategies as st


def _rewrites(answer: str, original: str = "how long to cook pasta", limit: int = 5) -> list[str]:
    return rewrites(answer, original, limit=limit, max_chars=100)


# -- lists among chat ----------------------------------------------------------------------


@pytest.mark.parametrize("marker", ["1.", "1)", "-", "*", "•", "+", "(1)", "Query 1:"])
def test_a_chatty_preamble_and_closing_remark_around_a_list_are_dropped(marker: str) -> None:
    """When lines carry list markers, the lines without one (a preamble that does not end
    in ``:``, a closing remark) are chat, not rewrites: they take none of the ``n`` slots."""
    items = ["boil noodles duration", "pasta cooking time", "spaghetti boiling minutes"]
    lines = [marker.replace("1", str(i)) + " " + item for i, item in enumerate(items, 1)]
    answer = ("Sure! Here are three alternative search queries.\n\n" + "\n".join(lines)
              + "\n\nLet me know if you need more!")
    assert _rewrites(answer, limit=3) == items


def test_a_numbered_list_with_blank_lines_and_bold_among_chat() -> None:
    """A realistic small-model answer: bold items between blank lines, a preamble without
    a colon and a closing sentence."""
    answer = ("Of course. These versions vary the wording\n\n"
              "1. **Pasta boiling time**\n\n"
              "2) **How many minutes to cook spaghetti**\n\n"
              "3. \u201cal dente cooking duration\u201d\n\n"
              "I hope these help with your search.")
    assert _rewrites(answer) == ["Pasta boiling time", "How many minutes to cook spaghetti",
                                 "al dente cooking duration"]


def test_a_lone_marker_marks_the_line_after_it() -> None:
    """A number alone on its line numbers the next line: the pair is one list item."""
    answer = "Here you go!\n1.\nboil noodles\n\n2.\npasta cooking time\nHappy cooking!"
    assert _rewrites(answer) == ["boil noodles", "pasta cooking time"]


def test_answers_without_list_markers_keep_one_query_per_line() -> None:
    """With no list marker at all, every line is a rewrite, a chatty one too (the prompt
    asks for bare lines); an unnumbered label (``Question - ``) makes no list."""
    answer = ("Sure, here are three versions.\n"
              "boil noodles\n"
              "Question - pasta cooking time\n"
              "2024 - 2025 pasta prices\n")
    assert _rewrites(answer) == ["Sure, here are three versions.", "boil noodles",
                                 "pasta cooking time", "2024 - 2025 pasta prices"]


def test_a_label_after_a_list_marker_goes_too() -> None:
    """``1. Query: ...`` and ``- Rewrite 2: ...`` lose both the marker and the label."""
    answer = "1. Query: boil noodles\n- Rewrite 2: pasta cooking time"
    assert _rewrites(answer) == ["boil noodles", "pasta cooking time"]


def test_indented_notes_under_list_items_are_dropped() -> None:
    """Explanations nested under the items (indented deeper than them) are no rewrites;
    numbers aligned to the right (`` 9.`` over ``10.``) are one level."""
    answer = ("Here are the rewrites.\n"
              "1. boil noodles\n"
              "   - Focuses on the action.\n"
              "\t* Shorter.\n"
              " 9. pasta cooking time\n"
              "10. spaghetti boiling minutes\n"
              "    - Uses synonyms.\n")
    assert _rewrites(answer) == ["boil noodles", "pasta cooking time",
                                 "spaghetti boiling minutes"]


def test_a_list_indented_as_a_whole_is_kept() -> None:
    """A list indented under its preamble is still one level: nothing is nested."""
    answer = "Rewrites\n    1. boil noodles\n    2. pasta cooking time\n    3.\n      al dente"
    assert _rewrites(answer) == ["boil noodles", "pasta cooking time", "al dente"]


def test_headings_and_emphasis_are_markdown_not_query() -> None:
    """A ``##`` heading is no rewrite; italic or underscored bold around a whole rewrite is
    removed, but an emphasis inside it, or ``# of`` (number of), stays."""
    answer = ("## Rewritten queries\n"
              "*boil noodles*\n"
              "__pasta cooking time__\n"
              "_al dente_ spaghetti\n"
              "*quick* or *slow* boiling\n"
              "# of minutes to boil pasta\n")
    assert _rewrites(answer) == ["boil noodles", "pasta cooking time", "_al dente_ spaghetti",
                                 "*quick* or *slow* boiling", "# of minutes to boil pasta"]


@pytest.mark.parametrize("echo", ["How long to cook pasta?", "how long to cook pasta.",
                                  "How long to cook pasta ?!", "how long to cook pasta？"])
def test_the_query_with_a_final_punctuation_mark_is_still_the_query(echo: str) -> None:
    """A model echoing the query with a question mark added takes no slot."""
    assert _rewrites(f"{echo}\nboil noodles", limit=1) == ["boil noodles"]


# -- "N - " markers ------------------------------------------------------------------------


def test_number_dash_markers_numbering_from_one_are_stripped() -> None:
    """``1 - ``, ``2 - ``, ... numbering the lines from 1 in order are list markers: they
    are stripped (a rewrite's own ``2024 - 2025`` stays) and the chat around is dropped."""
    answer = ("Here are some rewrites.\n"
              "1 - boil noodles\n"
              "2 - 2024 - 2025 pasta prices\n"
              "3 \u2013 spaghetti boiling time\n"
              "Enjoy!")
    assert _rewrites(answer) == ["boil noodles", "2024 - 2025 pasta prices",
                                 "spaghetti boiling time"]


@pytest.mark.parametrize("answer", [
    "2024 - 2025 budget",
    "2024 - 2025 budget\n2023 - 2024 budget",
    "1 - 0 home win odds\n3 - 1 away win odds",
])
def test_number_dash_that_does_not_number_from_one_is_part_of_the_query(answer: str) -> None:
    """A year range or a score is no list: ``N - `` is a marker only when the lines
    starting so count 1, 2, 3, ... in order."""
    assert _rewrites(answer, "football") == answer.splitlines()


# -- quotes and scripts --------------------------------------------------------------------


@pytest.mark.parametrize(("line", "expected"), [
    ('"pasta" vs "noodles"', '"pasta" vs "noodles"'),
    ("\u201cpasta\u201d or \u201cnoodles\u201d", "\u201cpasta\u201d or \u201cnoodles\u201d"),
    ('"pasta vs noodles"', "pasta vs noodles"),
    ("\u00abp\u00e2tes al dente\u00bb", "p\u00e2tes al dente"),
    ("'rock 'n' roll'", "'rock 'n' roll'"),
])
def test_only_quotes_around_the_whole_rewrite_are_removed(line: str, expected: str) -> None:
    """A rewrite that starts and ends with two different quoted phrases keeps its quotes:
    only a pair enclosing the whole line is removed."""
    assert _rewrites(f"1. {line}", "q") == [expected]


def test_a_preamble_ending_in_a_full_width_colon_is_dropped() -> None:
    """Chinese and Japanese answers end their preamble in ``：``; their list markers
    (``1、``, ``２．``) are markers."""
    answer = "以下是三个改写的查询：\n1、煮意大利面需要多久\n２．意面烹饪时间\n3) 意大利面煮几分钟"
    assert _rewrites(answer, "意大利面怎么煮") == ["煮意大利面需要多久", "意面烹饪时间",
                                            "意大利面煮几分钟"]


# Chat without reasoning tags or code fences, which hide what follows them on purpose.
_CHAT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="<`~"))


@given(st.lists(_CHAT), st.sampled_from(["1.", "2)", "-", "*", "•", "+"]))
def test_marked_lines_are_never_lost_to_unmarked_ones(chat: list[str], marker: str) -> None:
    """Whatever chat surrounds it, a marked item with a word is found."""
    lines = [" ".join(c.split()) for c in chat]
    answer = "\n".join([*lines[: len(lines) // 2], f"{marker} xylophone tuning",
                        *lines[len(lines) // 2:]])
    found = rewrites(answer, "q", limit=len(lines) + 1, max_chars=100)
    assert "xylophone tuning" in found


# -- HyDE labels ---------------------------------------------------------------------------


@pytest.mark.parametrize("answer", [
    "**Passage:** Pasta cooks in ten minutes.",
    "**Passage**: Pasta cooks in ten minutes.",
    "Passage: Pasta cooks in ten minutes.",
    "answer: Pasta cooks in ten minutes.",
    "*Answer:* Pasta cooks in ten minutes.",
    "Hypothetical document: Pasta cooks in ten minutes.",
    "**Hypothetical Passage:**\n\nPasta cooks in ten minutes.",
    "## Passage\nPasta cooks in ten minutes.",
    "__Document:__ Pasta cooks in ten minutes.",
    "<think>a label?</think>\n```\n**Answer:**\nPasta cooks in ten minutes.\n```",
])
def test_passage_drops_a_leading_label_bold_or_not(answer: str) -> None:
    """A leading label (``Passage``, ``Answer``, ``Document``, ``Hypothetical ...``), bold,
    italic or a heading, is not part of the hypothetical document."""
    assert passage(answer) == "Pasta cooks in ten minutes."


@pytest.mark.parametrize("answer", [
    "Passage of the bill took three months.",
    "Answers vary: pasta cooks in ten minutes.",
    "The answer: pasta cooks in ten minutes.",
    "Pasta cooks in ten minutes.\nAnswer: ten minutes.",
])
def test_passage_keeps_label_words_that_are_prose(answer: str) -> None:
    """A label word that starts a sentence, or a label further down, is the passage's."""
    assert passage(answer) == answer


@pytest.mark.parametrize(("limit", "max_chars"), [(0, 100), (-1, 100), (5, 0), (5, -1)])
def test_no_room_means_no_rewrites(limit: int, max_chars: int) -> None:
    """A limit of no rewrite, or of no character, keeps nothing (not everything, nor
    rewrites cut from their end)."""
    assert rewrites("boil noodles\npasta cooking time", "q", limit=limit,
                    max_chars=max_chars) == []


# -- JSON answers and chatty passages -------------------------------------------------------


@pytest.mark.parametrize("answer", [
    '["boil noodles duration", "pasta cooking time", "spaghetti boiling minutes"]',
    ('```json\n[\n  "boil noodles duration",\n  "pasta cooking time",\n'
     '  "spaghetti boiling minutes"\n]\n```'),
    ('Here are the queries in JSON:\n```json\n{"queries": ["boil noodles duration", '
     '"pasta cooking time", "spaghetti boiling minutes"]}\n```\nHope this helps!'),
    ('<think>JSON it is.</think>["boil noodles duration", "pasta cooking time", '
     '"how long to cook pasta", "spaghetti boiling minutes"]'),
])
def test_a_json_list_of_queries_is_read_as_the_list(answer: str) -> None:
    """Models asked for a list often answer a JSON array (or an object holding one): its
    strings are the rewrites, not its brackets, quotes and commas."""
    assert _rewrites(answer) == ["boil noodles duration", "pasta cooking time",
                                 "spaghetti boiling minutes"]


@pytest.mark.parametrize("answer", [
    '["pasta", 3]',  # not all strings: lines as usual
    '[pasta cooking time]',  # not JSON
])
def test_text_in_brackets_that_is_no_json_list_of_strings_is_read_by_lines(answer: str) -> None:
    assert _rewrites(answer) == [answer]


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_brackets_nested_past_the_recursion_limit_are_no_json_list(depth: int) -> None:
    """A model stuck in a loop writing ``[[[[...]]]]`` (deeper than Python's recursion
    limit, at which ``json.loads`` raises ``RecursionError``, not a ``ValueError``) is no
    list of queries: its lines are read as usual, and the failure does not end the run."""
    answer = "pasta cooking time\n" + "[" * depth + "]" * depth
    assert _rewrites(answer) == ["pasta cooking time"]


@pytest.mark.parametrize("answer", [
    "Sure! Here's a short passage that answers the question:\n\nPasta cooks in ten minutes.",
    "Certainly. Here is a hypothetical document:\nPasta cooks in ten minutes.",
    "Here's the passage:\n\n**Passage:** Pasta cooks in ten minutes.",
])
def test_passage_drops_a_chatty_line_announcing_it(answer: str) -> None:
    """A first line announcing the passage (``Here's a passage:``) is chat, not the
    document a retriever should match."""
    assert passage(answer) == "Pasta cooks in ten minutes."


def test_passage_keeps_a_first_line_ending_in_a_colon_that_is_prose() -> None:
    answer = "Cooking pasta takes three steps:\n1. Boil water.\n2. Add pasta."
    assert passage(answer) == answer
