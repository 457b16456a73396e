"""Triton kernels for the chunked memory update (importable as ``miras_search.kernels``)."""
