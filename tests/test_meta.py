"""Meta-tests: the contract documents itself, the docs follow it, every module imports alone."""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import aieng_hookspecs
import pytest
from aieng_hookspecs import CallMode, role_spec, specs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

#: The fields every spec docstring carries (pytest's hookspec.py shape, STYLE.md).
REQUIRED_FIELDS = (":called:", ":mode:", ":none:", ":async:", ":returns:", ".. versionadded::")

_FIELD_LINE = re.compile(r"^\s*(:[A-Za-z_]+:|\.\. versionadded::)", re.MULTILINE)
_PARAM = re.compile(r"^\s*:param\s+(?:[^:]*\s)?([A-Za-z_][A-Za-z0-9_]*):", re.MULTILINE)
_MODE = re.compile(r"^\s*:mode:\s*([A-Za-z_]+)", re.MULTILINE)


# ---------------------------------------------------------------------------- spec docstrings


def spec_modules() -> list[ModuleType]:
    """Every spec module, once: role modules, then registration modules."""
    return list(dict.fromkeys([*specs.ROLE_MODULES, *specs.REGISTRATION_MODULES]))


def spec_functions(module: ModuleType) -> list[Callable[..., object]]:
    """Functions of a spec module that are specs or look like one.

    Broader than the doc generator on purpose: a function named ``aieng_*`` without a marker,
    or a spec marked with plain ``@hookspec`` (no call mode), must be reported, not skipped.
    """
    return [
        obj
        for name, obj in vars(module).items()
        if inspect.isfunction(obj)
        and obj.__module__ == module.__name__
        and (
            name.startswith("aieng_")
            or hasattr(obj, "aieng_spec")
            or hasattr(obj, "aieng_call_mode")
        )
    ]


def check_spec(function: Callable[..., object]) -> list[str]:
    """Everything wrong with one spec function; an empty list when it is complete.

    :param function: the spec function.
    :returns: one message per problem, each naming the function.
    """
    name = getattr(function, "__qualname__", repr(function))
    problems: list[str] = []
    if not function.__name__.startswith("aieng_"):
        problems.append(f"{name}: hook name does not start with 'aieng_'")
    if not hasattr(function, "aieng_spec"):
        problems.append(f"{name}: not marked as a hook spec")
    mode = getattr(function, "aieng_call_mode", None)
    if not isinstance(mode, CallMode):
        problems.append(f"{name}: aieng_call_mode is not set (use role_spec)")
    doc = inspect.cleandoc(function.__doc__ or "")
    if not doc:
        return [*problems, f"{name}: no docstring"]
    present = set(_FIELD_LINE.findall(doc))
    for required in REQUIRED_FIELDS:
        if required not in present:
            problems.append(f"{name}: docstring lacks {required}")
    documented = _PARAM.findall(doc)
    parameters = list(inspect.signature(function, eval_str=False).parameters)
    for parameter in parameters:
        if parameter not in documented:
            problems.append(f"{name}: parameter {parameter!r} has no :param:")
    for param in documented:
        if param not in parameters:
            problems.append(f"{name}: :param {param}: documents no parameter of the signature")
    duplicates = sorted({p for p in documented if documented.count(p) > 1})
    if duplicates:
        problems.append(f"{name}: :param documented twice: {', '.join(duplicates)}")
    written = _MODE.search(doc)
    if isinstance(mode, CallMode) and written is not None and written.group(1) != mode.value:
        problems.append(
            f"{name}: :mode: says {written.group(1)!r} but the declared mode is {mode.value!r}"
        )
    return problems


def _all_specs() -> list[Callable[..., object]]:
    return [function for module in spec_modules() for function in spec_functions(module)]


def test_spec_modules_define_specs() -> None:
    """Every spec module defines at least one spec, and each is exported in its ``__all__``."""
    for module in spec_modules():
        found = [f.__name__ for f in spec_functions(module)]
        assert found, module.__name__
        assert sorted(found) == sorted(getattr(module, "__all__", [])), module.__name__


@pytest.mark.parametrize("function", _all_specs(), ids=lambda f: f.__name__)
def test_spec_is_documented(function: Callable[..., object]) -> None:
    """A spec has every docstring field, a :param: per parameter, and a matching mode."""
    assert check_spec(function) == []


def test_hook_names_are_unique() -> None:
    """No two spec modules declare the same hook (pluggy would silently keep one)."""
    names = [f.__name__ for f in _all_specs()]
    assert len(names) == len(set(names))


def test_chain_specs_name_an_argument_of_theirs() -> None:
    """A chain hook's chained argument is one of its parameters."""
    for function in _all_specs():
        chain_arg = getattr(function, "aieng_chain_arg", None)
        if getattr(function, "aieng_call_mode", None) is CallMode.CHAIN:
            assert chain_arg in inspect.signature(function).parameters, function.__name__


def test_checker_accepts_a_complete_spec() -> None:
    """The checker passes a spec with every field (so its failures below are meaningful)."""

    @role_spec(CallMode.FIRST, role="test")
    def aieng_test_find(query: object, k: int) -> object:
        """Find things.

        :called: by a test.
        :mode: first: the first answer wins.
        :none: "not mine".
        :async: may be ``async def``.
        :param query: the query.
        :param k: how many.
        :returns: results.

        .. versionadded:: 0.1.0
        """

    assert check_spec(aieng_test_find) == []


def test_checker_reports_a_malformed_spec() -> None:
    """The checker reports each missing field, wrong parameter, mode mismatch and bad name."""

    def find_things(query: object, k: int) -> object:
        """Find things.

        :called: by a test.
        :mode: gather: all run.
        :param query: the query.
        :param limit: a parameter the signature lacks.
        :param query: twice.
        """

    spec = role_spec(CallMode.FIRST, role="test")(find_things)
    problems = "\n".join(check_spec(spec))
    for expected in [
        "does not start with 'aieng_'",
        "lacks :none:",
        "lacks :async:",
        "lacks :returns:",
        "lacks .. versionadded::",
        "parameter 'k' has no :param:",
        ":param limit: documents no parameter",
        "documented twice: query",
        ":mode: says 'gather' but the declared mode is 'first'",
    ]:
        assert expected in problems
    assert "lacks :called:" not in problems
    assert "lacks :mode:" not in problems


def test_checker_reports_an_unmarked_function() -> None:
    """A function without docstring or markers is reported as such, not crashed on."""

    def aieng_bare(x: int) -> None:
        pass

    problems = check_spec(aieng_bare)
    assert any("not marked as a hook spec" in p for p in problems)
    assert any("aieng_call_mode is not set" in p for p in problems)
    assert any("no docstring" in p for p in problems)


# ---------------------------------------------------------------------------- docs/hooks


def test_every_spec_has_a_page() -> None:
    """Each spec has its page in docs/hooks/ and is listed in the index."""
    index = (DOCS / "hooks" / "index.md").read_text(encoding="utf-8")
    for function in _all_specs():
        assert (DOCS / "hooks" / f"{function.__name__}.md").is_file(), function.__name__
        assert f"({function.__name__}.md)" in index, function.__name__


def test_hook_pages_are_up_to_date() -> None:
    """docs/hooks/ is exactly what ``python -m aieng_core._hookdoc`` renders (no stale pages)."""
    from aieng_core._hookdoc import check_pages, render_hook_pages

    pages = render_hook_pages()
    on_disk = {
        path.relative_to(DOCS).as_posix(): path.read_text(encoding="utf-8")
        for path in (DOCS / "hooks").glob("*.md")
    }
    problems = check_pages(DOCS, pages)
    assert problems == [], "run `python -m aieng_core._hookdoc` to regenerate"
    assert on_disk == pages


def test_hookdoc_check_fails_on_stale_and_orphan_pages(tmp_path: Path) -> None:
    """``--check`` exits 1 naming missing, stale and orphan pages; writing repairs them."""
    from aieng_core._hookdoc import GENERATED_MARKER, main

    assert main(["--docs", str(tmp_path), "--check"]) == 1
    assert main(["--docs", str(tmp_path)]) == 0
    assert main(["--docs", str(tmp_path), "--check"]) == 0
    (tmp_path / "hooks" / "aieng_generate.md").write_text("edited\n", encoding="utf-8")
    (tmp_path / "hooks" / "aieng_gone.md").write_text(GENERATED_MARKER + "\n", encoding="utf-8")
    (tmp_path / "hooks" / "notes.md").write_text("hand-written\n", encoding="utf-8")
    from aieng_core._hookdoc import check_pages

    problems = check_pages(tmp_path)
    assert [p.split(":")[0] for p in problems] == ["stale", "orphan"]
    assert main(["--docs", str(tmp_path)]) == 0
    assert check_pages(tmp_path) == []
    assert (tmp_path / "hooks" / "notes.md").exists()  # not generated: never deleted


def test_hook_page_shows_the_contract() -> None:
    """A page carries the annotated signature, role, mode, chained argument and version."""
    from aieng_core._hookdoc import render_hook_pages

    page = render_hook_pages()["hooks/aieng_rerank.md"]
    assert "def aieng_rerank(query: Query, hits: Sequence[Hit], k: int) -> list[Hit] | None" in page
    assert "| role | `reranker` |" in page
    assert "| call mode | `chain` |" in page
    assert "| chained argument | `hits` |" in page
    assert "| added in | 0.1.0 |" in page
    assert "- `k` (`int`): the most hits to keep." in page
    stream = render_hook_pages()["hooks/aieng_stream.md"]
    assert "an async iterator of `Delta`" in stream  # :class:`Delta` rendered
    assert "## Raises\n\n`ValueError`: as `aieng_generate`" in stream  # :raises X: rendered
    for text in (page, stream):
        assert re.search(r"(?<!`)``(?!`)", text) is None  # ``literal`` rendered
        assert ":class:" not in text


# ---------------------------------------------------------------------------- imports


def _walk(package_name: str) -> tuple[list[str], list[str]]:
    """Module names of a package and the names that failed to import during discovery."""
    package = importlib.import_module(package_name)
    errors: list[str] = []
    names = [package_name]
    for info in pkgutil.walk_packages(
        package.__path__, prefix=f"{package_name}.", onerror=errors.append
    ):
        names.append(info.name)
    return names, errors


def _our_modules() -> Iterator[str]:
    for package in ("aieng_hookspecs", "aieng_core"):
        names, _ = _walk(package)
        yield from names


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    return env


def _import_alone(module: str) -> tuple[str, int, str]:
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", f"import {module}"],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_subprocess_env(),
        timeout=60,
    )
    return module, result.returncode, result.stderr


@pytest.mark.parametrize("package", ["aieng_hookspecs", "aieng_core"])
def test_discovery_finds_modules(package: str) -> None:
    """Module discovery imports every subpackage without error (nothing skipped silently)."""
    names, errors = _walk(package)
    assert errors == []
    assert len(names) > 1


def test_every_module_imports_alone() -> None:
    """Each module of aieng_hookspecs and aieng_core imports on its own with ``-W error``.

    One fresh interpreter per module, so a module that only works after another one was
    imported (a hidden import-order dependency) fails; run in parallel to stay fast.
    """
    modules = list(_our_modules())
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        results = list(pool.map(_import_alone, modules))
    failures = [f"{module}:\n{stderr}" for module, code, stderr in results if code != 0]
    assert failures == [], "\n".join(failures)


def test_hookspecs_import_nothing_of_ours() -> None:
    """Importing all of aieng_hookspecs loads no other aieng package and no third party
    besides pluggy and attrs (the contract's only dependencies)."""
    code = """
import importlib, pkgutil, sys
import aieng_hookspecs
for info in pkgutil.walk_packages(aieng_hookspecs.__path__, prefix="aieng_hookspecs."):
    importlib.import_module(info.name)
tops = {name.partition(".")[0] for name in sys.modules}
ours = sorted(t for t in tops if t.startswith("aieng") and t != "aieng_hookspecs")
third = sorted(
    t for t in tops
    if t not in sys.stdlib_module_names and not t.startswith("_") and not t.startswith("aieng")
    and t not in {"pluggy", "attr", "attrs"} and not t.startswith("__editable__")
)
sys.stdout.write(f"{ours} {third}")
"""
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_subprocess_env(),
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "[] []"


def test_hookspecs_version_matches_distribution() -> None:
    """``aieng_hookspecs.__version__`` is the installed distribution's version."""
    from importlib.metadata import version

    assert aieng_hookspecs.__version__ == version("aieng-hookspecs")


def test_no_print_outside_the_cli_presentation_layer() -> None:
    """Only the CLI's presentation module writes to the terminal; everything else logs."""
    import ast

    root = Path(__file__).resolve().parent.parent
    offenders = []
    for folder in ("aieng_core", "hookspecs/aieng_hookspecs"):
        for path in (root / folder).rglob("*.py"):
            if path.relative_to(root).as_posix() == "aieng_core/cli/_present.py":
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                        and node.func.id == "print"):
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []


def test_every_kernel_module_stays_small() -> None:
    """Kernel modules stay under 500 lines and nothing passes 1,000 (STYLE.md)."""
    root = Path(__file__).resolve().parent.parent
    too_big = []
    for path in (root / "aieng_core").rglob("*.py"):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        limit = 1000 if "testing" in path.parts else 500
        if lines > limit:
            too_big.append(f"{path.relative_to(root)}: {lines} lines")
    assert too_big == []
