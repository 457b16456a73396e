"""train.compile: layers compiled in place, one graph for all layers, the eager model's numbers;
and an eager fallback with a warning where inductor cannot run."""

from __future__ import annotations

import warnings

import pytest
import torch

from miras_search.model import build_model, compiling
from miras_search.model.compiling import CompileFallbackWarning, compile_problem, is_compiled
from miras_search.presets import PRESET_AXES, preset

CPU = torch.device("cpu")
BLOCK = {"d_model": 32, "n_heads": 2, "n_layers": 2, "vocab_size": 260}
TRAIN = {"seq_len": 16, "batch_size": 2, "tokens": 4096, "chunk_size": 8, "kernel": "torch"}


def _loss_and_grads(model: torch.nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    _, loss = model(tokens[:, :-1], tokens[:, 1:])
    loss.backward()
    grads = [p.grad.detach().clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def _assert_same_step(loss_c: torch.Tensor, grads_c: list[torch.Tensor], loss_e: torch.Tensor,
                      grads_e: list[torch.Tensor]) -> None:
    """Compiled against eager, float32: fused kernels sum in another order, so rounding-level
    differences only (loss 1e-5 relative, each gradient 1e-4 relative in norm)."""
    assert torch.allclose(loss_c, loss_e, rtol=1e-5, atol=0)
    for g_c, g_e in zip(grads_c, grads_e, strict=True):
        assert (g_c - g_e).norm() <= 1e-4 * g_e.norm() + 1e-8


def test_no_compiler_falls_back_to_eager_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> str:
        raise RuntimeError("Unsupported or missing C++ compiler: g++, clang++")

    monkeypatch.setattr("torch._inductor.cpp_builder.get_cpp_compiler", missing)
    problem = compile_problem(CPU)
    assert problem is not None and "C++ compiler" in problem and "missing" in problem
    point = preset("gated_deltanet", block=BLOCK, train={**TRAIN, "compile": True})
    with pytest.warns(CompileFallbackWarning, match="runs eager"):
        model = build_model(point, "cpu")
    assert not is_compiled(model)
    tokens = torch.randint(0, 256, (2, 17), generator=torch.Generator().manual_seed(0))
    loss, _ = _loss_and_grads(model, tokens)
    assert torch.isfinite(loss)


def test_unsupported_device_kind_is_named() -> None:
    assert "mps" in compile_problem(torch.device("mps"))


@pytest.mark.slow
@pytest.mark.skipif(compile_problem(CPU) is not None, reason="inductor cannot compile for the CPU here")
def test_compiled_layers_match_eager_and_share_one_graph() -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    eager_model = build_model(preset("gated_deltanet", block=BLOCK, train=TRAIN), "cpu")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        compiled = build_model(preset("gated_deltanet", block=BLOCK, train={**TRAIN, "compile": True}), "cpu")
    assert is_compiled(compiled) and not is_compiled(eager_model)
    assert list(compiled.state_dict()) == list(eager_model.state_dict())  # same keys: checkpoints load
    tokens = torch.randint(0, 256, (2, 17), generator=torch.Generator().manual_seed(1))
    for _ in range(2):  # the second call runs the cached graph
        loss_c, grads_c = _loss_and_grads(compiled, tokens)
    _assert_same_step(loss_c, grads_c, *_loss_and_grads(eager_model, tokens))
    assert counters["stats"]["unique_graphs"] == 1, "both layers should run one shared graph"
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    with compiling.eager(), torch.no_grad():  # evaluation: eager, no second compile
        logits = compiled(tokens[:, :-1])
    assert counters["stats"]["unique_graphs"] == 1
    assert torch.allclose(logits, eager_model(tokens[:, :-1]), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PRESET_AXES))
def test_every_preset_layer_breaks_its_graph_only_where_meant_to(name: str) -> None:
    """Dynamo's trace of a layer (no code generation) breaks its graph at two places only, both
    on purpose: the data-dependent check ``chunked.separable`` (channel-wise decays) and the
    minibatch chunk loop, which runs outside the graph (its chunk update compiles on its own);
    not at Functions built at call time, untraceable iterators or other scalar reads."""
    torch._dynamo.reset()
    block = {"d_model": 32, "n_heads": 2, "n_layers": 1, "vocab_size": 260}
    train = {**PRESET_AXES[name].get("train", {}), "seq_len": 16, "batch_size": 2, "chunk_size": 8,
             "kernel": "torch", "tokens": 4096}
    layer = build_model(preset(name, block=block, train=train), "cpu").layers[0]
    x = torch.randn(2, 16, 32)
    explained = torch._dynamo.explain(layer)(x)
    elsewhere = [
        f"{reason.reason.splitlines()[0]} at {[f'{frame.name}:{frame.lineno}' for frame in reason.user_stack][-3:]}"
        for reason in explained.break_reasons
        if not any(frame.name == "separable" for frame in reason.user_stack)
        and not ("disable" in reason.reason and reason.user_stack[-1].name == "memory_forward")
    ]
    assert not elsewhere, elsewhere


@pytest.mark.parametrize("hybrid", ["none", "samba"])
def test_a_deep_memory_block_keeps_its_graph_around_the_chunk_loop(hybrid: str) -> None:
    """The chunk loop's graph break must not cost the block its own graph: Dynamo cannot resume a
    graph broken inside a Python loop and skips the whole frame (its norms, residuals and MLP would
    run eager), so the block's forward must reach its memory mixer outside a loop."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    from miras_search.model.lm import Layer

    torch._dynamo.reset()
    block = {**BLOCK, "n_layers": 1, "hybrid": hybrid}
    train = {**PRESET_AXES["moneta"].get("train", {}), **TRAIN}
    layer = build_model(preset("moneta", block=block, train=train), "cpu").layers[0]
    assert len(layer.mixers) == (2 if hybrid == "samba" else 1)
    torch.compile(layer, backend="eager")(torch.randn(2, 16, 32))
    assert _debug_get_cache_entry_list(Layer.forward.__code__), "the block's frame ran eager"


def test_kernel_calls_run_outside_the_compiled_graph() -> None:
    """Our Triton ops and fla's run eagerly inside a compiled layer (Dynamo would trace into their
    launches): the call breaks the graph and the callee sees no tracing."""
    from miras_search.memory.fla_path import run_fla
    from miras_search.memory.kernel_path import _outside_compile

    seen: list[bool] = []

    def kernel_like(x: torch.Tensor, *, scale: float) -> torch.Tensor:
        seen.append(torch.compiler.is_compiling())
        return x * scale

    def layer(x: torch.Tensor) -> torch.Tensor:
        return _outside_compile(kernel_like, x.sin(), scale=2.0).cos()

    torch._dynamo.reset()
    x = torch.randn(3, 5)
    explained = torch._dynamo.explain(layer)(x)
    assert explained.graph_break_count == 1
    seen.clear()
    out = torch.compile(layer, backend="eager")(x)
    assert seen == [False] and torch.allclose(out, (2.0 * x.sin()).cos())
    assert getattr(run_fla, "_torchdynamo_disable", False), "fla's call must be excluded from compile too"


@pytest.mark.slow
@pytest.mark.skipif(compile_problem(CPU) is not None, reason="inductor cannot compile for the CPU here")
def test_chunk_loop_stays_eager_and_its_update_compiles_once_per_state_layout() -> None:
    """An MLP memory's chunk loop runs outside the layer's graph and its chunk update compiles on
    its own: one graph for the first chunk (the learned initial state, no carried read scale) and
    one for every later chunk of every layer, not a graph per chunk; outputs and gradients equal
    the eager model's."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    from miras_search.memory.chunked import chunk_update

    torch._dynamo.reset()
    block = {**BLOCK, "n_layers": 3}
    train = {**PRESET_AXES["moneta"].get("train", {}), **TRAIN, "seq_len": 32}  # 4 chunks of 8
    torch.manual_seed(0)
    eager_model = build_model(preset("moneta", block=block, train=train), "cpu")
    torch.manual_seed(0)
    compiled = build_model(preset("moneta", block=block, train={**train, "compile": True}), "cpu")
    tokens = torch.randint(0, 256, (2, 33), generator=torch.Generator().manual_seed(2))
    _assert_same_step(*_loss_and_grads(compiled, tokens), *_loss_and_grads(eager_model, tokens))
    assert len(_debug_get_cache_entry_list(chunk_update.__code__)) == 2


def test_auto_compiles_only_where_it_pays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiling, "compile_problem", lambda device: None)
    after = compiling.AUTO_AFTER_S
    assert compiling.auto_compiles(CPU, 0.5, int(2 * after / 0.5))
    assert not compiling.auto_compiles(CPU, 0.5, int(0.5 * after / 0.5))
    assert not compiling.auto_compiles(torch.device("cuda"), 10.0, 10_000)  # not measured on GPUs
    monkeypatch.setattr(compiling, "compile_problem", lambda device: "no C++ compiler")
    assert not compiling.auto_compiles(CPU, 10.0, 10_000)


@pytest.mark.parametrize("pays", [True, False])
def test_train_loop_compiles_after_the_probe_steps_when_auto_says_so(
    monkeypatch: pytest.MonkeyPatch, pays: bool
) -> None:
    """'auto' times AUTO_PROBE_STEPS eager steps, then decides once and compiles where that pays
    (a recorder stands in for the compile, which the tests above run); false never decides."""
    from miras_search.model import quick_train

    calls: list[tuple[int, float, int]] = []
    compiled_at: list[int] = []

    def decide(device: torch.device, seconds_per_step: float, steps_left: int) -> bool:
        calls.append((len(losses_seen), seconds_per_step, steps_left))
        return pays

    losses_seen: list[float] = []
    monkeypatch.setattr(quick_train, "auto_compiles", decide)
    monkeypatch.setattr(quick_train, "compile_layers",
                        lambda layers, device, eager_on_error: compiled_at.append(len(losses_seen)))
    point = preset("gated_deltanet", block=BLOCK, train={**TRAIN, "compile": "auto"})
    data = [torch.randint(0, 256, (2, 17), generator=torch.Generator().manual_seed(i)) for i in range(8)]

    def on_step(info: quick_train.StepInfo) -> None:
        losses_seen.append(info.loss)

    result = quick_train.train_tokens(point, data, steps=8, on_step=on_step, device="cpu")
    assert result.steps == 8
    probe = compiling.AUTO_PROBE_STEPS
    assert [(seen, left) for seen, _, left in calls] == [(probe, 8 - probe - 1)]  # decided once
    assert calls[0][1] > 0
    assert compiled_at == ([probe] if pays else [])
    calls.clear()
    quick_train.train_tokens(preset("gated_deltanet", block=BLOCK, train={**TRAIN, "compile": False}),
                             data, steps=8, device="cpu")
    assert calls == [], "false never compiles (true compiles at build: test_compiled_layers_...)"


def test_auto_runs_eager_where_a_graph_fails_to_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    """'auto' compiles with eager_on_error: an inductor failure leaves that graph eager (true,
    asked for by name, raises it)."""
    import torch._inductor.compile_fx as inductor_entry

    class Tiny(torch.nn.Module):  # a module of ours: Dynamo does not compile torch.nn's own
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(4, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x @ self.w).sin()

    def failing(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated inductor failure")

    monkeypatch.setattr(torch._dynamo.config, "suppress_errors", False)  # restored after the test
    monkeypatch.setattr(inductor_entry, "compile_fx", failing)
    monkeypatch.setattr(compiling, "compile_problem", lambda device: None)
    x = torch.randn(2, 4)
    for eager_on_error in (False, True):
        torch._dynamo.reset()
        layers = torch.nn.ModuleList([Tiny()])
        assert compiling.compile_layers(layers, CPU, eager_on_error=eager_on_error)
        if eager_on_error:
            assert torch.allclose(layers[0](x), (x @ layers[0].w).sin())
        else:
            with pytest.raises(Exception, match="simulated inductor failure"):
                layers[0](x)
