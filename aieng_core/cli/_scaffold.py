"""``aieng plugin new``: write a plugin package that passes its role's conformance suite."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import re
import shutil
from importlib import metadata, resources
from pathlib import Path
from string import Template

import attrs
import click

from ._app import cli, kernel_of

__all__ = ["ROLES", "Role", "new", "plugin", "render"]

#: A plugin name: lower-case ASCII letters, digits, ``-`` and ``_``, starting with a letter
#: and ending with a letter or a digit (a distribution name, a component name and, with
#: ``-`` mapped to ``_``, a Python identifier).
_NAME = re.compile(r"[a-z](?:[a-z0-9_-]*[a-z0-9])?")


@attrs.frozen
class Role:
    """What the scaffold writes for one role.

    :param suite: the role's conformance suite in ``aieng_core.testing.conformance``.
    :param suffix: the component class's name after the plugin's (``MyPluginReranker``).
    :param summary: what the generated component does, for its README.
    :param options_toml: the component's options as a pipeline file sets them.
    """

    suite: str
    suffix: str
    summary: str
    options_toml: str


#: The roles ``aieng plugin new`` writes a component for, by name.
ROLES: dict[str, Role] = {
    "backend": Role("BackendSuite", "Backend",
                    "a backend that echoes the last user message, word by word, and embeds "
                    "texts as hashed bags of character trigrams.",
                    'model = "echo"\ndimensions = 64'),
    "retriever": Role("RetrieverSuite", "Retriever",
                      "an in-memory index that finds the documents holding the most "
                      "distinct query words.",
                      "min_matches = 1"),
    "fuser": Role("FuserSuite", "Fuser",
                  "reciprocal rank fusion of several retrievers' runs.", "k = 60"),
    "reranker": Role("RerankerSuite", "Reranker",
                     "a reranker boosting the hits that share words with the query.",
                     "boost = 1.0"),
    "judge": Role("JudgeSuite", "Judge",
                  "a judge scoring an answer's length against a target number of words.",
                  "target_words = 50"),
    "tool": Role("ToolSuite", "Tools", "a tool `add` that adds numbers.",
                 "max_numbers = 1000"),
    "guardrail": Role("GuardrailSuite", "Guard",
                      "an input guardrail blocking requests that contain listed words.",
                      'words = ["password"]'),
    "router": Role("RouterSuite", "Router",
                   "a router sending requests that contain a keyword to one backend.",
                   'keywords = ["code"]\ntarget = "coder"'),
    "cache": Role("CacheSuite", "Cache",
                  "a cache of completions in a dictionary, least recently used out first.",
                  "max_entries = 1024"),
    "quantizer": Role("QuantizerSuite", "Quantizer",
                      "a quantizer writing a raw float32 weights file as int8 with one "
                      "scale (scheme `int8`).",
                      'output_dir = ""'),
    "memory": Role("MemorySuite", "Memory",
                   "an agent memory in a dictionary, recalling the items that share the most "
                   "words with the query.",
                   "max_items = 1000"),
    "policy": Role("AgentPolicySuite", "Policy",
                   "an agent policy that first calls a search tool with the user's question, "
                   "then answers with its result.",
                   'tool = "search"\nargument = "query"'),
}


def _requirement(distribution: str, fallback: str) -> str:
    """``distribution>=X.Y,<X.(Y+1)`` for the installed version (``fallback`` if unknown)."""
    try:
        major, minor = (int(part) for part in metadata.version(distribution).split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return f"{distribution}{fallback}"
    return f"{distribution}>={major}.{minor},<{major}.{minor + 1}"


def check_name(name: str) -> str:
    """The problem with a plugin name, or ``""`` when it is a valid one."""
    if not _NAME.fullmatch(name):
        return ("use lower-case ASCII letters, digits, '-' and '_', starting with a letter "
                "and ending with a letter or digit (it names the distribution aieng-NAME, "
                "the module aieng_NAME and the component NAME)")
    snake = name.replace("-", "_")  # a Python identifier, as the pattern ensures
    if snake == "aieng" or snake.startswith("aieng_"):
        return "give the name without the 'aieng-' prefix: the scaffold adds it"
    return ""


def render(name: str, role: str) -> dict[str, str]:
    """The files of the plugin package ``aieng-<name>`` of ``role``: relative path -> text.

    :raises ValueError: for an invalid name (see :func:`check_name`) or an unknown role.
    """
    problem = check_name(name)
    if problem:
        raise ValueError(f"invalid plugin name {name!r}: {problem}")
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    spec = ROLES[role]
    snake = name.replace("-", "_")
    cls = "".join(part.capitalize() for part in snake.split("_"))
    values = {
        "name": name, "dist": f"aieng-{name}", "module": f"aieng_{snake}",
        "module_stem": snake, "table": snake, "component": name, "role": role,
        "cls": cls, "component_class": f"{cls}{spec.suffix}", "suite": spec.suite,
        "summary": spec.summary, "options_toml": spec.options_toml,
        "hookspecs_requirement": _requirement("aieng-hookspecs", ">=0.1,<0.2"),
        "aieng_requirement": _requirement("aieng", ">=0.1,<0.2"),
    }
    values["registration_test"] = _template("registration_test.py").substitute(values)
    package = f"aieng_{snake}"
    return {
        "pyproject.toml": _template("pyproject.toml").substitute(values),
        "README.md": _template("README.md").substitute(values),
        f"{package}/__init__.py": _template(f"{role}.py").substitute(values),
        f"{package}/py.typed": "",
        "tests/conftest.py": _template("conftest.py").substitute(values),
        f"tests/test_{snake}.py": _template(f"test_{role}.py").substitute(values),
    }


def _template(name: str) -> Template:
    source = resources.files(__package__).joinpath("_templates", f"{name}.tmpl")
    return Template(source.read_text(encoding="utf-8"))


@cli.group()
def plugin() -> None:
    """Start a new plugin package from a template.

    `aieng plugin new NAME --role ROLE` writes aieng-NAME/; `aieng plugins` lists the
    plugins installed.
    """


@plugin.command()
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(list(ROLES)),
              help="The role of the package's component; its conformance suite runs in "
                   "the generated tests.")
@click.option("--dir", "parent", type=click.Path(path_type=Path, file_okay=False),
              default=Path("."), show_default=True,
              help="The folder to create aieng-NAME/ in (created if missing).")
@click.option("--force", is_flag=True,
              help="Write into an existing aieng-NAME/ folder, replacing the files the "
                   "scaffold writes (other files are left alone).")
@click.pass_context
def new(ctx: click.Context, name: str, role: str, parent: Path, force: bool) -> None:
    """Write a plugin package aieng-NAME/ offering the component NAME of ROLE.

    The package depends on aieng-hookspecs only, declares the entry point NAME in the
    group `aieng`, and its tests (`python -m pytest` in its folder) run the role's
    conformance suite and pass as generated.
    """
    problem = check_name(name)
    if problem:
        raise click.BadParameter(problem, param_hint="NAME")
    files = render(name, role)
    module = f"aieng_{name.replace('-', '_')}"
    target = parent / f"aieng-{name}"
    _refuse_clashes(ctx, name, module, target)
    if target.exists() and not target.is_dir():
        raise click.UsageError(f"{target} exists and is not a folder")
    if target.exists() and not force:
        raise click.UsageError(f"{target} already exists; pass --force to replace the files "
                               "the scaffold writes in it")
    _write(target, files)
    click.echo(f"Created {target}/: the {role} {name!r} in the plugin {name!r}")
    for relative in files:
        click.echo(f"  {relative}")
    click.echo(f"Next: cd {target} && python -m pytest   "
               f"(then pip install -e . and aieng plugins lists it)")


def _write(target: Path, files: dict[str, str]) -> None:
    """Write ``files`` under ``target``. A new package is written in a hidden folder beside
    it and renamed when whole: a full disk or Ctrl-C leaves no half-written package."""
    fresh = not target.exists()
    place = target.with_name(f".{target.name}.{os.getpid()}.tmp") if fresh else target
    try:
        for relative, text in files.items():
            path = place / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        if fresh:
            place.rename(target)
    except OSError as exc:
        raise click.ClickException(f"cannot write {target}/: {exc.strerror or exc}"
                                   f"{'' if fresh else ' (run it again with --force)'}"
                                   ) from exc
    finally:
        if fresh and place.exists():
            shutil.rmtree(place, ignore_errors=True)


def _refuse_clashes(ctx: click.Context, name: str, module: str, target: Path) -> None:
    """Refuse a name already taken by an installed plugin, component or module: the
    generated plugin would load as broken, or shadow the other one. The package in
    ``target`` itself, installed (``pip install -e``), takes nothing: ``--force`` writes it
    again."""
    spec = importlib.util.find_spec(module)
    if spec is not None and _inside(spec, target):
        return
    if spec is not None:
        raise click.BadParameter(f"a module {module} is already importable; choose another "
                                 "name", param_hint="NAME")
    registry = kernel_of(ctx).registry
    taken = registry.components.get(name)
    if taken is not None:
        raise click.BadParameter(f"the component {name!r} exists already (plugin "
                                 f"{taken.plugin!r}); choose another name", param_hint="NAME")
    if any(info.name == name for info in registry.plugins):
        raise click.BadParameter(f"a plugin named {name!r} is installed already; choose "
                                 "another name", param_hint="NAME")


def _inside(spec: importlib.machinery.ModuleSpec, folder: Path) -> bool:
    """Whether the module of ``spec`` is imported from ``folder``."""
    places = [spec.origin] if spec.origin else list(spec.submodule_search_locations or ())
    root = folder.resolve()
    return bool(places) and all(Path(place).resolve().is_relative_to(root) for place in places)
