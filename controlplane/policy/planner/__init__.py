"""The planner: per control tick, predict breaches and plan scaling, weights, throttles.

Pure like the request path: the controller and the replay drive it.
"""
