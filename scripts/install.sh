#!/usr/bin/env bash
# Install fourm-hf and what it needs on a fresh machine.
#
# torch comes first and only if missing: a bare "torch" requirement on a machine without torch
# pulls a multi-GB CUDA build. Set FOURM_TORCH to choose the build, e.g.
#   FOURM_TORCH="torch==2.13.0" (default: the CPU build), or install your CUDA torch beforehand.
# FOURM_EXTRAS picks the extras (default "all": test, peft, demo, web = Gradio for fourm-hf demo --web).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
  "$PYTHON" -m pip install "${FOURM_TORCH:-torch==2.13.0}"
fi
"$PYTHON" -m pip install -e ".[${FOURM_EXTRAS:-all}]"
"$PYTHON" -c "import fourm_hf, torch; print(f'fourm_hf {fourm_hf.__version__} with torch {torch.__version__}')"
