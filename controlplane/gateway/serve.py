"""Per-request bookkeeping: the outcome being built, and judging it when it ends.

``RequestJudge.finish`` is the one place a request is measured: histograms,
SLA met/missed per slo, outcome counter, and the ``RequestRecord`` handed to the
batched recorder. Rejected and failed requests count as SLA misses (DESIGN.md
goodput), so shedding load can never make attainment look better.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from controlplane.errors import RateLimited, SlaplaneError
from controlplane.gateway.metrics import GatewayMetrics
from controlplane.gateway.recorder import RequestRecorder
from controlplane.gateway.relay import Timings
from controlplane.schemas import DEFAULT_TENANT, RequestRecord, TenantSLA


@dataclass(slots=True)
class Outcome:
    request_id: str
    arrival_ms: int
    model: str = ""
    tenant: str = DEFAULT_TENANT
    label_tenant: str = DEFAULT_TENANT
    sla: TenantSLA | None = None
    prompt_tokens: int = 0
    predicted_ttft_ms: float | None = None
    prefill_worker: str = ""
    decode_worker: str = ""
    queued_s: float | None = None
    queue_ms: float | None = None
    done: bool = False
    drain_s: float = 0.0
    """Predicted queue drain on its first worker when it was admitted."""


class RequestJudge:
    def __init__(self, metrics: GatewayMetrics, recorder: RequestRecorder, cluster: str) -> None:
        self.m = metrics
        self.recorder = recorder
        self.cluster = cluster
        self.unknown_sla = TenantSLA(tenant=DEFAULT_TENANT)
        """Judges a refusal that came before the tenant's SLA was known (the tenant directory's
        store is down: 503 ``store_unavailable``); a refusal misses every SLO whatever the
        targets, so it counts like any other one (under the ``default`` tenant label)."""

    def failed(self, out: Outcome, t: Timings, e: SlaplaneError) -> None:
        sla = out.sla or self.unknown_sla
        if isinstance(e, RateLimited) or e.status == 429:
            self.m.rejections.labels(self.cluster, out.model or "", out.label_tenant, e.code).inc()
            self.finish(out, t, "rejected", reason=e.code, sla=sla)
        elif e.status < 500:
            self.finish(out, t, "invalid", reason=e.code, judge=False)
        else:
            self.finish(out, t, "error", reason=e.code, sla=sla)

    def finish(
        self,
        out: Outcome,
        t: Timings,
        outcome: str,
        *,
        reason: str = "",
        judge: bool = True,
        sla: TenantSLA | None = None,
    ) -> None:
        """``sla`` (default: the request's own) is what it is judged against."""
        if out.done:
            return
        out.done = True
        end = time.perf_counter()
        mdl, ten = out.model or "", out.label_tenant
        m = self.m
        ch = m.for_request(mdl, ten)
        e2e_s = end - t.t0
        ttft_s = t.first_token_s - t.t0 if t.first_token_s is not None else None
        tpot_s = t.tpot_s()
        if outcome == "ok" or t.first_token_s is not None:
            ch.e2e.observe(e2e_s)
        if ttft_s is not None:
            ch.ttft.observe(ttft_s)
        if t.gaps_s:
            h = ch.itl
            for g in t.gaps_s:
                h.observe(g)
        if tpot_s is not None:
            ch.tpot.observe(tpot_s)
        m.outcome(ch, mdl, ten, outcome).inc()
        if not judge:
            return  # malformed requests are not traffic: no SLA result, no record
        ttft_ms = ttft_s * 1000 if ttft_s is not None else None
        tpot_ms = tpot_s * 1000 if tpot_s is not None else None
        e2e_ms = e2e_s * 1000
        met: bool | None = None
        sla = sla or out.sla
        if sla is not None:
            j = sla.judge(ttft_ms, tpot_ms, e2e_ms, outcome)
            met = j.met
            for slo, res in (("ttft", j.ttft), ("itl", j.itl), ("all", j.met)):
                m.sla_result(ch, mdl, ten, slo, "met" if res else "missed").inc()
        self.recorder.add(
            RequestRecord(
                request_id=out.request_id,
                tenant=out.tenant,
                model=mdl,
                arrival_ms=out.arrival_ms,
                outcome=outcome,
                prefill_worker=out.prefill_worker,
                decode_worker=out.decode_worker,
                prompt_tokens=t.usage_prompt_tokens or out.prompt_tokens,
                output_tokens=t.output_tokens,
                cached_tokens=t.cached_tokens or 0,
                predicted_ttft_ms=out.predicted_ttft_ms,
                ttft_ms=ttft_ms,
                tpot_ms=tpot_ms,
                e2e_ms=e2e_ms,
                queue_ms=out.queue_ms,
                sla_met=met,
                reason=reason,
            )
        )
