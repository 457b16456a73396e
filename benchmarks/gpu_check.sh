#!/usr/bin/env bash
# One call on a CUDA machine, at most 10 minutes: the GPU tests, the layer (kernel) table, the
# whole-model table and a 3-minute end-to-end study on Ray with its report, all under OUT_DIR.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR] [WORKERS]      (default benchmarks/results/gpu_check)
#   DRY_RUN=1 bash benchmarks/gpu_check.sh OUT_DIR        (a CPU: every step at toy size, ~3 min)
#
# On the device (the run tool: its machines have no network, and their image lacks our package,
# pydantic, optuna, ray, wandb and fla): first, here, `bash benchmarks/device_bundle.sh` (a few
# minutes; writes .whl/site.tar.xz, ~47 MiB; again only when its pins change, since the command
# below puts this tree's own miras_search over the bundle's), then one call with carry [".whl"],
# timeout_s 600 and this command (files come back as at most 8 files: gpu.txt and the whole
# OUT_DIR as one tarball; its gc/autotune.tgz, saved as .whl/autotune.tgz, spares the next call
# fla's autotuning):
#   rm -rf /tmp/site /tmp/gc; mkdir -p /tmp/site && tar xJf .whl/site.tar.xz -C /tmp/site && rm -rf /tmp/site/miras_search && cp -r miras_search /tmp/site/ && rm -rf /tmp/site/miras_search/kernels && cp -r kernels /tmp/site/miras_search/kernels && export PYTHONPATH=/tmp/site || exit; AUTOTUNE_IN=.whl/autotune.tgz timeout -k 5 570 bash benchmarks/gpu_check.sh /tmp/gc; cp /tmp/gc/gpu.txt $OUT/; tar czf $OUT/gpu_check.tgz -C /tmp gc
# With less than 600 s of device time left, lower the outer timeout and the step limits below.
#
# Elsewhere it needs the package installed with the gpu extra (`bash scripts/setup.sh` does it where
# nvidia-smi is present: fla-core for the fla path, flash-linear-attention for fla's model).
# Each step has its own time limit and writes its file as it goes, so a slow step cannot take the
# others' results: tests 60 s, layer table 140 s, whole-model table 170 s, study 140 s (Ray's
# start, 70 s of new trials and the last ones' end), report 30 s: 540 s of limits.
#
# Environment: GPU_TESTS narrows the tests with a -k expression; KERNEL_TESTS=1 adds the Triton
# kernels' own GPU tests (minutes of compiling: run them alone); the step limits (TESTS_S, LAYER_S,
# LM_S, STUDY_S: new trials start for that long, TRIAL_S: each trial's limit, REPORT_S), the
# lengths (LAYER_SEQ_LENS, LM_SEQ_LENS) and the rows, in order (LAYER_ROWS, LM_MODELS) can be set
# for a shorter call; LM_PROFILE=1 adds one profiled step per model (OUT_DIR/lm_profile/);
# PATH_CHECK=1 adds the presets' predicted GPU paths against their layers' own (PATHS_S, 120 s).
# WORKERS (default 1) compiles tests in that many processes when pytest-xdist is installed (on an
# H200 with 12 of them no test had finished after 150 s).
#
# Autotuning: on a fresh machine fla benchmarks every config of each of its kernels on first use
# (one to two minutes before the first gated_deltanet row on an H200). Triton keeps the winners
# as small *.autotune.json files in its cache, keyed by the Triton build, the GPU and the kernel
# source; the script saves them to OUT_DIR/autotune.tgz at the end, and AUTOTUNE_IN=that file
# restores them first, so a later call on the same image skips the tuning.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/benchmarks/results/gpu_check}"
workers="${2:-1}"
py="${PYTHON:-python3}"
dry="${DRY_RUN:-0}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
triton_cache="${TRITON_CACHE_DIR:-$HOME/.triton/cache}"
if [ -n "${AUTOTUNE_IN:-}" ] && [ -f "$AUTOTUNE_IN" ]; then
    mkdir -p "$triton_cache" && tar xzf "$AUTOTUNE_IN" -C "$triton_cache"
fi
cd "$root"
export WANDB_MODE=offline WANDB_SILENT=true
if ! "$py" -c "import miras_search.kernels" 2>/dev/null; then
    echo "miras_search is not importable: install the package (bash scripts/setup.sh)" >&2
    exit 2
fi
{
    date -u
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$py" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
    "$py" -c "import fla; print('fla', fla.__version__)" 2>/dev/null || echo "fla: not installed"
} 2>&1 | tee "$out/gpu.txt"
step() {  # step NAME SECONDS CMD...: run with a time limit, log its output, note its time and status
    local name="$1" limit="$2"; shift 2
    local start=$SECONDS
    timeout -k 10 "$limit" "$@" > "$out/$name.log" 2>&1
    local rc=$?
    tail -25 "$out/$name.log"
    echo "# $name: $((SECONDS - start)) s, exit $rc$([ $rc -eq 124 ] && echo ' (time limit)')" | tee -a "$out/gpu.txt"
}
parallel=()
[ "$workers" -gt 1 ] && "$py" -c "import xdist" 2>/dev/null && parallel=(-n "$workers")
filter=()
[ -n "${GPU_TESTS:-}" ] && filter=(-k "$GPU_TESTS")

# 1. correctness on the GPU: fla's kernels through our mapping against the float64 recurrence
#    (every covered preset, odd lengths, gradients) and the model path (a trial's layers on a
#    kernel under bf16 autocast); with KERNEL_TESTS=1 the Triton kernels' GPU-only cases too
tests=(tests/test_fla_path.py tests/test_kernel_path.py)
[ "${KERNEL_TESTS:-0}" = 1 ] && tests+=(tests/test_kernels_matrix.py tests/test_kernels_mlp.py tests/test_kernels_mlp_tiled.py tests/test_kernels_omega.py)
[ "$dry" = 1 ] && tests=(tests/test_fla_path.py)
step gpu_tests "${TESTS_S:-60}" "$py" -m pytest -q -p no:cacheprovider "${parallel[@]}" -m gpu "${filter[@]}" "${tests[@]}"

# 2. the layer table: deltanet / gated_deltanet through our dispatch vs fla's chunk kernels
#    (goal <= 1.1x), the MLP memories at head dim 64 / hidden 256, T=4096 (goal <= 8x gated_deltanet;
#    Titans, Moneta, Yaad and Memora run the hidden-tiled MLP kernel there, the named models'
#    channel-wise gates and Memora's exact per-token kl read included)
if [ "$dry" = 1 ]; then layer_args=(--tiny); else layer_args=(--seq-lens "${LAYER_SEQ_LENS:-2048,4096,8192}"); fi
[ -n "${LAYER_ROWS:-}" ] && layer_args+=(--layers "$LAYER_ROWS")
step layer_table "${LAYER_S:-140}" "$py" benchmarks/layer_gpu.py "${layer_args[@]}" --out "$out/layer_gpu.md"

# 3. the whole-model table: ~85M-parameter models (d_model 768, 12 layers, 12 heads of 64), bf16,
#    T 2048 and 4096, beside fla's GatedDeltaNet model and a plain SDPA Transformer
#    (the goals' pairs first: a run cut short keeps the rows it has)
models="${LM_MODELS:-gated_deltanet,fla_gated_deltanet,sdpa,moneta,transformer,titans,yaad,memora}"
if [ "$dry" = 1 ]; then lm_args=(--tiny); else lm_args=(--seq-lens "${LM_SEQ_LENS:-2048,4096}" --steps 3 --warmup 1 --budget-s 8); fi
[ "${LM_PROFILE:-0}" = 1 ] && lm_args+=(--profile "$out/lm_profile")
step lm_table "${LM_S:-170}" "$py" benchmarks/lm_gpu.py --models "$models" "${lm_args[@]}" --out "$out/lm_gpu.md"

# 4. an end-to-end study: Ray, 4 trials at a time sharing the GPU (0.25 each), W&B offline,
#    the quickstart space at a GPU trial's size: new trials start for 70 s, each has 50 s at most
#    (Triton compiles on the first ones: 74 % of this space's points now run a kernel, in more
#    gate / retention mixes than before, benchmarks/results/kernel_coverage.md), then the report
gpus=0.25; study_workers=4; tokens=131072; budget="${STUDY_S:-70}"; trial_limit="${TRIAL_S:-50}"
if [ "$dry" = 1 ]; then gpus=0; study_workers=2; tokens=8192; budget=40; trial_limit=60; fi
cat > "$out/gpu_study.yaml" <<EOF
type: study
name: gpu_check
description: issue 19's end-to-end study on a GPU (benchmarks/gpu_check.sh)
space: $root/spaces/quickstart.yaml
run_dir: $out/study
trial:
  data: [{task: text}]
  tokens: $tokens
  batch_size: 16
  seq_len: 256
  eval_batches: 4
  report_every: 4
  time_limit_s: $trial_limit
objectives:
  - {metric: val_bpb, direction: minimize}
sampler: {kind: tpe, seed: 0, anchors: [moneta, yaad, memora], options: {n_startup_trials: 4}}
pruner: {kind: none}
trials: 24
parallel: {workers: $study_workers, gpus_per_trial: $gpus}
tracking: {wandb: offline}
EOF
miras=("$py" -c 'from miras_search.cli import app; app(prog_name="miras")')
step study $((budget + trial_limit + 20)) "${miras[@]}" run "$out/gpu_study.yaml" --timeout "$budget"
step study_report "${REPORT_S:-30}" "${miras[@]}" report "$out/gpu_study.yaml" --out "$out/study_report"
"$py" - "$out" <<'EOF' | tee -a "$out/gpu.txt"
import sys
from collections import Counter
from pathlib import Path

from miras_search.study import load_study_file, open_study

trials = open_study(load_study_file(Path(sys.argv[1]) / "gpu_study.yaml")).get_trials()
print("# study trials:", dict(Counter(t.state.name for t in trials)))
for t in trials:
    if t.state.name == "FAIL":
        print("#   failed:", t.number, t.user_attrs.get("failure"), str(t.user_attrs.get("reason"))[:200])
EOF
# 5. (PATH_CHECK=1) the GPU path `miras kernels` predicts for every preset against what its layers
#    decide in a real forward here (benchmarks/gpu_path_check.py: exit 1 on a disagreement)
if [ "${PATH_CHECK:-0}" = 1 ] || [ "$dry" = 1 ]; then
    path_args=(); [ "$dry" = 1 ] && path_args=(--presets transformer,gated_deltanet,moneta)
    step gpu_paths "${PATHS_S:-120}" "$py" benchmarks/gpu_path_check.py "${path_args[@]}" --out "$out/gpu_paths.md"
fi
date -u | tee -a "$out/gpu.txt"
# the autotuning results for the next call on this image (AUTOTUNE_IN above)
if [ -d "$triton_cache" ]; then
    (cd "$triton_cache" && find . -name '*.autotune.json' -print0 | tar czf "$out/autotune.tgz" --null -T -)
fi
