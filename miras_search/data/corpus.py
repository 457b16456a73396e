"""The embedded byte-level corpus: English text that every Python installation carries.

Documents (about 4 MB on CPython 3.11), all read offline from the running interpreter:

- ``source:<path>``: docstrings and comment blocks of every standard-library .py file
  (test suites and site-packages left out), read with ast / tokenize, never imported;
- ``module:<name>``: docstrings of the compiled standard-library modules (builtins, math, ...)
  and of their public members, through inspect;
- ``topic:<name>``: the ``help()`` topics of pydoc_data.topics;
- ``license``: the interpreter's LICENSE.txt.

The corpus is split by document hash (see documents.py) and cached as a token store keyed by the
Python version, a fingerprint of the source files and the build parameters.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.util
import inspect
import io
import os
import sys
import sysconfig
import tokenize
import warnings
from collections.abc import Iterator
from pathlib import Path

from miras_search.data.store import TokenStore, build_store, recipe_key
from miras_search.data.tokenizer import Tokenizer, load_tokenizer

BUILDER_VERSION = 2
_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib-dynload"}
# Compiled modules not imported: test helpers, and readline (may write to the terminal).
_SKIP_MODULES = ("_test", "_xx", "_ctypes_test", "readline")


def _stdlib() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _source_files() -> list[Path]:
    """Standard-library .py files in sorted order, without tests and third-party packages."""
    files = []
    for folder, dirs, names in os.walk(_stdlib()):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("config-"))
        files += [Path(folder, n) for n in sorted(names) if n.endswith(".py")]
    return files


def _compiled_modules() -> list[str]:
    """Names of standard-library modules without Python source (built in or extension modules)."""
    names = []
    for name in sorted(sys.stdlib_module_names):
        if name.startswith(_SKIP_MODULES):
            continue
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        origin = (spec.origin or "") if spec is not None else ""
        if origin == "built-in" or origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
            names.append(name)
    return names


def source_text(source: bytes) -> str:
    """Docstrings (module, classes, functions) and comment blocks of one .py file, in file order."""
    parts: list[tuple[int, str]] = []
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ""
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node)
            if doc:
                line = getattr(node, "lineno", 0)
                title = f"{node.name}: " if hasattr(node, "name") else ""
                parts.append((line, title + doc))
    block: list[str] = []
    block_line = 0
    try:
        for tok in tokenize.tokenize(io.BytesIO(source).readline):
            if tok.type == tokenize.COMMENT and not tok.string.startswith(("#!", "# -*-")):
                if not block:
                    block_line = tok.start[0]
                block.append(tok.string.lstrip("#").strip())
            elif tok.type not in (tokenize.NL, tokenize.COMMENT) and block:
                parts.append((block_line, "\n".join(block).strip()))
                block = []
    except (tokenize.TokenError, SyntaxError):
        pass
    return "\n\n".join(text for _, text in sorted(parts, key=lambda p: p[0]) if text)


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
        # Hooks such as sys.excepthook may be replaced at run time; sys keeps the originals
        # as sys.__excepthook__ and so on. Anything else from outside the stdlib is skipped.
        member = getattr(module, f"__{attr}__", None) or getattr(module, attr)
        origin = (getattr(member, "__module__", None) or name).split(".")[0]
        if origin not in sys.stdlib_module_names and origin != "builtins":
            continue
        if inspect.isroutine(member) or inspect.isclass(member):
            doc = inspect.getdoc(member)
            if doc:
                parts.append(f"{name}.{attr}\n{doc}")
    return "\n\n".join(parts)


def iter_documents() -> Iterator[str]:
    """Every corpus document, in a fixed order (the split does not depend on it)."""
    root = _stdlib()
    for path in _source_files():
        text = source_text(path.read_bytes())
        if text:
            yield f"{path.relative_to(root).as_posix()}\n\n{text}\n"
    for name in _compiled_modules():
        text = module_text(name)
        if text:
            yield text + "\n"
    from pydoc_data.topics import topics

    for topic in sorted(topics):
        yield f"{topic}\n\n{topics[topic]}"
    licence = root / "LICENSE.txt"
    if licence.is_file():
        yield licence.read_text(encoding="utf-8", errors="replace")


def _fingerprint() -> list[object]:
    """Cheap to compute: what decides the corpus without building it."""
    root = _stdlib()
    files = [(p.relative_to(root).as_posix(), p.stat().st_size) for p in _source_files()]
    return [sys.version, BUILDER_VERSION, files, _compiled_modules()]


def load_corpus(
    tokenizer: Tokenizer | str = "bytes",
    *,
    val_fraction: float = 0.05,
    root: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> TokenStore:
    """The embedded corpus as a token store (built on first use, a few seconds; then cached)."""
    tok = load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
    key = recipe_key(_fingerprint(), tok.name, val_fraction)
    meta = {"source": "python-stdlib-text", "python": sys.version}
    return build_store(
        "corpus", key, iter_documents, tok, val_fraction=val_fraction, meta=meta, root=root, force=force
    )
