"""Comparisons the kernel test files share (imported by them; no tests here)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from miras_search.presets import preset
from miras_search.schema import ModelPoint


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def assert_last_head_as_alone(run: Callable[..., torch.Tensor], inputs: dict[str, torch.Tensor],
                              per_head: tuple[str, ...]) -> None:
    """The last head's output and every gradient of ``run(**inputs)`` equal those of a run of
    that head alone (H = 1): a kernel must place each head's data the same however many heads
    come before it. Token inputs are [B, T, H, ...]; the names in ``per_head`` are learned
    parameters [H, ...]. ``inputs`` are made to require gradients in place (no copy: these
    tests use buffers of many GB)."""
    def last(name: str, t: torch.Tensor) -> torch.Tensor:
        return t[-1:] if name in per_head else t[:, :, -1:]

    names = list(inputs)
    full = {n: t.requires_grad_() for n, t in inputs.items()}
    o = run(**full)
    do = torch.randn_like(o)
    grads = torch.autograd.grad(o, [full[n] for n in names], do)
    o_last, do_last = last("o", o).detach().clone(), last("do", do).clone()
    grads_last = {n: last(n, g).clone() for n, g in zip(names, grads, strict=True)}
    del o, do, grads  # the full-size buffers (the stored states go with o's graph)
    alone = {n: last(n, t).detach().contiguous().requires_grad_() for n, t in inputs.items()}
    o_alone = run(**alone)
    grads_alone = torch.autograd.grad(o_alone, [alone[n] for n in names], do_last)
    assert rel_err(o_last, o_alone) < 1e-6
    for name, g_alone in zip(names, grads_alone, strict=True):
        assert rel_err(grads_last[name], g_alone) < 1e-6, f"d{name} of the last head differs from its own run"


def per_head_preset(name: str) -> ModelPoint:
    """The preset with every channel-wise gate made per-head: the gates every kernel takes (the
    MLP kernels take the named models' channel-wise ones too, in both layouts; the matrix kernel
    a channel-wise alpha with gd only)."""
    spec = preset(name).model_dump()
    for axis, gate in (("algorithm", "eta"), ("retention", "alpha"), ("bias", "delta")):
        if isinstance(spec[axis].get(gate), dict) and spec[axis][gate]["mode"] == "channel":
            spec[axis][gate].update(mode="head", rank=None)
    return ModelPoint.model_validate(spec)


def assert_lm_trains_the_same_through_the_kernel(spec: dict, device: str) -> None:
    """A whole LM built from ``spec`` (a ModelPoint's dump), with train.kernel 'triton' and then
    'torch' from the same seed: the same logits and parameter gradients (relative 5e-3)."""
    from miras_search.model import build_model

    x = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(0)).to(device)
    results = []
    for kernel in ("triton", "torch"):
        torch.manual_seed(0)
        point = ModelPoint.model_validate({**spec, "train": {**spec["train"], "kernel": kernel}})
        model = build_model(point, device=device).float()
        logits = model(x)
        logits.float().logsumexp(-1).mean().backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results.append((logits.detach(), grads))
    (logits_k, grads_k), (logits_t, grads_t) = results
    assert rel_err(logits_k, logits_t) < 5e-3
    assert rel_err(grads_k, grads_t) < 5e-3
