#!/usr/bin/env bash
# Create a virtual environment (default .venv, or $VENV; from python3, or $PYTHON) and install
# miras-search into it with its development tools. On a machine without a GPU this installs
# PyTorch's CPU build first.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VENV:-.venv}"
python="${PYTHON:-python3}"  # the interpreter the environment is made from
if ! command -v "$python" >/dev/null 2>&1; then
    echo "'$python' is not found: install Python 3.10 or newer, or run again with PYTHON=<its path>." >&2
    exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "miras-search needs Python 3.10 or newer; '$python' is $("$python" --version 2>&1 || true)." \
         "Run again with PYTHON=python3.12 (or another 3.10+ interpreter)." >&2
    exit 1
fi
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    echo "'$python' cannot create a virtual environment (its venv / ensurepip modules are missing):" \
         "on Debian or Ubuntu install python3-venv, or run again with PYTHON=<another interpreter>." >&2
    exit 1
fi
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
extras="dev,report,hf"
if command -v nvidia-smi >/dev/null 2>&1; then
    extras="$extras,gpu"  # flash-linear-attention's kernels and models
else
    # The CPU build (pinned): a bare "torch" requirement would pull a multi-GB CUDA build. Where
    # the configured index offers only CUDA builds at this pin (PyPI's Linux wheels), take the
    # "+cpu" build from PyTorch's CPU wheel index ($TORCH_CPU_INDEX to use another).
    torch_pin="2.13.0"
    offered="$("$venv/bin/python" -m pip install --quiet --dry-run --report - "torch==$torch_pin" 2>/dev/null \
        | "$venv/bin/python" -c 'import json, sys
print(next((p["metadata"]["version"] for p in json.load(sys.stdin)["install"]
            if p["metadata"]["name"].lower() == "torch"), ""))' 2>/dev/null || true)"
    if [ "$(uname -s)" = Linux ] && [[ "$offered" != *+cpu ]]; then
        cpu_index="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
        echo "the package index offers torch $torch_pin as '${offered:-nothing}', not a CPU build: taking torch $torch_pin+cpu from $cpu_index"
        "$venv/bin/python" -m pip install --quiet --extra-index-url "$cpu_index" "torch==$torch_pin+cpu"
    else
        "$venv/bin/python" -m pip install --quiet "torch==$torch_pin"
    fi
fi
"$venv/bin/python" -m pip install --quiet -e ".[$extras]"
venv_path="$(cd "$venv" && pwd)"  # absolute: the script may be run from another folder
echo "miras-search is installed in $venv_path (activate it with: source $venv_path/bin/activate)"
