"""2-layer MLP memory (Moneta / Yaad / Memora family), chunked form: Triton kernels and their
PyTorch reference."""

from .chunk import chunk_mlp_memory
from .naive import MlpMemoryConfig, naive_chunk_mlp_memory

__all__ = ["MlpMemoryConfig", "chunk_mlp_memory", "naive_chunk_mlp_memory"]
