"""Incremental decoding through real ``tokenizers`` decoders (no model, no download):
SentencePiece-style byte fallback (``<0xE2><0x82><0xAC>``) and GPT-2 byte-level BPE."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from aieng_transformers._text import IncrementalDecoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models  # type: ignore[import-untyped]
from transformers import PreTrainedTokenizerFast
from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

#: Llama-2-style pieces beside the 256 byte tokens: words, a word-initial space, and
#: characters the vocabulary has whole.
_PIECES = ("▁", "a", "b", "▁a", "▁b", "é", "▁é", "€", "ab▁")


def _byte_fallback() -> PreTrainedTokenizerFast:
    # Llama 2's / Mistral's decoder: ▁ → space, byte tokens fused into UTF-8 (a run that
    # is not valid UTF-8 becomes one U+FFFD per byte), the first space stripped.
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), *_PIECES]
    core = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=[],
                                unk_token="<unk>", byte_fallback=True))
    core.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                      decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def _byte_level() -> PreTrainedTokenizerFast:
    # GPT-2's: every byte a token, plus tokens that hold part of a character
    # (E2 82, AC, a space and E2), or one whole (é, €).
    alphabet = bytes_to_unicode()
    merged = [bytes([0xE2, 0x82]), bytes([0xAC]) + b"a", b" \xe2", "é".encode(),
              "€".encode(), b" a"]
    tokens = ["<|endoftext|>", *dict.fromkeys(
        [alphabet[b] for b in range(256)]
        + ["".join(alphabet[b] for b in piece) for piece in merged])]
    core = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=[]))
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core, eos_token="<|endoftext|>", unk_token="<|endoftext|>")


BYTE_FALLBACK = _byte_fallback()
BYTE_LEVEL = _byte_level()


def _decoder(tokenizer: PreTrainedTokenizerFast) -> Callable[[Sequence[int]], str]:
    def decode(ids: Sequence[int]) -> str:
        return str(tokenizer.decode(list(ids), skip_special_tokens=True,
                                    clean_up_tokenization_spaces=False))
    return decode


def _held(tokenizer: PreTrainedTokenizerFast) -> frozenset[int]:
    from aieng_transformers._causal import held_tokens

    return held_tokens(tokenizer)


def _stream(tokenizer: PreTrainedTokenizerFast, ids: Sequence[int],
            context: Sequence[int] = ()) -> list[str]:
    decoder = IncrementalDecoder(_decoder(tokenizer), context, hold=_held(tokenizer))
    return [*(decoder.push(token) for token in ids), decoder.flush()]


def _byte(tokenizer: PreTrainedTokenizerFast, byte: int) -> int:
    return int(tokenizer.convert_tokens_to_ids(f"<0x{byte:02X}>"))  # type: ignore[arg-type]


def _ids(tokenizer: PreTrainedTokenizerFast, *tokens: str | int) -> list[int]:
    # A byte as its <0x..> token, a string as the token of that name.
    return [_byte(tokenizer, t) if isinstance(t, int) else
            int(tokenizer.convert_tokens_to_ids(t))  # type: ignore[arg-type]
            for t in tokens]


@pytest.mark.parametrize("tokens", [
    ("a", 0xC3, 0xA9, 0xE2, "b"),  # é, then a lead byte that never completes
    ("▁a", 0xE2, 0x82, 0xAC, 0xE2, "▁b"),  # €, then a cut €
    ("a", 0xC3, 0xA9, 0x80, "b"),  # é, then a stray continuation byte
    ("a", 0xC3, 0xA9, "</s>", 0x80, "b"),  # the same across a skipped special token
])
def test_byte_fallback_run_spoiled_later_is_not_streamed_early(
        tokens: tuple[str | int, ...]) -> None:
    """SentencePiece's byte fallback decodes a whole run of byte tokens at once: a run
    that is not valid UTF-8 is one U+FFFD per byte, so a valid ``é`` becomes two U+FFFD
    when a byte that cannot follow it comes next. The stream does not show ``é`` before
    the run ends, and joins to what the tokenizer decodes."""
    ids = _ids(BYTE_FALLBACK, *tokens)
    pieces = _stream(BYTE_FALLBACK, ids)
    assert "".join(pieces) == _decoder(BYTE_FALLBACK)(ids)
    assert "é" not in "".join(pieces) and "€" not in "".join(pieces)


def test_byte_fallback_character_comes_out_whole_with_the_next_token() -> None:
    """A character spelled in byte tokens comes out once a token that is not a byte ends
    its run (or generation ends), whole."""
    ids = _ids(BYTE_FALLBACK, "▁a", 0xE2, 0x82, 0xAC, "▁b", 0xC3, 0xA9)
    assert _stream(BYTE_FALLBACK, ids) == ["a", "", "", "", "€ b", "", "", "é"]


_FALLBACK_IDS = st.sampled_from([
    *_ids(BYTE_FALLBACK, *_PIECES, "</s>"),
    *_ids(BYTE_FALLBACK, 0x20, 0x41, 0x80, 0x82, 0xA9, 0xAC, 0xBF, 0xC3, 0xE2, 0xF0, 0x9F,
          0x99, 0x82, 0xFF)])
_LEVEL_IDS = st.integers(0, len(BYTE_LEVEL) - 1)
_CONTEXTS = st.lists(st.sampled_from(_ids(BYTE_FALLBACK, *_PIECES)), max_size=3)


def _check(tokenizer: PreTrainedTokenizerFast, ids: list[int], context: list[int]) -> None:
    decode = _decoder(tokenizer)
    before, whole = decode(context), decode([*context, *ids])
    assert whole.startswith(before)
    assert "".join(_stream(tokenizer, ids, context)) == whole[len(before):]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(ids=st.lists(_FALLBACK_IDS, max_size=12), context=_CONTEXTS)
def test_byte_fallback_stream_joins_to_the_decoded_text(ids: list[int],
                                                        context: list[int]) -> None:
    """However byte tokens, whole pieces and special tokens mix (runs cut, spoiled,
    completed), the streamed pieces join to the tokenizer's decoding of the generated ids
    after the prompt's context."""
    _check(BYTE_FALLBACK, ids, context)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(ids=st.lists(_LEVEL_IDS, max_size=12),
       context=st.lists(st.sampled_from(_ids(BYTE_LEVEL, "a", "Ġa", "Ã©")), max_size=3))
def test_byte_level_stream_joins_to_the_decoded_text(ids: list[int],
                                                     context: list[int]) -> None:
    """GPT-2's byte-level BPE, tokens holding parts of characters included: the pieces
    join to the decoded text, and none starts with U+FFFD unless the text has it there."""
    _check(BYTE_LEVEL, ids, context)


def test_held_tokens_are_byte_and_special_tokens() -> None:
    """The ids after which nothing is released: byte-fallback tokens and special tokens
    (skipped when decoding, so a byte run goes on across them); GPT-2's byte alphabet
    needs none."""
    held = _held(BYTE_FALLBACK)
    assert held == {*_ids(BYTE_FALLBACK, *range(256)), *BYTE_FALLBACK.all_special_ids}
    assert _held(BYTE_LEVEL) == set(BYTE_LEVEL.all_special_ids)


def test_a_generation_holds_a_byte_run_until_it_ends() -> None:
    """Wired in: a request's decoding on a byte-fallback tokenizer releases ``À``
    (C3 80) only with the token after its run, so the stray 80 after it spoils it as the
    tokenizer decodes it, not after ``À`` was shown."""
    import torch
    from aieng_hookspecs.types import Message, Request
    from aieng_transformers._causal import CausalLM
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(BYTE_FALLBACK), hidden_size=16,
                         intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=64, bos_token_id=1, eos_token_id=2)
    lm = CausalLM(LlamaForCausalLM(config).eval(), BYTE_FALLBACK, template="chatml")
    generation = lm.start(Request(messages=(Message("user", "a"),), max_tokens=10))
    logits = torch.zeros(len(BYTE_FALLBACK))
    ids = _ids(BYTE_FALLBACK, "▁a", 0xC3, 0x80, 0x80, "▁b")
    texts = [generation.take(token, logits, 10, "")[0] for token in ids]
    assert texts == [" a", "", "", "", "\ufffd" * 3 + " b"]


def _cost(tokenizer: PreTrainedTokenizerFast, ids: Sequence[int]) -> tuple[str, int]:
    # The streamed text and how many ids the decoder handed to ``decode`` in all.
    decode, spent = _decoder(tokenizer), [0]

    def counting(window: Sequence[int]) -> str:
        spent[0] += len(window)
        return decode(window)

    decoder = IncrementalDecoder(counting, hold=_held(tokenizer))
    text = "".join(decoder.push(token) for token in ids) + decoder.flush()
    return text, spent[0]


def _level(*pieces: bytes) -> list[int]:
    # GPT-2 byte-level ids of byte strings, each one token of the vocabulary.
    alphabet = bytes_to_unicode()
    return [int(BYTE_LEVEL.convert_tokens_to_ids(  # type: ignore[arg-type]
        "".join(alphabet[b] for b in piece))) for piece in pieces]


@pytest.mark.parametrize("cycle", [
    (b"\x80",),  # stray continuation bytes
    (b"\xff",),  # a byte UTF-8 never uses
    (b"\xe2",),  # lead bytes, each cut off by the next
    (b"\xe2\x82",),  # two thirds of a euro sign, again and again
    (b"\xf0", b"\x9f", b"\x99"),  # three quarters of an emoji, one byte a token
])
def test_an_invalid_byte_run_costs_linear_decoding(cycle: tuple[bytes, ...]) -> None:
    """A model emitting bytes that never make a character (stray continuation bytes,
    leads cut off) does not make each token re-decode everything since the last valid
    character: the ids handed to ``decode`` grow linearly with the run (a few per
    token), and the stream still joins to the tokenizer's decoding."""
    for repeats in (20, 200):
        ids = _level(*cycle * repeats)
        text, spent = _cost(BYTE_LEVEL, ids)
        assert text == _decoder(BYTE_LEVEL)(ids)
        assert spent <= 20 * len(ids)


def test_a_long_byte_fallback_run_is_decoded_once() -> None:
    """SentencePiece byte tokens are held until their run ends: a run of 400 bytes that
    never makes a character, closed by a word, costs a few decodings of it, not one per
    byte."""
    ids = _ids(BYTE_FALLBACK, *[0x80, 0xE2] * 200, "▁a", "▁b")
    text, spent = _cost(BYTE_FALLBACK, ids)
    assert text == _decoder(BYTE_FALLBACK)(ids)
    assert spent <= 4 * len(ids)


_INVALID_LEVEL = st.sampled_from(_level(b"\x80", b"\xbf", b"\xc3", b"\xe2", b"\xf0", b"\x9f",
                                        b"\xff", b"\xe2\x82", b"a", b" a", "é".encode()))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(ids=st.lists(_INVALID_LEVEL, min_size=20, max_size=80),
       context=st.lists(st.sampled_from(_ids(BYTE_LEVEL, "a", "Ġa", "Ã©")), max_size=3))
def test_long_invalid_byte_level_runs_join_to_the_decoded_text(ids: list[int],
                                                               context: list[int]) -> None:
    """Long runs of mostly invalid bytes (strays, cut leads, a few characters and ASCII
    between): the pieces join to the decoded text, and decoding stays linear."""
    _check(BYTE_LEVEL, ids, context)
    assert _cost(BYTE_LEVEL, ids)[1] <= 20 * len(ids)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(ids=st.lists(_FALLBACK_IDS, min_size=20, max_size=80), context=_CONTEXTS)
def test_long_byte_fallback_runs_join_to_the_decoded_text(ids: list[int],
                                                          context: list[int]) -> None:
    """The same with SentencePiece byte fallback: long mixes of byte runs and pieces."""
    _check(BYTE_FALLBACK, ids, context)
