"""``pii``'s restore vault over many runs: one run's (or caller's) values never reach
another's answer, and the vault holds nothing once the runs are over."""

from __future__ import annotations

import random

import anyio
import pytest
from aieng_guardrails import PIIGuard, PIIOptions, Vault
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Completion, GuardVerdict, Message, Request
from hypothesis import given, settings
from hypothesis import strategies as st

from aieng_core import Kernel

pytestmark = pytest.mark.anyio


def ask(text: str) -> Request:
    """A one-message request."""
    return Request(messages=(Message("user", text),))


def test_direct_calls_redacted_alike_never_get_each_others_values() -> None:
    """Outside a run the vault key is the redacted prompt: two callers whose prompts redact
    alike share it. Neither may get the other's value back; the placeholder stays."""
    guard = PIIGuard(PIIOptions(restore=True))
    alice = guard.check_input(ask("mail alice@example.com"))
    bob = guard.check_input(ask("mail bob@example.org"))
    assert alice is not None and bob is not None
    assert alice.text == bob.text == "mail <EMAIL_1>"
    answer = guard.check_output(ask(alice.text), Completion(text="Sent to <EMAIL_1>."))
    assert answer is None or "bob@example.org" not in answer.text
    # A third caller comes in after alice's answer: bob's answer gets neither value.
    assert guard.check_input(ask("mail carol@example.net")) is not None
    answer = guard.check_output(ask(bob.text), Completion(text="Sent to <EMAIL_1>."))
    assert answer is None or "carol@example.net" not in answer.text


def test_the_same_values_twice_still_restore() -> None:
    """The same prompt redacted twice (a retry) is no conflict: its values come back."""
    guard = PIIGuard(PIIOptions(restore=True))
    for _ in range(2):
        verdict = guard.check_input(ask("mail alice@example.com"))
    assert verdict is not None
    answer = guard.check_output(ask(verdict.text), Completion(text="Sent to <EMAIL_1>."))
    assert answer is not None and answer.text == "Sent to alice@example.com."


def test_a_vault_key_holding_another_mapping_gives_nothing_until_it_expires() -> None:
    """Two different mappings under one key make it ambiguous: ``get`` gives nothing, a
    ``pop`` does not clear that, and it expires as any entry does."""
    now = [0.0]
    vault = Vault(max_entries=4, ttl=10.0, clock=lambda: now[0])
    vault.put(["k"], {"<EMAIL_1>": "a@x.io"})
    vault.put(["k"], {"<EMAIL_1>": "a@x.io"})
    assert vault.get(["k"]) == {"<EMAIL_1>": "a@x.io"}
    vault.put(["k"], {"<EMAIL_1>": "b@x.io"})
    assert vault.get(["k"]) == {}
    vault.pop(["k"])
    vault.put(["k"], {"<EMAIL_1>": "c@x.io"})
    assert vault.get(["k"]) == {}
    now[0] = 11.0
    assert len(vault) == 0
    vault.put(["k"], {"<EMAIL_1>": "d@x.io"})
    assert vault.get(["k"]) == {"<EMAIL_1>": "d@x.io"}


class EchoBackend:
    """A backend double: answers with the (redacted) prompt after a random short wait, so
    that concurrent runs interleave their guards."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)

    @hookimpl
    async def aieng_generate(self, request: Request) -> Completion:
        await anyio.sleep(self.random.random() / 500)
        return Completion(text=f"You said: {request.prompt}")


@settings(max_examples=15)
@given(users=st.lists(st.from_regex(r"[a-z]{1,8}", fullmatch=True), min_size=2,
                      max_size=12, unique=True),
       seed=st.integers(0, 1000))
async def test_concurrent_runs_restore_only_their_own_values(users: list[str],
                                                           seed: int) -> None:
    """Concurrent runs with the same prompt shape each get their own address back, never
    another run's; the vault is empty once every run has answered."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        guard = PIIGuard(PIIOptions(restore=True))
        pipeline = kernel.compose({"pii": guard, "llm": EchoBackend(seed)}, name="vault")
        answers: dict[str, str] = {}

        async def one(user: str) -> None:
            result = await pipeline.run(ask(f"my address is {user}@example.com"))
            assert result.completion is not None
            answers[user] = result.completion.text

        async with anyio.create_task_group() as group:
            for user in users:
                group.start_soon(one, user)
        await pipeline.aclose()
    for user, answer in answers.items():
        assert answer == f"You said: my address is {user}@example.com"
    assert len(guard.vault) == 0


class BlockEverything:
    """An input guard double that blocks every request (after ``pii`` has redacted it)."""

    @hookimpl
    def aieng_guard_input(self, request: Request) -> GuardVerdict:
        return GuardVerdict(action="block", text=request.prompt)


class Failing:
    """A backend double that fails every call."""

    @hookimpl
    def aieng_generate(self, request: Request) -> Completion:
        raise RuntimeError("the model is down")


async def test_runs_that_never_reach_the_output_guard_release_their_mapping() -> None:
    """A run blocked after ``pii`` redacted it, or whose model failed, never restores: its
    mapping is dropped when the run ends, not kept for ``vault_ttl`` (where it would take
    the place of runs still waiting for their answers)."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        guard = PIIGuard(PIIOptions(restore=True))
        blocked = kernel.compose({"pii": guard, "stop": BlockEverything(),
                                  "llm": EchoBackend(0)}, name="blocked")
        for n in range(3):
            result = await blocked.run(ask(f"mail user{n}@example.com"))
            assert result.status == "blocked"
        other = PIIGuard(PIIOptions(restore=True))
        failing = kernel.compose({"pii": other, "llm": Failing()}, name="failing",
                                 on_error="skip")
        result = await failing.run(ask("mail user@example.com"))
        assert result.completion is None or result.completion.finish_reason == "error"
    assert len(guard.vault) == 0 and len(other.vault) == 0


@pytest.mark.parametrize(("value", "error", "words"), [
    (True, TypeError, "number of seconds"),         # was taken for 1 second
    ("10m", TypeError, "the string '10m'"),         # a unit: minutes or metres?
    (float("inf"), ValueError, "finite"),           # never expiring: held by size alone
    (float("nan"), ValueError, "finite"),
    (0, ValueError, "positive"),
    (-5.0, ValueError, "positive"),
])
def test_vault_ttl_is_a_positive_finite_number_of_seconds(
        value: object, error: type[Exception], words: str) -> None:
    """``vault_ttl`` is a duration in seconds: a boolean (read as 1 s), a string with a
    unit, infinity, NaN, zero or a negative number is refused with a message naming the
    option and its unit."""
    with pytest.raises(error, match="vault_ttl") as caught:
        PIIOptions(vault_ttl=value)  # type: ignore[arg-type]
    assert words in str(caught.value)


@pytest.mark.parametrize("ttl", [float("nan"), float("inf"), 0.0])
def test_a_vault_refuses_a_ttl_that_is_not_a_positive_finite_number(ttl: float) -> None:
    """A :class:`Vault` built directly with a NaN time to live expired every mapping at
    once (no answer was ever restored) and with an infinite one kept them for ever; both
    are refused."""
    with pytest.raises(ValueError, match="ttl must be a positive, finite number of seconds"):
        Vault(ttl=ttl)
