"""Hugging Face interface (optional extra ``hf``): ``MirasConfig`` with ``MirasForCausalLM`` and
``MirasModel`` (no head: the final hidden states), registered with transformers' Auto classes
under model type ``miras`` (no remote code: import this package and
``AutoModelForCausalLM.from_pretrained(folder)`` or ``AutoModel.from_pretrained(folder)``
works), a byte-level tokenizer,
and lm-evaluation-harness on a checkpoint (``miras eval``).
"""

from miras_search.hf.modeling import MirasConfig, MirasForCausalLM, MirasModel, from_checkpoint
from miras_search.hf.tokenizer import MirasByteTokenizer

__all__ = ["MirasByteTokenizer", "MirasConfig", "MirasForCausalLM", "MirasModel", "from_checkpoint"]
