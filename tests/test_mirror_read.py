"""KL retention (Memora) inside a chunk: every token reads c softmax_row of its log-space state.

Written out here from the update rule W_t = c softmax_row(alpha_t log W_{t-1} - eta_t G_t) with
every gradient at the chunk-start memory (one chunk, a matrix memory, an l2 bias, per-head and
channel-wise alpha): the chunked form's outputs must equal reading these weights.
"""

from __future__ import annotations

import pytest
import torch

from miras_search.memory import MemoryRule, memory_forward
from miras_search.memory.testing import random_inputs
from miras_search.schema import ModelPoint


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
