"""The latency profile: one step-time model (``Profile``) and the shipped CSVs it is
read from. The sim engine, the predictor, the planner, the replay and the profiler all
use it; this package imports nothing else from slaplane."""

from controlplane.profiles.profile import (
    CPU_TINY_FIXTURE,
    PROFILES_DIR,
    Profile,
    available_profiles,
    fit_linear,
    load_profile,
    parse_profile,
    profile_path,
)

__all__ = [
    "CPU_TINY_FIXTURE",
    "PROFILES_DIR",
    "Profile",
    "available_profiles",
    "fit_linear",
    "load_profile",
    "parse_profile",
    "profile_path",
]
