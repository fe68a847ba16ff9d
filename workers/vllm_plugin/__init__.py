"""vLLM stat-logger plugin: publishes the agent's ``WorkerSnapshot`` from inside vLLM.

vLLM 0.32 loads classes from the ``vllm.stat_logger_plugins`` entry-point group in
the API-server process (``AsyncLLM``) and calls ``record()`` once per batch of
engine-core outputs (one scheduler step). ``stat_logger.SlaplaneStatLogger`` is that
class; it is a no-op unless ``SLAPLANE_PLUGIN_ENABLED=1``.

``record()`` folds the step into running totals (``accumulator``: what vLLM's /metrics
page would show); a daemon thread (``publisher``) derives the snapshot from them with the
agent's derivation (``workers.telemetry.derive``) and writes it through the control
plane's ``Store`` (``controlplane.state.open_store``), the same keys as the agent, with
``source="plugin"``.

Only ``stat_logger`` imports vLLM; ``config``, ``accumulator`` and ``publisher`` are
plain Python so the control-plane venv can import and test them. In vLLM's venv they
need only ``redis`` and ``pydantic`` (both in requirements/vllm.in's lock).
"""
