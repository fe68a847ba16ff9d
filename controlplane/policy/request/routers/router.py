"""The Router: picks the pools for a request's model and runs one Profile per role.

Disaggregated when the model has both a prefill and a decode pool with a usable
worker (prefill worker via the prefill profile, decode worker via the decode
profile); one hop on a ``both`` worker otherwise, or, with only half a pair left,
one hop on whatever half remains (recorded as a fallback). ``exclude`` removes workers
outright (a retry must not go back to the worker that just failed); everything
softer (stale, draining, open breaker) is the health filter's job, with fallback.

With a ``LocalPrefill`` rule (conditional disaggregation, ``local_prefill.py``) a P/D
decision may become ``mode="local"``: one hop on a decode worker that computes the
prompt itself (``prefill`` None), when the rule predicts that helps.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

from controlplane.policy.predictor import (
    ItlQuery,
    LatencyPredictor,
    ProfilePredictor,
    TtftQuery,
    predicted_batch,
    queued_prompt_tokens,
)
from controlplane.policy.request.prefix import PrefixIndex
from controlplane.policy.request.routers.base import Profile
from controlplane.policy.request.routers.local_prefill import LocalChoice, LocalPrefill
from controlplane.policy.types import ClusterView, PickResult, RouteDecision, RouteRequest
from controlplane.schemas import Role

_PREFILL, _DECODE, _BOTH = Role.PREFILL.value, Role.DECODE.value, Role.BOTH.value
"""Pool keys' role parts (an enum's ``.value`` costs a property call per request)."""


def _usable(ids: list[str], exclude: Collection[str]) -> list[str]:
    """A pool without the excluded workers (the pool list itself when none are)."""
    return [w for w in ids if w not in exclude] if exclude else ids


class Router:
    def __init__(
        self,
        policy: str,
        *,
        prefill: Profile,
        decode: Profile,
        unified: Profile,
        predictor: LatencyPredictor,
        index: PrefixIndex,
        block_tokens: int = 16,
        assumed_prompt_tokens: int = 512,
        local: LocalPrefill | None = None,
    ) -> None:
        self.policy = policy
        self.prefill = prefill
        self.decode = decode
        self.unified = unified
        self.predictor = predictor
        self.index = index
        self.block_tokens = block_tokens
        self.assumed_prompt_tokens = assumed_prompt_tokens
        self.local = local if local is not None and local.mode != "never" else None
        """Conditional disaggregation rule; None = always P/D when a pair exists."""

    def route(
        self,
        req: RouteRequest,
        view: ClusterView,
        now_s: float,
        exclude: Collection[str] = (),
    ) -> RouteDecision | None:
        """Where to send ``req``; None when the model has no usable worker at all."""
        pools, model = view.pools, req.model
        pf = _usable(pools.get((model, _PREFILL), []), exclude)
        dc = _usable(pools.get((model, _DECODE), []), exclude)
        if pf and dc:
            p = self.prefill.pick(req, pf, view, now_s)
            d = self.decode.pick(req, dc, view, now_s)
            assert p.worker is not None and d.worker is not None
            dec = self._decision("pd", p, d, req, view)
            lp = self.local
            if lp is None:
                return dec
            choice = lp.decide(req, view, dec, d.scores or dc, pf, now_s)
            return dec if choice is None else self._local(choice, d, req, view)
        both = _usable(pools.get((model, _BOTH), []), exclude)
        fallback: tuple[str, ...] = ()
        if not both:
            # half a P/D pair: a decode (or prefill) worker can still serve the whole
            # request in one hop by computing the prompt itself; record the fallback.
            both = dc or pf
            fallback = ("router:no_pd_pair",)
        if both:
            u = self.unified.pick(req, both, view, now_s)
            assert u.worker is not None
            dec = self._decision("unified", None, u, req, view)
            return replace(dec, fallbacks=dec.fallbacks + fallback) if fallback else dec
        return None

    def observe(
        self, req: RouteRequest, decision: RouteDecision, view: ClusterView, now_s: float
    ) -> None:
        """Record where the prompt's blocks now live (prefill and decode both hold them)
        and, with a local prefill rule, what was dispatched where. ``view``/``now_s``:
        the state at dispatch (a held request is dispatched later than it was routed)."""
        if req.block_hashes:
            for w in decision.workers():
                self.index.record(w, req.block_hashes)
        if self.local is not None and decision.mode in ("pd", "local"):
            self.local.commit(req, decision, view, now_s)

    def _local(
        self, choice: LocalChoice, d: PickResult, req: RouteRequest, view: ClusterView
    ) -> RouteDecision:
        """The one-hop decision on the decode worker the local prefill rule chose, with
        the rule's own predictions (else the Router's, as for any one-hop decision)."""
        ttft, itl = choice.predicted_ttft_ms, choice.predicted_itl_ms
        if ttft is None or itl is None:
            pick = PickResult(choice.worker, d.scores, d.fallbacks, d.reason)
            dec = self._decision("local", None, pick, req, view)
            ttft, itl = dec.predicted_ttft_ms, dec.predicted_itl_ms
        return RouteDecision(
            policy=self.policy,
            mode="local",
            decode=choice.worker,
            prefill=None,
            predicted_ttft_ms=ttft,
            predicted_itl_ms=itl,
            cached_tokens=choice.cached_tokens,
            fallbacks=d.fallbacks,
            reason=f"{d.reason}; {choice.reason}",
        )

    def _decision(
        self,
        mode: str,
        p: PickResult | None,
        d: PickResult,
        req: RouteRequest,
        view: ClusterView,
    ) -> RouteDecision:
        assert d.worker is not None
        first = p.worker if p is not None and p.worker is not None else d.worker
        cached = 0
        if req.block_hashes:
            cached = min(
                req.prompt_tokens,
                self.index.overlap(req.block_hashes).get(first, 0) * self.block_tokens,
            )
        fs, ds = view.workers[first], view.workers[d.worker]
        queued = queued_prompt_tokens(fs, view, self.assumed_prompt_tokens)
        batch = predicted_batch(ds, view)
        ctx = req.prompt_tokens + req.max_tokens // 2
        pred = self.predictor
        if type(pred) is ProfilePredictor:  # ttft_ms / itl_ms without the query objects
            ttft = pred.ttft_of(fs, req.prompt_tokens, cached, queued)
            itl = pred.itl_of(ds, batch, ctx)
        else:
            ttft = pred.ttft_ms(TtftQuery(fs, req.prompt_tokens, cached, queued))
            itl = pred.itl_ms(ItlQuery(ds, batch, ctx))
        if mode == "pd":
            ttft += itl  # the decode worker's first step after the KV arrives
        fallbacks = (p.fallbacks if p else ()) + d.fallbacks
        reason = "; ".join(r.reason for r in (p, d) if r is not None)
        return RouteDecision(
            policy=self.policy,
            mode=mode,
            decode=d.worker,
            prefill=p.worker if p is not None else None,
            predicted_ttft_ms=ttft,
            predicted_itl_ms=itl,
            cached_tokens=cached,
            fallbacks=fallbacks,
            reason=reason,
        )
