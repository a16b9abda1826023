"""Checkpoint tests run their tiny models on one intra-op thread (as a 1-CPU stage does): on a shared
2-core host, two threads per tiny convolution only wait on each other."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
