"""aieng-judge: AI judges, verifiable instruction checks, ranking and agreement statistics.

Components (all play the ``judge`` role, ``aieng_judge(sample)``):

- ``rubric``: the pipeline's backend grades the answer 1–5 per criterion (accuracy,
  completeness, clarity, and custom ones), JSON answers parsed robustly, one retry;
- ``pairwise``: output against reference, asked in both orders (position-bias control);
- ``ensemble``: a panel of rubric judges (models × prompt styles), aggregated with spread;
- ``factual``: the answer's claims checked against the context, by the backend or by a
  local NLI model;
- ``instructions``: verifiable instruction checks (JSON, schema, counts, keywords, case,
  bullets, starts / ends with), no model.

Libraries: :mod:`aieng_judge.ranking` (Elo, Bradley–Terry, bootstrap intervals),
:mod:`aieng_judge.agreement` (Cohen's kappa, Spearman), :mod:`aieng_judge.length`
(length-controlled win rates and scores), :func:`compare` and :func:`games_from_verdicts`.
"""

from __future__ import annotations

from aieng_hookspecs import ComponentRegistry, EventRegistry, hookimpl

from . import agreement, length, ranking
from ._asking import AskingJudge, Generate, JudgeFailed, JudgeUnavailable, collect_failures
from ._ensemble import EnsembleJudge, aggregate
from ._factual import FactualJudge, split_claims
from ._instructions import (
    CHECK_KINDS,
    CheckResult,
    InstructionCheck,
    InstructionsJudge,
    InstructionsOptions,
    run_check,
)
from ._options import EnsembleOptions, FactualOptions, PairwiseOptions, RubricOptions
from ._pairwise import (
    JudgeError,
    PairwiseJudge,
    PairwiseVerdict,
    Winner,
    compare,
    games_from_verdicts,
)
from ._parse import JudgeParseError, parse_score, parse_support, parse_winner
from ._prompts import PROMPT_STYLES, RUBRIC
from ._rubric import HIGH, LOW, RubricJudge, length_controlled
from .agreement import cohen_kappa, spearman
from .length import LengthControlled, length_adjusted_scores, length_controlled_win_rate
from .ranking import Game, Interval, bootstrap, bradley_terry, elo

__all__ = [
    "CHECK_KINDS",
    "HIGH",
    "LOW",
    "PROMPT_STYLES",
    "RUBRIC",
    "AskingJudge",
    "CheckResult",
    "EnsembleJudge",
    "EnsembleOptions",
    "FactualJudge",
    "FactualOptions",
    "Game",
    "Generate",
    "InstructionCheck",
    "InstructionsJudge",
    "InstructionsOptions",
    "Interval",
    "JudgeError",
    "JudgeFailed",
    "JudgeParseError",
    "JudgeUnavailable",
    "LengthControlled",
    "PairwiseJudge",
    "PairwiseOptions",
    "PairwiseVerdict",
    "RubricJudge",
    "RubricOptions",
    "Winner",
    "aggregate",
    "agreement",
    "aieng_register_components",
    "aieng_register_events",
    "bootstrap",
    "bradley_terry",
    "cohen_kappa",
    "collect_failures",
    "compare",
    "elo",
    "games_from_verdicts",
    "length",
    "length_adjusted_scores",
    "length_controlled",
    "length_controlled_win_rate",
    "parse_score",
    "parse_support",
    "parse_winner",
    "ranking",
    "run_check",
    "spearman",
    "split_claims",
]

__version__ = "0.1.0"


@hookimpl
def aieng_register_components(registry: ComponentRegistry) -> None:
    """Offer ``rubric``, ``pairwise``, ``ensemble``, ``factual`` and ``instructions``."""
    registry.add("rubric", RubricJudge, options=RubricOptions,
                 description="AI judge: 1-5 per rubric criterion (accuracy, completeness, "
                             "clarity, custom), JSON answers, one retry.")
    registry.add("pairwise", PairwiseJudge, options=PairwiseOptions,
                 description="AI judge: output vs reference in both orders (position-bias "
                             "control); win 1 / tie 0.5 / loss 0.")
    registry.add("ensemble", EnsembleJudge, options=EnsembleOptions,
                 description="A panel of rubric judges (models x prompt styles): mean, "
                             "median or majority, with the spread.")
    registry.add("factual", FactualJudge, options=FactualOptions,
                 description="Fraction of the answer's claims the context supports (LLM "
                             "yes/no per claim, or a local NLI model).")
    registry.add("instructions", InstructionsJudge, options=InstructionsOptions,
                 description="Verifiable instruction checks (JSON/schema, counts, keywords, "
                             "case, bullets, starts/ends with): 1 or 0 each.")


@hookimpl
def aieng_register_events(registry: EventRegistry) -> None:
    """Declare ``judge.failed`` (a judge's answers could not be read: no score)."""
    registry.add(JudgeFailed)
