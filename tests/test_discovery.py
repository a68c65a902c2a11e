"""Plugin discovery: fake distributions in-process, then real installs driven through the CLI.

The first half builds fake distributions (a ``*.dist-info`` folder with ``METADATA`` and
``entry_points.txt`` next to the plugin modules, in ``tmp_path``) and hands their entry
points to :class:`Registry` / :class:`Kernel`: nothing is installed, the tests are fast and
may run in parallel.

The second half (marked ``mutates_venv``) pip-installs the example plugin and the broken
fixtures into the running environment, drives the ``aieng`` console script in subprocesses,
and always uninstalls. Those tests hold a file lock so two of them never overlap.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest
from aieng_hookspecs.types import Document, Hit, Query
from structlog.testing import capture_logs

from aieng_core import ConfigError, Kernel, UnknownComponentError
from aieng_core.registry import BUILTIN, Registry

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXAMPLE_PLUGIN = ROOT / "examples" / "aieng-example-plugin"
PIPELINES = ROOT / "examples" / "pipelines"
AIENG = Path(sys.executable).parent / "aieng"
HEAVY = ("torch", "transformers", "tantivy", "onnxruntime")

# ============================================================================ fake distributions


class FakeDists:
    """Writes fake distributions and their plugin modules under one folder on ``sys.path``.

    :param root: an empty folder (``tmp_path``).
    :param monkeypatch: undoes the ``sys.path`` entry and forgets the modules afterwards.
    """

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self._monkeypatch = monkeypatch
        self._prefix = f"aieng_fake_{hashlib.sha1(str(root).encode()).hexdigest()[:8]}_"
        monkeypatch.syspath_prepend(str(root))
        self.modules: list[str] = []

    def module(self, name: str, source: str) -> str:
        """Write a plugin module and return its (test-unique) import name."""
        qualified = f"{self._prefix}{name}"
        (self.root / f"{qualified}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        self.modules.append(qualified)
        return qualified

    def dist(
        self, distribution: str, version: str, entry_points: Mapping[str, str],
        requires: Sequence[str] = (),
    ) -> list[metadata.EntryPoint]:
        """Write a ``.dist-info`` folder and return its entry points of the group ``aieng``.

        :param entry_points: plugin name -> module name (as :meth:`module` returned it).
        :param requires: its ``Requires-Dist`` lines.
        """
        info = self.root / f"{distribution.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        needs = "".join(f"Requires-Dist: {line}\n" for line in requires)
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n{needs}",
            encoding="utf-8",
        )
        lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
        (info / "entry_points.txt").write_text(f"[aieng]\n{lines}", encoding="utf-8")
        found = metadata.PathDistribution(info).entry_points.select(group="aieng")
        return sorted(found, key=lambda ep: ep.name)

    def plugin(
        self, name: str, source: str, *, version: str = "1.0.0", requires: Sequence[str] = ()
    ) -> list[metadata.EntryPoint]:
        """One module and one distribution ``aieng-fake-NAME`` exposing it as plugin ``name``."""
        return self.dist(f"aieng-fake-{name}", version, {name: self.module(name, source)},
                         requires)

    def imported(self, name: str) -> bool:
        """Whether the module written for plugin ``name`` has been imported."""
        return f"{self._prefix}{name}" in sys.modules

    def forget(self) -> None:
        """Drop the written modules from ``sys.modules``."""
        for module in self.modules:
            sys.modules.pop(module, None)


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDists]:
    """A fresh folder of fake distributions on ``sys.path`` for one test."""
    made = FakeDists(tmp_path, monkeypatch)
    yield made
    made.forget()


def _component(name: str, class_name: str) -> str:
    """Source of a plugin module registering one component class under ``name``."""
    return f"""
        from aieng_hookspecs import hookimpl

        class {class_name}:
            '''A component that implements no role: enough to be registered.'''

        @hookimpl
        def aieng_register_components(registry):
            registry.add({name!r}, {class_name})
        """


GOOD = _component("good-thing", "GoodThing")

RAISES_AT_IMPORT = """
    raise ImportError("aieng-fake-bad needs 'aieng-missing-lib', which is not installed")
    """

RAISES_IN_REGISTRATION = """
    from aieng_hookspecs import hookimpl

    class Half:
        '''Registered just before the plugin fails.'''

    @hookimpl
    def aieng_register_components(registry):
        registry.add("half", Half)
        raise RuntimeError("cannot reach the licence server")
    """

MISSPELLED = """
    from aieng_hookspecs import hookimpl

    class Never:
        '''Must never be registered.'''

    @hookimpl
    def aieng_register_component(registry):
        registry.add("never", Never)
    """


def _by_name(registry: Registry) -> dict[str, Any]:
    return {info.name: info for info in registry.plugins}


def _loaded(entry_points: Sequence[metadata.EntryPoint], **env: str) -> Registry:
    registry = Registry(env=env, entry_points=entry_points)
    registry.load()
    return registry


def test_fake_distribution_is_loaded_with_its_metadata(fakes: FakeDists) -> None:
    """A plugin found through an entry point is loaded with its distribution, version, components
    and hooks."""
    registry = _loaded(fakes.plugin("good", GOOD, version="1.2.3"))
    info = _by_name(registry)["good"]
    assert (info.status, info.distribution, info.version) == ("loaded", "aieng-fake-good", "1.2.3")
    assert info.components == ("good-thing",)
    assert info.hooks == ("aieng_register_components",)
    assert registry.component("good-thing").distribution == "aieng-fake-good 1.2.3"
    assert _by_name(registry)[BUILTIN].status == "loaded"


def test_plugin_raising_at_import_is_broken_and_the_rest_work(fakes: FakeDists) -> None:
    """A plugin whose import raises is reported broken with the error, and the others still load."""
    registry = _loaded([*fakes.plugin("bad", RAISES_AT_IMPORT), *fakes.plugin("good", GOOD)])
    plugins = _by_name(registry)
    bad = plugins["bad"]
    assert (bad.status, bad.distribution, bad.version) == ("broken", "aieng-fake-bad", "1.0.0")
    assert bad.error.startswith("ImportError: ")
    assert "aieng-missing-lib" in bad.error
    assert registry.broken == (bad,)
    assert plugins["good"].status == plugins[BUILTIN].status == "loaded"
    assert {"good-thing", "memory"} <= set(registry.components)


def test_plugin_raising_in_registration_is_broken_and_adds_nothing(fakes: FakeDists) -> None:
    """A plugin raising inside aieng_register_components is broken and none of its components stay.
    """
    registry = _loaded([*fakes.plugin("half", RAISES_IN_REGISTRATION), *fakes.plugin("good", GOOD)])
    half = _by_name(registry)["half"]
    assert half.status == "broken"
    assert half.error == "RuntimeError: cannot reach the licence server"
    assert "half" not in registry.components
    assert registry.plugin_manager.get_plugin("half") is None
    assert _by_name(registry)["good"].status == "loaded"


def test_duplicate_component_names_name_both_plugins(fakes: FakeDists) -> None:
    """A component name registered twice breaks the second plugin with an error naming both; the
    first keeps it."""
    first = """
        from aieng_hookspecs import hookimpl

        class Twin:
            '''The first twin.'''

        @hookimpl
        def aieng_register_components(registry):
            registry.add("twin", Twin)
        """
    second = """
        from aieng_hookspecs import hookimpl

        class Mine:
            '''Only the second plugin offers this.'''

        class Twin:
            '''The second twin.'''

        @hookimpl
        def aieng_register_components(registry):
            registry.add("beta-only", Mine)
            registry.add("twin", Twin)
        """
    # Discovery sorts by plugin name: alpha loads first, whatever the entry-point order.
    registry = _loaded([*fakes.plugin("beta", second), *fakes.plugin("alpha", first)])
    plugins = _by_name(registry)
    assert plugins["alpha"].status == "loaded"
    beta = plugins["beta"]
    assert beta.status == "broken"
    assert beta.error.startswith("DuplicateComponentError: ")
    for named in ("'twin'", "'alpha'", "'beta'", "aieng-fake-alpha", "aieng-fake-beta"):
        assert named in beta.error
    twin = registry.component("twin")
    assert twin.plugin == "alpha"
    assert twin.factory.__doc__ == "The first twin."
    assert "beta-only" not in registry.components


def test_duplicate_of_a_builtin_component_breaks_the_plugin(fakes: FakeDists) -> None:
    """A plugin re-registering a built-in component name is broken; the built-in stays."""
    registry = _loaded(fakes.plugin("shadow", _component("memory", "Shadow")))
    shadow = _by_name(registry)["shadow"]
    assert shadow.status == "broken"
    assert "'memory'" in shadow.error and "'builtin'" in shadow.error
    assert registry.component("memory").plugin == BUILTIN


def test_misspelled_hook_is_broken_at_startup(fakes: FakeDists) -> None:
    """A misspelled hook fails the plugin at load (check_pending), and plugins loaded after it still
    work."""
    registry = _loaded([*fakes.plugin("misspelled", MISSPELLED), *fakes.plugin("zeta", GOOD)])
    plugins = _by_name(registry)
    bad = plugins["misspelled"]
    assert bad.status == "broken"
    assert "unknown hook" in bad.error and "aieng_register_component'" in bad.error
    assert "never" not in registry.components
    assert registry.plugin_manager.get_plugin("misspelled") is None
    # A misspelled plugin left registered would fail check_pending for every later plugin.
    assert plugins["zeta"].status == "loaded"


def test_allowlist_loads_only_the_named_plugins(fakes: FakeDists) -> None:
    """AIENG_PLUGINS loads only the plugins it names (by plugin or distribution name); the rest are
    disabled and never imported."""
    eps = [*fakes.plugin("one", _component("one", "One")),
           *fakes.plugin("two", _component("two", "Two")),
           *fakes.plugin("three", _component("three", "Three"))]
    registry = _loaded(eps, AIENG_PLUGINS=" one , aieng-fake-three ")
    status = {name: info.status for name, info in _by_name(registry).items()}
    assert status == {BUILTIN: "disabled", "one": "loaded", "three": "loaded", "two": "disabled"}
    assert sorted(registry.components) == ["one", "three"]
    assert not fakes.imported("two")


def test_allowlist_builtin_only(fakes: FakeDists) -> None:
    """AIENG_PLUGINS=builtin keeps the built-in components and disables every installed plugin."""
    registry = _loaded([*fakes.plugin("bad", RAISES_AT_IMPORT), *fakes.plugin("good", GOOD)],
                       AIENG_PLUGINS="builtin")
    status = {name: info.status for name, info in _by_name(registry).items()}
    assert status == {BUILTIN: "loaded", "bad": "disabled", "good": "disabled"}
    assert registry.broken == ()
    assert not fakes.imported("bad")


def test_blocklist_disables_without_importing(fakes: FakeDists) -> None:
    """AIENG_DISABLE_PLUGINS disables a plugin by name or distribution before it is imported, so a
    broken one stops failing."""
    eps = [*fakes.plugin("bad", RAISES_AT_IMPORT), *fakes.plugin("good", GOOD),
           *fakes.plugin("other", _component("other", "Other"))]
    registry = _loaded(eps, AIENG_DISABLE_PLUGINS="bad,aieng-fake-other")
    status = {name: info.status for name, info in _by_name(registry).items()}
    assert status == {BUILTIN: "loaded", "bad": "disabled", "good": "loaded", "other": "disabled"}
    assert registry.broken == ()
    assert not fakes.imported("bad")
    assert not fakes.imported("other")


def test_blocklist_wins_over_allowlist(fakes: FakeDists) -> None:
    """A plugin both allowed and blocked is disabled."""
    registry = _loaded(fakes.plugin("good", GOOD), AIENG_PLUGINS="good,builtin",
                       AIENG_DISABLE_PLUGINS="good")
    assert _by_name(registry)["good"].status == "disabled"


def test_selection_accepts_the_import_spelling_of_a_distribution(fakes: FakeDists) -> None:
    """An entry spelled like an import name (aieng_fake_one) names the distribution aieng-fake-one,
    as pip compares distribution names; it is not warned about."""
    eps = [*fakes.plugin("one", _component("one", "One")),
           *fakes.plugin("two", _component("two", "Two"))]
    with capture_logs() as logs:
        registry = _loaded(eps, AIENG_PLUGINS="aieng_fake_one",
                           AIENG_DISABLE_PLUGINS="AIENG.FAKE.TWO")
    status = {name: info.status for name, info in _by_name(registry).items()}
    assert status == {BUILTIN: "disabled", "one": "loaded", "two": "disabled"}
    assert [entry for entry in logs if entry["event"] == "plugins.unknown_entries"] == []


def test_selection_entries_naming_no_plugin_are_warned_with_the_known_names(
    fakes: FakeDists,
) -> None:
    """An AIENG_PLUGINS / AIENG_DISABLE_PLUGINS entry matching no plugin is logged as a warning
    naming the variable, the unknown entries and every known plugin with its distribution."""
    eps = fakes.plugin("one", _component("one", "One"))
    with capture_logs() as logs:
        _loaded(eps, AIENG_PLUGINS="one,builtin,onne", AIENG_DISABLE_PLUGINS="aieng-fake-tow")
    warned = {entry["variable"]: entry for entry in logs
              if entry["event"] == "plugins.unknown_entries"}
    assert warned["AIENG_PLUGINS"]["unknown"] == ["onne"]
    assert warned["AIENG_DISABLE_PLUGINS"]["unknown"] == ["aieng-fake-tow"]
    assert warned["AIENG_PLUGINS"]["log_level"] == "warning"
    assert "builtin (aieng)" in warned["AIENG_PLUGINS"]["known"]
    assert "one (aieng-fake-one)" in warned["AIENG_PLUGINS"]["known"]


def test_unknown_component_names_the_plugin_the_selection_disabled(fakes: FakeDists) -> None:
    """A component of a plugin left out by AIENG_PLUGINS (memory of builtin) or named by
    AIENG_DISABLE_PLUGINS is unknown with a hint naming that plugin and the variable."""
    kernel = Kernel(entry_points=fakes.plugin("one", _component("one", "One")),
                    env={"AIENG_PLUGINS": "one"}).load()
    with pytest.raises(UnknownComponentError, match="offered by plugin 'builtin', which is "
                       "disabled because AIENG_PLUGINS does not name it"):
        kernel.registry.component("memory")
    with pytest.raises(ConfigError, match="unknown component 'memory'.*plugin 'builtin'"):
        kernel.pipeline({"pipeline": {"name": "p"}, "components": {"d": {"use": "memory"}}})
    blocked = _loaded(fakes.plugin("two", _component("two", "Two")),
                      AIENG_DISABLE_PLUGINS="two")
    with pytest.raises(UnknownComponentError, match="offered by plugin 'two', which is disabled "
                       "because AIENG_DISABLE_PLUGINS names it"):
        blocked.component("two")
    # A component no disabled plugin is known to offer lists the disabled plugins instead.
    with pytest.raises(UnknownComponentError, match="whose components are not known: two"):
        blocked.component("elsewhere")


def test_kernel_takes_entry_points_and_env(fakes: FakeDists) -> None:
    """Kernel(entry_points=..., env=...) discovers from exactly those and builds pipelines around
    broken plugins."""
    kernel = Kernel(entry_points=[*fakes.plugin("bad", RAISES_AT_IMPORT),
                                  *fakes.plugin("good", GOOD)], env={}).load()
    assert [p.name for p in kernel.registry.broken] == ["bad"]

    async def run() -> str:
        async with kernel:
            pipeline = kernel.pipeline({
                "pipeline": {"name": "still-works", "stages": ["retrieve", "context", "generate"]},
                "components": {"docs": {"use": "memory"}, "prompt": {"use": "prompt"},
                               "answer": {"use": "extractive"}},
            })
            await pipeline.index([Document(id="d", text="Plugins are found by entry points.")])
            return (await pipeline.run("How are plugins found?")).answer

    assert "entry points" in anyio.run(run)


def test_kernel_reads_os_environ_by_default(
    fakes: FakeDists, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without env=, the kernel reads AIENG_DISABLE_PLUGINS from os.environ."""
    monkeypatch.setenv("AIENG_DISABLE_PLUGINS", "good")
    kernel = Kernel(entry_points=fakes.plugin("good", GOOD)).load()
    assert {p.name: p.status for p in kernel.registry.plugins}["good"] == "disabled"


def test_two_distributions_with_one_plugin_name_keep_both_records(fakes: FakeDists) -> None:
    """Two distributions claiming one plugin name: the first stays listed as loaded, the second is
    reported broken."""
    first = fakes.dist("aieng-fake-first", "1.0", {"same": fakes.module("first", GOOD)})
    second = fakes.dist("aieng-fake-second", "2.0",
                        {"same": fakes.module("second", _component("other", "Other"))})
    registry = _loaded([*first, *second])
    assert registry.component("good-thing").distribution == "aieng-fake-first 1.0"
    records = [p for p in registry.plugins if p.name == "same"]
    assert [(p.distribution, p.status) for p in records] == [
        ("aieng-fake-first", "loaded"), ("aieng-fake-second", "broken")]


OLD_RETRIEVER = """
    from aieng_hookspecs import hookimpl

    class Old:
        # A retriever written for a contract whose aieng_retrieve had one more argument.

        @hookimpl
        async def aieng_retrieve(self, query, k, legacy_flag):
            return []

    @hookimpl
    def aieng_register_components(registry):
        registry.add("old-retriever", Old)
    """
CONTRACT = metadata.version("aieng-hookspecs")
OLD_CONTRACT = "aieng-hookspecs<0.0.1"


def _build_with(entry_points: Sequence[metadata.EntryPoint], component: str) -> None:
    """Build a pipeline of one component on a kernel loading ``entry_points``."""
    async def build() -> None:
        async with Kernel(entry_points=entry_points, env={}) as kernel:
            kernel.pipeline({"pipeline": {"name": "p"}, "components": {"r": {"use": component}}})

    anyio.run(build)


def test_a_plugin_made_for_another_contract_loads_with_a_warning(fakes: FakeDists) -> None:
    """pip installs a plugin whose requirement on aieng-hookspecs the installed one does not
    meet (an upgrade of aieng leaves it behind): it is listed with a warning saying so, and
    building a pipeline whose hook does not fit names that cause."""
    entry_points = fakes.plugin("old", OLD_RETRIEVER, version="0.3.0",
                                requires=[OLD_CONTRACT, "numpy>=1"])
    with capture_logs() as logs:
        registry = _loaded(entry_points)
    old = _by_name(registry)["old"]
    assert old.status == "loaded"
    assert old.warning == (f"aieng-fake-old 0.3.0 was made for aieng-hookspecs<0.0.1 and "
                           f"aieng-hookspecs {CONTRACT} is installed: install a version of "
                           "aieng-fake-old made for this aieng")
    assert old.to_json()["warning"] == old.warning
    assert [e["plugin"] for e in logs if e["event"] == "plugin.contract_mismatch"] == ["old"]
    with pytest.raises(ConfigError) as caught:
        _build_with(entry_points, "old-retriever")
    assert "legacy_flag" in str(caught.value)
    assert str(caught.value).endswith(old.warning)


def test_a_hook_that_does_not_fit_names_the_plugin_and_contract(fakes: FakeDists) -> None:
    """A distribution saying nothing about aieng-hookspecs: the error names it and the
    installed contract, the likely cause of an argument the hook spec does not have."""
    with pytest.raises(ConfigError, match=r"\(from aieng-fake-quiet 2\.0; aieng-hookspecs "
                       rf"{CONTRACT} is installed: was the plugin made for another version"):
        _build_with(fakes.plugin("quiet", OLD_RETRIEVER, version="2.0"), "old-retriever")


@pytest.mark.parametrize("requires", [
    [f"aieng-hookspecs=={CONTRACT}"],             # met
    ["aieng_hookspecs>=0.0.1"],                   # met, spelled as an import name
    [f"{OLD_CONTRACT}; extra == 'legacy'"],       # an extra's requirement
    [f"{OLD_CONTRACT}; sys_platform == 'nope'"],  # another platform's
    ["not a requirement((("],                     # unreadable: pip's to judge
    [],
])
def test_no_warning_when_the_contract_is_met_or_not_asked(fakes: FakeDists,
                                                          requires: list[str]) -> None:
    fine = _by_name(_loaded(fakes.plugin("fine", GOOD, requires=requires)))["fine"]
    assert (fine.status, fine.warning) == ("loaded", "")


def test_a_broken_plugin_made_for_another_contract_says_so(fakes: FakeDists) -> None:
    """A plugin whose registration fails (a misspelled hook, here: perhaps one a newer
    contract defines) and whose distribution wants another contract: the error gives both."""
    registry = _loaded(fakes.plugin("newer", MISSPELLED, requires=["aieng-hookspecs>=99"]))
    newer = _by_name(registry)["newer"]
    assert newer.status == "broken" and newer.warning == ""
    assert "aieng_register_component" in newer.error
    assert newer.error.endswith("aieng-fake-newer 1.0.0 was made for aieng-hookspecs>=99 and "
                                f"aieng-hookspecs {CONTRACT} is installed: install a version "
                                "of aieng-fake-newer made for this aieng")


# ============================================================================ subprocess helpers


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("AIENG_PLUGINS", "AIENG_DISABLE_PLUGINS")}
    env.update(OMP_NUM_THREADS="1", AIENG_LOG_LEVEL="ERROR", **extra)
    return env


def _aieng(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the ``aieng`` console script of this environment from the repository root."""
    assert AIENG.exists(), f"no console script at {AIENG}: install aieng (pip install -e .)"
    done = subprocess.run([str(AIENG), *args], cwd=ROOT, env=_env(**env), capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, f"aieng {' '.join(args)} exited {done.returncode}:\n" \
                                 f"{done.stdout}\n{done.stderr}"
    return done


def _plugins(**env: str) -> dict[str, dict[str, Any]]:
    """``aieng plugins --json`` by plugin name."""
    rows = json.loads(_aieng("plugins", "--json", **env).stdout)
    return {row["name"]: row for row in rows}


def _run_json(pipeline: Path, text: str, *flags: str, **env: str) -> dict[str, Any]:
    """``aieng run PIPELINE TEXT --json`` as a dict."""
    result: dict[str, Any] = json.loads(
        _aieng("run", str(pipeline.relative_to(ROOT)), text, "--json", *flags, **env).stdout)
    return result


def _pip(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          env=_env(PIP_NO_INPUT="1"), capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, f"pip {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"


def _installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture
def venv_lock() -> Iterator[None]:
    """Serialize the tests that install into this environment (even under pytest-xdist)."""
    tag = hashlib.sha1(sys.prefix.encode()).hexdigest()[:12]
    with open(Path(tempfile.gettempdir()) / f"aieng-test-venv-{tag}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def installed(tmp_path: Path, packages: Mapping[str, Path]) -> Iterator[None]:
    """pip-install source trees into this environment for a block; always uninstall them.

    Each tree is copied first: pip builds in place, and the build must leave no ``build/``
    or ``*.egg-info`` in the repository.

    :param packages: distribution name -> source folder.
    """
    setuptools = metadata.version("setuptools")
    if int(setuptools.split(".")[0]) < 77:
        pytest.fail(f"setuptools {setuptools} is too old to build the plugins without build "
                    "isolation; install 'setuptools>=77' in this environment (make install)")
    already = [name for name in packages if _installed(name)]
    if already:
        pytest.skip(f"{', '.join(already)} already installed here; uninstalling it afterwards "
                    "would remove the user's copy")
    copies = []
    for name, source in packages.items():
        copy = tmp_path / name
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns(
            "build", "*.egg-info", "__pycache__", "tests", "conftest.py"))
        copies.append(str(copy))
    try:
        _pip("install", "--no-deps", "--no-build-isolation", "--no-index", "-q", *copies)
        yield
    finally:
        present = [name for name in packages if _installed(name)]
        if present:
            _pip("uninstall", "-y", "-q", *present)


def _load_source_reranker() -> ModuleType:
    """The example plugin's reranker module, loaded from its source file (not the install)."""
    path = EXAMPLE_PLUGIN / "aieng_example" / "_keyword_boost.py"
    spec = importlib.util.spec_from_file_location("_aieng_example_keyword_boost_source", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _hits_from_json(rows: Sequence[Mapping[str, Any]]) -> list[Hit]:
    return [Hit(document=Document(**row["document"]), score=row["score"], rank=row["rank"],
                source=row["source"]) for row in rows]


# ============================================================================ real installs

QUESTION = "How does a reranker order the hits it keeps?"


@pytest.mark.mutates_venv
def test_example_plugin_installs_runs_and_uninstalls(tmp_path: Path, venv_lock: None) -> None:
    """pip-installing the example plugin makes aieng list and run keyword-boost; uninstalling
    removes it."""
    with installed(tmp_path, {"aieng-example-plugin": EXAMPLE_PLUGIN}):
        plugins = _plugins()
        example = plugins["example"]
        assert example["status"] == "loaded", example
        assert (example["distribution"], example["version"]) == ("aieng-example-plugin", "0.1.0")
        assert example["components"] == ["keyword-boost"]
        assert {"aieng_register_components", "aieng_rerank"} <= set(example["hooks"])
        assert example["error"] is None
        assert plugins[BUILTIN]["status"] == "loaded"

        result = _run_json(PIPELINES / "rerank-demo.toml", QUESTION, "--trace-hooks")
        disabled = _plugins(AIENG_DISABLE_PLUGINS="example")["example"]

    assert result["status"] == "ok"
    assert [s["name"] for s in result["stages"]] == ["retrieve", "rerank", "context", "generate"]
    reranks = [e for e in result["events"]
               if e["name"] == "hook.called" and e["hook"] == "aieng_rerank"]
    assert [(e["plugin"], e["stage"], e["outcome"]) for e in reranks] == [("boost", "rerank", "ok")]
    # The hits are exactly what keyword-boost makes of the retrieved hits (boost 1, bonus 2, k 3).
    source = _load_source_reranker()
    reranker = source.KeywordBoostReranker(source.KeywordBoostOptions(boost=1.0, phrase_bonus=2.0))
    retrieved = _hits_from_json(result["retrieved"])
    assert len(retrieved) == 10
    expected = reranker.aieng_rerank(Query(QUESTION), retrieved, 3)
    assert _hits_from_json(result["hits"]) == expected
    assert [h["rank"] for h in result["hits"]] == [1, 2, 3]
    assert any(h.score > r.score for h, r in zip(expected, retrieved)), "nothing was boosted"
    assert result["answer"]
    prompt = result["request"]["messages"][-1]["content"]
    assert expected[0].document.text in prompt

    assert disabled["status"] == "disabled"
    assert "example" not in _plugins()
    assert not _installed("aieng-example-plugin")


@pytest.mark.mutates_venv
def test_broken_plugins_installed_for_real(tmp_path: Path, venv_lock: None) -> None:
    """Installed broken plugins are listed as broken with their cause while the built-ins and
    pipelines keep working."""
    packages = {"aieng-broken-plugin": FIXTURES / "broken-plugin",
                "aieng-misspelled-plugin": FIXTURES / "misspelled-plugin"}
    with installed(tmp_path, packages):
        plugins = _plugins()
        broken = plugins["broken"]
        assert (broken["status"], broken["distribution"], broken["version"]) == \
            ("broken", "aieng-broken-plugin", "0.0.1")
        assert broken["error"].startswith("ImportError: ")
        assert "aieng-no-such-dependency" in broken["error"]
        misspelled = plugins["misspelled"]
        assert (misspelled["status"], misspelled["distribution"]) == \
            ("broken", "aieng-misspelled-plugin")
        assert "unknown hook" in misspelled["error"]
        assert "aieng_register_component'" in misspelled["error"]
        builtin = plugins[BUILTIN]
        assert builtin["status"] == "loaded"
        assert {"memory", "prompt", "extractive", "rrf"} <= set(builtin["components"])

        table = _aieng("plugins", COLUMNS="200")
        assert "broken" in table.stdout and "aieng-no-such-dependency" in table.stdout

        result = _run_json(PIPELINES / "docs-qa.toml", "Which hook reranks hits?")
        assert result["status"] == "ok" and result["answer"] and result["hits"]

        blocked = _plugins(AIENG_DISABLE_PLUGINS="broken")
        assert blocked["broken"]["status"] == "disabled"
        assert blocked["broken"]["error"] is None
        assert blocked["misspelled"]["status"] == "broken"

        only = _plugins(AIENG_PLUGINS="builtin")
        assert {name: row["status"] for name, row in only.items()
                if name in (BUILTIN, "broken", "misspelled")} == \
            {BUILTIN: "loaded", "broken": "disabled", "misspelled": "disabled"}
        assert all(row["status"] != "broken" for row in only.values())
        only_run = _run_json(PIPELINES / "docs-qa.toml", "Which hook reranks hits?",
                             AIENG_PLUGINS="builtin")
        assert only_run["answer"] == result["answer"]

    after = _plugins()
    assert "broken" not in after and "misspelled" not in after


# ============================================================================ staying light


def test_loading_plugins_imports_no_heavy_library() -> None:
    """Loading every installed plugin, through Kernel().load() and through `aieng plugins`, imports
    none of torch, transformers, tantivy, onnxruntime."""
    probe = textwrap.dedent(f"""
        import json, sys
        from aieng_core import Kernel
        Kernel().load()
        after_kernel = sorted(m for m in {HEAVY!r} if m in sys.modules)
        from aieng_core.cli import main
        sys.argv = ["aieng", "plugins", "--json"]
        try:
            main()
        except SystemExit as exc:
            assert not exc.code, exc.code
        after_cli = sorted(m for m in {HEAVY!r} if m in sys.modules)
        print("HEAVY=" + json.dumps([after_kernel, after_cli]))
        """)
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    marker = [line for line in done.stdout.splitlines() if line.startswith("HEAVY=")]
    assert json.loads(marker[-1].removeprefix("HEAVY=")) == [[], []]


def test_aieng_plugins_runs(record_property: Any) -> None:
    """`aieng plugins` and `aieng --help` run with every installed plugin (wall time printed, not
    asserted)."""
    timings = {}
    for args in (("--help",), ("plugins",), ("plugins", "--json")):
        started = time.perf_counter()
        done = _aieng(*args)
        timings[" ".join(args)] = time.perf_counter() - started
        assert done.stdout
    assert json.loads(_aieng("plugins", "--json").stdout)[0]["name"] == BUILTIN
    for command, seconds in timings.items():
        record_property(f"aieng {command} wall s", round(seconds, 3))
        print(f"aieng {command}: {seconds * 1000:.0f} ms wall")
