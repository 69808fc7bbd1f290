#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv.
# Usage: scripts/setup_env.sh [extras]   e.g. "test"
# CPU PyTorch 2.13.0 is installed first and pinned, so that no other package pulls a CUDA torch.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
pip_q() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v '^WARNING: Location' || true; }
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
    echo "[setup] installing torch==2.13.0 (CPU build)"
    pip_q "torch==2.13.0"
fi
target="."
[ -n "$extras" ] && target=".[${extras}]"
echo "[setup] installing BoneMetSegLib ${target}"
echo "torch==2.13.0" > .venv/torch-constraint.txt
pip_q -c .venv/torch-constraint.txt -e "$target"
.venv/bin/python -c "import torch, BoneMetSegLib; print('[setup] ok: torch', torch.__version__, '| BoneMetSegLib', BoneMetSegLib.__version__)"
