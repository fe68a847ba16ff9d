"""``slaplane profile`` P/D mode against a live sim prefill + decode pair whose profile
declares the connector's engine costs: the profiler must recover them from the
outside (producer TTFT, co-running stream stretch), and write a profile the sim reads.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from controlplane.profiler.pd import make_pd_plan, pd_terms, run_pd_plan, write_pd_profile
from controlplane.profiler.plan import Checkpoint
from controlplane.profiles import PROFILES_DIR, load_profile
from workers.sim.testing import running_sim

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

BASE = "cpu-tiny"
TRUTH = "kv_save_base_ms=5 kv_save_ms_per_token=0.03 kv_load_base_ms=20 kv_load_ms_per_token=0.02"


async def test_pd_profile_recovers_declared_terms(tmp_path: Path) -> None:
    base_text = (PROFILES_DIR / f"{BASE}.csv").read_text()
    head, rest = base_text.split("\n", 1)
    truth_path = tmp_path / "truth.csv"
    truth_path.write_text(f"{head} {TRUTH} decode_scale=1.5\n{rest}")
    truth = load_profile(truth_path)
    plan = make_pd_plan([400, 1800], [4], [(4, 128)], 4096)
    ckpt = Checkpoint(tmp_path / "pd.points.jsonl")
    async with (
        running_sim(profile=str(truth_path), role="prefill") as p,
        running_sim(profile=str(truth_path), role="decode") as d,
    ):
        await run_pd_plan(
            p.url, d.url, None, plan, ckpt, repeats=3, decode_tokens=256, joins=4,
            timeout_s=60, console=Console(quiet=True), quiet=True,
        )  # fmt: skip
    assert len(ckpt.results) == len(plan)
    base = load_profile(BASE)
    terms = pd_terms(ckpt.results.values(), base)
    prof = write_pd_profile(
        tmp_path / "pd.csv", base_text, terms, {"name": "pd", "decode_scale": "1.5"}
    )
    # HTTP and event-loop overhead on a shared box only ever add time
    for n in (400, 1800):
        assert prof.kv_load_ms(n) == pytest.approx(truth.kv_load_ms(n), rel=0.35, abs=4.0)
        assert prof.kv_save_ms(n) == pytest.approx(truth.kv_save_ms(n), rel=0.5, abs=6.0)
    for b, c, ratio in terms.decode_ratios:  # sim steps carry ~0.5-1 ms of event-loop time
        assert ratio * base.decode_ms(b, c) == pytest.approx(truth.decode_ms(b, c), rel=0.3, abs=2)
    assert terms.decode_scale > 1.2
    assert load_profile(tmp_path / "pd.csv").has_pd_terms
