"""aieng-guardrails: input and output guardrails, a red-team suite and ``aieng redteam``.

Components (``aieng_register_components``):

- ``pii``: redacts (or blocks) e-mails, phone numbers, cards, IBANs, IPs, SSNs and secrets
  in the input with placeholders such as ``<EMAIL_1>``, and can restore them in the answer;
- ``injection``: scores the input for prompt injection (after normalising and decoding
  it) and blocks or redacts above thresholds;
- ``retrieval-guard``: a reranker that drops, flags or cleans retrieved hits carrying
  instructions aimed at the model (indirect injection);
- ``output-guard``: system-prompt leaks, canaries, personal data, JSON-schema validity
  and blocked terms in the answer, with a ``block`` / ``redact`` / ``fix`` policy.

Command (``aieng_register_commands``): ``aieng redteam``. Importing this module imports
nothing heavy; jsonschema loads on the first schema check, rich when a table prints.
"""

from __future__ import annotations

from typing import Any

from aieng_hookspecs import ComponentRegistry, hookimpl

from ._guards import InjectionGuard, PIIGuard, injection_findings, pii_findings
from ._injection import InjectionMatch, InjectionScan, normalise, scan_injection
from ._options import InjectionOptions, OutputGuardOptions, PIIOptions, RetrievalGuardOptions
from ._output import OutputGuard, Violation, leak_spans
from ._pii import KINDS, Detection, find_pii, iban_valid, luhn_valid, ssn_valid
from ._redact import Redaction, Vault, redact, restore
from ._retrieval import RetrievalGuard, ScannedHit, scan_hits, scan_tool_result
from ._suite import (
    REDTEAM_CANARY,
    REDTEAM_SYSTEM,
    AttackItem,
    Outcome,
    build_request,
    load_suite,
    run_suite,
    summarise,
)

__all__ = [
    "KINDS",
    "REDTEAM_CANARY",
    "REDTEAM_SYSTEM",
    "AttackItem",
    "Detection",
    "InjectionGuard",
    "InjectionMatch",
    "InjectionOptions",
    "InjectionScan",
    "Outcome",
    "OutputGuard",
    "OutputGuardOptions",
    "PIIGuard",
    "PIIOptions",
    "Redaction",
    "RetrievalGuard",
    "RetrievalGuardOptions",
    "ScannedHit",
    "Vault",
    "Violation",
    "aieng_register_commands",
    "aieng_register_components",
    "build_request",
    "find_pii",
    "iban_valid",
    "injection_findings",
    "leak_spans",
    "load_suite",
    "luhn_valid",
    "normalise",
    "pii_findings",
    "redact",
    "restore",
    "run_suite",
    "scan_hits",
    "scan_injection",
    "scan_tool_result",
    "ssn_valid",
    "summarise",
]

__version__ = "0.1.0"


@hookimpl
def aieng_register_components(registry: ComponentRegistry) -> None:
    """Offer the four guardrail components with their typed options."""
    registry.add("pii", PIIGuard, options=PIIOptions,
                 description="Redact or block personal data and secrets; restore them in "
                             "the answer")
    registry.add("injection", InjectionGuard, options=InjectionOptions,
                 description="Score prompt injection (decoded, normalised); block or redact")
    registry.add("retrieval-guard", RetrievalGuard, options=RetrievalGuardOptions,
                 description="Drop, flag or clean retrieved hits carrying injected "
                             "instructions")
    registry.add("output-guard", OutputGuard, options=OutputGuardOptions,
                 description="Leaks, canaries, PII, JSON schema and blocked terms in the "
                             "answer; block, redact or fix")


@hookimpl
def aieng_register_commands(cli: Any) -> None:
    """Add ``aieng redteam``."""
    from ._cli import add_commands

    add_commands(cli)
