"""The memory operators: every point's token-by-token recurrence and its fast chunked form.

Public API: MemoryGates, MemoryRule, memory_forward, softmax_attention.
"""

from miras_search.memory.attention import softmax_attention
from miras_search.memory.forward import memory_forward
from miras_search.memory.gates import MemoryGates
from miras_search.memory.rule import MemoryRule

__all__ = ["MemoryGates", "MemoryRule", "memory_forward", "softmax_attention"]
