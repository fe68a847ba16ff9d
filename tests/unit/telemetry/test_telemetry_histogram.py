"""histogram_quantile semantics, bucket deltas and rolling windows (pure helpers)."""

from __future__ import annotations

import math

import pytest

from workers.telemetry import histogram as h

INF = math.inf
B = h.normalize([(0.1, 2.0), (0.2, 6.0), (0.4, 10.0), (INF, 10.0)])


class TestQuantile:
    def test_interpolates_inside_bucket(self) -> None:
        # rank 5 of 10 lies in (0.1, 0.2]: 3 of the 4 observations there → 0.1 + 0.1 * 3/4
        assert h.quantile(0.5, B) == pytest.approx(0.175)

    def test_first_bucket_interpolates_from_zero(self) -> None:
        assert h.quantile(0.1, B) == pytest.approx(0.05)

    def test_rank_in_inf_bucket_returns_highest_finite_bound(self) -> None:
        b = h.normalize([(0.1, 1.0), (0.2, 2.0), (INF, 10.0)])
        assert h.quantile(0.99, b) == 0.2

    def test_empty_and_layouts_without_inf(self) -> None:
        assert h.quantile(0.5, h.EMPTY) is None
        assert h.quantile(0.5, h.normalize([(0.1, 0.0), (INF, 0.0)])) is None
        assert h.quantile(0.5, ((0.1, 1.0), (0.2, 2.0))) is None

    def test_rejects_out_of_range_q(self) -> None:
        with pytest.raises(ValueError):
            h.quantile(1.5, B)

    def test_normalize_merges_engines_and_fixes_monotonicity(self) -> None:
        merged = h.normalize([(0.1, 1.0), (INF, 2.0), (0.1, 1.0), (INF, 3.0), (0.2, 0.5)])
        assert merged == ((0.1, 2.0), (0.2, 2.0), (INF, 5.0))


class TestDelta:
    def test_difference_of_cumulative_counts(self) -> None:
        prev = h.normalize([(0.1, 1.0), (0.2, 2.0), (0.4, 2.0), (INF, 2.0)])
        d, reset = h.delta(B, prev)
        assert not reset
        assert d == (
            (0.1, 1.0),
            (0.2, 4.0),
            (0.4, 8.0),
            (INF, 8.0),
        )

    def test_decrease_means_reset_and_current_is_the_delta(self) -> None:
        later = h.normalize([(0.1, 1.0), (0.2, 1.0), (0.4, 1.0), (INF, 1.0)])
        d, reset = h.delta(later, B)
        assert reset and d == later

    def test_layout_change_is_a_reset(self) -> None:
        other = h.normalize([(0.5, 1.0), (INF, 1.0)])
        assert h.delta(other, B) == (other, True)

    def test_no_previous(self) -> None:
        assert h.delta(B, None) == (B, False)


class TestWindow:
    one = h.normalize([(0.1, 1.0), (INF, 1.0)])
    slow = h.normalize([(0.1, 0.0), (1.0, 1.0), (INF, 1.0)])

    def test_last_delta_wins_when_it_has_observations(self) -> None:
        w = h.push((), 0.0, self.one, 5.0)
        w = h.push(w, 1.0, self.slow, 5.0)
        assert h.total(h.windowed(w, 1.0, 5.0)) == 1.0
        assert h.quantile(0.5, h.windowed(w, 1.0, 5.0)) == pytest.approx(0.55)

    def test_empty_deltas_fall_back_to_recent_ones_then_expire(self) -> None:
        w = h.push((), 0.0, self.one, 5.0)
        w = h.push(w, 1.0, h.normalize([(0.1, 0.0), (INF, 0.0)]), 5.0)
        assert h.total(h.windowed(w, 1.0, 5.0)) == 1.0
        w = h.push(w, 6.0, h.normalize([(0.1, 0.0), (INF, 0.0)]), 5.0)
        assert w == ()
        assert h.windowed(w, 6.0, 5.0) == h.EMPTY

    def test_min_observations_widens_the_window(self) -> None:
        w = h.push((), 0.0, self.one, 5.0)
        w = h.push(w, 1.0, self.slow, 5.0)
        assert h.total(h.windowed(w, 1.0, 5.0, min_observations=2)) == 2.0

    def test_add_merges_different_layouts(self) -> None:
        assert h.add(self.one, self.slow) == ((0.1, 1.0), (1.0, 2.0), (INF, 2.0))

    def test_quantiles_ms(self) -> None:
        assert h.quantiles_ms(B, (0.5,))[0] == pytest.approx(175.0)
        assert h.quantiles_ms(h.EMPTY) == (None, None, None)
