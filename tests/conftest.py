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


@pytest.fixture(scope="session")
def cpp_ext():
    """Build (once, cached on disk) and load the C++ CPU kernels."""
    from neural3d.render import backend

    mod = backend.get_module("cpp")
    assert mod is not None, f"C++ kernels failed to build: {backend._errors.get('cpp')}"
    return mod


@pytest.fixture(scope="session")
def cuda_ext():
    from neural3d.render import backend

    mod = backend.get_module("cuda")
    assert mod is not None, f"CUDA kernels failed to build: {backend._errors.get('cuda')}"
    return mod


@pytest.fixture
def fused(request, cpp_ext):
    """Indirect parameter: the fused backend's name (``cpp`` or ``cuda``) and its device."""
    name = request.param
    if name == "cuda":
        request.getfixturevalue("cuda_ext")
    return name, torch.device("cuda" if name == "cuda" else "cpu")
