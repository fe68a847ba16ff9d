"""Accuracy metrics: median abs % error and a rank AUC that agrees with scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from controlplane.policy.planner.accuracy import auc, median_abs_pct_error, report


def test_median_abs_pct_error_skips_unmeasured() -> None:
    assert median_abs_pct_error([(110.0, 100.0), (80.0, 100.0), (5.0, 0.0)]) == pytest.approx(15.0)
    assert math.isnan(median_abs_pct_error([]))


def test_auc_extremes_ties_and_one_class() -> None:
    assert auc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert auc([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.0
    assert auc([0.5, 0.5, 0.5, 0.5], [False, True, False, True]) == 0.5
    assert math.isnan(auc([0.1, 0.2], [True, True]))
    with pytest.raises(ValueError):
        auc([0.1], [True, False])


def test_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(500), 2)
    labels = rng.random(500) < scores
    assert auc(list(scores), list(labels)) == pytest.approx(roc_auc_score(labels, scores))


def test_report_goals() -> None:
    r = report([(100.0, 105.0)] * 10, [0.1, 0.9] * 5, [False, True] * 5)
    assert r.meets_goals and r.pairs == 10 and r.breach_positives == 5
