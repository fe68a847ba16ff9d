"""Relay timings: TPOT of streamed and non-streamed responses (no clock: times given)."""

from __future__ import annotations

import json

import pytest

from controlplane.gateway.relay import Timings, scan_json_response


def _body(completion_tokens: int) -> bytes:
    return json.dumps(
        {
            "choices": [{"text": "x"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": completion_tokens},
        }
    ).encode()


def test_non_streamed_tpot_is_generation_time_over_tokens() -> None:
    """Every token arrives with the body: TTFT is the whole wait, and TPOT is the time
    from sending the request upstream to the response over its tokens (was 0)."""
    t = Timings(t0=0.0, upstream_s=1.0)
    scan_json_response(t, _body(5), now=3.0)
    assert t.first_token_s == t.last_token_s == 3.0
    assert t.output_tokens == 5
    assert t.tpot_s() == pytest.approx(2.0 / 5)


@pytest.mark.parametrize(("tokens", "upstream_s"), [(1, 1.0), (0, 1.0), (5, None)])
def test_non_streamed_tpot_unknown(tokens: int, upstream_s: float | None) -> None:
    """Under two tokens there is no inter-token time (as when streamed); never 0."""
    t = Timings(t0=0.0, upstream_s=upstream_s)
    scan_json_response(t, _body(tokens), now=3.0)
    assert t.tpot_s() is None


def test_streamed_tpot_is_first_to_last_over_the_gaps() -> None:
    t = Timings(t0=0.0, upstream_s=0.5, first_token_s=1.0, last_token_s=3.0)
    t.usage_completion_tokens = 5
    assert t.tpot_s() == pytest.approx(2.0 / 4)
