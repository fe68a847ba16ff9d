"""Weighted histogram ramps must equal observing every value."""

from __future__ import annotations

import pytest

from workers.sim import Hist
from workers.sim.stats import ITL_BUCKETS_S, buckets_1_2_5


@pytest.mark.parametrize(("first", "step"), [(0.004, 0.0002), (0.3, -0.01), (0.02, 0.0)])
def test_observe_linear_matches_naive(first: float, step: float) -> None:
    fast, slow = Hist(ITL_BUCKETS_S), Hist(ITL_BUCKETS_S)
    fast.observe_linear(first, step, 25, weight=3)
    for j in range(25):
        slow.observe(first + step * j, 3)
    assert fast.counts == slow.counts
    assert fast.sum == pytest.approx(slow.sum) and fast.count == slow.count


def test_vllm_token_buckets() -> None:
    assert buckets_1_2_5(4096) == (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
