#!/usr/bin/env bash
# One call on a CUDA machine: the kernels' GPU tests, then their timings, written to OUT_DIR.
#
#   bash benchmarks/gpu_check.sh OUT_DIR
#
# Needs the package importable (pip install -e .) and, for the fla comparison, flash-linear-
# attention. The test subset is chosen for few distinct kernel compilations (each takes seconds):
# the named models at odd lengths, the GPU-only cases (wide heads, bf16) and the model paths.
set -uo pipefail
out="${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
# most valuable first: each step writes its file as it goes, so a call cut short keeps them
python -m pytest -q -p no:cacheprovider \
    tests/test_kernels_mlp.py -k "named_models or gpu_ or forced or language" \
    2>&1 | tail -25 | tee "$out/gpu_tests_mlp.txt"
python benchmarks/kernels.py --only mlp --out "$out/kernels_mlp_gpu.md"
python -m pytest -q -p no:cacheprovider tests/test_kernel_path.py tests/test_kernels_matrix.py \
    -k "gpu_bf16 or gpu_lengths or gpu_split or saturated or on_gpu" 2>&1 | tail -25 | tee "$out/gpu_tests_matrix.txt"
python benchmarks/kernels.py --quick --only matrix --bypass-fla-guard --out "$out/kernels_matrix_gpu.md"
