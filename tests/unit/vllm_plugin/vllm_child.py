"""Run by ``test_stat_logger_vllm.py`` with the vLLM venv's python (not collected by pytest).

Drives ``SlaplaneStatLogger`` exactly as vLLM 0.32 does (loaded through vLLM's own
plugin loader, built with a real ``VllmConfig``, fed real ``SchedulerStats`` and
``IterationStats``) and prints one JSON object with what it observed.
Usage: python vllm_child.py REDIS_URL CLUSTER DEAD_REDIS_URL
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any


def _stats(step: int) -> tuple[Any, Any]:
    from vllm.v1.engine import FinishReason
    from vllm.v1.metrics.stats import (
        FinishedRequestStats,
        IterationStats,
        PrefillStats,
        PrefixCacheStats,
        SchedulerStats,
    )

    pcs = PrefixCacheStats()
    pcs.record(num_tokens=256, num_hits=128, preempted=False)
    sched = SchedulerStats(
        num_running_reqs=3,
        num_waiting_reqs=2,
        num_skipped_waiting_reqs=1,
        kv_cache_usage=0.25,
        prefix_cache_stats=pcs,
    )
    it = IterationStats()
    pre = PrefillStats()
    pre.set(num_prompt_tokens=300, num_local_cached_tokens=128, num_external_cached_tokens=100)
    it.prompt_token_stats.update_from_output(pre)
    it.num_generation_tokens = 4
    it.num_preempted_reqs = 1 if step == 0 else 0
    it.time_to_first_tokens_iter.append(0.010 + step * 0.001)
    it.inter_token_latencies_iter.extend([0.002, 0.003, 0.004])
    it.finished_requests.append(
        FinishedRequestStats(finish_reason=FinishReason.LENGTH, num_prompt_tokens=300)
    )
    return sched, it


def _until(cond: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _config(kv_role: str) -> Any:
    from vllm.config import KVTransferConfig, VllmConfig

    cfg = VllmConfig(
        kv_transfer_config=KVTransferConfig(kv_connector="ExampleConnector", kv_role=kv_role)
    )
    cfg.cache_config.num_gpu_blocks = 1024
    return cfg


def main() -> None:
    redis_url, cluster, dead_url = sys.argv[1:4]
    import redis
    from vllm.v1.metrics.loggers import StatLoggerBase, load_stat_logger_plugin_factories

    out: dict[str, Any] = {}
    factories = load_stat_logger_plugin_factories()
    out["factories"] = [f"{f.__module__}:{f.__qualname__}" for f in factories]
    (cls,) = [f for f in factories if f.__module__.startswith("workers.vllm_plugin")]
    out["is_stat_logger"] = issubclass(cls, StatLoggerBase)

    # 1. disabled (the default): no thread, record is a no-op
    os.environ.pop("SLAPLANE_PLUGIN_ENABLED", None)
    off = cls(_config("kv_producer"), 0)
    off.record(*_stats(0))
    out["disabled_publisher"] = off.publisher is not None

    # 2. enabled, live Redis, role from kv_role, 200 steps as fast as vLLM could call
    os.environ.update(
        SLAPLANE_PLUGIN_ENABLED="1",
        SLAPLANE_REDIS_URL=redis_url,
        SLAPLANE_CLUSTER=cluster,
        SLAPLANE_WORKER_ID="plug-1",
        SLAPLANE_PLUGIN_INTERVAL_MS="100",
    )
    os.environ.pop("SLAPLANE_ROLE", None)
    lg = cls(_config("kv_producer"), 0)
    lg.log_engine_initialized()
    steps = [_stats(i) for i in range(200)]
    t0 = time.perf_counter()
    for sched, it in steps:
        lg.record(sched, it, None, 0)
    out["record_us"] = (time.perf_counter() - t0) / len(steps) * 1e6
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    key = f"slaplane:{{{cluster}}}:worker:plug-1"
    _until(lambda: r.hget(key, "requests_finished_total") == "200.0", "all 200 steps published")
    out["hash"] = r.hgetall(key)
    out["zset"] = r.zrange(f"slaplane:{{{cluster}}}:workers", 0, -1)
    out["stream_len"] = r.xlen(f"slaplane:{{{cluster}}}:telemetry")
    pub = lg.publisher
    assert pub is not None
    out["published_total"] = pub.published_total
    out["publish_errors_total"] = pub.errors_total

    # 3. garbage stats: counted, never raised
    lg.record(object(), object(), None, 0)
    out["record_errors_total"] = lg.record_errors_total
    lg.close()
    out["after_close_up"] = r.hget(f"slaplane:{{{cluster}}}:worker:plug-1", "up")

    # 4. Redis unreachable: record stays fast, errors are counted
    os.environ.update(SLAPLANE_REDIS_URL=dead_url, SLAPLANE_WORKER_ID="plug-dead")
    dead = cls(_config("kv_consumer"), 1)
    t0 = time.perf_counter()
    for sched, it in steps:
        dead.record(sched, it, None, 1)
    out["dead_record_us"] = (time.perf_counter() - t0) / len(steps) * 1e6
    dpub = dead.publisher
    assert dpub is not None
    _until(lambda: dpub.errors_total >= 1, "a failed publish to the dead Redis")
    out["dead_errors_total"] = dpub.errors_total
    out["dead_identity"] = [dpub.ident.worker, dpub.ident.role]
    dead.close()
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
