"""Regenerate the README's pictures: ``docs/figures/*.png`` and their provenance
``docs/figures/figures.json`` (steps, CPU and wall seconds, hardware, how each was made).

    python docs/make_figures.py                       # everything, training short models
    python docs/make_figures.py --ssdnerf-ckpt RUN/checkpoints/last.pt --only ssdnerf
    python docs/make_figures.py --only bench --bench-json a.json b.json   # plot given runs

Figures (``--only`` takes a comma-separated subset):

- ``fit``: ``demo_novel_views.png``: the demo's toy car (64 px, 50 views, every 8th held out)
  fitted with a triplane for ``--fit-steps``; rows: held-out truth, renders at those cameras,
  novel views on an orbit at twice the resolution. ``--fit-ckpt`` takes a fitted checkpoint.
- ``diffusion``: ``diffusion_samples.png``: the class-conditional toy U-Net
  (``configs/diffusion_toy_unet.yaml``, batch ``--diffusion-batch``) trained for
  ``--diffusion-steps``; one row of 8 DDIM-50 samples (guidance 3) per class.
  ``--diffusion-ckpt`` takes a trained checkpoint.
- ``ssdnerf``: ``ssdnerf_samples.png``: SSDNeRF on the toy cars (``configs/ssdnerf_toycars.yaml``)
  trained for ``--ssdnerf-steps``, or ``--ssdnerf-ckpt``; 6 sampled triplanes x 4 orbit views.
- ``bench``: ``composite_speedup.png``: the compositing kernel's forward+backward speed-up
  over the torch reference against the number of samples, from ``benchmarks/bench_composite.py
  --json`` run here at ``--bench-rays`` (or the JSON files of ``--bench-json``).

Each model trains with one thread by default (``--threads``); the default step counts keep each
under about 4 minutes of CPU on one core (fit and diffusion: about 2 measured). Models and toy
data go under ``--work``. PNGs are small (nearest-neighbour upscaled tiles, a few hundred KB at
most).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neural3d.export.media import tile_rows  # noqa: E402

FIGURES = ("fit", "diffusion", "ssdnerf", "bench")


def hardware() -> str:
    """``CPU model, N cores, GPU or no GPU`` of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}"


def save_png(path: Path, img: torch.Tensor, scale: int = 1) -> Path:
    """``[H, W, 3]`` in [0, 1] -> PNG, upscaled ``scale`` x by nearest neighbour."""
    from PIL import Image

    if scale > 1:
        img = img.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    arr = (img.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, optimize=True)
    return path


class Timer:
    """CPU (this process) and wall seconds of a block."""

    def __enter__(self):
        self.cpu, self.wall = time.process_time(), time.time()
        return self

    def __exit__(self, *exc):
        self.cpu, self.wall = time.process_time() - self.cpu, time.time() - self.wall


def train(method, log) -> tuple[int, float, float]:
    """Train with the shared driver; ``(steps, cpu seconds, wall seconds)``."""
    from neural3d.methods.training import train_method

    with Timer() as t:
        trainer, _ = train_method(method, log=log)
    return trainer.step, t.cpu, t.wall


# ----------------------------------------------------------------------------- figures
def fig_fit(args, log) -> dict:
    import neural3d
    from neural3d.data.toy import write_toy_dataset
    from neural3d.methods.fit import Fit, FitConfig

    info: dict = {}
    if args.fit_ckpt:
        ckpt = Path(args.fit_ckpt)
    else:
        data = args.work / "fit_data"
        write_toy_dataset(data, "cars", objects=1, views=50, test_views=0, res=64, seed=0,
                          progress=False, supersample=4)
        cfg = FitConfig(data=str(data / "cars_train" / "car_train_00000"),
                        out_dir=str(args.work / "fit"), steps=args.fit_steps, progress=False,
                        overwrite=True, vis="none", turntable_frames=0)
        info["steps"], info["cpu_s"], info["wall_s"] = train(Fit(cfg, log=log), log)
        ckpt = Path(cfg.out_dir) / "checkpoints" / "last.pt"
        info["metrics"] = {k: v for k, v in json.loads(
            (Path(cfg.out_dir) / "metrics.json").read_text()).items()
            if k in ("psnr", "ssim", "eval_views")}
    method = neural3d.load(ckpt)
    info.setdefault("steps", method.checkpoint_step)
    from neural3d.data.scenes import train_and_heldout

    c = method.cfg
    _, held, _ = train_and_heldout(c.data, c.eval_every_views, c.res or None,
                                   c.eval_data or None)
    k = min(6, len(held))
    renders = method.render(None, held.cameras[torch.arange(k)])
    novel = method.render(None, method.camera_path("orbit", k, width=2 * held.images.shape[2]))
    small = torch.stack([held.images[:k], renders])
    top = tile_rows(small, pad=1).repeat_interleave(2, 0).repeat_interleave(2, 1)
    bottom = tile_rows(novel[None], pad=2)
    save_png(args.out / "demo_novel_views.png", torch.cat([top, bottom[:, :top.shape[1]]], 0))
    info["caption"] = (f"toy car fitted for {info['steps']} steps (triplane, 64 px, 50 views); "
                       "rows: held-out views, renders at their cameras, novel orbit views at "
                       "128 px")
    return info


def fig_diffusion(args, log) -> dict:
    import neural3d
    from neural3d.config import load_config
    from neural3d.methods.diffusion2d import DiffusionExperiment
    from neural3d.methods.diffusion2d.method import Diffusion2D

    info: dict = {}
    if args.diffusion_ckpt:
        ckpt = Path(args.diffusion_ckpt)
    else:
        out = args.work / "diffusion"
        cfg = load_config(DiffusionExperiment, ROOT / "configs" / "diffusion_toy_unet.yaml", [
            f"data.root={args.work / 'diffusion_data'}", f"train.steps={args.diffusion_steps}",
            f"optim.batch={args.diffusion_batch}", f"train.out_dir={out}",
            "train.progress=false", "train.vis=none", "train.resume=", "train.overwrite=true",
            "train.ckpt_every=0"])
        info["steps"], info["cpu_s"], info["wall_s"] = train(Diffusion2D(cfg), log)
        ckpt = out / "checkpoints" / "last.pt"
    method = neural3d.load(ckpt)
    info.setdefault("steps", method.checkpoint_step)
    info["batch"] = method.cfg.optim.batch
    n, cats = 8, method.cfg.data.categories
    imgs = method.sample(n, seed=0, sampler="ddim", steps=50, cfg=3.0)
    imgs = ((imgs.float() + 1) / 2).permute(0, 2, 3, 1).reshape(len(cats), n,
                                                               *imgs.shape[2:], -1)
    save_png(args.out / "diffusion_samples.png", tile_rows(imgs, pad=2), scale=2)
    info["caption"] = (f"toy U-Net ({', '.join(cats)}, 32 px) after {info['steps']} steps of "
                       f"batch {info['batch']}: DDIM-50, guidance 3, one row per class")
    return info


def fig_ssdnerf(args, log) -> dict:
    import neural3d
    from neural3d.cameras import Cameras, orbit_path
    from neural3d.config import load_config
    from neural3d.methods.ssdnerf import SSDNeRF, SSDNeRFConfig

    info: dict = {}
    if args.ssdnerf_ckpt:
        ckpt = Path(args.ssdnerf_ckpt)
    else:
        out = args.work / "ssdnerf"
        cfg = load_config(SSDNeRFConfig, ROOT / "configs" / "ssdnerf_toycars.yaml", [
            f"data.root={args.work / 'ssdnerf_data'}", f"train.steps={args.ssdnerf_steps}",
            f"train.out_dir={out}", "train.progress=false", "train.vis=none",
            "train.resume=", "train.overwrite=true", "train.ckpt_every=0"])
        info["steps"], info["cpu_s"], info["wall_s"] = train(SSDNeRF(cfg), log)
        ckpt = out / "checkpoints" / "last.pt"
    method = neural3d.load(ckpt)
    info.setdefault("steps", method.checkpoint_step)
    lat = torch.cat(method.sample(6, seed=0))
    cams = Cameras.srn(orbit_path(4, 1.3, 20.0), 64)
    rows = torch.stack([method.render(lat[i:i + 1], cams) for i in range(len(lat))])
    # two samples per row: [3, 8, H, W, 3]
    save_png(args.out / "ssdnerf_samples.png",
             tile_rows(rows.reshape(3, 8, *rows.shape[2:]), pad=2), scale=2)
    info["caption"] = (f"SSDNeRF on the toy cars after {info['steps']} steps: 6 sampled "
                       f"triplanes (DDIM-{method.cfg.diffusion.sample_steps}), 4 orbit views "
                       "each at 64 px (trained at 32 px)")
    return info


def plot_lines(series: dict[str, list[tuple[float, float]]], path: Path, title: str,
               xlabel: str, ylabel: str) -> Path:
    """Lines over a log2 x axis: matplotlib when installed, else drawn with PIL."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _plot_lines_pil(series, path, title, xlabel, ylabel)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for name, pts in series.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _plot_lines_pil(series, path: Path, title: str, xlabel: str, ylabel: str) -> Path:
    import math

    from PIL import Image, ImageDraw

    W, H, L, R, T, B = 640, 380, 60, 20, 36, 50
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    xs = [math.log2(x) for pts in series.values() for x, _ in pts]
    x0, x1 = math.floor(min(xs)), math.ceil(max(xs))
    y1 = max(y for pts in series.values() for _, y in pts)
    step = max(1, math.ceil(y1 / 6))
    y1 = step * math.ceil(y1 / step + 0.5)

    def px(x, y):
        return (L + (math.log2(x) - x0) / max(x1 - x0, 1) * (W - L - R),
                H - B - y / y1 * (H - T - B))

    d.rectangle([L, T, W - R, H - B], outline="black")
    for e in range(x0, x1 + 1, max(1, (x1 - x0) // 6)):
        u, _ = px(2 ** e, 0)
        d.line([u, H - B, u, H - B + 4], fill="black")
        d.text((u - 12, H - B + 7), f"2^{e}", fill="black")
    for v in range(0, int(y1) + 1, step):
        _, w = px(2 ** x0, v)
        d.line([L - 4, w, W - R, w], fill=(225, 225, 225) if v else "black")
        d.text((L - 28, w - 6), f"{v}x", fill="black")
    _, one = px(2 ** x0, 1.0)
    d.line([L, one, W - R, one], fill="grey")
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]
    for i, (name, pts) in enumerate(series.items()):
        c = colours[i % len(colours)]
        xy = [px(x, y) for x, y in pts]
        d.line(xy, fill=c, width=2)
        for u, w in xy:
            d.ellipse([u - 3, w - 3, u + 3, w + 3], fill=c)
        d.rectangle([L + 10, T + 10 + 16 * i, L + 22, T + 20 + 16 * i], fill=c)
        d.text((L + 28, T + 9 + 16 * i), name, fill="black")
    d.text((L, 12), title, fill="black")
    d.text(((W - len(xlabel) * 6) // 2, H - 20), xlabel, fill="black")
    d.text((4, T - 18), ylabel, fill="black")
    img.save(path, optimize=True)
    return path


def fig_bench(args, log) -> dict:
    runs = []
    if args.bench_json:
        runs = [json.loads(Path(p).read_text()) for p in args.bench_json]
    else:
        for rays in args.bench_rays:
            log(f"bench_composite: {rays} rays x 128 samples, {args.threads} thread(s)")
            out = subprocess.run(
                [sys.executable, str(ROOT / "benchmarks" / "bench_composite.py"), "--json",
                 "--rays", str(rays), "--threads", str(args.threads), "--repeat",
                 str(args.bench_repeat)], check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(out[out.index("{"):]))
    series: dict[str, list[tuple[float, float]]] = {}
    for run in runs:
        for row in run["rows"]:
            if row["backend"].startswith("torch"):
                continue
            r, s, _ = (int(v) for v in row["shape"].split("x"))
            name = f"{row['backend'].split(' ')[0]}, {row['layout']}"
            series.setdefault(name, []).append((r * s, row["speedup_fwd_bwd_vs_torch"]))
    series = {k: sorted(v) for k, v in series.items()}
    meta = runs[0]["meta"]
    plot_lines(series, args.out / "composite_speedup.png",
               f"compositing fwd+bwd speed-up over the torch reference ({meta['device']}, "
               f"{meta['threads']} thread(s), fp32, 3 channels)",
               "samples per call (rays x 128)", "speed-up")
    return {"series": series, "threads": meta["threads"], "device": meta["device"],
            "caption": f"C++ kernel vs torch reference, forward+backward, {meta['device']}, "
                       f"{meta['threads']} thread(s), median of {args.bench_repeat}"}


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    p.add_argument("--work", type=Path, default=Path("runs/figures"),
                   help="models and toy data trained here")
    p.add_argument("--only", default=",".join(FIGURES), help=f"subset of {','.join(FIGURES)}")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--fit-ckpt")
    p.add_argument("--fit-steps", type=int, default=800)
    p.add_argument("--diffusion-ckpt")
    p.add_argument("--diffusion-steps", type=int, default=300)
    p.add_argument("--diffusion-batch", type=int, default=16)
    p.add_argument("--ssdnerf-ckpt")
    p.add_argument("--ssdnerf-steps", type=int, default=2500)
    p.add_argument("--bench-json", nargs="*", default=None,
                   help="bench_composite.py --json outputs to plot instead of running it")
    p.add_argument("--bench-rays", type=lambda s: [int(v) for v in s.split(",")],
                   default=[256, 1024, 4096, 16384])
    p.add_argument("--bench-repeat", type=int, default=9)
    args = p.parse_args(argv)
    only = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = sorted(set(only) - set(FIGURES))
    if unknown:
        p.error(f"--only: unknown figures {unknown} (have {', '.join(FIGURES)})")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    prov_path = args.out / "figures.json"
    prov = json.loads(prov_path.read_text()) if prov_path.is_file() else {}

    def log(msg):
        print(f"[make_figures] {msg}", flush=True)

    makers = {"fit": fig_fit, "diffusion": fig_diffusion, "ssdnerf": fig_ssdnerf,
              "bench": fig_bench}
    for name in only:
        log(f"{name} ...")
        info = makers[name](args, log)
        info.update(hardware=hardware(), threads=args.threads, torch=torch.__version__,
                    made=time.strftime("%Y-%m-%d"))
        prov[name] = info
        prov_path.write_text(json.dumps(prov, indent=2) + "\n")
        log(f"{name}: {info['caption']}")
    for f in sorted(args.out.glob("*.png")):
        log(f"{f} ({f.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
