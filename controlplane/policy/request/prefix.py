"""Prefix block hashes and the index of which worker has seen which blocks.

The gateway has no tokenizer, so text prompts are cut into fixed character blocks
(~4 characters per token) and token-id prompts into fixed token blocks. Hashes are
chained (each covers the whole prefix up to its block), like vLLM's prefix cache,
so equal hashes mean equal prefixes. blake2b keeps them identical across processes
(Python's ``hash`` of str is salted per process). The replay driver can feed trace
hash ids (Mooncake ``hash_ids``) straight into ``PrefixIndex``.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from itertools import compress

CHARS_PER_TOKEN = 4


def _chain(prev: int, payload: bytes) -> int:
    h = hashlib.blake2b(payload, digest_size=8, key=prev.to_bytes(8, "little"))
    return int.from_bytes(h.digest(), "little")


def block_hashes_from_tokens(tokens: Sequence[int], block_tokens: int = 16) -> tuple[int, ...]:
    """Hashes of the whole blocks of a token-id prompt (a partial last block is not cached)."""
    out: list[int] = []
    prev = 0
    for i in range(0, len(tokens) - block_tokens + 1, block_tokens):
        prev = _chain(prev, array("q", tokens[i : i + block_tokens]).tobytes())
        out.append(prev)
    return tuple(out)


def block_hashes_from_text(text: str, block_tokens: int = 16) -> tuple[int, ...]:
    """Hashes of whole ``block_tokens * CHARS_PER_TOKEN``-character blocks of a text prompt."""
    step = block_tokens * CHARS_PER_TOKEN
    data = text.encode("utf-8", "surrogatepass")
    out: list[int] = []
    prev = 0
    for i in range(0, len(data) - step + 1, step):
        prev = _chain(prev, data[i : i + step])
        out.append(prev)
    return tuple(out)


class PrefixIndex:
    """Block hash → workers that were sent a prompt containing it, LRU-bounded.

    Approximate by design (Dynamo's approximate KV router): it records what the
    driver routed, not what the worker still caches, so ``max_blocks`` should be
    about the cluster's KV capacity in blocks.

    Holders are kept as a bitmask per block (one bit per worker), so the longest
    prefix match is one integer AND per block: with a shared system prompt most
    workers hold most blocks, and a set comparison per block cost O(workers), which
    made ``overlap`` a fifth of a routing decision at 64 workers.
    """

    def __init__(self, max_blocks: int = 200_000) -> None:
        self.max_blocks = max_blocks
        self._blocks: OrderedDict[int, int] = OrderedDict()
        """Block hash → bitmask of its holders (bit i = ``_names[i]``)."""
        self._bits: dict[str, int] = {}
        """Worker → its bit (``1 << i``)."""
        self._names: list[str | None] = []
        """Bit index → worker (None = free, listed in ``_free``)."""
        self._free: list[int] = []
        self._decoded: dict[tuple[int, int], dict[str, int]] = {}
        """(bitmask, depth) → {worker: depth} for its workers, memoised: the same holder
        sets recur request after request. Never handed out, only copied."""
        self._gen = 0
        self._memo: tuple[tuple[int, ...], int, dict[str, int]] | None = None

    def __len__(self) -> int:
        return len(self._blocks)

    def record(self, worker: str, hashes: Iterable[int]) -> None:
        bit = self._bits.get(worker) or self._new_bit(worker)
        blocks = self._blocks
        self._gen += 1
        for h in hashes:
            holders = blocks.get(h)
            if holders is None:
                blocks[h] = bit
            else:
                blocks[h] = holders | bit
                blocks.move_to_end(h)
        while len(blocks) > self.max_blocks:
            blocks.popitem(last=False)

    def overlap(self, hashes: Sequence[int]) -> dict[str, int]:
        """worker → number of leading blocks of ``hashes`` it holds (longest prefix match).

        The last answer is memoised: several scorers ask the same question per request.
        """
        memo = self._memo
        if memo is not None and memo[0] is hashes and memo[1] == self._gen:
            return memo[2]
        out: dict[str, int] | None = None
        masks = map(self._blocks.get, hashes)
        live = next(masks, None) or 0  # holders of the first block (0: none / no block)
        depth = 1 if live else 0
        # A worker's answer is the last depth it was still live at; write it when it
        # drops out (one AND per block), not per block per worker.
        for holders in masks if live else ():
            if not holders:
                break
            kept = live & holders
            if kept != live:
                out = self._add(out, live ^ kept, depth)
                live = kept
                if not live:
                    break
            depth += 1
        if live:
            out = self._add(out, live, depth)
        if out is None:
            out = {}
        if isinstance(hashes, tuple):
            self._memo = (hashes, self._gen, out)
        return out

    def forget_worker(self, worker: str) -> None:
        self._gen += 1
        bit = self._bits.pop(worker, None)
        if bit is None:
            return
        blocks = self._blocks
        for h, holders in list(blocks.items()):
            if holders & bit:
                blocks[h] = holders & ~bit  # an empty mask stops a match, like before
        i = bit.bit_length() - 1
        self._names[i] = None
        self._free.append(i)
        self._decoded.clear()

    def _new_bit(self, worker: str) -> int:
        i = self._free.pop() if self._free else len(self._names)
        if i == len(self._names):
            self._names.append(worker)
        else:
            self._names[i] = worker
        bit = self._bits[worker] = 1 << i
        return bit

    def _add(self, out: dict[str, int] | None, mask: int, depth: int) -> dict[str, int]:
        """``out`` with ``mask``'s workers at ``depth`` (a copy of a memoised group when
        ``out`` is still None: copying a dict is much cheaper than building it)."""
        group = self._decoded.get((mask, depth))
        if group is None:
            flags = bin(mask)[:1:-1].encode().translate(_BIT_FLAGS)  # bit i → byte i: 0/1
            group = dict.fromkeys(compress(self._names, flags), depth)  # type: ignore[arg-type]
            if len(self._decoded) >= 256:  # at 1,000 workers up to ~9 MB
                self._decoded.clear()
            self._decoded[(mask, depth)] = group
        if out is None:
            return group.copy()
        out.update(group)
        return out


_BIT_FLAGS = bytes.maketrans(b"01", b"\x00\x01")
