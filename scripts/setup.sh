#!/usr/bin/env bash
# Create .venv at the repository root and install precond_core with every extra into it.
# torch: a torch importable by the base python (e.g. a CUDA build) is kept (the venv then sees the base
# site-packages); otherwise the CPU build torch==2.13.0 is installed (PRECOND_TORCH overrides the spec).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  if "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "setup: keeping the torch of $PY ($("$PY" -c 'import torch; print(torch.__version__)'))"
    "$PY" -m venv --system-site-packages .venv
  else
    "$PY" -m venv .venv
  fi
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q "${PRECOND_TORCH:-torch==2.13.0}"
fi
.venv/bin/python -m pip install -q --no-build-isolation -e ".[all]"
.venv/bin/python -c "import torch, precond_core; print(f'setup: precond_core {precond_core.__version__}, torch {torch.__version__}, cuda available: {torch.cuda.is_available()}')"
