"""``PipelineConfig.to_dict`` / ``from_dict`` round-trip exactly, every key of the file
included (stages, stream, single_flight, per-stage tables of any stage)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aieng_core import ConfigError, Kernel, PipelineConfig
from aieng_core.pipeline import STAGE_HOOKS, STAGES

_KERNEL = Kernel(env={}, entry_points=[]).load()
_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,8}", fullmatch=True)
_component = st.one_of(
    st.builds(lambda k: {"use": "rrf", "k": k}, st.integers(1, 1000)),
    st.builds(lambda s, m: {"use": "prompt", "system": s, "max_context_chars": m},
              st.text(max_size=40), st.integers(1, 10**6)),
    st.builds(lambda n: {"use": "extractive", "max_sentences": n}, st.integers(1, 9)),
    st.builds(lambda k1, b: {"use": "memory", "k1": k1, "b": b},
              st.floats(0, 5, allow_nan=False), st.floats(0, 1, allow_nan=False)),
)
_timeout = st.one_of(st.floats(min_value=0, exclude_min=True, allow_nan=False),
                     st.integers(1, 10**6))
_policy = st.fixed_dictionaries({}, optional={
    "timeout": _timeout, "on_error": st.sampled_from(["fail", "skip", "fallback"])})


@st.composite
def pipeline_dicts(draw: st.DrawFn) -> dict[str, object]:
    components = draw(st.dictionaries(_names, _component, min_size=1, max_size=4))
    implemented = set()
    for comp in components.values():
        implemented.update(_KERNEL.registry.component(comp["use"]).hooks)
    present = [s for s in STAGES if implemented.intersection(STAGE_HOOKS[s])]
    head: dict[str, object] = {"name": draw(st.text(min_size=1).filter(str.strip))}
    head.update(draw(_policy))
    if present and draw(st.booleans()):
        listed = draw(st.lists(st.sampled_from(present), min_size=1, unique=True))
        head["stages"] = sorted(listed, key=STAGES.index)
    head.update(draw(st.fixed_dictionaries({}, optional={
        "stream": st.sampled_from(["guarded", "live"]), "single_flight": st.booleans()})))
    stage = draw(st.dictionaries(st.sampled_from(STAGES), _policy, max_size=4))
    for name in ("retrieve", "rerank"):
        if name in stage and draw(st.booleans()):
            stage[name] = {**stage[name], "k": draw(st.integers(1, 10**6))}
    data: dict[str, object] = {"pipeline": head, "components": components}
    if stage or draw(st.booleans()):
        data["stage"] = stage
    return data


@given(pipeline_dicts())
def test_every_key_round_trips(data: dict[str, object]) -> None:
    """from_dict(to_dict(c)) == c; to_dict keeps every value that was given."""
    config = PipelineConfig.from_dict(data, _KERNEL.registry)
    as_dict = config.to_dict()
    again = PipelineConfig.from_dict(as_dict, _KERNEL.registry)
    assert again == config and again.to_dict() == as_dict
    head = data["pipeline"]
    assert isinstance(head, dict)
    for key, value in head.items():
        assert as_dict["pipeline"].get(key, {"stream": "guarded",
                                             "single_flight": False}.get(key)) == value
    for name, table in data.get("stage", {}).items():  # type: ignore[attr-defined]
        assert as_dict.get("stage", {}).get(name, {}) == table


def test_an_infinite_timeout_round_trips_as_no_limit() -> None:
    """``timeout = inf`` (no limit) stays inf through the dict form, and means no deadline."""
    data = {"pipeline": {"name": "p", "timeout": math.inf},
            "stage": {"retrieve": {"timeout": math.inf}},
            "components": {"docs": {"use": "memory"}}}
    config = PipelineConfig.from_dict(data, _KERNEL.registry)
    again = PipelineConfig.from_dict(config.to_dict(), _KERNEL.registry)
    assert again == config and again.policy("retrieve").timeout is None


@pytest.mark.parametrize("name", ["docs\n", "\ndocs", "do cs", "1docs", "d.ocs", "", 1])
def test_a_component_name_is_checked_whole(name: object) -> None:
    """A component's name is letters, digits, '_' or '-' only: one ending in a line break
    passed the check (a ``$`` that matches before a final newline), and a dict's key that
    is no string raised a bare TypeError."""
    data = {"pipeline": {"name": "p"}, "components": {name: {"use": "memory"}}}
    with pytest.raises(ConfigError, match="bad component name") as caught:
        PipelineConfig.from_dict(data, _KERNEL.registry)
    assert caught.value.key == f"components.{name}"
