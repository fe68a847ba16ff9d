"""One worker-telemetry derivation, shared by the scraping agent and the in-process vLLM
plugin: ``reading.Reading`` (cumulative counters, histogram buckets and gauges at one
time) → ``derive.derive`` → ``WorkerSnapshot``. Pure: no I/O, no clock, no vLLM or
prometheus_client import, so it runs in both the control-plane venv and vLLM's.
"""
