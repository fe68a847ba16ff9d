"""Drive a plan against an endpoint with a rich progress bar, checkpointing each point."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from controlplane.profiler.client import discover_model
from controlplane.profiler.measure import measure
from controlplane.profiler.plan import Checkpoint, Point, Result


async def measure_points(
    plan: list[Point],
    ckpt: Checkpoint,
    one: Callable[[Point], Awaitable[Result]],
    *,
    label: str,
    console: Console,
    quiet: bool,
) -> None:
    """Measure each point not yet in the checkpoint, saving it as soon as it is done
    (so an interrupted sweep resumes where it stopped), under one progress bar."""
    todo = [p for p in plan if not ckpt.done(p)]
    with Progress(
        TextColumn("{task.description}"), BarColumn(),
        TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
        console=console, disable=quiet, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task(label, total=len(plan), completed=len(plan) - len(todo))
        for p in todo:
            bar.update(task, description=f"{p.phase} batch={p.batch} tokens={p.tokens}")
            ckpt.add(await one(p))
            bar.advance(task)


async def run_plan(
    url: str,
    model: str | None,
    plan: list[Point],
    ckpt: Checkpoint,
    *,
    repeats: int,
    decode_tokens: int,
    timeout_s: float,
    console: Console,
    quiet: bool = False,
    seed: int = 0,
) -> str:
    """Measure every point not in the checkpoint; returns the model id used."""
    base = url.rstrip("/")
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        model_id = model or await discover_model(session, base)

        async def one(p: Point) -> Result:
            return await measure(
                session, base, model_id, p, repeats=repeats, decode_tokens=decode_tokens,
                seed=seed,
            )  # fmt: skip

        await measure_points(plan, ckpt, one, label="profiling", console=console, quiet=quiet)
    return model_id
