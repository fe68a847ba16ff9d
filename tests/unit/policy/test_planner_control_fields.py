"""The control hash contract: parse, encode, and write-on-change diffs."""

from __future__ import annotations

from controlplane.policy.control_fields import (
    changed_fields,
    encode_control,
    parse_control,
    parse_draining,
)


def test_roundtrip() -> None:
    raw = encode_control({"w1": 0.0, "w2": 0.5}, frozenset({"w3", "w1"}), {"batch": 0.25})
    assert raw == {"weight:w1": "0.000", "weight:w2": "0.500", "draining": "w1,w3",
                   "admit:batch": "0.250"}  # fmt: skip
    st = parse_control({**raw, "version": "7", "other": "x"})
    assert st.weight("w2") == 0.5 and st.weight("nope") == 1.0
    assert st.draining == frozenset({"w1", "w3"}) and st.admit_fraction("batch") == 0.25
    assert st.version == 7


def test_draining_accepts_json_lists_and_blanks() -> None:
    assert parse_draining('["a", "b"]') == frozenset({"a", "b"})
    assert parse_draining(" a, ,b ") == frozenset({"a", "b"})
    assert parse_draining("") == frozenset()


def test_bad_values_are_clamped_or_defaulted() -> None:
    st = parse_control({"weight:a": "7", "weight:b": "nan", "admit:t": "-1", "version": "x"})
    assert st.weight("a") == 1.0 and st.weight("b") == 1.0 and st.admit_fraction("t") == 0.0


def test_only_changes_are_written() -> None:
    cur = {"weight:w1": "0.000", "draining": "b,a", "admit:t": "0.5", "version": "3"}
    want = encode_control({"w1": 0.0, "w2": 1.0}, frozenset({"a", "b"}), {"t": 0.5, "u": 1.0})
    assert changed_fields(cur, want) == {}
    want = encode_control({"w1": 1.0}, frozenset({"a"}), {"t": 0.25})
    assert changed_fields(cur, want) == {"weight:w1": "1.000", "draining": "a", "admit:t": "0.250"}
    assert changed_fields({}, encode_control(None, frozenset(), None)) == {}


def test_policy_params_reject_inverted_thresholds_with_every_error() -> None:
    import pytest
    from pydantic import ValidationError

    from controlplane.policy.planner.control_planner import ControlPolicyConfig

    with pytest.raises(ValidationError) as exc:
        ControlPolicyConfig.model_validate(
            {
                "scale": {"min_replicas": 5, "max_replicas": 2},
                "reroute": {"kv_include_below": 0.99, "kv_exclude_above": 0.9},
                "throttle": {"recover_below": 0.6, "shed_above": 0.5},
            }
        )
    text = str(exc.value)
    assert "min_replicas > max_replicas" in text
    assert "kv_include_below >= kv_exclude_above" in text
    assert "recover_below >= shed_above" in text
