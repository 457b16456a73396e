"""The conformance suite every registered axis option runs through, as Optuna's ``testing``
package serves every storage and sampler.

The cases are read from the registries (``AxisOption.examples()`` of each option of each axis),
so a new bias, retention gate, algorithm or memory is checked without being listed anywhere:

- ``axis_cases()``: every combination of the options' examples that ``ModelPoint`` accepts;
- ``check_forms(rule, ...)``: a fast form against its oracle in float64, forward output and the
  gradient of every input (q, k, v, each gate, each initial parameter), through one comparison,
  ``assert_close``: the chunked form with chunk 1 against the token-by-token recurrence, the
  chunked minibatch form against the slow materialising loop, the exact chunked delta rule
  against the recurrence;
- ``check_kernel(point)``: where a Triton kernel covers a point, the kernel (float32, Triton's
  interpreter without a GPU) against the PyTorch chunked form in float64, over
  ``kernel_cases()``, a few cases that hold every option a kernel covers;
- ``uncovered_kinds(cases)``: the registered kinds no case exercises (an option whose examples
  form no valid point), which a test asserts to be empty;
- ``phi_problems()``: every bias whose hand-written gradient is meant to be exact, against
  autograd of its loss.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from pydantic import ValidationError
from torch import Tensor

from miras_search.memory import MemoryRule, memory_forward
from miras_search.memory.testing import random_inputs, reference_chunked_forward
from miras_search.schema import AXES, ModelPoint
from miras_search.schema.algorithm import MemoryAlgorithm
from miras_search.schema.bias import AttentionalBias, HuberBias
from miras_search.schema.memory import MemoryArchitecture
from miras_search.schema.retention import RetentionGate

TOL = 1e-6
"""Largest relative error (||fast - slow|| / ||slow||, per tensor) in float64."""
KERNEL_TOL = 1e-4
"""Largest relative error of a float32 kernel against the float64 PyTorch form."""
AXIS_BASES = {"memory": MemoryArchitecture, "bias": AttentionalBias,
              "retention": RetentionGate, "algorithm": MemoryAlgorithm}


def relative_error(a: Tensor, b: Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def assert_close(fast: Sequence[Tensor], slow: Sequence[Tensor], what: str, tol: float = TOL,
                 names: Sequence[str] = ("output", "q", "k", "v")) -> None:
    """Each tensor of ``fast`` within ``tol`` relative error of its twin in ``slow``; the failure
    names the tensor (by ``names``, then 'gate/param #i') and the error."""
    assert len(fast) == len(slow), f"{what}: {len(fast)} tensors against {len(slow)}"
    for i, (a, b) in enumerate(zip(fast, slow, strict=True)):
        err = relative_error(a.to(b.dtype), b)
        name = names[i] if i < len(names) else "gate/param"
        assert err <= tol, f"{what}: {name} #{i} relative error {err:.2e} > {tol}"


def forward_and_grads(run: Callable[..., Tensor], inputs) -> list[Tensor]:
    """[o, d(sum(o * w))/d leaf for every leaf] with a fixed random weighting w; the leaves are
    q, k, v, the gates present and the initial parameters."""
    q, k, v, gates, params = inputs
    leaves = [x for x in (q, k, v, gates.eta, gates.alpha, gates.theta, gates.delta,
                          gates.write_key, gates.gamma, *params)
              if x is not None]
    out = run(q, k, v, gates, params)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1),
                         dtype=torch.float64).to(out.dtype)  # the same w in every dtype
    grads = torch.autograd.grad((out * weight).sum(), leaves, allow_unused=True)
    return [out.detach()] + [torch.zeros_like(x) if g is None else g
                             for x, g in zip(leaves, grads, strict=True)]


def channel_gates(rule: MemoryRule) -> tuple[str, ...]:
    return tuple(name for name, mode in rule.gate_modes.items() if mode == "channel")


def alpha_low(rule: MemoryRule) -> float:
    """Lower end of the random alpha.

    Yaad (MLP memory with LayerNorm, Huber switch) with alpha in [0.9, 1] is chaotic over ~100
    tokens: its weights decay geometrically, the LayerNorm backward's 1/sigma grows and the
    switch's l1 branch keeps a step of size delta, so a 1e-13 change of v reaches O(1) by token
    ~150 (with either gradient point, before or after retention) and two correct implementations
    that round differently disagree there. With alpha in [0.99, 1] the same inputs are stable.
    """
    switch = isinstance(rule.bias, HuberBias) and rule.bias.variant == "switch"
    return 0.99 if rule.memory == "mlp" and switch else 0.9


def case_inputs(rule: MemoryRule, length: int, seed: int = 0, batch: int = 2,
                dtype: torch.dtype = torch.float64, dim: int | None = None):
    """Random inputs (requiring gradients) for ``rule``: 2 heads, head dim ``dim`` (default 4,
    8 for mlp memories: tiny ones are badly conditioned)."""
    dim = dim or (8 if rule.memory == "mlp" else 4)
    return random_inputs(rule, batch, length, 2, dim, dtype=dtype, seed=seed,
                         channel=channel_gates(rule), requires_grad=True,
                         alpha_low=alpha_low(rule))


def check_forms(rule: MemoryRule, length: int, chunk: int, against: str, seed: int = 0,
                grads: bool = True, batch: int = 2) -> None:
    """The chunked form with ``chunk`` against ``against``: 'recurrent' (the token-by-token
    recurrence), 'reference' (the slow materialising chunk loop) or 'exact' (the exact chunked
    delta rule against the recurrence); float64, forward and (``grads``) every gradient."""
    inputs = case_inputs(rule, length, seed, batch)
    form = "exact_delta" if against == "exact" or rule.write_key == "lerp" else "minibatch"

    def fast(*args):
        return memory_forward(rule, *args, chunk_size=chunk, chunk_form=form)

    def slow(*args):
        if against == "reference":
            return reference_chunked_forward(rule, *args, chunk_size=chunk)
        return memory_forward(rule, *args, mode="recurrent")

    what = f"{against} b={chunk} T={length}"
    if grads:
        assert_close(forward_and_grads(fast, inputs), forward_and_grads(slow, inputs), what)
    else:
        with torch.no_grad():
            assert_close([fast(*inputs)], [slow(*inputs)], what)


def check_kernel(point: ModelPoint, length: int = 19, chunk: int = 16, dim: int = 16) -> None:
    """The Triton kernel that covers ``point`` (float32; the interpreter without a GPU) against
    the PyTorch chunked minibatch form in float64: forward and every gradient."""
    rule = MemoryRule.from_point(point)
    inputs = case_inputs(rule, length, batch=1, dim=dim)
    wide = forward_and_grads(
        lambda *a: memory_forward(rule, *a, chunk_size=chunk, chunk_form="minibatch"), inputs)
    q, k, v, gates, params = inputs
    narrow = [x.detach().float().requires_grad_() for x in (q, k, v)]
    fields = {name: None if x is None else x.detach().float().requires_grad_()
              for name, x in vars(gates).items()}
    narrow_gates = type(gates)(**fields)
    narrow_params = [p.detach().float().requires_grad_() for p in params]
    fast = forward_and_grads(
        lambda *a: memory_forward(rule, *a, chunk_size=chunk, chunk_form="minibatch",
                                  kernel="triton"),
        (*narrow, narrow_gates, narrow_params))
    assert_close(fast, wide, f"kernel b={chunk} T={length}", tol=KERNEL_TOL)


def axis_examples() -> dict[str, list[dict]]:
    """Each axis's option examples, in registry order."""
    return {axis: [example for option in base.registry.values() for example in option.examples()]
            for axis, base in AXIS_BASES.items()}


def axis_cases() -> list[tuple[str, ModelPoint]]:
    """(label, point) for every combination of the examples that ModelPoint accepts; every other
    combination takes channel-wise gates (alpha and eta per layer input channel, delta per value
    channel) where its options have them (implicit: a scalar eta only)."""
    examples = axis_examples()
    points = []
    for i, (mem, bias, ret, alg) in enumerate(itertools.product(*(examples[a] for a in AXES))):
        bias, ret, alg = dict(bias), dict(ret), dict(alg)
        if i % 2:
            if "alpha" in RetentionGate.registry[ret["kind"]].model_fields:
                ret["alpha"] = {"mode": "channel"}
            if alg["kind"] != "implicit" and "eta" in MemoryAlgorithm.registry[alg["kind"]].model_fields:
                alg["eta"] = {"mode": "channel"}
            if "delta" in bias:
                bias["delta"] = {"mode": "channel"}
        try:
            point = ModelPoint(memory=mem, bias=bias, retention=ret, algorithm=alg)
        except ValidationError:
            continue
        label = "-".join(
            [mem["kind"], bias["kind"] + bias.get("variant", "")[:2], ret["kind"], alg["kind"]]
        ) + ("-ch" if i % 2 else "")
        points.append((label, point))
    return points


def kernel_cases(cases: Sequence[tuple[str, ModelPoint]]) -> list[tuple[str, ModelPoint]]:
    """The fewest cases (greedily, in order) that a Triton kernel covers and that together hold
    every option label (``label()``, e.g. each Huber variant) any covered case holds, per axis."""
    from miras_search.kernels import kernel_for

    chosen, seen = [], set()
    for label, point in cases:
        if kernel_for(point) is None:
            continue
        labels = {(axis, getattr(point, axis).label()) for axis in AXES}
        labels |= {(f"memory+{axis}", f"{point.memory.kind}+{getattr(point, axis).label()}")
                   for axis in ("bias", "retention", "algorithm")}
        if labels - seen:
            chosen.append((label, point))
            seen |= labels
    return chosen


def uncovered_kinds(cases: Sequence[tuple[str, ModelPoint]]) -> dict[str, set[str]]:
    """Per axis, the registered kinds with examples that no case exercises."""
    covered = {axis: {getattr(point, axis).kind for _, point in cases} for axis in AXES}
    return {
        axis: {kind for kind, option in base.registry.items() if option.examples()} - covered[axis]
        for axis, base in AXIS_BASES.items()
    }


def phi_problems(trials: int = 5, delta: float = 0.7) -> list[str]:
    """Every bias example whose ``phi`` is meant to be the loss's gradient (``exact_phi``) and
    is not, against autograd of ``loss`` (float64, random errors); empty when all agree."""
    problems = []
    gen = torch.Generator().manual_seed(0)
    for example in axis_examples()["bias"]:
        for variant in ({}, {"smooth": False}):
            option = AttentionalBias.registry[example["kind"]]
            if variant and "smooth" not in option.model_fields:
                continue
            bias = option.model_validate({**example, **variant})
            if not bias.exact_phi:
                continue
            for _ in range(trials):
                e = torch.randn(3, 6, generator=gen, dtype=torch.float64, requires_grad=True)
                v = torch.randn(3, 6, generator=gen, dtype=torch.float64)
                d = torch.full((3, 1), delta, dtype=torch.float64)
                (expected,) = torch.autograd.grad(bias.loss(e, v, d).sum(), e)
                got = bias.phi(e.detach(), v, d)
                if not torch.allclose(got, expected, rtol=1e-10, atol=1e-12):
                    problems.append(f"{bias.label()} {variant or ''}: phi is not d loss / d e")
                    break
    return problems
