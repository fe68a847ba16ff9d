"""The ``slaplane`` command. Each subcommand lives beside the code it drives and is
imported lazily, so ``slaplane --help`` stays fast and no heavy import happens
for a command that is not run."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="slaplane",
    help="SLA-aware control plane for disaggregated (prefill/decode) LLM serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """SLA-aware control plane for disaggregated (prefill/decode) LLM serving."""


# subcommand name → "module:function"; each function is a typer command whose module
# keeps heavy imports inside the function body.
_COMMANDS: dict[str, str] = {
    "sim-worker": "workers.sim.cli:main",
    "agent": "workers.agent.cli:main",
    "worker": "workers.launch.cli:main",
    "demo": "controlplane.demo:main",
    "controller": "controlplane.controller.cli:main",
    "gateway": "controlplane.gateway.cli:main",
    "replay": "controlplane.replay.cli:main",
    "profile": "controlplane.profiler.cli:main",
}


def _register() -> None:
    for name, target in _COMMANDS.items():
        mod_name, attr = target.split(":")
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:  # a subcommand not built yet
            if exc.name and exc.name.startswith(("workers", "controlplane")):
                continue
            raise
        app.command(name=name)(getattr(mod, attr))


def main() -> None:
    _register()
    app()


if __name__ == "__main__":
    main()
