"""Worker performance model and the vLLM-compatible simulated worker server.

The model (``Engine``) is pure: no asyncio, no clock; the live server
(``workers.sim.server``) and the replay driver (``controlplane.replay``) drive it.
Import the server lazily; this package root stays light. The step-time model it runs
on, ``Profile``, is ``controlplane.profiles``' (re-exported here for convenience).
"""

from controlplane.profiles import Profile, available_profiles, load_profile, parse_profile
from workers.sim.engine import Engine, block_keys
from workers.sim.kvcache import KVCache
from workers.sim.stats import EngineStats, Hist
from workers.sim.types import EngineConfig, FinishedRequest, SimRequest, StepResult

__all__ = [
    "Engine",
    "EngineConfig",
    "EngineStats",
    "FinishedRequest",
    "Hist",
    "KVCache",
    "Profile",
    "SimRequest",
    "StepResult",
    "available_profiles",
    "block_keys",
    "load_profile",
    "parse_profile",
]
