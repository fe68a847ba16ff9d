"""vLLM stat-logger plugin: publishes the agent's ``WorkerSnapshot`` from inside vLLM.

vLLM 0.32 loads classes from the ``vllm.stat_logger_plugins`` entry-point group in
the API-server process (``AsyncLLM``) and calls ``record()`` once per batch of
engine-core outputs (one scheduler step). ``stat_logger.SlaplaneStatLogger`` is that
class; it is a no-op unless ``SLAPLANE_PLUGIN_ENABLED=1``.

Only ``stat_logger`` imports vLLM; ``config``, ``accumulator`` and ``publisher`` are
plain Python so the control-plane venv can import and test them.
"""
