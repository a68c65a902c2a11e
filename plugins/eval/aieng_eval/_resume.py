"""What a resume compares and keeps: the versions and files that changed since the earlier
sessions, the item count of a killed session, and the results ``--force`` sets aside."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from ._lock import lock_drift

log = structlog.get_logger(__name__)

#: The lockfile's version fields a resume compares (:func:`_version_changes`).
_VERSIONS = ("aieng", "plugins", "python")


def _version_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between the earlier sessions' versions (aieng, each plugin, Python)
    and this session's: an upgrade between sessions mixes both versions' results."""
    if not old:  # a fresh run, or a lockfile without versions
        return []
    try:  # only the version fields: the inputs' hashes are checked on their own
        return lock_drift(old, {key: new.get(key) for key in _VERSIONS})
    except (AttributeError, KeyError, TypeError):  # a hand-edited lockfile: nothing to say
        return []


def _set_aside(results_path: Path) -> None:
    """Rename the results to a new ``results.jsonl.bak-TIME`` (``--force``)."""
    stamp = int(time.time())
    backup = results_path.with_name(f"results.jsonl.bak-{stamp}")
    count = 2
    while backup.exists():  # a restart in the same second: never replace an older backup
        backup = results_path.with_name(f"results.jsonl.bak-{stamp}-{count}")
        count += 1
    results_path.rename(backup)
    log.warning("eval.force.restart", run_dir=str(results_path.parent), backup=str(backup))


def match_files(old_files: list[dict[str, Any]], new_files: list[dict[str, Any]]
                ) -> dict[str, dict[str, Any]]:
    """Each file of this session (by its path) paired with the earlier sessions' entry of
    the same file: the entry of the same path, else, for an earlier path the pipeline no
    longer names (the project, run directory included, moved or copied to another folder
    or machine: the lockfile keeps absolute paths), the one entry of the same component,
    option and file name."""
    now = {str(f.get("path")): f for f in new_files}
    pairs = {path: old for old in old_files if (path := str(old.get("path"))) in now}
    for old in old_files:
        if str(old.get("path")) in now:
            continue
        key = (old.get("component"), old.get("option"), Path(str(old.get("path"))).name)
        alike = [path for path, new in now.items() if path not in pairs
                 and (new.get("component"), new.get("option"), Path(path).name) == key]
        if len(alike) == 1:
            pairs[alike[0]] = old
    return pairs


def _file_changes(old_files: list[dict[str, Any]], new_files: list[dict[str, Any]]
                  ) -> tuple[list[str], list[str]]:
    """The files that changed since the earlier sessions: ``(inputs, others)``.

    An input (a model's weights, an index, documents) is a file no finished session saw
    change while it ran: a change since is the user's (retrained weights, edited corpus),
    and the results before and after it would mix. A file a session saw change (a cache,
    a monitoring store: the run writes it) or whose sessions never finished (no such
    record, as in lockfiles of earlier versions) only warns, as does a file the pipeline
    no longer names (a relative path resolved from another folder). A file at another
    path is compared with its earlier entry when :func:`match_files` pairs them."""
    partner = {id(old): path for path, old in match_files(old_files, new_files).items()}
    now = {str(f.get("path")): f for f in new_files}
    inputs: list[str] = []
    others: list[str] = []
    for old in old_files:
        path = partner.get(id(old))
        if path is None:
            others.append(f"{old.get('path')} is no longer among the pipeline's files")
            continue
        new = now[path]
        baseline = old.get("after") or old.get("sha256")
        if new.get("sha256") == baseline:
            continue
        line = (f"{path} ({old.get('component')} option {old.get('option')!r}) changed "
                f"(sha256 {str(baseline)[:12]} -> {str(new.get('sha256'))[:12]})")
        (inputs if old.get("written") is False else others).append(line)
    return inputs, others


def _count_killed_session(sessions: list[dict[str, Any]],
                          results_path: Path) -> list[dict[str, Any]]:
    """The earlier sessions, the last one's item count filled in when its process was
    killed outright (its lockfile entry still as written at its start: no finish time):
    every session appends one line per finished item, so it wrote the complete lines the
    others did not."""
    if not sessions or sessions[-1].get("finished_at") is not None:
        return sessions
    with results_path.open("rb") as handle:  # line by line: never the whole file at once
        lines = sum(1 for line in handle if line.endswith(b"\n") and line.strip())
    others = sum(int(s.get("items") or 0) + int(s.get("rejudged") or 0)
                 for s in sessions[:-1])
    return [*sessions[:-1], {**sessions[-1], "items": max(lines - others, 0)}]
