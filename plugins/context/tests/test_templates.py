"""The rendered prompt's structure: templates, sections, overrides, conversation history."""

from __future__ import annotations

import json

import pytest
from aieng_context import TEMPLATES, ContextBuilder, ContextOptions, Example
from aieng_hookspecs.types import Message, Query, Request
from context_helpers import ask, make_hits

HITS = make_hits("Reciprocal rank fusion merges ranked lists.",
                 "BM25 ranks documents by term frequency.", titles=["Fusion", "BM25"])


def headings(prompt: str) -> list[str]:
    return [line[3:] for line in prompt.splitlines() if line.startswith("## ")]


def test_grounded_qa_sections_in_order() -> None:
    """The default template renders system, then context / task / question / output
    format in that order, with the passages numbered from 1 and the question verbatim."""
    request = ContextBuilder().build(Query("q"), HITS, ask("How does RRF work?"))
    system, user = request.messages
    assert system.role == "system" and "untrusted" in system.content
    assert headings(user.content) == ["Context", "Task", "Question", "Output format"]
    assert "<<<UNTRUSTED [1]\nTitle: Fusion\nReciprocal rank fusion" in user.content
    assert "<<<UNTRUSTED [2]\nTitle: BM25\n" in user.content
    assert "## Question\nHow does RRF work?\n" in user.content
    assert "[n]" in user.content  # the output format asks for citations


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_template_renders_its_defaults(name: str) -> None:
    """Each built-in template puts its own system, task and output format in the prompt."""
    template = TEMPLATES[name]
    options = ContextOptions(template=name)  # type: ignore[arg-type]
    request = ContextBuilder(options).build(Query("q"), HITS, ask())
    assert request.messages[0].content == template.system
    user = request.prompt
    assert template.task in user and template.output_format in user
    assert f"## {template.input_heading}\nWhat is it?" in user
    assert request.metadata["context_build"]["template"] == name


def test_examples_come_between_context_and_task() -> None:
    """Worked examples render as Input/Output pairs in their own section, after the
    context and before the task; config tables (dicts) are accepted too."""
    options = ContextOptions(examples=[Example("2+2?", "4 [1]"), {"input": "a", "output": "b"}])
    user = ContextBuilder(options).build(Query("q"), HITS, ask()).prompt
    assert headings(user) == ["Context", "Examples", "Task", "Question", "Output format"]
    assert "## Examples\nInput: 2+2?\nOutput: 4 [1]\n\nInput: a\nOutput: b\n" in user


def test_overrides_and_empty_sections() -> None:
    """``system``, ``task`` and ``output_format`` replace the template's; an empty task or
    output format leaves its section out, an empty system leaves out the system message."""
    options = ContextOptions(system="", task="", output_format="Say it in French.")
    request = ContextBuilder(options).build(Query("q"), HITS, ask())
    assert [m.role for m in request.messages] == ["user"]
    assert headings(request.prompt) == ["Context", "Question", "Output format"]
    assert request.prompt.endswith("## Output format\nSay it in French.")
    custom = ContextBuilder(ContextOptions(system="Be brief.")).build(Query("q"), HITS, ask())
    assert custom.messages[0] == Message("system", "Be brief.")


def test_no_hits_says_so() -> None:
    """With no hits the context section says none were retrieved, metadata lists none."""
    request = ContextBuilder().build(Query("q"), [], ask())
    assert "## Context\n(no passages were retrieved)\n" in request.prompt
    assert "<<<" not in request.prompt
    assert request.metadata["context"] == [] and request.metadata["question"] == "What is it?"


def test_response_schema_goes_into_the_output_format() -> None:
    """A request's JSON schema is added to the output format section, as JSON."""
    schema = {"type": "object", "properties": {"year": {"type": "integer"}}}
    request = Request([Message("user", "When?")], response_schema=schema)
    built = ContextBuilder(ContextOptions(template="extract-json")).build(Query("q"), HITS,
                                                                          request)
    assert f"The JSON must satisfy this schema: {json.dumps(schema, sort_keys=True)}" in \
        built.prompt
    assert built.response_schema == schema


def test_history_is_kept_and_system_replaced() -> None:
    """System messages are replaced by the template's, earlier turns kept in order, the
    last user turn replaced by the rendered prompt, and turns after it kept after it;
    sampling parameters and existing metadata survive."""
    request = Request(
        [Message("system", "old rules"), Message("user", "Hi"), Message("assistant", "Hello"),
         Message("system", "more old rules"), Message("user", "How does RRF work?"),
         Message("assistant", "It")],
        temperature=0.7, max_tokens=99, metadata={"user": "u1"})
    built = ContextBuilder().build(Query("rrf"), HITS, request)
    assert [m.role for m in built.messages] == ["system", "user", "assistant", "user",
                                                 "assistant"]
    assert built.messages[0].content == TEMPLATES["grounded-qa"].system
    assert built.messages[1:3] == request.messages[1:3]
    assert built.messages[4] == Message("assistant", "It")
    assert "## Question\nHow does RRF work?" in built.messages[3].content
    assert built.metadata["question"] == "How does RRF work?"
    assert (built.temperature, built.max_tokens, built.metadata["user"]) == (0.7, 99, "u1")


def test_without_a_user_turn_the_query_is_the_question() -> None:
    """A request with no user message gets the rendered prompt appended, asking the
    query's text."""
    request = Request([Message("system", "x"), Message("assistant", "Earlier answer")])
    built = ContextBuilder().build(Query("What is BM25?"), HITS, request)
    assert [m.role for m in built.messages] == ["system", "assistant", "user"]
    assert built.metadata["question"] == "What is BM25?"


def test_metadata_maps_citations_to_documents() -> None:
    """``metadata["context"]`` lists each passage's number, document id, title, exact
    text, rank and whether it was cut, in prompt order."""
    built = ContextBuilder().build(Query("q"), HITS, ask())
    assert built.metadata["context"] == [
        {"n": 1, "id": "d1", "title": "Fusion", "text": HITS[0].document.text, "rank": 1,
         "cut": False},
        {"n": 2, "id": "d2", "title": "BM25", "text": HITS[1].document.text, "rank": 2,
         "cut": False}]


@pytest.mark.parametrize("bad", [
    {"template": "poem"}, {"order": "random"}, {"max_context_tokens": 0},
    {"min_passage_tokens": True}, {"max_prompt_tokens": 0}, {"tokenizer_path": " "},
    {"examples": "just a string"}, {"system": 3},
    {"examples": {"input": "a", "output": "b"}}, {"examples": None}, {"examples": ["a"]},
    {"examples": [{"input": "a"}]}, {"examples": [{"input": "a", "output": "b", "x": 1}]},
    {"examples": [{"input": 1, "output": "b"}]},
])
def test_invalid_options(bad: dict[str, object]) -> None:
    """Invalid option values fail when the options are built, naming the option (and
    for examples, which one: a single table, a text or a table with a key missing or
    unknown is never an AttributeError or a message about ``**``)."""
    with pytest.raises((TypeError, ValueError), match=next(iter(bad)) if "examples" not in
                       bad else "examples"):
        ContextOptions(**bad)  # type: ignore[arg-type]


def test_blank_hits_are_not_shown() -> None:
    """A hit with nothing to show (blank text and title: an empty chunk, a page break) is
    left out rather than shown as an empty passage taking a citation number; it is listed
    as ``empty`` in the report. A blank text under a title still shows the title."""
    hits = make_hits("", "real passage", " \n\t\u2028", "", "last one",
                     titles=["", "", "  ", "A title only"])
    built = ContextBuilder().build(Query("q"), hits, ask())
    shown = built.metadata["context"]
    assert [(p["n"], p["id"]) for p in shown] == [(1, "d2"), (2, "d4"), (3, "d5")]
    assert built.prompt.count("<<<UNTRUSTED") == 3
    assert "<<<UNTRUSTED [2]\nTitle: A title only\n\n>>>" in built.prompt
    report = built.metadata["context_build"]
    assert report["empty"] == ["d1", "d3"] and report["dropped"] == []
    only_blank = ContextBuilder().build(Query("q"), make_hits("", " "), ask())
    assert only_blank.metadata["context"] == []
    assert "## Context\n(no passages were retrieved)\n" in only_blank.prompt
