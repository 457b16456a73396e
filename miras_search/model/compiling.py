"""train.compile: torch.compile for the model's layers, with a fallback where it cannot run.

Each of MirasLM's layers is compiled in place (``nn.Module.compile``, static shapes): layers of
one kind share a single graph (their parameters are its inputs), so a model compiles one layer's
forward and backward, not the whole unrolled stack (about half the time), and the state dict
keeps its keys. Inductor writes its kernels to its on-disk cache, so later processes with the
same shapes (a study's trials) load them in seconds.

Evaluation runs eager (``eager()``): a no-grad pass at another batch size would compile a
second graph for a few batches.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator

import torch
from torch import nn


class CompileFallbackWarning(RuntimeWarning):
    """train.compile asked for torch.compile where it cannot run; the model runs eager."""


def compile_problem(device: torch.device) -> str | None:
    """Why torch.compile's default backend (inductor) cannot compile for ``device``, or None.

    On a CPU inductor builds C++ (it needs a compiler: g++ or clang++, or $CXX); on a GPU it
    writes Triton kernels."""
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "inductor's GPU kernels need Triton, which is not installed"
        return None
    if device.type != "cpu":
        return f"compiling for {device.type} devices is not supported here"
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as error:  # its exception types are private and have moved between releases
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"inductor's CPU backend found no usable C++ compiler ({first}); install g++ or set CXX"
    return None


def compile_layers(layers: Iterable[nn.Module], device: torch.device, eager_on_error: bool = False) -> bool:
    """Compile each module of ``layers`` (a model's ``layers``) in place, static shapes; True if
    compiled.

    Where compile_problem names a reason, warns with it (CompileFallbackWarning) and leaves the
    model eager: a point runs either way, and the same weights train the same math.
    ``eager_on_error`` (train.compile 'auto', which the user did not ask for by name): a graph
    that fails to compile runs eager (Dynamo's suppress_errors, process-wide) instead of failing
    the run."""
    problem = compile_problem(device)
    if problem is not None:
        warnings.warn(f"train.compile: {problem}; the model runs eager", CompileFallbackWarning, stacklevel=2)
        return False
    if eager_on_error:
        torch._dynamo.config.suppress_errors = True
    if hasattr(torch._dynamo.config, "nested_graph_breaks"):
        # An MLP memory's chunk loop breaks the layer's graph two calls deep (layer -> mixer ->
        # memory_forward). Without nested breaks each of those frames ended its graph there: four
        # graphs, and AOTAutograd copied every gate and q/k/v gradient at their borders. With them
        # the layer is one graph before the loop and one after (process-wide, like suppress_errors).
        torch._dynamo.config.nested_graph_breaks = True
    for layer in layers:
        layer.compile(dynamic=False)
    return True


AUTO_PROBE_STEPS = 3
"""train.compile 'auto' times this many eager steps (the first, which allocates, left out)."""
AUTO_AFTER_S = 300.0
"""... and compiles once the steps left would take longer than this eager: on a CPU the compile
takes 25-65 s cold and then saves 25-40% of every step (benchmarks/results/cpu_speed.md, section
8), so it pays well before; shorter runs (the quickstart's trials) stay eager."""


def auto_compiles(device: torch.device, seconds_per_step: float, steps_left: int) -> bool:
    """Whether train.compile 'auto' compiles now: on a CPU where inductor can run, when
    ``steps_left`` eager steps of ``seconds_per_step`` would take longer than AUTO_AFTER_S. (On a
    GPU the gain is not measured yet: it stays eager there.)"""
    return (device.type == "cpu" and seconds_per_step * steps_left > AUTO_AFTER_S
            and compile_problem(device) is None)


def is_compiled(model: nn.Module) -> bool:
    """Whether some layer of ``model`` runs compiled (compile_layers took)."""
    return any(getattr(layer, "_compiled_call_impl", None) is not None for layer in getattr(model, "layers", ()))


@contextlib.contextmanager
def eager() -> Iterator[None]:
    """Run compiled modules eagerly inside the block (no new graph is compiled there)."""
    with torch.compiler.set_stance("force_eager"):
        yield
