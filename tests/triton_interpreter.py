"""Test-time speed-up of Triton's interpreter (TRITON_INTERPRET=1, the CPU runs of the kernels).

The interpreter swaps triton.language's builtins for NumPy versions when a kernel launches, and
again on every call of a ``@triton.jit`` helper inside it, though the launch has swapped them
already and they stay swapped until it ends. Each repeat scans the language modules with
``inspect.getmembers`` (about 1 ms): the kernels call helpers per token and per tile, so in the
slowest tests (Memora's per-token kl read) the repeats took 60 % of the time. Here a helper's call
skips the swap when the enclosing launch has made it for every language module the helper sees;
what runs is unchanged. Installed by ``tests/conftest.py`` where the interpreter is on; a Triton
without the private hook it wraps is left alone."""

from __future__ import annotations

from functools import cache

import triton.language as tl
from triton.runtime import interpreter

_swapped: set[int] = set()  # ids of the language modules the running launch has swapped


@cache
def _language_modules(fn) -> frozenset[int]:
    return frozenset(id(value) for value in fn.__globals__.values() if value is tl or value is tl.core)


def install() -> bool:
    """Wrap the interpreter's ``_patch_lang`` once per process; False where it has none."""
    swap = getattr(interpreter, "_patch_lang", None)
    scope_type = getattr(interpreter, "_LangPatchScope", None)
    if swap is None or scope_type is None or getattr(swap, "_skips_repeats", False):
        return False

    def swap_once(fn):
        modules = _language_modules(fn)
        if modules and modules <= _swapped:
            return scope_type()  # nothing swapped, nothing to undo
        scope = swap(fn)
        _swapped.update(modules)
        undo = scope.restore

        def restore() -> None:
            undo()
            _swapped.clear()

        scope.restore = restore
        return scope

    swap_once._skips_repeats = True
    interpreter._patch_lang = swap_once
    return True
