#!/usr/bin/env bash
# Create (or reuse) .venv with the CPU build of PyTorch pinned first, then medgen with dev + eval extras.
# Idempotent: a second run only checks that the install is complete.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import medgen, monai, transformers, diffusers, spacy, SimpleITK" >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q --upgrade pip
  # The pinned CPU build first: a bare `torch` requirement would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[dev,eval]"
fi
.venv/bin/python -c "import medgen, torch; print(f'medgen {medgen.__version__} ready (torch {torch.__version__})')"
