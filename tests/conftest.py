"""Shared test fixtures."""

import os

import pytest
import torch

# the suite never downloads (LPIPS backbones): tests that check the download decision
# unset this themselves
os.environ.setdefault("NEURAL3D_OFFLINE", "1")


@pytest.fixture
def one_thread():
    """One torch thread for the test: the tensors are tiny, and on a shared 2-core CPU extra
    threads only spin (oversubscription makes small ops many times slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
