"""Probe tests work on tiny arrays: one torch thread (threading only adds overhead there, and
on a busy machine a lot of it)."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
