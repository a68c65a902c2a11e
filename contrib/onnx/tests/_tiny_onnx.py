"""Tiny encoders built from configs in milliseconds, with no download: aieng-transformers'
tiny BERT (:mod:`aieng_transformers.testing`) at width 64, and a RoBERTa and a DistilBERT
on its tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch
from aieng_transformers import testing
from transformers import BertTokenizerFast


def tiny_bert(folder: Path) -> Path:
    """Save a random 2-layer BERT encoder (hidden 64) and a word-piece tokenizer."""
    return testing.tiny_bert(folder, hidden=64)


def tiny_roberta(folder: Path) -> Path:
    """The tiny BERT's tokenizer with a random 2-layer RoBERTa encoder: its position ids
    start after the padding id (0, the tokenizer's ``[PAD]``), so 66 positions hold 65
    tokens."""
    import json

    from transformers import RobertaConfig, RobertaModel

    tiny_bert(folder)
    (folder / "model.safetensors").unlink()
    # The BERT's vocabulary size, not vocab.txt's lines: the word list holds "a" twice, so
    # the saved file has a line fewer than the ids the tokenizer gives ("##z" is 68).
    vocab = json.loads((folder / "config.json").read_text(encoding="utf-8"))["vocab_size"]
    config = RobertaConfig(vocab_size=vocab,
                           hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=128, max_position_embeddings=66, pad_token_id=0)
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(str(folder))
    return folder


def tiny_distilbert(folder: Path, bert: Path) -> Path:
    """A random 1-layer DistilBERT encoder (width 32) with the tiny BERT's tokenizer (from
    the folder ``bert``): its config names the width ``dim``, not ``hidden_size``."""
    import json

    from transformers import DistilBertConfig, DistilBertModel

    vocab = json.loads((bert / "config.json").read_text(encoding="utf-8"))["vocab_size"]
    config = DistilBertConfig(vocab_size=vocab,
                              dim=32, n_layers=1, n_heads=2, hidden_dim=64,
                              max_position_embeddings=64)
    torch.manual_seed(0)
    DistilBertModel(config).save_pretrained(str(folder))
    BertTokenizerFast.from_pretrained(str(bert)).save_pretrained(str(folder))
    return folder
