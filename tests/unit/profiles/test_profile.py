"""Profile loading and interpolation: exact on grid points, linear between, sane outside."""

from __future__ import annotations

import numpy as np
import pytest

from controlplane.profiles import (
    CPU_TINY_FIXTURE,
    PROFILES_DIR,
    Profile,
    available_profiles,
    fit_linear,
    load_profile,
    parse_profile,
    profile_path,
)


def test_shipped_profiles_load_with_limits() -> None:
    assert {"cpu-tiny", "cpu-tiny-fixture", "h100-llama3.1-8b"} <= set(available_profiles())
    for name in ("cpu-tiny", "cpu-tiny-fixture"):
        tiny = load_profile(name)
        assert tiny.name == name
        assert (tiny.kv_capacity_tokens, tiny.block_size) == (131072, 128)
        assert (tiny.max_num_batched_tokens, tiny.max_num_seqs) == (2048, 128)
        assert tiny.model == "tiny-llama"
    h100 = load_profile("h100-llama3.1-8b")
    assert (h100.num_blocks, h100.block_size) == (27062, 16)


def test_interpolation_hits_grid_points_and_is_linear_between() -> None:
    tiny = load_profile("cpu-tiny-fixture")  # the shared fixture table's rows
    assert tiny.prefill_ms(1024) == pytest.approx(92.64)
    assert tiny.prefill_ms(640) == pytest.approx((23.87 + 92.64) / 2)
    assert tiny.decode_ms(8, 1024) == pytest.approx(11.32)
    assert tiny.decode_ms(6, 128) == pytest.approx((3.72 + 5.16) / 2)
    h100 = load_profile("h100-llama3.1-8b")
    assert h100.decode_ms(128, 4096) == pytest.approx(28.8161)
    assert h100.prefill_ms(2048, prefix_tokens=16384) == pytest.approx(68.8472)


def test_extrapolation_is_monotone_and_bounded() -> None:
    tiny = load_profile("cpu-tiny-fixture")
    assert tiny.prefill_ms(1) == pytest.approx(12.72)  # held below the grid
    assert tiny.prefill_ms(4096) > tiny.prefill_ms(2048) > 0
    assert tiny.prefill_ms(4096) < 4 * tiny.prefill_ms(2048)
    assert tiny.decode_ms(128, 1024) > tiny.decode_ms(8, 1024)
    h100 = load_profile("h100-llama3.1-8b")
    assert h100.decode_ms(512, 2048) > h100.decode_ms(256, 2048)


def test_parse_without_header_uses_defaults_and_rejects_garbage() -> None:
    p = parse_profile(
        "phase,batch_size,context_tokens_or_prompt_tokens,latency_ms\n"
        "prefill,1,100,10\ndecode,1,100,2\n"
    )
    assert p.prefill_ms(100) == 10 and p.decode_ms(1, 100) == 2
    with pytest.raises(ValueError):
        parse_profile("kind,batch_size,tokens_or_context,prefix_cached,latency_ms\nwarp,1,1,0,1\n")
    with pytest.raises(ValueError, match="unknown profile"):
        load_profile("no-such-profile")


def test_noisy_profile_is_made_monotone() -> None:
    """A measured dip (batch 2 faster than batch 1) must not extrapolate to zero steps."""
    text = "\n".join(
        [
            "phase,batch_size,context_tokens_or_prompt_tokens,latency_ms",
            "prefill,1,256,25.0",
            "prefill,1,1024,20.0",
            "decode,1,128,2.49",
            "decode,2,128,2.06",
        ]
    )
    prof = parse_profile(text)
    assert prof.prefill_ms(1024) == 25.0
    assert prof.decode_ms(2, 128) == 2.49
    assert prof.decode_ms(128, 128) >= 2.49


def test_pd_rows_are_fitted_to_a_linear_term() -> None:
    base = (
        "phase,batch_size,context_tokens_or_prompt_tokens,latency_ms\n"
        "prefill,1,100,10\ndecode,1,100,2\n"
    )
    rows = "".join(f"kv_load,4,{n},{20 + 0.02 * n}\n" for n in (300, 700, 1400, 2000))
    rows += "kv_save,1,500,7\nkv_save,1,1500,-1\n"  # a noisy negative slope: constant mean
    p = parse_profile(base + rows)
    assert p.has_pd_terms
    assert [p.kv_load_base_ms, p.kv_load_ms_per_token] == pytest.approx([20, 0.02])
    assert p.kv_load_ms(1000) == pytest.approx(40) and p.kv_load_ms(0) == 0
    assert [p.kv_save_base_ms, p.kv_save_ms_per_token] == pytest.approx([3, 0])
    assert list(fit_linear([(100, 1), (200, 5)])) == pytest.approx([0.0, 0.0175])  # via 0
    assert fit_linear([]) == (0.0, 0.0) and fit_linear([(5, 2), (5, 4)]) == (3.0, 0.0)
    # one stalled point does not tilt the line
    stalled = [(300, 26.0), (700, 34.0), (1400, 180.0), (2000, 60.0)]
    a, b = fit_linear(stalled)
    assert a == pytest.approx(20.0) and b == pytest.approx(0.02)
    # a declared header value wins over the rows; the other terms keep the rows' fit
    q = parse_profile(
        "# slaplane-profile name=x kv_load_base_ms=1.5 decode_scale=2\n" + base + rows
    )
    assert [q.kv_load_base_ms, q.kv_load_ms_per_token] == pytest.approx([1.5, 0.02])
    assert q.decode_ms(1, 100) == 4.0
    for bad in ("decode_scale=0", "kv_save_base_ms=-1", "kv_load_ms_per_token=nan"):
        with pytest.raises(ValueError, match="bad"):
            parse_profile(f"# slaplane-profile {bad}\n" + base)


def test_shipped_profiles_without_pd_terms_are_plain() -> None:
    for name in ("cpu-tiny", "cpu-tiny-fixture", "h100-llama3.1-8b"):
        p = load_profile(name)
        assert not p.has_pd_terms and p.decode_scale == 1.0
        assert p.kv_load_ms(4096) == p.kv_save_ms(4096) == 0.0


def test_shipped_pd_profile_is_the_measured_base_plus_terms() -> None:
    pd, base = load_profile("cpu-tiny-pd-measured"), load_profile("cpu-tiny")
    assert pd.has_pd_terms and pd.decode_scale > 1
    assert pd.kv_load_ms(1000) > 0 and pd.kv_save_ms(1000) > 0
    assert pd.prefill_ms(1024) == base.prefill_ms(1024)
    assert pd.decode_ms(4, 1024) == pytest.approx(pd.decode_scale * base.decode_ms(4, 1024))
    base_lines = (PROFILES_DIR / "cpu-tiny.csv").read_text().splitlines()[1:]
    pd_lines = (PROFILES_DIR / "cpu-tiny-pd-measured.csv").read_text().splitlines()[1:]
    assert pd_lines[: len(base_lines)] == base_lines


def test_default_profile_is_the_shipped_fixture() -> None:
    """The policy's built-in default is ``cpu-tiny-fixture.csv``, held in code."""
    assert load_profile("cpu-tiny-fixture") == CPU_TINY_FIXTURE


def test_profile_path_finds_shipped_names_and_paths() -> None:
    assert profile_path("cpu-tiny") == PROFILES_DIR / "cpu-tiny.csv"
    assert profile_path(PROFILES_DIR / "cpu-tiny.csv") == PROFILES_DIR / "cpu-tiny.csv"
    with pytest.raises(ValueError, match=r"shipped: .*cpu-tiny"):
        profile_path("no-such-profile")


def test_from_points_cleans_like_the_csv_reader() -> None:
    p = Profile.from_points(
        [(256, 25.0), (1024, 20.0)], [(1, 128, 2.49), (2, 128, 2.06)], name="x", block_size=64
    )
    assert (p.name, p.model, p.block_size) == ("x", "x", 64)
    assert p.prefill_ms(1024) == 25.0 and p.decode_ms(2, 128) == 2.49
    with pytest.raises(ValueError, match="needs both"):
        Profile.from_points([(1, 1.0)], [])


@pytest.mark.parametrize("name", ["cpu-tiny-fixture", "cpu-tiny-pd-measured", "h100-llama3.1-8b"])
def test_row_and_array_paths_equal_decode_ms_bit_for_bit(name: str) -> None:
    """Routers interpolate a memoised row (``decode_row``) or an array of batches
    (``decode_ms_many``); both must give exactly ``decode_ms`` or routes differ."""
    p = load_profile(name)
    batches = np.arange(0, 600)
    for ctx in (1.0, 100.0, 128.0, 777.0, 1024.0, 5000.0, 200_000.0):
        want = [p.decode_ms(int(b), ctx) for b in batches]
        assert p.decode_ms_many(batches, ctx).tolist() == want
        assert p.decode_row(ctx) is p.decode_row(ctx)
