"""``smollm2`` on tiny models built from configs: the fast paths of generation."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
import torch
from _tiny import CHAIN_TEXT, EOS_ID
from aieng_hookspecs.types import Completion, Delta, Message, Request
from aieng_transformers import GenerationStream, SmolLM2Backend, SmolLM2Options

from aieng_core.testing.conformance import BackendSuite

pytestmark = pytest.mark.anyio


def ask(text: str = "hi", **params: Any) -> Request:
    """A one-message request, greedy unless ``params`` say otherwise."""
    return Request(messages=(Message("user", text),), **params)


async def collect(backend: SmolLM2Backend, request: Request) -> tuple[list[Delta], Any]:
    stream = backend.aieng_stream(request)
    assert isinstance(stream, GenerationStream)
    deltas = [delta async for delta in stream]
    return deltas, stream


async def generate(backend: SmolLM2Backend, request: Request) -> Completion:
    completion = await backend.aieng_generate(request)
    assert completion is not None
    return completion


class TestChainConformance(BackendSuite):
    """The backend on the chain model passes every check the kit makes of a backend."""

    @pytest.fixture
    def component(self, chain_backend: SmolLM2Backend) -> SmolLM2Backend:
        return chain_backend


class TestRandomModelConformance(BackendSuite):
    """The backend on a random tiny Llama (ChatML fallback template) passes the suite."""

    @pytest.fixture
    def component(self, random_backend: SmolLM2Backend) -> SmolLM2Backend:
        return random_backend


async def test_greedy_writes_the_chain(chain_backend: SmolLM2Backend) -> None:
    """Greedy decoding of the chain model writes its text and stops at EOS, counting it."""
    completion = await generate(chain_backend, ask())
    assert completion.text == CHAIN_TEXT
    assert completion.finish_reason == "stop"
    assert completion.model == "chain"
    assert completion.usage.completion_tokens == len(CHAIN_TEXT.encode()) + 1  # + EOS
    prompt = chain_backend.load().encode_prompt(ask().messages)
    assert completion.usage.prompt_tokens == len(prompt)


async def test_stream_releases_whole_characters(chain_backend: SmolLM2Backend) -> None:
    """Multi-byte characters span several tokens but reach the stream whole; the deltas
    join to the generated text, and the stream's usage (also on its last delta) equals
    generate's."""
    deltas, stream = await collect(chain_backend, ask())
    texts = [d.text for d in deltas]
    assert texts == [*CHAIN_TEXT, ""]  # one delta per character, then the finish
    assert [d.finish_reason for d in deltas] == [None] * len(CHAIN_TEXT) + ["stop"]
    completion = await generate(chain_backend, ask())
    assert stream.usage == completion.usage and stream.finish_reason == "stop"
    assert deltas[-1].usage == completion.usage
    assert all(d.usage is None for d in deltas[:-1])


@pytest.mark.parametrize(("stop", "text"), [
    (("xyz",), "abc-"),
    (("z:é",), "abc-xy"),
    (("é✓", "c-"), "ab"),
    (("c-q",), CHAIN_TEXT),
])
async def test_stop_sequences(chain_backend: SmolLM2Backend, stop: tuple[str, ...],
                              text: str) -> None:
    """Generation ends at the first stop string, which is cut from the text (generated and
    streamed alike); a string that never completes changes nothing."""
    request = ask(stop=stop)
    completion = await generate(chain_backend, request)
    deltas, _ = await collect(chain_backend, request)
    assert completion.text == text == "".join(d.text for d in deltas)
    assert completion.finish_reason == "stop"
    if text != CHAIN_TEXT:  # the tokens making the stop string were generated, and counted
        assert completion.usage.completion_tokens < len(CHAIN_TEXT.encode()) + 1
        assert not any(s in "".join(d.text for d in deltas) for s in stop)


async def test_max_tokens_ends_with_length(chain_backend: SmolLM2Backend) -> None:
    """``max_tokens`` bounds the generated tokens, finish reason ``length``; a character
    left incomplete by the cut comes out as U+FFFD."""
    completion = await generate(chain_backend, ask(max_tokens=9))  # 'abc-xyz:' + 1 of é's bytes
    assert completion.finish_reason == "length"
    assert completion.usage.completion_tokens == 9
    assert completion.text == "abc-xyz:\ufffd"


async def test_seed_reproduces_samples(chain_backend: SmolLM2Backend) -> None:
    """Sampling with one seed repeats exactly; other seeds give other texts."""
    request = ask(temperature=1.0, seed=11, max_tokens=12)
    first = await generate(chain_backend, request)
    assert (await generate(chain_backend, request)).text == first.text
    others = {(await generate(chain_backend, attrs.evolve(request, seed=s))).text
              for s in range(1, 6)}
    assert len(others | {first.text}) > 2


async def test_top_k_one_is_greedy(chain_backend: SmolLM2Backend) -> None:
    """Sampling among the single most likely token is greedy decoding."""
    completion = await generate(chain_backend, ask(temperature=2.0, top_k=1, seed=3))
    assert completion.text == CHAIN_TEXT


async def test_tiny_top_p_is_greedy(chain_backend: SmolLM2Backend) -> None:
    """A nucleus smaller than the top token's probability keeps only that token."""
    completion = await generate(chain_backend, ask(temperature=1.0, top_p=0.01, seed=3))
    assert completion.text == CHAIN_TEXT


async def test_temperature_that_overflows_the_logits_is_greedy(
        chain_backend: SmolLM2Backend) -> None:
    """A temperature so close to 0 that logits / temperature overflow to infinities (a
    valid request: any finite temperature >= 0) decodes greedily, the limit of sampling,
    instead of failing on a NaN softmax."""
    for temperature in (1e-45, 1e-300):
        completion = await generate(chain_backend, ask(temperature=temperature, seed=0))
        assert completion.text == CHAIN_TEXT


async def test_logprobs_on_request(chain_backend: SmolLM2Backend) -> None:
    """``metadata.logprobs`` gives one log-probability per generated token (EOS included),
    the deltas' sums match them, and without it there are none."""
    request = ask(metadata={"logprobs": True})
    completion = await generate(chain_backend, request)
    assert completion.logprobs is not None
    assert len(completion.logprobs) == completion.usage.completion_tokens
    assert all(lp.logprob <= 0.0 for lp in completion.logprobs)
    assert completion.logprobs[0].token == "a"
    deltas, stream = await collect(chain_backend, request)
    total = sum(d.logprob for d in deltas if d.logprob is not None)
    assert total == pytest.approx(sum(lp.logprob for lp in completion.logprobs), abs=1e-4)
    assert stream.logprobs == completion.logprobs
    plain = await generate(chain_backend, ask())
    assert plain.logprobs is None
    assert all(d.logprob is None for d in (await collect(chain_backend, ask()))[0])


@pytest.mark.parametrize("value", ["false", "true", 1, 0, "", [True]])
async def test_logprobs_flag_must_be_a_boolean(chain_backend: SmolLM2Backend,
                                               value: object) -> None:
    """``metadata["logprobs"]`` is true or false (the gateway passes a boolean): a string
    such as ``"false"`` is an error naming the key, not log-probabilities by its
    truthiness; ``False`` and ``None`` ask for none."""
    with pytest.raises(ValueError, match=r"metadata\['logprobs'\]"):
        await generate(chain_backend, ask(metadata={"logprobs": value}))
    with pytest.raises(ValueError, match=r"metadata\['logprobs'\]"):
        await collect(chain_backend, ask(metadata={"logprobs": value}))
    for off in (False, None):
        assert (await generate(chain_backend, ask(metadata={"logprobs": off}))).logprobs \
            is None


async def test_logprobs_are_before_the_repetition_penalty(chain_dir: Path) -> None:
    """Log-probabilities are the model's own distribution's, as with temperature: a
    repetition penalty steers the choice but does not change them (regression: they came
    from the penalized logits, whose normalizer differs once tokens were generated)."""
    plain = SmolLM2Backend(SmolLM2Options(path=str(chain_dir)))
    penalized = SmolLM2Backend(SmolLM2Options(path=str(chain_dir), repetition_penalty=3.0))
    request = ask(metadata={"logprobs": True})
    expected, got = await generate(plain, request), await generate(penalized, request)
    assert got.text == expected.text == CHAIN_TEXT
    assert expected.logprobs is not None and got.logprobs is not None
    assert [lp.logprob for lp in got.logprobs] == pytest.approx(
        [lp.logprob for lp in expected.logprobs], abs=1e-6)


async def test_logprobs_are_the_models(random_backend: SmolLM2Backend) -> None:
    """Greedy tokens and their log-probabilities match the model's own forward pass over
    the whole sequence (the KV cache changes nothing)."""
    await matches_transformers(random_backend, tolerance=1e-4)


async def matches_transformers(backend: SmolLM2Backend, *, tolerance: float) -> None:
    """Six greedy tokens of ``backend`` are transformers' own ``generate`` ids, and their
    log-probabilities those of one forward pass over the whole sequence, to ``tolerance``."""
    lm = backend.load()
    request = ask("hello", max_tokens=6, metadata={"logprobs": True})
    completion = await generate(backend, request)
    prompt = lm.encode_prompt(request.messages)
    expected = lm.model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False,
                                 attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                 eos_token_id=sorted(lm.stop_ids), pad_token_id=0)
    ids = expected[0, len(prompt):].tolist()
    assert completion.text == lm.decode([i for i in ids if i not in lm.stop_ids])
    with torch.no_grad():
        logits = lm.model(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1:-1]
    reference = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(ids)[:, None])
    assert completion.logprobs is not None
    assert [lp.logprob for lp in completion.logprobs] == pytest.approx(
        reference.squeeze(1).tolist(), abs=tolerance)
    assert all(math.isfinite(lp.logprob) and lp.logprob <= 0.0 for lp in completion.logprobs)


async def test_closing_a_stream_stops_generation(chain_backend: SmolLM2Backend,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream closed after its first delta runs no further forward pass."""
    lm = chain_backend.load()
    calls: list[int] = []
    forward = lm.forward
    monkeypatch.setattr(lm, "forward", lambda ids, cache: calls.append(1) or forward(ids, cache))
    stream = chain_backend.aieng_stream(ask(max_tokens=200, temperature=1.0, seed=0))
    assert stream is not None
    await anext(stream)
    await stream.aclose()
    seen = len(calls)
    await anyio.sleep(0.2)
    assert len(calls) == seen <= 2


async def test_context_limits(tmp_path: Path) -> None:
    """A prompt that fills the context fails clearly; one that nearly fills it ends with
    ``length`` at the context's end."""
    from _tiny import chain_llama

    backend = SmolLM2Backend(SmolLM2Options(path=str(chain_llama(tmp_path, max_positions=40))))
    with pytest.raises(Exception, match="context is 40 tokens"):
        await generate(backend, ask("x" * 60))
    completion = await generate(backend, ask("x" * 10))  # 10 + 24 template tokens
    assert completion.finish_reason == "length"
    assert completion.usage.total_tokens == 40


@pytest.mark.parametrize(("template", "start"), [
    ("alpaca", "Below is an instruction"),
    ("llama2", "<|im_start|>[INST] hi [/INST]"),
    ("chatml", "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"),
])
def test_chat_template_option(chain_dir: Path, template: str, start: str) -> None:
    """``chat_template`` picks a built-in template over the tokenizer's own, with the
    tokenizer's BOS / EOS strings where the format has them."""
    backend = SmolLM2Backend(SmolLM2Options(path=str(chain_dir), chat_template=template))  # type: ignore[arg-type]
    assert backend.load().render(ask().messages).startswith(start)


def test_template_stop_strings(chain_dir: Path, random_backend: SmolLM2Backend) -> None:
    """ChatML's <|im_end|> ends generation as a token id (decoding skips its text);
    Alpaca's section headers end it as strings; a tokenizer without a template falls back
    to ChatML."""
    alpaca = SmolLM2Backend(SmolLM2Options(path=str(chain_dir), chat_template="alpaca")).load()
    assert alpaca.stop_strings == ("### Instruction:", "### Response:")
    fallback = random_backend.load()
    assert fallback.template is not None and fallback.template.name == "chatml"
    assert EOS_ID in fallback.stop_ids and fallback.stop_strings == ()


async def test_alpaca_prompt_still_generates(chain_dir: Path) -> None:
    """The Alpaca prompt ends in a newline too, so the chain model writes its text."""
    backend = SmolLM2Backend(SmolLM2Options(path=str(chain_dir), chat_template="alpaca"))
    assert (await generate(backend, ask())).text == CHAIN_TEXT


# Templates that refuse conversations the way real ones do (``raise_exception``):
# Mistral 7B Instruct v0.1 (user and assistant only, alternating) and Gemma (no system role).
MISTRAL_V01 = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
    "{% endif %}{% endfor %}")
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}")


@pytest.fixture(scope="module")
def strict_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The chain model under Mistral v0.1's and Gemma's refusing templates."""
    from _tiny import chain_llama

    return {name: chain_llama(tmp_path_factory.mktemp(name), chat_template=template)
            for name, template in (("mistral", MISTRAL_V01), ("gemma", GEMMA))}


async def test_refusing_templates_get_the_conversation_folded(
        strict_dirs: dict[str, Path]) -> None:
    """A template that refuses a system role or turns of one role in a row (Mistral's,
    Gemma's) gets the leading system text in front of the first user turn, a later
    system message as a user turn where it stands, and consecutive turns of one role
    joined by a blank line, as those models' users write them; generation,
    streaming, batching and tools (listed in a system message) then work."""
    from _tools import ADD
    from aieng_transformers._toolcalls import tool_plan

    chat = (Message("system", "Be brief."), Message("user", "Hi?"),
            Message("user", "Name a colour."), Message("assistant", "Red."),
            Message("system", "Stay polite."), Message("user", "Another?"))
    mistral = SmolLM2Backend(SmolLM2Options(path=str(strict_dirs["mistral"])))
    assert mistral.load().render(chat) == (
        "<|im_start|>[INST] Be brief.\n\nHi?\n\nName a colour. [/INST]"
        "Red.<|im_end|>[INST] Stay polite.\n\nAnother? [/INST]")
    gemma = SmolLM2Backend(SmolLM2Options(path=str(strict_dirs["gemma"])))
    assert gemma.load().render(chat[:3]) == (
        "<|im_start|><start_of_turn>user\nBe brief.\n\nHi?\n\nName a colour.<end_of_turn>\n"
        "<start_of_turn>model\n")
    request = Request(messages=chat)
    assert (await generate(gemma, request)).text == CHAIN_TEXT
    deltas, _ = await collect(gemma, request)
    assert "".join(d.text for d in deltas) == CHAIN_TEXT
    batched = SmolLM2Backend(SmolLM2Options(path=str(strict_dirs["gemma"]), max_batch=2))
    try:
        assert (await generate(batched, request)).text == CHAIN_TEXT
    finally:
        await batched.aieng_pipeline_close()
    tools = gemma.load().render(chat[1:2], tool_plan((ADD,), {}))
    assert tools.startswith("<|im_start|><start_of_turn>user\n") and '"add"' in tools
    assert tools.endswith("Hi?<end_of_turn>\n<start_of_turn>model\n")


async def test_a_template_refusing_anyway_fails_clearly(strict_dirs: dict[str, Path]) -> None:
    """A conversation the template refuses even folded (Mistral's starting with the
    assistant) fails with a ``ValueError`` naming the model and the template's rule,
    streamed or not, batched or not."""
    backend = SmolLM2Backend(SmolLM2Options(path=str(strict_dirs["mistral"])))
    request = Request(messages=(Message("assistant", "Hello!"), Message("user", "Hi.")))
    rule = "refuses this conversation \\(Conversation roles must alternate"
    with pytest.raises(ValueError, match=rule) as raised:
        await generate(backend, request)
    assert str(strict_dirs["mistral"]) in str(raised.value)
    with pytest.raises(ValueError, match=rule):
        await collect(backend, request)
    batched = SmolLM2Backend(SmolLM2Options(path=str(strict_dirs["mistral"]), max_batch=2))
    try:
        with pytest.raises(ValueError, match=rule):
            await generate(batched, request)
    finally:
        await batched.aieng_pipeline_close()


def test_perplexity(random_backend: SmolLM2Backend) -> None:
    """Perplexity is exp of the mean token NLL of one forward pass; windows overlapping by
    half score long texts, each token once."""
    backend = random_backend
    lm = backend.load()
    text = "the quick brown fox jumps over the lazy dog"
    ids = lm.tokenizer(text)["input_ids"]
    with torch.no_grad():
        logits = lm.model(torch.tensor([ids])).logits[0, :-1]
    nll = -torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None]).mean()
    assert backend.perplexity(text) == pytest.approx(math.exp(float(nll)), rel=1e-4)
    windowed = backend.perplexity(text, window=8)
    assert math.isfinite(windowed) and windowed > 1.0
    with pytest.raises(ValueError, match="two tokens"):
        backend.perplexity("a")


def test_perplexity_windows_stay_within_the_context(tmp_path: Path) -> None:
    """On a model of absolute positions (a tiny GPT-2, 64 of them) a text 6x its context
    is scored in windows of the context (each token once: a window of exactly the text's
    length gives the one-pass value); a ``window`` past the context or under 2 (``0``
    included: it is no default) is a ``ValueError`` naming it, never an index error;
    empty text and one token are refused."""
    from _tiny import byte_tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = byte_tokenizer()
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32,
                               n_layer=2, n_head=4, bos_token_id=1, eos_token_id=EOS_ID)
                    ).save_pretrained(str(tmp_path))
    tokenizer.save_pretrained(str(tmp_path))
    backend = SmolLM2Backend(SmolLM2Options(path=str(tmp_path)))
    assert backend.load().context_length == 64
    long = "hello world, " * 30  # 390 tokens
    assert math.isfinite(backend.perplexity(long)) and backend.perplexity(long) > 1.0
    assert backend.perplexity(long, window=64) == backend.perplexity(long)
    short = "hello world"
    assert backend.perplexity(short, window=len(short)) == pytest.approx(
        backend.perplexity(short), rel=1e-6)
    for window in (65, 4096):
        with pytest.raises(ValueError, match=f"window of {window} tokens.*context is 64"):
            backend.perplexity(long, window=window)
    for window in (0, 1, -3):
        with pytest.raises(ValueError, match="window must be at least 2 tokens"):
            backend.perplexity(long, window=window)
    for text in ("", "a"):
        with pytest.raises(ValueError, match="two tokens"):
            backend.perplexity(text)


async def test_another_models_request_is_not_mine(chain_backend: SmolLM2Backend) -> None:
    """A request naming another model gets None from generate and stream."""
    request = ask(model="gpt-4o")
    assert await chain_backend.aieng_generate(request) is None
    assert chain_backend.aieng_stream(request) is None
    assert (await generate(chain_backend, ask(model="chain"))).text == CHAIN_TEXT


# -- dtype -----------------------------------------------------------------------------------


async def test_bfloat16_decodes(chain_dir: Path, random_dir: Path) -> None:
    """``dtype = "bfloat16"`` loads bfloat16 weights (half the bytes in the estimate);
    the chain model still writes its chain, a stream the same text, and on a random
    model greedy decoding gives transformers' own bfloat16 ``generate`` ids, with
    log-probabilities near the model's full-sequence forward (bfloat16 rounding)."""
    chain = SmolLM2Backend(SmolLM2Options(path=str(chain_dir), dtype="bfloat16"))
    lm = chain.load()
    assert {p.dtype for p in lm.model.parameters()} == {torch.bfloat16}
    assert (await generate(chain, ask())).text == CHAIN_TEXT
    deltas, _ = await collect(chain, ask())
    assert "".join(d.text for d in deltas) == CHAIN_TEXT
    full = SmolLM2Backend(SmolLM2Options(path=str(chain_dir))).memory_estimate()
    estimate = chain.memory_estimate()
    assert estimate["precision"] == "bf16" and full["precision"] == "fp32"
    assert estimate["weights_bytes"] * 2 == full["weights_bytes"]

    half = SmolLM2Backend(SmolLM2Options(path=str(random_dir), dtype="bfloat16"))
    await matches_transformers(half, tolerance=0.1)


def test_dtype_option_validates() -> None:
    """``dtype`` takes torch's names (or ``auto``); the ORT-style ``bf16`` is refused."""
    assert SmolLM2Options().dtype == "auto"
    for bad in ("bf16", "int8", ""):
        with pytest.raises(ValueError):
            SmolLM2Options(dtype=bad)  # type: ignore[arg-type]
