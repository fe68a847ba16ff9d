"""Capacity bound: the most requests any scheduler could serve within SLA on a cluster
shape, from the latency profile alone; replay reports put every policy against it.

It must be an upper bound in every shape, so each relaxation is optimistic (perfect
prefix cache, one pooled preemptive prefill server, clairvoyant drops, fluid decode)
and each GPU-ms charged is at most what the sim engine's step rule spends: a prefill
beside a decode step is charged only what it adds, the step's fixed cost being paid
once (``PrefillCosts``). The derivation (steps 1-10, named in the code), what each
relaxation gives away and what was tried and not used: ``docs/capacity-bound.md``.
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
    shared_prefill_ms: np.ndarray | None = None
    """GPU-ms of each request's prefill in the combined constraint: its cost beside a
    decode step, whose fixed cost the decode work already pays (None = ``prefill_ms``)."""


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
    mean_prefill_beside_decode_gpu_ms: float = 0.0
    """Mean prefill charge where a GPU may prefill beside its decode steps (step 8)."""

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
            "mean_prefill_beside_decode_gpu_ms": self.mean_prefill_beside_decode_gpu_ms,
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
        pf = b.prefill_ms if b.shared_prefill_ms is None else b.shared_prefill_ms
        met = min(met, _fluid_fits(pf + b.decode_ms, both * horizon))
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


@dataclass(frozen=True, slots=True)
class PrefillCosts:
    """Least GPU-ms and time any engine schedule spends on a prompt of ``u`` uncached
    tokens (steps 2, 3 and 8), from the step rule of ``workers/sim/engine.py``.

    A step that prefills ``T`` tokens lasts ``prefill_ms(T)`` alone and adds
    ``prefill_ms(T) - base_step_ms`` to a decode step (the fixed cost is paid once per
    step). A request's chunk of ``c`` of those tokens is charged its share ``c / T``:
    at least ``c x rate(c)``, ``rate(y)`` the least per-token cost of a step of
    ``T ≥ y`` tokens. A prompt is cut only when a step's token budget runs out, so all
    its chunks but the last are in steps of at least ``split = budget - max_num_seqs``
    prefill tokens: the charge is the least ``(u - y) x rate(split) + y x rate(y)``
    over the last chunk ``y``."""

    budget: int
    split: int
    step_ms: np.ndarray
    """``prefill_ms(T)`` for T = 0..budget (T = 0 priced as 1)."""
    alone: tuple[np.ndarray, np.ndarray]
    """Steps without decodes: (``rate(y)``, ``min over y' ≤ y of y' x (rate(y') -
    rate(split))``), indexed by y = 0..budget."""
    beside: tuple[np.ndarray, np.ndarray]
    """The same for what a prefill adds to a decode step."""

    @classmethod
    def of(cls, profile: Profile) -> PrefillCosts:
        budget = max(1, profile.max_num_batched_tokens)
        split = max(1, budget - profile.max_num_seqs)
        tokens = np.arange(budget + 1, dtype=np.float64)
        tokens[0] = 1.0
        step = np.array([profile.prefill_ms(t) for t in tokens.tolist()])

        def tables(per_token: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            rate = np.minimum.accumulate(per_token[::-1])[::-1]  # min over T ≥ y
            gain = np.arange(budget + 1) * (rate - rate[split])
            return rate, np.minimum.accumulate(gain)

        beside = np.maximum(step - profile.base_step_ms, 0.0)
        return cls(budget, split, step, tables(step / tokens), tables(beside / tokens))

    def _charge(self, u: int, tables: tuple[np.ndarray, np.ndarray]) -> float:
        rate, gain = tables
        return float(u * rate[self.split] + gain[min(u, self.budget)])

    def alone_ms(self, u: int) -> float:
        """GPU-ms of ``u`` tokens in steps that may run without decodes (step 3)."""
        return self._charge(u, self.alone)

    def beside_decode_ms(self, u: int) -> float:
        """GPU-ms ``u`` tokens add to steps that also decode (step 8)."""
        return self._charge(u, self.beside)

    def min_ttft_ms(self, u: int) -> float:
        """Least time from arrival to first token (step 2): the prompt's steps run one
        after another, so at least its ``alone_ms`` share of them, and at least ``k``
        steps that cut it (``split`` tokens or more each) plus the last chunk's step."""
        b = self.budget
        k_min = max(0, -(-(u - b) // b))
        k_max = max(k_min, -(-(u - 1) // b))
        steps = min(
            k * float(self.step_ms[self.split]) + float(self.step_ms[max(1, u - k * b)])
            for k in range(k_min, k_max + 1)
        )
        return max(steps, self.alone_ms(u))


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
    chunks = PrefillCosts.of(profile)
    per_token = _decode_cost_fn(profile)
    limit = min(profile.max_model_len, profile.kv_capacity_tokens)
    pf_cost: list[float] = []
    pf_beside: list[float] = []
    dc_cost: list[float] = []
    arrival: list[float] = []
    dc_slack: list[float] = []
    ttft_max = 0.0
    for r, u, sla in zip(reqs, uncached_tokens(reqs, block_tokens), slas, strict=True):
        if r.prompt_tokens + r.output_tokens > limit or chunks.min_ttft_ms(u) > sla.ttft_ms:
            continue
        ctx = r.prompt_tokens + r.output_tokens // 2
        # Round the context to 64 tokens so the memo stays small; cost is smooth in it.
        cost = per_token(float(sla.itl_ms), max(64, (ctx // 64) * 64))
        if cost is None:
            continue
        pf_cost.append(chunks.alone_ms(u))
        pf_beside.append(chunks.beside_decode_ms(u))
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
    mb = sum(pf_beside) / len(pf_beside)
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
            shared_prefill_ms=np.asarray(pf_beside)[order] if shared else None,
        )

    def rps(gpus: int, work_ms: float) -> float:
        return gpus * per_s / work_ms if work_ms > 0 else float("inf")

    if gpu_budget is not None or workers > 0:
        g = gpu_budget if gpu_budget is not None else workers
        # step 8: prefill alone at most as fast as a GPU prefills, and with decode
        # as fast as it prefills beside decode steps
        cap = rps(g, max(mp, mb + md))
        shape = f"{g} GPUs, free split" if gpu_budget is not None else f"{g} mixed"
        return Capacity(
            cap, cap, cap, feasible, tau, mp, md, g, shape, burst(g, g, True), base_rps,
            span_s, mb,
        )  # fmt: skip
    g = prefill + decode
    d_rps = rps(decode, md)
    if local_prefill and decode > 0:
        # step 9: decode work needs its M GPUs; the rest of all N + M can prefill (a
        # prefill GPU's step costs at least what it would add beside decodes)
        p_rps = rps(g, max(mp, mb + md))
        return Capacity(
            min(p_rps, d_rps), p_rps, d_rps, feasible, tau, mp, md, g,
            f"{prefill}P+{decode}D, local prefill", burst(g, decode, True, g), base_rps, span_s,
            mb,
        )  # fmt: skip
    p_rps = rps(prefill, mp)
    return Capacity(
        min(p_rps, d_rps), p_rps, d_rps, feasible, tau, mp, md, g,
        f"{prefill}P+{decode}D", burst(prefill, decode, False), base_rps, span_s, mb,
    )  # fmt: skip
