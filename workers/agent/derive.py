"""The agent's derivation is ``workers.telemetry.derive``, shared with the vLLM plugin.

Re-exported here for callers that import it from the agent (benchmarks/).
"""

from __future__ import annotations

from workers.telemetry.derive import DeriveConfig, DeriveState, Identity, derive, mark_down

__all__ = ["DeriveConfig", "DeriveState", "Identity", "derive", "mark_down"]
