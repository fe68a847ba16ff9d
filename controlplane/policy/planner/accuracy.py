"""Accuracy of latency and breach predictions: one definition for benchmarks, the
replay reports and tests.

- TTFT error: median absolute percentage error over (predicted, measured) pairs.
- Breach AUC: area under the ROC curve of a score (e.g. predicted miss probability,
  or predicted TTFT / target, which ranks the same) against whether the request
  actually missed. Rank-based (Mann-Whitney U with average ranks for ties), so any
  monotone transform of the score gives the same AUC.
Goals (issue 5): median error < 15 %, AUC >= 0.9.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

GOAL_MEDIAN_APE_PCT = 15.0
GOAL_AUC = 0.9


def abs_pct_errors(pairs: Iterable[tuple[float, float]]) -> list[float]:
    """|predicted - measured| / measured x 100 for pairs with a positive measurement."""
    return [abs(p - m) / m * 100.0 for p, m in pairs if m > 0 and p == p]


def median_abs_pct_error(pairs: Iterable[tuple[float, float]]) -> float:
    errs = abs_pct_errors(pairs)
    return float(np.median(errs)) if errs else math.nan


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """ROC AUC; NaN when only one class is present."""
    if len(scores) != len(labels):
        raise ValueError("scores and labels differ in length")
    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = float(ranks[y].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


@dataclass(frozen=True, slots=True)
class AccuracyReport:
    pairs: int
    median_ape_pct: float
    p90_ape_pct: float
    breach_samples: int
    breach_positives: int
    breach_auc: float

    @property
    def meets_goals(self) -> bool:
        return self.median_ape_pct < GOAL_MEDIAN_APE_PCT and self.breach_auc >= GOAL_AUC


def report(
    pairs: Sequence[tuple[float, float]], scores: Sequence[float], labels: Sequence[bool]
) -> AccuracyReport:
    errs = abs_pct_errors(pairs)
    return AccuracyReport(
        pairs=len(errs),
        median_ape_pct=float(np.median(errs)) if errs else math.nan,
        p90_ape_pct=float(np.percentile(errs, 90)) if errs else math.nan,
        breach_samples=len(labels),
        breach_positives=sum(1 for v in labels if v),
        breach_auc=auc(scores, labels),
    )
