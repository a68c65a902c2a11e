"""The automata that keep tool calls valid while decoding, one per call format of
:mod:`._toolcalls` (see its docstring for the formats and what a request asks).

Under a constraint (:func:`call_constraint`) the name is one of the request's tools and
the arguments are valid against that tool's ``parameters`` schema (the subset of
:mod:`._jsonschema`), so every call the model starts parses and validates; text outside
calls is free. Mistral's marker tokens are read as the characters of
:data:`~._toolcalls.MARKS`: a marker is always its token, free text never spells
``[TOOL_CALLS]`` out, and no argument holds a marker.
"""

from __future__ import annotations

from typing import Any

from ._jsonschema import JsonMachine, SchemaError
from ._toolcalls import (
    _CLOSE_LINE,
    _GAP,
    _ID_LENGTH,
    CLOSE,
    MARK,
    MARKER,
    MARKS,
    OPEN,
    SEPARATOR,
    ToolPlan,
    calls_schema,
)

__all__ = ["BareCallConstraint", "MarkedCallConstraint", "NamedCallConstraint",
           "ToolCallConstraint", "call_constraint"]

_ARGS, _ID = MARKS["[ARGS]"], MARKS["[CALL_ID]"]


# States (tuples, hashable):
#   ("t", k)   free text; its last k characters are the first k of OPEN
#   ("s",)     the start of an answer that is a schema's document or calls
#   ("a", j)   inside the schema's document, j the answer machine's state
#   ("l", i)   inside the OPEN line, i characters of it written
#   ("o",)     OPEN written: a newline, or the call's JSON
#   ("j", j)   inside a call's JSON, j the calls machine's state
#   ("c", i)   inside "\n</tool_call>", i characters of it written (1 when "\n" was skipped)
#   ("e", n)   after a call and n newlines: the end, or the next call
#   ("z",)     after the only call allowed: the end


class _CallAutomaton:
    """What the call constraints share: a start state, a character step, and the step
    inside a ``response_schema``'s document."""

    _first: tuple[Any, ...]
    _answer: JsonMachine | None = None

    def start(self) -> tuple[Any, ...]:
        return self._first

    def feed(self, state: tuple[Any, ...], text: str) -> tuple[Any, ...] | None:
        for c in text:
            after = self._step(state, c)
            if after is None:
                return None
            state = after
        return state

    def _step(self, state: tuple[Any, ...], c: str) -> tuple[Any, ...] | None:
        raise NotImplementedError

    def _document(self, state: tuple[Any, ...], c: str) -> tuple[Any, ...] | None:
        # ("s",): the document's first character; ("a", j): one inside it
        assert self._answer is not None
        after = self._answer.feed(self._answer.start() if state[0] == "s" else state[1], c)
        return None if after is None else ("a", after)

    def _document_ends(self, state: tuple[Any, ...], *, complete: bool) -> bool:
        # ("a", j): whether the document may end here (``accepting``) or must (``complete``)
        assert self._answer is not None
        if complete:
            return bool(self._answer.complete(state[1]))
        return bool(self._answer.accepting(state[1]))


class ToolCallConstraint(_CallAutomaton):
    """Text and calls valid for a :class:`ToolPlan` (see the module docstring).

    :param plan: the tools, the choice and whether calls may follow each other.
    :param answer: with ``auto``, a :class:`~._jsonschema.JsonMachine` of the request's
        ``response_schema``: the output is then either that document or calls.
    :raises ValueError: when a tool's ``parameters`` schema is outside the supported
        subset (the message names the tool).
    """

    def __init__(self, plan: ToolPlan, answer: JsonMachine | None = None) -> None:
        if not plan.constrained:
            raise ValueError("tool_choice 'none' is not a constraint")
        if plan.format != "hermes":
            raise ValueError(f"ToolCallConstraint writes hermes calls, not {plan.format!r} "
                             "(call_constraint picks the class of a format)")
        schema = calls_schema(plan.callable)
        try:
            self._calls = JsonMachine(schema)
        except SchemaError as exc:
            raise SchemaError(f"tools: {exc}") from None
        self._answer = answer if plan.choice == "auto" else None
        self._parallel = plan.parallel
        if self._answer is not None:
            self._first = ("s",)
        elif plan.choice == "auto":
            self._first = ("t", 0)
        else:
            self._first = ("l", 0)
        self._call_least = (len(OPEN) + int(self._calls.min_chars(self._calls.start()))
                            + len(CLOSE))

    def _step(self, state: tuple[Any, ...], c: str) -> tuple[Any, ...] | None:
        kind = state[0]
        if kind == "t":
            return _text_step(state[1], c)
        if kind == "j":
            after = self._calls.feed(state[1], c)
            if after is not None:
                return ("j", after)
            if self._calls.complete(state[1]) and c in "\n<":
                return ("c", 1 if c == "\n" else 2)
            return None
        if kind == "c":
            if _CLOSE_LINE[state[1]] != c:
                return None
            if state[1] + 1 < len(_CLOSE_LINE):
                return ("c", state[1] + 1)
            return ("e", 0) if self._parallel else ("z",)
        if kind == "l":
            if OPEN[state[1]] != c:
                return None
            return ("l", state[1] + 1) if state[1] + 1 < len(OPEN) else ("o",)
        if kind == "o":
            start = self._calls.start()
            after = start if c == "\n" else self._calls.feed(start, c)
            return None if after is None else ("j", after)
        if kind == "e":
            if c == "\n":
                return ("e", state[1] + 1) if state[1] < _GAP else None
            return ("l", 1) if c == OPEN[0] else None
        if kind == "s":
            assert self._answer is not None
            return ("l", 1) if c == OPEN[0] else self._document(state, c)
        if kind == "a":
            return self._document(state, c)
        return None  # "z": nothing may follow

    def accepting(self, state: tuple[Any, ...]) -> bool:
        kind = state[0]
        if kind == "a":
            return self._document_ends(state, complete=False)
        return kind in ("t", "e", "z")

    def complete(self, state: tuple[Any, ...]) -> bool:
        if state[0] == "a":
            return self._document_ends(state, complete=True)
        return bool(state[0] == "z")

    def min_chars(self, state: tuple[Any, ...]) -> int:
        kind = state[0]
        if kind in ("t", "e", "z"):
            return 0
        if kind == "j":
            return int(self._calls.min_chars(state[1])) + len(CLOSE)
        if kind == "c":
            return len(_CLOSE_LINE) - int(state[1])
        if kind == "l":
            return self._call_least - int(state[1])
        if kind == "o":
            return self._call_least - len(OPEN)
        assert self._answer is not None
        if kind == "a":
            return int(self._answer.min_chars(state[1]))
        return min(self._call_least, self._answer.min_chars(self._answer.start()))  # "s"


# States of the llama3 format (tuples, hashable):
#   ("d",)     auto's start: "{" opens a call, anything else is text
#   ("t",)     free text (no call can follow)
#   ("j", j)   inside a call's JSON, j the calls machine's state
#   ("p",)     after a call's ";": a space, or the next call's "{"
#   ("n",)     where a call's "{" must come


class BareCallConstraint(_CallAutomaton):
    """Text or calls in the ``llama3`` format (see the module docstring): under ``auto``
    an answer starting with ``{`` is calls, any other is text; under ``required`` or a
    name, calls only.

    :param plan: the tools, the choice and whether calls may follow each other.
    :raises ValueError: when a tool's ``parameters`` schema is outside the supported
        subset (the message names the tool).
    """

    def __init__(self, plan: ToolPlan) -> None:
        if not plan.constrained:
            raise ValueError("tool_choice 'none' is not a constraint")
        try:
            self._calls = JsonMachine(calls_schema(plan.callable, key=plan.key))
        except SchemaError as exc:
            raise SchemaError(f"tools: {exc}") from None
        self._parallel = plan.parallel
        self._first = ("d",) if plan.choice == "auto" else ("n",)
        self._call_least = int(self._calls.min_chars(self._calls.start()))

    def _step(self, state: tuple[Any, ...], c: str) -> tuple[Any, ...] | None:
        kind = state[0]
        if kind == "t":
            return state
        if kind == "j":
            after = self._calls.feed(state[1], c)
            if after is not None:
                return ("j", after)
            if c == SEPARATOR[0] and self._parallel and self._calls.complete(state[1]):
                return ("p",)
            return None
        if kind == "p" and c == SEPARATOR[1]:
            return ("n",)
        if c == "{" or kind == "d":
            after = self._calls.feed(self._calls.start(), c)
            if after is not None:
                return ("j", after)
            return ("t",) if kind == "d" else None
        return None

    def accepting(self, state: tuple[Any, ...]) -> bool:
        if state[0] == "j":
            return bool(self._calls.accepting(state[1]))
        return state[0] in ("d", "t")

    def complete(self, state: tuple[Any, ...]) -> bool:
        return state[0] == "j" and not self._parallel and bool(self._calls.complete(state[1]))

    def min_chars(self, state: tuple[Any, ...]) -> int:
        kind = state[0]
        if kind in ("d", "t"):
            return 0
        if kind == "j":
            return int(self._calls.min_chars(state[1]))
        return self._call_least


# States of both mistral formats (tuples, hashable):
#   ("t", k)   free text; its last k characters are the first k of MARKER spelled out
#              (the letters of the whole marker are refused: only the token writes it)
#   ("s",)     the start of an answer that is a schema's document or calls
#   ("a", j)   inside the schema's document, j the answer machine's state
#   ("n",)     where MARK must come
# and, after MARK, the states of each format's calls (see the two classes).


class _MarkedAutomaton(_CallAutomaton):
    """What both Mistral formats share: free text (never a marker, nor the first marker
    spelled out), :data:`MARK` opening the calls, and under ``auto`` with a
    ``response_schema`` the schema's document instead; the calls are the subclass's."""

    def _begin(self, plan: ToolPlan, answer: JsonMachine | None) -> None:
        if not plan.constrained:
            raise ValueError("tool_choice 'none' is not a constraint")
        self._answer = answer if plan.choice == "auto" else None
        if self._answer is not None:
            self._first = ("s",)
        elif plan.choice == "auto":
            self._first = ("t", 0)
        else:
            self._first = ("n",)

    # -- the calls: after MARK ------------------------------------------------------------

    def _opened(self) -> tuple[Any, ...]:
        raise NotImplementedError  # the state after MARK

    def _call_least(self) -> int:
        raise NotImplementedError  # the fewest characters after MARK

    def _call_step(self, state: tuple[Any, ...], c: str) -> tuple[Any, ...] | None:
        raise NotImplementedError

    def _call_accepting(self, state: tuple[Any, ...]) -> bool:
        raise NotImplementedError

    def _call_complete(self, state: tuple[Any, ...]) -> bool:
        raise NotImplementedError

    def _call_min(self, state: tuple[Any, ...]) -> int:
        raise NotImplementedError

    # -- text, the marker, the document ---------------------------------------------------

    def _step(self, state: tuple[Any, ...], c: str) -> tuple[Any, ...] | None:
        kind = state[0]
        if kind not in ("t", "s", "a", "n"):
            return self._call_step(state, c)
        if c == MARK:
            return self._opened() if kind != "a" else None
        if c in MARKS.values():  # the other markers only inside calls
            return None
        if kind == "t":
            matched = _watched(MARKER, state[1], c)
            return None if matched == len(MARKER) else ("t", matched)
        if kind in ("s", "a"):
            return self._document(state, c)
        return None  # "n": only the marker

    def accepting(self, state: tuple[Any, ...]) -> bool:
        kind = state[0]
        if kind == "a":
            return self._document_ends(state, complete=False)
        if kind in ("t", "s", "n"):
            return bool(kind == "t")
        return self._call_accepting(state)

    def complete(self, state: tuple[Any, ...]) -> bool:
        kind = state[0]
        if kind == "a":
            return self._document_ends(state, complete=True)
        return bool(kind not in ("t", "s", "n")) and self._call_complete(state)

    def min_chars(self, state: tuple[Any, ...]) -> int:
        kind = state[0]
        if kind == "t":
            return 0
        if kind == "a":
            assert self._answer is not None
            return int(self._answer.min_chars(state[1]))
        if kind == "s":
            assert self._answer is not None
            return min(1 + self._call_least(), self._answer.min_chars(self._answer.start()))
        if kind == "n":
            return 1 + self._call_least()
        return self._call_min(state)


# The calls of the mistral format:
#   ("m",)     after MARK: a space, or the array of calls
#   ("j", j)   inside the array of calls, j the array machine's state


class MarkedCallConstraint(_MarkedAutomaton):
    """Text and calls in the ``mistral`` format (see the module docstring): under
    ``auto`` any text, then :data:`MARK` (the ``[TOOL_CALLS]`` token) and one JSON array
    of calls, the end; under ``required`` or a name, :data:`MARK` first.

    :param plan: the tools, the choice and whether several calls may be made (the
        array's length).
    :param answer: with ``auto``, a :class:`~._jsonschema.JsonMachine` of the request's
        ``response_schema``: the output is then either that document or calls.
    :raises ValueError: when a tool's ``parameters`` schema is outside the supported
        subset (the message names the tool).
    """

    def __init__(self, plan: ToolPlan, answer: JsonMachine | None = None) -> None:
        self._begin(plan, answer)
        call = calls_schema(plan.callable, key=plan.key)
        array: dict[str, Any] = {"type": "array", "items": call, "minItems": 1}
        if "$defs" in call:  # references are to the root: the array's
            array["$defs"] = call.pop("$defs")
        if not plan.parallel:
            array["maxItems"] = 1
        try:
            self._calls = JsonMachine(array)
        except SchemaError as exc:
            raise SchemaError(f"tools: {exc}") from None
        self._least = int(self._calls.min_chars(self._calls.start()))

    def _opened(self) -> tuple[Any, ...]:
        return ("m",)

    def _call_least(self) -> int:
        return self._least

    def _call_step(self, state: tuple[Any, ...], c: str) -> tuple[Any, ...] | None:
        if c in MARKS.values():
            return None
        if state[0] == "m" and c == " ":
            return ("j", self._calls.start())
        after = self._calls.feed(self._calls.start() if state[0] == "m" else state[1], c)
        return None if after is None else ("j", after)

    def _call_accepting(self, state: tuple[Any, ...]) -> bool:
        return state[0] == "j" and bool(self._calls.accepting(state[1]))

    def _call_complete(self, state: tuple[Any, ...]) -> bool:
        return state[0] == "j" and bool(self._calls.complete(state[1]))

    def _call_min(self, state: tuple[Any, ...]) -> int:
        return int(self._calls.min_chars(state[1])) if state[0] == "j" else self._least


# The calls of the mistral-v11 format:
#   ("m", name)   after MARK: the name so far (a prefix of a callable tool's name)
#   ("i", t, k)   after tool t's name and the id marker: k characters of the id written
#   ("j", t, j)   inside tool t's arguments, j its machine's state


class NamedCallConstraint(_MarkedAutomaton):
    """Text and calls in the ``mistral-v11`` format (see the module docstring): under
    ``auto`` any text, then one or more calls, each the marker, a tool's name, an
    optional id (the id marker and nine letters or digits), the arguments marker and the
    arguments; under ``required`` or a name, a call first.

    :param plan: the tools, the choice and whether several calls may follow each other.
    :param answer: with ``auto``, a :class:`~._jsonschema.JsonMachine` of the request's
        ``response_schema``: the output is then either that document or calls.
    :raises ValueError: when a tool's ``parameters`` schema is outside the supported
        subset (the message names the tool).
    """

    def __init__(self, plan: ToolPlan, answer: JsonMachine | None = None) -> None:
        self._begin(plan, answer)
        self._names = tuple(t.name for t in plan.callable)
        self._machines: list[JsonMachine] = []
        for position, spec in enumerate(plan.tools):
            if spec.name not in self._names:
                continue
            try:
                self._machines.append(JsonMachine(spec.parameters))
            except SchemaError as exc:
                raise SchemaError(f"tools[{position}] ({spec.name}) parameters: "
                                  f"{exc}") from None
        self._parallel = plan.parallel
        # per tool, the fewest characters from its arguments marker to the end
        self._least = [1 + int(m.min_chars(m.start())) for m in self._machines]

    def _opened(self) -> tuple[Any, ...]:
        return ("m", "")

    def _call_least(self) -> int:
        return min(len(n) + least for n, least in zip(self._names, self._least, strict=True))

    def _call_step(self, state: tuple[Any, ...], c: str) -> tuple[Any, ...] | None:
        kind = state[0]
        if kind == "j":
            machine = self._machines[state[1]]
            if c == MARK:  # the next call
                return ("m", "") if self._parallel and machine.complete(state[2]) else None
            if c in MARKS.values():
                return None
            after = machine.feed(state[2], c)
            return None if after is None else ("j", state[1], after)
        if kind == "i":
            if state[2] < _ID_LENGTH:
                ok = c.isascii() and c.isalnum()
                return ("i", state[1], state[2] + 1) if ok else None
            return ("j", state[1], self._machines[state[1]].start()) if c == _ARGS else None
        # "m": the name, then the id's or the arguments' marker
        if c in (_ARGS, _ID):
            if state[1] not in self._names:
                return None
            tool = self._names.index(state[1])
            return ("j", tool, self._machines[tool].start()) if c == _ARGS else ("i", tool, 0)
        name = state[1] + c
        if c == MARK or not any(n.startswith(name) for n in self._names):
            return None
        return ("m", name)

    def _call_accepting(self, state: tuple[Any, ...]) -> bool:
        return state[0] == "j" and bool(self._machines[state[1]].accepting(state[2]))

    def _call_complete(self, state: tuple[Any, ...]) -> bool:
        return (state[0] == "j" and not self._parallel
                and bool(self._machines[state[1]].complete(state[2])))

    def _call_min(self, state: tuple[Any, ...]) -> int:
        kind = state[0]
        if kind == "j":
            return int(self._machines[state[1]].min_chars(state[2]))
        if kind == "i":
            return _ID_LENGTH - int(state[2]) + int(self._least[state[1]])
        return min(len(n) - len(state[1]) + least  # "m"
                   for n, least in zip(self._names, self._least, strict=True)
                   if n.startswith(state[1]))


def call_constraint(plan: ToolPlan, answer: JsonMachine | None = None
                    ) -> (ToolCallConstraint | BareCallConstraint | MarkedCallConstraint
                          | NamedCallConstraint):
    """The constraint of ``plan``'s format.

    :param answer: as :class:`ToolCallConstraint`'s (all formats but ``llama3``).
    :raises ValueError: for ``llama3`` calls beside a ``response_schema`` under ``auto``:
        a call and the document would both be bare JSON objects; and as the classes.
    """
    if plan.format == "hermes":
        return ToolCallConstraint(plan, answer)
    if plan.format == "mistral":
        return MarkedCallConstraint(plan, answer)
    if plan.format == "mistral-v11":
        return NamedCallConstraint(plan, answer)
    if answer is not None and plan.choice == "auto":
        raise ValueError("with the llama3 tool format a call and a response_schema's "
                         "document are both bare JSON objects: under tool_choice 'auto' "
                         "the two cannot be told apart; set tool_choice to 'required', "
                         "'none' or a tool's name, or use the hermes format")
    return BareCallConstraint(plan)


def _watched(word: str, matched: int, c: str) -> int:
    # Free text watching for ``word``: the length of the longest end of the text that
    # begins it, after ``c`` (OPEN and MARKER have no border, so a mismatch restarts at 0,
    # or at 1 on their first character).
    if word[matched] == c:
        return matched + 1
    return 1 if c == word[0] else 0


def _text_step(matched: int, c: str) -> tuple[Any, ...]:
    # hermes: free text until OPEN is written out
    matched = _watched(OPEN, matched, c)
    return ("o",) if matched == len(OPEN) else ("t", matched)
