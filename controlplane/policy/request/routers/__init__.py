"""Routers: one module per filter/scorer plugin, a Profile runner and the Router."""

from controlplane.policy.request.routers.base import Filter, Profile, Scorer, invert_minmax
from controlplane.policy.request.routers.router import Router

__all__ = ["Filter", "Profile", "Router", "Scorer", "invert_minmax"]
