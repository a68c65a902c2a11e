"""What a session of the runner records in ``lock.json`` about what it ran: each
component with the plugin offering it, the files the components name (hashed when the
session starts and when it ends) and the models it called."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._lock import FileHasher, component_paths
from ._resume import match_files

if TYPE_CHECKING:
    from aieng_core import Kernel, Pipeline

    from ._runner import PipelineSource


def _components(kernel: Kernel, pipelines: list[Pipeline | None]) -> list[dict[str, str]]:
    """Each component of the pipelines with the plugin and distribution that offer it."""
    found = []
    for built in pipelines:
        if built is None:
            continue
        for name, component in built.config.components.items():
            entry = {"pipeline": built.name, "component": name, "use": component.use,
                     "plugin": "", "distribution": ""}
            if component.use in kernel.registry.components:
                info = kernel.registry.component(component.use)
                entry.update(plugin=info.plugin, distribution=info.distribution)
            found.append(entry)
    return found


def _add_files(lock: dict[str, Any], pipelines: list[Pipeline | None],
               pipeline_source: PipelineSource, judge_source: PipelineSource | None,
               hasher: FileHasher, old_files: list[dict[str, Any]]) -> None:
    """Hash each file a component option names into ``lock["files"]``, each carrying
    whether an earlier session saw it change while it ran (``written``)."""
    bases = [Path(s).resolve().parent for s in (pipeline_source, judge_source)
             if s is not None and not isinstance(s, Mapping)]
    files: dict[str, dict[str, Any]] = {}
    for built in pipelines:
        if built is None:
            continue
        for component, option, path in component_paths(built.config.components, bases):
            key = str(path)
            if key not in files:
                files[key] = {"component": f"{built.name}.{component}", "option": option,
                              "path": key, **hasher.path(path)}
    hasher.save()
    for key, old in match_files(old_files, list(files.values())).items():
        if old.get("written") is not None:
            files[key]["written"] = old["written"]
    lock["files"] = sorted(files.values(), key=lambda f: str(f["path"]))


def _files_after(lock: dict[str, Any], hasher: FileHasher) -> None:
    """Each file's hash at the session's end (``after``) and whether a session saw it
    change while it ran (``written``: a file the run writes, such as a cache)."""
    for entry in lock.get("files", []):
        try:
            after = hasher.path(Path(entry["path"]))["sha256"]
        except OSError:
            after = None
        entry["after"] = after
        entry["written"] = bool(entry.get("written")) or after != entry["sha256"]
    hasher.save()


def _add_models(lock: dict[str, Any], records: Any) -> None:
    """The distinct ``component``/``model`` pairs of every recorded model call."""
    models = {(m["component"], m["model"]) for m in lock.get("models", [])}
    for record in records:
        models.update(tuple(label.split("/", 1)) for label in record.models if "/" in label)
    lock["models"] = [{"component": c, "model": m} for c, m in sorted(models)]
