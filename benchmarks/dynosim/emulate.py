"""slaplane's replay with per-request stage times, and DynoSim 1.4.2's prefill hold.

``TracedDriver`` is the replay driver unchanged, recording for every P/D request when
its prefill was scheduled, when its prompt was computed, when the prefill worker let
it go (hand-off) and when the decode worker scheduled it: what a per-request join with
DynoSim's ``--report-jsonl`` needs.

``DynoHoldDriver`` adds the behaviour of DynoSim's (ai-dynamo 1.4.2) offline P/D replay
that makes its P/D TTFT so much worse than slaplane's under the same step tables: the
prefill-stage request is built with ``max_output_tokens = 1``, but the mocker's vLLM
scheduler replaces that with the trace's planned output length ("planned output token
count differs from max_output_tokens; using planned count requested=1 planned=N"), so
the prefill worker generates *every* output token before it hands the request to
decode. Decode passes on a prefill worker cost nothing, so on an idle worker this is
invisible; but each token needs one scheduler pass, and while other prompts are being
chunked every pass costs a whole prefill chunk (up to ``prefill_ms(8192)`` = 200 ms):
a finished prefill waits until the worker's queue drains. Fixed upstream in
ai-dynamo/dynamo PR #13052 ("fix(mocker): truncate disagg prefill output plan").
Here it is a separate, opt-in model for the comparison; slaplane's replay keeps the
one-token prefill that vLLM P/D runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from controlplane.profiles import Profile
from controlplane.replay.accounting import RunSummary
from controlplane.replay.cluster import Slot
from controlplane.replay.driver import ControlHook, ReplayConfig, ReplayDriver, RunResult, _Live
from controlplane.replay.runner import Experiment, run_once
from controlplane.replay.traces import Trace
from controlplane.schemas import Role, TenantSLA
from workers.sim import Engine, EngineConfig, FinishedRequest, SimRequest


@dataclass(slots=True)
class Stages:
    """Stage times (virtual seconds) of one P/D request in slaplane's replay."""

    prefill_worker: str = ""
    prefill_scheduled_s: float | None = None
    prompt_done_s: float | None = None
    """End of the prefill step that computed the last prompt token."""
    handoff_s: float | None = None
    """When the prefill worker released it (= ``prompt_done_s`` unless held)."""
    decode_scheduled_s: float | None = None
    first_token_s: float | None = None


class TracedDriver(ReplayDriver):
    """The replay driver, recording ``Stages`` per request id in ``self.stages``."""

    def __init__(
        self,
        cfg: ReplayConfig,
        trace: Trace,
        tenants: Sequence[str],
        slas: Mapping[str, TenantSLA],
        control: ControlHook | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.stages: dict[str, Stages] = {}
        super().__init__(cfg, trace, tenants, slas, control, progress)

    def _handoff(self, lv: _Live, pslot: Slot, fin: FinishedRequest, now_s: float) -> None:
        self.stages[fin.request_id] = Stages(
            prefill_worker=pslot.id,
            prefill_scheduled_s=fin.scheduled_s,
            prompt_done_s=fin.first_token_s,
            handoff_s=fin.finish_s,
        )
        super()._handoff(lv, pslot, fin, now_s)

    def _complete(self, lv: _Live, slot: Slot, fin: FinishedRequest) -> None:
        st = self.stages.setdefault(fin.request_id, Stages())
        st.decode_scheduled_s = fin.scheduled_s
        st.first_token_s = fin.first_token_s
        super()._complete(lv, slot, fin)


class _HoldingEngine(Engine):
    """A prefill engine that keeps a P/D request for its planned output (DynoSim 1.4.2),
    decoding for free (``decode_scale=0``: the mocker charges no decode time on a
    prefill worker)."""

    def __init__(self, profile: Profile, config: EngineConfig, planned: Mapping[str, int]) -> None:
        super().__init__(replace(profile, decode_scale=0.0), config)
        self.planned = planned

    def add_request(self, req: SimRequest, now_s: float) -> None:
        if req.remote_decode:
            req = replace(req, max_tokens=max(1, self.planned.get(req.request_id, 1)))
        super().add_request(req, now_s)


class DynoHoldDriver(TracedDriver):
    """``TracedDriver`` whose prefill workers hold requests as DynoSim 1.4.2's do."""

    def _add_slot(self, role: str, now_s: float, ready_s: float) -> Slot:
        slot = super()._add_slot(role, now_s, ready_s)
        if role == Role.PREFILL.value:
            planned = {str(r.index): r.output_tokens for r in self.trace.requests}
            slot.engine = _HoldingEngine(self.cfg.profile, self.cfg.engine, planned)
        return slot


def run_traced(
    exp: Experiment, policy: str, rate_scale: float, hold: bool = False
) -> tuple[RunSummary, RunResult, dict[str, Stages]]:
    """``controlplane.replay.runner.run_once`` with a ``TracedDriver`` (``hold``: a
    ``DynoHoldDriver``); returns the stage times too."""
    drivers: list[TracedDriver] = []

    def make(*args: Any) -> ReplayDriver:
        drivers.append((DynoHoldDriver if hold else TracedDriver)(*args))
        return drivers[-1]

    summary, res = run_once(exp, policy, rate_scale, driver=make)
    return summary, res, drivers[0].stages
