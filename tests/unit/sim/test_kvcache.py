"""KV block accounting: allocation, prefix units, LRU eviction."""

from __future__ import annotations

from workers.sim import KVCache


def test_allocate_is_all_or_nothing() -> None:
    kv = KVCache(10)
    assert kv.allocate(7)
    assert not kv.allocate(4)
    assert kv.free_blocks == 3 and kv.usage_ratio == 0.7


def test_registered_units_are_shared_then_evictable_then_evicted() -> None:
    kv = KVCache(10)
    assert kv.allocate(4)
    kv.register("a", 2)
    kv.register("b", 2)
    assert kv.lookup(["a", "b", "c"]) == 2
    kv.release(["a", "b"], 0)
    assert kv.used_blocks == 0 and kv.evictable_blocks == 4
    assert kv.lookup(["a", "b"]) == 2  # still cached
    assert kv.acquire(["a"]) == 2 and kv.used_blocks == 2
    kv.release(["a"], 0)
    assert kv.allocate(8)  # needs 2 of the 4 evictable blocks: "b" (released last, first out)
    assert kv.lookup(["a"]) == 1 and kv.lookup(["b"]) == 0


def test_duplicate_register_frees_the_copy() -> None:
    kv = KVCache(10)
    assert kv.allocate(2)
    kv.register("x", 1)
    kv.register("x", 1)
    assert kv.used_blocks == 1
