#!/usr/bin/env bash
# Create a virtual environment (default .venv, or $VENV) and install miras-search into it with
# its development tools. On a machine without a GPU this installs PyTorch's CPU build first.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VENV:-.venv}"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
extras="dev,report,hf"
if command -v nvidia-smi >/dev/null 2>&1; then
    extras="$extras,gpu"  # flash-linear-attention's kernels and models
else
    # The CPU build (pinned): a bare "torch" requirement would pull a multi-GB CUDA build.
    "$venv/bin/python" -m pip install --quiet "torch==2.13.0"
fi
"$venv/bin/python" -m pip install --quiet -e ".[$extras]"
echo "miras-search is installed in $venv (activate it with: source $venv/bin/activate)"
