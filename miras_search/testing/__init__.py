"""Test support shipped with the package: the conformance suite every registered axis option runs
through (``miras_search.testing.conformance``)."""

from miras_search.testing.conformance import (
    assert_close,
    axis_cases,
    check_forms,
    check_kernel,
    kernel_cases,
    phi_problems,
    uncovered_kinds,
)

__all__ = ["assert_close", "axis_cases", "check_forms", "check_kernel", "kernel_cases", "phi_problems", "uncovered_kinds"]
