"""KL retention (Memora) inside a chunk: every token reads c softmax_row of its log-space state.

Written out here from the update rule W_t = c softmax_row(alpha_t log W_{t-1} - eta_t G_t) with
every gradient at the chunk-start memory (one chunk, a matrix memory, an l2 bias, per-head and
channel-wise alpha): the chunked form's outputs must equal reading these weights.
"""

from __future__ import annotations

import pytest
import torch

from miras_search.memory import MemoryRule, memory_forward
from miras_search.memory.testing import random_inputs, reference_chunked_forward
from miras_search.schema import ModelPoint
from miras_search.testing.conformance import assert_close, forward_and_grads


@pytest.mark.parametrize("alpha_mode", ["head", "channel"])
@pytest.mark.parametrize("length", [2, 7])
def test_each_token_reads_the_softmax_of_its_log_space_state(alpha_mode: str, length: int):
    point = ModelPoint(memory={"kind": "matrix"}, bias={"kind": "l2"},
                       retention={"kind": "kl", "scale": 2.0, "alpha": {"mode": alpha_mode}},
                       algorithm={"kind": "gd", "eta": {"mode": "head"}})
    rule = MemoryRule.from_point(point)
    channel = ("alpha",) if alpha_mode == "channel" else ()
    q, k, v, gates, params = random_inputs(rule, 1, length, 1, 4, channel=channel)
    # chunk 1 + length: the lag token, then one chunk holding every other token
    out = memory_forward(rule, q, k, v, gates, params, chunk_size=length)

    def one(x):  # [B, T, H, c] -> token i's [c] of the only batch row and head
        return x[0, :, 0]

    log_c = torch.log(torch.tensor(2.0, dtype=torch.float64))
    log_w = log_c + torch.log_softmax(params[0][0], -1)
    qs, ks, vs, etas = one(q), one(k), one(v), one(gates.eta)
    alphas = one(gates.alpha) if alpha_mode == "channel" else one(gates.alpha).unsqueeze(-1).expand(-1, 4)
    # the lag token: one exact step
    w = log_w.exp()
    log_w = log_c + torch.log_softmax(alphas[0] * log_w - etas[0] * torch.outer(w @ ks[0] - vs[0], ks[0]), -1)
    expected = [(log_w.exp() @ qs[0])]
    # the chunk: every gradient at its start W_1, the log-space sum linear, the map per token
    w1, raw = log_w.exp(), log_w.clone()
    for i in range(1, length):
        raw = alphas[i] * raw - etas[i] * torch.outer(w1 @ ks[i] - vs[i], ks[i])
        u = 2.0 * torch.softmax(raw, -1)
        expected.append(u @ qs[i])
    torch.testing.assert_close(out[0, :, 0], torch.stack(expected), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("memory", [{"kind": "matrix"}, {"kind": "vector"}, {"kind": "mlp", "expansion": 2}])
@pytest.mark.parametrize("alpha_mode", ["head", "channel"])
@pytest.mark.parametrize("algorithm", ["gd", "momentum"])
@pytest.mark.parametrize("strong", [False, True])
def test_every_form_of_the_step_sums_reads_the_materialised_weights(memory: dict, alpha_mode: str,
                                                                     algorithm: str, strong: bool):
    """The step sums of a chunk come in three forms (beta_t times a running sum of quotients when
    the chunk's decays are separable, a decayed running sum without momentum, per-token products
    with it); each against the chunk loop that materialises every token's weights, float64,
    forward and every gradient. ``strong``: every other token decays by 1e-30, so the chunks'
    cumulative log-decays fall below the separable floor (-300)."""
    point = ModelPoint(memory=memory, bias={"kind": "l2"},
                       retention={"kind": "kl", "scale": 2.0, "alpha": {"mode": alpha_mode}},
                       algorithm={"kind": algorithm, "eta": {"mode": "head"}})
    rule = MemoryRule.from_point(point)
    channel = ("alpha",) if alpha_mode == "channel" else ()
    q, k, v, gates, params = random_inputs(rule, 2, 37, 2, 4, channel=channel, seed=3)
    if strong:
        weak = torch.ones_like(gates.alpha)
        weak[:, ::2] = 1e-30
        gates.alpha = gates.alpha * weak
    for leaf in (q, k, v, gates.eta, gates.alpha, gates.theta, *params):
        if leaf is not None:
            leaf.requires_grad_()
    inputs = (q, k, v, gates, params)
    fast = forward_and_grads(lambda *a: memory_forward(rule, *a, chunk_size=16), inputs)
    slow = forward_and_grads(lambda *a: reference_chunked_forward(rule, *a, chunk_size=16), inputs)
    if strong:  # d/d alpha carries 1/alpha = 1e30 into sums of terms that underflow apart in
        # each form (so for the unchanged per-token products too): that gradient is left out
        alpha_at = 5  # output, q, k, v, eta, alpha, ...
        fast, slow = fast[:alpha_at] + fast[alpha_at + 1:], slow[:alpha_at] + slow[alpha_at + 1:]
    assert_close(fast, slow, f"kl {memory['kind']} alpha {alpha_mode} {algorithm} strong={strong}")


@pytest.mark.parametrize("length", [1, 7, 16])
@pytest.mark.parametrize(("out", "inn"), [(5, 9), (9, 5), (1, 4)])
def test_the_eager_read_and_the_graph_inductor_compiles_are_one_function(monkeypatch, length: int,
                                                                        out: int, inn: int):
    """The separable read runs eager with a written-out backward and, under train.compile, as the
    autograd graph that inductor fuses: both give the same outputs and gradients (float64)."""
    from miras_search.memory.mirror_read import mirror_chunk_read

    gen = torch.Generator().manual_seed(length * 10 + out)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    log_w0 = torch.log_softmax(rand(2, 3, out, inn), -1)
    beta = torch.exp(-0.3 * rand(2, 3, length, inn).abs().cumsum(2))
    leaves = [t.requires_grad_() for t in (log_w0, beta, rand(2, 3, length, out), 0.3 * rand(2, 3, length, inn),
                                           rand(2, 3, length, inn))]
    weight = rand(2, 3, length, out)

    def read():
        y = mirror_chunk_read(leaves[0], 2.0, leaves[1], None, None, None, None, *leaves[2:])
        return [y, *torch.autograd.grad((y * weight).sum(), leaves)]

    eager = read()
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    graph = read()
    assert_close(eager, graph, f"separable read b={length} {out}x{inn}", tol=1e-12,
                 names=("output", "log_w0", "beta", "delta", "ex", "z"))
