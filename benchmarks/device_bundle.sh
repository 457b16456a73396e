#!/usr/bin/env bash
# Prepare, here, what a bare GPU machine with no network needs to run benchmarks/gpu_check.sh:
# one site folder of the packages its image lacks (our own package and the pins below), pruned
# and packed as OUT_DIR/site.tar.xz, small enough to travel with the working tree (a device call
# carries the tree and up to 8 ignored paths, 64 MiB in all). It ends by printing the device
# command (also in gpu_check.sh's header), which puts the carried tree's own miras_search over
# the bundle's: rebuild the bundle when the pins change, not when our code does.
#
#   bash benchmarks/device_bundle.sh [OUT_DIR]    (default .whl/ in the main checkout: a device
#                                                  call sends that one, also from a worktree)
#
# Environment: PY_VERSION (default 3.12, the device's Python), PYTHON (default python3: the pip
# that builds, downloads and unpacks), LIMIT_MIB (default 58: fail when the bundle is larger),
# XZ_LEVEL (default 6). Needs the package registry; takes a few minutes (xz is most of it).
# To try a bundle on a CPU: PY_VERSION=3.11 (this machine's Python) into a scratch folder, unpack
# it, PYTHONPATH=that folder, and `DRY_RUN=1 PYTHON=<a venv with torch, triton and the image's
# other packages, none of the pinned ones> bash benchmarks/gpu_check.sh OUT` (every step exit 0).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
main="$(dirname "$(git -C "$root" rev-parse --path-format=absolute --git-common-dir)")"
out="${1:-$main/.whl}"
py_version="${PY_VERSION:-3.12}"
py="${PYTHON:-python3}"
limit_mib="${LIMIT_MIB:-58}"
xz_level="${XZ_LEVEL:-6}"

# What the device image lacks, pinned to versions that work together (those of the dev venv
# where it has them). The image holds torch, triton, numpy, scipy, transformers 5.x, typer, rich,
# pyyaml, einops, pytest, psutil, requests, protobuf, click, attrs, aiohttp, msgpack, filelock,
# packaging, tqdm, markupsafe, urllib3, certifi: not carried.
pins=(
    # the schema (miras_search.schema) and wandb's settings; pydantic-core 2.50 needs
    # typing-extensions >= 4.16, newer than the image's may be: ours comes first on PYTHONPATH
    pydantic==2.14.4
    pydantic-core==2.50.5
    annotated-types==0.8.0
    typing-inspection==0.4.5
    typing-extensions==4.16.0
    # the study: optuna and its RDB / journal storage layer
    optuna==5.1.0
    alembic==1.20.1
    sqlalchemy==2.1.9
    mako==1.4.3
    colorlog==6.12.0
    # parallel trials: Ray core (no dashboard: miras starts it with include_dashboard=False)
    ray==2.60.0
    jsonschema==4.26.0
    jsonschema-specifications==2025.9.1
    referencing==0.37.0
    rpds-py==2026.9.1
    # W&B offline. Not the dev venv's 0.31: from 0.28 it needs OpenTelemetry (0.31 also cwevals);
    # 0.26.1 is the newest whose needs are few and that takes protobuf 5 to 7 (0.22 to 0.25: < 7)
    wandb==0.26.1
    platformdirs==4.14.9
    sentry-sdk==2.76.0
    gitpython==3.2.1
    gitdb==4.0.12
    smmap==5.0.3
    # the GPU path (pyproject's gpu extra): fla's chunk kernels and, for lm_gpu.py, its models
    fla-core==0.6.0
    flash-linear-attention==0.6.0
)

# What a local Ray instance, W&B offline and optuna's storages never read, and large: Ray's Java
# jars and dashboard web client (no dashboard is started), source maps, W&B's Parquet reader (for
# run history downloads) and its Intel-GPU stats helper (NVIDIA's come from wandb-core itself),
# Ray's RLlib and LLM libraries (Ray core imports neither), the packages' own tests and console
# scripts (`python -c` runs miras; the scripts would name this machine's Python). Keep Ray's
# runtime-env agent (its thirdparty aiohttp), the dashboard's Python modules (the dashboard agent
# runs on every node), raylet, gcs_server and _raylet.so: a local cluster needs them.
prune=(
    bin
    ray/jars
    ray/dashboard/client/build
    ray/rllib
    ray/llm
    ray/serve/llm
    wandb/bin/librust_parquet_ffi.so
    wandb/bin/wandb-xpu
)

# /.whl/ stays out of git, first: an untracked, unignored file would travel in every device call
exclude="$main/.git/info/exclude"
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"

export PIP_ROOT_USER_ACTION=ignore  # pip as root into a folder is what is meant here
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
wheels="$work/wheels" site="$work/site"
mkdir -p "$wheels" "$site" "$out"
out="$(cd "$out" && pwd)"

platforms=()
for tag in manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_24 \
           manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
target=(--only-binary=:all: --python-version "$py_version" --implementation cp "${platforms[@]}")

echo "== our wheel (from a copy of the sources: a build/ left in the tree could add stale modules)"
mkdir "$work/src"
cp -r "$root"/{pyproject.toml,setup.py,README.md,miras_search,kernels} "$work/src/"
find "$work/src" -name __pycache__ -prune -exec rm -rf {} +
"$py" -m pip wheel -q --no-deps --wheel-dir "$wheels" "$work/src"
ours="$(ls "$wheels"/miras_search-*.whl)"
# setup.py installs the top-level kernels/ as miras_search.kernels: both must be in the wheel
for member in miras_search/cli/__init__.py miras_search/kernels/__init__.py miras_search/kernels/dispatch.py; do
    unzip -l "$ours" "$member" >/dev/null || { echo "error: $member is not in $ours" >&2; exit 1; }
done

echo "== the pinned wheels for CPython $py_version, x86-64 Linux"
"$py" -m pip download -q --no-deps "${target[@]}" -d "$wheels" "${pins[@]}"

echo "== unpacked into one site folder, pruned"
"$py" -m pip install -q --no-deps --no-index --no-compile --target "$site" "${target[@]}" "$wheels"/*.whl
for path in "${prune[@]}"; do rm -rf "${site:?}/$path"; done
find "$site" -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} +
find "$site" -name '*.map' -type f -delete
echo "unpacked: $(du -sm "$site" | cut -f1) MiB"

echo "== $out/site.tar.xz (xz -$xz_level)"
rm -f "$out/site.tar.xz" "$out/site.txt"
tar -C "$site" --sort=name --owner=0 --group=0 --numeric-owner -cf - . \
    | xz -"$xz_level" -T0 > "$out/site.tar.xz.part"
mv "$out/site.tar.xz.part" "$out/site.tar.xz"
# what is in it, for whoever finds the file later (it travels beside the bundle)
{
    echo "site.tar.xz for CPython $py_version, x86-64 Linux, from $(git -C "$root" rev-parse --short HEAD)"
    (cd "$site" && ls -d ./*.dist-info | sed 's|^\./||; s|\.dist-info$||')
} > "$out/site.txt"

# the call carries all of OUT_DIR (older wheels left there too) beside the tree
bytes="$(stat -c %s "$out/site.tar.xz")"
out_bytes="$(du -sb "$out" | cut -f1)"
tree_bytes="$(cd "$main" && git ls-files -z -co --exclude-standard | xargs -0 stat -c %s 2>/dev/null \
    | awk '{ s += $1 } END { print s + 0 }')"
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "bundle: $(mib "$bytes"); $out: $(mib "$out_bytes"), with the working tree that travels" \
     "($(mib "$tree_bytes")): $(mib $((out_bytes + tree_bytes))) of a device call's 64 MiB"
if [ "$bytes" -gt $((limit_mib * 1048576)) ]; then
    echo "error: the bundle is over LIMIT_MIB=$limit_mib MiB: prune more, or carry less" >&2
    exit 1
fi
if [ $((out_bytes + tree_bytes)) -gt $((64 * 1048576)) ]; then
    echo "warning: over 64 MiB with the tree: a device call would refuse it (clear $out of the rest)" >&2
fi

rel="${out#"$main"/}"
if [ "$rel" = "$out" ]; then
    echo "warning: $out is not inside $main, the checkout a device call sends: it cannot be carried" >&2
fi
# The device command (benchmarks/gpu_check.sh's header has the same): unpack, then put this
# tree's own miras_search over the bundle's (the tests import the installed package, and the
# bundle may be older than the tree), then the check, then its folder back as one tarball
cat <<EOF

Device call (the run tool): carry ["$rel"], timeout_s 600, command:
rm -rf /tmp/site /tmp/gc; mkdir -p /tmp/site && tar xJf $rel/site.tar.xz -C /tmp/site && rm -rf /tmp/site/miras_search && cp -r miras_search /tmp/site/ && rm -rf /tmp/site/miras_search/kernels && cp -r kernels /tmp/site/miras_search/kernels && export PYTHONPATH=/tmp/site || exit; AUTOTUNE_IN=$rel/autotune.tgz timeout -k 5 570 bash benchmarks/gpu_check.sh /tmp/gc; cp /tmp/gc/gpu.txt \$OUT/; tar czf \$OUT/gpu_check.tgz -C /tmp gc
EOF
