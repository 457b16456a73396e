"""RWKV-7, HGRN2 and Lightning Attention: each preset against an independent float64 step written
from its paper, its chunked form against its recurrence (float64, odd lengths, gradients), and,
where flash-linear-attention (``fla``) is importable, against fla's naive recurrences.

fla's naive functions cast to float32 inside, so those comparisons hold at float32 precision;
the float64 checks are the independent steps below, which always run.
"""

from __future__ import annotations

import importlib
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from miras_search.errors import UnsupportedPoint
from miras_search.kernels import kernel_for
from miras_search.memory import MemoryGates, MemoryRule, memory_forward
from miras_search.memory import chunked as chunked_module
from miras_search.memory.kernel_path import kernel_problem
from miras_search.model import mixer as mixer_module
from miras_search.model.factory import build_model
from miras_search.presets import preset
from miras_search.schema import ModelPoint
from miras_search.validation import validate

LENGTHS = (1, 7, 63, 100)
SMALL = {"d_model": 32, "n_heads": 4, "n_layers": 3}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


# --- independent references, one step per token, from the papers' equations (S: [V, K]) -------

def rwkv7_reference(q, k, v, w, a, kw, s0=None):
    """RWKV-7 (arXiv 2503.14456, its eq. for the state): S_t = S_{t-1} (diag(w_t) - k_t^T (a_t *
    k_t)) + v_t^T kw_t, o_t = S_t q_t; q, k, w, a, kw: [B, T, H, K], v: [B, T, H, V]."""
    batch, length, heads, key_dim = k.shape
    s = k.new_zeros(batch, heads, v.shape[-1], key_dim) if s0 is None else s0
    out = []
    for t in range(length):
        kt, at = k[:, t], a[:, t]
        transition = torch.diag_embed(w[:, t]) - kt.unsqueeze(-1) * (at * kt).unsqueeze(-2)
        s = s @ transition + v[:, t].unsqueeze(-1) * kw[:, t].unsqueeze(-2)
        out.append((s @ q[:, t].unsqueeze(-1)).squeeze(-1))
    return torch.stack(out, dim=1)


def gated_linear_reference(q, k, v, f):
    """HGRN2 / Lightning Attention / GLA: S_t = S_{t-1} diag(f_t) + v_t k_t^T, o_t = S_t q_t;
    f: [B, T, H, K] (HGRN2: k = 1 - f) or [B, T, H] (a per-head decay)."""
    if f.dim() == 3:
        f = f.unsqueeze(-1).expand_as(k)
    batch, length, heads, key_dim = k.shape
    s = k.new_zeros(batch, heads, v.shape[-1], key_dim)
    out = []
    for t in range(length):
        s = s * f[:, t].unsqueeze(-2) + v[:, t].unsqueeze(-1) * k[:, t].unsqueeze(-2)
        out.append((s @ q[:, t].unsqueeze(-1)).squeeze(-1))
    return torch.stack(out, dim=1)


def _random(length: int, seed: int = 0, heads: int = 3, key_dim: int = 5, value_dim: int = 4):
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    q = F.normalize(randn(2, length, heads, key_dim), dim=-1)
    k = F.normalize(randn(2, length, heads, key_dim), dim=-1)
    v = randn(2, length, heads, value_dim)
    w = 0.5 + 0.5 * torch.rand(2, length, heads, key_dim, generator=gen, dtype=torch.float64)
    a = torch.rand(2, length, heads, key_dim, generator=gen, dtype=torch.float64)
    kw = randn(2, length, heads, key_dim)
    return q, k, v, w, a, kw


def _spy_model(monkeypatch, name: str, **overrides):
    seen: list[dict] = []
    original = mixer_module.memory_forward

    def spy(rule, q, k, v, gates, params, **kw):
        out = original(rule, q, k, v, gates, params, **kw)
        seen.append({"q": q, "k": k, "v": v, "gates": gates, "out": out})
        return out

    monkeypatch.setattr(mixer_module, "memory_forward", spy)
    return build_model(preset(name, block=SMALL, **overrides), "cpu").double(), seen


def _rwkv7_rule() -> MemoryRule:
    return MemoryRule.from_point(preset("rwkv7"))


# --- RWKV-7 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("length", LENGTHS)
def test_rwkv7_memory_equals_the_papers_step(length: int) -> None:
    q, k, v, w, a, kw = _random(length)
    expected = rwkv7_reference(q, k, v, w, a, kw)
    gates = MemoryGates(eta=a, alpha=w, write_key=kw)
    rule = _rwkv7_rule()
    recurrent = memory_forward(rule, q, k, v, gates, [], mode="recurrent")
    assert rel(recurrent, expected) <= 1e-12
    for chunk in (1, 4, 16):
        chunked = memory_forward(rule, q, k, v, gates, [], chunk_size=chunk, chunk_form="exact_delta")
        assert rel(chunked, expected) <= 1e-12, chunk


@pytest.mark.parametrize("length", (7, 63))
@pytest.mark.parametrize("gradient_at", ("previous", "retained"))
@pytest.mark.parametrize("gate_mode", ("channel", "head"))
@pytest.mark.parametrize("scores", ("separable", "pairwise"))
def test_generalized_delta_chunks_equal_the_recurrence_with_gradients(
    length: int, gradient_at: str, gate_mode: str, scores: str, monkeypatch
) -> None:
    """Forward and every input's gradient, float64, for both gradient points and gate shapes, and
    both ways of forming the chunk's decayed scores (products of decayed and undecayed inputs, or
    the per-channel ratios that strong decays need): the floor that picks one is forced here."""
    floor = float("-inf") if scores == "separable" else float("inf")
    monkeypatch.setitem(chunked_module.SEPARABLE_LOG_FLOOR, torch.float64, floor)
    point = preset("rwkv7", retention={"kind": "l2", "gradient_at": gradient_at,
                                       "alpha": {"mode": gate_mode}},
                   algorithm={"kind": "gd", "write_key": "lerp", "eta": {"mode": gate_mode}})
    rule = MemoryRule.from_point(point)
    q, k, v, w, a, kw = _random(length, seed=1)
    if gate_mode == "head":
        w, a = w[..., 0], a[..., 0]
    inputs = [t.clone().requires_grad_() for t in (q, k, v, w, a, kw)]
    upstream = torch.randn(2, length, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))

    def run(**form):
        qq, kk, vv, ww, aa, kkw = inputs
        out = memory_forward(rule, qq, kk, vv, MemoryGates(eta=aa, alpha=ww, write_key=kkw), [], **form)
        return out, torch.autograd.grad((out * upstream).sum(), inputs)

    ref, ref_grads = run(mode="recurrent")
    out, grads = run(chunk_size=16, chunk_form="exact_delta")
    assert rel(out, ref) <= 1e-10
    for got, want in zip(grads, ref_grads, strict=True):
        assert rel(got, want) <= 1e-9


def test_generalized_delta_strong_decays_stay_finite_and_exact() -> None:
    """Decays down to 0.5**60 a token (past the separable floor within a chunk): the chunked form
    picks the per-channel ratios itself and still equals the recurrence."""
    rule = _rwkv7_rule()
    q, k, v, w, a, kw = _random(40, seed=3)
    gates = MemoryGates(eta=a, alpha=w**60, write_key=kw)
    ref = memory_forward(rule, q, k, v, gates, [], mode="recurrent")
    out = memory_forward(rule, q, k, v, gates, [], chunk_size=16, chunk_form="exact_delta")
    assert torch.isfinite(out).all() and rel(out, ref) <= 1e-10


def test_rwkv7_tied_write_key_is_the_plain_delta_rule() -> None:
    """With the write key eta * k the generalized rule is the (previous-point) delta rule."""
    q, k, v, w, a, _ = _random(23, seed=2)
    rule = _rwkv7_rule()
    tied = memory_forward(rule, q, k, v, MemoryGates(eta=a, alpha=w, write_key=a * k), [], mode="recurrent")
    delta_rule = MemoryRule.from_point(preset("rwkv7", algorithm={"kind": "gd", "eta": {"mode": "channel"}}))
    plain = memory_forward(delta_rule, q, k, v, MemoryGates(eta=a, alpha=w), [], mode="recurrent")
    assert rel(tied, plain) <= 1e-12


def test_rwkv7_mixer_writes_with_the_replacement_key(monkeypatch) -> None:
    """The block hands the memory kw = k * (1 + (a - 1) * k_a), and its output is the paper's."""
    model, seen = _spy_model(monkeypatch, "rwkv7")
    layers = model.memory_mixers()
    for layer in layers:
        with torch.no_grad():
            layer.write_mix.uniform_(0.0, 2.0)  # away from its initial 1
    model(torch.randint(0, 256, (2, 9)))
    assert len(seen) == len(layers)
    for layer, call in zip(layers, seen, strict=True):
        q, k, v, gates = call["q"], call["k"], call["v"], call["gates"]
        assert gates.eta.shape == k.shape and gates.alpha.shape == k.shape  # channel-wise a_t, w_t
        mix = layer.write_mix.view(k.shape[-2:])  # [H, K]
        assert rel(gates.write_key, k * (1 + (gates.eta - 1) * mix)) <= 1e-15
        expected = rwkv7_reference(q, k, v, gates.alpha, gates.eta, gates.write_key)
        assert rel(call["out"], expected) <= 1e-12


def test_rwkv7_replacement_key_mix_is_not_weight_decayed() -> None:
    from miras_search.model.quick_train import make_optimizer

    model = build_model(preset("rwkv7", block=SMALL), "cpu")
    optimizer = make_optimizer(model, model.point.train, torch.device("cpu"))
    no_decay = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert all(id(layer.write_mix) in no_decay for layer in model.memory_mixers())


def test_rwkv7_has_no_minibatch_form_and_no_kernel() -> None:
    with pytest.raises(Exception, match=r"write_key 'lerp'.*minibatch"):
        validate(ModelPoint, {**preset("rwkv7").model_dump(), "train": {"chunk_form": "minibatch"}}, "t")
    q, k, v, w, a, kw = _random(5)
    rule = _rwkv7_rule()
    with pytest.raises(UnsupportedPoint, match="write key"):
        memory_forward(rule, q, k, v, MemoryGates(eta=a, alpha=w, write_key=kw), [], chunk_form="minibatch")
    assert preset("rwkv7").uses_exact_delta()
    assert kernel_for(preset("rwkv7")) is None and kernel_for(rule) is None
    assert kernel_problem(rule, q, v, 16, "auto") is not None
    pytest.importorskip("triton")
    # a forced kernel gets as far as the rule's own checks (Triton's interpreter on CPU)
    assert "write key" in kernel_problem(rule, q, v, 16, "triton")


def test_write_key_rules_name_the_field() -> None:
    with pytest.raises(Exception, match=r"algorithm\.write_key.*needs memory 'matrix'.*bias 'l2'"):
        validate(ModelPoint, {"bias": {"kind": "dot"}, "algorithm": {"kind": "gd", "write_key": "lerp"}}, "t")
    with pytest.raises(Exception, match=r"algorithm\.write_key.*'one_minus_alpha'.*bias 'dot'"):
        validate(ModelPoint, {"bias": {"kind": "l2"}, "retention": {"kind": "l2"},
                              "algorithm": {"kind": "gd", "write_key": "one_minus_alpha"}}, "t")
    rule = _rwkv7_rule()
    q, k, v, w, a, _ = _random(3)
    with pytest.raises(ValueError, match=r"needs gates\.write_key"):
        memory_forward(rule, q, k, v, MemoryGates(eta=a, alpha=w), [], mode="recurrent")


# --- HGRN2 -----------------------------------------------------------------------------------

@pytest.mark.parametrize("length", LENGTHS)
def test_hgrn2_key_is_one_minus_the_forget_gate(monkeypatch, length: int) -> None:
    model, seen = _spy_model(monkeypatch, "hgrn2")
    for layer in model.memory_mixers():
        assert layer.k_proj is None  # HGRN2 has no key projection
        with torch.no_grad():  # data-dependent forget gates, not the initial constant
            layer.gates["alpha"].proj.weight.normal_(0.0, 0.5)
    model(torch.randint(0, 256, (2, length)))
    for call in seen:
        f = call["gates"].alpha
        assert f.shape == call["k"].shape and f.std() > 0.01
        assert rel(call["k"], 1 - f) <= 1e-15
        expected = gated_linear_reference(call["q"], 1 - f, call["v"], f)
        assert rel(call["out"], expected) <= 1e-12


# --- Lightning Attention ---------------------------------------------------------------------

def test_alibi_slopes_are_alibis() -> None:
    from miras_search.model.gates import alibi_slopes

    assert alibi_slopes(4) == [2**-2, 2**-4, 2**-6, 2**-8]
    assert alibi_slopes(8) == [2 ** -(i + 1) for i in range(8)]
    assert alibi_slopes(3) == [2**-4, 2**-8, 2**-2]  # ALiBi's rule for a non-power of two


@pytest.mark.parametrize("length", LENGTHS)
def test_lightning_attention_decays_by_head_and_layer(monkeypatch, length: int) -> None:
    model, seen = _spy_model(monkeypatch, "lightning_attention")
    model(torch.randint(0, 256, (2, length)))
    n_layers = SMALL["n_layers"]
    assert len(seen) == n_layers
    for layer, call in enumerate(seen):
        slopes = torch.tensor([2**-2, 2**-4, 2**-6, 2**-8], dtype=torch.float64)
        decay = torch.exp(-slopes * (1 - layer / (n_layers - 1) + 1e-5))
        alpha = call["gates"].alpha
        assert alpha.shape == (2, length, 4)
        assert rel(alpha[0, 0], decay) <= 1e-7  # the schedule is built in float32
        assert (alpha == alpha[:1, :1]).all()  # fixed: the same for every token
        expected = gated_linear_reference(call["q"], call["k"], call["v"], alpha)
        assert rel(call["out"], expected) <= 1e-12


def test_alibi_is_a_retention_schedule_only() -> None:
    with pytest.raises(Exception, match=r"eta\.mode 'alibi' is a decay schedule"):
        validate(ModelPoint, {"algorithm": {"kind": "gd", "eta": {"mode": "alibi"}}}, "t")


# --- each preset: chunked == recurrent at the LM level (float64, gradients) --------------------

@pytest.mark.parametrize("name", ("rwkv7", "hgrn2", "lightning_attention"))
def test_preset_chunked_equals_recurrent_in_the_model(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(preset(name, block=SMALL, train={"chunk_size": 16}), "cpu").double()
    for layer in model.memory_mixers():  # data-dependent gates, away from their constant start
        for producer in layer.gates.values():
            if producer.proj is not None:
                torch.nn.init.normal_(producer.proj.weight, std=0.3)
    tokens = torch.randint(0, 256, (2, 37))
    logits, loss = model(tokens, tokens)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    model.set_memory_form(mode="recurrent")
    ref_logits, ref_loss = model(tokens, tokens)
    ref_grads = torch.autograd.grad(ref_loss, list(model.parameters()))
    assert rel(logits, ref_logits) <= 1e-10
    for got, want in zip(grads, ref_grads, strict=True):
        assert rel(got, want) <= 1e-8


# --- fla's naive recurrences (float32 inside fla), when fla is importable ----------------------

def _fla(module: str):
    """An fla module, or skip: fla is an optional cross-check (its import warns without Triton)."""
    pytest.importorskip("fla", reason="flash-linear-attention is not installed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(module)


def test_rwkv7_matches_fla_dplr_recurrence() -> None:
    naive = _fla("fla.ops.generalized_delta_rule.dplr.naive")
    q, k, v, w, a, kw = _random(41, seed=3)
    ours = memory_forward(_rwkv7_rule(), q, k, v, MemoryGates(eta=a, alpha=w, write_key=kw), [],
                          chunk_size=16, chunk_form="exact_delta")
    # fla: S [K, V], S_t = diag(exp(gk)) S + beta (alpha^T S) + kw v^T, o = S^T (q / sqrt(K))
    def heads_first(x):
        return x.transpose(1, 2).float()

    o, _ = naive.dplr_recurrence(
        heads_first(q * math.sqrt(q.shape[-1])), heads_first(kw), heads_first(v),
        heads_first(-k), heads_first(a * k), heads_first(torch.log(w)),
    )
    assert rel(ours, o.transpose(1, 2).double()) <= 1e-5


def test_hgrn2_matches_fla_gla_recurrence() -> None:
    naive = _fla("fla.ops.gla.naive")
    q, _, v, f, _, _ = _random(41, seed=4)
    rule = MemoryRule.from_point(preset("hgrn2"))
    ours = memory_forward(rule, q, 1 - f, v, MemoryGates(eta=torch.ones_like(f), alpha=f), [],
                          chunk_size=16)
    o, _ = naive.naive_recurrent_gla(
        (q * math.sqrt(q.shape[-1])).float(), (1 - f).float(), v.float(), torch.log(f).float()
    )
    assert rel(ours, o.double()) <= 1e-5


def test_lightning_attention_matches_fla_simple_gla() -> None:
    naive = _fla("fla.ops.simple_gla.naive")
    from miras_search.model.gates import lightning_decay

    q, k, v, *_ = _random(41, seed=5, heads=4)
    decay = lightning_decay(4, layer=1, n_layers=3).double().expand(2, 41, 4)
    rule = MemoryRule.from_point(preset("lightning_attention"))
    ours = memory_forward(rule, q, k, v, MemoryGates(eta=torch.ones_like(decay), alpha=decay), [],
                          chunk_size=16)
    o, _ = naive.naive_chunk_simple_gla(q.float(), k.float(), v.float(), torch.log(decay).float(),
                                        scale=1.0, chunk_size=16)
    assert rel(ours, o.double()) <= 1e-5


# --- the matrix kernel covers HGRN2 and Lightning Attention (Triton's interpreter on CPU) -------

@pytest.mark.parametrize("name", ["hgrn2", "lightning_attention"])
def test_matrix_kernel_runs_hgrn2_and_lightning(name: str) -> None:
    pytest.importorskip("triton")
    from miras_search.model.gates import lightning_decay

    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(0)
    batch, length, heads, dim = 2, 37, 2, 16
    q = F.normalize(torch.randn(batch, length, heads, dim, generator=gen), dim=-1)
    v = torch.randn(batch, length, heads, dim, generator=gen)
    if name == "hgrn2":
        alpha = 0.8 + 0.2 * torch.rand(batch, length, heads, dim, generator=gen)
        k = 1 - alpha
    else:
        alpha = lightning_decay(heads, 0, 2).expand(batch, length, heads)
        k = F.normalize(torch.randn(batch, length, heads, dim, generator=gen), dim=-1)
    q, k, v, alpha = (x.to(device) for x in (q, k, v, alpha))
    q.requires_grad_()
    gates = MemoryGates(eta=torch.ones(batch, length, heads, device=device), alpha=alpha)
    rule = MemoryRule.from_point(preset(name))
    fused = memory_forward(rule, q, k, v, gates, [], chunk_size=16, kernel="triton")
    reference = memory_forward(rule, q, k, v, gates, [], chunk_size=16, kernel="torch")
    tolerance = 5e-3 if device == "cuda" else 1e-5  # bf16/tf32 products on a GPU
    assert rel(fused, reference) <= tolerance
    (g_fused,) = torch.autograd.grad(fused.square().sum(), q)
    (g_ref,) = torch.autograd.grad(reference.square().sum(), q)
    assert rel(g_fused, g_ref) <= tolerance
