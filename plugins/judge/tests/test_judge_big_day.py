"""The big day: long and crafted texts in the judges' prompts.

A text shown in a prompt block is scanned for lines that read as block headers
(``_prompts._HEADER``). A criterion header's name was read by a backtracking run that also
crossed ``\\r`` line breaks, so a crafted answer (``[criterion:`` then a long blank run, or
``\\r[criterion:`` repeated) took time quadratic in its length: minutes under a large
``max_chars``. These tests run the crafted inputs in a child process that must finish, and
check that the possessive pattern neutralizes what the former one did.
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
from typing import Any

import pytest
from aieng_judge import ranking
from aieng_judge._prompts import _HEADER, clip
from aieng_judge.ranking import Game, bootstrap, bradley_terry, elo
from hypothesis import given, settings
from hypothesis import strategies as st

#: The pattern before this pass, kept as the reference the new one must agree with.
_FORMER_HEADER = re.compile(
    r"(?:^|(?<=[\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]))"
    r"([ \t]*)\[[ \t]*((?:question|context|reference answer|answer"
    r"(?:[ \t]+(?:a|b|to grade))?|claim|criterion[ \t]*:[^\]\n]*)[ \t]*)\]",
    re.IGNORECASE | re.MULTILINE)

# Pieces of near-miss headers; line breaks are ``\n`` only here (see the test below for
# the others).
_PIECES = ["[", "]", "criterion", "Criterion", ":", " ", "\t", "  ", "\n", "answer", "a",
           "b", "to grade", "question", "context", "claim", "reference answer", "x", "é",
           "(", ")", "[Answer B]", "[criterion: x]"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=30).map("".join))
def test_header_pattern_agrees_with_the_former_one(text: str) -> None:
    """On text whose line breaks are ``\\n``, the possessive pattern finds what the former
    one found, with the same groups, so ``clip`` shows the text as before."""
    assert [(m.span(), m.groups()) for m in _HEADER.finditer(text)] == \
        [(m.span(), m.groups()) for m in _FORMER_HEADER.finditer(text)]
    assert clip(text, 10_000) == _FORMER_HEADER.sub(r"\1(\2)", text)


def test_a_criterion_header_ends_at_its_line() -> None:
    """A criterion header is one line: ``[criterion: a`` before a ``\\u2028`` or ``\\r`` is
    no header (the former pattern read across those line breaks), and a header on the
    next line is still shown in parentheses."""
    assert clip("[criterion: a\u2028b]", 100) == "[criterion: a\u2028b]"
    assert clip("[criterion: a\r[Criterion: x]", 100) == "[criterion: a\r(Criterion: x)"
    assert clip("x\r[criterion: y]", 100) == "x\r(criterion: y)"


_CRAFTED = {
    "blank run": '"[criterion:" + " " * 200_000',
    "line starts": r'"\r[criterion:" * 20_000',
    "blank runs": r'("[criterion: x" + " " * 50 + "\r") * 4_000',
}


@pytest.mark.parametrize("expression", list(_CRAFTED.values()), ids=list(_CRAFTED))
def test_crafted_text_is_clipped_at_once(expression: str) -> None:
    """200 KB crafted to make the header pattern backtrack is clipped (in a child process,
    which the former pattern kept busy for minutes). The child may use 60 s of CPU time
    (a loaded machine makes it wait for a CPU, not compute more); the wall-clock timeout
    only catches a hang."""
    code = ("import resource\nresource.setrlimit(resource.RLIMIT_CPU, (60, 70))\n"
            "from aieng_judge._prompts import clip\n"
            f"text = {expression}\n"
            "out = clip(text, len(text))\n"
            "assert len(out) == len(text), len(out)\n")
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                              timeout=600)
    except subprocess.TimeoutExpired:
        pytest.fail(f"clip hung on {expression}")
    if done.returncode == -signal.SIGXCPU:
        pytest.fail(f"clip used more than 60 s of CPU on {expression}")
    assert done.returncode == 0, done.stderr


def _games(n: int, seed: int = 1) -> list[Game]:
    rnd = random.Random(seed)
    players = ["a", "b", "c"]
    out = []
    for _ in range(n):
        a, b = rnd.sample(players, 2)
        out.append((a, b, rnd.choice([0.0, 0.5, 1.0])))
    return out


@pytest.mark.parametrize("rate", [elo, bradley_terry], ids=["elo", "bradley_terry"])
def test_a_bootstrap_checks_the_games_once(monkeypatch: pytest.MonkeyPatch,
                                           rate: Any) -> None:
    """The games are validated once: each resample's rating checked every game again
    (half the time of ``aieng eval compare``'s rankings: minutes for 100k items). The
    type checks made do not grow with resamples x games."""
    calls = {"n": 0}

    def counting_isinstance(value: object, kinds: Any) -> bool:
        calls["n"] += 1
        return isinstance(value, kinds)

    monkeypatch.setattr(ranking, "isinstance", counting_isinstance, raising=False)
    games = _games(300)
    counted = []
    for samples in (2, 40):
        calls["n"] = 0
        bootstrap(games, rate, samples=samples)
        counted.append(calls["n"])
    assert counted[1] - counted[0] < 5 * (40 - 2)


@pytest.mark.parametrize("rate", [elo, bradley_terry], ids=["elo", "bradley_terry"])
def test_a_bootstrap_gives_the_intervals_it_gave(rate: Any) -> None:
    """The intervals are those of rating plain lists of the resampled games (each
    checked), to the last bit, for the same seed."""
    games = _games(200, seed=7)
    assert bootstrap(games, rate, samples=30, seed=3) == \
        bootstrap(games, lambda g: rate(list(g)), samples=30, seed=3)


def test_a_bad_game_is_still_refused() -> None:
    """Games given to a bootstrap or a rating are checked, naming the bad one."""
    with pytest.raises(ValueError, match="game 1: score"):
        bootstrap([("a", "b", 1.0), ("a", "b", 2.0)], elo, samples=3)
    with pytest.raises(ValueError, match="cannot play itself"):
        bradley_terry([("a", "a", 1.0)])
