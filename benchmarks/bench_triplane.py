"""Benchmark triplane sampling: the fused kernel (C++ CPU or CUDA) against grid_sample.

    python benchmarks/bench_triplane.py                        # CPU, 2 threads, toy + fit sizes
    python benchmarks/bench_triplane.py --json                 # the same numbers as JSON
    python benchmarks/bench_triplane.py --device cuda          # + the SSDNeRF paper size
    python benchmarks/bench_triplane.py --sizes fit --threads 1 --point-grad
    python benchmarks/bench_triplane.py --first-layer 64       # + a decoder's first layer

Sizes (planes B x 3 x C x R^2, rays x samples per batch element), as issue 17 states them:
``ssdnerf-toy`` 1 x 3x6x64^2, 4096 x 64; ``fit`` (the ``neural3d fit`` default field)
1 x 3x12x128^2, 4096 x 96; ``ssdnerf-paper`` 16 x 3x6x128^2, 4096 x 128 (CUDA only). (The shipped
``configs/ssdnerf_toycars.yaml`` is smaller still: 4 x 3x4x16^2, 256 rays x 32 samples.)
Points lie on random segments through the box (``samples`` per ray, consecutive ones close, as
a ray sampler gives them), aggregate ``sum``, float32.

Columns: forward ms (no grad), forward+backward ms (the planes require grad; the points too with
``--point-grad``; ``out.backward(ones)``, the cotangent made once), the speed-ups against
grid_sample measured in the same run (the two take turns within each repetition), the memory
the autograd graph saves
beyond the inputs ("saved MB"), the peak memory the backward itself adds ("bwd peak MB": the
resident-set high-water mark delta on CPU, measured in a child process with glibc's mmap
threshold fixed at 1 MiB so every large block is seen, as bench_composite.py; the allocator's
``max_memory_allocated`` delta on CUDA); it includes the gradients every backend must return),
and samples/s of forward+backward.

``--first-layer HD``: every row computes a decoder's first layer (``F.linear`` to HD units, its
weight and bias requiring grad) on the sampled features, and a third row per size runs the C++
kernel with that layer fused in (:func:`neural3d.fields.triplane_linear`); "x vs kernel" compares
each row with the unfused kernel row of its size.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_composite import (  # noqa: E402  (benchmarks/ is on sys.path: this script's folder)
    _fixed_mmap_threshold,
    _memory_columns,
    backward_memory,
    interleaved_times,
)

from neural3d.fields import triplane_linear, triplane_sample  # noqa: E402
from neural3d.render import backend as render_backend  # noqa: E402

SIZES = {  # name: (B, C, R, rays, samples, cuda only)
    "ssdnerf-toy": (1, 6, 64, 4096, 64, False),
    "fit": (1, 12, 128, 4096, 96, False),
    "ssdnerf-paper": (16, 6, 128, 4096, 128, True),
}


def make_inputs(B, C, R, rays, samples, device, seed=0):
    """Planes ``[B, 3, C, R, R]`` and points ``[B, rays * samples, 3]`` in ``[-1, 1]``, on
    random segments through the box."""
    g = torch.Generator().manual_seed(seed)
    planes = torch.randn(B, 3, C, R, R, generator=g) * 0.1
    a = torch.rand(B, rays, 1, 3, generator=g) * 2 - 1
    b = torch.rand(B, rays, 1, 3, generator=g) * 2 - 1
    t = torch.linspace(0, 1, samples)[None, None, :, None]
    points = (a + (b - a) * t).reshape(B, rays * samples, 3)
    return planes.to(device), points.to(device)


def make_runner(name, planes, points, point_grad, hidden=0):
    """(forward, forward+backward, memory) closures of one variant: the sampling alone
    (``hidden`` 0) or followed by a first layer of ``hidden`` units; ``name`` is a backend, or
    ``fused`` for the C++ kernel with the layer fused in."""
    p_g = planes.clone().requires_grad_()
    x_g = points.clone().requires_grad_(point_grad)
    g = torch.Generator().manual_seed(1)
    C = planes.shape[2]
    w_g = (torch.randn(hidden, C, generator=g) / C**0.5).to(planes.device).requires_grad_()
    b_g = torch.zeros(hidden, device=planes.device, requires_grad=True)

    def op(p, x, w, b):
        if hidden == 0:
            return triplane_sample(p, x, None, "sum", backend=name)
        if name == "fused":
            return triplane_linear(p, x, w, b, None, "sum", backend="cpp")
        return torch.nn.functional.linear(triplane_sample(p, x, None, "sum", backend=name), w, b)

    # the output's cotangent, made once: backward(cot) allocates nothing for it (a loss such as
    # out.sum() would materialise an [B, N, C] gradient, the same for every backend)
    cot = torch.ones(points.shape[0], points.shape[1], hidden or C, device=planes.device)
    w, b = w_g.detach(), b_g.detach()

    def run_fwd():
        with torch.no_grad():
            return op(planes, points, w, b)

    def run_fwd_bwd():
        p_g.grad = x_g.grad = w_g.grad = b_g.grad = None
        op(p_g, x_g, w_g, b_g).backward(cot)

    def memory():
        """(saved MB beyond the inputs, backward peak MB)."""
        p_g.grad = x_g.grad = w_g.grad = b_g.grad = None
        return backward_memory(lambda: op(p_g, x_g, w_g, b_g), (p_g, x_g, w_g, b_g, planes, points),
                               lambda out: out.backward(cot))

    return run_fwd, run_fwd_bwd, memory


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", default=None,
                   help=f"comma-separated, of {', '.join(SIZES)} (default: all the device runs)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--point-grad", action="store_true", help="the points require grad too")
    p.add_argument("--first-layer", type=int, default=0, metavar="HD",
                   help="add a first decoder layer of HD units, and the fused C++ row")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON only")
    p.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_only and args.device == "cpu":
        _fixed_mmap_threshold()  # before any allocation: this process only measures memory
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes = (args.sizes.split(",") if args.sizes else
             [s for s, v in SIZES.items() if device.type == "cuda" or not v[-1]])
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        p.error(f"unknown size {unknown[0]!r}; choose from {', '.join(SIZES)}")
    native = "cuda" if device.type == "cuda" else "cpp"
    name, mod = render_backend.select(device, native)
    if mod is None:
        p.error(f"the {native} kernels are unavailable: "
                f"{render_backend.describe()['unavailable'].get(native)}")
    isa = mod.triplane_isa() if device.type == "cpu" else "cuda"
    variants = ["torch", native]
    if args.first_layer > 0 and device.type == "cpu":  # the fused layer is C++ only
        variants.append("fused")
    linear = " + linear" if args.first_layer > 0 else ""
    labels = {"torch": f"grid_sample{linear}", native: f"{native} ({isa}){linear}",
              "fused": f"cpp ({isa}), linear fused"}
    runners = {}
    for size in sizes:
        B, C, R, rays, samples, _ = SIZES[size]
        planes, points = make_inputs(B, C, R, rays, samples, device)
        for variant in variants:
            runners[(size, variant)] = make_runner(variant, planes, points, args.point_grad,
                                                   args.first_layer)
    if args.memory_only:
        print(json.dumps([[*case, *rr[2]()] for case, rr in runners.items()]))
        return 0
    memories = _memory_columns(argv, runners, device, __file__)
    rows = []
    for size in sizes:
        B, C, R, rays, samples, _ = SIZES[size]
        case_runners = {v: runners[(size, v)][:2] for v in variants}
        times = interleaved_times(case_runners, device, args.repeat)
        for variant in variants:
            fwd, fb = times[variant]
            saved, peak = memories[(size, variant)]
            ref_peak = memories[(size, "torch")][1]
            rows.append({
                "size": size,
                "shape": f"{B}x3x{C}x{R}^2, {rays}x{samples}",
                "backend": labels[variant],
                "fwd_ms": round(fwd, 3),
                "fwd_bwd_ms": round(fb, 3),
                "speedup_fwd": round(times["torch"][0] / fwd, 2),
                "speedup_fwd_bwd": round(times["torch"][1] / fb, 2),
                "vs_kernel_fwd_bwd": round(times[native][1] / fb, 2),
                "saved_mb": round(saved, 2),
                "bwd_peak_mb": round(peak, 2),
                "bwd_peak_ratio": round(ref_peak / peak, 1) if peak > 0 else None,
                "msamples_per_s": round(B * rays * samples / (fb / 1e3) / 1e6, 2),
            })
    meta = {"device": str(device), "threads": args.threads, "dtype": "float32",
            "aggregate": "sum", "point_grad": args.point_grad, "first_layer": args.first_layer,
            "torch": torch.__version__,
            "repeat": args.repeat}
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"triplane sampling, {device}, {args.threads} threads, fp32, sum, "
                        f"grad to planes{' and points' if args.point_grad else ''}"
                        f"{f', first layer {args.first_layer} units' if linear else ''} "
                        f"(median of {args.repeat})")
    cols = [("size", "size"), ("shape", "shape"), ("backend", "backend"), ("fwd ms", "fwd_ms"),
            ("fwd+bwd ms", "fwd_bwd_ms"), ("x fwd", "speedup_fwd"),
            ("x fwd+bwd", "speedup_fwd_bwd"), *([("x vs kernel", "vs_kernel_fwd_bwd")] if linear
                                                else []), ("saved MB", "saved_mb"),
            ("bwd peak MB", "bwd_peak_mb"), ("grid_sample / peak", "bwd_peak_ratio"),
            ("Msamples/s", "msamples_per_s")]
    for title, _ in cols:
        table.add_column(title, justify="left" if title in ("size", "shape", "backend")
                         else "right")
    for row in rows:
        table.add_row(*(str(row[k]) for _, k in cols))
    Console(width=200).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
