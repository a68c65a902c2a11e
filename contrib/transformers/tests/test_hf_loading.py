"""Loading models in several threads at once, as a pipeline opening its components does."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import aieng_transformers
import pytest
import torch
from aieng_transformers import MiniLMEmbedder, MiniLMOptions, SmolLM2Backend, SmolLM2Options

from aieng_core import Kernel
from aieng_core.registry import PluginInfo

Register = Callable[..., AbstractContextManager[PluginInfo]]

pytestmark = pytest.mark.anyio


def _on_meta(module: torch.nn.Module) -> list[str]:
    return [name for name, p in module.named_parameters() if p.device.type == "meta"]


async def test_a_pipeline_opens_both_models_at_once(aieng_kernel: Kernel,
                                                    register_plugin: Register,
                                                    bert_dir: Path, random_dir: Path) -> None:
    """The README's pipeline of ``smollm2`` and ``minilm`` opens both in worker threads at
    once: each gets real weights, and transformers' process-wide loading patch
    (``nn.Module.register_parameter`` onto the meta device) is undone after both."""
    original = torch.nn.Module.register_parameter
    config = {"pipeline": {"name": "both", "stages": ["generate"]},
              "components": {"llm": {"use": "smollm2", "path": str(random_dir)},
                             "embedder": {"use": "minilm", "path": str(bert_dir)}}}
    try:
        for _ in range(3):
            with register_plugin(aieng_transformers, "transformers"):
                pipeline = aieng_kernel.pipeline(config)
            async with pipeline:
                result = await pipeline.run("hi")
                assert result.status == "ok"
                vectors = await pipeline.dispatcher.first(
                    "aieng_embed", {"texts": ["a cat"], "model": None}, stage="test")
                assert vectors is not None and vectors[0].shape == (1, 32)
            assert torch.nn.Module.register_parameter is original
    finally:
        torch.nn.Module.register_parameter = original  # type: ignore[method-assign]


def test_threads_loading_at_once_get_real_models(bert_dir: Path, random_dir: Path) -> None:
    """Encoders and causal LMs loaded by many threads at once all hold real weights."""
    original = torch.nn.Module.register_parameter
    embedders = [MiniLMEmbedder(MiniLMOptions(path=str(bert_dir))) for _ in range(3)]
    backends = [SmolLM2Backend(SmolLM2Options(path=str(random_dir))) for _ in range(3)]
    errors: list[BaseException] = []

    def run(load: Callable[[], object]) -> None:
        try:
            load()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c.load,)) for c in (*embedders, *backends)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert torch.nn.Module.register_parameter is original
        for embedder in embedders:
            assert _on_meta(embedder.load().model) == []
        for backend in backends:
            assert _on_meta(backend.load().model) == []
    finally:
        torch.nn.Module.register_parameter = original  # type: ignore[method-assign]


#: The end of a subprocess's program: each of its ``loads`` in a thread of its own, all at
#: once; it prints the errors they raised (``[]``: none).
_AT_ONCE = """
errors = []
def run(load):
    try:
        load()
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=run, args=(load,)) for load in loads]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(errors)
"""


def test_first_loads_in_a_fresh_process(bert_dir: Path, random_dir: Path) -> None:
    """In a process that has not imported transformers' model classes yet (``aieng run``
    on a pipeline of ``smollm2`` and ``minilm``), two threads loading at once both load:
    their first imports of transformers' lazy modules do not meet half done ("cannot
    import name 'AutoModelForCausalLM'"). A subprocess: torch and transformers must be
    cold (a few seconds)."""
    code = """
import sys, threading
from aieng_transformers import MiniLMEmbedder, MiniLMOptions, SmolLM2Backend, SmolLM2Options
loads = [MiniLMEmbedder(MiniLMOptions(path=sys.argv[1])).load,
         SmolLM2Backend(SmolLM2Options(path=sys.argv[2])).load]
""" + _AT_ONCE
    here = str(Path(aieng_transformers.__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", code, str(bert_dir), str(random_dir)],
                         capture_output=True, text=True, check=True, timeout=300,
                         env={"PYTHONPATH": here, "PATH": "", "OMP_NUM_THREADS": "1",
                              "HF_HUB_OFFLINE": "1"})
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_another_plugins_build_waits_its_turn(bert_dir: Path, random_dir: Path,
                                              tmp_path: Path) -> None:
    """The lock is the process's, not this package's: the `cross-encoder` reranker of
    aieng-rerankers loading while `smollm2` loads (a pipeline of both opening) got "cannot
    import name 'AutoModelForCausalLM'" in a fresh process, since only this package took
    the lock. Both take ``aieng_hookspecs.MODEL_BUILD`` now. A subprocess: cold imports."""
    pytest.importorskip("aieng_rerankers")
    from transformers import BertConfig, BertForSequenceClassification

    classifier = tmp_path / "cls"
    config = BertConfig.from_pretrained(str(bert_dir))
    config.num_labels = 1
    BertForSequenceClassification(config).save_pretrained(str(classifier))
    for file in bert_dir.iterdir():
        if "tok" in file.name or "vocab" in file.name or "special" in file.name:
            (classifier / file.name).write_bytes(file.read_bytes())
    code = """
import sys, threading
from aieng_rerankers._cross_model import CrossEncoderModel
from aieng_transformers import SmolLM2Backend, SmolLM2Options
loads = [lambda: CrossEncoderModel(sys.argv[1]),
         SmolLM2Backend(SmolLM2Options(path=sys.argv[2])).load]
""" + _AT_ONCE
    out = subprocess.run([sys.executable, "-c", code, str(classifier), str(random_dir)],
                         capture_output=True, text=True, check=True, timeout=300,
                         env={"PATH": "", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
