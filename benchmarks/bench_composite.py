"""Benchmark the compositing backends (torch reference, C++ CPU kernel, CUDA kernel, nerfacc).

    python benchmarks/bench_composite.py                 # CPU, 2 threads, 4096 x 128 x 3, fp32
    python benchmarks/bench_composite.py --json          # the same numbers as JSON
    python benchmarks/bench_composite.py --device cuda   # on a GPU

Columns: forward ms, forward+backward ms (median of --repeat runs after warm-up), samples/s of
forward+backward, speed-up against the torch reference measured in the same run, memory the
autograd graph saves for the backward beyond the inputs ("saved"), the peak memory the backward
itself adds ("bwd peak": resident-set high-water mark on CPU, allocator peak on CUDA; it includes
the gradients of densities and features, which every backend must produce), and the share of
the memory-bandwidth bound reached.

Timing: the backends take turns within each repetition (a slow phase of a shared machine hits
all of them alike), under the default allocator settings. The CPU memory columns come from a
child process with glibc's mmap threshold fixed at 1 MiB (every large block is then mapped and
unmapped, so the high-water mark sees it); fixed in the timing process, it would slow every
backend with page faults (the torch reference, which allocates more, about 2.5x).

Bandwidth model (bytes per sample, fp32, C channels): the forward must read density, t_start,
t_end and C features: 12 + 4C bytes; the backward reads them again and writes the gradients of
density and features: 16 + 8C bytes; forward+backward: 28 + 12C bytes (64 B for C = 3). The
bandwidth is measured in the same run with a tensor copy (read + write; on the CPU of the
inputs' size, on a GPU of at least 1 GiB, i.e. HBM). "% BW" is (bytes / bandwidth) / measured
time: 100 % would be a kernel limited by memory alone. Times include the Python and autograd
overhead of each call, so small inputs on a GPU measure launch overhead more than the kernels.

nerfacc (when installed): its batched functions (torch ops) in the padded layout; on CUDA also
its packed path (its own CUDA scan kernels, JIT-built on first use, + ``index_add``).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neural3d.render import backend as render_backend  # noqa: E402
from neural3d.render import composite, composite_packed  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeat, warmup=2):
    for _ in range(warmup):
        fn()
    _sync(device)
    ts = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync(device)
        ts.append(time.perf_counter() - start)
    return statistics.median(ts) * 1e3


def interleaved_times(runners: dict, device, repeat: int, warmup: int = 2) -> dict:
    """Median ms of forward and forward+backward for each runner, the runners taking turns
    within every repetition, so that a slow phase of a shared machine hits all of them alike."""
    for run_fwd, run_fb in runners.values():
        for _ in range(warmup):
            run_fwd()
            run_fb()
    ts = {case: ([], []) for case in runners}
    for _ in range(repeat):
        for case, fns in runners.items():
            for fn, acc in zip(fns, ts[case], strict=True):
                _sync(device)
                start = time.perf_counter()
                fn()
                _sync(device)
                acc.append(time.perf_counter() - start)
    return {case: tuple(statistics.median(a) * 1e3 for a in acc) for case, acc in ts.items()}


def measure_bandwidth(device, mbytes=256, repeat=5):
    """Copy bandwidth in bytes/s (read + write) of an ``mbytes`` MB tensor copy: best of
    ``repeat``, timed with CUDA events on a GPU."""
    n = mbytes * 2**20 // 4
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    def copy():
        dst.copy_(src)

    if device.type == "cuda":
        copy()
        ms = float("inf")
        for _ in range(repeat):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            copy()
            end.record()
            end.synchronize()
            ms = min(ms, start.elapsed_time(end))
    else:
        ms = min(timed(copy, device, 1, warmup=1) for _ in range(repeat))
    return 2 * n * 4 / (ms / 1e3)


def nerfacc_layouts(device, packed: bool = True) -> tuple[list[str], str | None]:
    """Layouts nerfacc can run on ``device`` (batched torch ops everywhere; packed needs its
    CUDA extension, JIT-built on first import), and a note on what is missing."""
    try:
        import nerfacc  # noqa: F401
    except Exception as exc:
        return [], f"nerfacc not available ({type(exc).__name__}: {exc}); column skipped"
    if device.type != "cuda":
        return ["padded"], "nerfacc packed needs CUDA; padded (batched) functions only"
    if not packed:
        return ["padded"], "nerfacc packed skipped (--no-nerfacc-packed)"
    try:
        from nerfacc.cuda._backend import _C

        if _C is None:
            raise RuntimeError("its CUDA extension did not build")
    except Exception as exc:
        return ["padded"], f"nerfacc packed unavailable ({type(exc).__name__}: {exc})"
    return ["padded", "packed"], None


def _rss_kb():
    return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _hwm_kb():
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _fixed_mmap_threshold() -> None:
    """Make glibc return large blocks to the OS at free (fixed mmap threshold), so the
    resident-set high-water mark sees every large allocation of the backward."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD = 1 MiB
    except (OSError, AttributeError):
        pass


def _reset_hwm() -> bool:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def backward_memory(forward, inputs, backward) -> tuple[float, float]:
    """(MB that ``forward()`` saves for the backward beyond the storages of ``inputs``, peak MB
    of ``backward(forward())`` above what was allocated before it). On CUDA from the caching
    allocator's counters; on the CPU from the resident-memory high-water mark (see
    _fixed_mmap_threshold: meaningful in the ``--memory-only`` child process)."""
    input_ptrs = {t.untyped_storage().data_ptr() for t in inputs}
    saved: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in input_ptrs:
            saved[st.data_ptr()] = st.nbytes()
        return t

    gc.collect()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    if inputs[0].device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        backward(out)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        before = _rss_kb()
        ok = _reset_hwm()
        backward(out)
        peak = (_hwm_kb() - before) * 1024 if ok else float("nan")
    return sum(saved.values()) / 2**20, max(peak, 0) / 2**20


def make_inputs(r, s, c, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    sig = (torch.rand(r, s, generator=g) * 2.0).to(device)
    t = torch.linspace(0.0, 4.0, s + 1).expand(r, s + 1)
    t0, t1 = t[:, :-1].contiguous().to(device), t[:, 1:].contiguous().to(device)
    feat = torch.rand(r, s, c, generator=g).to(device)
    return sig, t0, t1, feat


def make_runner(name, layout, inputs, bg):
    sig, t0, t1, feat = inputs
    r, s = sig.shape
    if layout == "packed":
        counts = torch.full((r,), s, dtype=torch.long, device=sig.device)
        offsets = torch.arange(r, device=sig.device) * s
        p_sig, p_t0, p_t1 = sig.reshape(-1), t0.reshape(-1), t1.reshape(-1)
        p_feat = feat.reshape(r * s, -1)

    if name == "nerfacc" and layout == "padded":
        from nerfacc import accumulate_along_rays, render_weight_from_density

        mids = (0.5 * (t0 + t1))[..., None]

        def forward(x, f):
            w, _, _ = render_weight_from_density(t0, t1, x)
            op = accumulate_along_rays(w, None)
            out = accumulate_along_rays(w, f) + (1.0 - op) * bg
            return out, accumulate_along_rays(w, mids)[..., 0], op[..., 0]
    elif name == "nerfacc":  # packed: nerfacc's CUDA scan kernels + index_add
        from nerfacc import accumulate_along_rays, render_weight_from_density

        packed_info = torch.stack([offsets, counts], dim=-1)
        ray_indices = torch.repeat_interleave(torch.arange(r, device=sig.device), counts)
        p_mids = (0.5 * (p_t0 + p_t1))[:, None]

        def forward(x, f):
            w, _, _ = render_weight_from_density(p_t0, p_t1, x, packed_info=packed_info)
            op = accumulate_along_rays(w, None, ray_indices=ray_indices, n_rays=r)
            out = accumulate_along_rays(w, f, ray_indices=ray_indices, n_rays=r)
            depth = accumulate_along_rays(w, p_mids, ray_indices=ray_indices, n_rays=r)
            return out + (1.0 - op) * bg, depth[:, 0], op[:, 0]
    elif layout == "padded":
        def forward(x, f):
            res = composite(x, f, t0, t1, background=bg, backend=name)
            return res.features, res.depth, res.opacity
    else:
        def forward(x, f):
            res = composite_packed(x, f, p_t0, p_t1, offsets, counts, background=bg,
                                   backend=name)
            return res.features, res.depth, res.opacity

    base = (p_sig, p_feat) if layout == "packed" else (sig, feat)
    x_ng, f_ng = base
    x_g, f_g = (t.clone().requires_grad_() for t in base)

    def run_fwd():
        with torch.no_grad():
            return forward(x_ng, f_ng)

    def run_fwd_bwd():
        x_g.grad = None
        f_g.grad = None
        out, depth, op = forward(x_g, f_g)
        (out.sum() + depth.sum() + op.sum()).backward()

    def memory():
        """(saved MB beyond inputs, backward peak MB)."""
        x_g.grad = None
        f_g.grad = None

        def loss():
            out, depth, op = forward(x_g, f_g)
            return out.sum() + depth.sum() + op.sum()

        return backward_memory(loss, (x_g, f_g, *inputs), lambda t: t.backward())

    return run_fwd, run_fwd_bwd, memory


def _memory_columns(argv, runners, device, script: str = __file__) -> dict:
    """(saved MB, backward peak MB) per case (the keys of ``runners``). On the CPU in a child
    process of ``script`` run with ``--memory-only``, which fixes glibc's mmap threshold first
    (see _fixed_mmap_threshold): done here, it would change the allocator's behaviour, and the
    timings, for the rest of the run."""
    if device.type != "cpu":
        return {case: rr[2]() for case, rr in runners.items()}
    argv = list(sys.argv[1:] if argv is None else argv)
    out = subprocess.run([sys.executable, script, *argv, "--memory-only"], check=True,
                         capture_output=True, text=True).stdout
    return {(key, name): (saved, peak)
            for key, name, saved, peak in json.loads(out.strip().splitlines()[-1])}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rays", type=int, default=4096)
    p.add_argument("--samples", type=int, default=128)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--device", default="cpu")
    p.add_argument("--layouts", default="padded,packed")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON only")
    p.add_argument("--no-nerfacc-packed", action="store_true",
                   help="skip nerfacc's packed CUDA path (its extension JIT-builds on first use)")
    p.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_only and args.device == "cpu":
        _fixed_mmap_threshold()  # before any allocation: this process only measures memory

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    r, s, c = args.rays, args.samples, args.channels
    native = "cuda" if device.type == "cuda" else "cpp"
    backends = ["torch", native, "nerfacc"]
    notes = []
    nerfacc_ok, note = nerfacc_layouts(device, packed=not args.no_nerfacc_packed)
    if note:
        notes.append(note)
    _, mod = render_backend.select(device, native)
    if mod is None:
        notes.append(f"{native} backend unavailable: {render_backend.describe()['unavailable']}")
        backends.remove(native)

    inputs = make_inputs(r, s, c, device)
    bg = torch.ones(c, device=device)
    cases = [(layout, name) for layout in args.layouts.split(",") for name in backends
             if name != "nerfacc" or layout in nerfacc_ok]
    runners = {case: make_runner(case[1], case[0], inputs, bg) for case in cases}
    if args.memory_only:
        print(json.dumps([[*case, *rr[2]()] for case, rr in runners.items()]))
        return 0
    memories = _memory_columns(argv, runners, device)
    # CPU: a copy of the inputs' size (so the same cache level serves it). GPU: at least 1 GiB,
    # so the bound is the HBM bandwidth (smaller inputs may sit in L2 between repetitions).
    in_mb = max(1, r * s * (3 + c) * 4 // 2**20)
    if device.type == "cuda":
        in_mb = max(in_mb, 1024)
    bandwidth = measure_bandwidth(device, mbytes=in_mb)
    bytes_fwd = 12 + 4 * c
    bytes_fb = 28 + 12 * c
    times = interleaved_times({case: rr[:2] for case, rr in runners.items()}, device,
                              args.repeat)
    rows = []
    n = r * s
    for layout, name in cases:
        fwd, fb = times[(layout, name)]
        ref_fwd, ref_fb = times[(layout, "torch")]  # the reference runs in every layout
        saved_mb, peak_mb = memories[(layout, name)]
        rows.append({
            "backend": name + (f" ({mod.simd_isa()})" if name == native and mod else ""),
            "layout": layout,
            "shape": f"{r}x{s}x{c}",
            "fwd_ms": round(fwd, 3),
            "fwd_bwd_ms": round(fb, 3),
            "msamples_per_s": round(n / (fb / 1e3) / 1e6, 1),
            "speedup_fwd_vs_torch": round(ref_fwd / fwd, 2),
            "speedup_fwd_bwd_vs_torch": round(ref_fb / fb, 2),
            "saved_mb": round(saved_mb, 2),
            "bwd_peak_mb": round(peak_mb, 2),
            "pct_bw_bound_fwd": round(100 * n * bytes_fwd / bandwidth / (fwd / 1e3), 1),
            "pct_bw_bound_fwd_bwd": round(100 * n * bytes_fb / bandwidth / (fb / 1e3), 1),
        })
    meta = {
        "device": str(device),
        "threads": args.threads,
        "dtype": "float32",
        "torch": torch.__version__,
        "bandwidth_gb_s": round(bandwidth / 1e9, 2),
        "bandwidth_copy_mb": in_mb,
        "bytes_per_sample_fwd": bytes_fwd,
        "bytes_per_sample_fwd_bwd": bytes_fb,
        "notes": notes,
    }
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"compositing, {device}, {args.threads} threads, fp32, {r} rays x {s} "
                        f"samples x {c} channels (median of {args.repeat})")
    cols = [("backend", "backend"), ("layout", "layout"), ("fwd ms", "fwd_ms"),
            ("fwd+bwd ms", "fwd_bwd_ms"), ("Msamples/s", "msamples_per_s"),
            ("x torch fwd", "speedup_fwd_vs_torch"), ("x torch f+b", "speedup_fwd_bwd_vs_torch"),
            ("saved MB", "saved_mb"), ("bwd peak MB", "bwd_peak_mb"),
            ("% BW fwd", "pct_bw_bound_fwd"), ("% BW f+b", "pct_bw_bound_fwd_bwd")]
    for title, _ in cols:
        table.add_column(title, justify="left" if title in ("backend", "layout") else "right")
    for row in rows:
        table.add_row(*(str(row[k]) for _, k in cols))
    console = Console(width=200)
    console.print(table)
    console.print(f"copy bandwidth {meta['bandwidth_gb_s']} GB/s (copy of {in_mb} MB, "
                  f"read + write); bytes/sample model: forward "
                  f"{bytes_fwd} B, forward+backward {bytes_fb} B (12+4C, 28+12C)")
    for note in notes:
        console.print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
