"""The Triton kernels compile for an H100 (sm_90) on this machine, GPU or not.

The interpreter tests check the kernels' math; only the compiler checks what a GPU launch needs
besides (constexpr-only globals, type-stable branches, tiles that fit shared memory). This runs
Triton's real compiler and the ptxas bundled with it for representative launches.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from miras_search.kernels import BiasConfig
from miras_search.kernels.compile_check import compile_for_gpu, resource_usage
from miras_search.kernels.matrix_chunk.chunk import compile_specs as matrix_specs
from miras_search.kernels.mlp_chunk import MlpMemoryConfig
from miras_search.kernels.mlp_chunk.chunk import compile_specs as mlp_specs

H100_SHARED_BYTES = 232_448  # the most shared memory one program may use on sm_90

MLP_CASES = {
    "moneta-bf16": (MlpMemoryConfig("gelu", True, "lq", q=4.0), BiasConfig("lp"), 32, 128, 16, False, torch.bfloat16),
    "yaad-fp32": (MlpMemoryConfig("gelu", True, "l2"), BiasConfig("huber_switch"), 16, 64, 16, False, torch.float32),
    "memora-bf16": (MlpMemoryConfig("gelu", True, "kl"), BiasConfig("l2"), 16, 64, 32, False, torch.bfloat16),
    "titans-fp32": (MlpMemoryConfig("silu", False, "l2"), BiasConfig("l2"), 16, 64, 16, True, torch.float32),
}
MATRIX_CASES = {
    "gated_deltanet-bf16": (BiasConfig("l2"), 64, 64, 64, "head", False, torch.bfloat16),
    "gla-channel-fp32": (BiasConfig("dot"), 32, 32, 16, "channel", False, torch.float32),
    "huber_switch-momentum-bf16": (BiasConfig("huber_switch"), 32, 32, 32, "head", True, torch.bfloat16),
}


def _compile_all(specs) -> None:
    for name, kernel, scalars, pointers, warps in specs:
        usage = resource_usage(compile_for_gpu(kernel, scalars, pointers, warps))
        assert 0 < usage.registers <= 255, f"{name}: {usage}"
        assert usage.shared <= H100_SHARED_BYTES, f"{name} needs {usage.shared} bytes of shared memory"


@pytest.mark.parametrize("case", MLP_CASES)
def test_mlp_kernels_compile_for_h100(case):
    config, bias, K, hidden, chunk, momentum, dtype = MLP_CASES[case]
    _compile_all(mlp_specs(config, bias, K, hidden, chunk, momentum, dtype))


@pytest.mark.parametrize("case", MATRIX_CASES)
def test_matrix_kernels_compile_for_h100(case):
    bias, K, V, chunk, alpha, momentum, dtype = MATRIX_CASES[case]
    _compile_all(matrix_specs(bias, K, V, chunk, alpha, momentum, dtype))
