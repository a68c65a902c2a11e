"""Fixtures: one gateway over test doubles, served on loopback for the module."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import LoopbackServer, make_gateway
from aieng_gateway import Gateway


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, LoopbackServer]]:
    """A running gateway (auth on) and its server."""
    gateway = make_gateway(tmp_path_factory.mktemp("gw"))
    with LoopbackServer(gateway.app) as server:
        yield gateway, server


@pytest.fixture(scope="module")
def api_key(served: tuple[Gateway, LoopbackServer]) -> str:
    """A key without limits, created in the served gateway's store."""
    gateway, _ = served
    assert gateway.keys is not None
    key, _ = gateway.keys.create("tests")
    gateway.keys.refresh(force=True)
    return key
