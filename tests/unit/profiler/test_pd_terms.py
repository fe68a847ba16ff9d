"""P/D mode of the profiler, without a server: measured points → terms → profile file."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.profiler.pd import (
    hist_sum_count,
    make_pd_plan,
    pd_profile_text,
    pd_terms,
    write_pd_profile,
)
from controlplane.profiler.plan import Result
from controlplane.profiles import PROFILES_DIR, load_profile, parse_profile


def _points(base_name: str) -> list[Result]:
    """What a pair whose producer saves at 5 ms + 30 us/token and whose decode engine
    loads at 20 ms + 20 us/token inside the step, 1.4x slower decode steps, reports."""
    base = load_profile(base_name)
    out = []
    for n in (300, 700, 1400, 2000):
        out.append(Result("pd_save", 1, n, 5 + 0.03 * n, 5))
        out.append(Result("pd_join", 4, n, 20 + 0.02 * n, 5))
        out.append(Result("pd_remote", 1, n, 30 + 0.02 * n, 5))
    for b, c in ((1, 128), (4, 128), (4, 1024)):
        out.append(Result("decode_pd", b, c, 1.4 * base.decode_ms(b, c), 5))
    return out


def test_plan_covers_every_kind_once() -> None:
    plan = make_pd_plan([2000, 300, 300, 5000], [4], [(1, 128), (1, 128)], 4096)
    assert [(p.phase, p.batch, p.tokens) for p in plan] == [
        ("pd_save", 1, 300), ("pd_save", 1, 2000), ("pd_remote", 1, 300),
        ("pd_remote", 1, 2000), ("decode_pd", 1, 128), ("pd_join", 4, 300),
        ("pd_join", 4, 2000),
    ]  # fmt: skip


@pytest.mark.parametrize("base_name", ["cpu-tiny", "h100-llama3.1-8b"])
def test_terms_recovered_and_base_rows_kept(base_name: str, tmp_path: Path) -> None:
    base = load_profile(base_name)
    terms = pd_terms(_points(base_name), base)
    assert terms.decode_scale == pytest.approx(1.4)
    assert [n for _, n, _ in terms.kv_save_rows] == [300, 700, 1400, 2000]
    base_text = (PROFILES_DIR / f"{base_name}.csv").read_text()
    meta = {"name": "pd-x", "decode_scale": f"{terms.decode_scale:.3f}", "pd_base": base.name}
    prof = write_pd_profile(tmp_path / "pd-x.csv", base_text, terms, meta)
    assert prof.name == "pd-x" and prof.decode_scale == pytest.approx(1.4)
    assert prof.kv_save_base_ms == pytest.approx(5, abs=1e-3)
    assert prof.kv_save_ms_per_token == pytest.approx(0.03, abs=1e-6)
    assert prof.kv_load_base_ms == pytest.approx(20, abs=1e-3)
    assert prof.kv_load_ms_per_token == pytest.approx(0.02, abs=1e-6)
    text = (tmp_path / "pd-x.csv").read_text()
    # provenance: the base's data lines are byte-identical, the header keeps its limits
    assert text.split("\n")[1:][: len(base_text.split("\n")) - 2] == base_text.split("\n")[1:-1]
    assert prof.kv_capacity_tokens == base.kv_capacity_tokens
    assert prof.prefill_ms(1024) == base.prefill_ms(1024)
    assert load_profile(tmp_path / "pd-x.csv").kv_load_ms(1000) == pytest.approx(40, abs=1e-2)


def test_rewriting_a_pd_profile_replaces_its_terms() -> None:
    base = load_profile("cpu-tiny")
    text1 = pd_profile_text(
        (PROFILES_DIR / "cpu-tiny.csv").read_text(),
        pd_terms(_points("cpu-tiny"), base),
        {"name": "a", "decode_scale": "1.4"},
    )
    head = text1.split("\n")[0] + " kv_load_base_ms=99\n"
    text1 = head + text1.split("\n", 1)[1]
    again = pd_profile_text(
        text1, pd_terms([Result("pd_join", 4, 1000, 7.0, 1)], base), {"name": "b"}
    )
    prof = parse_profile(again)
    assert prof.name == "b" and prof.decode_scale == 1.0
    assert prof.kv_load_ms(1000) == pytest.approx(7.0)  # old rows and declared value gone
    assert prof.kv_save_ms(1000) == 0.0


def test_hist_sum_count_on_a_real_vllm_page() -> None:
    """Sum and count of a histogram family over every label set of a real vLLM page."""
    fixtures = Path(__file__).resolve().parents[3].parent / "shared/fixtures/vllm-0.32.0"
    page = (fixtures / "metrics-after.txt").read_text()
    total, count = hist_sum_count(page, "vllm:inter_token_latency_seconds")
    assert count == 4399 and total == pytest.approx(113.885872479)
    assert hist_sum_count(page, "vllm:no_such_family") == (0.0, 0.0)


def test_first_version_pd_prefill_points_still_read() -> None:
    """Points files written before ``pd_save``: the remote TTFT minus the base prefill."""
    base = load_profile("cpu-tiny")
    old = [Result("pd_prefill", 1, n, base.prefill_ms(n) + 5 + 0.03 * n, 5) for n in (300, 2000)]
    terms = pd_terms(old, base)
    assert [(n, round(ms, 6)) for _, n, ms in terms.kv_save_rows] == [(300, 14.0), (2000, 65.0)]
