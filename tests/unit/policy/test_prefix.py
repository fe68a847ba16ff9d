"""Prefix block hashing and the longest-prefix index."""

from __future__ import annotations

from controlplane.policy.request.prefix import (
    PrefixIndex,
    block_hashes_from_text,
    block_hashes_from_tokens,
)


def test_hashes_are_chained_and_stable() -> None:
    a = block_hashes_from_tokens(list(range(64)), 16)
    b = block_hashes_from_tokens([*range(48), 999, *range(49, 70)], 16)
    assert len(a) == 4 and a[:3] == b[:3] and a[3] != b[3]
    assert block_hashes_from_tokens(list(range(15)), 16) == ()
    t = block_hashes_from_text("x" * 130, 16)  # 64 chars per block
    assert len(t) == 2 and t == block_hashes_from_text("x" * 128, 16)


def test_longest_prefix_overlap_and_lru() -> None:
    idx = PrefixIndex(max_blocks=5)
    idx.record("w1", (1, 2, 3))
    idx.record("w2", (1, 2))
    assert idx.overlap((1, 2, 3, 4)) == {"w1": 3, "w2": 2}
    assert idx.overlap((9, 1)) == {}
    idx.record("w3", (7, 8, 9))  # evicts the oldest blocks
    assert len(idx) == 5
    assert idx.overlap((1, 2, 3)) == {"w1": 2, "w2": 2}  # block 3 was least recent
    idx.forget_worker("w3")
    assert idx.overlap((7, 8)) == {}
