"""Write measured points as the profile CSV that the sim engine and the predictor read.

Format = the vLLM capture dialect (``phase,batch_size,context_tokens_or_prompt_tokens,
latency_ms``) under a ``# slaplane-profile key=value`` line carrying the engine
limits the measurement was taken with, exactly like ``controlplane/profiles/*.csv``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from controlplane.profiler.plan import Result
from controlplane.profiles import Profile, parse_profile


def profile_text(results: Iterable[Result], meta: Mapping[str, str | int]) -> str:
    head = " ".join(f"{k}={v}" for k, v in meta.items() if v not in (None, ""))
    rows = sorted(results, key=lambda r: (r.phase != "prefill", r.batch, r.tokens))
    lines = [
        f"# slaplane-profile {head}",
        "phase,batch_size,context_tokens_or_prompt_tokens,latency_ms",
    ]
    lines += [f"{r.phase},{r.batch},{r.tokens},{r.latency_ms:.3f}" for r in rows]
    return "\n".join(lines) + "\n"  # fmt: skip


def write_profile(path: Path, results: Iterable[Result], meta: Mapping[str, str | int]) -> Profile:
    """Write the CSV and parse it back (so a file that the sim cannot read is an error now)."""
    text = profile_text(results, meta)
    prof = parse_profile(text, name=str(meta.get("name", path.stem)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return prof
