"""Choosing the next token: greedy, or sampled with temperature, top-k and top-p.

Sampling draws from a per-request ``torch.Generator`` seeded by ``request.seed``: no global
RNG state is touched, so concurrent requests neither disturb each other nor anything else
in the process, and one seed gives one output.
"""

from __future__ import annotations

import secrets

import torch

__all__ = ["choose", "make_generator", "penalize", "tempered"]


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A generator seeded with ``seed`` (a fresh random seed when ``None``)."""
    generator = torch.Generator(device=device)
    generator.manual_seed((secrets.randbits(63) if seed is None else seed) % (1 << 63))
    return generator


def choose(
    logits: torch.Tensor,
    *,
    temperature: float,
    top_k: int | None,
    top_p: float,
    generator: torch.Generator,
) -> int:
    """The next token id from one position's logits (1-D, float32).

    Temperature 0 is greedy (the arg-max; ties go to the lowest id). Otherwise the logits
    are divided by the temperature, cut to the ``top_k`` largest and to the smallest set
    whose probability reaches ``top_p`` (always keeping the most likely token), and one
    token is drawn.
    """
    scores = tempered(logits, temperature) if temperature > 0.0 else None
    if scores is None:
        return int(torch.argmax(logits).item())
    if top_k is not None and top_k < scores.numel():
        kth = torch.topk(scores, top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = torch.sort(scores)  # ascending
        cumulative = torch.softmax(ordered, dim=-1).cumsum(dim=-1)
        drop = cumulative <= 1.0 - top_p
        drop[-1] = False
        scores = scores.masked_fill(torch.zeros_like(drop).scatter(0, order, drop),
                                    float("-inf"))
    probabilities = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probabilities, 1, generator=generator).item())


def tempered(logits: torch.Tensor, temperature: float) -> torch.Tensor | None:
    """``logits / temperature``, or ``None`` when the temperature is so close to 0 that
    finite logits overflow to infinities (a softmax of them is NaN): the caller then
    decodes greedily, the limit of sampling as the temperature goes to 0."""
    scores = logits / temperature
    return None if bool((torch.isinf(scores) & torch.isfinite(logits)).any()) else scores


def penalize(logits: torch.Tensor, tokens: set[int], penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty (Keskar et al., 2019): the logits of ``tokens`` divided by
    ``penalty`` when positive, multiplied when negative. Returns a new tensor."""
    index = torch.tensor(sorted(tokens), dtype=torch.long, device=logits.device)
    picked = logits.index_select(0, index)
    adjusted = torch.where(picked > 0, picked / penalty, picked * penalty)
    return logits.index_copy(0, index, adjusted)
