"""The live controller: reconcile loop (``loop.py``), leader lease (``leader.py``),
metrics, scaling actuators and the ``slaplane controller`` command. Every decision is
made by the pure ``controlplane.policy.planner.control_planner.ControlPlanner``; this package only
reads the store, applies effects and reports."""
