"""lm-evaluation-harness on a checkpoint: the paper's downstream tasks (lambada_openai, piqa,
hellaswag, winogrande, arc_easy, arc_challenge, siqa, boolq) or any task lm-eval knows, including
task YAML files in a folder of your own (``include_path``).

The checkpoint becomes a ``MirasForCausalLM`` with the byte tokenizer, wrapped in lm-eval's own
Hugging Face adapter (``HFLM``), so lm-eval scores it exactly as it scores any causal LM.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from miras_search.errors import MirasError, first_line

PAPER_TASKS = ("lambada_openai", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge",
               "siqa", "boolq")
"""The Miras paper's downstream benchmarks (their data comes from the Hugging Face Hub)."""


_MESSAGE_CHARS = 300  # of a library's error text quoted in ours


def _is_download_failure(error: BaseException) -> bool:
    """Whether ``error`` (or one it came from) is a failed download: no network, the Hub's
    offline mode, or a file that is only on the Hub."""
    while error is not None:
        name = type(error).__name__
        if isinstance(error, ConnectionError) or "Connection" in name or "Offline" in name \
                or "LocalEntryNotFound" in name or "Couldn't reach" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def lm_eval_problem(error: BaseException, tasks: list[str], local: set[str]) -> str:
    """One paragraph on why lm-eval could not evaluate ``tasks`` (``local``: those of
    --include-path, whose data needs no network)."""
    if _is_download_failure(error):
        remote = [t for t in tasks if t not in local] or tasks
        return (f"cannot download the data of task(s) {', '.join(remote)} from the Hugging Face Hub "
                f"(offline?): {first_line(error, _MESSAGE_CHARS)}; tasks of your own run offline with --include-path")
    return f"lm-eval failed on task(s) {', '.join(tasks)}: {type(error).__name__}: {first_line(error, _MESSAGE_CHARS)}"


def _load_task_yaml(path: Path) -> dict[str, Any] | None:
    """A task YAML as lm-eval reads it (its ``include`` merged, ``!function`` resolved beside it)."""
    try:
        from lm_eval.tasks._yaml_loader import load_yaml
    except ImportError:  # lm-eval before 0.4.10
        from lm_eval.utils import load_yaml_config

        return load_yaml_config(yaml_path=str(path), mode="full")
    return load_yaml(path, resolve_func=True)


def _beside(folder: Path, value: Any) -> Any:
    """``value`` (a path, a glob pattern, or a list / mapping of them) made absolute against
    ``folder`` where it names something there; other values unchanged."""
    if isinstance(value, list):
        return [_beside(folder, item) for item in value]
    if isinstance(value, dict):
        return {key: _beside(folder, item) for key, item in value.items()}
    if isinstance(value, str) and value and not Path(value).is_absolute() and "://" not in value:
        candidate = folder / value
        if candidate.exists() or any(folder.glob(value)):
            return str(candidate.resolve())
    return value


def resolve_data_paths(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``config`` (a task YAML's) with its local data paths (``dataset_path``, and
    ``dataset_kwargs``' ``data_files`` / ``data_dir``) read relative to ``folder``, the YAML's own
    folder, rather than the working directory (what lm-eval and datasets would do)."""
    resolved = dict(config)
    if isinstance(config.get("dataset_path"), str):
        resolved["dataset_path"] = _beside(folder, config["dataset_path"])
    kwargs = config.get("dataset_kwargs")
    if isinstance(kwargs, dict):
        resolved["dataset_kwargs"] = {key: _beside(folder, value) if key in ("data_files", "data_dir") else value
                                      for key, value in kwargs.items()}
    return resolved


def _yaml_path(entry: Any) -> Path | None:
    """The YAML file of a TaskManager index entry (an object in lm-eval 0.4.10+, a dict before)."""
    found = entry.get("yaml_path") if isinstance(entry, dict) else getattr(entry, "yaml_path", None)
    return Path(found) if isinstance(found, str | Path) else None


def _local_yaml(manager: Any, name: str, include_path: str | Path | None) -> Path | None:
    """The YAML file of task ``name`` when it lies under ``include_path``; None otherwise."""
    if include_path is None:
        return None
    path = _yaml_path(manager.task_index.get(name))
    inside = path is not None and path.resolve().is_relative_to(Path(include_path).resolve())
    return path if inside else None


def local_task_spec(manager: Any, name: str, include_path: str | Path | None) -> dict[str, Any] | None:
    """The config of task ``name`` when its YAML lies under ``include_path`` and names data files
    beside it: those paths resolved, so the task runs from any working directory. None otherwise
    (lm-eval then loads the task by its name, as usual)."""
    path = _local_yaml(manager, name, include_path)
    if path is None:
        return None
    config = _load_task_yaml(path)
    if not isinstance(config, dict) or config.get("task") != name or "class" in config:
        return None
    resolved = resolve_data_paths(config, path.parent)
    return resolved if resolved != config else None


def _git_commit_quietly() -> str | None:
    """The working folder's git commit (what lm-eval records as ``git_hash``), or None outside a
    repository, where lm-eval's own call lets git print 'fatal: not a git repository'."""
    try:
        found = subprocess.run(["git", "describe", "--always"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if found.returncode != 0:
        return None
    return found.stdout.strip() or None


@contextlib.contextmanager
def _quiet_git_hash() -> Iterator[None]:
    """lm-eval's evaluator with _git_commit_quietly for its git hash (where this lm-eval has one)."""
    import lm_eval.evaluator as evaluator

    if not hasattr(evaluator, "get_git_commit_hash"):
        yield
        return
    original = evaluator.get_git_commit_hash
    evaluator.get_git_commit_hash = _git_commit_quietly
    try:
        yield
    finally:
        evaluator.get_git_commit_hash = original


def evaluate_checkpoint(path: str | Path, tasks: list[str], *, include_path: str | Path | None = None,
                        limit: int | None = None, num_fewshot: int | None = None, batch_size: int = 1,
                        device: str = "cpu") -> dict[str, dict[str, Any]]:
    """lm-eval's ``results`` (task -> metric -> value) for the checkpoint at ``path``.

    Data files named in a task YAML under ``include_path`` are read relative to that YAML's
    folder. MirasError, in one paragraph, when lm-eval is not installed (the message says how to
    get it: ``pip install 'miras-search[hf]'``), a task is unknown, or lm-eval fails (a download
    without network, a missing data file, ...).
    """
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise MirasError("`miras eval` needs lm-evaluation-harness and transformers: "
                         "pip install 'miras-search[hf]'") from None
    from miras_search.hf.modeling import from_checkpoint
    from miras_search.hf.tokenizer import MirasByteTokenizer
    from miras_search.model import pick_device

    if not tasks:
        raise MirasError("no lm-eval task named; give one or more, e.g. piqa,hellaswag")
    chosen = pick_device(None if device == "auto" else device, "device")
    model = from_checkpoint(path).to(chosen)
    manager = TaskManager(include_path=str(include_path) if include_path else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        where = f" or in {include_path}" if include_path else " (add --include-path for your own task YAMLs)"
        raise MirasError(f"unknown lm-eval task(s) {', '.join(unknown)}: not among lm-eval's tasks{where}")
    specs = [local_task_spec(manager, name, include_path) or name for name in tasks]
    lm = HFLM(pretrained=model, tokenizer=MirasByteTokenizer(), backend="causal", batch_size=batch_size,
              max_length=int(model.config.point["block"]["max_seq_len"]), device=str(chosen))
    try:
        with _quiet_git_hash():
            output = simple_evaluate(model=lm, tasks=specs, task_manager=manager, limit=limit,
                                     num_fewshot=num_fewshot, log_samples=False)
    except (MirasError, KeyboardInterrupt):
        raise
    except Exception as error:  # lm-eval's and datasets' own errors: pages of text, in one paragraph
        local = {name for name in tasks if _local_yaml(manager, name, include_path) is not None}
        raise MirasError(lm_eval_problem(error, tasks, local)) from None
    if output is None:
        raise MirasError("lm-eval returned no results")
    return output["results"]

