#!/usr/bin/env bash
# Sets up the virtualenv of the PyTorch peer (benches/peer/): torch (CPU wheel), numpy, safetensors from PyPI.
# Not part of CI. Usage: scripts/peer-venv.sh [VENV_DIR]   (default: target/peer-venv)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-${PEER_VENV:-target/peer-venv}}"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import torch, numpy, safetensors' 2>/dev/null; then
    echo "peer venv ready: $venv"
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
# The default index serves the CPU build of torch on Linux x86-64 only as part of the CUDA wheel; the CPU-only
# wheel is smaller. PEER_TORCH_INDEX may name another index (e.g. a CPU-only one); unset: the default index.
if [ -n "${PEER_TORCH_INDEX:-}" ]; then
    "$venv/bin/python" -m pip install --quiet --index-url "$PEER_TORCH_INDEX" torch
else
    "$venv/bin/python" -m pip install --quiet torch
fi
"$venv/bin/python" -m pip install --quiet numpy safetensors
"$venv/bin/python" -c 'import torch, numpy, safetensors; print("peer venv ready:", torch.__version__, "numpy", numpy.__version__)'
