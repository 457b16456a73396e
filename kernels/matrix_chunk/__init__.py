"""Matrix memory, chunked (minibatch) form: Triton kernels and their PyTorch reference (kl
retention's exact per-token reads in kl.py, the other retentions in chunk.py)."""

from .chunk import chunk_matrix_memory, pick_backward
from .naive import naive_chunk_matrix_kl, naive_chunk_matrix_memory, recurrent_matrix_memory

__all__ = ["chunk_matrix_memory", "naive_chunk_matrix_kl", "naive_chunk_matrix_memory", "pick_backward",
           "recurrent_matrix_memory"]
