"""Docstrings of the compiled standard-library modules, read in a clean interpreter.

A long-lived process changes what these modules hold: W&B replaces ``sys.exit``, Ray's tqdm
replaces ``builtins.print``, a notebook replaces hooks. Read there, the corpus would lose those
members' documents and differ from one process to the next. So ``corpus.py`` runs this file as a
script under ``python -I -S`` (no site-packages, no environment variables, no script folder on
the path): it imports only the standard library and prints ``{"python": sys.version, "modules":
[[module, text], ...]}`` as JSON.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import inspect
import json
import sys
import warnings

# Compiled modules not imported: test helpers, and readline (may write to the terminal).
SKIP_MODULES = ("_test", "_xx", "_ctypes_test", "readline")


def compiled_modules() -> list[str]:
    """Names of standard-library modules without Python source (built in or extension modules)."""
    names = []
    for name in sorted(sys.stdlib_module_names):
        if name.startswith(SKIP_MODULES):
            continue
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        origin = (spec.origin or "") if spec is not None else ""
        if origin == "built-in" or origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
            names.append(name)
    return names


def module_text(name: str) -> str:
    """Docstrings of a compiled module and of its public members (no values: they vary per run)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = importlib.import_module(name)
    except Exception:  # a module the platform lacks; nothing to read
        return ""
    parts = [f"{name}\n\n{inspect.getdoc(module) or ''}"]
    for attr in sorted(vars(module)):
        if attr.startswith("_"):
            continue
        # sys keeps the originals of its replaceable hooks as sys.__excepthook__ and so on.
        # Anything from outside the stdlib is skipped.
        member = getattr(module, f"__{attr}__", None) or getattr(module, attr)
        origin = (getattr(member, "__module__", None) or name).split(".")[0]
        if origin not in sys.stdlib_module_names and origin != "builtins":
            continue
        if inspect.isroutine(member) or inspect.isclass(member):
            doc = inspect.getdoc(member)
            if doc:
                parts.append(f"{name}.{attr}\n{doc}")
    return "\n\n".join(parts)


def module_texts() -> list[tuple[str, str]]:
    """(name, text) of every compiled module with documentation, read in this process."""
    return [(name, text) for name in compiled_modules() if (text := module_text(name))]


def main() -> None:
    json.dump({"python": sys.version, "modules": module_texts()}, sys.stdout)


if __name__ == "__main__":
    main()
