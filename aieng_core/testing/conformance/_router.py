"""The conformance suite of the ``router`` role."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from aieng_hookspecs.types import Message, Request, Route

from ...kernel import Kernel
from ...pipeline import Pipeline
from .. import strategies as aist
from .._kit import EventCapture
from ..doubles import ScriptedBackend
from ._base import PROPERTY, STAGE, RoleSuite, check_valid, left_unchanged, unique

__all__ = ["RouterSuite"]

#: Candidate lists: unique component names, none included.
_CANDIDATES = st.lists(st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,15}", fullmatch=True),
                       max_size=6, unique=True)


class RouterSuite(RoleSuite):
    """Conformance of a router (``aieng_route``).

    Subclass it with a ``component`` fixture returning the router::

        class TestMyRouter(RouterSuite):
            @pytest.fixture
            def component(self) -> MyRouter:
                return MyRouter()

    A router whose options name backends lists them in ``backends`` (default ``("alpha",
    "beta")``): the suite's pipeline offers a scripted backend of each name.

    For any request and any candidate list, the router returns ``None`` ("no opinion") or a
    route whose target and fallbacks are among the candidates, the fallbacks unique and
    without the target. With no candidates only ``None`` is possible. The request is left
    as it was given.
    """

    role = "router"
    #: the backends of :meth:`test_routes_in_a_pipeline`'s pipeline; a router checks the
    #: names its options use against the pipeline's backends when it opens, so set this to
    #: the names yours uses (each becomes a scripted backend answering ``from <name>``)
    backends: tuple[str, ...] = ("alpha", "beta")
    required_hooks = ("aieng_route",)
    role_hooks = ("aieng_route",)

    async def route(self, pipeline: Pipeline, request: Request, candidates: Sequence[str]) -> Any:
        """``aieng_route`` through the pipeline's dispatcher; ``None`` when no opinion
        (failing when the impl changes the request in place)."""
        found = await left_unchanged(
            pipeline.dispatcher.first("aieng_route", {"request": request,
                                                      "candidates": tuple(candidates)},
                                      stage=STAGE),
            "aieng_route", request=request)
        return None if found is None else found[0]

    async def steady_call(self, pipeline: Pipeline, i: int) -> None:
        """A request of its own (made of ``i``) routed among :attr:`backends`."""
        await self.route(pipeline, Request(messages=(Message("user", f"question {i}"),)),
                         self.backends)

    def check_route(self, route: object, candidates: Sequence[str]) -> Route | None:
        """``None`` or a route among the candidates."""
        if route is None:
            return None
        assert isinstance(route, Route), (
            f"aieng_route returned {type(route).__name__}, expected Route")
        check_valid(route, "the route")
        assert route.target in candidates, (
            f"target {route.target!r} is not a candidate ({list(candidates)})")
        stray = [f for f in route.fallbacks if f not in candidates]
        assert not stray, f"fallbacks {stray} are not candidates ({list(candidates)})"
        assert unique(list(route.fallbacks)), f"fallbacks repeat: {route.fallbacks}"
        assert route.target not in route.fallbacks, "the target is also a fallback"
        return route

    @PROPERTY
    @given(request=aist.requests(), candidates=_CANDIDATES)
    async def test_routes_among_the_candidates(
        self, conformance_pipeline: Pipeline, request: Request, candidates: list[str]
    ) -> None:
        """Any request and candidate list give None or a route among the candidates."""
        self.check_route(await self.route(conformance_pipeline, request, candidates),
                         candidates)

    async def test_routes_in_a_pipeline(self, aieng_kernel: Kernel, component: object) -> None:
        """Between the suite's backends (:attr:`backends`), the routed target answers the
        run."""
        backends = {name: ScriptedBackend([f"from {name}"]) for name in self.backends}
        pipeline = self.compose(aieng_kernel, component, stages=["route", "generate"],
                                others=backends)
        result = await pipeline.run(Request(messages=(Message("user", "Route me."),)))
        assert result.status == "ok"
        candidates = list(pipeline.backends)
        route = self.check_route(result.route, candidates)
        if route is not None and route.target in backends:
            assert result.answer == f"from {route.target}"

    async def test_does_not_block_the_loop(
        self, conformance_pipeline: Pipeline, captured_events: EventCapture
    ) -> None:
        """Routing never stalls the event loop."""
        requests = [Request(messages=(Message("user", text),))
                    for text in ("Refund my order", "Write a poem", "", "東京")]
        async with self.loop_watch(captured_events):
            for request in requests:
                await self.route(conformance_pipeline, request, ["small", "large", "local"])
