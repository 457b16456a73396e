"""``miras eval``: lm-evaluation-harness tasks on a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from miras_search.cli.app import command, console
from miras_search.cli.checks import device_choice, output_file
from miras_search.errors import MirasError
from miras_search.jsonio import json_text


def task_names(tasks: str) -> list[str]:
    """The comma-separated ``--tasks`` as a list; MirasError when it names none."""
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if not names:
        raise MirasError(f"--tasks {tasks!r}: names no task; give one or more lm-eval task names, comma-"
                         "separated, e.g. piqa,hellaswag (or a task of your own with --include-path)")
    return names


def task_folder(include_path: Path | None) -> Path | None:
    """``--include-path`` checked: an existing folder (of task YAMLs), or not given."""
    if include_path is None:
        return None
    if not include_path.exists():
        raise MirasError(f"--include-path {include_path}: no such folder; give a folder of lm-eval task YAMLs")
    if not include_path.is_dir():
        raise MirasError(f"--include-path {include_path} is a file; give the folder that holds it "
                         f"({include_path.parent})")
    return include_path


def is_results_file(path: Path) -> bool:
    """Whether ``path`` holds lm-eval results as `miras eval --out` writes them (task -> metrics)."""
    from miras_search.cli.training import json_object

    data = json_object(path)
    return bool(data) and all(isinstance(metrics, dict) for metrics in data.values())


@command("eval")
def eval_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint (.pt) of `miras train --save` or a study.")],
    tasks: Annotated[str, typer.Option(help="Comma-separated lm-eval tasks, e.g. piqa,hellaswag "
                                            "(the paper's: lambada_openai,piqa,hellaswag,winogrande,"
                                            "arc_easy,arc_challenge,siqa,boolq).")],
    include_path: Annotated[Path | None, typer.Option(help="A folder of your own lm-eval task YAMLs.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Examples per task (a quick look).")] = None,
    num_fewshot: Annotated[int | None, typer.Option(min=0, help="Few-shot examples (default: the task's).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Sequences per forward pass.")] = 1,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda (default: CUDA when present, as in train).")] = "auto",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write lm-eval's results as JSON here.")] = None,
) -> None:
    """Evaluate a checkpoint with lm-evaluation-harness (needs the `hf` extra). The paper's tasks
    download their data from the Hugging Face Hub; a task of your own runs offline (data files
    its YAML names are read beside the YAML)."""
    names = task_names(tasks)
    folder = task_folder(include_path)
    chosen = device_choice(device) or "auto"
    if out is not None:
        output_file("--out", out, "results.json", replaces=(
            "lm-eval results (the JSON `miras eval --out` writes)", is_results_file))
    try:
        from miras_search.hf.evaluation import evaluate_checkpoint
    except ImportError as error:  # transformers missing or broken: miras_search.hf imports it
        raise MirasError("`miras eval` needs lm-evaluation-harness and transformers: pip install "
                         f"'miras-search[hf]' (the import failed: {str(error).splitlines()[0]})") from None
    results = evaluate_checkpoint(checkpoint, names, include_path=folder, limit=limit,
                                  num_fewshot=num_fewshot, batch_size=batch_size, device=chosen)
    table = Table(title=escape(f"lm-eval: {checkpoint.name}"))
    for column in ("task", "metric", "value", "examples"):
        table.add_column(column, justify="left" if column in ("task", "metric") else "right")
    for task, metrics in results.items():
        examples = metrics.get("sample_len")
        for name, value in metrics.items():
            # lm-eval names a score "metric,filter"; "sample_len" (the examples scored) and
            # "alias" are bookkeeping, and a score's "_stderr" twin is in the JSON
            if "," in name and isinstance(value, int | float) and "_stderr" not in name:
                table.add_row(escape(task), escape(name.split(",")[0]), f"{value:.4f}",
                              "-" if examples is None else str(examples))
    console.print(table)
    if out is not None:
        out.write_text(json_text(results, default=str))
        console.print(f"wrote {escape(str(out))}", highlight=False)
