"""Paged KV cache with a hash-keyed prefix cache, counted in blocks, not objects.

vLLM keeps every block in a free queue and reuses the least recently freed
cached block first. Tracking thousands of block objects per step would make the
replay driver slow, so this keeps only counts plus one entry per cached *unit*
(a run of ``blocks_per_unit`` blocks sharing one chained hash: one block for
token-id hashing, 512/block_size blocks for a Mooncake ``hash_id``).

A block is in exactly one of three states:

* free (never used, or released without a hash): ``free_blocks``;
* cached and evictable (refcount 0, LRU order): counted in ``evictable_blocks``;
* in use (held by a running request, hashed or not).

``usage_ratio`` follows vLLM's ``kv_cache_usage_perc``: evictable cached blocks
count as free.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence


class KVCache:
    """Block accounting and prefix lookup; requests hold their own block counts."""

    __slots__ = ("_lru", "_refs", "evictable_blocks", "free_blocks", "num_blocks")

    def __init__(self, num_blocks: int) -> None:
        if num_blocks <= 0:
            raise ValueError("num_blocks must be positive")
        self.num_blocks = num_blocks
        self.free_blocks = num_blocks
        self.evictable_blocks = 0
        self._refs: dict[Hashable, list[int]] = {}  # key -> [refcount, blocks]
        self._lru: OrderedDict[Hashable, int] = OrderedDict()  # refcount-0 keys -> blocks

    @property
    def used_blocks(self) -> int:
        return self.num_blocks - self.free_blocks - self.evictable_blocks

    @property
    def usage_ratio(self) -> float:
        return self.used_blocks / self.num_blocks

    @property
    def available_blocks(self) -> int:
        """Blocks an allocation may take: free plus evictable cached ones."""
        return self.free_blocks + self.evictable_blocks

    def lookup(self, keys: Sequence[Hashable]) -> int:
        """Number of leading units of ``keys`` present in the cache (a prefix hit)."""
        n = 0
        refs = self._refs
        for k in keys:
            if k not in refs:
                break
            n += 1
        return n

    def acquire(self, keys: Sequence[Hashable]) -> int:
        """Take a reference on cached units (after ``lookup``); returns blocks taken."""
        blocks = 0
        for k in keys:
            entry = self._refs[k]
            if entry[0] == 0:
                del self._lru[k]
                self.evictable_blocks -= entry[1]
            entry[0] += 1
            blocks += entry[1]
        return blocks

    def allocate(self, n: int) -> bool:
        """Take ``n`` anonymous blocks, evicting least-recently-freed cached units if
        needed. All or nothing: returns False (and changes nothing) when short."""
        if n <= self.free_blocks:
            self.free_blocks -= n
            return True
        if n > self.free_blocks + self.evictable_blocks:
            return False
        lru = self._lru
        refs = self._refs
        while self.free_blocks < n:
            key, blocks = lru.popitem(last=False)
            del refs[key]
            self.evictable_blocks -= blocks
            self.free_blocks += blocks
        self.free_blocks -= n
        return True

    def register(self, key: Hashable, blocks: int) -> bool:
        """Turn ``blocks`` anonymous blocks of a request into the cached unit ``key``.

        If another request already cached the same unit, the request shares it and
        its own copy is freed (vLLM would keep a duplicate until release; sharing
        keeps the accounting simple). Returns True when the key is now held.
        """
        entry = self._refs.get(key)
        if entry is None:
            self._refs[key] = [1, blocks]
            return True
        if entry[0] == 0:
            del self._lru[key]
            self.evictable_blocks -= entry[1]
        entry[0] += 1
        self.free_blocks += blocks
        return True

    def release(self, keys: Sequence[Hashable], anon_blocks: int) -> None:
        """Drop a request's references; unreferenced units become evictable (LRU tail)."""
        self.free_blocks += anon_blocks
        refs = self._refs
        lru = self._lru
        for k in reversed(keys):  # later units of a prompt are evicted first, like vLLM
            entry = refs[k]
            entry[0] -= 1
            if entry[0] == 0:
                lru[k] = entry[1]
                self.evictable_blocks += entry[1]

    def reset(self) -> None:
        """Drop every evictable cached unit (vLLM's reset_prefix_cache)."""
        for key, blocks in self._lru.items():
            del self._refs[key]
            self.free_blocks += blocks
        self._lru.clear()
        self.evictable_blocks = 0
