"""The vLLM 0.32 stat-logger plugin class (entry point ``vllm.stat_logger_plugins``).

vLLM shape (``vllm/v1/metrics/loggers.py``): ``load_stat_logger_plugin_factories``
requires a *subclass* of ``StatLoggerBase``. A plain subclass (not an
``AggregateStatLoggerBase``) is a per-engine factory: ``StatLoggerManager`` wraps it
in ``PerEngineStatLoggerAdapter``, which calls ``cls(vllm_config, engine_index)`` once
per engine core, then ``record(scheduler_stats, iteration_stats, mm_cache_stats,
engine_idx)`` from the API server's output-handler task after every batch of engine
outputs, and ``log_engine_initialized()`` once the KV cache is sized.

``record`` runs on vLLM's asyncio loop, so it only folds numbers into the accumulator
(the totals vLLM's own /metrics page shows, over the same bucket bounds) and wakes the
publisher thread, which derives the snapshot with the agent's derivation
(``workers.telemetry.derive``) and writes it through ``controlplane.state.open_store``.
Every method catches everything.

Caveat: vLLM turns stat collection on whenever a plugin is installed, even with
``--disable-log-stats``; with the plugin disabled ``record`` returns at once.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
from typing import Any

from vllm.v1.metrics.loggers import StatLoggerBase

from controlplane.state import open_store
from workers.telemetry.derive import DeriveConfig, Identity
from workers.telemetry.reading import ITL_BOUNDS_S, TTFT_BOUNDS_S
from workers.vllm_plugin.accumulator import StatsAccumulator, step_from_stats
from workers.vllm_plugin.config import PluginConfig, config_from_env, role_from_kv_role
from workers.vllm_plugin.publisher import Publisher

# a child of vLLM's logger, so messages use its handler and format
log = logging.getLogger("vllm.slaplane_plugin")


def _served_model(vllm_config: Any) -> str:
    mc = getattr(vllm_config, "model_config", None)
    name = getattr(mc, "served_model_name", None) or getattr(mc, "model", None)
    if isinstance(name, list | tuple):
        name = name[0] if name else None
    return str(name) if name else "unknown"


def _kv_role(vllm_config: Any) -> str | None:
    ktc = getattr(vllm_config, "kv_transfer_config", None)
    role = getattr(ktc, "kv_role", None)
    return str(role) if role else None


def kv_capacity_tokens(vllm_config: Any) -> int | None:
    """KV cache size in tokens once the engine has sized it (blocks x block size)."""
    cc = getattr(vllm_config, "cache_config", None)
    blocks = getattr(cc, "num_gpu_blocks", None)
    block_size = getattr(cc, "block_size", None)
    if isinstance(blocks, int) and isinstance(block_size, int) and blocks > 0:
        return blocks * block_size
    return None


def latency_bounds_s(vllm_config: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """TTFT and ITL bucket bounds of this vLLM's /metrics page (its defaults, or the
    ``custom_histogram_buckets`` it was started with), so the plugin's quantiles are
    computed over the very buckets the agent scrapes."""
    try:
        from vllm.v1.metrics.buckets import histogram_buckets

        oc = getattr(vllm_config, "observability_config", None)
        custom = getattr(oc, "custom_histogram_buckets", None)
        return (
            tuple(float(b) for b in histogram_buckets("time_to_first_token", overrides=custom)),
            tuple(float(b) for b in histogram_buckets("inter_token_latency", overrides=custom)),
        )
    except Exception:  # another vLLM layout: its 0.32 defaults
        return TTFT_BOUNDS_S, ITL_BOUNDS_S


def identity_for(cfg: PluginConfig, vllm_config: Any, engine_index: int) -> Identity:
    worker = cfg.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    if engine_index:
        worker = f"{worker}-e{engine_index}"
    return Identity(
        cluster=cfg.cluster,
        worker=worker,
        role=cfg.role or role_from_kv_role(_kv_role(vllm_config)),
        model=cfg.model or _served_model(vllm_config),
        url=cfg.url,
        source="plugin",
    )


class SlaplaneStatLogger(StatLoggerBase):  # type: ignore[misc]  # vllm is untyped here
    """Publishes a ``WorkerSnapshot`` (source ``plugin``) per step, rate-limited."""

    def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
        self.vllm_config = vllm_config
        self.engine_index = engine_index
        self.publisher: Publisher | None = None
        self.record_errors_total = 0
        try:
            cfg = config_from_env(os.environ)
            if not cfg.enabled:
                return
            ttft_bounds, itl_bounds = latency_bounds_s(vllm_config)
            acc = StatsAccumulator(
                ttft_bounds_s=ttft_bounds,
                itl_bounds_s=itl_bounds,
                kv_capacity_tokens=kv_capacity_tokens(vllm_config),
            )
            ident = identity_for(cfg, vllm_config, engine_index)
            url = cfg.redis_url
            self.publisher = Publisher(
                acc,
                lambda: open_store(url),  # opened on the publisher thread, on its own loop
                ident,
                derive_config=DeriveConfig(window_s=cfg.window_s),
                interval_s=cfg.interval_s,
                heartbeat_s=cfg.heartbeat_s,
                publish_timeout_s=cfg.publish_timeout_s,
            )
            self.publisher.start()
            atexit.register(self.close)
            log.info(
                "slaplane plugin publishing worker=%s role=%s cluster=%s every >=%.0f ms",
                ident.worker,
                ident.role,
                cfg.cluster,
                cfg.interval_s * 1e3,
            )
        except Exception:  # a broken plugin must not stop vLLM
            self.publisher = None
            log.exception("slaplane plugin disabled: setup failed")

    def record(
        self,
        scheduler_stats: Any,
        iteration_stats: Any,
        mm_cache_stats: Any = None,
        engine_idx: int = 0,
    ) -> None:
        pub = self.publisher
        if pub is None:
            return
        try:
            pub.acc.observe(step_from_stats(scheduler_stats, iteration_stats))
            pub.notify()
        except Exception:  # count, log once, keep serving
            self.record_errors_total += 1
            pub.record_errors_total = self.record_errors_total
            if self.record_errors_total == 1:
                log.exception("slaplane plugin: record() failed (further errors are counted)")

    def log_engine_initialized(self) -> None:
        pub = self.publisher
        if pub is None:
            return
        try:
            cap = kv_capacity_tokens(self.vllm_config)
            if cap is not None:
                pub.acc.kv_capacity_tokens = cap
            pub.notify()
        except Exception:
            self.record_errors_total += 1

    def log(self) -> None:
        pass

    def close(self) -> None:
        """Stop publishing and mark the worker down (atexit; idempotent)."""
        pub, self.publisher = self.publisher, None
        if pub is not None:
            with contextlib.suppress(Exception):
                pub.stop(final=True)
