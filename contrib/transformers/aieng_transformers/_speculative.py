"""Speculative decoding: cheap proposals, verified by the model in one forward pass.

A *proposer* guesses the next ``k`` tokens; the model then runs once over the token it
chose last plus the ``k`` guesses (with its KV cache), which gives its own choice after
each of them. The longest prefix of guesses equal to the model's greedy choices is
accepted together with the model's choice after that prefix, and the cache is cropped
back to what was accepted. Every accepted token is one the model would have chosen
greedily itself, so the output equals plain greedy decoding, token for token, while a
forward pass can yield up to ``k + 1`` tokens (exactly so in exact arithmetic; in
float32 a batched pass may round differently from a one-token pass, which could only
matter where two logits tie to about 1e-6).

Two proposers:

- :class:`PromptLookup` (n-gram "prompt lookup decoding", Saxena 2023): the last ``n``
  tokens are looked up in the prompt and the text generated so far, and the tokens that
  followed their most recent earlier occurrence are proposed. Free, and good when the
  answer copies from the prompt (retrieval-augmented answers, code edits, extraction).
- :class:`DraftProposer`: a smaller model sharing the tokenizer proposes ``k`` tokens
  greedily with its own KV cache. By default it is the loaded model cut to its first
  layers (:func:`truncated_draft`: same embeddings, norm and head, first ``N`` decoder
  layers, no extra weights), or any local model folder with the same vocabulary.

Only greedy requests speculate; sampled, constrained and repetition-penalized requests
decode one token per pass (see ``Generation``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

import attrs
import torch

if TYPE_CHECKING:
    from ._causal import CausalLM

__all__ = ["DraftProposer", "PromptLookup", "Proposer", "Speculation", "truncated_draft"]

Method = Literal["prompt-lookup", "draft"]


class Proposer(Protocol):
    """Guesses how a token sequence continues."""

    def propose(self, tokens: Sequence[int], k: int) -> list[int]:
        """At most ``k`` guessed next tokens after ``tokens`` (prompt + generated)."""


@attrs.frozen
class Speculation:
    """How a model speculates: the method, its sizes and (``draft``) the draft model.

    :param method: ``prompt-lookup`` or ``draft``.
    :param max_proposal: tokens proposed per forward pass (``k``).
    :param ngram_size: for ``prompt-lookup``, the longest n-gram looked up; shorter ones
        down to 1 are tried when it has no earlier occurrence.
    :param draft: for ``draft``, the draft model.
    """

    method: Method
    max_proposal: int = 8
    ngram_size: int = 3
    draft: CausalLM | None = None

    def proposer(self) -> Proposer:
        """A fresh proposer for one request (a draft keeps a per-request KV cache)."""
        if self.method == "prompt-lookup":
            return PromptLookup(self.ngram_size)
        if self.draft is None:
            raise ValueError("draft speculation needs a draft model")
        return DraftProposer(self.draft)


class PromptLookup:
    """Proposes the continuation of the most recent earlier occurrence of the last
    ``n`` tokens (``n`` from ``ngram_size`` down to 1) in the tokens so far.

    :param ngram_size: the longest n-gram matched.
    """

    def __init__(self, ngram_size: int = 3) -> None:
        if ngram_size < 1:
            raise ValueError(f"ngram_size must be at least 1, not {ngram_size}")
        self.ngram_size = ngram_size

    def propose(self, tokens: Sequence[int], k: int) -> list[int]:
        """See :class:`Proposer`; ``[]`` when no n-gram recurs."""
        length = len(tokens)
        if k < 1:
            return []
        for n in range(min(self.ngram_size, length - 1), 0, -1):
            tail = list(tokens[length - n:])
            # Most recent occurrence first, the tail itself excluded.
            for start in range(length - n - 1, -1, -1):
                if tokens[start] == tail[0] and list(tokens[start:start + n]) == tail:
                    return list(tokens[start + n:start + n + k])
        return []


class DraftProposer:
    """Proposes ``k`` tokens greedily with a draft model and a KV cache of its own, kept
    across calls and cropped to the part of it still valid.

    :param draft: the draft model (same vocabulary as the target).
    """

    def __init__(self, draft: CausalLM) -> None:
        self._draft = draft
        self._cache: Any = draft.croppable_cache()
        self._seen: list[int] = []  # the tokens in the draft's cache

    def propose(self, tokens: Sequence[int], k: int) -> list[int]:
        """See :class:`Proposer`. Nothing past the draft's own context (a draft with a
        shorter one than the model's: the model then decodes on its own)."""
        if self._draft.context_length is not None:
            k = min(k, self._draft.context_length - len(tokens))
        if k < 1:
            return []
        keep = 0
        limit = min(len(self._seen), len(tokens))
        while keep < limit and self._seen[keep] == tokens[keep]:
            keep += 1
        if keep == len(tokens):  # the draft must see at least one new token
            keep -= 1
        if self._cache is not None and keep < len(self._seen):
            if keep == 0:
                self._cache = self._draft.croppable_cache()
            else:
                self._cache.crop(keep)
        self._seen = list(tokens[:keep])
        feed = list(tokens[keep:])
        out: list[int] = []
        for _ in range(k):
            logits, self._cache = self._draft.forward(feed, self._cache)
            self._seen.extend(feed)
            token = int(torch.argmax(logits).item())
            out.append(token)
            feed = [token]
        return out


def truncated_draft(model: Any, layers: int) -> Any:
    """A draft model made of ``model``'s first ``layers`` decoder layers, sharing its
    modules (embeddings, final norm, rotary embedding, output head): no weights are
    copied. For Llama-style models (``model.model.layers``: Llama, Mistral, Qwen2,
    SmolLM2, ...).

    :raises TypeError: when the model has no ``model.layers``.
    :raises ValueError: when ``layers`` is not in ``1 .. number of layers - 1``.
    """
    inner: Any = getattr(model, "model", None)
    blocks = getattr(inner, "layers", None)
    if not isinstance(blocks, torch.nn.ModuleList):
        raise TypeError(f"cannot cut {type(model).__name__} to its first layers: it has no "
                         "model.layers (use draft_path for a separate draft model)")
    if not 1 <= layers < len(blocks):
        raise ValueError(f"draft_layers must be between 1 and {len(blocks) - 1} (the model "
                         f"has {len(blocks)} layers), not {layers}")
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = layers
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = config.layer_types[:layers]
    with torch.device("meta"):
        draft: Any = type(model)(config)
    for name, module in inner.named_children():
        if name != "layers":
            setattr(draft.model, name, module)
    draft.model.layers = torch.nn.ModuleList(list(blocks)[:layers])
    draft.lm_head = model.lm_head
    draft.generation_config = copy.deepcopy(model.generation_config)
    left = [n for n, p in [*draft.named_parameters(), *draft.named_buffers()]
            if p.device.type == "meta"]
    if left:
        raise ValueError(f"cannot cut {type(model).__name__}: {left[:3]} are not shared")
    draft.eval()
    return draft
