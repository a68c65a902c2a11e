"""Pipeline files: validation errors name file, key path, expectation and choices."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aieng_core import ConfigError, Kernel, PipelineConfig
from aieng_core.pipeline import STAGE_HOOKS, STAGES

GOOD = """
[pipeline]
name = "qa"
stages = ["retrieve", "context", "generate"]

[stage.retrieve]
k = 5
on_error = "skip"

[components.docs]
use = "memory"

[components.prompt]
use = "prompt"
max_context_chars = 2000

[components.llm]
use = "extractive"
"""


@pytest.fixture
def kernel() -> Kernel:
    return Kernel(env={}, entry_points=[]).load()


def load(kernel: Kernel, tmp_path: Path, text: str | bytes) -> PipelineConfig:
    path = tmp_path / "pipeline.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return PipelineConfig.load(path, kernel.registry)


def test_good_file_loads(kernel: Kernel, tmp_path: Path) -> None:
    """A valid file yields typed options, stage overrides and the listed stages."""
    config = load(kernel, tmp_path, GOOD)
    assert config.name == "qa"
    assert config.stages == ("retrieve", "context", "generate")
    assert config.policy("retrieve").on_error == "skip"
    assert config.policy("generate").on_error == "fail"
    assert config.k("retrieve", 10) == 5
    assert config.components["prompt"].options.max_context_chars == 2000


def test_name_defaults_to_file_stem(kernel: Kernel, tmp_path: Path) -> None:
    """A file without pipeline.name is named after the file."""
    config = load(kernel, tmp_path, '[pipeline]\n[components.a]\nuse = "memory"\n')
    assert config.name == "pipeline"


MALFORMED = [
    # (id, file text, key path in the message, words that must appear)
    ("unknown-component", '[pipeline]\nname="x"\n[components.a]\nuse = "bm52"\n',
     "components.a.use", ["unknown component 'bm52'", "valid choices", "memory"]),
    ("missing-use", '[pipeline]\nname="x"\n[components.a]\nk = 3\n',
     "components.a.use", ["missing 'use'", "valid choices"]),
    ("use-not-string", '[pipeline]\nname="x"\n[components.a]\nuse = 3\n',
     "components.a.use", ["expected a string"]),
    ("wrong-option-type", '[pipeline]\nname="x"\n[components.a]\nuse = "rrf"\nk = "60"\n',
     "components.a.k", ["expected int", "str"]),
    ("unknown-option", '[pipeline]\nname="x"\n[components.a]\nuse = "rrf"\nkk = 1\n',
     "components.a.kk", ["unknown option 'kk'", "valid choices: k"]),
    ("option-validator", '[pipeline]\nname="x"\n[components.a]\nuse = "rrf"\nk = 0\n',
     "components.a.k", ["k"]),
    ("second-validator-of-a-list", '[pipeline]\nname="x"\n[components.a]\nuse="memory"\nb=2.0\n',
     "components.a.b", ["must be <= 1"]),
    ("bad-stage-name", '[pipeline]\nname="x"\nstages=["retreive"]\n[components.a]\nuse="memory"\n',
     "pipeline.stages[0]", ["unknown stage 'retreive'", "retrieve"]),
    ("stage-without-component", '[pipeline]\nname="x"\nstages=["rerank"]\n'
     '[components.a]\nuse="memory"\n', "pipeline.stages", ["no component implements aieng_rerank"]),
    ("stages-out-of-order", '[pipeline]\nname="x"\nstages=["generate","retrieve"]\n'
     '[components.a]\nuse="memory"\n[components.b]\nuse="extractive"\n',
     "pipeline.stages", ["out of order"]),
    ("duplicate-stage", '[pipeline]\nname="x"\nstages=["retrieve","retrieve"]\n'
     '[components.a]\nuse="memory"\n', "pipeline.stages", ["listed twice"]),
    ("empty-stages", '[pipeline]\nname="x"\nstages=[]\n[components.a]\nuse="memory"\n',
     "pipeline.stages", ["no stages"]),
    ("empty-pipeline", '[pipeline]\nname="x"\n', "components", ["no components"]),
    ("empty-components-table", '[pipeline]\nname="x"\n[components]\n', "components",
     ["no components"]),
    ("no-pipeline-table", '[components.a]\nuse="memory"\n', "pipeline",
     ["missing the [pipeline]", "it may be empty"]),
    ("bad-stream", '[pipeline]\nstream="fast"\n[components.a]\nuse="memory"\n',
     "pipeline.stream", ["guarded, live"]),
    ("misspelt-pipeline-table", '[pipline]\nname="x"\n[components.a]\nuse="memory"\n',
     "pipline", ["unknown key 'pipline'", "valid choices: pipeline, stage, components"]),
    ("unknown-top-key", '[pipeline]\nname="x"\n[stagez.a]\n[components.a]\nuse="memory"\n',
     "stagez", ["unknown key", "valid choices: pipeline, stage, components"]),
    ("unknown-pipeline-key", '[pipeline]\nname="x"\ntimout=3\n[components.a]\nuse="memory"\n',
     "pipeline.timout", ["unknown key", "timeout"]),
    ("bad-timeout", '[pipeline]\nname="x"\ntimeout=-1\n[components.a]\nuse="memory"\n',
     "pipeline.timeout", ["positive number"]),
    ("bad-on-error", '[pipeline]\nname="x"\non_error="ignore"\n[components.a]\nuse="memory"\n',
     "pipeline.on_error", ["fail, skip, fallback"]),
    ("unknown-stage-table", '[pipeline]\nname="x"\n[stage.fetch]\n[components.a]\nuse="memory"\n',
     "stage.fetch", ["unknown stage 'fetch'"]),
    ("k-on-wrong-stage", '[pipeline]\nname="x"\n[stage.generate]\nk=3\n[components.a]\n'
     'use="memory"\n', "stage.generate.k", ["unknown key 'k'"]),
    ("bad-k", '[pipeline]\nname="x"\n[stage.retrieve]\nk=0\n[components.a]\nuse="memory"\n',
     "stage.retrieve.k", ["integer >= 1"]),
    ("component-not-table", '[pipeline]\nname="x"\n[components]\na = "memory"\n',
     "components.a", ["expected a table"]),
    ("bad-component-name", '[pipeline]\nname="x"\n[components."my comp"]\nuse="memory"\n',
     "components.my comp", ["bad component name"]),
    ("name-wrong-type", '[pipeline]\nname=3\n[components.a]\nuse="memory"\n',
     "pipeline.name", ["non-empty string"]),
    ("string-for-list", '[pipeline]\nname="x"\nstages="retrieve"\n[components.a]\nuse="memory"\n',
     "pipeline.stages", ["array of stage names"]),
    ("bad-toml", '[pipeline\nname="x"\n', "", ["invalid TOML", "line 1"]),
]


@pytest.mark.parametrize(("text", "key", "words"), [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_malformed_files_fail_clearly(kernel: Kernel, tmp_path: Path, text: str, key: str,
                                      words: list[str]) -> None:
    """Each malformed file fails with the file, the key path and a useful explanation."""
    with pytest.raises(ConfigError) as caught:
        load(kernel, tmp_path, text)
    message = str(caught.value)
    assert message.startswith(str(tmp_path / "pipeline.toml")), message
    assert caught.value.key == key, message
    for word in words:
        assert word in message, message


def test_inf_timeout_means_no_limit_and_round_trips(kernel: Kernel, tmp_path: Path) -> None:
    """`timeout = inf` (valid TOML) means no limit, per pipeline or per stage."""
    config = load(kernel, tmp_path, '[pipeline]\nname="x"\ntimeout=inf\n[stage.generate]\n'
                  'timeout=2\n[components.a]\nuse="extractive"\n')
    assert config.policy("retrieve").timeout is None
    assert config.policy("generate").timeout == 2.0
    assert PipelineConfig.from_dict(config.to_dict(), kernel.registry) == config


def test_missing_file(kernel: Kernel, tmp_path: Path) -> None:
    """A missing file is a ConfigError naming the file, not a raw FileNotFoundError."""
    with pytest.raises(ConfigError, match="file not found"):
        PipelineConfig.load(tmp_path / "nope.toml", kernel.registry)


@pytest.mark.parametrize("kind", ["device", "fifo", "folder"])
def test_a_path_that_is_no_regular_file_is_refused_before_reading(
        kernel: Kernel, tmp_path: Path, kind: str) -> None:
    """A device (``/dev/zero`` would be read until memory runs out), a FIFO (reading it
    blocks until a writer comes) or a folder is a ConfigError naming it, read from no."""
    if kind == "device":
        path = Path("/dev/zero")
    elif kind == "fifo":
        path = tmp_path / "pipe.toml"
        os.mkfifo(path)
    else:
        path = tmp_path
    with pytest.raises(ConfigError, match="not a regular file") as caught:
        PipelineConfig.load(path, kernel.registry)
    assert str(path) in str(caught.value)


def test_non_utf8_file(kernel: Kernel, tmp_path: Path) -> None:
    """A file that is not UTF-8 fails with the byte offset."""
    with pytest.raises(ConfigError, match="not UTF-8"):
        load(kernel, tmp_path, b'[pipeline]\nname = "\xff"\n')


@pytest.mark.parametrize(("text", "suggested"), [
    ('[pipline]\n[components.a]\nuse="memory"\n', "pipeline"),
    ('[pipeline]\ntimout=3\n[components.a]\nuse="memory"\n', "timeout"),
    ('[pipeline]\nstages=["retreive"]\n[components.a]\nuse="memory"\n', "retrieve"),
    ('[pipeline]\n[stage.generat]\n[components.a]\nuse="memory"\n', "generate"),
    ('[pipeline]\n[stage.retrieve]\ntimeot=3\n[components.a]\nuse="memory"\n', "timeout"),
    ('[pipeline]\n[components.a]\nuse="memroy"\n', "memory"),
    ('[pipeline]\n[components.a]\nuse="Memory"\n', "memory"),
    ('[pipeline]\n[components.a]\nuse="memory"\ndocument="d"\n', "documents"),
], ids=["table", "key", "stage", "stage-table", "stage-key", "component", "case", "option"])
def test_a_misspelt_name_gets_the_closest_choice_suggested(kernel: Kernel, tmp_path: Path,
                                                           text: str, suggested: str) -> None:
    """A misspelt key, stage, component or option names the choice it is closest to."""
    with pytest.raises(ConfigError, match=rf"\(did you mean '{suggested}'\?\)"):
        load(kernel, tmp_path, text)


def test_nothing_is_suggested_when_no_choice_is_close(kernel: Kernel, tmp_path: Path) -> None:
    """A name like none of the choices gets no guess, only the list of choices."""
    with pytest.raises(ConfigError) as caught:
        load(kernel, tmp_path, '[pipeline]\n[components.a]\nuse="zzz"\n')
    assert "did you mean" not in str(caught.value)
    assert "valid choices: extractive, memory" in str(caught.value)


def test_a_byte_order_mark_and_crlf_line_ends_are_read(kernel: Kernel,
                                                      tmp_path: Path) -> None:
    """A file saved by a Windows editor (UTF-8 with a BOM, CRLF line ends) loads as the
    same file without them."""
    plain = load(kernel, tmp_path, GOOD)
    windows = load(kernel, tmp_path, b"\xef\xbb\xbf" + GOOD.replace("\n", "\r\n").encode())
    assert windows == plain


def test_a_bad_byte_after_a_byte_order_mark_is_placed_in_the_file(kernel: Kernel,
                                                                  tmp_path: Path) -> None:
    """The offset of a byte that is not UTF-8 counts the BOM: it is the byte in the file."""
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 5\)"):
        load(kernel, tmp_path, b"\xef\xbb\xbf# \xff\n[pipeline]\n")


def test_component_that_fails_to_start(kernel: Kernel, tmp_path: Path) -> None:
    """A component whose constructor raises is reported with its key, plugin and cause."""
    path = tmp_path / "p.toml"
    path.write_text('[pipeline]\nname="x"\n[components.docs]\nuse="memory"\n'
                    f'documents="{tmp_path / "missing"}"\n')
    with pytest.raises(ConfigError) as caught:
        kernel.load_pipeline(path)
    assert caught.value.key == "components.docs"
    assert "FileNotFoundError" in str(caught.value) and "builtin" in str(caught.value)


def test_validator_errors_name_the_option_when_it_is_known() -> None:
    """A custom validator's error names the option it checked (components.a.size); a check
    spanning options (__attrs_post_init__) names the component's table."""
    from aieng_core.pipeline._options import structure_options

    @attrs.frozen
    class Options:
        low: int = 0
        size: int = attrs.field(default=1)

        @size.validator
        def _even(self, attribute: attrs.Attribute[int], value: int) -> None:
            if value % 2:
                raise ValueError(f"size must be even, got {value}")

        def __attrs_post_init__(self) -> None:
            if self.low > self.size:
                raise ValueError("low must not exceed size")

    with pytest.raises(ConfigError) as caught:
        structure_options(Options, {"size": 3}, source="f.toml", key="components.a")
    assert caught.value.key == "components.a.size"
    assert "size must be even, got 3" in str(caught.value)
    with pytest.raises(ConfigError) as spanning:
        structure_options(Options, {"low": 4, "size": 2}, source="f.toml", key="components.a")
    assert spanning.value.key == "components.a"
    assert "low must not exceed size" in str(spanning.value)


@attrs.frozen
class _Example:
    input: str
    output: str


@attrs.frozen
class _Listed:
    stop: tuple[str, ...] = ()
    examples: tuple[_Example, ...] = ()
    maybe: tuple[str, ...] | None = None


@pytest.mark.parametrize(("options", "key", "got"), [
    ({"stop": "END"}, "components.a.stop", "got str 'END'"),
    ({"stop": {"a": "b"}}, "components.a.stop", "got a table"),
    ({"examples": {"input": "a", "output": "b"}}, "components.a.examples", "got a table"),
    ({"maybe": {"a": "b"}}, "components.a.maybe", "got a table"),
])
def test_a_list_option_refuses_a_string_or_a_table(options: dict[str, object], key: str,
                                                   got: str) -> None:
    """A list option given a string or one table is refused, naming the option: cattrs
    would read "END" as ("E", "N", "D") and a table as the list of its keys (then fail on
    a key with an unrelated AttributeError). Lists of tables are still lists."""
    from aieng_core.pipeline._options import structure_options

    with pytest.raises(ConfigError) as caught:
        structure_options(_Listed, options, source="f.toml", key="components.a")
    assert caught.value.key == key and f"expected a list, {got}" in str(caught.value)
    good = structure_options(_Listed, {"examples": [{"input": "a", "output": "b"}],
                                       "maybe": ["x"]}, source="f.toml", key="components.a")
    assert good.examples == (_Example("a", "b"),) and good.maybe == ("x",)


# -- round trip --------------------------------------------------------------------------

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
def test_to_dict_from_dict_round_trip(data: dict[str, object]) -> None:
    """from_dict(to_dict(c)) == c, to_dict is a fixed point after one normalization, and
    it keeps every value that was given (every key of the file: stages, stream,
    single_flight, per-stage tables of any stage, component options)."""
    config = PipelineConfig.from_dict(data, _KERNEL.registry)
    as_dict = config.to_dict()
    again = PipelineConfig.from_dict(as_dict, _KERNEL.registry)
    assert again == config and again.to_dict() == as_dict
    for name, comp in data["components"].items():  # type: ignore[attr-defined]
        options = attrs.asdict(config.components[name].options)
        assert all(options[key] == value for key, value in comp.items() if key != "use")
    head = data["pipeline"]
    assert isinstance(head, dict)
    for key, value in head.items():
        assert as_dict["pipeline"].get(key, {"stream": "guarded",
                                             "single_flight": False}.get(key)) == value
    for name, table in data.get("stage", {}).items():  # type: ignore[attr-defined]
        assert as_dict.get("stage", {}).get(name, {}) == table


def _toml(value: object) -> str:
    """A value as TOML (the types a pipeline's dict form holds)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        escaped = "".join(
            {"\\": "\\\\", '"': '\\"'}.get(c)
            or (f"\\u{ord(c):04X}" if ord(c) < 0x20 or ord(c) == 0x7F else c)
            for c in value)
        return f'"{escaped}"'
    assert isinstance(value, list), value
    return "[" + ", ".join(map(_toml, value)) + "]"


def _toml_file(data: dict[str, Any]) -> str:
    lines = ["[pipeline]", *(f"{k} = {_toml(v)}" for k, v in data["pipeline"].items())]
    for section in ("stage", "components"):
        for name, table in data.get(section, {}).items():
            lines += [f"[{section}.{name}]", *(f"{k} = {_toml(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


@given(pipeline_dicts(), st.booleans(), st.booleans())
def test_a_pipeline_written_as_a_toml_file_loads_back(data: dict[str, object], bom: bool,
                                                       crlf: bool) -> None:
    """A config written out as a TOML file (with or without a byte order mark and CRLF
    line ends) loads as the same config: the file path and the dict path agree."""
    config = PipelineConfig.from_dict(data, _KERNEL.registry)
    text = _toml_file(config.to_dict())
    raw = (text.replace("\n", "\r\n") if crlf else text).encode()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "p.toml"
        path.write_bytes(b"\xef\xbb\xbf" + raw if bom else raw)
        assert PipelineConfig.load(path, _KERNEL.registry) == config


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


def test_stage_names_are_the_lifecycle() -> None:
    """The default stage order is the request lifecycle of the design."""
    assert STAGES == ("guard_input", "cache_lookup", "route", "retrieve", "rerank", "context",
                      "generate", "guard_output", "cache_store", "judge")


@pytest.mark.parametrize("option", ["k1 = inf", "b = nan", "k1 = nan"])
def test_memory_bm25_parameters_must_be_finite(kernel: Kernel, tmp_path: Path,
                                               option: str) -> None:
    """``k1 = inf`` would make every BM25 score NaN, failing every query at run time: it
    is refused at load, naming the option."""
    name = option.split()[0]
    with pytest.raises(ConfigError, match=rf"components\.docs\.{name}"):
        load(kernel, tmp_path, f'[pipeline]\nname = "a"\n[components.docs]\nuse = "memory"\n'
                               f"{option}\n")
