"""Compile a Triton kernel for an NVIDIA GPU on any machine (no GPU needed) and read its resources.

Triton's interpreter (TRITON_INTERPRET=1) runs kernels as NumPy and checks their math, but not
what only the compiler sees: constexpr-only globals, type-stable branches, shared memory that
fits, register spills. ``compile_for_gpu`` runs the real compiler (front end, the NVIDIA
backend and the ptxas bundled with Triton) for a target such as sm_90 (H100), and
``resource_usage`` reads registers, spill stack and shared memory from the cubin.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

_CONSTEXPRS_BY_INDEX = "constexprs" in inspect.signature(ASTSource.__init__).parameters


@dataclass(frozen=True)
class Resources:
    """Per-thread registers, spill stack bytes per thread, and shared memory bytes per program."""

    registers: int
    stack: int
    shared: int


def _scalar_type(value: Any) -> str:
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"scalar argument of type {type(value).__name__} has no Triton type here")


def compile_for_gpu(
    kernel: Any,
    scalars: dict[str, Any],
    pointers: dict[str, str] | None = None,
    num_warps: int = 4,
    capability: int = 90,
) -> Any:
    """Compile ``kernel`` (a @triton.jit function) for an NVIDIA GPU of ``capability``.

    ``scalars``: every constexpr parameter and every runtime scalar, by name (runtime scalars
    are typed from their Python value: int -> i32, float -> fp32); every other parameter is a
    pointer, ``*fp32`` unless ``pointers`` names its type (e.g. ``{"q": "*bf16"}``).
    Raises triton's CompilationError (or OutOfResources) where a GPU launch would.
    """
    if not isinstance(kernel, triton.runtime.JITFunction):
        raise TypeError(
            f"{getattr(kernel, '__name__', kernel)!r} is not a compilable Triton kernel: kernels "
            "imported while TRITON_INTERPRET=1 is set are interpreted; compile in a process "
            "without it"
        )
    params = inspect.signature(kernel.fn).parameters
    signature, constexprs = {}, {}
    for index, (name, param) in enumerate(params.items()):
        if param.annotation is triton.language.constexpr or param.annotation == "tl.constexpr":
            signature[name] = "constexpr"
            constexprs[(index,) if _CONSTEXPRS_BY_INDEX else name] = scalars[name]
        elif name in scalars:
            signature[name] = _scalar_type(scalars[name])
        else:
            signature[name] = (pointers or {}).get(name, "*fp32")
    if _CONSTEXPRS_BY_INDEX:  # Triton >= 3.3
        source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    else:  # Triton 3.2: constants by parameter name
        source = ASTSource(fn=kernel, signature=signature, constants=constexprs)
    target = GPUTarget("cuda", capability, 32)
    return triton.compile(source, target=target, options={"num_warps": num_warps, "num_stages": 1})


def resource_usage(compiled: Any) -> Resources:
    """Registers and spill stack (from the cubin, via the cuobjdump bundled with Triton) and
    shared memory (Triton's metadata) of a compiled kernel."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "kernel.cubin")
        with open(path, "wb") as handle:
            handle.write(compiled.asm["cubin"])
        report = subprocess.run([tool, "--dump-resource-usage", path], capture_output=True, text=True,
                                check=True).stdout
    line = next(row for row in report.splitlines() if "REG:" in row)
    fields = dict(item.split(":", 1) for item in line.split() if ":" in item)
    return Resources(int(fields["REG"]), int(fields["STACK"]), int(compiled.metadata.shared))
