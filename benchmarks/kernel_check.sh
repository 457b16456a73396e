#!/usr/bin/env bash
# The Triton kernels alone, on a CUDA machine: their GPU tests, then their timings, written to OUT_DIR
# (benchmarks/gpu_check.sh is the whole 10-minute device check: fla path, tables, a study).
#
#   bash benchmarks/kernel_check.sh OUT_DIR [WORKERS]
#
# Needs the package importable (installed, or run from the checkout's root: miras_search.kernels
# resolves to kernels/ either way) and, for the fla comparison, flash-linear-attention. The test
# step runs the tests marked `gpu`; GPU_TESTS, if set, narrows them with a -k expression (e.g. to
# re-run only what a cut-short call left out). Compiling is most of the cost (the MLP backward takes 5 to 30 s per shape on one
# core), so both steps compile in WORKERS processes at once (default 12): the tests through
# pytest-xdist when it is installed, the timings through kernels.py --jobs. Each step has its own
# time limit and writes its file as it goes, so a slow step cannot take the other's results.
# At most 9 minutes (the two limits) on an H100 machine with 16 cores.
set -uo pipefail
out="${1:?usage: bash benchmarks/kernel_check.sh OUT_DIR [WORKERS]}"
workers="${2:-12}"
py="${PYTHON:-python3}"
mkdir -p "$out"
if ! "$py" -c "import miras_search.kernels" 2>/dev/null; then
    echo "miras_search.kernels is not importable: install the package or run from the checkout's root" >&2
    exit 2
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$py" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} 2>&1 | tee "$out/gpu.txt"
parallel=()
"$py" -c "import xdist" 2>/dev/null && parallel=(-n "$workers")

# 1. correctness on the GPU: the MLP kernel's named models at odd lengths, its widest fp32 / bf16
#    shapes, the hidden-tiled kernel at the paper's K=64 / hidden 256 and the model paths (a trial's layers on the kernel under bf16 autocast); the matrix
#    kernel's GPU-only cases (bf16, widest heads, split backward)
start=$SECONDS
filter=()
[ -n "${GPU_TESTS:-}" ] && filter=(-k "$GPU_TESTS")
timeout -k 10 270 "$py" -m pytest -v -p no:cacheprovider "${parallel[@]}" -m gpu "${filter[@]}" \
    tests/test_kernels_mlp.py tests/test_kernels_mlp_tiled.py tests/test_kernel_path.py tests/test_kernels_matrix.py \
    tests/test_kernels_omega.py \
    2>&1 | tee "$out/gpu_tests.txt" | tail -30
echo "# tests: $((SECONDS - start)) s" | tee -a "$out/gpu.txt"

# 2. timings: the MLP table (goal: >= 3x the PyTorch chunked form) and the matrix table (goal:
#    Gated DeltaNet within 1.5x of fla at T=2048/8192, D=64/128); the matrix table's PyTorch
#    baselines are in benchmarks/RESULTS.md already
start=$SECONDS
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" timeout -k 10 270 "$py" benchmarks/kernels.py --jobs "$workers" --no-pytorch --bypass-fla-guard \
    --out "$out/kernels_gpu.md" 2>&1 | tee "$out/kernels_log.txt" | grep -v "^# compiled"
echo "# timings: $((SECONDS - start)) s" | tee -a "$out/gpu.txt"
