"""``python -m workers.agent`` = ``slaplane agent`` (handy for spawning many agents)."""

from __future__ import annotations

import typer

from workers.agent.cli import main

if __name__ == "__main__":
    typer.run(main)
