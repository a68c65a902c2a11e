"""A loaded cross-encoder: tokenizer and sequence-classification model (torch)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aieng_hookspecs import stop_if_cancelled

__all__ = ["CrossEncoderModel", "ModelNotFound", "clean"]


class ModelNotFound(FileNotFoundError):
    """The cross-encoder folder is missing or is not a Hugging Face model folder."""


def clean(text: str) -> str:
    """``text`` with lone surrogates (which UTF-8, hence the tokenizer, cannot encode)
    replaced by U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    return text


def model_folder(path: str) -> Path:
    """The model folder named by ``path``.

    :raises ModelNotFound: when it holds no ``config.json``, saying how to get one.
    """
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise ModelNotFound(
            f"{str(folder)!r} is not a Hugging Face model folder (no config.json). The "
            "cross-encoder reads a local sequence-classification model and never downloads "
            "one: fetch one where there is network (for example `hf download "
            "cross-encoder/ms-marco-MiniLM-L-6-v2 --local-dir DIR`) and point `path` at DIR")
    return folder


#: Texts are cut after this many times ``max_length`` tokens before they are paired.
_CUT = 4
#: Tokens that tell a cut query from a cut passage (more than re-tokenizing the last,
#: possibly split, word of a cut text can change).
_MARGIN = 16


def _cut_at(text: str, offsets: Sequence[tuple[int, int]], tokens: int) -> str:
    """``text`` up to the end of its token number ``tokens`` (all of it when shorter)."""
    return text if len(offsets) <= tokens else text[:offsets[tokens - 1][1]]


class CrossEncoderModel:
    """Scores (query, passage) pairs with a sequence-classification model.

    Loading and scoring block (torch): call them in a worker thread. Scoring is
    serialized by a lock, so concurrent reranks do not multiply the memory of a batch.

    :param path: the model folder.
    :param device: the torch device.
    :param batch_size: pairs per forward pass.
    :param max_length: tokens per pair, at most the model's own limit.
    :param sigmoid: pass the relevance logit through a sigmoid.
    """

    def __init__(self, path: str, *, device: str = "cpu", batch_size: int = 16,
                 max_length: int = 512, sigmoid: bool = False) -> None:
        import torch
        from aieng_hookspecs import MODEL_BUILD

        folder = str(model_folder(path))
        with MODEL_BUILD:  # one transformers build at a time in the process (it says why)
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            self.tokenizer: Any = AutoTokenizer.from_pretrained(  # type: ignore[no-untyped-call]
                folder, local_files_only=True)
            model: Any = AutoModelForSequenceClassification.from_pretrained(
                folder, local_files_only=True)
        labels = int(model.config.num_labels)
        if labels not in (1, 2):
            raise ValueError(
                f"{folder!r} is a classifier with {labels} labels; a cross-encoder has one "
                "output (a relevance logit) or two (not relevant, relevant)")
        self.labels = labels
        self.model: Any = model.to(torch.device(device)).eval()
        self.device = next(self.model.parameters()).device
        limit = getattr(model.config, "max_position_embeddings", None)
        # RoBERTa-style encoders (RoBERTa, XLM-R, MPNet...) number positions from after
        # their padding id: 514 positions hold 512 tokens.
        embeddings = getattr(getattr(model, "base_model", None), "embeddings", None)
        pad = getattr(embeddings, "padding_idx", None)
        if isinstance(limit, int) and isinstance(pad, int):
            limit = max(1, limit - pad - 1)
        self.max_length = min(max_length, limit) if isinstance(limit, int) else max_length
        self.batch_size = batch_size
        self.sigmoid = sigmoid
        self._lock = threading.Lock()

    def _offsets(self, texts: list[str]) -> list[Sequence[tuple[int, int]]]:
        """The token offsets of each text, tokenized as text only."""
        found: list[Sequence[tuple[int, int]]] = self.tokenizer(
            texts, add_special_tokens=False, truncation=False, return_offsets_mapping=True,
            return_attention_mask=False, return_token_type_ids=False, verbose=False,
            split_special_tokens=True)["offset_mapping"]
        return found

    def _cut(self, query: str, texts: list[str],
             query_cuts: list[tuple[int, str, str]] | None = None) -> list[tuple[str, str]]:
        """The (query, passage) pairs to tokenize, each text cut after a few times
        ``max_length`` tokens.

        The fast tokenizers' ``longest_first`` truncation of a pair builds the cross
        product of both texts' overflow: quadratic, a minute for a 3,000-token query with
        a 10,000-token passage. No pair keeps more than ``max_length`` tokens, so cutting
        each text far beyond that changes nothing, provided the longer text of a pair
        stays the longer (it gives up the odd token of an even split): a passage longer
        than the query meets a query cut shorter than itself, and the other way round.

        :param query_cuts: where the query's token count and its two cuts are kept once
            computed (empty at first), so that batches of one query tokenize it once.
        """
        cap = _CUT * self.max_length
        if not getattr(self.tokenizer, "is_fast", False) or \
                not any(len(text) > cap for text in [query, *texts]):
            return [(query, text) for text in texts]  # no offsets, or nothing to cut
        if query_cuts is None:
            query_cuts = []
        if not query_cuts:
            found = self._offsets([query])[0]
            query_cuts.append((len(found), _cut_at(query, found, cap - _MARGIN),
                               _cut_at(query, found, cap + _MARGIN)))
        query_count, short_query, long_query = query_cuts[0]
        offsets = self._offsets(texts)
        # Even lengths: the passage, given second, gives up the odd token; keep it longer.
        return [(short_query if len(found) >= query_count else long_query,
                 _cut_at(text, found, cap))
                for text, found in zip(texts, offsets, strict=True)]

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """The relevance of each passage to the query (blocking).

        :returns: one score per passage, in order: the relevance logit (for a two-label
            model, relevant minus not relevant), or its sigmoid; equal passages are
            scored once, so they score alike.
        :raises anyio.get_cancelled_exc_class(): in an anyio worker thread whose waiting
            task was cancelled, before the next batch (or the first one).
        """
        import torch

        if not passages:
            return []
        cleaned = [clean(p) for p in passages]
        # Each text once: equal passages (a page indexed twice, boilerplate) then score
        # exactly alike, wherever batching and padding would have put them.
        texts = list(dict.fromkeys(cleaned))
        query = clean(query)
        query_cuts: list[tuple[int, str, str]] = []  # the query's, once it is tokenized
        # Longest first, so each batch pads to lengths close to its own.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        scores = [0.0] * len(texts)
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                # Before each batch, the first too: a rerank that waited for the lock
                # (another rerank held the model) may have lost its caller meanwhile, and
                # would score a batch for nobody while the others wait. A batch in flight
                # finishes.
                stop_if_cancelled()
                rows = order[start:start + self.batch_size]
                # Cut a batch at a time: every text's offsets at once would hold them all.
                pairs = self._cut(query, [texts[i] for i in rows], query_cuts)
                # split_special_tokens: a text spelling "[SEP]" or "</s>" is text; it must
                # not become the real token and forge the pair's structure (the passages
                # are untrusted documents).
                batch = self.tokenizer([pair[0] for pair in pairs], [pair[1] for pair in pairs],
                                       padding=True, truncation="longest_first",
                                       max_length=self.max_length, return_tensors="pt",
                                       split_special_tokens=True)
                # In double precision, on the CPU (MPS has no float64): a float32 sigmoid
                # is 1.0 for every logit above ~17 and coarse well below, which would tie
                # a confident model's best passages and lose their order.
                logits = self.model(**batch.to(self.device)).logits.cpu().double()
                relevance = logits[:, 0] if self.labels == 1 else logits[:, 1] - logits[:, 0]
                if self.sigmoid:
                    relevance = torch.sigmoid(relevance)
                for row, value in zip(rows, relevance.tolist(), strict=True):
                    scores[row] = float(value)
        by_text = dict(zip(texts, scores, strict=True))
        return [by_text[text] for text in cleaned]
