"""aieng-metrics: reference metrics as pure functions and as judge components.

Functions: :func:`exact_match`, :func:`token_f1` (SQuAD), :func:`sentence_bleu` /
:func:`corpus_bleu` (sacrebleu-equal), :func:`sentence_chrf` / :func:`corpus_chrf`,
:func:`rouge` (rouge-score-equal), :func:`cosine`, :func:`bert_score`,
:func:`perplexity` / :func:`bits_per_byte`, :func:`ndcg` / :func:`mrr` / :func:`recall` /
:func:`average_precision`, :func:`run_tests` (sandboxed functional correctness) and
:func:`pass_at_k`.

Judge components (``aieng_judge``; ``None`` when not applicable): ``exact-match``,
``token-f1``, ``bleu``, ``chrf``, ``rouge``, ``embedding-cosine``, ``bertscore``,
``perplexity``, ``retrieval`` and ``functional-correctness``. Importing this package
imports neither torch nor transformers (``bertscore`` loads them with its encoder).
"""

from __future__ import annotations

from aieng_hookspecs import ComponentRegistry, hookimpl

from ._bertscore import (
    BertScore,
    TokenEncoder,
    TransformersTokenEncoder,
    bert_score,
    greedy_match,
    packaged_minilm,
)
from ._bleu import BleuScore, corpus_bleu, sentence_bleu, sentence_bleu_score, tokenize_13a
from ._chrf import corpus_chrf, sentence_chrf
from ._judges_model import (
    BertScoreJudge,
    BertScoreOptions,
    EmbeddingCosineJudge,
    EmbeddingOptions,
    FunctionalCorrectnessJudge,
    FunctionalCorrectnessOptions,
    cosine,
)
from ._judges_text import (
    BleuJudge,
    BleuOptions,
    ChrfJudge,
    ChrfOptions,
    ExactMatchJudge,
    NormalizationOptions,
    PerplexityJudge,
    RetrievalJudge,
    RetrievalOptions,
    RougeJudge,
    RougeOptions,
    TokenF1Judge,
)
from ._logprobs import bits_per_byte, logprobs_from, mean_nll, perplexity
from ._passk import mean_pass_at_k, pass_at_k
from ._retrieval import average_precision, mean_average_precision, mrr, ndcg, recall
from ._rouge import RougeScore, lcs_length, rouge, rouge_tokenize
from ._sandbox import CaseResult, SandboxLimits, network_namespace_available, run_tests
from ._text import Normalization, exact_match, normalize_answer, token_f1

__all__ = [
    "BertScore",
    "BertScoreJudge",
    "BertScoreOptions",
    "BleuJudge",
    "BleuOptions",
    "BleuScore",
    "CaseResult",
    "ChrfJudge",
    "ChrfOptions",
    "EmbeddingCosineJudge",
    "EmbeddingOptions",
    "ExactMatchJudge",
    "FunctionalCorrectnessJudge",
    "FunctionalCorrectnessOptions",
    "Normalization",
    "NormalizationOptions",
    "PerplexityJudge",
    "RetrievalJudge",
    "RetrievalOptions",
    "RougeJudge",
    "RougeOptions",
    "RougeScore",
    "SandboxLimits",
    "TokenEncoder",
    "TokenF1Judge",
    "TransformersTokenEncoder",
    "aieng_register_components",
    "average_precision",
    "bert_score",
    "bits_per_byte",
    "corpus_bleu",
    "corpus_chrf",
    "cosine",
    "exact_match",
    "greedy_match",
    "lcs_length",
    "logprobs_from",
    "mean_average_precision",
    "mean_nll",
    "mean_pass_at_k",
    "mrr",
    "ndcg",
    "network_namespace_available",
    "normalize_answer",
    "packaged_minilm",
    "pass_at_k",
    "perplexity",
    "recall",
    "rouge",
    "rouge_tokenize",
    "run_tests",
    "sentence_bleu",
    "sentence_bleu_score",
    "sentence_chrf",
    "token_f1",
    "tokenize_13a",
]

__version__ = "0.1.0"


@hookimpl
def aieng_register_components(registry: ComponentRegistry) -> None:
    """Offer the reference-metric judges."""
    registry.add("exact-match", ExactMatchJudge, options=NormalizationOptions,
                 description="Exact match after SQuAD-style normalization (0 or 1).")
    registry.add("token-f1", TokenF1Judge, options=NormalizationOptions,
                 description="SQuAD token-level F1 against the best reference (0-1).")
    registry.add("bleu", BleuJudge, options=BleuOptions,
                 description="Sentence BLEU, sacrebleu-equal (13a, exp smoothing; 0-100).")
    registry.add("chrf", ChrfJudge, options=ChrfOptions,
                 description="chrF / chrF++, sacrebleu-equal (0-100).")
    registry.add("rouge", RougeJudge, options=RougeOptions,
                 description="ROUGE-1/2/L/Lsum F1, rouge-score-equal (0-1).")
    registry.add("embedding-cosine", EmbeddingCosineJudge, options=EmbeddingOptions,
                 description="Cosine of output and reference embeddings (context.embed).")
    registry.add("bertscore", BertScoreJudge, options=BertScoreOptions,
                 description="BERTScore-style greedy token matching with a local encoder.")
    registry.add("perplexity", PerplexityJudge,
                 description="Perplexity and bits per byte from metadata['logprobs'].")
    registry.add("retrieval", RetrievalJudge, options=RetrievalOptions,
                 description="nDCG@k, MRR@k, Recall@k, AP of metadata['ranked'] vs 'qrels'.")
    registry.add("functional-correctness", FunctionalCorrectnessJudge,
                 options=FunctionalCorrectnessOptions,
                 description="Runs the output against test cases in a sandboxed process.")
