"""Backend choice, forcing, fallback with one warning, and the report for ``neural3d info``."""

import os
import warnings

import pytest
import torch

from neural3d.render import backend, composite


def _inputs(requires_grad=False):
    g = torch.Generator().manual_seed(0)
    sig = (torch.rand(4, 6, generator=g) * 2).requires_grad_(requires_grad)
    t = torch.sort(torch.rand(4, 7, generator=g), -1).values
    return sig, torch.rand(4, 6, 3, generator=g), t[:, :-1], t[:, 1:]


@pytest.fixture
def fresh_state(monkeypatch):
    monkeypatch.setattr(backend, "_warned", set())
    return monkeypatch


def test_env_var_forces_torch(fresh_state):
    fresh_state.setenv("NEURAL3D_BACKEND", "torch")
    assert composite(*_inputs()).backend == "torch"
    assert backend.describe()["active"]["cpu"] == "torch"


def test_argument_beats_env_and_auto_picks_cpp(fresh_state):
    fresh_state.setenv("NEURAL3D_BACKEND", "torch")
    assert composite(*_inputs(), backend="cpp").backend == "cpp"
    fresh_state.delenv("NEURAL3D_BACKEND")
    assert composite(*_inputs()).backend == "cpp"


def test_unknown_backend_warns_once_and_chooses_automatically(fresh_state):
    fresh_state.setenv("NEURAL3D_BACKEND", "fast")
    with pytest.warns(RuntimeWarning, match="unknown backend"):
        res = composite(*_inputs())
    assert res.backend == "cpp"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        composite(*_inputs())  # no second warning


def test_cuda_forced_on_cpu_tensors_uses_cpp(fresh_state):
    with pytest.warns(RuntimeWarning, match="cannot process cpu tensors"):
        assert composite(*_inputs(), backend="cuda").backend == "cpp"


def test_failed_build_falls_back_to_torch_with_one_warning(fresh_state):
    fresh_state.setattr(backend, "_modules", {})
    fresh_state.setattr(backend, "_errors", {"cpp": "RuntimeError: simulated compiler failure"})
    with pytest.warns(RuntimeWarning, match="simulated compiler failure"):
        res = composite(*_inputs(), backend="cpp")
    assert res.backend == "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert composite(*_inputs()).backend == "torch"
    info = backend.describe()
    assert info["active"]["cpu"] == "torch"
    assert "simulated" in info["unavailable"]["cpp"]


def test_differentiable_intervals_use_the_reference():
    sig, feat, t0, t1 = _inputs()
    t1 = t1.clone().requires_grad_()
    res = composite(sig, feat, t0, t1, backend="cpp")
    assert res.backend == "torch"
    res.depth.sum().backward()
    assert t1.grad is not None


def test_describe_reports_for_info():
    backend.get_module("cpp")
    info = backend.describe()
    assert {"active", "available", "unavailable", "build_dir", "sources"} <= set(info)
    assert "torch" in info["available"] and "cpp" in info["available"]
    assert info["cpu_simd"] in ("avx512", "avx2", "baseline-vec4", "scalar")
    if not torch.cuda.is_available():
        assert "no CUDA device" in info["unavailable"]["cuda"]


def test_cpu_kernel_runs_on_torch_threads():
    """The C++ kernel's parallel loops use torch's thread count (compiled without OpenMP they
    silently ran on one thread)."""
    mod = backend.get_module("cpp")
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert mod.parallel_threads() == 1
        if (os.cpu_count() or 1) >= 2:
            torch.set_num_threads(2)
            assert mod.parallel_threads() == 2
    finally:
        torch.set_num_threads(n)
    assert backend.describe()["cpu_threads"] >= 1


def test_cpu_build_falls_back_without_openmp(monkeypatch):
    """A compiler without OpenMP: the build is retried without it, with one warning."""
    from neural3d.render import build

    calls = []

    def fake_load(name, sources, cflags, cuda, announce, verbose=False, ldflags=()):
        calls.append((cflags, ldflags))
        if "-fopenmp" in cflags:
            raise RuntimeError("Error building extension: unsupported option '-fopenmp'")
        return "module"

    monkeypatch.setattr(build, "_load", fake_load)
    with pytest.warns(RuntimeWarning, match="without it: they will run on one thread"):
        assert build.load_cpu() == "module"
    assert calls == [(build.CPU_CFLAGS, build.CPU_LDFLAGS), (build.CPU_CFLAGS_NO_OPENMP, ())]
    assert "-fopenmp" not in build.CPU_CFLAGS_NO_OPENMP
