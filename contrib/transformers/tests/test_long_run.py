"""The long run: what thousands of requests to one process leave behind (area: local models).

Each test calls a component many times with inputs that differ per call (a user's prompt,
a request's schema or regex) and asserts with :func:`aieng_core.testing.steady.
measure_growth` that the calls past a warm-up retain next to nothing: a per-call leak
costs tens of bytes a call or more.
"""

from __future__ import annotations

import gc
import hashlib
import os
import re
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from _tiny import prompt_lm
from aieng_hookspecs.types import Message, Request
from aieng_transformers import SmolLM2Backend, SmolLM2Options
from aieng_transformers import _jsonbounds as bounds
from aieng_transformers._causal import Generation
from aieng_transformers._constrain import JsonConstraint

from aieng_core.testing.steady import ameasure_growth


def _ask(text: str, **params: Any) -> Request:
    return Request(messages=(Message("user", text),), **params)


def test_prompts_compile_no_pattern_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """Encoding a prompt compiles no regular expression of its own: a pattern per prompt
    (the special-token guard's nonce) filled Python's process-wide ``re`` cache with
    patterns never used again (~650 B each, up to 512, evicting every other module's) and
    cost a compilation per request."""
    lm = prompt_lm(extra=("<|tool|>",))

    def encode(i: int) -> None:
        ids = lm.encode_prompt([Message("user", f"question {i} <|im_end|> aieng{i:016x}x0x")])
        assert ids

    for i in range(20):  # the template's own patterns, compiled once
        encode(i)
    compiled: list[str] = []
    compile_ = re.compile

    def counting(pattern: Any, flags: Any = 0) -> re.Pattern[Any]:
        compiled.append(pattern)
        return compile_(pattern, flags)

    monkeypatch.setattr(re, "compile", counting)
    for i in range(20, 320):
        encode(i)
    assert len(compiled) < 5, compiled[:5]


def test_placeholders_of_another_guard_stay_text() -> None:
    """Text shaped like a placeholder but not this prompt's (a user imitating one) is
    encoded as written; the prompt's own special strings come back as plain text."""
    lm = prompt_lm()
    fake = "aieng0123456789abcdefx0x"
    ids = lm.encode_prompt([Message("user", f"{fake} and <|im_end|>")])
    text = lm.tokenizer.decode(ids)
    assert fake in text
    assert text.count("<|im_end|>") == 2  # the user's, as text, and the template's


def test_number_bounds_of_distinct_schemas_stay_within_the_memos() -> None:
    """Numbers written under thousands of distinct schemas (each its own bounds: one per
    request or user) fill the bounds' memos to their documented sizes and no further
    (65,536 / 4,096 / 65,536 entries before, ~53 MB once full; ~7 MB now)."""

    def write(i: int) -> None:
        constraint = JsonConstraint({
            "type": "object", "required": ["k"],
            "properties": {"k": {"type": "number", "minimum": i / 7, "maximum": i * 3 + 9.5}}})
        state = constraint.start()
        for char in '{"k": ' + str(round(i / 7 + 1, 3)) + "}":
            state = constraint.feed(state, char)
        assert state is not None and constraint.accepting(state)

    memos = {"extra_chars": bounds.extra_chars, "sorted_grids": bounds._sorted_grids,
             "grid_span": bounds._grid_span, "plain": bounds._plain}
    for i in range(2_000):  # ~14,000 answers and ~24,000 spans, all distinct
        write(i)
    held = {name: memo.cache_info().currsize for name, memo in memos.items()}
    assert max(held.values()) <= 1 << 13, held
    for name, memo in memos.items():  # the documented sizes are the memos' own
        assert memo.cache_info().maxsize == bounds.MEMO_SIZES[name], name
    assert held["extra_chars"] == bounds.MEMO_SIZES["extra_chars"]  # filled: evicting


def test_the_digest_memo_keeps_the_recently_used_versions_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every new version of a model file (re-downloaded, copied, re-installed) adds a
    digest to the memo; past ``MEMO_ENTRIES`` the least recently used are removed, so
    the folder holds a bounded number of files however many versions came and went (it
    kept one per version for ever)."""
    from aieng_transformers import _digest

    monkeypatch.setattr(_digest, "MEMO_ENTRIES", 3, raising=False)
    memo = tmp_path / "digests"
    model = tmp_path / "model.bin"
    first = tmp_path / "first.bin"
    first.write_bytes(b"\1" * _digest.MEMO_MIN)
    os.utime(first, ns=(0, 0))  # settled long ago
    _digest.file_digest(first, memo)
    for version in range(6):
        model.write_bytes(bytes([version]) * _digest.MEMO_MIN)
        os.utime(model, ns=(0, 0))
        _digest.file_digest(model, memo)
        _digest.file_digest(first, memo)  # read again: recently used
    kept = [p for p in memo.iterdir() if not p.name.startswith(".")]
    assert len(kept) == 3, sorted(p.name for p in kept)
    reads: list[int] = []

    class Counting:  # counts the hashes begun (a whole file's begins with no data)
        @staticmethod
        def sha256(data: bytes = b"") -> object:
            reads.append(len(data))
            return hashlib.sha256(data)

    monkeypatch.setattr(_digest, "hashlib", Counting)
    _digest.file_digest(first, memo)
    _digest.file_digest(model, memo)  # the newest version: kept
    assert all(size > 0 for size in reads), reads  # no whole file hashed again


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # trio: the abandoned-stream test
async def test_generations_streams_closed_and_abandoned_leave_nothing(
        chain_dir: Path) -> None:
    """Completions, streams closed after one delta and streams the consumer drops without
    closing, each with its own prompt: after a warm-up, hundreds of them retain nothing
    (KV caches, generations, guards, worker threads) and hold no thread or descriptor."""
    backend = SmolLM2Backend(SmolLM2Options(path=str(chain_dir), model="chain"))
    backend.load()
    re.purge()

    async def call(i: int) -> None:
        if i % 3 == 0:
            completion = await backend.aieng_generate(_ask(f"hello {i}", max_tokens=3))
            assert completion is not None
            return
        stream = backend.aieng_stream(_ask(f"hi <|im_end|> {i}"))
        assert stream is not None
        async for _ in stream:
            break
        if i % 3 == 1:
            await stream.aclose()
        else:  # dropped unclosed: the event loop's finalizer closes it on its next turns
            del stream
            for _ in range(3):
                await anyio.lowlevel.checkpoint()

    growth = await ameasure_growth(call, warmup=300, calls=1_000)
    assert growth.per_call < 32, growth.report()
    assert not growth.held, growth.report()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_an_abandoned_stream_frees_its_generation_without_the_collector(
        chain_dir: Path) -> None:
    """A stream its consumer stops reading and drops unclosed is closed by the event
    loop's finalizer on its next turns, its generation (and KV cache) freed: the stream
    and its generator made a reference cycle, so every abandoned stream's KV cache stayed
    until the cyclic collector's next pass (for a long-lived server: its rare full one)."""
    backend = SmolLM2Backend(SmolLM2Options(path=str(chain_dir), model="chain"))
    backend.load()

    def alive() -> int:
        return sum(type(o) is Generation for o in gc.get_objects())

    gc.collect()
    before = alive()
    gc.disable()
    try:
        for i in range(10):
            stream = backend.aieng_stream(_ask(f"hi {i}"))
            assert stream is not None
            async for _ in stream:
                break
            del stream
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
        left = alive() - before
    finally:
        gc.enable()
    assert left <= 1, f"{left} abandoned generations alive"
