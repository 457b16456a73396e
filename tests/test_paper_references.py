"""The presets' memories against float64 loops written here from the papers' equations.

Each reference below is a plain loop over tokens (one head at a time) that states its paper's
update; the inner gradient of an MLP memory is torch.autograd's vector-Jacobian product of the
memory at the paper's gradient point with the bias's dl/dM(k) written out (never the project's hand
backprop), and no helper of the project is called except to build the rule and run it. Covered here
(what ``test_memory_known_models``, ``test_table1_rows`` and ``test_atlas`` do not already compare
with an independent loop): Moneta, Yaad and Memora over whole sequences with their MLP memories,
TTT-Linear / TTT-MLP with TTT's mini-batch gradient descent, Titans' chunked form, Mamba2 and GLA,
the gradients of the delta-rule family, and Atlas's chunked form. Shapes are small and odd
(T = 1, 7, 63; 2 heads; head dim 4), float64, relative error <= 1e-10 (gradients 1e-9).

Papers: Miras = arXiv 2504.13173 (Section 5: Moneta, Yaad, Memora); Titans = arXiv 2501.00663;
TTT = arXiv 2407.04620; Gated DeltaNet = arXiv 2412.06464; DeltaProduct = arXiv 2502.10297;
Longhorn = arXiv 2407.14207; Mamba2 = arXiv 2405.21060; GLA = arXiv 2312.06635;
Atlas = arXiv 2505.23735.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from miras_search.memory import MemoryGates, MemoryRule, memory_forward
from miras_search.presets import preset

D64 = torch.float64
H, K = 2, 4  # heads; key = value width (the residual MLP memory needs them equal)
LENGTHS = (1, 7, 63)
TOL = 1e-10
GRAD_TOL = 1e-9
LN_EPS = 1e-5  # the MLP memory's LayerNorm (torch's default eps, no affine)


def rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).norm() / want.norm().clamp_min(1e-300)).item()


class Data:
    """Random float64 inputs for one sequence: [1, T, H, ...] (q, k unit vectors)."""

    def __init__(self, length: int, seed: int, key_dim: int = K, value_dim: int = K) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.length = length
        self.q = F.normalize(self.randn(1, length, H, key_dim), dim=-1)
        self.k = F.normalize(self.randn(1, length, H, key_dim), dim=-1)
        self.v = self.randn(1, length, H, value_dim)

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=self.gen, dtype=D64)

    def uniform(self, low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=self.gen, dtype=D64)

    def gate(self, low: float, high: float, width: int | None = None) -> torch.Tensor:
        shape = (1, self.length, H) if width is None else (1, self.length, H, width)
        return self.uniform(low, high, *shape)


def head(x: torch.Tensor | None, h: int) -> torch.Tensor | None:
    """[1, T, H, ...] -> [T, ...] for head h."""
    return None if x is None else x[0, :, h]


def per_token(x: torch.Tensor | None, t: int, default: float = 1.0):
    """A gate's value at token t, shaped to scale a weight's input channels ([..., in])."""
    return default if x is None else x[t]


# ---- memories (one head; x: [in]) --------------------------------------------------------------

def mlp_memory(ws: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """M(x) = x + LN(W2 gelu(W1 x)): the residual 2-layer MLP of Titans (Sec. 3.1) / Miras (Sec. 5,
    the memory of Moneta, Yaad and Memora) and TTT-MLP's f(x) = x + LN(f_MLP(x)); the residual
    reads the first V inputs (Atlas: the degree-1 block of phi(x))."""
    z = ws[1] @ F.gelu(ws[0] @ x)
    return x[: z.shape[-1]] + F.layer_norm(z, z.shape, eps=LN_EPS)


def matrix_memory(ws: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """M(x) = W x."""
    return ws[0] @ x


def weight_gradients(memory, point: list[torch.Tensor], k: torch.Tensor, dl_dpred) -> list[torch.Tensor]:
    """grad_W l(M_W(k)) = (dM/dW)^T dl/dM at W = ``point``; ``dl_dpred(pred)`` -> dl/dM(k)."""
    point = [w if w.requires_grad else w.detach().requires_grad_() for w in point]
    pred = memory(point, k)
    g = dl_dpred(pred)
    return list(torch.autograd.grad(pred, point, grad_outputs=g, create_graph=True))


# ---- attentional biases: dl/dM(k) written from the papers ----------------------------------------

def l2_bias(v):
    """l = 1/2 ||M(k) - v||^2 (Miras Eq. 9 with its 1/2, DESIGN's l2): dl/dM = e."""
    return lambda pred: pred - v


def lp_bias(v, p: float, smooth: tuple[float, float] | None = None):
    """Miras Eq. 11: l = ||M(k) - v||_p^p, dl/dM = p sign(e) |e|^(p-1); with ``smooth`` = (c, eps)
    the surrogates sign ~ tanh(c e), |e| ~ sqrt(e^2 + eps) (Miras Sec. 3.1, DESIGN)."""
    def grad(pred):
        e = pred - v
        if smooth is None:
            return p * torch.sign(e) * e.abs() ** (p - 1)
        c, eps = smooth
        return p * torch.tanh(c * e) * (e.square() + eps) ** ((p - 1) / 2)
    return grad


def yaad_bias(v, delta, sharpness: float | None = None, relative: bool = False):
    """Yaad (Miras Sec. 5.3, its update): the l2 gradient e while ||M(k) - v|| <= delta_t, else
    delta_t times the l1 gradient sign(e) (``sharpness``: the smooth l1 branch delta tanh(c e),
    c = sharpness / delta_t with ``relative``). ``delta``: a number (per head) or [V] (one per
    value channel: the error measured as ||e / delta|| against 1, DESIGN's channel-wise gates)."""
    def grad(pred):
        e = pred - v
        size = (e / delta).square().sum().sqrt() if delta.dim() else e.square().sum().sqrt()
        inside = size <= (1.0 if delta.dim() else delta)
        if sharpness is None:
            l1 = delta * torch.sign(e)
        else:
            c = sharpness / delta if relative else sharpness
            l1 = delta * torch.tanh(c * e)
        return e if bool(inside) else l1
    return grad


def dot_bias(v):
    """l = -<M(k), v> (linear attention, Miras Eq. 8): dl/dM = -v."""
    return lambda pred: -v.expand_as(pred)


# ---- the recurrences ---------------------------------------------------------------------------

def miras_loop(memory, bias, retention: str, q, k, v, eta, alpha, w0, *, theta=None, delta=None,
               q_norm: float = 4.0, kl_scale: float = 1.0, chunk: int = 1,
               retained: bool = False, kl_linear_log: bool = False) -> torch.Tensor:
    """One head, token by token; returns [T, V].

    ``retention`` (the form of W_t, Miras Sec. 4 / 5.3):
      'l2':  W_t = alpha_t W_{t-1} + S_t                      (Titans Eq. 13-14, Yaad, Gated DeltaNet)
      'lq':  A_t = alpha_t A_{t-1} + S_t, W_t = A_t / ||A_t||_q^(q-2)   (Moneta, Miras Sec. 5.3)
      'kl':  W_t = c softmax_row(alpha_t log W_{t-1} + S_t)           (Memora, Miras Sec. 5.3)
    and the step S_t = -eta_t grad (gd) or theta_t S_{t-1} - eta_t grad (Titans' momentum,
    ``theta`` given). The gradient is taken at W_{t-1} (``retained``: at alpha_t W_{t-1}, Gated
    DeltaNet's order). ``w0``: W_0 for l2, A_0 for lq, the row logits of W_0 for kl.

    ``chunk`` b > 1 is the mini-batch form of TTT (Sec. 2.4, W_t = W_{t'} - eta sum_{s<=t}
    grad l(W_{t'}; x_s)) and Titans (Sec. 3.2): every gradient of a chunk is taken at the memory
    its chunk starts from; ``eta``, ``alpha`` per token: a number or [in] per weight input channel
    (a list with one entry per layer). The two nonlinear retentions keep DESIGN's chunked form
    ("Parallel (chunked) training"): lq normalises at chunk ends only (a token inside a chunk reads
    A_t / ||A_{t'}||_q^(q-2), its chunk start's scale), and kl's first token of each chunk is a lag
    token, the exact step, whose result is the gradient point of the rest of its chunk.
    ``kl_linear_log``: inside a chunk (after its lag token) the log-space state grows linearly,
    X_t = alpha_t X_{t-1} + S_t, W_t = c softmax_row(X_t), without the log of the normalised W_{t-1}
    between tokens (DESIGN: "log/softmax only at chunk boundaries"). With alpha constant along a
    row this is Memora's update exactly (softmax ignores a row's constant); with a channel-wise
    alpha it is not (``test_memora_chunked_channel_alpha_is_designs_linear_log_form``).
    """
    def gate(x, t, layer):
        if x is None:
            return 1.0
        value = x[t]
        return value[layer] if isinstance(value, list) else value

    def lq_map(a):
        return a / a.abs().pow(q_norm).sum().pow(1.0 / q_norm) ** (q_norm - 2)

    def lq_norm(a):
        return a.abs().pow(q_norm).sum().pow(1.0 / q_norm) ** (q_norm - 2)

    if retention == "lq":
        acc = [a.clone() for a in w0]
        w = [lq_map(a) for a in acc]
        start_norm = [lq_norm(a) for a in acc]
    elif retention == "kl":
        w = [kl_scale * torch.softmax(a, dim=-1) for a in w0]
    else:
        w = [a.clone() for a in w0]
    s = [torch.zeros_like(x) for x in w]
    point = w
    out = []
    for t in range(len(k)):
        first, last = t % chunk == 0, t % chunk == chunk - 1 or t == len(k) - 1
        if first:
            point = w  # the chunk's start memory (every token's own W_{t-1} when chunk = 1)
            if retention == "lq":
                start_norm = [lq_norm(a) for a in acc]
        at = point
        if retained:
            at = [gate(alpha, t, i) * x for i, x in enumerate(point)]
        grads = weight_gradients(memory, at, k[t], bias(t))
        steps = [-gate(eta, t, i) * g for i, g in enumerate(grads)]
        if theta is not None:
            steps = [theta[t] * s_prev + st for s_prev, st in zip(s, steps, strict=True)]
            s = steps
        if retention == "lq":
            acc = [gate(alpha, t, i) * a + st for i, (a, st) in enumerate(zip(acc, steps, strict=True))]
            w = [lq_map(a) for a in acc] if last else [a / n for a, n in zip(acc, start_norm, strict=True)]
        elif retention == "kl":
            if first or not kl_linear_log:
                raw = [torch.log(x) for x in w]  # log W_{t-1}
            raw = [gate(alpha, t, i) * r + st for i, (r, st) in enumerate(zip(raw, steps, strict=True))]
            w = [kl_scale * torch.softmax(r, dim=-1) for r in raw]
            if first:
                point = w  # the lag token's exact result
                raw = [torch.log(x) for x in w]
        else:
            w = [gate(alpha, t, i) * x + st for i, (x, st) in enumerate(zip(w, steps, strict=True))]
        out.append(memory(w, q[t]))
    return torch.stack(out)


def per_head(loop, data: Data, gates: dict, params: list[torch.Tensor], **kwargs) -> torch.Tensor:
    """Run ``loop`` for each head; gates: name -> [1, T, H(, C)] | None. Returns [1, T, H, V]."""
    outs = []
    for h in range(H):
        picked = {name: head(g, h) for name, g in gates.items()}
        outs.append(loop(q=head(data.q, h), k=head(data.k, h), v=head(data.v, h),
                         w0=[p[h] for p in params], **picked, **kwargs))
    return torch.stack(outs, dim=1).unsqueeze(0)


def split_channels(gate: torch.Tensor | None, widths: list[int]):
    """A channel-wise gate [1, T, H, sum(widths)] -> per token a list of [in_l] (one per layer)."""
    if gate is None or gate.dim() == 3:
        return gate
    return _Split(gate, widths)


class _Split:
    """gate[t] -> [gate[t, :w1], gate[t, w1:w1+w2], ...] (layer l's input channels)."""

    def __init__(self, gate: torch.Tensor, widths: list[int]) -> None:
        self.gate, self.widths = gate, widths

    def __getitem__(self, index):
        if isinstance(index, int):
            return list(self.gate[index].split(self.widths, dim=-1))
        if isinstance(index, tuple):  # [0, :, h] from ``head``
            return _Split(self.gate[index], self.widths)
        raise TypeError(index)


def params_for(rule: MemoryRule, seed: int, key_dim: int = K, value_dim: int = K) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    return [p.to(D64) for p in rule.initial_parameters(H, key_dim, value_dim)]


def project(rule, data: Data, gates: MemoryGates, params, **form) -> torch.Tensor:
    return memory_forward(rule, data.q, data.k, data.v, gates, params, **form)


FORMS = ({"mode": "recurrent"}, {"chunk_size": 1})


# ---- Moneta (Miras Sec. 5.3): lp bias (p = 3), lq retention (q = 4), 2-layer MLP -------------------

def _moneta_case(point, length: int, seed: int, channel: bool = False):
    rule = MemoryRule.from_point(point)
    data = Data(length, seed)
    widths = [K, 4 * K]
    if channel:  # smaller: the surrogate's slope (tanh(10 e)) amplifies rounding at larger steps
        eta = data.gate(0.002, 0.01, sum(widths))
        alpha = data.gate(0.9, 1.0, sum(widths))
    else:
        eta, alpha = data.gate(0.005, 0.03), data.gate(0.9, 1.0)
    params = params_for(rule, seed)
    return rule, data, MemoryGates(eta=eta, alpha=alpha), params, widths


def _moneta_reference(data, gates, params, widths, smooth):
    def loop(q, k, v, w0, eta, alpha):
        return miras_loop(mlp_memory, lambda t: lp_bias(v[t], 3.0, smooth), "lq", q, k, v, eta, alpha,
                          w0, q_norm=4.0)
    return per_head(loop, data, {"eta": split_channels(gates.eta, widths),
                                 "alpha": split_channels(gates.alpha, widths)}, params)


@pytest.mark.parametrize("length", LENGTHS)
def test_moneta_exact_lp_and_lq_match_the_papers_update(length: int) -> None:
    """A_t = alpha_t A_{t-1} - eta_t p (sign(e) |e|^(p-1)) backprop'd, W_t = A_t / ||A_t||_4^2."""
    point = preset("moneta", bias={"kind": "lp", "p": 3.0, "smooth": False})
    rule, data, gates, params, widths = _moneta_case(point, length, 1)
    expected = _moneta_reference(data, gates, params, widths, None)
    for form in FORMS:
        assert rel(project(rule, data, gates, params, **form), expected) <= TOL, form


@pytest.mark.parametrize("length", (7, 63))
def test_moneta_preset_smooth_surrogates_and_channel_gates(length: int) -> None:
    """The preset as shipped: sign ~ tanh(10 e), |e| ~ sqrt(e^2 + 1e-6), channel-wise eta and alpha
    (W_l diag(alpha_l), grad_l diag(eta_l): one per input channel of each layer)."""
    rule, data, gates, params, widths = _moneta_case(preset("moneta"), length, 2, channel=True)
    expected = _moneta_reference(data, gates, params, widths, (10.0, 1e-6))
    for form in FORMS:
        assert rel(project(rule, data, gates, params, **form), expected) <= TOL, form


# ---- Yaad (Miras Sec. 5.3): Huber switch on ||e||, l2 retention at W_{t-1}, 2-layer MLP -------------

def _yaad_reference(data, gates, params, widths, sharpness=None, relative=False, memory=mlp_memory):
    def loop(q, k, v, w0, eta, alpha, delta):
        return miras_loop(memory, lambda t: yaad_bias(v[t], delta[t], sharpness, relative), "l2",
                          q, k, v, eta, alpha, w0)
    return per_head(loop, data, {"eta": split_channels(gates.eta, widths),
                                 "alpha": split_channels(gates.alpha, widths), "delta": gates.delta},
                    params)


def _yaad_gates(data: Data, point, channel: bool, widths):
    # thresholds among the errors' norms (both branches taken): ||e|| is about sqrt(V) = 2 here
    if channel:
        return MemoryGates(eta=data.gate(0.01, 0.05, sum(widths)), alpha=data.gate(0.9, 1.0, sum(widths)),
                           delta=data.gate(0.6, 1.4, K))
    return MemoryGates(eta=data.gate(0.01, 0.05), alpha=data.gate(0.9, 1.0), delta=data.gate(1.0, 3.0))


@pytest.mark.parametrize("length", LENGTHS)
def test_yaad_exact_switch_matches_the_papers_update(length: int) -> None:
    point = preset("yaad", bias={"kind": "huber", "variant": "switch", "smooth": False, "delta": {"mode": "head"}})
    rule = MemoryRule.from_point(point)
    data = Data(length, 3)
    widths = [K, 4 * K]
    gates = _yaad_gates(data, point, False, widths)
    params = params_for(rule, 3)
    expected = _yaad_reference(data, gates, params, widths)
    for form in FORMS:
        assert rel(project(rule, data, gates, params, **form), expected) <= TOL, form


@pytest.mark.parametrize("length", (7, 63))
def test_yaad_preset_smooth_l1_branch_and_channel_gates(length: int) -> None:
    """As shipped: l1 branch delta tanh(e / delta) (sharpness 1, scaled by the threshold), channel
    eta / alpha, one threshold per value channel (||e / delta|| <= 1)."""
    rule = MemoryRule.from_point(preset("yaad"))
    data = Data(length, 4)
    widths = [K, 4 * K]
    gates = _yaad_gates(data, None, True, widths)
    params = params_for(rule, 4)
    expected = _yaad_reference(data, gates, params, widths, sharpness=1.0, relative=True)
    for form in FORMS:
        assert rel(project(rule, data, gates, params, **form), expected) <= TOL, form


@pytest.mark.parametrize("smooth", [False, True])
def test_yaad_threshold_equality_takes_the_l2_branch(smooth: bool) -> None:
    """Miras's Yaad: the l2 gradient 'if ||M(k_t) - v_t|| <= delta_t' (the equality is l2's).
    W_0 = 0, so e_1 = -v_1 and delta_1 = ||v_1|| exactly: o_1 = eta (q.k) v_1 (l1: eta delta (q.k) sign(v))."""
    point = preset("yaad", memory={"kind": "matrix"},
                   bias={"kind": "huber", "variant": "switch", "smooth": smooth, "delta": {"mode": "head"}})
    rule = MemoryRule.from_point(point)
    data = Data(1, 5)
    delta = data.v.square().sum(-1).sqrt()  # [1, 1, H]
    gates = MemoryGates(eta=torch.full((1, 1, H), 0.5, dtype=D64), alpha=torch.full((1, 1, H), 0.9, dtype=D64),
                        delta=delta)
    expected = 0.5 * (data.q * data.k).sum(-1, keepdim=True) * data.v
    for form in FORMS:
        assert rel(project(rule, data, gates, [], **form), expected) <= 1e-14, form


# ---- Memora (Miras Sec. 5.3): l2 bias, KL retention W_t = c softmax(alpha log W - eta grad) ---------

@pytest.mark.parametrize("scale", [1.0, 2.5])
@pytest.mark.parametrize("length", LENGTHS)
def test_memora_matches_the_papers_update(length: int, scale: float) -> None:
    point = preset("memora", retention={"kind": "kl", "scale": scale, "alpha": {"mode": "head", "value": 0.99}})
    rule = MemoryRule.from_point(point)
    data = Data(length, 6)
    # steps of 0.05-0.3 make the inner loop chaotic at T = 63 (1e-14 of noise in v grows to 7e-9 in
    # the reference itself); 0.01-0.05 brackets the preset's 0.01 and stays at 1e-14 for c = 1.
    # A row sum c scales the weights, and the step's effect with them: the range shrinks by c^2.
    gates = MemoryGates(eta=data.gate(0.01, 0.05) / scale**2, alpha=data.gate(0.8, 1.0))
    params = params_for(rule, 6)

    def loop(q, k, v, w0, eta, alpha):
        return miras_loop(mlp_memory, lambda t: l2_bias(v[t]), "kl", q, k, v, eta, alpha, w0,
                          kl_scale=scale)
    expected = per_head(loop, data, {"eta": gates.eta, "alpha": gates.alpha}, params)
    for form in FORMS:
        assert rel(project(rule, data, gates, params, **form), expected) <= TOL, form


# ---- TTT-Linear / TTT-MLP (TTT Sec. 2): mini-batch gradient descent ------------------------------

@pytest.mark.parametrize("name", ["ttt_linear", "ttt_mlp"])
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("chunk", [1, 16])
def test_ttt_minibatch_gd_matches_the_paper(name: str, length: int, chunk: int) -> None:
    """W_t = W_{t'} - sum_{s=t'+1}^{t} eta_s grad l(W_{t'}; k_s, v_s), t' the last multiple of b
    before t; z_t = f(q_t; W_t) (TTT Sec. 2.4, the dual form's output), l = 1/2 ||f(k) - v||^2."""
    rule = MemoryRule.from_point(preset(name))
    data = Data(length, 7)
    gates = MemoryGates(eta=data.gate(0.1, 0.6) if name == "ttt_linear" else data.gate(0.01, 0.05))
    params = params_for(rule, 7)
    memory = matrix_memory if name == "ttt_linear" else mlp_memory

    def loop(q, k, v, w0, eta):
        return miras_loop(memory, lambda t: l2_bias(v[t]), "l2", q, k, v, eta, None, w0, chunk=chunk)
    expected = per_head(loop, data, {"eta": gates.eta}, params)
    got = project(rule, data, gates, params, chunk_size=chunk)
    assert rel(got, expected) <= TOL
    if chunk == 1:
        assert rel(project(rule, data, gates, params, mode="recurrent"), expected) <= TOL


# ---- Titans (Sec. 3.1-3.2): momentum and weight decay, chunked with gradients at the chunk start ----

@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("chunk", [1, 4, 16])
def test_titans_chunked_form_matches_the_papers_minibatch(length: int, chunk: int) -> None:
    """Titans Eqs. 13-14 with its names mapped (theta -> eta, eta -> theta, 1 - alpha -> alpha):
    S_t = theta_t S_{t-1} - eta_t grad l(M_{t'}; x_t), M_t = alpha_t M_{t-1} + S_t, and in the
    chunked form (Sec. 3.2) every gradient of a chunk at its start memory M_{t'}."""
    rule = MemoryRule.from_point(preset("titans"))
    data = Data(length, 8)
    gates = MemoryGates(eta=data.gate(0.01, 0.05), alpha=data.gate(0.9, 1.0), theta=data.gate(0.3, 0.9))
    params = params_for(rule, 8)

    def loop(q, k, v, w0, eta, alpha, theta):
        return miras_loop(mlp_memory, lambda t: l2_bias(v[t]), "l2", q, k, v, eta, alpha, w0,
                          theta=theta, chunk=chunk)
    expected = per_head(loop, data, {"eta": gates.eta, "alpha": gates.alpha, "theta": gates.theta}, params)
    assert rel(project(rule, data, gates, params, chunk_size=chunk), expected) <= TOL


# ---- Mamba2 and GLA: dot bias with a scalar / channel-wise decay ---------------------------------

def gated_linear_loop(q, k, v, eta, alpha) -> torch.Tensor:
    """S_t = S_{t-1} diag(alpha_t) + eta_t v_t k_t^T, o_t = S_t q_t: Mamba2's SSD recurrence
    h_t = exp(dt A) h_{t-1} + dt B_t x_t, y_t = C_t^T h_t (Sec. 3, scalar decay; here alpha =
    exp(dt A), eta the input's scale, k = B, v = x, q = C) and GLA's S_t = G_t * S_{t-1} + k_t^T v_t
    (Eq. 4, G_t = alpha_t^T 1: a decay per key channel)."""
    s = torch.zeros(v.shape[-1], k.shape[-1], dtype=D64)
    out = []
    for t in range(len(k)):
        s = s * alpha[t] + eta[t] * torch.outer(v[t], k[t])
        out.append(s @ q[t])
    return torch.stack(out)


@pytest.mark.parametrize("name", ["mamba2", "gla"])
@pytest.mark.parametrize("length", LENGTHS)
def test_mamba2_and_gla_match_their_recurrences_with_gradients(name: str, length: int) -> None:
    rule = MemoryRule.from_point(preset(name))
    data = Data(length, 9)
    eta = data.gate(0.2, 1.0)
    alpha = data.gate(0.7, 1.0, K if name == "gla" else None)
    leaves = [x.requires_grad_() for x in (data.q, data.k, data.v, eta, alpha)]
    upstream = data.randn(1, length, H, K)

    def run(fn):
        out = fn()
        return [out, *torch.autograd.grad((out * upstream).sum(), leaves)]

    expected = run(lambda: torch.stack(
        [gated_linear_loop(head(data.q, h), head(data.k, h), head(data.v, h), head(eta, h),
                           head(alpha, h)[:, None] if name == "mamba2" else head(alpha, h))
         for h in range(H)], dim=1).unsqueeze(0))
    for form in ({"mode": "recurrent"}, {"chunk_size": 1}, {"chunk_size": 16}):
        got = run(lambda form=form: project(rule, data, MemoryGates(eta=eta, alpha=alpha), [], **form))
        for g, e in zip(got, expected, strict=True):
            assert rel(g, e) <= GRAD_TOL, form


# ---- the delta-rule family: outputs and every input's gradient -------------------------------------

def delta_product_loop(q, k, v, beta, alpha, implicit: bool = False) -> torch.Tensor:
    """Gated DeltaProduct (DeltaProduct Eq. 4 with Gated DeltaNet's gate, Eq. 9 there): per token
    S <- alpha_t S once, then n_h Householder steps S <- S (I - beta_j k_j k_j^T) + beta_j v_j k_j^T
    (n_h = 1: Gated DeltaNet; alpha = 1: DeltaNet). ``implicit``: Longhorn's closed form (Eq. 9
    there), the step beta / (1 + beta k^T k). k, v: [T, n_h, d]; beta: [T, n_h]; alpha: [T] | None."""
    s = torch.zeros(v.shape[-1], k.shape[-1], dtype=D64)
    eye = torch.eye(k.shape[-1], dtype=D64)
    out = []
    for t in range(k.shape[0]):
        if alpha is not None:
            s = alpha[t] * s
        for j in range(k.shape[1]):
            kj, b = k[t, j], beta[t, j]
            if implicit:
                b = b / (1 + b * kj @ kj)
            s = s @ (eye - b * torch.outer(kj, kj)) + b * torch.outer(v[t, j], kj)
        out.append(s @ q[t])
    return torch.stack(out)


@pytest.mark.parametrize("name", ["deltanet", "gated_deltanet", "longhorn", "deltaproduct"])
@pytest.mark.parametrize("length", (7, 63))
def test_delta_rule_family_outputs_and_gradients(name: str, length: int) -> None:
    rule = MemoryRule.from_point(preset(name))
    steps = rule.steps_per_token
    data = Data(length, 10)
    if steps > 1:
        data.k = F.normalize(data.randn(1, length, steps, H, K), dim=-1)
        data.v = data.randn(1, length, steps, H, K)
        beta = data.uniform(0.1, 1.0, 1, length, steps, H)
    else:
        beta = data.gate(0.1, 1.0)
    alpha = data.gate(0.8, 1.0) if "alpha" in rule.needs() else None
    leaves = [x.requires_grad_() for x in (data.q, data.k, data.v, beta, alpha) if x is not None]
    upstream = data.randn(1, length, H, K)

    def run(fn):
        out = fn()
        return [out, *torch.autograd.grad((out * upstream).sum(), leaves)]

    def reference():
        outs = []
        for h in range(H):
            if steps > 1:
                k, v, b = data.k[0, :, :, h], data.v[0, :, :, h], beta[0, :, :, h]
            else:
                k, v, b = head(data.k, h)[:, None], head(data.v, h)[:, None], head(beta, h)[:, None]
            outs.append(delta_product_loop(head(data.q, h), k, v, b, head(alpha, h), rule.algorithm == "implicit"))
        return torch.stack(outs, dim=1).unsqueeze(0)

    expected = run(reference)
    gates = MemoryGates(eta=beta, alpha=alpha)
    for form in ({"mode": "recurrent"}, {"chunk_size": 16, "chunk_form": "exact_delta"}):
        got = run(lambda form=form: project(rule, data, gates, [], **form))
        for g, e in zip(got, expected, strict=True):
            assert rel(g, e) <= GRAD_TOL, form


# ---- gradients through the Miras models' recurrences ----------------------------------------------

@pytest.mark.parametrize("name", ["moneta", "yaad", "memora", "titans"])
def test_miras_models_gradients_match_the_reference(name: str) -> None:
    """d(out . u)/d(q, k, v, gates, initial memory) through the recurrence, against autograd of the
    loops above (T = 7, per-head gates, exact biases)."""
    length = 7
    data = Data(length, 11)
    overrides = {
        "moneta": {"bias": {"kind": "lp", "p": 3.0, "smooth": False}},
        "yaad": {"bias": {"kind": "huber", "variant": "switch", "smooth": False, "delta": {"mode": "head"}}},
        "memora": {},
        "titans": {},
    }[name]
    rule = MemoryRule.from_point(preset(name, **overrides))
    eta = data.gate(0.01, 0.05)
    alpha = data.gate(0.9, 1.0)
    theta = data.gate(0.3, 0.9) if name == "titans" else None
    delta = data.gate(1.0, 3.0) if name == "yaad" else None
    params = params_for(rule, 11)
    leaves = [x.requires_grad_() for x in (data.q, data.k, data.v, eta, alpha, theta, delta, *params)
              if x is not None]
    upstream = data.randn(1, length, H, K)
    retention = {"moneta": "lq", "memora": "kl"}.get(name, "l2")

    def bias_for(v, delta_h):
        if name == "moneta":
            return lambda t: lp_bias(v[t], 3.0)
        if name == "yaad":
            return lambda t: yaad_bias(v[t], delta_h[t])
        return lambda t: l2_bias(v[t])

    def reference():
        def loop(q, k, v, w0, eta, alpha, theta, delta):
            return miras_loop(mlp_memory, bias_for(v, delta), retention, q, k, v, eta, alpha, w0, theta=theta)
        return per_head(loop, data, {"eta": eta, "alpha": alpha, "theta": theta, "delta": delta}, params)

    def run(fn):
        out = fn()
        return [out, *torch.autograd.grad((out * upstream).sum(), leaves)]

    expected = run(reference)
    gates = MemoryGates(eta=eta, alpha=alpha, theta=theta, delta=delta)
    for form in FORMS:
        got = run(lambda form=form: project(rule, data, gates, params, **form))
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert rel(g, e) <= GRAD_TOL, (form, i)


# ---- Atlas (Eqs. 9, 32-33): the Omega window, Muon, chunked with gradients at the chunk start ------

def newton_schulz5(x: torch.Tensor, steps: int) -> torch.Tensor:
    """Muon's quintic Newton-Schulz (Jordan et al. 2024, the NS-k of Atlas Eq. 32): X <- X / ||X||_F,
    then X <- 3.4445 X - 4.7750 (X X^T) X + 2.0315 (X X^T)^2 X, on the wide orientation."""
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    x = x / x.norm()
    for _ in range(steps):
        a = x @ x.T
        x = 3.4445 * x - 4.7750 * a @ x + 2.0315 * a @ a @ x
    return x.T if tall else x


def atlas_loop(q, k, v, w0, eta, alpha, theta, gamma, *, chunk: int, ns_steps: int) -> torch.Tensor:
    """Atlas, one head: G_t = grad sum_{j=0}^{c-1} gamma_j^(t) 1/2 ||M(phi(k_{t-j})) - v_{t-j}||^2
    (Eq. 9, gamma_0 = 1, terms before the sequence start dropped) at M_{t'} (the chunk's start
    memory; M_{t-1} at chunk 1); S_t = theta_t S_{t-1} + G_t; M_t = alpha_t M_{t-1} -
    eta_t NS-k(S_t) (Eqs. 32-33), per weight matrix."""
    w = [x.clone() for x in w0]
    s = [torch.zeros_like(x) for x in w]
    window = gamma.shape[1] + 1
    point = w
    out = []
    for t in range(len(k)):
        if t % chunk == 0:
            point = w
        pt = [x.detach().requires_grad_() if not x.requires_grad else x for x in point]
        loss = 0.0
        for j in range(window):
            if t - j >= 0:
                weight = 1.0 if j == 0 else gamma[t, j - 1]
                loss = loss + weight * 0.5 * (mlp_memory(pt, k[t - j]) - v[t - j]).square().sum()
        grads = torch.autograd.grad(loss, pt, create_graph=True)
        s = [theta[t] * s_l + g for s_l, g in zip(s, grads, strict=True)]
        w = [alpha[t] * x - eta[t] * newton_schulz5(s_l, ns_steps) for x, s_l in zip(w, s, strict=True)]
        out.append(mlp_memory(w, q[t]))
    return torch.stack(out)


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("chunk", [1, 4])
def test_atlas_preset_matches_eqs_9_32_33_recurrent_and_chunked(length: int, chunk: int) -> None:
    point = preset("atlas")
    rule = MemoryRule.from_point(point)
    fmap = point.memory.feature_map
    data = Data(length, 12)
    raw_q, raw_k = data.q, data.k
    data.q, data.k = fmap.apply(raw_q), fmap.apply(raw_k)  # phi* to degree 2: [1, x, x(x)x / sqrt 2]
    width = data.k.shape[-1]
    assert width == 1 + K + K * (K + 1) // 2
    # phi*(q)^T phi*(k) = 1 + q.k + (q.k)^2 / 2 (Atlas Eqs. 22-23, truncated after degree 2)
    dot = (raw_q * raw_k).sum(-1)
    assert rel((data.q * data.k).sum(-1), 1 + dot + dot.square() / 2) <= 1e-13
    window = rule.omega_window
    gates = MemoryGates(eta=data.gate(0.01, 0.05), alpha=data.gate(0.9, 1.0), theta=data.gate(0.3, 0.9),
                        gamma=data.gate(0.2, 1.0, window - 1))
    params = params_for(rule, 12, key_dim=width)

    def loop(q, k, v, w0, eta, alpha, theta, gamma):
        return atlas_loop(q, k, v, w0, eta, alpha, theta, gamma, chunk=chunk, ns_steps=rule.optimiser.ns_steps)
    expected = per_head(loop, data, {"eta": gates.eta, "alpha": gates.alpha, "theta": gates.theta,
                                     "gamma": gates.gamma}, params)
    assert rule.optimiser.ns_steps == 5
    forms = [{"chunk_size": chunk}] + ([{"mode": "recurrent"}] if chunk == 1 else [])
    for form in forms:
        assert rel(project(rule, data, gates, params, **form), expected) <= TOL, form


def test_polynomial_map_coefficients_are_eq5s() -> None:
    """OmegaNet's phi (Atlas Eq. 5): phi(q)^T phi(k) = sum_i a_i (q^T k)^i with a_i = 1 / i! at
    init (exp's Taylor terms, Eq. 4): the map's default coefficients."""
    fmap = preset("omeganet").memory.feature_map
    data = Data(5, 13)
    got = (fmap.apply(data.q) * fmap.apply(data.k)).sum(-1)
    dot = (data.q * data.k).sum(-1)
    expected = sum(dot**i / math.factorial(i) for i in range(fmap.degree + 1))
    assert rel(got, expected) <= 1e-13


# ---- chunked forms of Moneta, Yaad, Memora (DESIGN's mini-batch form, gradients at the chunk start) --

@pytest.mark.parametrize("name", ["moneta", "yaad", "memora"])
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("chunk", [4, 16])
def test_miras_models_chunked_forms_match_the_minibatch_reference(name: str, length: int, chunk: int) -> None:
    overrides = {
        "moneta": {"bias": {"kind": "lp", "p": 3.0, "smooth": False}},
        "yaad": {"bias": {"kind": "huber", "variant": "switch", "smooth": False, "delta": {"mode": "head"}}},
        "memora": {},
    }[name]
    rule = MemoryRule.from_point(preset(name, **overrides))
    data = Data(length, 14)
    eta, alpha = data.gate(0.01, 0.05), data.gate(0.9, 1.0)
    delta = data.gate(1.0, 3.0) if name == "yaad" else None
    params = params_for(rule, 14)
    retention = {"moneta": "lq", "memora": "kl"}.get(name, "l2")

    def loop(q, k, v, w0, eta, alpha, delta):
        if name == "moneta":
            bias = lambda t: lp_bias(v[t], 3.0)  # noqa: E731
        elif name == "yaad":
            bias = lambda t: yaad_bias(v[t], delta[t])  # noqa: E731
        else:
            bias = lambda t: l2_bias(v[t])  # noqa: E731
        return miras_loop(mlp_memory, bias, retention, q, k, v, eta, alpha, w0, chunk=chunk)
    expected = per_head(loop, data, {"eta": eta, "alpha": alpha, "delta": delta}, params)
    got = project(rule, data, MemoryGates(eta=eta, alpha=alpha, delta=delta), params, chunk_size=chunk)
    assert rel(got, expected) <= TOL


# ---- in the model: the layer's own gates and memory, against the references -----------------------

@pytest.mark.parametrize("name", ["moneta", "yaad", "memora", "titans", "ttt_mlp"])
@pytest.mark.parametrize("length", (1, 7, 37))
def test_the_layers_memory_output_is_the_papers(name: str, length: int, monkeypatch) -> None:
    """Each preset as the model builds it (float64, 2 heads of 8, its chunk size 16, data-dependent
    channel-wise gates away from their constant start): the memory's output in the layer against
    the references above fed the same q, k, v, gates and initial memory (the shipped surrogates:
    Moneta's tanh(10 e) (e^2 + 1e-6), Yaad's delta tanh(e / delta) with delta in units of sqrt(d_v))."""
    from miras_search.model import build_model
    from miras_search.model import mixer as mixer_module

    seen: list[dict] = []
    original = mixer_module.memory_forward

    def spy(rule, q, k, v, gates, params, **kw):
        out = original(rule, q, k, v, gates, params, **kw)
        seen.append({"q": q, "k": k, "v": v, "gates": gates, "params": params, "out": out, **kw})
        return out

    monkeypatch.setattr(mixer_module, "memory_forward", spy)
    torch.manual_seed(0)
    model = build_model(preset(name, block={"d_model": 16, "n_heads": H, "n_layers": 1}), "cpu").double()
    for layer in model.memory_mixers():
        for producer in layer.gates.values():
            if producer.proj is not None:
                torch.nn.init.normal_(producer.proj.weight, std=0.3)
    with torch.no_grad():
        model(torch.randint(0, 256, (1, length), generator=torch.Generator().manual_seed(length)))
    (call,) = seen
    assert call["mode"] == "chunked" and call["chunk_size"] == 16
    gates: MemoryGates = call["gates"]
    dim = call["k"].shape[-1]
    widths = [dim, 4 * dim]
    retention = {"moneta": "lq", "memora": "kl"}.get(name, "l2")
    kl_scale = 1.0  # Memora's c

    def loop(q, k, v, w0, eta, alpha, theta, delta):
        if name == "moneta":
            bias = lambda t: lp_bias(v[t], 3.0, (10.0, 1e-6))  # noqa: E731
        elif name == "yaad":
            bias = lambda t: yaad_bias(v[t], delta[t], sharpness=1.0, relative=True)  # noqa: E731
        else:
            bias = lambda t: l2_bias(v[t])  # noqa: E731
        return miras_loop(mlp_memory, bias, retention, q, k, v, eta, alpha, w0, theta=theta,
                          kl_scale=kl_scale, chunk=16, kl_linear_log=True)

    data = Data(length, 0, key_dim=dim, value_dim=dim)
    data.q, data.k, data.v = call["q"], call["k"], call["v"]
    params = [p.detach() for p in call["params"]]
    expected = per_head(loop, data, {"eta": split_channels(gates.eta, widths),
                                     "alpha": split_channels(gates.alpha, widths),
                                     "theta": gates.theta, "delta": gates.delta}, params)
    assert rel(call["out"], expected) <= TOL


@pytest.mark.parametrize("length", (7, 63))
def test_memora_chunked_channel_alpha_is_designs_linear_log_form(length: int) -> None:
    """Memora's chunked form with its preset's channel-wise alpha (one per input channel of each
    layer): inside a chunk the log-space state grows linearly (DESIGN), which is not the per-token
    rule c softmax(alpha_t log W_{t-1} - eta_t grad) with the gradients at the chunk's point: alpha
    then scales each row's log-normaliser differently per column. Pinned here, with the size of the
    difference, so that a change of either side is seen (about 5e-3 relative at T = 7, chunk 16)."""
    rule = MemoryRule.from_point(preset("memora"))
    data = Data(length, 15)
    widths = [K, 4 * K]
    eta, alpha = data.gate(0.005, 0.02, sum(widths)), data.gate(0.9, 1.0, sum(widths))
    params = params_for(rule, 15)
    gates = {"eta": split_channels(eta, widths), "alpha": split_channels(alpha, widths)}

    def reference(linear: bool) -> torch.Tensor:
        def loop(q, k, v, w0, eta, alpha):
            return miras_loop(mlp_memory, lambda t: l2_bias(v[t]), "kl", q, k, v, eta, alpha, w0,
                              chunk=16, kl_linear_log=linear)
        return per_head(loop, data, gates, params)

    got = project(rule, data, MemoryGates(eta=eta, alpha=alpha), params, chunk_size=16)
    assert rel(got, reference(True)) <= TOL
    assert rel(got, reference(False)) > 1e-6  # the per-token renormalised rule differs
    per_head_alpha = MemoryGates(eta=eta, alpha=alpha[..., :1].expand_as(alpha).contiguous())
    same = project(rule, data, per_head_alpha, params, chunk_size=16)
    gates["alpha"] = split_channels(per_head_alpha.alpha, widths)
    assert rel(same, reference(False)) <= TOL  # equal channels: the two coincide
