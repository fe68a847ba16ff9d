"""A vLLM-V1-like engine model: continuous batching over a profile, no clock of its own.

One scheduler rule covers prefill, decode and recompute, as in vLLM V1: every
request has ``num_tokens`` (prompt + generated) and ``computed`` (tokens in KV);
each step gives running requests ``num_tokens - computed`` tokens (capped by the
step's token budget: chunked prefill), then admits waiting requests FCFS while
budget, ``max_num_seqs`` and KV blocks allow. A request that reaches
``computed == num_tokens`` samples one token. When a running request needs a KV
block and none is free, the most recently admitted request is preempted and
recomputed later (vLLM's RECOMPUTE mode).

Time is an argument: ``step(now_s)`` schedules one iteration starting at
``max(now_s, end of the previous step)`` and returns its duration from the
profile. Both the live sim server (real clock) and the replay driver (virtual
clock) drive it. For replay speed, ``step(now_s, horizon_s=...)`` may
fast-forward a run of pure-decode steps up to the next finish, KV boundary or
``horizon_s`` in O(batch) instead of O(batch x steps).

P/D connector costs on the engine (when the profile declares them): a request
admitted with remote KV (decode side) adds ``profile.kv_load_ms(loaded tokens)`` to
the step it is admitted in, so every co-running stream waits for the load, as with
vLLM's ExampleConnector; a prefill chunk of a ``remote_decode`` request (producer
side) adds ``profile.kv_save_ms(chunk tokens)``. The off-engine hand-off delay is
separate (``EngineConfig.kv_transfer_*``: the request waits, nobody else does).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable, Iterable

from controlplane.profiles import Profile
from workers.sim.kvcache import KVCache
from workers.sim.stats import EngineStats
from workers.sim.types import EngineConfig, FinishedRequest, SimRequest, StepResult


class _Seq:
    """Mutable per-request state (slots: the replay driver holds thousands)."""

    __slots__ = (
        "anon",
        "arrival_s",
        "blocks",
        "cached",
        "computed",
        "external",
        "first_token_s",
        "held_units",
        "id",
        "keys",
        "last_token_s",
        "load",
        "max_tokens",
        "num_preemptions",
        "num_tokens",
        "out",
        "prompt",
        "ready_s",
        "remote",
        "save",
        "scheduled_s",
        "unit_blocks",
        "unit_tokens",
    )  # fmt: skip

    def __init__(
        self, req: SimRequest, now_s: float, keys: list[Hashable], unit: int, bpu: int
    ) -> None:
        self.id = req.request_id
        self.prompt = req.prompt_tokens
        self.max_tokens = req.max_tokens
        self.num_tokens = req.prompt_tokens
        self.computed = 0
        self.out = 0
        self.blocks = 0  # all blocks held (anon + cached units)
        self.anon = 0  # blocks held that are not (yet) a cached unit
        self.keys = keys
        self.unit_tokens = unit
        self.unit_blocks = bpu
        self.held_units = 0  # keys[:held_units] are referenced in the cache
        self.remote = req.remote_prefill_tokens
        self.save = req.remote_decode  # P/D producer: the connector writes the prompt's KV
        self.load = 0  # remote KV tokens loaded in the step this request is admitted in
        self.arrival_s = now_s
        self.ready_s = now_s
        self.scheduled_s: float | None = None
        self.first_token_s: float | None = None
        self.last_token_s = now_s
        self.cached = 0
        self.external = 0
        self.num_preemptions = 0


def block_keys(
    req: SimRequest, block_size: int, hash_block_tokens: int
) -> tuple[list[Hashable], int]:
    """Chained keys of the prompt's full cache units, and the unit size in tokens.

    ``hash_ids`` win over token ids (a trace gives only those). Keys chain their
    parent so equal keys imply equal prefixes, as vLLM's block hashes do.
    """
    keys: list[Hashable] = []
    if req.hash_ids is not None:
        if hash_block_tokens % block_size:
            return keys, block_size
        parent: Hashable = ("h",)
        for hid in req.hash_ids[: req.prompt_tokens // hash_block_tokens]:
            parent = hash((parent, hid))
            keys.append(parent)
        return keys, hash_block_tokens
    if req.prompt_token_ids is not None:
        ids = req.prompt_token_ids
        parent = ("t",)
        for i in range(
            0, (min(len(ids), req.prompt_tokens) // block_size) * block_size, block_size
        ):
            parent = hash((parent, tuple(ids[i : i + block_size])))
            keys.append(parent)
    return keys, block_size


class Engine:
    """The worker model. See the module docstring for the scheduling rule."""

    def __init__(self, profile: Profile, config: EngineConfig | None = None) -> None:
        cfg = config or EngineConfig()
        self.profile = profile
        self.config = cfg
        self.block_size = cfg.block_size or profile.block_size
        self.max_num_batched_tokens = cfg.max_num_batched_tokens or profile.max_num_batched_tokens
        self.max_num_seqs = cfg.max_num_seqs or profile.max_num_seqs
        self.max_model_len = cfg.max_model_len or profile.max_model_len
        capacity = cfg.kv_capacity_tokens or profile.kv_capacity_tokens
        self.kv = KVCache(capacity // self.block_size)
        self.stats = EngineStats(max_model_len=self.max_model_len)
        self._running: list[_Seq] = []
        self._waiting: deque[_Seq] = deque()
        self._deferred: list[_Seq] = []  # waiting for transferred KV (ready_s in future)
        self._by_id: dict[str, _Seq] = {}
        self._busy_until = -math.inf
        self._blocked = False  # last admission attempt stopped on KV / max_num_seqs
        self._base_ms = profile.base_step_ms
        self._pd_terms = profile.has_pd_terms

    # ---- accessors (what vLLM exports as gauges) ----
    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting) + len(self._deferred)

    @property
    def num_waiting_deferred(self) -> int:
        """Waiting for a KV transfer (vLLM's ``reason="deferred"``)."""
        return len(self._deferred)

    @property
    def kv_usage_ratio(self) -> float:
        return self.kv.usage_ratio

    @property
    def kv_capacity_tokens(self) -> int:
        return self.kv.num_blocks * self.block_size

    @property
    def busy_until_s(self) -> float:
        """End of the step in flight; the next step cannot start earlier."""
        return self._busy_until

    @property
    def has_unfinished(self) -> bool:
        return bool(self._by_id)

    def waiting_tokens(self) -> int:
        """Prompt tokens not yet computed across waiting requests (queue depth in tokens)."""
        return sum(s.num_tokens - s.computed for s in self._waiting) + sum(
            s.num_tokens for s in self._deferred
        )

    def unstarted(self) -> list[str]:
        """Ids of waiting requests never scheduled (no KV held, no compute spent): the
        ones a driver may still withdraw at no cost (admission displacement)."""
        return [s.id for s in self._waiting if s.scheduled_s is None]

    def output_tokens(self, request_id: str) -> int:
        seq = self._by_id.get(request_id)
        return 0 if seq is None else seq.out

    def next_event_s(self) -> float | None:
        """When the driver should call ``step`` next; None when idle."""
        if self._running:
            return self._busy_until
        if self._waiting and not self._blocked:
            return max(self._busy_until, self._waiting[0].ready_s)
        if self._deferred:
            return max(self._busy_until, min(s.ready_s for s in self._deferred))
        return None

    # ---- requests in ----
    def add_request(self, req: SimRequest, now_s: float) -> None:
        """Queue a request arriving at ``now_s``. Raises ValueError if it can never fit."""
        if req.request_id in self._by_id:
            raise ValueError(f"duplicate request id {req.request_id!r}")
        if req.prompt_tokens < 1 or req.max_tokens < 1:
            raise ValueError("prompt_tokens and max_tokens must be >= 1")
        total = req.prompt_tokens + req.max_tokens
        if total > self.max_model_len:
            raise ValueError(
                f"prompt ({req.prompt_tokens}) + max_tokens ({req.max_tokens}) exceeds "
                f"max_model_len {self.max_model_len}"
            )
        if total > self.kv_capacity_tokens:
            raise ValueError(
                f"request needs {total} tokens of KV; capacity is {self.kv_capacity_tokens}"
            )
        keys: list[Hashable] = []
        unit = self.block_size
        if self.config.enable_prefix_caching:
            keys, unit = block_keys(req, self.block_size, self.config.hash_block_tokens)
        seq = _Seq(req, now_s, keys, unit, unit // self.block_size)
        self._by_id[seq.id] = seq
        if seq.remote > 0:
            delay = self.config.kv_transfer_base_s + self.config.kv_transfer_s_per_token * min(
                seq.remote, seq.prompt
            )
            if delay > 0:
                seq.ready_s = now_s + delay
                self._deferred.append(seq)
                return
        self._waiting.append(seq)
        self._blocked = False

    def abort(self, request_id: str, now_s: float) -> FinishedRequest | None:
        """Drop a request (client went away); frees its KV. None if unknown/finished."""
        seq = self._by_id.get(request_id)
        if seq is None:
            return None
        if seq in self._running:
            self._running.remove(seq)
        elif seq in self._deferred:
            self._deferred.remove(seq)
        else:
            self._waiting.remove(seq)
        return self._finish(seq, "abort", max(now_s, seq.arrival_s))

    # ---- the iteration ----
    def step(self, now_s: float, horizon_s: float | None = None) -> StepResult | None:
        """Run one iteration starting at ``max(now_s, busy_until_s)``; None if nothing
        can run. With ``horizon_s``, a pure-decode batch is fast-forwarded while its
        steps start before ``horizon_s`` (pass the next arrival time)."""
        start = max(now_s, self._busy_until)
        if self._deferred:
            self._promote_deferred(start)
        if horizon_s is not None and horizon_s > start and self._running:
            ff = self._fast_forward(start, horizon_s)
            if ff is not None:
                return ff
        res = StepResult(start_s=start, end_s=start)
        scheduled = self._schedule(start, res)
        if not scheduled:
            return None
        self._apply(scheduled, res)
        return res

    def _promote_deferred(self, start: float) -> None:
        ready = [s for s in self._deferred if s.ready_s <= start]
        if ready:
            self._deferred = [s for s in self._deferred if s.ready_s > start]
            ready.sort(key=lambda s: s.ready_s)
            self._waiting.extend(ready)
            self._blocked = False

    def _schedule(self, start: float, res: StepResult) -> list[tuple[_Seq, int]]:
        budget = self.max_num_batched_tokens
        bs = self.block_size
        kv = self.kv
        running = self._running
        scheduled: list[tuple[_Seq, int]] = []
        i = 0
        while i < len(running) and budget > 0:
            seq = running[i]
            n = min(seq.num_tokens - seq.computed, budget)
            need = -(-(seq.computed + n) // bs) - seq.blocks
            if need > 0 and not kv.allocate(need):
                victim_is_self = False
                while not kv.allocate(need):
                    victim = running.pop()
                    self._preempt(victim)
                    res.preempted.append(victim.id)
                    if victim is seq:
                        victim_is_self = True
                        break
                if victim_is_self:
                    break
            if need > 0:
                seq.blocks += need
                seq.anon += need
            scheduled.append((seq, n))
            budget -= n
            i += 1
        if res.preempted:
            return scheduled
        waiting = self._waiting
        while waiting and budget > 0:
            if len(running) >= self.max_num_seqs:
                self._blocked = True
                break
            seq = waiting[0]
            n = self._admit(seq, budget, start)
            if n == 0:
                self._blocked = True
                break
            waiting.popleft()
            running.append(seq)
            scheduled.append((seq, n))
            budget -= n
        return scheduled

    def _admit(self, seq: _Seq, budget: int, start: float) -> int:
        """Prefix lookup + block allocation for a waiting request; tokens scheduled or 0."""
        kv = self.kv
        unit = seq.unit_tokens
        hit_units = kv.lookup(seq.keys) if seq.keys else 0
        if hit_units * unit >= seq.num_tokens:
            hit_units = (seq.num_tokens - 1) // unit
        hit = hit_units * unit
        external = 0
        if seq.remote > 0 and seq.num_preemptions == 0:
            external = max(0, min(seq.remote, seq.prompt) - hit)
        computed = min(hit + external, seq.num_tokens - 1)
        n = min(seq.num_tokens - computed, budget)
        held = hit_units * seq.unit_blocks
        need = -(-(computed + n) // self.block_size) - held
        hit_keys = seq.keys[:hit_units]
        if hit_units:
            kv.acquire(hit_keys)
        if not kv.allocate(need):
            if hit_units:
                kv.release(hit_keys, 0)
            return 0
        seq.held_units = hit_units
        seq.blocks = held + need
        seq.anon = need
        seq.computed = computed
        st = self.stats
        st.prefix_cache_queries_total += seq.num_tokens
        st.prefix_cache_hits_total += hit
        if seq.remote > 0 and seq.num_preemptions == 0:
            st.external_prefix_cache_queries_total += seq.num_tokens - hit
            st.external_prefix_cache_hits_total += external
        if seq.scheduled_s is None:
            seq.scheduled_s = start
            seq.cached = min(hit, seq.prompt)
            seq.external = external
        seq.load = external
        return n

    def _step_ms(self, scheduled: list[tuple[_Seq, int]], res: StepResult) -> float:
        prof = self.profile
        prefill_tokens = 0
        extra_ms = 0.0
        dec_b = 0
        dec_ctx = 0
        for seq, n in scheduled:
            if n == 1 and seq.computed + 1 == seq.num_tokens:
                dec_b += 1
                dec_ctx += seq.num_tokens
            else:
                prefill_tokens += n
                if seq.computed and prof.prefix_grid:
                    extra_ms += prof.prefill_ms(n, seq.computed) - prof.prefill_ms(n)
        res.num_prefill_tokens = prefill_tokens
        res.num_decode_tokens = dec_b
        p_ms = prof.prefill_ms(prefill_tokens) + extra_ms if prefill_tokens else 0.0
        d_ms = prof.decode_ms(dec_b, dec_ctx / dec_b) if dec_b else 0.0
        pd_ms = self._connector_ms(scheduled) if self._pd_terms else 0.0
        if p_ms and d_ms:
            return p_ms + d_ms - min(self._base_ms, p_ms, d_ms) + pd_ms
        return p_ms + d_ms + pd_ms

    def _connector_ms(self, scheduled: list[tuple[_Seq, int]]) -> float:
        """KV connector work inside this step: loads of newly admitted remote-KV requests
        (each charged once) and saves of producer-side prefill chunks."""
        prof = self.profile
        ms = 0.0
        for seq, n in scheduled:
            if seq.load:
                ms += prof.kv_load_ms(seq.load)
                seq.load = 0
            if seq.save and seq.computed < seq.prompt:
                ms += prof.kv_save_ms(min(n, seq.prompt - seq.computed))
        return ms

    def _apply(self, scheduled: list[tuple[_Seq, int]], res: StepResult) -> None:
        dur_s = self._step_ms(scheduled, res) / 1000.0
        end = res.start_s + dur_s
        res.end_s = end
        self._busy_until = end
        st = self.stats
        st.num_steps_total += 1
        st.busy_s_total += dur_s
        st.iteration_tokens.observe(res.num_prefill_tokens + res.num_decode_tokens)
        kv = self.kv
        done = False
        for seq, n in scheduled:
            seq.computed += n
            while seq.held_units < len(seq.keys) and seq.computed >= (
                (seq.held_units + 1) * seq.unit_tokens
            ):
                kv.register(seq.keys[seq.held_units], seq.unit_blocks)
                seq.anon -= seq.unit_blocks
                seq.held_units += 1
            if seq.computed < seq.num_tokens:
                continue
            seq.out += 1
            seq.num_tokens += 1
            st.generation_tokens_total += 1
            res.tokens.append(seq.id)
            if seq.first_token_s is None:
                seq.first_token_s = end
                res.first_tokens.append(seq.id)
                self._count_prompt(seq, end)
            else:
                st.itl_s.observe(end - seq.last_token_s)
            seq.last_token_s = end
            if seq.out >= seq.max_tokens:
                res.finished.append(self._finish(seq, "length", end))
                done = True
        if done:
            self._running = [s for s in self._running if s.id in self._by_id]

    def _count_prompt(self, seq: _Seq, end: float) -> None:
        st = self.stats
        st.ttft_s.observe(end - seq.arrival_s)
        st.prompt_tokens_total += seq.prompt
        st.prompt_tokens_local_cache_hit += seq.cached
        st.prompt_tokens_external_kv_transfer += seq.external
        st.prompt_tokens_local_compute += seq.prompt - seq.cached - seq.external

    def _preempt(self, seq: _Seq) -> None:
        self.kv.release(seq.keys[: seq.held_units], seq.anon)
        seq.blocks = seq.anon = seq.held_units = seq.computed = 0
        seq.num_preemptions += 1
        self.stats.num_preemptions_total += 1
        self._waiting.appendleft(seq)
        self._blocked = False

    def _finish(self, seq: _Seq, reason: str, end: float) -> FinishedRequest:
        self.kv.release(seq.keys[: seq.held_units], seq.anon)
        seq.blocks = seq.anon = seq.held_units = 0
        del self._by_id[seq.id]
        self._blocked = False
        fin = FinishedRequest(
            request_id=seq.id,
            reason=reason,
            arrival_s=seq.arrival_s,
            scheduled_s=seq.scheduled_s,
            first_token_s=seq.first_token_s,
            finish_s=end,
            prompt_tokens=seq.prompt,
            output_tokens=seq.out,
            max_tokens=seq.max_tokens,
            cached_tokens=seq.cached,
            external_tokens=seq.external,
            num_preemptions=seq.num_preemptions,
        )
        self._record_finished(fin)
        return fin

    def _record_finished(self, fin: FinishedRequest) -> None:
        st = self.stats
        st.request_success_total[fin.reason] = st.request_success_total.get(fin.reason, 0) + 1
        if fin.reason == "abort":
            return
        st.e2e_s.observe(fin.e2e_s)
        if fin.scheduled_s is not None:
            st.queue_s.observe(fin.scheduled_s - fin.arrival_s)
            st.inference_s.observe(fin.finish_s - fin.scheduled_s)
            if fin.first_token_s is not None:
                st.prefill_s.observe(fin.first_token_s - fin.scheduled_s)
                st.decode_s.observe(fin.finish_s - fin.first_token_s)
        if fin.tpot_s is not None:
            st.tpot_s.observe(fin.tpot_s)
        st.request_prompt_tokens.observe(fin.prompt_tokens)
        st.request_generation_tokens.observe(fin.output_tokens)
        st.request_max_num_generation_tokens.observe(fin.max_tokens)
        st.params_max_tokens.observe(fin.max_tokens)
        st.params_n.observe(1)
        st.request_num_preemptions.observe(fin.num_preemptions)
        st.request_prefill_kv_computed_tokens.observe(
            fin.prompt_tokens - fin.cached_tokens - fin.external_tokens
        )

    # ---- fast-forward of pure-decode stretches ----
    def _fast_forward(self, start: float, horizon_s: float) -> StepResult | None:
        running = self._running
        b = len(running)
        if b > self.max_num_batched_tokens or (self._waiting and not self._blocked):
            return None
        k = 1 << 62
        ctx_sum = 0
        for seq in running:
            # a prompt whose last chunk is one token looks like a decode, but its step
            # yields the first token (TTFT): only a normal step records that
            if seq.computed + 1 != seq.num_tokens or seq.first_token_s is None:
                return None
            k = min(k, seq.max_tokens - seq.out)
            ctx_sum += seq.num_tokens
        if self._deferred:
            horizon_s = min(horizon_s, min(s.ready_s for s in self._deferred))
        k = self._kv_limited_steps(running, k)
        if k < 2:
            return None
        ctx0 = ctx_sum / b
        d0 = self.profile.decode_ms(b, ctx0) / 1000.0
        d1 = self.profile.decode_ms(b, ctx0 + k - 1) / 1000.0
        slope = (d1 - d0) / (k - 1)
        m = _steps_to_reach(d0, slope, horizon_s - start, k)
        if m < 2:
            return None
        return self._apply_fast_forward(start, m, d0, slope)

    def _kv_limited_steps(self, running: Iterable[_Seq], k: int) -> int:
        """Largest j <= k decode steps whose new blocks fit in the free+evictable pool."""
        avail = self.kv.available_blocks
        bs = self.block_size
        seqs = list(running)

        def need(j: int) -> int:
            return sum(max(0, -(-(s.computed + j) // bs) - s.blocks) for s in seqs)

        if need(k) <= avail:
            return k
        lo, hi = 0, k  # need(lo) fits, need(hi) does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if need(mid) <= avail:
                lo = mid
            else:
                hi = mid
        return lo

    def _apply_fast_forward(self, start: float, m: int, d0: float, slope: float) -> StepResult:
        running = self._running
        b = len(running)
        total_s = m * d0 + slope * m * (m - 1) / 2
        end = start + total_s
        first_end = start + d0
        st = self.stats
        bs = self.block_size
        new_blocks = 0
        res = StepResult(start_s=start, end_s=end, num_steps=m, num_decode_tokens=b * m)
        itl = st.itl_s
        for seq in running:
            need = -(-(seq.computed + m) // bs) - seq.blocks
            if need > 0:
                new_blocks += need
                seq.blocks += need
                seq.anon += need
            itl.observe(first_end - seq.last_token_s)
            seq.computed += m
            seq.out += m
            seq.num_tokens += m
            seq.last_token_s = end
            res.tokens.append(seq.id)
        if not self.kv.allocate(new_blocks):  # guaranteed by _kv_limited_steps
            raise RuntimeError("fast-forward KV accounting broke")
        itl.observe_linear(d0 + slope, slope, m - 1, weight=b)
        st.iteration_tokens.observe(b, weight=m)
        st.generation_tokens_total += b * m
        st.num_steps_total += m
        st.busy_s_total += total_s
        self._busy_until = end
        done = [s for s in running if s.out >= s.max_tokens]
        for seq in done:
            res.finished.append(self._finish(seq, "length", end))
        if done:
            self._running = [s for s in running if s.id in self._by_id]
        return res


def _steps_to_reach(d0: float, slope: float, span_s: float, k: int) -> int:
    """Smallest m <= k with sum_{j<m} (d0 + slope*j) >= span_s (the step crossing the
    horizon is included, so the engine never idles across an arrival)."""

    def total(m: int) -> float:
        return m * d0 + slope * m * (m - 1) / 2

    if total(k) < span_s:
        return k
    if abs(slope) < 1e-15:
        m = math.ceil(span_s / d0) if d0 > 0 else k
    else:
        a, bq = slope / 2, d0 - slope / 2
        disc = bq * bq + 4 * a * span_s
        m = math.ceil((-bq + math.sqrt(max(disc, 0.0))) / (2 * a)) if disc >= 0 else k
    m = max(1, min(k, m))
    while m < k and total(m) < span_s:
        m += 1
    while m > 1 and total(m - 1) >= span_s:
        m -= 1
    return m
