"""The OpenAI-compatible, SLA-aware gateway (``slaplane gateway``)."""
