"""Guard retrieved content: scan hits and tool results for instructions aimed at the model.

Text a retriever or a tool brings back is data, not instructions; a passage that tells
"the AI reading this" what to do is an indirect prompt injection. The ``retrieval-guard``
component implements the reranker hook so it sits in the ``rerank`` stage of any pipeline
and drops, flags or cleans injected hits before the context is built.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import structlog
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Hit, Query, ToolResult

from ._cache import ScanCache
from ._guards import _off_loop, remove_injections
from ._injection import InjectionScan, scan_injection
from ._options import RetrievalGuardOptions

__all__ = ["RetrievalGuard", "ScannedHit", "scan_hits", "scan_tool_result"]

log = structlog.get_logger(__name__)


@attrs.frozen
class ScannedHit:
    """A hit and its injection scan.

    :param hit: the hit.
    :param scan: the scan of its document's title and text.
    """

    hit: Hit
    scan: InjectionScan


def scan_hits(hits: Sequence[Hit], *, max_depth: int = 2) -> list[ScannedHit]:
    """The injection scan of every hit's document (title and text), in order."""
    scanned = []
    for hit in hits:
        document = hit.document
        text = f"{document.title}\n{document.text}" if document.title else document.text
        scanned.append(ScannedHit(hit, scan_injection(text, max_depth=max_depth)))
    return scanned


def scan_tool_result(result: ToolResult, *, max_depth: int = 2) -> InjectionScan:
    """The injection scan of a tool's output (what an agent would feed the model next)."""
    return scan_injection(result.content, max_depth=max_depth)


def _cleaned(text: str, options: RetrievalGuardOptions) -> str:
    """``text`` with its matched sentences removed (unchanged when no rule matches)."""
    own = scan_injection(text, max_depth=options.max_depth)
    return remove_injections(text, own) if own.matches else text


class RetrievalGuard:
    """A reranker that keeps order and drops (or flags, or cleans) injected hits.

    ``drop``: the hit is removed and the rest re-ranked 1..n. ``flag``: the hit stays,
    its document's metadata gains ``guardrails.injection_score`` and the matched rules.
    ``redact``: the matched sentences are removed from its title and text.
    """

    def __init__(self, options: RetrievalGuardOptions | None = None) -> None:
        self.options = options or RetrievalGuardOptions()
        #: Each document's scan: the same passages come back query after query (bounded:
        #: the last 16,384 texts, by a digest; the texts are not kept).
        self._scans: ScanCache[InjectionScan] = ScanCache(self._scan)

    def _scan(self, text: str) -> InjectionScan:
        return scan_injection(text, max_depth=self.options.max_depth)

    @hookimpl
    async def aieng_rerank(self, query: Query, hits: Sequence[Hit], k: int) -> list[Hit]:
        """:meth:`guard`, off the event loop when the hits are long."""
        size = sum(len(h.document.text) + len(h.document.title) for h in hits)
        return await _off_loop(size, lambda: self.guard(hits, k))

    def guard(self, hits: Sequence[Hit], k: int) -> list[Hit]:
        """Guard ``hits``; keep at most ``k``, in their order."""
        opts = self.options
        kept: list[Hit] = []
        if k <= 0:  # nothing asked for, nothing scanned
            return kept
        for hit in hits:
            document = hit.document
            scan = self._scans(f"{document.title}\n{document.text}" if document.title
                               else document.text)
            if scan.score >= opts.threshold:
                rules = sorted({m.rule for m in scan.matches})
                log.info("guardrails.retrieval.injected", document=hit.document.id,
                         score=scan.score, rules=rules, action=opts.action)
                if opts.action == "drop":
                    continue
                document = hit.document
                if opts.action == "flag":
                    metadata = {**document.metadata,
                                "guardrails": {"injection_score": scan.score,
                                               "rules": rules}}
                    document = attrs.evolve(document, metadata=metadata)
                else:  # spans must be those of the title or the text alone
                    document = attrs.evolve(document, title=_cleaned(document.title, opts),
                                            text=_cleaned(document.text, opts))
                hit = attrs.evolve(hit, document=document)
            kept.append(hit)
            if len(kept) == k:
                break
        return [attrs.evolve(hit, rank=rank) for rank, hit in enumerate(kept, start=1)]
