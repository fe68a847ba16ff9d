from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from controlplane.replay.tenants import load_mix, mix_from_obj, uniform_mix
from controlplane.schemas import Priority

DATA = Path(__file__).resolve().parents[3] / "data" / "tenants"


def test_shipped_mixes_load() -> None:
    mix = load_mix(DATA / "three-tier.yaml")
    assert [t.sla.tenant for t in mix.tenants] == ["premium", "standard", "batch"]
    assert mix.slas["premium"].priority is Priority.PREMIUM
    assert mix.slas["premium"].ttft_ms == 500
    for name in ("strict.json", "relaxed.json"):
        assert load_mix(DATA / name).tenants


def test_assignment_is_seeded_and_follows_shares() -> None:
    mix = load_mix(DATA / "three-tier.yaml")
    a = mix.assign(20_000, seed=3)
    assert a == mix.assign(20_000, seed=3)
    assert a != mix.assign(20_000, seed=4)
    c = Counter(a)
    assert c["premium"] / 20_000 == pytest.approx(0.2, abs=0.015)
    assert c["batch"] / 20_000 == pytest.approx(0.3, abs=0.015)


def test_assignment_prefix_stable() -> None:
    """A shorter trace gets the same tenants for the same indices (windows agree)."""
    mix = load_mix(DATA / "three-tier.yaml")
    assert mix.assign(100, 1) == mix.assign(1000, 1)[:100]


def test_errors_are_collected(tmp_path: Path) -> None:
    bad = {"tenants": [{"tenant": "a", "ttft_ms": -1}, {"tenant": "b", "bogus": 1}, 3]}
    with pytest.raises(ValueError) as ei:
        mix_from_obj(bad)
    msg = str(ei.value)
    assert "tenants[0]" in msg and "tenants[1]" in msg and "tenants[2]" in msg
    p = tmp_path / "dup.json"
    p.write_text(json.dumps([{"tenant": "a"}, {"tenant": "a"}]))
    with pytest.raises(ValueError, match="duplicate"):
        load_mix(p)


def test_uniform_mix() -> None:
    mix = uniform_mix(500, 25)
    assert set(mix.assign(10, 0)) == {"default"}
    assert mix.slas["default"].itl_ms == 25
