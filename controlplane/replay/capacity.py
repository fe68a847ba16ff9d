"""Capacity bound: the most requests/s a cluster could serve within SLA if
scheduling were perfect, from the latency profile alone.

Derivation (a fluid upper bound; every approximation is in the optimistic direction
except where noted):

1. Perfect prefix reuse: a request's cached prefix is every leading ``hash_id``
   block seen earlier in the trace (an infinite cache); uncached tokens
   ``u = max(1, prompt - cached)``.
2. Feasibility: a request can meet its SLA at all only if, alone on idle workers,
   ``prefill_ms(u) ≤ ttft_ms`` and ``decode_ms(1, prompt) ≤ itl_ms``. Infeasible
   requests count as misses for any scheduler; ``feasible_ratio`` is the share left.
3. Prefill work: a prefill GPU never beats its peak throughput
   ``τ = max_{t ≤ max_num_batched_tokens} t / prefill_ms(t)`` (a full chunked-prefill
   batch), so request *i* costs at least ``u_i / τ`` GPU-ms.
4. Decode work: at context ``c_i = prompt + output/2`` (the mean over its decode),
   the largest batch that keeps the step within the tenant's ITL is
   ``B* = max{B ≤ max_num_seqs, B·c_i ≤ KV capacity : decode_ms(B, c_i) ≤ itl_ms}``,
   the cheapest per-token cost that meets the SLA is ``decode_ms(B*, c_i) / B*``,
   and request *i* costs ``(output_i - 1)`` such tokens. (Batching only requests of
   equal context is the approximation here.)
5. Throughput: with N prefill and M decode GPUs, feasible requests per second are at
   most ``min(N / mean prefill cost, M / mean decode cost)``; with K mixed workers,
   ``K / mean(prefill + decode cost)`` (a chunked step costs about the sum of its
   parts); with a planner splitting G GPUs freely, ``G / mean(prefill + decode)``
   (the best split of step 5's first form).

A perfect scheduler at offered rate R therefore gets goodput ``min(f·R, C)`` with f
the feasible ratio and C the capacity, and keeps ≥ 90 % attainment up to
``R = C / 0.9`` (when f ≥ 0.9): that is the *fluid* bound (``fluid_bound_scale``).
It is loose by construction: it only looks at mean load, so a trace whose 1-s peaks
are 25x its mean (Azure) is judged as if arrivals were smooth.

Burst-aware bound (``burst_met``, ``sweep_bound_scale``, ``goodput_bound_rps``): the
most requests that could meet their SLA at a given rate scale, on the actual arrival
times. It keeps steps 1-2 (perfect cache, per-request feasibility) and adds:

6. Prefill as one pooled, preemptive server. Request *i* arrives at ``r_i`` and must
   have its prefill done by ``d_i = r_i + TTFT``; it needs ``u_i / τ`` GPU-ms, and
   the N prefill GPUs together are one server of speed N (a job may use all of them
   at once, be preempted and resumed for free). Every real schedule is a schedule of
   this server (a GPU never beats τ, the cache never beats step 1), so the most jobs
   the server can finish by their deadlines is an upper bound on the requests any
   router/scheduler can prefill in time. With one TTFT target for all requests the
   deadlines are ordered like the arrivals ("agreeable"), and the maximum number of
   on-time jobs is found exactly by Kise-Ibaraki-Mine (1978), Moore-Hodgson with
   release dates: take jobs in arrival order, run the kept ones first-come first-served
   and, when the new one would be late, drop the kept job whose removal makes the
   kept set finish earliest (exactly one drop restores feasibility). With several
   TTFT targets every deadline is relaxed to the largest one (more slack, still an
   upper bound, and agreeable again).
7. Decode as one pooled server of M GPUs: request *i* needs
   ``(output_i - 1) x cheapest per-token cost within its ITL`` (step 4) and cannot
   finish later than ``r_i + TTFT + (output_i - 1) x ITL``; the most requests whose
   decode work fits in M x (last such deadline - first arrival) — cheapest first —
   bounds the decode side (a fluid bound over the whole replay, so it is the looser
   half; on these traces prefill binds).
8. Mixed workers (K of role ``both``) or a free split of G GPUs: each pool gets all
   K (G) GPUs — each a relaxation — and prefill + decode work together must also
   fit in K (G) x horizon.
9. A P/D cluster (N prefill + M decode) where the router may prefill on a decode
   worker (conditional disaggregation, ``routers/local_prefill.py``; the ``sla``
   policy's default): prefill gets all N + M GPUs, decode its M, and both together
   must fit in (N + M) x horizon. Without it (``local_prefill=False``) prefill gets
   its N only; that tighter bound is invalid for a policy that prefills locally,
   which is why the replay uses the looser one whenever any policy may.

A request meets its SLA only if it is in both the prefill and the decode sets, so
``min(prefill on time, decode fits)`` bounds the count; attainment bound = that / n.
The sweep bound is the highest rate scale with bound attainment ≥ 90 %, found by
bisection as ``--sweep-rate`` does. What the relaxations give away (why a real
scheduler stays below it): per-worker queues instead of one pooled server, a request
prefilled at the speed of N GPUs, every cache hit that any worker ever saw, decode
starting at arrival, no KV-capacity or max_num_seqs limits on prefill, and
clairvoyance (step 6 drops the requests that cost most, knowing every later arrival).

10. Online reference (``online_met``, ``online_reference_scale``; an *estimate*, not a
    bound): the same inputs, but prefill on the prefill-capable GPUs as separate
    servers (one GPU per request, peak τ), each arrival sent to the GPU that frees
    first and admitted only if it then finishes by arrival + TTFT, else dropped at
    once — a router that knows every request's size and the exact queues but not
    the future. Its kept jobs are a schedule of the step-6 server, so it never
    exceeds the bound; the gap bound → reference is what clairvoyance is worth, the
    gap reference → a policy is what the replayed system loses (per-engine chunking
    into 8k-token steps at 41 instead of 48 tok/ms, decode interference, imperfect
    admission, real cache), not looseness of the bound.

Checked and *not* used, because they are not provably valid or do not tighten it:

* A TPOT-aware limit on decode-GPU prefill (prefill at most
  ``τ_itl = max_t t / step(t)`` over chunks whose mixed step meets the ITL while the
  GPU has decode streams). Invalid as stated: the SLA is on each request's *mean*
  TPOT (``accounting.py``), so a long step can be paid for by shorter ones. The valid
  form — every stream's steps sum to at most ``(output - 1) x ITL``, i.e.
  ``Σ_steps batch x duration ≤ Σ_i (output_i - 1) x ITL_i`` — caps decode-active time
  from above, never from below, so beyond the decode work already charged in steps
  8-9 it removes no prefill capacity. Numerically it would not matter either: τ peaks
  at a 1,536-token chunk (32 ms), so with one decode stream τ_itl / τ is 0.996 at a
  50 ms ITL and 0.977 at 25 ms (h100 profile); larger batches lose more only through
  their decode time, which step 9 already counts.
* A per-request speed cap (one GPU per prefill) on the pooled server: the exact
  Kise-Ibaraki-Mine count no longer applies (parallel machines with release dates is
  NP-hard), and on these traces it could not move the bound much — the online
  reference on *separate* GPUs already gets 72-93 % of it.
* A cache-capacity-aware credit: a valid one exists (each hit needs its block held
  in the union of all workers' KV from ``r_prev + TTFT`` to ``r_i`` at least, and the
  most such holding intervals with ≤ K blocks at a time is Belady's count), but it
  bounds only the total hits, not which request gets them, so it enters as a fluid
  constraint over the horizon; on the Mooncake trace (2P+2D, local prefill, rate
  scales 2-20) it never bound where the step-6 count did.
* The cached-prefix attention cost (``prefill_with_prefix`` rows): in the step model a
  chunk below the profile's grid pays almost none of it, so the cheapest chunking of a
  request depends on what else shares its steps; a valid per-request charge would
  have to follow the engine's chunking rule, so none is made (optimistic, valid).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from controlplane.profiles import Profile
from controlplane.replay.traces import TraceRequest
from controlplane.schemas import TenantSLA


@dataclass(frozen=True, slots=True)
class BurstInputs:
    """Per-request numbers of the burst-aware bound (feasible requests only, in arrival
    order; arrival at rate scale 1, in ms)."""

    n: int
    """All requests of the trace (the attainment denominator)."""
    arrival_ms: np.ndarray
    prefill_ms: np.ndarray
    """Pooled-server GPU-ms of each request's prefill (``u / τ``)."""
    prefill_slack_ms: float
    """Deadline - arrival on the prefill server (the largest TTFT target)."""
    decode_ms: np.ndarray
    """GPU-ms of each request's decode at its cheapest in-SLA per-token cost."""
    decode_slack_ms: np.ndarray
    """Latest finish of its decode - arrival (TTFT + (output - 1) x ITL)."""
    prefill_gpus: int
    decode_gpus: int
    shared: bool
    """Prefill and decode share GPUs (mixed workers, a free split, or local prefill)."""
    shared_gpus: int = 0
    """GPUs the combined prefill + decode work must fit on when ``shared``."""


@dataclass(frozen=True, slots=True)
class Capacity:
    capacity_rps: float
    prefill_rps: float
    decode_rps: float
    feasible_ratio: float
    peak_prefill_tokens_per_ms: float
    mean_prefill_gpu_ms: float
    mean_decode_gpu_ms: float
    gpus: int
    shape: str
    burst: BurstInputs | None = field(default=None, repr=False, compare=False)
    base_rps: float = 0.0
    """Offered rate of the trace at scale 1 (requests / first-to-last arrival span)."""
    span_s: float = 0.0

    def fluid_bound_scale(self, base_rps: float, target: float = 0.9) -> float:
        """Highest rate scale the fluid (mean-load) bound allows at ``target``."""
        if self.feasible_ratio < target or base_rps <= 0:
            return 0.0
        return self.capacity_rps / (target * base_rps)

    def burst_met(self, rate_scale: float) -> int:
        """Most requests any scheduler could serve within SLA at ``rate_scale``
        (steps 6-8); the fluid count when built without per-request inputs."""
        b = self.burst
        if b is None:
            return 0
        return _burst_met(b, rate_scale)

    def burst_attainment(self, rate_scale: float) -> float | None:
        b = self.burst
        return None if b is None or b.n == 0 else self.burst_met(rate_scale) / b.n

    def goodput_bound_rps(self, rate_scale: float) -> float | None:
        """Burst-aware goodput bound at ``rate_scale``: most in-SLA requests / offered span."""
        if self.burst is None or self.span_s <= 0:
            return None
        return self.burst_met(rate_scale) / (self.span_s / rate_scale)

    def sweep_bound_scale(self, base_rps: float, target: float = 0.9) -> float:
        """Highest rate scale at which a perfect scheduler still meets ``target``:
        burst-aware (bisection on ``burst_attainment``) when per-request inputs are
        there, else the fluid bound."""
        if self.burst is None:
            return self.fluid_bound_scale(base_rps, target)
        return burst_bound_scale(self, target)

    def online_met(self, rate_scale: float) -> int:
        """Step 10 (an estimate, not a bound): requests an online router would keep."""
        b = self.burst
        return 0 if b is None else _burst_met(b, rate_scale, online=True)

    def online_reference_scale(self, target: float = 0.9) -> float:
        """Highest rate scale at which the step-10 online reference keeps ``target``;
        ≤ ``sweep_bound_scale`` up to the bisection's precision. 0 without inputs."""
        return burst_bound_scale(self, target, online=True) if self.burst is not None else 0.0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "capacity_rps": self.capacity_rps,
            "prefill_rps": self.prefill_rps,
            "decode_rps": self.decode_rps,
            "feasible_ratio": self.feasible_ratio,
            "peak_prefill_tokens_per_ms": self.peak_prefill_tokens_per_ms,
            "mean_prefill_gpu_ms": self.mean_prefill_gpu_ms,
            "mean_decode_gpu_ms": self.mean_decode_gpu_ms,
            "gpus": self.gpus,
            "shape": self.shape,
            "fluid_bound_rate_scale": self.fluid_bound_scale(self.base_rps),
        }
        if self.burst is not None:
            scale = self.sweep_bound_scale(self.base_rps)
            out["burst"] = {
                "bound_rate_scale": scale,
                "attainment_at_1x": self.burst_attainment(1.0),
                "goodput_bound_rps_at_1x": self.goodput_bound_rps(1.0),
                "goodput_bound_rps_at_bound": self.goodput_bound_rps(scale) if scale else 0.0,
                "online_reference_rate_scale": self.online_reference_scale(),
            }
        return out


def _prefill_on_time(arrival: np.ndarray, work: np.ndarray, slack: float) -> int:
    """Most jobs a single preemptive server finishes by ``arrival + slack`` (common
    slack: agreeable dates; Kise-Ibaraki-Mine). ``arrival`` sorted, ``work`` in the
    same time unit. Only the kept jobs since the last moment the kept schedule started
    a job at its own release (the critical segment) are held: removing an earlier one
    can never make the segment finish sooner."""
    kept = 0
    seg_r: list[float] = []
    seg_p: list[float] = []
    c = -np.inf
    eps = 1e-9
    for r, p in zip(arrival.tolist(), work.tolist(), strict=True):
        if r >= c:  # idle before it: a new critical segment
            seg_r, seg_p, c = [r], [p], r + p
        else:
            seg_r.append(r)
            seg_p.append(p)
            c += p
        kept += 1
        if c <= r + slack + eps:
            continue
        # one job must go: the one whose removal lets the segment finish earliest
        rr = np.asarray(seg_r)
        pp = np.asarray(seg_p)
        t = rr + np.cumsum(pp[::-1])[::-1]  # completion = max_k r_k + sum_{l >= k} p_l
        k = len(t)
        pre = np.full(k, -np.inf)
        if k > 1:
            pre[1:] = np.maximum.accumulate(t[:-1])
        suf = np.full(k, -np.inf)
        if k > 1:
            suf[:-1] = np.maximum.accumulate(t[::-1])[::-1][1:]
        after = np.maximum(pre - pp, suf)
        best = float(after.min())
        # ties: drop the longest (keeps the most slack for later jobs)
        m = int(np.flatnonzero(after <= best + eps)[np.argmax(pp[after <= best + eps])])
        del seg_r[m], seg_p[m]
        kept -= 1
        if not seg_r:
            c = -np.inf
            continue
        rr = np.asarray(seg_r)
        pp = np.asarray(seg_p)
        t = rr + np.cumsum(pp[::-1])[::-1]
        c = float(t.max())
        start = int(np.flatnonzero(t >= c - eps)[-1])  # last critical job: segment start
        if start:
            del seg_r[:start], seg_p[:start]
    return kept


def _online_admit(arrival: np.ndarray, work: np.ndarray, slack: float, gpus: int) -> int:
    """Jobs an online router keeps on ``gpus`` separate servers: each arrival goes to
    the server that frees first, FCFS, and is admitted only if it finishes by
    ``arrival + slack`` (else dropped at once). ``work`` is one-server time. Not a
    bound: a schedule of the pooled server, so never above ``_prefill_on_time``."""
    free = [-np.inf] * max(gpus, 1)
    kept = 0
    eps = 1e-9
    for r, p in zip(arrival.tolist(), work.tolist(), strict=True):
        k = min(range(len(free)), key=free.__getitem__)
        end = max(free[k], r) + p
        if end <= r + slack + eps:
            free[k] = end
            kept += 1
    return kept


def _fluid_fits(work: np.ndarray, budget: float) -> int:
    """Most jobs whose total ``work`` fits in ``budget`` (cheapest first)."""
    if budget <= 0:
        return int((work <= 0).sum())
    return int(np.searchsorted(np.cumsum(np.sort(work)), budget, side="right"))


def _burst_met(b: BurstInputs, rate_scale: float, online: bool = False) -> int:
    if len(b.arrival_ms) == 0:
        return 0
    arr = b.arrival_ms / rate_scale
    if online:  # step 10: the online reference, not a bound
        pre = _online_admit(arr, b.prefill_ms, b.prefill_slack_ms, b.prefill_gpus)
    else:
        pre = _prefill_on_time(arr, b.prefill_ms / max(b.prefill_gpus, 1), b.prefill_slack_ms)
    horizon = float((arr + b.decode_slack_ms).max() - arr[0])
    dec = _fluid_fits(b.decode_ms, b.decode_gpus * horizon)
    met = min(pre, dec)
    if b.shared:
        both = b.shared_gpus or b.decode_gpus
        met = min(met, _fluid_fits(b.prefill_ms + b.decode_ms, both * horizon))
    return met


def burst_bound_scale(
    cap: Capacity,
    target: float = 0.9,
    precision: float = 0.01,
    max_scale: float = 1024.0,
    online: bool = False,
) -> float:
    """Highest rate scale with burst-bound attainment ≥ ``target`` (geometric bracket,
    then bisection to ``precision`` relative; 0 when even a near-idle trace fails).
    ``online``: the same search on the step-10 online reference (an estimate)."""
    b = cap.burst
    if b is None or b.n == 0 or cap.feasible_ratio < target:
        return 0.0

    def ok(s: float) -> bool:
        return _burst_met(b, s, online) / b.n >= target

    lo, hi = 0.0, 1.0
    while ok(hi):
        lo, hi = hi, hi * 2.0
        if hi > max_scale:
            return lo
    if lo == 0.0:
        lo = hi / 2.0
        while not ok(lo):
            hi, lo = lo, lo / 2.0
            if lo < 1e-6:
                return 0.0
    while (hi - lo) / lo > precision:
        mid = (lo + hi) / 2.0
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


def peak_prefill_tokens_per_ms(profile: Profile) -> float:
    budget = profile.max_num_batched_tokens
    pts = [t for t in profile.prefill_tokens if t <= budget] + [float(budget)]
    return max(t / profile.prefill_ms(t) for t in pts if t > 0)


def uncached_tokens(reqs: Sequence[TraceRequest], block_tokens: int) -> list[int]:
    """Step 1: tokens left to prefill with an infinite prefix cache shared by all."""
    seen: set[int] = set()
    out: list[int] = []
    for r in reqs:
        hit = 0
        if block_tokens > 0:
            for h in r.hash_ids:
                if h not in seen:
                    break
                hit += 1
            seen.update(r.hash_ids)
        out.append(max(1, r.prompt_tokens - hit * block_tokens))
    return out


def _decode_cost_fn(profile: Profile) -> Any:
    kv = profile.kv_capacity_tokens
    max_b = profile.max_num_seqs

    @lru_cache(maxsize=65536)
    def per_token_ms(itl_ms: float, ctx: int) -> float | None:
        """Step 4: cheapest per-token decode cost within ``itl_ms`` at context ``ctx``."""
        if profile.decode_ms(1, ctx) > itl_ms:
            return None
        hi_b = max(1, min(max_b, kv // max(ctx, 1)))
        lo, hi = 1, hi_b
        while lo < hi:  # largest B with decode_ms(B, ctx) ≤ itl_ms (monotone in B)
            mid = (lo + hi + 1) // 2
            if profile.decode_ms(mid, ctx) <= itl_ms:
                lo = mid
            else:
                hi = mid - 1
        return profile.decode_ms(lo, ctx) / lo

    return per_token_ms


def capacity_bound(
    reqs: Sequence[TraceRequest],
    slas: Sequence[TenantSLA],
    profile: Profile,
    *,
    block_tokens: int = 0,
    prefill: int = 0,
    decode: int = 0,
    workers: int = 0,
    gpu_budget: int | None = None,
    local_prefill: bool = True,
) -> Capacity:
    """Steps 1-9 for the given cluster shape; ``gpu_budget`` = free split (planner);
    ``local_prefill``: decode workers of a P/D cluster may prefill (step 9)."""
    if len(reqs) != len(slas) or not reqs:
        raise ValueError("need one SLA per request and at least one request")
    tau = peak_prefill_tokens_per_ms(profile)
    per_token = _decode_cost_fn(profile)
    limit = min(profile.max_model_len, profile.kv_capacity_tokens)
    pf_cost: list[float] = []
    dc_cost: list[float] = []
    arrival: list[float] = []
    dc_slack: list[float] = []
    ttft_max = 0.0
    for r, u, sla in zip(reqs, uncached_tokens(reqs, block_tokens), slas, strict=True):
        if r.prompt_tokens + r.output_tokens > limit or profile.prefill_ms(u) > sla.ttft_ms:
            continue
        ctx = r.prompt_tokens + r.output_tokens // 2
        # Round the context to 64 tokens so the memo stays small; cost is smooth in it.
        cost = per_token(float(sla.itl_ms), max(64, (ctx // 64) * 64))
        if cost is None:
            continue
        pf_cost.append(u / tau)
        dc_cost.append(max(0, r.output_tokens - 1) * cost)
        arrival.append(r.arrival_s * 1000.0)
        dc_slack.append(sla.ttft_ms + max(0, r.output_tokens - 1) * sla.itl_ms)
        ttft_max = max(ttft_max, sla.ttft_ms)
    n = len(reqs)
    feasible = len(pf_cost) / n
    span_s = max(r.arrival_s for r in reqs) - min(r.arrival_s for r in reqs)
    base_rps = n / span_s if span_s > 0 else 0.0
    if not pf_cost:
        return Capacity(
            0.0, 0.0, 0.0, 0.0, tau, 0.0, 0.0, 0, "none feasible", None, base_rps, span_s
        )
    mp = sum(pf_cost) / len(pf_cost)
    md = sum(dc_cost) / len(dc_cost)
    per_s = 1000.0
    order = np.argsort(np.asarray(arrival), kind="stable")

    def burst(p_gpus: int, d_gpus: int, shared: bool, shared_gpus: int = 0) -> BurstInputs:
        return BurstInputs(
            n=n,
            arrival_ms=np.asarray(arrival)[order],
            prefill_ms=np.asarray(pf_cost)[order],
            prefill_slack_ms=ttft_max,
            decode_ms=np.asarray(dc_cost)[order],
            decode_slack_ms=np.asarray(dc_slack)[order],
            prefill_gpus=p_gpus,
            decode_gpus=d_gpus,
            shared=shared,
            shared_gpus=shared_gpus,
        )

    if gpu_budget is not None or workers > 0:
        g = gpu_budget if gpu_budget is not None else workers
        cap = g * per_s / (mp + md)
        shape = f"{g} GPUs, free split" if gpu_budget is not None else f"{g} mixed"
        return Capacity(
            cap, cap, cap, feasible, tau, mp, md, g, shape, burst(g, g, True), base_rps, span_s
        )
    g = prefill + decode
    d_rps = decode * per_s / md if md > 0 else float("inf")
    if local_prefill and decode > 0:
        # step 9: decode work needs its M GPUs; the rest of all N + M can prefill
        p_rps = g * per_s / (mp + md) if mp + md > 0 else float("inf")
        return Capacity(
            min(p_rps, d_rps), p_rps, d_rps, feasible, tau, mp, md, g,
            f"{prefill}P+{decode}D, local prefill", burst(g, decode, True, g), base_rps, span_s,
        )  # fmt: skip
    p_rps = prefill * per_s / mp if mp > 0 else float("inf")
    return Capacity(
        min(p_rps, d_rps), p_rps, d_rps, feasible, tau, mp, md, g,
        f"{prefill}P+{decode}D", burst(prefill, decode, False), base_rps, span_s,
    )  # fmt: skip
