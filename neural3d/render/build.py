"""Build and load the fused kernels in ``cuda/`` (JIT through ``torch.utils.cpp_extension``).

Compiled once per (sources, flags, torch version) and cached under the build directory
(``$NEURAL3D_BUILD_DIR`` or ``~/.cache/neural3d/<torch>-py<ver>``). The sources are found
(first hit wins) in ``$NEURAL3D_CSRC``, in ``neural3d/render/_csrc`` (a wheel maps ``cuda/`` there
as package data), or in ``<repo>/cuda`` (editable install).

``python -m neural3d.render.build --cuda-check`` proves the CUDA extension compiles and links on a
machine without a GPU (CI): it sets ``CUDA_HOME`` (default ``/usr/local/cuda``) and
``TORCH_CUDA_ARCH_LIST`` (default ``"8.0;9.0"``), builds, imports and lists the module.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType

CPU_NAME = "neural3d_composite_cpu"
CUDA_NAME = "neural3d_composite_cuda"
CPU_SOURCES = ("composite_cpu.cpp", "triplane_cpu.cpp")
CUDA_SOURCES = ("composite_cuda.cu", "triplane_cuda.cu", "composite_cuda_bind.cpp")
HEADERS = ("composite_simd.h", "triplane_simd.h")
# -fopenmp: ATen's at::parallel_for is an inline OpenMP region in the headers; compiled without
# it, the kernels silently run on one thread whatever torch.get_num_threads() says. The module
# then uses the libgomp that torch has already loaded (same soname).
CPU_CFLAGS = ("-O3", "-fno-math-errno", "-ffp-contract=fast", "-Wno-psabi", "-fopenmp")
CPU_LDFLAGS = ("-fopenmp",)
CPU_CFLAGS_NO_OPENMP = tuple(f for f in CPU_CFLAGS if f != "-fopenmp")
CUDA_CFLAGS = ("-O3",)
DEFAULT_CUDA_HOME = "/usr/local/cuda"
DEFAULT_ARCH_LIST = "8.0;9.0"


def source_dir() -> Path:
    """Directory holding the kernel sources (raises FileNotFoundError naming where it looked)."""
    here = Path(__file__).resolve().parent
    candidates = []
    if os.environ.get("NEURAL3D_CSRC"):
        candidates.append(Path(os.environ["NEURAL3D_CSRC"]))
    candidates += [here / "_csrc", here.parents[1] / "cuda"]
    for cand in candidates:
        if (cand / CPU_SOURCES[0]).is_file():
            return cand
    raise FileNotFoundError(
        "neural3d kernel sources not found; looked in " + ", ".join(str(c) for c in candidates)
    )


def build_root() -> Path:
    import torch

    if os.environ.get("NEURAL3D_BUILD_DIR"):
        return Path(os.environ["NEURAL3D_BUILD_DIR"])
    # One folder per interpreter/torch install: two venvs with the same torch version would
    # otherwise rebuild over each other's extension (torch keys its JIT cache on its own path).
    env = hashlib.sha256(str(Path(torch.__file__).resolve()).encode()).hexdigest()[:8]
    tag = (f"torch{torch.__version__.replace('+', '-')}-py{sys.version_info[0]}"
           f"{sys.version_info[1]}-{env}")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "neural3d" / tag


def _stamp(files: list[Path], flags: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    h.update(repr(flags).encode())
    return h.hexdigest()[:16]


def _ensure_cuda_home() -> None:
    """Point torch at the real toolkit root: the ``nvcc`` wrapper on PATH misleads it."""
    if not (os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")):
        if Path(DEFAULT_CUDA_HOME, "bin", "nvcc").exists():
            os.environ["CUDA_HOME"] = DEFAULT_CUDA_HOME
    ce = _cpp_extension()
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home:
        ce.CUDA_HOME = home


def _cpp_extension() -> ModuleType:
    """Import ``torch.utils.cpp_extension`` quietly (it warns about CUDA_HOME on GPU-less hosts)."""
    if "torch.utils.cpp_extension" not in sys.modules:
        if not (os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")) and Path(
                DEFAULT_CUDA_HOME, "bin", "nvcc").exists():
            os.environ["CUDA_HOME"] = DEFAULT_CUDA_HOME
        log = logging.getLogger("torch.utils.cpp_extension")
        level = log.level
        log.setLevel(logging.ERROR)
        try:
            import torch.utils.cpp_extension  # noqa: F401
        finally:
            log.setLevel(level)
    return sys.modules["torch.utils.cpp_extension"]


def _load(name: str, sources: tuple[str, ...], cflags: tuple[str, ...], cuda: bool,
          announce: str, build_dir: Path | None = None, verbose: bool = False,
          ldflags: tuple[str, ...] = ()) -> ModuleType:
    ce = _cpp_extension()

    src = source_dir()
    files = [src / s for s in sources] + [src / h for h in HEADERS if (src / h).exists()]
    flags = cflags + ((os.environ.get("TORCH_CUDA_ARCH_LIST", ""),) if cuda else ())
    stamp = _stamp(files, flags)
    bdir = build_dir or (build_root() / name)
    bdir.mkdir(parents=True, exist_ok=True)
    stamp_file = bdir / "neural3d.stamp"
    fresh = not (stamp_file.exists() and stamp_file.read_text().strip() == stamp)
    if fresh:
        print(announce, file=sys.stderr, flush=True)
    kwargs = dict(
        name=name,
        sources=[str(src / s) for s in sources],
        extra_cflags=list(cflags) if not cuda else ["-O3"],
        build_directory=str(bdir),
        verbose=verbose,
        with_cuda=cuda,
    )
    if cuda:
        kwargs["extra_cuda_cflags"] = list(cflags)
        kwargs["extra_include_paths"] = [str(src)]
    else:
        kwargs["extra_ldflags"] = list(ldflags)
    mod = ce.load(**kwargs)
    if fresh:
        stamp_file.write_text(stamp + "\n")
    return mod


def is_built(kind: str = "cpu") -> bool:
    """True when the cached build matches the current sources (loading will not compile)."""
    try:
        src = source_dir()
        name, sources, variants = (
            (CPU_NAME, CPU_SOURCES, (CPU_CFLAGS, CPU_CFLAGS_NO_OPENMP)) if kind == "cpu" else
            (CUDA_NAME, CUDA_SOURCES, (CUDA_CFLAGS,))
        )
        files = [src / s for s in sources] + [src / h for h in HEADERS if (src / h).exists()]
        arch = (os.environ.get("TORCH_CUDA_ARCH_LIST", ""),) if kind == "cuda" else ()
        stamp_file = build_root() / name / "neural3d.stamp"
        return stamp_file.exists() and stamp_file.read_text().strip() in {
            _stamp(files, cflags + arch) for cflags in variants}
    except Exception:
        return False


def load_cpu(verbose: bool = False) -> ModuleType:
    """Build (first run only) and import the C++ CPU kernels; if the compiler cannot do OpenMP,
    build them without it (one thread) and say so."""
    announce = ("compiling neural3d CPU kernels (first run only, 1-2 min; NEURAL3D_BACKEND=torch "
                "skips it)…")
    try:
        return _load(CPU_NAME, CPU_SOURCES, CPU_CFLAGS, cuda=False, verbose=verbose,
                     announce=announce, ldflags=CPU_LDFLAGS)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        warnings.warn(f"neural3d: the CPU kernels did not build with OpenMP ({first}); "
                      "building them without it: they will run on one thread", RuntimeWarning,
                      stacklevel=2)
        return _load(CPU_NAME, CPU_SOURCES, CPU_CFLAGS_NO_OPENMP, cuda=False, verbose=verbose,
                     announce=announce)


def load_cuda(verbose: bool = False, build_dir: Path | None = None) -> ModuleType:
    """Build (first run only) and import the CUDA kernels."""
    _ensure_cuda_home()
    return _load(CUDA_NAME, CUDA_SOURCES, CUDA_CFLAGS, cuda=True, verbose=verbose,
                 build_dir=build_dir,
                 announce="compiling neural3d CUDA kernels (first run only, a few minutes; "
                          "NEURAL3D_BACKEND=torch skips it)…")


def cuda_check(verbose: bool = False) -> int:
    """CI: build and import the CUDA extension without a GPU; return an exit status."""
    os.environ.setdefault("CUDA_HOME", DEFAULT_CUDA_HOME)
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCH_LIST)
    if not Path(os.environ["CUDA_HOME"], "bin", "nvcc").exists():
        print(f"cuda-check: no nvcc under CUDA_HOME={os.environ['CUDA_HOME']}", file=sys.stderr)
        return 1
    start = time.perf_counter()
    try:
        mod = load_cuda(verbose=verbose, build_dir=build_root() / f"{CUDA_NAME}_check")
    except Exception as exc:  # report, do not hide
        print(f"cuda-check: FAILED to build/import the CUDA extension: {exc}", file=sys.stderr)
        return 1
    took = time.perf_counter() - start
    names = sorted(n for n in dir(mod) if not n.startswith("_"))
    needed = {"composite_forward", "composite_backward", "triplane_forward",
              "triplane_backward"}
    if not needed <= set(names):
        print(f"cuda-check: module lacks {sorted(needed - set(names))}", file=sys.stderr)
        return 1
    print(f"cuda-check: OK — built and imported {mod.__name__} for "
          f"TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']} with "
          f"CUDA_HOME={os.environ['CUDA_HOME']} in {took:.1f} s ({mod.__file__}); "
          f"functions: {', '.join(names)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cuda-check", action="store_true", help="build+import the CUDA extension")
    p.add_argument("--cpu", action="store_true", help="build+import the C++ CPU extension")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    status = 0
    if args.cpu or not args.cuda_check:
        start = time.perf_counter()
        mod = load_cpu(verbose=args.verbose)
        print(f"cpu: OK {mod.__file__} ({time.perf_counter() - start:.1f} s, "
              f"simd={mod.simd_isa()}, threads={mod.parallel_threads()})")
    if args.cuda_check:
        status = cuda_check(verbose=args.verbose)
    return status


if __name__ == "__main__":
    sys.exit(main())
