"""``miras_search.kernels`` resolves to the top-level kernels/ folder the same way from a plain
checkout, an editable install and a regular install, each in a fresh ``python -c`` process, and
none of them imports a top-level ``kernels`` (Hugging Face's kernel hub takes that name)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PROBE = (
    "import sys, miras_search, miras_search.kernels as k\n"
    "from miras_search.kernels.matrix_chunk import naive_chunk_matrix_memory\n"
    "from miras_search.kernels.mlp_chunk.naive import MlpMemoryConfig\n"
    "assert callable(k.kernel_for) and callable(naive_chunk_matrix_memory)\n"
    "assert 'kernels' not in sys.modules, 'a top-level kernels was imported'\n"
    "print(miras_search.__file__); print(k.__file__)\n"
)


def _probe(cwd: Path, env_path: str | None = None) -> list[Path]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["TRITON_INTERPRET"] = "1"  # import without a GPU
    if env_path is not None:
        env["PYTHONPATH"] = env_path
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return [Path(line) for line in done.stdout.split()]


def _copy_checkout(root: Path, dest: Path) -> Path:
    for name in ("miras_search", "kernels"):
        shutil.copytree(root / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(root / name, dest / name)
    return dest


def test_plain_checkout(root: Path, tmp_path: Path) -> None:
    """From a checkout's root (on sys.path as the current folder), no install involved."""
    checkout = _copy_checkout(root, tmp_path)
    package, kernels = _probe(checkout)
    assert package == checkout / "miras_search" / "__init__.py"
    assert kernels == checkout / "kernels" / "__init__.py"


def test_editable_install_or_checkout_of_this_run(root: Path, tmp_path: Path) -> None:
    """Outside the repository, through the test run's own environment (an editable install in
    CI): the package and its kernels are this repository's."""
    package, kernels = _probe(tmp_path)
    assert package.parent.parent == kernels.parent.parent == root


def test_regular_install(root: Path, tmp_path: Path) -> None:
    """A regular (non-editable) install carries kernels/ inside the package."""
    target = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(_copy_checkout(root, tmp_path / "src"))],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    package, kernels = _probe(tmp_path, str(target))
    assert package == target / "miras_search" / "__init__.py"
    assert kernels == target / "miras_search" / "kernels" / "__init__.py"
