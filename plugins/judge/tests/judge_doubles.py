"""Test doubles of the judge tests: scripted judge replies read from the prompt, a plugin
offering a scripted backend by name, and a tiny NLI model built from a config.

The module has a name of its own (not ``doubles``): every plugin's tests share one
``sys.path``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from aieng_hookspecs import ComponentRegistry, hookimpl
from aieng_hookspecs.types import Request

from aieng_core.testing import ScriptedBackend

_CRITERION = re.compile(r"\[Criterion: (\w+)\]")
_ANSWER = re.compile(r"\[Answer A\]\n(.*?)\n\n\[Answer B\]\n(.*?)\n\n", re.DOTALL)
_CLAIM = re.compile(r"\[Claim\]\n(.*?)\n\n", re.DOTALL)


def prompt(request: Request) -> str:
    """The last user message of a request."""
    return [m.content for m in request.messages if m.role == "user"][-1]


def criterion_of(request: Request) -> str:
    """The criterion a rubric request asks about."""
    match = _CRITERION.search(request.messages[1].content)
    assert match, "not a rubric request"
    return match.group(1)


def rubric_replies(scores: Mapping[str, int], *, answer: str = "an answer"
                   ) -> Callable[[Request], str]:
    """Replies as a grader giving ``scores[criterion]`` in JSON, and ``answer`` to any
    request that is not a rubric request (the generate stage)."""

    def reply(request: Request) -> str:
        if not _CRITERION.search(request.messages[-1].content if len(request.messages) < 3
                                 else request.messages[1].content):
            return answer
        criterion = criterion_of(request)
        return json.dumps({"score": str(scores[criterion]),
                           "rationale": f"{criterion} looks like {scores[criterion]}"})

    return reply


def pairwise_replies(prefer: Callable[[str, str], str]) -> Callable[[Request], str]:
    """Replies as a pairwise judge: ``prefer(first_shown, second_shown)`` returns
    ``"A"``, ``"B"`` or ``"tie"``."""

    def reply(request: Request) -> str:
        match = _ANSWER.search(prompt(request))
        assert match, "not a pairwise request"
        return json.dumps({"winner": prefer(match.group(1), match.group(2)),
                           "rationale": "scripted"})

    return reply


def support_replies(supported: Callable[[str], bool]) -> Callable[[Request], str]:
    """Replies as a claim checker: ``yes`` when ``supported(claim)``."""

    def reply(request: Request) -> str:
        match = _CLAIM.search(prompt(request))
        assert match, "not a claim request"
        return json.dumps({"supported": "yes" if supported(match.group(1)) else "no"})

    return reply


class ScriptedLLMPlugin:
    """A plugin offering ``scripted-llm``: a :class:`ScriptedBackend` answering with
    ``replies`` (so pipelines built from dicts, by name, can hold one)."""

    def __init__(self, replies: Callable[[Request], str]) -> None:
        self.backend = ScriptedBackend(replies)

    @hookimpl
    def aieng_register_components(self, registry: ComponentRegistry) -> None:
        """Offer ``scripted-llm``."""
        registry.add("scripted-llm", lambda: self.backend, description="scripted backend")


def build_nli(folder: Path, *, entail_words: tuple[str, ...] = ("paris",)) -> Path:
    """A tiny BERT NLI model (labels entailment / neutral / contradiction) whose
    entailment probability is ~0.99 when the (premise, claim) pair holds one of
    ``entail_words`` and ~0.21 when it holds none.

    The weights are set by hand, not trained: zero query / key weights make attention a
    plain mean over the tokens, identity value and output projections carry the mean into
    [CLS], and the marker dimensions of ``entail_words``' embeddings reach the pooler and
    the classifier. Everything else (tokenizer, config, label map, transformers' loading,
    softmax) is the real path.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "is", "capital", "of",
             "france", "paris", "berlin", "germany", "city", "in", "a", "large", "small",
             "river", "seine"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=64, num_labels=3,
                        id2label={0: "entailment", 1: "neutral", 2: "contradiction"},
                        label2id={"entailment": 0, "neutral": 1, "contradiction": 2})
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        # Layer norms keep their unit gain; the encoder layer adds nothing (zero weights).
        for name, parameter in model.named_parameters():
            if name.endswith("LayerNorm.weight"):
                parameter.fill_(1.0)
        embeddings = model.bert.embeddings.word_embeddings.weight
        for word in entail_words:
            embeddings[words.index(word), 0] = 8.0
            embeddings[words.index(word), 1] = -8.0
        layer = model.bert.encoder.layer[0]
        layer.attention.self.value.weight.copy_(torch.eye(16))
        layer.attention.output.dense.weight.copy_(torch.eye(16))
        model.bert.pooler.dense.weight[0, 0] = 1.0
        model.classifier.weight[0, 0] = 6.0
        model.classifier.bias[1] = 1.0
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder
