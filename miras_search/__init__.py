"""miras-search: architecture search over the Miras design space of test-time-memory models."""

from miras_search.schema import ModelPoint

__version__ = "0.1.0"
__all__ = ["ModelPoint", "__version__"]
