"""Pipeline files: load, validate and round-trip ``[pipeline]``, ``[stage.*]``, ``[components.*]``.

A pipeline file::

    [pipeline]
    name = "qa"
    stages = ["retrieve", "context", "generate"]   # optional: the request lifecycle
    timeout = 30.0                                  # optional: seconds per impl call (inf: none)
    on_error = "fail"                               # optional: fail | skip | fallback
    stream = "guarded"                              # optional: guarded | live
    single_flight = false                           # optional: one generation per request

    [stage.retrieve]                                # optional, per stage
    k = 10
    on_error = "fallback"

    [components.docs]
    use = "memory"                                  # a registered component name
    documents = "docs/"                             # that component's typed options

Loading imports nothing: ``use`` names resolve only against installed plugins.
"""

from __future__ import annotations

import codecs
import math
import re
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from .._durations import seconds_written
from ..dispatch import ON_ERROR, StagePolicy
from .._errors import ConfigError, UnknownComponentError
from ..registry import Registry
from ._options import did_you_mean, structure_options, unstructure_options

__all__ = [
    "INSTANCE",
    "STAGES",
    "STAGE_HOOKS",
    "ComponentConfig",
    "PipelineConfig",
    "StageConfig",
]

#: The request lifecycle: every stage a pipeline may have, in the order they run.
STAGES: tuple[str, ...] = (
    "guard_input",
    "cache_lookup",
    "route",
    "retrieve",
    "rerank",
    "context",
    "generate",
    "guard_output",
    "cache_store",
    "judge",
)

#: The hooks that make a component take part in each stage.
STAGE_HOOKS: dict[str, tuple[str, ...]] = {
    "guard_input": ("aieng_guard_input",),
    "cache_lookup": ("aieng_cache_lookup",),
    "route": ("aieng_route",),
    "retrieve": ("aieng_retrieve",),
    "rerank": ("aieng_rerank",),
    "context": ("aieng_context_build",),
    "generate": ("aieng_generate", "aieng_stream"),
    "guard_output": ("aieng_guard_output",),
    "cache_store": ("aieng_cache_store",),
    "judge": ("aieng_judge",),
}

_K_STAGES = ("retrieve", "rerank")
#: The ``use`` of components given as instances to ``Kernel.compose``.
INSTANCE = "<instance>"
_COMPONENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_TOP_KEYS = ("pipeline", "stage", "components")
_PIPELINE_KEYS = ("name", "stages", "timeout", "on_error", "stream", "single_flight")
#: ``guarded``: a streaming caller gets the answer once the output guards passed it (one
#: delta); ``live``: the backend's deltas as they come, the output guards after them.
STREAM_MODES = ("guarded", "live")
_STAGE_KEYS = ("timeout", "on_error", "k")


@attrs.frozen
class StageConfig:
    """Per-stage settings; ``None`` inherits the pipeline's."""

    timeout: float | None = None
    on_error: str | None = None
    k: int | None = None


@attrs.frozen
class ComponentConfig:
    """One ``[components.NAME]`` table: the registered name and the typed options."""

    use: str
    options: Any = None


@attrs.frozen
class PipelineConfig:
    """A validated pipeline description.

    :param name: the pipeline's name (events and logs carry it).
    :param components: component name -> config, in file order.
    :param stages: the stages listed in the file, or ``None`` for the whole lifecycle
        (then stages no component takes part in are left out).
    :param timeout: default seconds per impl call; ``math.inf`` (TOML ``inf``) for no limit.
    :param on_error: default error policy.
    :param stage: per-stage overrides.
    :param stream: what a streaming caller (``on_delta``) gets when the pipeline has a
        ``guard_output`` stage: ``guarded`` (the default) the answer once the output guards
        have passed it, as one delta; ``live`` the backend's deltas as they come, with the
        guards run after the text is out (they cannot take it back). Without output guards
        both stream live.
    :param single_flight: with a cache (``cache_lookup`` and ``cache_store`` stages), a run
        whose request is identical to one being generated waits for that one's answer to be
        stored and looks the cache up again, instead of generating it too (see
        :mod:`aieng_core.pipeline._flight`).
    :param source: where it was loaded from (not part of equality).
    """

    name: str
    components: dict[str, ComponentConfig]
    stages: tuple[str, ...] | None = None
    timeout: float = 30.0
    on_error: str = "fail"
    stage: dict[str, StageConfig] = attrs.field(factory=dict)
    stream: str = "guarded"
    single_flight: bool = False
    source: str = attrs.field(default="<dict>", eq=False)

    def policy(self, stage: str) -> StagePolicy:
        """The timeout and error policy of a stage (``index``, ``embed``...: the pipeline's),
        naming the setting its timeout comes from."""
        override = self.stage.get(stage, StageConfig())
        timeout = override.timeout if override.timeout is not None else self.timeout
        on_error = override.on_error or self.on_error
        option = (f"[stage.{stage}] timeout" if override.timeout is not None
                  else f"[stage.{stage}] timeout or [pipeline] timeout" if stage in STAGES
                  else "[pipeline] timeout")
        return StagePolicy(timeout=None if math.isinf(timeout) else timeout,
                           on_error=on_error, option=option)  # type: ignore[arg-type]

    def k(self, stage: str, default: int) -> int:
        """The ``k`` of a stage (``retrieve`` / ``rerank``)."""
        override = self.stage.get(stage)
        return override.k if override is not None and override.k is not None else default

    def effective_stages(self, present: set[str]) -> tuple[str, ...]:
        """The stages a pipeline runs, given those its components implement (``present``):
        the listed ones, else every present one in lifecycle order.

        :raises ConfigError: for a listed stage no component implements.
        """
        if self.stages is None:
            return tuple(s for s in STAGES if s in present)
        for stage in self.stages:
            if stage not in present:
                raise ConfigError(
                    f"stage {stage!r} is listed but no component implements "
                    f"{' or '.join(STAGE_HOOKS[stage])}",
                    source=self.source, key="pipeline.stages",
                    choices=[s for s in STAGES if s in present])
        return self.stages

    # -- dict form -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The plain dict form; ``from_dict(to_dict(c)) == c``."""
        head: dict[str, Any] = {"name": self.name}
        if self.stages is not None:
            head["stages"] = list(self.stages)
        head["timeout"] = self.timeout
        head["on_error"] = self.on_error
        if self.stream != "guarded":
            head["stream"] = self.stream
        if self.single_flight:
            head["single_flight"] = True
        data: dict[str, Any] = {"pipeline": head}
        if self.stage:
            data["stage"] = {
                name: {k: v for k, v in attrs.asdict(cfg).items() if v is not None}
                for name, cfg in self.stage.items()
            }
        data["components"] = {
            name: {"use": comp.use, **unstructure_options(comp.options)}
            for name, comp in self.components.items()
        }
        return data

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], registry: Registry, *, source: str = "<dict>"
    ) -> PipelineConfig:
        """Validate a dict (a parsed TOML file) against the installed components.

        :raises ConfigError: naming the source, the key path, what was expected and the
            valid choices.
        """
        return _Loader(registry, source).load(data)

    @classmethod
    def load(cls, path: str | Path, registry: Registry) -> PipelineConfig:
        """Read and validate a TOML pipeline file.

        :raises ConfigError: for a missing or unreadable file, bad TOML or a bad value.
        """
        path = Path(path)
        source = str(path)
        try:
            if not stat.S_ISREG(path.stat().st_mode):  # /dev/zero would be read for ever
                raise ConfigError("not a regular file (a folder, a device, a FIFO): name a "
                                  "TOML pipeline file", source=source)
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError("file not found", source=source) from None
        except OSError as exc:
            raise ConfigError(f"cannot read the file: {exc.strerror}", source=source) from None
        # A byte order mark (Windows editors write one) is not TOML: dropped.
        bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
        try:
            text = raw[bom:].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"not UTF-8 text (byte {bom + exc.start})",
                              source=source) from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"invalid TOML: {exc}", source=source) from None
        loader = _Loader(registry, source)
        # A misspelt [pipline] is named as such, not reported as a missing [pipeline].
        loader.unknown_keys(data, _TOP_KEYS, "")
        head = data.get("pipeline")
        if head is None:  # in a file, an empty table is enough: the name is the file's
            raise ConfigError("missing the [pipeline] table", source=source, key="pipeline",
                              expected="a [pipeline] table (it may be empty: the name "
                                       f"defaults to {path.stem!r})")
        if isinstance(head, dict) and "name" not in head:
            data["pipeline"] = {"name": path.stem, **head}
        return loader.load(data)


def _in_seconds(value: object) -> str:
    """For a duration written with a unit (``"30s"``), what to write instead; else ``""``.
    Durations are numbers of seconds: one way to write them, as TOML has no unit."""
    seconds = seconds_written(value)
    if seconds is None:
        return ""
    return f" (a number of seconds without unit: write {seconds:g})"


def _type_name(value: object) -> str:
    if isinstance(value, Mapping):
        return "table"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


class _Loader:
    def __init__(self, registry: Registry, source: str) -> None:
        self.registry = registry
        self.source = source

    def fail(self, problem: str, key: str = "", **kw: Any) -> ConfigError:
        return ConfigError(problem, source=self.source, key=key, **kw)

    def table(self, value: object, key: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(f"got {_type_name(value)}", key, expected="a table")
        return value

    def unknown_keys(self, table: Mapping[str, Any], allowed: tuple[str, ...], key: str) -> None:
        for name in table:
            if name not in allowed:
                path = f"{key}.{name}" if key else name
                raise self.fail(f"unknown key {name!r}{did_you_mean(name, allowed)}", path,
                                choices=allowed)

    def load(self, data: Mapping[str, Any]) -> PipelineConfig:
        data = self.table(data, "")
        self.unknown_keys(data, _TOP_KEYS, "")
        if "pipeline" not in data:
            raise self.fail("missing the [pipeline] table", "pipeline",
                            expected="a table with at least 'name'")
        head = self.table(data["pipeline"], "pipeline")
        self.unknown_keys(head, _PIPELINE_KEYS, "pipeline")
        name = head.get("name")
        if not isinstance(name, str) or not name.strip():
            got = repr(name) if isinstance(name, str) else _type_name(name)
            raise self.fail(f"got {got if name is not None else 'nothing'}",
                            "pipeline.name", expected="a non-empty string")
        stages = self.stages(head.get("stages"))
        timeout = self.timeout(head.get("timeout", 30.0), "pipeline.timeout")
        assert timeout is not None
        on_error = self.on_error(head.get("on_error", "fail"), "pipeline.on_error")
        stream = head.get("stream", "guarded")
        if stream not in STREAM_MODES:
            raise self.fail(f"got {stream!r}", "pipeline.stream", choices=STREAM_MODES)
        single_flight = head.get("single_flight", False)
        if not isinstance(single_flight, bool):
            raise self.fail(f"got {single_flight!r}", "pipeline.single_flight",
                            expected="true or false")
        stage = self.stage_tables(data.get("stage", {}))
        components = self.components(data.get("components"))
        config = PipelineConfig(name=name, components=components, stages=stages,
                                timeout=timeout, on_error=on_error, stage=stage,
                                stream=str(stream), single_flight=single_flight,
                                source=self.source)
        self.check_participation(config)
        return config

    def stages(self, value: object) -> tuple[str, ...] | None:
        if value is None:
            return None
        key = "pipeline.stages"
        if not isinstance(value, list):
            raise self.fail(f"got {_type_name(value)}", key, expected="an array of stage names")
        if not value:
            raise self.fail("no stages listed", key, expected="at least one stage",
                            choices=STAGES)
        for index, item in enumerate(value):
            if item not in STAGES:
                raise self.fail(f"unknown stage {item!r}{did_you_mean(item, STAGES)}",
                                f"{key}[{index}]", choices=STAGES)
        if len(set(value)) != len(value):
            dup = next(s for s in value if value.count(s) > 1)
            raise self.fail(f"stage {dup!r} is listed twice", key)
        order = [STAGES.index(s) for s in value]
        if order != sorted(order):
            raise self.fail("stages are out of order", key,
                            expected="the lifecycle order " + " -> ".join(STAGES))
        return tuple(value)

    def timeout(self, value: object, key: str) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise self.fail(f"got {value!r}{_in_seconds(value)}", key,
                            expected="a positive number of seconds (inf for no limit)")
        return float(value)

    def on_error(self, value: object, key: str) -> str:
        if value not in ON_ERROR:
            raise self.fail(f"got {value!r}", key, choices=ON_ERROR)
        return str(value)

    def stage_tables(self, value: object) -> dict[str, StageConfig]:
        tables = self.table(value, "stage")
        found: dict[str, StageConfig] = {}
        for name, raw in tables.items():
            key = f"stage.{name}"
            if name not in STAGES:
                raise self.fail(f"unknown stage {name!r}{did_you_mean(name, STAGES)}", key,
                                choices=STAGES)
            table = self.table(raw, key)
            allowed = _STAGE_KEYS if name in _K_STAGES else _STAGE_KEYS[:2]
            self.unknown_keys(table, allowed, key)
            k = table.get("k")
            if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
                raise self.fail(f"got {k!r}", f"{key}.k", expected="an integer >= 1")
            found[name] = StageConfig(
                timeout=self.timeout(table.get("timeout"), f"{key}.timeout"),
                on_error=self.on_error(table["on_error"], f"{key}.on_error")
                if "on_error" in table else None,
                k=k,
            )
        return found

    def components(self, value: object) -> dict[str, ComponentConfig]:
        if value is None:
            raise self.fail("the pipeline has no components", "components",
                            expected="at least one [components.NAME] table with use = ...",
                            choices=sorted(self.registry.components))
        tables = self.table(value, "components")
        if not tables:
            raise self.fail("the pipeline has no components", "components",
                            expected="at least one [components.NAME] table",
                            choices=sorted(self.registry.components))
        found: dict[str, ComponentConfig] = {}
        for name, raw in tables.items():
            key = f"components.{name}"
            if not isinstance(name, str) or not _COMPONENT_NAME.fullmatch(name):
                raise self.fail("bad component name", key,
                                expected="letters, digits, '_' or '-', not starting with a digit")
            table = self.table(raw, key)
            use = table.get("use")
            if use is None:
                raise self.fail("missing 'use'", f"{key}.use",
                                expected="the registered name of a component",
                                choices=sorted(self.registry.components))
            if not isinstance(use, str):
                raise self.fail(f"got {_type_name(use)}", f"{key}.use", expected="a string")
            if use == INSTANCE and self.source.startswith("<compose"):
                found[name] = ComponentConfig(use=use)
                continue
            try:
                info = self.registry.component(use)
            except UnknownComponentError:
                hint = ""
                if self.registry.broken:
                    hint = " (broken plugins: " + ", ".join(
                        f"{p.name}: {p.error}" for p in self.registry.broken) + ")"
                if disabled := self.registry.disabled_hint(use):
                    hint += f" ({disabled})"
                hint = did_you_mean(use, self.registry.components) + hint
                raise self.fail(f"unknown component {use!r}{hint}", f"{key}.use",
                                choices=sorted(self.registry.components)) from None
            values = {k: v for k, v in table.items() if k != "use"}
            options = structure_options(info.options, values, source=self.source, key=key)
            found[name] = ComponentConfig(use=use, options=options)
        return found

    def check_participation(self, config: PipelineConfig) -> None:
        if config.stages is None:
            return
        hooks: set[str] = set()
        for comp in config.components.values():
            if comp.use == INSTANCE:
                return  # composed from instances: Pipeline checks once they are registered
            info = self.registry.component(comp.use)
            if not isinstance(info.factory, type):
                return  # hooks of a factory function are known once built (Pipeline checks)
            hooks.update(info.hooks)
        for stage in config.stages:
            if not hooks.intersection(STAGE_HOOKS[stage]):
                raise self.fail(
                    f"stage {stage!r} is listed but no component implements "
                    f"{' or '.join(STAGE_HOOKS[stage])}",
                    "pipeline.stages",
                    choices=[s for s in STAGES if hooks.intersection(STAGE_HOOKS[s])],
                )
