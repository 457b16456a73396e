"""Atlas's axes (Behrouz et al. 2025, arXiv 2505.23735): Muon, the Omega window, feature maps and
the presets Atlas, OmegaNet and DeepTransformer, each against an independent float64 loop written
here from the paper's equations (autograd for the inner gradients, Newton-Schulz written out)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from miras_search.memory import MemoryGates, MemoryRule, memory_forward
from miras_search.memory.chunked import chunked
from miras_search.memory.inputs import prepare_inputs
from miras_search.memory.kernel_path import atlas_problem, kernel_problem
from miras_search.memory.materialised import materialised_chunk
from miras_search.model import build_model
from miras_search.presets import ATLAS_MODELS, preset, preset_names
from miras_search.schema import ModelPoint
from miras_search.schema.feature_map import ExponentialMap, PolynomialMap, feature_width

D64 = torch.float64


def _ns(s: torch.Tensor, steps: int) -> torch.Tensor:
    """Muon's quintic Newton-Schulz (Jordan et al. 2024), one matrix [out, in]."""
    a, b, c = 3.4445, -4.7750, 2.0315
    transpose = s.shape[0] > s.shape[1]
    x = s.T if transpose else s
    x = x / x.norm()
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + b * gram @ x + c * gram @ gram @ x
    return x.T if transpose else x


def _mlp(weights: list[torch.Tensor], x: torch.Tensor, value_dim: int) -> torch.Tensor:
    """The residual MLP memory: x[:V] + LN(W2 gelu(W1 x)) (the degree-1 block of phi(x) first)."""
    hidden = F.gelu(x @ weights[0].T)
    return x[..., :value_dim] + F.layer_norm(hidden @ weights[1].T, (value_dim,), eps=1e-5)


def _matrix(weights: list[torch.Tensor], x: torch.Tensor, value_dim: int) -> torch.Tensor:
    return x @ weights[0].T


def _independent(memory, bias: str, retained: bool, algorithm: str, q, k, v, eta, alpha, theta,
                 gamma, weights0, ns_steps: int = 5) -> torch.Tensor:
    """Token by token, one head: the window loss sum_j gamma_j l(M(k_{t-j}), v_{t-j}) (Eq. 9;
    gamma_0 = 1) differentiated by autograd at alpha_t W (``retained``) or W, then gd
    (W <- alpha W - eta G, Eq. 10), or Muon (S <- theta S + G, W <- alpha W - eta NS(S),
    Eqs. 32-33). q, k: [T, F]; v: [T, V]; eta, alpha, theta: [T]; gamma: [T, c - 1] | None."""
    length, value_dim = v.shape
    window = 1 if gamma is None else gamma.shape[1] + 1
    w = [p.clone() for p in weights0]
    s = [torch.zeros_like(p) for p in w]
    out = []
    for t in range(length):
        decay = 1.0 if alpha is None else alpha[t]
        point = [(decay * p if retained else p).detach().requires_grad_() for p in w]
        loss = 0.0
        for j in range(window):
            if t - j < 0:
                continue
            weight = 1.0 if j == 0 else gamma[t, j - 1]
            pred = memory(point, k[t - j], value_dim)
            term = 0.5 * (pred - v[t - j]).square().sum() if bias == "l2" else -(pred * v[t - j]).sum()
            loss = loss + weight * term
        grads = torch.autograd.grad(loss, point)
        if algorithm == "muon":
            s = [theta[t] * s_l + g for s_l, g in zip(s, grads, strict=True)]
            w = [decay * p - eta[t] * _ns(s_l, ns_steps) for p, s_l in zip(w, s, strict=True)]
        else:
            w = [decay * p - eta[t] * g for p, g in zip(w, grads, strict=True)]
        out.append(memory(w, q[t], value_dim))
    return torch.stack(out)


def _inputs(rule: MemoryRule, point: ModelPoint, length: int, heads: int = 2, dim: int = 4,
            seed: int = 0):
    """Random float64 inputs: phi(q), phi(k) (the point's feature map, random coefficients when
    learned), v, gates and initial parameters."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen, dtype=D64)

    q = F.normalize(torch.randn(1, length, heads, dim, generator=gen, dtype=D64), dim=-1)
    k = F.normalize(torch.randn(1, length, heads, dim, generator=gen, dtype=D64), dim=-1)
    v = torch.randn(1, length, heads, dim, generator=gen, dtype=D64)
    fmap = getattr(point.memory, "feature_map", None)
    coefficients = None
    if fmap is not None and fmap.learned:
        coefficients = 0.5 + rand(heads, fmap.degree + 1)
    if fmap is not None:
        q, k = fmap.apply(q, coefficients), fmap.apply(k, coefficients)
    needs = rule.needs()
    eta = (0.01 + 0.05 * rand(1, length, heads)) if rule.memory == "mlp" else 0.05 + 0.2 * rand(1, length, heads)
    if rule.algorithm == "muon":
        eta = 0.01 + 0.04 * rand(1, length, heads)
    alpha = 0.9 + 0.1 * rand(1, length, heads) if "alpha" in needs else None
    theta = 0.3 + 0.5 * rand(1, length, heads) if "theta" in needs else None
    gamma = 0.2 + 0.8 * rand(1, length, heads, rule.omega_window - 1) if "gamma" in needs else None
    torch.manual_seed(seed)
    params = [p.to(D64) for p in rule.initial_parameters(heads, k.shape[-1], dim)]
    return q, k, v, MemoryGates(eta, alpha, theta, None, None, gamma), params


def _check_against_loop(point: ModelPoint, length: int = 9, tol: float = 1e-10) -> None:
    rule = MemoryRule.from_point(point)
    q, k, v, gates, params = _inputs(rule, point, length)
    heads = q.shape[2]
    if not params:  # a zero-initialised matrix memory
        params = [torch.zeros(heads, v.shape[-1], k.shape[-1], dtype=D64)]
        rule.init = "zeros"
    memory = _mlp if rule.memory == "mlp" else _matrix
    retained = rule.retention.kind == "l2" and rule.retention.retains_first
    forms = {
        "recurrent": memory_forward(rule, q, k, v, gates, params if rule.learned_init else [], mode="recurrent"),
        "chunked b=1": memory_forward(rule, q, k, v, gates, params if rule.learned_init else [], chunk_size=1),
    }
    for h in range(heads):
        def pick(g: torch.Tensor | None, h: int = h) -> torch.Tensor | None:
            return None if g is None else g[0, :, h]
        expected = _independent(memory, rule.bias.kind, retained, rule.algorithm, q[0, :, h], k[0, :, h],
                                v[0, :, h], pick(gates.eta), pick(gates.alpha), pick(gates.theta),
                                pick(gates.gamma), [p[h] for p in params], getattr(rule.optimiser, "ns_steps", 0))
        for name, got in forms.items():
            err = ((got[0, :, h] - expected).norm() / expected.norm()).item()
            assert err < tol, f"{point.name or 'point'} {name} head {h}: relative error {err:.2e}"


# ---- Newton-Schulz, feature maps ----------------------------------------------------------------


def test_newton_schulz_is_the_quintic_iteration_and_nearly_orthogonalises() -> None:
    from miras_search.primitives import newton_schulz

    gen = torch.Generator().manual_seed(0)
    for shape in ((6, 6), (4, 9), (9, 4)):
        s = torch.randn(3, *shape, generator=gen, dtype=D64)
        got = newton_schulz(s, 5)
        for i in range(3):
            assert torch.allclose(got[i], _ns(s[i], 5), rtol=1e-12, atol=1e-12)
        assert torch.allclose(newton_schulz(-s, 5), -got, atol=1e-14)  # odd: the sign of S is kept
        sv = torch.linalg.svdvals(got)
        assert sv.min() > 0.6 and sv.max() < 1.25, sv  # Muon's coefficients: singular values near 1
    zero = torch.zeros(2, 3, 3, dtype=D64, requires_grad=True)
    out = newton_schulz(zero, 5)
    out.sum().backward()
    assert torch.equal(out, torch.zeros_like(out)) and torch.isfinite(zero.grad).all()


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_polynomial_map_is_eq5_with_its_coefficients(degree: int) -> None:
    fmap = PolynomialMap(degree=degree)
    gen = torch.Generator().manual_seed(degree)
    q, k = torch.randn(2, 5, 3, 4, generator=gen, dtype=D64).unbind(0)
    c = torch.randn(3, degree + 1, generator=gen, dtype=D64)  # c_i = sqrt(a_i), per head
    got = (fmap.apply(q, c) * fmap.apply(k, c)).sum(-1)
    dot = (q * k).sum(-1)
    expected = sum(c[:, i].square() * dot**i for i in range(degree + 1))
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert fmap.apply(q, c).shape[-1] == fmap.width(4) == feature_width(4, degree)
    # the degree-1 block comes first (an MLP memory's residual reads it)
    assert torch.allclose(fmap.apply(q, c)[..., :4], q * c[:, 1:2], atol=0)


def test_exponential_map_is_eq22_truncated() -> None:
    """phi*(x) = [1, x, x(x)x / sqrt(2!), ...] (Eq. 22): the same inner products as the explicit
    Kronecker powers, and exp(q^T k) (Eq. 23) as the degree grows."""
    gen = torch.Generator().manual_seed(1)
    q, k = (0.5 * torch.randn(2, 2, 3, generator=gen, dtype=D64)).unbind(0)
    for degree in (1, 2, 3):
        fmap = ExponentialMap(degree=degree)
        got = (fmap.apply(q) * fmap.apply(k)).sum(-1)

        def kron_features(x: torch.Tensor, degree: int = degree) -> torch.Tensor:
            blocks, power = [torch.ones_like(x[..., :1]), x], x
            for i in range(2, degree + 1):
                power = (power.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2)
                blocks.append(power / math.sqrt(math.factorial(i)))
            return torch.cat(blocks, -1)

        explicit = (kron_features(q) * kron_features(k)).sum(-1)
        assert torch.allclose(got, explicit, rtol=1e-12, atol=1e-12)
    exact = (q * k).sum(-1).exp()
    assert ((got - exact).abs() / exact).max() < 0.02  # degree 3 of exp's Taylor series


# ---- Muon and the Omega window against independent loops ----------------------------------------


@pytest.mark.parametrize("degree", [2, 3])
def test_a_model_keeps_the_maps_tables_as_integer_buffers(degree: int) -> None:
    """The mixer keeps each degree's monomial indices and prod(m_j!) as integer buffers: they
    move with the model, no dtype cast rounds them, the state dict leaves them out, and phi
    from them equals phi built per call, to the last bit in float64."""
    point = preset("omeganet", block={"d_model": 16, "n_heads": 2, "n_layers": 1},
                   memory={"kind": "mlp", "feature_map": {"kind": "polynomial", "degree": degree}})
    model = build_model(point, device="cpu").double()
    mixer = next(m for m in model.modules() if hasattr(m, "monomial_index_0"))
    buffers = dict(mixer.named_buffers())
    tables = [(buffers[f"monomial_index_{i}"], buffers[f"monomial_counts_{i}"]) for i in range(degree - 1)]
    assert all(t.dtype == torch.int64 for pair in tables for t in pair)
    assert not any("monomial" in name for name in model.state_dict())
    fmap = point.memory.feature_map
    x = torch.randn(3, 2, 8, dtype=torch.float64)
    c = torch.rand(2, degree + 1, dtype=torch.float64)
    assert torch.equal(fmap.apply(x, c, tables), fmap.apply(x, c))
    assert fmap.apply(x, c, tables).shape[-1] == fmap.width(8)


@pytest.mark.parametrize("retention", [{"kind": "none"}, {"kind": "l2"}, {"kind": "l2", "gradient_at": "previous"}])
@pytest.mark.parametrize("memory", [{"kind": "matrix", "init": "learned"}, {"kind": "mlp", "expansion": 2}])
def test_muon_step_matches_eqs_32_33(memory: dict, retention: dict) -> None:
    point = ModelPoint(memory=memory, bias={"kind": "l2"}, retention=retention,
                       algorithm={"kind": "muon", "ns_steps": 4, "theta": {"mode": "head"}})
    _check_against_loop(point)


@pytest.mark.parametrize("algorithm", [{"kind": "gd"}, {"kind": "muon", "ns_steps": 3}])
def test_omega_window_matches_eq_9(algorithm: dict) -> None:
    point = ModelPoint(memory={"kind": "matrix", "init": "learned"}, bias={"kind": "l2", "window": 3},
                       retention={"kind": "l2"}, algorithm=algorithm)
    _check_against_loop(point)


@pytest.mark.parametrize(("memory", "retention", "window"), [
    ({"kind": "matrix", "init": "learned"}, {"kind": "l2"}, 3),
    ({"kind": "matrix", "init": "learned"}, {"kind": "l2", "gradient_at": "previous"}, 2),
    ({"kind": "mlp", "expansion": 2}, {"kind": "l2"}, 4),
    ({"kind": "mlp", "expansion": 2}, {"kind": "none"}, 2),
])
def test_omega_window_kernel_at_chunk_one_matches_eq_9(memory: dict, retention: dict, window: int) -> None:
    """The Triton kernels with the window (kernels.omega; float32, the interpreter without a GPU)
    at chunk_size 1, which they run as one token's 16 entries per kernel chunk (every gradient at
    W_{t-1}: the exact rule), against the paper's loop in float64, per head."""
    pytest.importorskip("triton")
    point = ModelPoint(memory=memory, bias={"kind": "l2", "window": window}, retention=retention,
                       algorithm={"kind": "gd"})
    rule = MemoryRule.from_point(point)
    q, k, v, gates, params = _inputs(rule, point, 11, dim=16)
    narrow = MemoryGates(**{n: None if g is None else g.float() for n, g in vars(gates).items()})
    got = memory_forward(rule, q.float(), k.float(), v.float(), narrow, [p.float() for p in params],
                         chunk_size=1, kernel="triton")
    memory_fn = _mlp if rule.memory == "mlp" else _matrix
    retained = rule.retention.kind == "l2" and rule.retention.retains_first
    for h in range(q.shape[2]):
        def pick(g: torch.Tensor | None, h: int = h) -> torch.Tensor | None:
            return None if g is None else g[0, :, h]
        expected = _independent(memory_fn, "l2", retained, "gd", q[0, :, h], k[0, :, h], v[0, :, h],
                                pick(gates.eta), pick(gates.alpha), None, pick(gates.gamma),
                                [p[h] for p in params])
        err = ((got[0, :, h].double() - expected).norm() / expected.norm()).item()
        assert err < 1e-4, f"head {h}: relative error {err:.2e}"


def _materialised_forward(rule: MemoryRule, q, k, v, gates: MemoryGates, params: list[torch.Tensor],
                          chunk: int) -> torch.Tensor:
    """The window's chunked form with per-token weights (memory.materialised), as memory_forward
    ran every window before gd's took the linear form: [B, T, H, V]."""
    x = prepare_inputs(q, k, v, gates, 1, False, D64, rule.omega_window)
    batch, heads, _, key_dim = x.k.shape
    state = rule.initial_state(params, batch, heads, key_dim, x.v.shape[-1], D64, q.device)
    return x.token_outputs(chunked(rule, x, state, chunk, update=materialised_chunk))


@pytest.mark.parametrize(("memory", "bias", "retention", "algorithm"), [
    ({"kind": "matrix", "init": "learned"}, {"kind": "l2", "window": 3}, {"kind": "l2", "alpha": {"mode": "channel"}},
     "gd"),
    ({"kind": "mlp", "expansion": 2}, {"kind": "huber", "variant": "switch", "window": 4, "delta": {"mode": "channel"}},
     {"kind": "l2", "gradient_at": "previous"}, "gd"),
    ({"kind": "mlp", "expansion": 2, "feature_map": {"kind": "polynomial", "degree": 2}},
     {"kind": "l2", "window": 2, "gamma": {"mode": "head"}}, {"kind": "none"}, "gd"),
    ({"kind": "matrix", "init": "learned"}, {"kind": "huber", "variant": "coordinate", "window": 4},
     {"kind": "l2", "alpha": {"mode": "channel"}}, "momentum"),
    ({"kind": "mlp", "expansion": 2}, {"kind": "l2", "window": 3}, {"kind": "l2"}, "momentum"),
    ({"kind": "mlp", "expansion": 2}, {"kind": "l2", "window": 2}, {"kind": "none"},
     {"kind": "momentum", "eta": {"mode": "channel"}}),
])
@pytest.mark.parametrize(("length", "chunk"), [(1, 4), (7, 1), (37, 5), (100, 16)])
def test_omega_window_in_the_linear_form_equals_the_materialised_form(memory, bias, retention, algorithm, length,
                                                                      chunk):
    """memory_forward runs the window (gd or momentum) as c entries per token of the linear
    chunked form (inputs.window_as_entries; momentum joins the memory at each token's last entry
    only): the same outputs and gradients as the per-token weights of memory.materialised,
    float64, to 1e-10."""
    algorithm = {"kind": algorithm} if isinstance(algorithm, str) else algorithm
    point = ModelPoint(memory=memory, bias=bias, retention=retention, algorithm=algorithm)
    rule = MemoryRule.from_point(point)
    assert not rule.materialised_chunks
    q, k, v, gates, params = _inputs(rule, point, length, dim=8)
    gen = torch.Generator().manual_seed(1)
    if "delta" in rule.needs():  # Huber's threshold (per head or value channel), at the errors' scale
        shape = v.shape if rule.gate_modes["delta"] == "channel" else v.shape[:3]
        gates.delta = 0.3 + torch.rand(shape, generator=gen, dtype=D64)
    for name, low in (("eta", 0.5), ("alpha", 0.95)):  # channel-wise gates: the per-head one spread
        if rule.gate_modes.get(name) == "channel":
            width = rule.channel_width(name, k.shape[-1], v.shape[-1])
            gate = getattr(gates, name).unsqueeze(-1) * (low + (1 - low) * torch.rand(width, generator=gen, dtype=D64))
            setattr(gates, name, gate)
    leaves = [x.requires_grad_() for x in
              (q, k, v, gates.eta, gates.alpha, gates.theta, gates.delta, gates.gamma, *params) if x is not None]
    results = []
    for run in (lambda: memory_forward(rule, q, k, v, gates, params, chunk_size=chunk),
                lambda: _materialised_forward(rule, q, k, v, gates, params, chunk)):
        o = run()
        results.append([o, *torch.autograd.grad(o.square().sum(), leaves)])
    for got, expected in zip(*results, strict=True):
        err = ((got - expected).norm() / expected.norm().clamp_min(1e-300)).item()
        assert err < 1e-10, f"relative error {err:.1e}"


def test_omega_window_with_past_weights_zero_is_the_online_update() -> None:
    """A window of c with gamma = 0 for the past tokens equals the online update (c = 1), in the
    recurrence and the chunked form, to 1e-12 in float64."""
    base = {"memory": {"kind": "mlp", "expansion": 2}, "retention": {"kind": "l2"},
            "algorithm": {"kind": "momentum"}}
    online = MemoryRule.from_point(ModelPoint(bias={"kind": "l2"}, **base))
    windowed = MemoryRule.from_point(ModelPoint(bias={"kind": "l2", "window": 4}, **base))
    point = ModelPoint(bias={"kind": "l2", "window": 4}, **base)
    q, k, v, gates, params = _inputs(windowed, point, 13)
    gates.gamma = torch.zeros_like(gates.gamma)
    plain = MemoryGates(gates.eta, gates.alpha, gates.theta)
    for kwargs in ({"mode": "recurrent"}, {"chunk_size": 5}):
        a = memory_forward(windowed, q, k, v, gates, params, **kwargs)
        b = memory_forward(online, q, k, v, plain, params, **kwargs)
        assert ((a - b).norm() / b.norm()).item() < 1e-12


@pytest.mark.parametrize("name", [n for n in preset_names()])
def test_window_one_is_every_preset_exactly(name: str) -> None:
    """bias.window 1 (the default) is today's point: the same model, bit for bit."""
    block = {"d_model": 16, "n_heads": 2, "n_layers": 1}
    point = preset(name, block=block)
    if point.bias.window != 1:
        pytest.skip("an Omega-window preset")
    explicit = point.model_copy(update={"bias": point.bias.model_copy(update={"window": 1})})
    tokens = torch.randint(0, 256, (1, 11), generator=torch.Generator().manual_seed(0))
    outputs = []
    for p in (point, explicit):
        torch.manual_seed(0)
        model = build_model(p, "cpu").double()
        outputs.append(model(tokens))
    assert torch.equal(*outputs)


# ---- presets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ATLAS_MODELS)
def test_atlas_presets_match_the_papers_step(name: str) -> None:
    """Atlas (Eqs. 32-33), OmegaNet (Eq. 10), DeepTransformer (Eq. 25) at a tiny size (heads of
    4, phi of degree 2: 15 features), in the recurrence and the chunked form at chunk 1."""
    point = preset(name, block={"d_model": 8, "n_heads": 2, "n_layers": 1})
    assert point.memory.feature_map.kind in ("polynomial", "exponential")
    _check_against_loop(point)


def test_a_window_of_one_drops_gamma() -> None:
    """``preset: atlas`` with ``bias: {window: 1}`` (as a space or a point file merges them) is the
    online update, not an error about the window's weights."""
    point = preset("atlas", bias={**preset("atlas").bias.model_dump(), "window": 1})
    assert point.bias.window == 1 and point.bias.gamma is None and "gamma" not in point.gates()


def test_atlas_presets_axes() -> None:
    atlas, omeganet, deep = (preset(n) for n in ATLAS_MODELS)
    assert (atlas.algorithm.kind, atlas.bias.window > 1, atlas.memory.feature_map.kind) == ("muon", True, "exponential")
    assert (omeganet.algorithm.kind, omeganet.bias.window > 1, omeganet.memory.feature_map.kind) == ("gd", True, "polynomial")
    assert (deep.bias.kind, deep.retention.kind, deep.algorithm.eta.value) == ("dot", "none", 1.0)


# ---- model, kernels, schema -------------------------------------------------------------------


def test_gamma_and_feature_coefficients_are_learned() -> None:
    point = preset("omeganet", block={"d_model": 16, "n_heads": 2, "n_layers": 1})
    torch.manual_seed(0)
    model = build_model(point, "cpu")
    tokens = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(0))
    _, loss = model(tokens, tokens)
    loss.backward()
    named = dict(model.named_parameters())
    coefficients = [p for n, p in named.items() if n.endswith("feature_coefficients")]
    gammas = [p for n, p in named.items() if ".gates.gamma." in n and n.endswith("proj.bias")]
    assert coefficients and gammas
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in coefficients + gammas)
    assert all(p.dim() == 1 for p in coefficients)  # flat: the optimiser does not decay them


@pytest.mark.parametrize(("axes", "needle"), [
    ({"algorithm": {"kind": "muon"}}, "muon"),
    ({"bias": {"kind": "l2", "window": 2}, "algorithm": {"kind": "momentum"}}, "Omega window"),
    ({"memory": {"kind": "mlp", "feature_map": {"kind": "polynomial", "degree": 2}}}, "feature map"),
])
def test_kernels_fall_back_to_pytorch_for_atlas_options(axes: dict, needle: str) -> None:
    point = ModelPoint(**{"memory": {"kind": "mlp"}, "bias": {"kind": "l2"}, "retention": {"kind": "l2"},
                          "algorithm": {"kind": "gd"}, **axes})
    rule = MemoryRule.from_point(point)
    q, k, v, gates, params = _inputs(rule, point, 5)
    assert needle in atlas_problem(rule, q, v)
    assert kernel_problem(rule, q, v, 16, "auto") is not None
    auto = memory_forward(rule, q, k, v, gates, params, chunk_size=4, kernel="auto")
    torch_form = memory_forward(rule, q, k, v, gates, params, chunk_size=4, kernel="torch")
    assert torch.equal(auto, torch_form)


def test_a_plain_point_has_no_atlas_problem() -> None:
    rule = MemoryRule.from_point(preset("titans"))
    q = v = torch.zeros(1, 2, 2, 8)
    assert atlas_problem(rule, q, v) is None


@pytest.mark.parametrize(("data", "needle"), [
    ({"bias": {"kind": "l2", "window": 2, "gamma": {"mode": "head", "value": 1.5}}}, "gamma.value"),
    ({"bias": {"kind": "l2", "window": 2}, "algorithm": {"kind": "multistep"}}, "needs algorithm gd, momentum or muon"),
    ({"bias": {"kind": "l2", "window": 2}, "retention": {"kind": "lq"}}, "retention 'none' or 'l2'"),
    ({"algorithm": {"kind": "muon"}, "memory": {"kind": "vector"}}, "memory 'matrix' or 'mlp'"),
    ({"memory": {"kind": "matrix", "feature_map": {"kind": "polynomial", "degree": 3}},
      "block": {"d_model": 256, "n_heads": 4}}, "at most 4096"),
    ({"bias": {"kind": "l2", "window": 2}, "train": {"chunk_form": "exact_delta"}}, "chunk_form 'exact_delta'"),
    ({"algorithm": {"kind": "newton"}}, "muon"),
])
def test_atlas_rules_are_clear_errors(data: dict, needle: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ModelPoint(**data)
    assert needle in str(caught.value)


def test_the_kernel_dispatch_covers_the_omega_window_with_gd_and_matrix_momentum() -> None:
    """kernels.kernel_for (which the conformance suite's kernel cases follow) covers the Omega
    window with gd (kernels.omega), and with momentum on a matrix memory, and refuses it with
    momentum on an MLP memory, Muon and an MLP memory behind a feature map: they never reach a
    Triton kernel."""
    pytest.importorskip("triton")
    from miras_search.kernels import kernel_for

    assert kernel_for(ModelPoint(bias={"kind": "l2"})) is not None  # the plain point is covered
    for window in (ModelPoint(bias={"kind": "l2", "window": 2}),
                   ModelPoint(bias={"kind": "l2", "window": 2}, algorithm={"kind": "momentum"})):
        assert kernel_for(window) is not None and kernel_for(MemoryRule.from_point(window)) is not None
    for point in (ModelPoint(memory={"kind": "mlp"}, bias={"kind": "l2", "window": 2}, algorithm={"kind": "momentum"}),
                  ModelPoint(bias={"kind": "l2"}, algorithm={"kind": "muon"}),
                  ModelPoint(memory={"kind": "mlp", "feature_map": {"kind": "polynomial"}}, bias={"kind": "l2"})):
        assert kernel_for(point) is None
        assert kernel_for(MemoryRule.from_point(point)) is None or point.memory.kind == "mlp"
