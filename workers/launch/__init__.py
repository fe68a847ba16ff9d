"""``slaplane worker``: start a real vLLM prefill/decode worker with its agent beside it.

``settings`` holds the options, ``command`` turns them into argv + env (pure, tested),
``supervisor`` runs the processes and ``cli`` is the typer command.
"""
