"""The metrics plugin inside a host program: importing it (the sandbox's child script
included) does no work and touches nothing of the host process."""

from __future__ import annotations

import importlib
import io
import os
import sys

import pytest


class _NoInput(io.StringIO):
    def read(self, size: int | None = -1) -> str:
        raise AssertionError("the child script read the host's standard input")


def test_the_sandbox_child_script_does_nothing_when_imported(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``_bootstrap`` ends its process with ``os._exit`` and installs an audit hook (which
    no one can remove): both only when run as the child's script, never when the module
    is imported in the host's own process (by the meta-tests, a doc tool, a coverage run).
    """
    exits: list[int] = []
    hooks: list[object] = []
    monkeypatch.setattr(os, "_exit", exits.append)
    monkeypatch.setattr(sys, "addaudithook", hooks.append)
    monkeypatch.setattr(sys, "stdin", _NoInput())
    monkeypatch.delitem(sys.modules, "aieng_metrics._bootstrap", raising=False)
    module = importlib.import_module("aieng_metrics._bootstrap")
    assert callable(module.main)
    assert (exits, hooks) == ([], [])
