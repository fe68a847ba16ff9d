"""Write DynoSim's mocker perf table (NPZ) from a slaplane profile CSV.

The mocker looks up prefill TTFT by ISL (1-D) and decode ITL by (active KV tokens,
context length) with batch = active KV / context (2-D). Both grids are filled from
the same piecewise-linear interpolation slaplane's sim engine uses
(``controlplane.profiles.Profile``), so both simulators run on identical step times.

    .venv/bin/python benchmarks/dynosim/make_npz.py [--profile h100-llama3.1-8b] --out perf.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from controlplane.profiles import load_profile


def build(profile_name: str, out: Path, resolution: int = 64) -> Path:
    prof = load_profile(profile_name)
    max_ctx = float(prof.max_model_len)
    isl = np.unique(np.concatenate([np.geomspace(1, max_ctx, 256), prof.prefill_tokens]))
    ttft = np.array([prof.prefill_ms(float(x)) for x in isl])
    kv = np.linspace(0.0, float(prof.kv_capacity_tokens), resolution)
    ctx = np.geomspace(1.0, max_ctx, resolution)
    itl = np.zeros((resolution, resolution))
    for i, k in enumerate(kv):
        for j, c in enumerate(ctx):
            batch = max(1.0, min(float(prof.max_num_seqs), k / c))
            itl[i, j] = prof.decode_ms(batch, c)
    np.savez(
        out,
        prefill_isl=isl,
        prefill_ttft_ms=ttft,
        decode_active_kv_tokens=kv,
        decode_context_length=ctx,
        decode_itl=itl,
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", default="h100-llama3.1-8b")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    print(build(a.profile, a.out))


if __name__ == "__main__":
    main()
