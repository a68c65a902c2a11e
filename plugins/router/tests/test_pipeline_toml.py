"""The routers in pipelines loaded from TOML files, over scripted backends registered as
components: the documented backend per rule, a name that is not a backend, decisions
independent of the components' order, and many routed runs at once."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aieng_router
import anyio
import attrs
import pytest
import structlog
from aieng_hookspecs import ComponentRegistry, hookimpl
from aieng_hookspecs.types import Message, Request
from aieng_router import BreakerOptions, Rule, RuleOptions, RuleRouter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aieng_core import HookError, Kernel
from aieng_core.testing import ScriptedBackend

pytestmark = pytest.mark.anyio


@attrs.define(frozen=True)
class SaidOptions:
    """Options of the ``said`` test backend."""

    reply: str = "said"
    fail: bool = False


class SaidPlugin:
    """A test plugin offering ``said``: a scripted backend answering ``reply`` (or raising
    with ``fail = true``)."""

    @hookimpl
    def aieng_register_components(self, registry: ComponentRegistry) -> None:
        registry.add("said", lambda options: ScriptedBackend(
            [options.reply], fail_with=RuntimeError("down") if options.fail else None),
            options=SaidOptions)


RULES = """
[pipeline]
name = "routed-toml"

[stage.generate]
on_error = "fallback"

[components.router]
use = "rule-router"
default = "small"
fallbacks = ["large"]

[[components.router.rules]]
name = "contracts"
target = "large"
pattern = '\\b(contract|clause|liability)\\b'

[[components.router.rules]]
name = "café"
target = "french"
pattern = "café|crème brûlée"

[[components.router.rules]]
target = "vip"
metadata = { tier = "vip" }
fallbacks = ["large"]
{backends}
"""

BACKENDS = {"small": 'reply = "from small"', "large": 'reply = "from large"',
            "french": 'reply = "from french"', "vip": 'reply = "vip"\nfail = true'}


def rules_toml(order: tuple[str, ...] = tuple(BACKENDS), extra: str = "") -> str:
    """The rule pipeline with its backends' tables in ``order``."""
    tables = "".join(f'\n[components.{name}]\nuse = "said"\n{BACKENDS[name]}\n'
                     for name in order)
    return RULES.replace("{backends}", tables + extra)


def ask(text: str, **metadata: str) -> Request:
    """A one-message request carrying ``metadata``."""
    return Request(messages=(Message("user", text),), metadata=metadata)


@contextmanager
def plugins(register_plugin: Any) -> Iterator[None]:
    with register_plugin(aieng_router, "router") as info, \
            register_plugin(SaidPlugin(), "said"):
        assert info.status == "loaded", info.error
        yield


async def test_rules_from_toml_pick_the_documented_backend(
        aieng_kernel: Kernel, register_plugin: Any, tmp_path: Path) -> None:
    """Each rule routes to its target: a word pattern (case ignored), a unicode pattern
    matched on the composed form of a decomposed message, metadata with a failing target
    that falls back to its fallback, and the default when nothing matches."""
    path = tmp_path / "routed.toml"
    path.write_text(rules_toml(), encoding="utf-8")
    with plugins(register_plugin):
        async with aieng_kernel.load_pipeline(path) as pipeline:
            assert pipeline.backends == tuple(BACKENDS)
            contract = await pipeline.run("Review this CONTRACT please")
            assert contract.answer == "from large"
            assert contract.route is not None and contract.route.reason == "rule:contracts"
            french = await pipeline.run("un cafe\u0301 et une cre\u0300me bru\u0302le\u0301e")
            assert french.answer == "from french"
            assert french.route is not None and french.route.reason == "rule:café"
            vip = await pipeline.run(ask("hello", tier="vip"))
            assert vip.answer == "from large"
            assert vip.route is not None and vip.route.target == "vip"
            plain = await pipeline.run("hello")
            assert plain.answer == "from small"
            assert plain.route is not None and plain.route.fallbacks == ("large",)


async def test_a_name_that_is_not_a_backend_fails_the_opening(
        aieng_kernel: Kernel, register_plugin: Any, tmp_path: Path) -> None:
    """A rule naming a backend the pipeline lacks (a typo, a table left out) fails the
    pipeline's opening, naming the rule, the backend and the pipeline's backends, with the
    closest name: it would never be routed to."""
    path = tmp_path / "typo.toml"
    path.write_text(rules_toml(("small", "large", "vip"),
                               extra='\n[components.frensh]\nuse = "said"\n'),
                    encoding="utf-8")
    with plugins(register_plugin), pytest.raises(HookError) as caught:
        async with aieng_kernel.load_pipeline(path):
            pass
    message = str(caught.value)
    assert "rule café target names backend 'french'" in message
    assert "(its backends: small, large, vip, frensh); did you mean 'frensh'?" in message
    assert caught.value.stage == "open"


async def test_a_router_used_without_a_pipeline_warns_once_of_unknown_names() -> None:
    """Called directly (no pipeline opened it, so nothing was checked), a router passes over
    a name that is not a candidate and says so once, naming it and the candidates."""
    router = RuleRouter(RuleOptions(rules=(Rule(target="missing", fallbacks=("small",)),)))
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            route = router.aieng_route(ask("hi"), ["small", "large"])
            assert route is not None and route.target == "small"
    unknown = [entry for entry in logs if entry["event"] == "router.unknown_backend"]
    assert [(e["backend"], e["candidates"]) for e in unknown] == [
        ("missing", ["small", "large"])]


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations(tuple(BACKENDS)),
       prompt=st.sampled_from(["the clause", "café ☕", "hello", "ünïcödé 🚀", ""]),
       vip=st.booleans())
async def test_rule_decisions_do_not_depend_on_the_components_order(
        aieng_kernel: Kernel, register_plugin: Any, tmp_path: Path,
        order: list[str], prompt: str, vip: bool) -> None:
    """The route (target, fallbacks, reason) and the answer are the same whatever order
    the backends' tables come in the file."""
    request = ask(prompt or " ", **({"tier": "vip"} if vip else {}))
    seen = []
    for names in (tuple(BACKENDS), tuple(order)):
        path = tmp_path / "ordered.toml"
        path.write_text(rules_toml(names), encoding="utf-8")
        with plugins(register_plugin):
            async with aieng_kernel.load_pipeline(path) as pipeline:
                result = await pipeline.run(request)
        seen.append((result.route, result.answer))
    assert seen[0] == seen[1]


async def test_many_routed_runs_at_once(aieng_kernel: Kernel) -> None:
    """Sixty runs at once on one routed pipeline: each answer comes from its rule's
    backend, and the raising target's runs all fall back."""
    router = RuleRouter(RuleOptions(
        default="small", rules=(Rule(target="large", pattern="big"),
                                Rule(target="broken", pattern="fail", fallbacks=("small",))),
        breaker=BreakerOptions(failures=1000)))
    backends = {"small": ScriptedBackend(["small"], delay=0.01),
                "large": ScriptedBackend(["large"], delay=0.01),
                "broken": ScriptedBackend(fail_with=RuntimeError("down"))}
    pipeline = aieng_kernel.compose({"router": router, **backends},
                                    stage={"generate": {"on_error": "fallback"}})
    prompts = list(itertools.islice(itertools.cycle(["big one", "please fail", "hi"]), 60))
    expected = {"big one": "large", "please fail": "small", "hi": "small"}
    answers: dict[int, str | None] = {}

    async def one(index: int) -> None:
        answers[index] = (await pipeline.run(prompts[index])).answer

    async with pipeline, anyio.create_task_group() as group:
        for index in range(len(prompts)):
            group.start_soon(one, index)
    assert [answers[i] for i in range(len(prompts))] == [expected[p] for p in prompts]
    assert len(backends["broken"].requests) == 20
