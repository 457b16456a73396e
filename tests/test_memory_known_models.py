"""Known sequence models, written here independently, reproduced by the memory ops (float64).

With l2 retention and gradient_at 'retained' (the default) the ops "retain, then learn": the
step's gradient is taken at the retained memory, W_t = alpha_t W_{t-1} - eta_t (alpha_t W_{t-1}
k_t - v_t) k_t^T, which is Gated DeltaNet's (and Gated DeltaProduct's) order, so these models are
called with alpha = exp(g), eta = beta and their own k, v (no remapping of the inputs). Titans
(and Yaad) take it at W_{t-1} ('previous'), as their papers write the update.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from miras_search.memory import MemoryGates, MemoryRule, memory_forward
from miras_search.presets import preset

TOL = 1e-6
B, T, H, K = 2, 37, 2, 6
FORMS = [
    {"mode": "recurrent"},
    {"chunk_size": 1},
    {"chunk_size": 8, "chunk_form": "exact_delta"},
]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def _data(seed: int = 0, steps: int = 1):
    gen = torch.Generator().manual_seed(seed)
    shape = (B, T, steps, H) if steps > 1 else (B, T, H)
    q = torch.randn(B, T, H, K, generator=gen, dtype=torch.float64)
    k = F.normalize(torch.randn(*shape, K, generator=gen, dtype=torch.float64), dim=-1)
    v = torch.randn(*shape, K, generator=gen, dtype=torch.float64)
    beta = torch.rand(*shape, generator=gen, dtype=torch.float64)
    g = -0.2 * torch.rand(B, T, H, generator=gen, dtype=torch.float64)  # log decay
    return q, k, v, beta, g


def fla_naive_gated_delta(q, k, v, g, beta, scale):
    """fla's naive recurrence; state h: [B, H, K, V]."""
    h = q.new_zeros(B, H, K, v.shape[-1])
    out = []
    for t in range(q.shape[1]):
        h = h * g[:, t].exp()[..., None, None]
        v_new = beta[:, t, :, None] * (v[:, t] - torch.einsum("bhk,bhkv->bhv", k[:, t], h))
        h = h + torch.einsum("bhk,bhv->bhkv", k[:, t], v_new)
        out.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, h))
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("form", FORMS)
def test_gated_deltanet_matches_fla_naive(form: dict) -> None:
    q, k, v, beta, g = _data()
    scale = K ** -0.5
    expected = fla_naive_gated_delta(q, k, v, g, beta, scale)
    gates = MemoryGates(eta=beta, alpha=g.exp())
    rule = MemoryRule.from_point(preset("gated_deltanet"))
    out = memory_forward(rule, q * scale, k, v, gates, [], **form)
    assert _rel(out, expected) <= TOL


@pytest.mark.parametrize("form", FORMS)
def test_deltanet_matches_delta_rule(form: dict) -> None:
    q, k, v, beta, _ = _data(1)
    expected = fla_naive_gated_delta(q, k, v, torch.zeros_like(beta), beta, 1.0)
    out = memory_forward(MemoryRule.from_point(preset("deltanet")), q, k, v,
                         MemoryGates(eta=beta), [], **form)
    assert _rel(out, expected) <= TOL


@pytest.mark.parametrize("form", FORMS)
def test_longhorn_matches_its_closed_form(form: dict) -> None:
    q, k, v, beta, _ = _data(2)
    s = q.new_zeros(B, H, K, K)  # [K, V]
    expected = []
    for t in range(T):
        kt, vt = k[:, t], v[:, t]
        eps = beta[:, t] / (1 + beta[:, t] * kt.square().sum(-1))
        err = torch.einsum("bhk,bhkv->bhv", kt, s) - vt
        s = s - eps[..., None, None] * torch.einsum("bhk,bhv->bhkv", kt, err)
        expected.append(torch.einsum("bhk,bhkv->bhv", q[:, t], s))
    out = memory_forward(MemoryRule.from_point(preset("longhorn")), q, k, v,
                         MemoryGates(eta=beta), [], **form)
    assert _rel(out, torch.stack(expected, 1)) <= TOL


@pytest.mark.parametrize("form", FORMS)
def test_gated_deltaproduct_matches_householder_products(form: dict) -> None:
    steps = 2
    q, k, v, beta, g = _data(3, steps)
    h = q.new_zeros(B, H, K, K)
    expected = []
    for t in range(T):
        h = h * g[:, t].exp()[..., None, None]  # decay once per token
        for j in range(steps):
            kj, vj = k[:, t, j], v[:, t, j]
            v_new = beta[:, t, j, :, None] * (vj - torch.einsum("bhk,bhkv->bhv", kj, h))
            h = h + torch.einsum("bhk,bhv->bhkv", kj, v_new)
        expected.append(torch.einsum("bhk,bhkv->bhv", q[:, t], h))
    out = memory_forward(MemoryRule.from_point(preset("deltaproduct")), q, k, v,
                         MemoryGates(eta=beta, alpha=g.exp()), [], **form)
    assert _rel(out, torch.stack(expected, 1)) <= TOL


@pytest.mark.parametrize("form", [{"mode": "recurrent"}, {"chunk_size": 1}, {"chunk_size": 16}])
def test_linear_attention_and_retnet(form: dict) -> None:
    q, k, v, _, _ = _data(4)
    scores = torch.einsum("bthk,bihk->bhti", q, k)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    linear = torch.einsum("bhti,bihv->bthv", scores.masked_fill(~causal, 0), v)
    ones = torch.ones(B, T, H, dtype=torch.float64)
    out = memory_forward(MemoryRule.from_point(preset("linear_attention")), q, k, v,
                         MemoryGates(eta=ones), [], **form)
    assert _rel(out, linear) <= TOL

    gamma = 1 - 2.0 ** (-5 - torch.arange(H, dtype=torch.float64))  # RetNet's per-head decay
    pos = torch.arange(T, dtype=torch.float64)
    decay = gamma[:, None, None] ** (pos[:, None] - pos[None, :]).clamp_min(0)  # [H, T, T]
    retnet = torch.einsum("bhti,bihv->bthv", (scores * decay).masked_fill(~causal, 0), v)
    out = memory_forward(MemoryRule.from_point(preset("retnet")), q, k, v,
                         MemoryGates(eta=ones, alpha=gamma.expand(B, T, H)), [], **form)
    assert _rel(out, retnet) <= TOL


def test_titans_matches_autograd_recurrence() -> None:
    """Titans' MLP memory with momentum, gradients from torch.autograd (not the hand backprop).

    As the Titans paper writes it: the surprise gradient is taken at W_{t-1};
    S_t = theta S_{t-1} - eta grad l(W_{t-1}); W_t = alpha W_{t-1} + S_t.
    """
    d, length = 8, 20
    rule = MemoryRule.from_point(preset("titans"))
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(1, length, H, d, generator=gen, dtype=torch.float64, requires_grad=True)
    k = F.normalize(torch.randn(1, length, H, d, generator=gen, dtype=torch.float64), dim=-1)
    v = torch.randn(1, length, H, d, generator=gen, dtype=torch.float64)
    eta = 0.05 * torch.rand(1, length, H, generator=gen, dtype=torch.float64)
    alpha = 0.9 + 0.1 * torch.rand(1, length, H, generator=gen, dtype=torch.float64)
    theta = 0.5 * torch.rand(1, length, H, generator=gen, dtype=torch.float64)
    torch.manual_seed(0)
    params = [p.double().requires_grad_() for p in rule.initial_parameters(H, d, d)]

    def mlp(w1, w2, x):  # x: [B, H, d]
        z = torch.einsum("bhod,bhd->bho", w2, F.gelu(torch.einsum("bhod,bhd->bho", w1, x)))
        return x + F.layer_norm(z, (d,))

    ws = [p.unsqueeze(0) for p in params]
    mom = [torch.zeros_like(w) for w in ws]
    expected = []
    for t in range(length):
        th, et, al = (x[:, t, :, None, None] for x in (theta, eta, alpha))
        loss = 0.5 * (mlp(*ws, k[:, t]) - v[:, t]).square().sum()
        grads = torch.autograd.grad(loss, ws, create_graph=True)  # d loss / d W_{t-1}
        mom = [th * s - et * g for s, g in zip(mom, grads, strict=True)]
        ws = [al * w + s for w, s in zip(ws, mom, strict=True)]
        expected.append(mlp(*ws, q[:, t]))
    expected = torch.stack(expected, 1)
    gates = MemoryGates(eta=eta, alpha=alpha, theta=theta)
    for form in ({"mode": "recurrent"}, {"chunk_size": 1}):
        out = memory_forward(rule, q, k, v, gates, params, **form)
        assert _rel(out, expected) <= TOL
        (g_out,) = torch.autograd.grad(out.square().sum(), q)
        (g_exp,) = torch.autograd.grad(expected.square().sum(), q, retain_graph=True)
        assert _rel(g_out, g_exp) <= TOL
