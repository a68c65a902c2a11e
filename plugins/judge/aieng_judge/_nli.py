"""An NLI cross-encoder (a local Hugging Face sequence-classification folder) giving the
entailment probability of claims given a premise. transformers and torch are imported when
the model loads, never at import time."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["NLIModel"]


class NLIModel:
    """Entailment probabilities from a local NLI model.

    The model's ``config.id2label`` must name an entailment label (any label containing
    ``entail`` and not ``not``); the probability is that label's softmax probability over
    all of the model's labels.

    :param path: the model folder (``config.json``, weights, tokenizer).
    :param device: the torch device.
    :param batch_size: pairs per forward pass.
    :param max_length: tokens per (premise, claim) pair; the premise is truncated first.
    """

    def __init__(self, path: str, *, device: str = "cpu", batch_size: int = 8,
                 max_length: int = 512) -> None:
        self.path = path
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self._model: Any = None
        self._tokenizer: Any = None
        self.entailment_index = -1

    def load(self) -> None:
        """Load the model and tokenizer (blocking: call it in a worker thread).

        :raises FileNotFoundError: the folder does not exist.
        :raises ValueError: the model has no entailment label.
        """
        if self._model is not None:
            return
        folder = Path(self.path).expanduser()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"nli_model_path {self.path!r} is not a Hugging Face model folder (no "
                "config.json). No NLI model ships on PyPI: download one where there is "
                "network (for example cross-encoder/nli-deberta-v3-small or "
                "MoritzLaurer/DeBERTa-v3-base-mnli) and point nli_model_path to its folder")
        import torch
        from aieng_hookspecs import MODEL_BUILD

        with MODEL_BUILD:  # one transformers build at a time in the process (it says why)
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            # local_files_only: a folder given here is never completed from the network.
            model = AutoModelForSequenceClassification.from_pretrained(str(folder),
                                                                       local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(  # type: ignore[no-untyped-call]
                str(folder), local_files_only=True)
        labels = {int(i): str(label).lower() for i, label in model.config.id2label.items()}
        entail = [i for i, label in labels.items() if "entail" in label and "not" not in label]
        if len(entail) != 1:
            raise ValueError(f"the NLI model at {self.path!r} must have one entailment label; "
                             f"its labels are {sorted(labels.values())}")
        self.entailment_index = entail[0]
        self._tokenizer = tokenizer
        self._model = model.to(self.device).eval()
        self._torch = torch

    def entailment(self, premise: str, claims: Sequence[str]) -> list[float]:
        """The probability that ``premise`` entails each claim (blocking)."""
        self.load()
        torch = self._torch
        out: list[float] = []
        for start in range(0, len(claims), self.batch_size):
            batch = list(claims[start:start + self.batch_size])
            encoded = self._tokenizer([premise] * len(batch), batch, truncation="only_first",
                                      max_length=self.max_length, padding=True,
                                      return_tensors="pt").to(self.device)
            with torch.inference_mode():
                logits = self._model(**encoded).logits
            probabilities = torch.softmax(logits.float(), dim=-1)[:, self.entailment_index]
            out.extend(float(p) for p in probabilities.cpu())
        return out
