"""The Triton kernels compile for an H100 (sm_90) on this machine, GPU or not.

The interpreter tests check the kernels' math; only the compiler checks what a GPU launch needs
besides (constexpr-only globals, type-stable branches, tiles that fit shared memory). This runs
Triton's real compiler and the ptxas bundled with it for representative launches, each in a
fresh process (two at a time): kernels imported while TRITON_INTERPRET=1 is set (as the
interpreter tests do) are interpreted functions that cannot be compiled.

Two tiers. By default: every kernel family and branch at small tiles, and the widest shapes that
compile in seconds (5.5 minutes of ptxas; 3 minutes, two at a time, on an idle 2-core machine).
The other widest shapes and the paper's (``WIDE``: near the limits of ``kernels/limits.py``,
20 s to 2 min of ptxas each, 21 minutes in all) only with ``MIRAS_COMPILE_ALL=1``: run them
after changing a kernel or a limit (``MIRAS_COMPILE_ALL=1 python -m pytest
tests/test_kernels_compile.py -n 0``); ``benchmarks/kernel_resources.py`` records their
registers and shared memory.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys

import pytest

triton = pytest.importorskip("triton")

from miras_search.kernels.limits import triton_calibrated  # noqa: E402

# one worker compiles them all: the ``compiled`` fixture compiles every selected case, and under
# pytest-xdist every worker that ran a case of this module would compile them all again
pytestmark = pytest.mark.xdist_group("compile")

H100_SHARED_BYTES = 232_448  # the most shared memory one program may use on sm_90

_COMPILE = """
import json, sys, torch
from miras_search.kernels import BiasConfig
from miras_search.kernels.compile_check import compile_for_gpu, resource_usage
from miras_search.kernels.matrix_chunk.chunk import compile_specs as matrix_specs
from miras_search.kernels.matrix_chunk.kl import compile_specs as matrix_kl_specs
from miras_search.kernels.mlp_chunk import MlpMemoryConfig
from miras_search.kernels.mlp_chunk.chunk import compile_specs as mlp_specs
specs = {specs}
print(json.dumps([[name, vars(resource_usage(compile_for_gpu(k, s, p, w)))]
                  for name, k, s, p, w in specs]))
"""

MLP_CASES = {  # MlpMemoryConfig, bias, K, hidden, chunk, momentum, dtype
    "moneta-bf16": 'MlpMemoryConfig("gelu", True, "lq", q=4.0), BiasConfig("lp"), 32, 128, 16, False, torch.bfloat16',
    "yaad-fp32": 'MlpMemoryConfig("gelu", True, "l2"), BiasConfig("huber_switch"), 16, 64, 16, False, torch.float32',
    "memora-bf16": 'MlpMemoryConfig("gelu", True, "kl"), BiasConfig("l2"), 16, 64, 32, False, torch.bfloat16',
    "titans-fp32": 'MlpMemoryConfig("silu", False, "l2"), BiasConfig("l2"), 16, 64, 16, True, torch.float32',
    # the widest tiles kernels.limits admits (test_widest_cases_sit_on_the_limits): bf16
    # products (no LayerNorm), tf32x3 products (bf16 inputs, LayerNorm) and fp32 ones
    "l2-bf16-products-widest": 'MlpMemoryConfig("silu", False, "l2"), BiasConfig("l2"), 64, 256, 32, False, torch.bfloat16',
    "memora-bf16-tf32x3-widest": 'MlpMemoryConfig("gelu", True, "kl"), BiasConfig("l2"), 32, 128, 32, False, torch.bfloat16',
    "titans-fp32-widest": 'MlpMemoryConfig("gelu", True, "l2"), BiasConfig("l2"), 32, 128, 32, True, torch.float32',
    # lq retention with momentum: half the chunk of the others on chip (kernels.limits.LQ_MOMENTUM_SHARE)
    "lq-momentum-tf32x3-widest": 'MlpMemoryConfig("gelu", True, "lq", q=4.0), BiasConfig("lp"), 32, 128, 16, True, torch.bfloat16',
    # a channel-wise eta (two more input tiles) at the widest whole-W shapes
    "l2-bf16-products-widest-channel-eta": 'MlpMemoryConfig("silu", False, "l2"), BiasConfig("l2"), 64, 256, 32, False, torch.bfloat16, None, True',
    # Moneta as named: channel-wise eta and alpha (kernels/mlp_chunk/channel.py)
    "moneta-channel-gates-bf16-tf32x3-widest": 'MlpMemoryConfig("gelu", True, "lq", q=4.0), BiasConfig("lp"), 32, 128, 32, False, torch.bfloat16, None, True, True',
    "yaad-channel-gates-bf16-tf32x3-widest": 'MlpMemoryConfig("gelu", True, "l2", gradient_at="previous"), BiasConfig("huber_switch", sharpness=1.0, relative_sharpness=True), 32, 128, 32, False, torch.bfloat16, None, True, True, True',
    "l2-channel-alpha-bf16-products-widest": 'MlpMemoryConfig("silu", False, "l2"), BiasConfig("l2"), 64, 256, 32, False, torch.bfloat16, None, False, True',
    # momentum with a channel-wise alpha or kl retention (channel.py, kernels.channel_momentum): half the chunk
    "memora-momentum-bf16-tf32x3-widest": 'MlpMemoryConfig("gelu", True, "kl"), BiasConfig("l2"), 32, 128, 16, True, torch.bfloat16',
    "moneta-channel-gates-momentum-bf16-tf32x3-widest": 'MlpMemoryConfig("gelu", True, "lq", q=4.0), BiasConfig("lp"), 32, 128, 16, True, torch.bfloat16, None, True, True',
    "moneta-bf16-tf32x3-widest-channel-eta": 'MlpMemoryConfig("gelu", True, "lq", q=4.0), BiasConfig("lp"), 32, 128, 32, False, torch.bfloat16, None, True',
    # past those, the hidden dim in tiles (kernels/mlp_chunk/tiled.py), here forced at a small
    # shape with the most branches (lq's walks, momentum, a row-norm bias): it compiles. The
    # paper's K = 64 / hidden 256 take minutes each; every named model and precision there is in
    # benchmarks/results/kernel_resources_mlp_tiled_sm90.md (python benchmarks/kernel_resources.py --only-tiled)
    "lq-momentum-switch-hidden-tiles": 'MlpMemoryConfig("gelu", True, "lq"), BiasConfig("huber_switch"), 16, 64, 16, True, torch.bfloat16, 16',
    # and with channel-wise gates: Yaad's own (eta, alpha, delta), Moneta's (eta, alpha; lq),
    # alpha at l2's retained point (its gradient finished in walk E), eta beside momentum
    "yaad-channel-gates-hidden-tiles": 'MlpMemoryConfig("gelu", True, "l2", gradient_at="previous"), BiasConfig("huber_switch", sharpness=1.0, relative_sharpness=True), 16, 64, 16, False, torch.bfloat16, 16, True, True, True',
    "moneta-channel-gates-hidden-tiles-fp32": 'MlpMemoryConfig("gelu", True, "lq", q=4.0), BiasConfig("lp"), 16, 64, 16, False, torch.float32, 16, True, True',
    "retained-channel-alpha-coordinate-hidden-tiles": 'MlpMemoryConfig("silu", False, "l2"), BiasConfig("huber_coordinate"), 16, 64, 16, False, torch.bfloat16, 16, False, True, True',
    "momentum-channel-eta-hidden-tiles": 'MlpMemoryConfig("gelu", True, "l2"), BiasConfig("l2"), 16, 64, 16, True, torch.bfloat16, 16, True',
    # Memora as named (kl's exact per-token read; channel-wise eta and alpha): W on chip at its
    # widest, hidden tiles forced small, and dispatch's layout at the paper's head at chunk 64,
    # whose backward needs 240 KiB with 8 warps (tiled.num_warps gives kl 4: 176)
    "memora-channel-gates-bf16-tf32x3-widest": 'MlpMemoryConfig("gelu", True, "kl"), BiasConfig("l2"), 32, 128, 32, False, torch.bfloat16, None, True, True',
    "memora-channel-gates-hidden-tiles": 'MlpMemoryConfig("gelu", True, "kl"), BiasConfig("l2"), 16, 64, 16, False, torch.bfloat16, 16, True, True',
    "memora-channel-gates-paper-chunk-64": 'MlpMemoryConfig("gelu", True, "kl"), BiasConfig("l2"), 64, 256, 64, False, torch.bfloat16, None, True, True',
    # momentum with a channel-wise alpha in hidden tiles (kernels.channel_momentum per tile): forced
    # small, and at the paper's head the widest admitted: Moneta's gates with momentum at chunk 32
    # (tf32x3 products: 148 KiB; chunk 64 needs 384), bf16 products at chunk 64 (140 KiB)
    "momentum-channel-alpha-retained-hidden-tiles": 'MlpMemoryConfig("silu", True, "l2"), BiasConfig("l2"), 16, 64, 16, True, torch.bfloat16, 16, False, True',
    "moneta-channel-gates-momentum-paper-chunk-32": 'MlpMemoryConfig("gelu", True, "lq", q=4.0), BiasConfig("lp"), 64, 256, 32, True, torch.bfloat16, None, True, True',
    "momentum-channel-gates-bf16-products-paper-chunk-64": 'MlpMemoryConfig("silu", False, "lq"), BiasConfig("huber_norm"), 64, 256, 64, True, torch.bfloat16, None, True, True',
    "memora-momentum-paper-chunk-32": 'MlpMemoryConfig("gelu", True, "kl"), BiasConfig("l2"), 64, 256, 32, True, torch.bfloat16, None, True, True',
    # elastic retention: the exact last read and shrink' on chip (W on chip: channel-wise eta and
    # alpha at the widest, 184 KiB) or per tile (raw slots, walk F: the paper's head, momentum,
    # channel gates and the exact soft threshold at chunk 32)
    "elastic-channel-gates-bf16-tf32x3-widest": 'MlpMemoryConfig("gelu", True, "elastic", threshold=0.01), BiasConfig("huber_norm"), 32, 128, 32, False, torch.bfloat16, None, True, True',
    "elastic-hard-momentum-channel-gates-paper-chunk-32": 'MlpMemoryConfig("gelu", True, "elastic", threshold=0.01, smooth=False), BiasConfig("huber_norm"), 64, 256, 32, True, torch.bfloat16, None, True, True',
    # the wide cases' branches at small tiles, for the default tier
    "elastic-channel-gates-small": 'MlpMemoryConfig("gelu", True, "elastic", threshold=0.01), BiasConfig("huber_norm"), 16, 64, 16, False, torch.bfloat16, None, True, True',
    "memora-momentum-small": 'MlpMemoryConfig("gelu", True, "kl"), BiasConfig("l2"), 16, 64, 16, True, torch.bfloat16',
    "moneta-channel-gates-momentum-small": 'MlpMemoryConfig("gelu", True, "lq", q=4.0), BiasConfig("lp"), 16, 64, 16, True, torch.bfloat16, None, True, True',
}
WIDEST = {"l2-bf16-products-widest": (64, 256, 32, "bf16"), "memora-bf16-tf32x3-widest": (32, 128, 32, "tf32x3"),
          "titans-fp32-widest": (32, 128, 32, "fp32")}
MATRIX_CASES = {  # bias, K, V, chunk, alpha, momentum, dtype[, backward]
    "gated_deltanet-bf16": 'BiasConfig("l2"), 64, 64, 64, "head", False, torch.bfloat16',
    "gla-channel-fp32": 'BiasConfig("dot"), 32, 32, 16, "channel", False, torch.float32',
    "huber_switch-momentum-bf16-tf32x3": 'BiasConfig("huber_switch"), 64, 64, 64, "head", True, torch.bfloat16',
    "split-backward-momentum-bf16": 'BiasConfig("l2"), 64, 64, 64, "head", True, torch.bfloat16, "split"',
    # a step per key channel (eta [B, T, H, K]), with a threshold per value channel for Yaad's switch
    "channel-eta-delta-switch-momentum-bf16-tf32x3": 'BiasConfig("huber_switch"), 64, 64, 64, "head", True, torch.bfloat16, "fused", "retained", "channel", "channel"',
    # lq retention (Moneta's), the whole matrix in one program: at the row-norm limits
    "lq-momentum-bf16-widest": 'BiasConfig("lp"), 128, 128, 64, "head", True, torch.bfloat16, "fused", "retained", "head", "head", "lq"',
    "lq-momentum-switch-tf32x3-widest": 'BiasConfig("huber_switch"), 64, 64, 64, "head", True, torch.bfloat16, "fused", "retained", "channel", "channel", "lq"',
    # momentum with a channel-wise alpha (Moneta's axes on a matrix memory): its j-by-j products
    "lq-momentum-channel-alpha-bf16-widest": 'BiasConfig("lp"), 128, 128, 64, "channel", True, torch.bfloat16, "fused", "retained", "channel", "head", "lq"',
    # the Omega window with momentum (kernels.omega): its momentum mask, at the row-norm limits
    "lq-momentum-window-mask-bf16-widest": 'BiasConfig("lp"), 128, 128, 64, "head", True, torch.bfloat16, "fused", "retained", "head", "head", "lq", True',
    # the wide cases' branches at small tiles, for the default tier
    "huber_switch-momentum-small": 'BiasConfig("huber_switch"), 16, 16, 16, "head", True, torch.bfloat16',
    "lq-momentum-channel-alpha-small": 'BiasConfig("lp"), 16, 16, 16, "channel", True, torch.bfloat16, "fused", "retained", "channel", "head", "lq"',
    "lq-momentum-window-mask-small": 'BiasConfig("lp"), 16, 16, 16, "head", True, torch.bfloat16, "fused", "retained", "head", "head", "lq", True',
}
# the other gate / precision mixes of the matrix kernels compile too (at most 164 KiB of shared
# memory): benchmarks/results/kernel_resources_matrix_gates_sm90.md
MATRIX_KL_CASES = {  # bias, K, V, chunk, alpha, dtype, eta, delta[, momentum]: kl's kernel (matrix_chunk/kl.py)
    "kl-switch-channel-delta-tf32x3-widest": 'BiasConfig("huber_switch"), 64, 64, 64, "head", torch.bfloat16, "channel", "channel"',
    # with momentum every token's write weights take one more product (kl_read._kl_read_mom_ch):
    # 224 KiB of shared memory in the backward at the widest shape
    "kl-momentum-tf32x3-widest": 'BiasConfig("l2"), 128, 128, 64, "head", torch.bfloat16, "channel", "head", True',
    # the wide cases' branches at small tiles, for the default tier
    "kl-switch-channel-delta-small": 'BiasConfig("huber_switch"), 16, 16, 16, "head", torch.bfloat16, "channel", "channel"',
    "kl-momentum-small": 'BiasConfig("l2"), 16, 16, 16, "head", torch.bfloat16, "channel", "head", True',
}
COMPILE_ALL = os.environ.get("MIRAS_COMPILE_ALL") == "1"
WIDE = {  # 20 s to 2 min of ptxas each on this machine: only with MIRAS_COMPILE_ALL=1
    "memora-bf16-tf32x3-widest", "titans-fp32-widest", "lq-momentum-tf32x3-widest",
    "moneta-channel-gates-bf16-tf32x3-widest", "memora-momentum-bf16-tf32x3-widest",
    "moneta-channel-gates-momentum-bf16-tf32x3-widest", "moneta-bf16-tf32x3-widest-channel-eta",
    "memora-channel-gates-bf16-tf32x3-widest", "memora-channel-gates-paper-chunk-64",
    "moneta-channel-gates-momentum-paper-chunk-32", "momentum-channel-gates-bf16-products-paper-chunk-64",
    "memora-momentum-paper-chunk-32", "elastic-channel-gates-bf16-tf32x3-widest",
    "elastic-hard-momentum-channel-gates-paper-chunk-32",
    "huber_switch-momentum-bf16-tf32x3", "channel-eta-delta-switch-momentum-bf16-tf32x3",
    "lq-momentum-bf16-widest", "lq-momentum-switch-tf32x3-widest", "lq-momentum-channel-alpha-bf16-widest",
    "lq-momentum-window-mask-bf16-widest", "kl-switch-channel-delta-tf32x3-widest", "kl-momentum-tf32x3-widest",
}


def _runs(case: str) -> bool:
    return COMPILE_ALL or case not in WIDE


def _cases(cases: dict[str, str]) -> list:
    skip = pytest.mark.skip(reason="a wide shape: minutes of ptxas; set MIRAS_COMPILE_ALL=1 to compile it")
    return [pytest.param(case, marks=() if _runs(case) else skip) for case in cases]


FAMILIES = {  # test function -> (its cases, the compile_specs function in _COMPILE)
    "test_mlp_kernels_compile_for_h100": (MLP_CASES, "mlp_specs"),
    "test_matrix_kernels_compile_for_h100": (MATRIX_CASES, "matrix_specs"),
    "test_matrix_kl_kernels_compile_for_h100": (MATRIX_KL_CASES, "matrix_kl_specs"),
}


def _compile_in_fresh_process(specs: str) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-c", _COMPILE.format(specs=specs)], env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="session")
def compiled(request) -> dict[tuple[str, str], subprocess.CompletedProcess]:
    """Every selected compile case, compiled two processes at a time: ptxas is single-threaded
    and most of the time here (minutes a case uncached), and the CI machine has two cores.
    Session-scoped, so that it compiles once per process even if this module's cases reach a
    worker split (with xdist_group ignored, test_suite_groups.py, two workers each compiled all)."""
    selected = [(item.originalname, item.callspec.params["case"]) for item in request.session.items
                if getattr(item, "originalname", None) in FAMILIES and _runs(item.callspec.params["case"])]
    specs = [f"{FAMILIES[test][1]}({FAMILIES[test][0][case]})" for test, case in selected]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        return dict(zip(selected, pool.map(_compile_in_fresh_process, specs), strict=True))


def _assert_fits(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stderr[-3000:]
    calibrated = triton_calibrated(triton.__version__)  # older Triton: it must compile, no more
    for name, usage in json.loads(done.stdout.strip().splitlines()[-1]):
        assert 0 < usage["registers"] <= 255, f"{name}: {usage}"
        assert usage["shared"] <= H100_SHARED_BYTES or not calibrated, (
            f"{name} needs {usage['shared']} bytes of shared memory")


@pytest.mark.parametrize("case", _cases(MLP_CASES))
def test_mlp_kernels_compile_for_h100(compiled, case):
    _assert_fits(compiled[("test_mlp_kernels_compile_for_h100", case)])


@pytest.mark.parametrize("case", _cases(MATRIX_CASES))
def test_matrix_kernels_compile_for_h100(compiled, case):
    _assert_fits(compiled[("test_matrix_kernels_compile_for_h100", case)])


@pytest.mark.parametrize("case", _cases(MATRIX_KL_CASES))
def test_matrix_kl_kernels_compile_for_h100(compiled, case):
    _assert_fits(compiled[("test_matrix_kl_kernels_compile_for_h100", case)])


def test_the_wide_tier_names_cases_and_leaves_each_family_a_default_case():
    every = {**MLP_CASES, **MATRIX_CASES, **MATRIX_KL_CASES}
    assert set(every) >= WIDE, sorted(WIDE - set(every))
    for cases, _ in FAMILIES.values():
        assert set(cases) - WIDE


def test_widest_cases_sit_on_the_limits():
    """The widest compile cases of the whole-W kernel are admitted, and twice their chunk or
    hidden dim goes to the tiled one; the tiled one takes K up to 64 and no wider: widening the
    limits means compiling (and listing here) the new widest shapes."""
    from miras_search.kernels.limits import (
        MLP_TILED_MAX_CHUNK_K,
        MLP_TILED_MAX_K,
        mlp_hidden_tile,
        mlp_shape_problem,
    )

    for key_dim, hidden, chunk, dtype in WIDEST.values():
        assert mlp_hidden_tile(key_dim, hidden, chunk, dtype) is None
        assert mlp_hidden_tile(key_dim, hidden, 2 * chunk, dtype) is not None
        assert mlp_hidden_tile(key_dim, 2 * hidden, chunk, dtype) is not None
    # lq with momentum: its widest whole-W case above, twice its chunk tiled (248 KiB on chip)
    assert mlp_hidden_tile(32, 128, 16, "tf32x3", lq_momentum=True) is None
    assert mlp_hidden_tile(32, 128, 32, "tf32x3", lq_momentum=True) is not None
    assert mlp_hidden_tile(32, 128, 32, "tf32x3") is None
    # momentum with a channel-wise alpha (kl's too): that share with W on chip, then tiles up to
    # chunk x K = 2048
    assert mlp_hidden_tile(32, 128, 32, "tf32x3", lq_momentum=True) is not None
    assert mlp_shape_problem(MLP_TILED_MAX_K, 4 * MLP_TILED_MAX_K, 32, "tf32x3", channel_momentum=True) is None
    assert mlp_shape_problem(MLP_TILED_MAX_K, 4 * MLP_TILED_MAX_K, 64, "tf32x3", channel_momentum=True) is not None
    for products, widest in MLP_TILED_MAX_CHUNK_K.items():
        chunk = widest // MLP_TILED_MAX_K
        assert mlp_shape_problem(MLP_TILED_MAX_K, 4 * MLP_TILED_MAX_K, chunk, products) is None
        assert mlp_shape_problem(MLP_TILED_MAX_K, 4 * MLP_TILED_MAX_K, 2 * chunk, products) is not None
        assert mlp_shape_problem(2 * MLP_TILED_MAX_K, 8 * MLP_TILED_MAX_K, 16, products) is not None


def test_interpreted_kernels_are_refused_with_a_reason():
    """In a process where the kernels were decorated under the interpreter, compile_for_gpu says
    why it cannot compile instead of failing deep inside Triton."""
    code = (
        "import os; os.environ['TRITON_INTERPRET'] = '1'\n"
        "from miras_search.kernels.compile_check import compile_for_gpu\n"
        "from miras_search.kernels.matrix_chunk.chunk import _fwd_kernel\n"
        "compile_for_gpu(_fwd_kernel, {})\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "TRITON_INTERPRET" in done.stderr and "not a compilable Triton kernel" in done.stderr
