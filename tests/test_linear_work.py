"""Every memory preset's chunked form does work linear in the sequence length, forward and
backward: no chunk loop may index full-length tensors (the backward of each such index fills a
full-size zero gradient, quadratic in the length). Work is counted as the elements all ops write,
which a busy machine cannot move, unlike time (benchmarks/chunk_scaling.py measures the time)."""

from __future__ import annotations

import pytest
import torch

from miras_search.memory import MemoryRule
from miras_search.memory.testing import random_inputs, written_elements
from miras_search.model.mixer import resolved_chunk_form
from miras_search.presets import preset, preset_names

MEMORY_PRESETS = [name for name in preset_names() if preset(name).memory.kind != "none"]
CHUNK, SHORT, LONG = 4, 32, 128  # 8 and 32 chunks


@pytest.mark.parametrize("name", MEMORY_PRESETS)
def test_chunked_work_grows_linearly_with_the_length(name):
    point = preset(name)
    rule = MemoryRule.from_point(point)
    form = resolved_chunk_form(point)
    work = {}
    for length in (SHORT, LONG):
        inputs = random_inputs(rule, 1, length, 2, 8, dtype=torch.float32, requires_grad=True)
        work[length] = written_elements(rule, inputs, CHUNK, form)
    # linear: at most 4x for 4x the tokens (fixed costs make it less); a per-chunk full-length
    # gradient makes that part grow 16x
    assert work[LONG] / work[SHORT] <= 1.05 * LONG / SHORT, work
