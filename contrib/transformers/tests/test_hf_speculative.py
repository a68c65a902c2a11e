"""Speculative decoding (prompt lookup, draft model): output identical to plain greedy.

The identity checks run a random tiny Llama in float64, so that batched verification and
one-token passes cannot round differently where two logits nearly tie: what is checked
is the algorithm (proposal, verification, acceptance, cache crop), not float32 noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _tiny import byte_tokenizer, random_llama
from aieng_hookspecs.types import Message, Request
from aieng_transformers import SmolLM2Backend, SmolLM2Options
from aieng_transformers._causal import CausalLM, Generation
from aieng_transformers._speculative import (
    DraftProposer,
    PromptLookup,
    Speculation,
    truncated_draft,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
)

pytestmark = pytest.mark.anyio

ALPHABET = "abcab cabx. "


def ask(text: str, **params: Any) -> Request:
    return Request(messages=(Message("user", text),), **params)


@pytest.fixture(scope="module")
def tiny() -> CausalLM:
    """A random 4-layer Llama on the byte tokenizer, float64, built in memory."""
    tokenizer = byte_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0, tie_word_embeddings=True)
    torch.manual_seed(3)
    model = LlamaForCausalLM(config).double().eval()
    return CausalLM(model, tokenizer)


def run(lm: CausalLM, request: Request, speculation: Speculation | None
        ) -> tuple[list[int], list[str], Generation]:
    """Decode ``request`` to the end with ``speculation``: ids, released texts, state."""
    lm.speculation = speculation
    try:
        generation = lm.start(request, logprobs=bool(request.metadata.get("logprobs")))
        texts = []
        while True:
            step = generation.step()
            texts.append(step.text)
            if step.finish is not None:
                return generation.generated, texts, generation
    finally:
        lm.speculation = None


def draft_of(lm: CausalLM, layers: int) -> CausalLM:
    return CausalLM(truncated_draft(lm.model, layers), lm.tokenizer)


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=st.text(ALPHABET, min_size=1, max_size=40),
       max_tokens=st.integers(1, 40),
       ngram=st.integers(1, 4), proposal=st.integers(1, 8),
       use_draft=st.booleans())
def test_speculation_is_greedy(tiny: CausalLM, prompt: str, max_tokens: int, ngram: int,
                               proposal: int, use_draft: bool) -> None:
    """For random prompts, budgets and sizes, prompt lookup and a 1-layer draft give the
    very ids, text, usage and finish reason of plain greedy decoding, and its
    log-probabilities (which, unlike a random model's greedy ids, show a cache cropped to
    the wrong length)."""
    request = ask(prompt, max_tokens=max_tokens, metadata={"logprobs": True})
    speculation = (Speculation("draft", max_proposal=proposal, draft=draft_of(tiny, 1))
                   if use_draft else
                   Speculation("prompt-lookup", max_proposal=proposal, ngram_size=ngram))
    plain_ids, plain_texts, plain = run(tiny, request, None)
    ids, texts, fast = run(tiny, request, speculation)
    assert ids == plain_ids
    assert "".join(texts) == "".join(plain_texts)
    assert (fast.usage, fast.finish) == (plain.usage, plain.finish)
    assert fast.passes <= plain.passes
    assert fast.passes + fast.accepted == plain.passes
    assert [t.logprob for t in fast.logprobs] == pytest.approx(
        [t.logprob for t in plain.logprobs], abs=1e-9)


def sliding(architecture: str) -> CausalLM:
    """A random 2-layer model with a sliding window of 6 tokens, float64: Mistral's (every
    layer) or Gemma 2's (every other layer), as Mistral 7B v0.1 and Gemma 2 / 3 have."""
    tokenizer = byte_tokenizer()
    sizes: dict[str, Any] = {
        "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 256, "sliding_window": 6, "bos_token_id": 1,
        "eos_token_id": 2, "pad_token_id": 0}
    torch.manual_seed(4)
    model: Any = (MistralForCausalLM(MistralConfig(**sizes)) if architecture == "mistral"
                  else Gemma2ForCausalLM(Gemma2Config(head_dim=8, **sizes)))
    return CausalLM(model.double().eval(), tokenizer)


@pytest.mark.parametrize("architecture", ["mistral", "gemma2"])
def test_speculation_past_a_sliding_window(architecture: str) -> None:
    """A model with sliding-window layers keeps only the window in its own cache and
    refuses to crop that back; speculating past the window (a prompt longer than it, a
    rejected guess) still gives plain greedy decoding's ids and log-probabilities, with
    prompt lookup and with a draft cut from the model."""
    lm = sliding(architecture)
    request = ask("ab cab xab cab. " * 3, max_tokens=30, metadata={"logprobs": True})
    plain_ids, plain_texts, plain = run(lm, request, None)
    for speculation in (Speculation("prompt-lookup", max_proposal=4),
                        Speculation("draft", max_proposal=3, draft=draft_of(lm, 1))):
        ids, texts, fast = run(lm, request, speculation)
        assert ids == plain_ids
        assert ("".join(texts), fast.usage, fast.finish) == (
            "".join(plain_texts), plain.usage, plain.finish)
        assert [t.logprob for t in fast.logprobs] == pytest.approx(
            [t.logprob for t in plain.logprobs], abs=1e-9)


def test_a_draft_with_a_shorter_context_stops_proposing_at_its_end() -> None:
    """A separate draft model whose context is shorter than the model's (absolute
    positions: GPT-2, OPT) failed with an index error once a request outgrew it; it
    proposes nothing past its context, and the output stays plain greedy decoding's."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = byte_tokenizer()

    def gpt2(positions: int, layers: int) -> CausalLM:
        config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=layers, n_head=4,
                            n_positions=positions, bos_token_id=1, eos_token_id=2)
        torch.manual_seed(5)
        return CausalLM(GPT2LMHeadModel(config).double().eval(), tokenizer)

    lm, draft = gpt2(256, 2), gpt2(40, 1)
    request = ask("ab cab xab cab. ab", max_tokens=40, metadata={"logprobs": True})
    plain_ids, plain_texts, plain = run(lm, request, None)
    assert plain.prompt_tokens + len(plain_ids) > 40  # the request outgrows the draft
    ids, texts, fast = run(lm, request, Speculation("draft", max_proposal=4, draft=draft))
    assert (ids, "".join(texts), fast.usage) == (plain_ids, "".join(plain_texts), plain.usage)


def test_prompt_lookup_accepts_on_repetitive_text(tiny: CausalLM) -> None:
    """A random model loops; once it does, prompt lookup proposes the loop and whole
    proposals are accepted: fewer forward passes for the same ids."""
    request = ask("ab " * 20, max_tokens=60)
    plain_ids, _, plain = run(tiny, request, None)
    ids, _, fast = run(tiny, request, Speculation("prompt-lookup", max_proposal=6))
    assert ids == plain_ids
    assert fast.accepted > 0 and fast.passes < plain.passes


def test_full_depth_draft_is_always_right(tiny: CausalLM) -> None:
    """A draft that is the model itself is always accepted: each pass yields k + 1 tokens
    (after the prompt's pass), with the exact greedy ids."""
    request = ask("hello", max_tokens=25)
    plain_ids, _, _ = run(tiny, request, None)
    same = CausalLM(tiny.model, tiny.tokenizer)
    ids, _, fast = run(tiny, request, Speculation("draft", max_proposal=4, draft=same))
    assert ids == plain_ids
    assert fast.accepted == len(ids) - fast.passes
    assert fast.passes == -(-len(ids) // 5)  # ceil(25 / (4 + 1))


def test_logprobs_under_speculation(tiny: CausalLM) -> None:
    """Log-probabilities come from the verifying pass and match plain decoding's."""
    request = ask("ab ab ab ab", max_tokens=20, metadata={"logprobs": True})
    _, _, plain = run(tiny, request, None)
    _, _, fast = run(tiny, request, Speculation("prompt-lookup", max_proposal=5))
    assert [t.token for t in fast.logprobs] == [t.token for t in plain.logprobs]
    assert [t.logprob for t in fast.logprobs] == pytest.approx(
        [t.logprob for t in plain.logprobs], abs=1e-9)


def test_sampling_does_not_speculate(tiny: CausalLM) -> None:
    """Sampled requests decode one token per pass (documented fallback), same samples."""
    request = ask("ab ab ab", max_tokens=12, temperature=0.8, seed=5)
    plain_ids, _, _ = run(tiny, request, None)
    ids, _, fast = run(tiny, request, Speculation("prompt-lookup"))
    assert fast.proposer is None and fast.accepted == 0
    assert ids == plain_ids


def test_prompt_lookup_proposals() -> None:
    """The continuation of the most recent earlier occurrence of the longest n-gram."""
    lookup = PromptLookup(3)
    assert lookup.propose([1, 2, 3, 4, 5, 9, 2, 3], 2) == [4, 5]
    assert lookup.propose([1, 2, 3, 7, 1, 2, 3, 8, 2, 3], 3) == [8, 2, 3]
    assert lookup.propose([5, 6, 7], 4) == []
    assert lookup.propose([1, 2, 1], 4) == [2, 1]  # a 1-gram match, cut at the end
    with pytest.raises(ValueError, match="ngram_size"):
        PromptLookup(0)


def test_draft_cache_follows_rollback(tiny: CausalLM) -> None:
    """The draft proposer's cache is cropped to the tokens still valid: proposing after
    a different continuation equals proposing from scratch."""
    draft = draft_of(tiny, 2)
    kept = DraftProposer(draft)
    kept.propose([5, 6, 7, 8], 4)
    fresh = DraftProposer(draft)
    assert kept.propose([5, 6, 7, 9, 10], 3) == fresh.propose([5, 6, 7, 9, 10], 3)


def test_truncated_draft_shares_weights(tiny: CausalLM) -> None:
    """The draft reuses the model's modules (no copy) and checks its layer count."""
    draft = truncated_draft(tiny.model, 2)
    assert draft.model.embed_tokens is tiny.model.model.embed_tokens
    assert draft.lm_head is tiny.model.lm_head
    assert len(draft.model.layers) == 2
    assert draft.model.layers[1] is tiny.model.model.layers[1]
    with pytest.raises(ValueError, match="draft_layers must be between 1 and 3"):
        truncated_draft(tiny.model, 4)


async def test_backend_streams_with_stops_under_speculation(chain_dir: Path) -> None:
    """Through the component: prompt lookup with a stop string and streaming gives the
    plain backend's deltas' text, usage and finish reason."""
    plain = SmolLM2Backend(SmolLM2Options(path=str(chain_dir)))
    fast = SmolLM2Backend(SmolLM2Options(path=str(chain_dir), speculative="prompt-lookup",
                                         max_proposal=4))
    for request in (ask("abc-xyz abc-xyz:é"), ask("hi", stop=("xyz",)),
                    ask("abc-xyz:é✓", max_tokens=5)):
        results = []
        for backend in (plain, fast):
            stream = backend.aieng_stream(request)
            assert stream is not None
            deltas = [d async for d in stream]
            results.append(("".join(d.text for d in deltas), stream.usage,
                            stream.finish_reason, deltas[-1].usage))
        assert results[0] == results[1]


async def test_backend_draft_options(random_dir: Path, tmp_path: Path) -> None:
    """``speculative = "draft"`` cuts the model (``draft_layers``) or loads ``draft_path``;
    a draft with another vocabulary or too many layers is refused by name."""
    request = ask("hello there", max_tokens=12)
    plain = await SmolLM2Backend(SmolLM2Options(path=str(random_dir))).aieng_generate(request)
    cut = SmolLM2Backend(SmolLM2Options(path=str(random_dir), speculative="draft",
                                        draft_layers=1))
    same = SmolLM2Backend(SmolLM2Options(path=str(random_dir), speculative="draft",
                                         draft_path=str(random_dir)))
    for backend in (cut, same):
        assert await backend.aieng_generate(request) == plain
    with pytest.raises(ValueError, match="draft_layers must be between 1 and 1"):
        SmolLM2Backend(SmolLM2Options(path=str(random_dir), speculative="draft",
                                      draft_layers=2)).load()
    other = random_llama(tmp_path / "other")
    tokenizer = byte_tokenizer()
    tokenizer.add_tokens(["<extra>"])
    tokenizer.save_pretrained(str(other))
    with pytest.raises(ValueError, match="another vocabulary"):
        SmolLM2Backend(SmolLM2Options(path=str(random_dir), speculative="draft",
                                      draft_path=str(other))).load()
