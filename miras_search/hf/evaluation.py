"""lm-evaluation-harness on a checkpoint: the paper's downstream tasks (lambada_openai, piqa,
hellaswag, winogrande, arc_easy, arc_challenge, siqa, boolq) or any task lm-eval knows, including
task YAML files in a folder of your own (``include_path``).

The checkpoint becomes a ``MirasForCausalLM`` with the byte tokenizer, wrapped in lm-eval's own
Hugging Face adapter (``HFLM``), so lm-eval scores it exactly as it scores any causal LM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from miras_search.errors import MirasError

PAPER_TASKS = ("lambada_openai", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge",
               "siqa", "boolq")
"""The Miras paper's downstream benchmarks (their data comes from the Hugging Face Hub)."""


def evaluate_checkpoint(path: str | Path, tasks: list[str], *, include_path: str | Path | None = None,
                        limit: int | None = None, num_fewshot: int | None = None, batch_size: int = 1,
                        device: str = "cpu") -> dict[str, dict[str, Any]]:
    """lm-eval's ``results`` (task -> metric -> value) for the checkpoint at ``path``.

    MirasError when lm-eval is not installed or a task is unknown (the message lists how to get
    it: ``pip install 'miras-search[hf]'``, or the folder of a local task).
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

    model = from_checkpoint(path).to(device)
    manager = TaskManager(include_path=str(include_path) if include_path else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        where = f" or in {include_path}" if include_path else " (add --include-path for your own task YAMLs)"
        raise MirasError(f"unknown lm-eval task(s) {', '.join(unknown)}: not among lm-eval's tasks{where}")
    lm = HFLM(pretrained=model, tokenizer=MirasByteTokenizer(), backend="causal", batch_size=batch_size,
              max_length=int(model.config.point["block"]["max_seq_len"]), device=device)
    output = simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit,
                             num_fewshot=num_fewshot, log_samples=False)
    if output is None:
        raise MirasError("lm-eval returned no results")
    return output["results"]
