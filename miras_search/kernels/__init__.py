"""``miras_search.kernels`` in a checkout: the repository's top-level ``kernels/`` folder.

The kernels live at the top level (the project's layout), and an install carries them as
``miras_search.kernels`` (setup.py maps the package to that folder, so this file is not
installed). Run from a plain checkout, or where an editable install's path finder reaches this
file first, it loads that folder as this package: the same modules under the same name in all
three cases, and no import of a top-level ``kernels`` (a name Hugging Face's kernel hub takes).
"""

import importlib.util
import sys
from pathlib import Path

_FOLDER = Path(__file__).resolve().parents[2] / "kernels"
_spec = importlib.util.spec_from_file_location(
    __name__, _FOLDER / "__init__.py", submodule_search_locations=[str(_FOLDER)]
)
if _spec is None or _spec.loader is None:
    raise ImportError(f"miras_search.kernels: no kernels/__init__.py beside the package at {_FOLDER.parent}")
_module = importlib.util.module_from_spec(_spec)
sys.modules[__name__] = _module  # the import of this package returns the folder's module
_spec.loader.exec_module(_module)
