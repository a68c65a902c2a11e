"""Batched decoding: several requests decoded together, one forward pass per step.

The prompts are left-padded to one width (the padding masked out of attention, positions
counted per row from each prompt's first real token), so every row's last position is
its next token's. Each step runs the model once over the batch's last tokens and lets
every row's own :class:`~._causal.Generation` choose and take its token exactly as a
request decoded alone does (its sampler and seed, its stop strings, its ``max_tokens``,
its constraint, its log-probabilities). A row that finishes (or whose caller went away)
drops out of the batch: its KV-cache rows and mask row are removed, so later steps cost
what the rows still running need. Greedy output equals decoding the request alone (exact
arithmetic; batched matrix products may round differently in the last bit). Requests do
not join a batch already decoding; they form the next one.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs
import torch
from aieng_hookspecs.types import Request, TokenLogprob, Usage

from ._causal import wants_logprobs

if TYPE_CHECKING:
    from ._causal import CausalLM, Finish, Generation
    from ._toolcalls import ToolPlan

__all__ = ["Decoded", "decode_batch"]


@attrs.frozen
class Decoded:
    """One request's batched result: its text, finish reason, usage, log-probabilities and
    tool plan (its calls are still in the text)."""

    text: str
    finish: Finish
    usage: Usage
    logprobs: tuple[TokenLogprob, ...] | None
    plan: ToolPlan | None = None


def decode_batch(lm: CausalLM, requests: Sequence[Request],
                 cancelled: Sequence[threading.Event] | None = None
                 ) -> list[Decoded | BaseException]:
    """Decode ``requests`` together (blocking). A request that cannot start (a prompt
    over the context, an unsupported schema) gets its ``ValueError`` in its place; the
    others decode. ``cancelled[i]`` set drops request ``i`` at the next step (its result
    is then what it had)."""
    flags = list(cancelled) if cancelled is not None else [threading.Event() for _ in requests]
    results: list[Decoded | BaseException] = []
    rows: list[tuple[int, Generation]] = []
    for index, request in enumerate(requests):
        try:
            generation = lm.start(request, logprobs=wants_logprobs(request))
        except ValueError as error:
            results.append(error)
            continue
        results.append(RuntimeError("not decoded"))  # replaced below
        rows.append((index, generation))
    texts: dict[int, list[str]] = {index: [] for index, _ in rows}
    _run(lm, rows, texts, flags)
    for index, generation in rows:
        results[index] = Decoded(
            text="".join(texts[index]), finish=generation.finish or "stop",
            usage=generation.usage,
            logprobs=tuple(generation.logprobs) if generation.want_logprobs else None,
            plan=generation.plan)
    return results


@torch.inference_mode()
def _run(lm: CausalLM, rows: list[tuple[int, Generation]], texts: dict[int, list[str]],
         flags: list[threading.Event]) -> None:
    if not rows:
        return
    prompts = [generation.pending for _, generation in rows]
    width = max(len(p) for p in prompts)
    pad = lm.pad_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], dtype=torch.long,
                       device=lm.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts],
                        dtype=torch.long, device=lm.device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache: Any = None
    active = list(rows)
    while active:
        placed = {"position_ids": positions} if lm.takes_positions else {}
        with lm.lock:
            out = lm.model(input_ids=ids, attention_mask=mask, past_key_values=cache,
                           use_cache=True, **placed, **lm.keep(1))
        cache = out.past_key_values
        logits = out.logits[:, -1].float()
        keep: list[int] = []
        for row, (index, generation) in enumerate(active):
            if flags[index].is_set():
                generation.cancel()
                continue
            token, scored = generation.choose(logits[row])
            text, ended = generation.take(token, scored, generation.limit(), "")
            texts[index].append(ended.text if ended is not None else text)
            if ended is None:
                keep.append(row)
        if not keep:
            return
        if len(keep) < len(active):
            selected = torch.tensor(keep, dtype=torch.long, device=lm.device)
            cache.batch_select_indices(selected)
            mask = mask.index_select(0, selected)
            active = [active[row] for row in keep]
        ids = torch.tensor([[generation.pending[-1]] for _, generation in active],
                           dtype=torch.long, device=lm.device)
        mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
        positions = mask.sum(dim=1, keepdim=True) - 1
