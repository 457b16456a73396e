"""Hugging Face interface (optional extra ``hf``): a ``MirasConfig`` / ``MirasForCausalLM`` pair
registered with transformers' Auto classes under model type ``miras`` (no remote code: import
this package and ``AutoModelForCausalLM.from_pretrained(folder)`` works), a byte-level tokenizer,
and lm-evaluation-harness on a checkpoint (``miras eval``).
"""

from miras_search.hf.modeling import MirasConfig, MirasForCausalLM, from_checkpoint
from miras_search.hf.tokenizer import MirasByteTokenizer

__all__ = ["MirasByteTokenizer", "MirasConfig", "MirasForCausalLM", "from_checkpoint"]
