"""Side-by-side check that a change keeps the project's figures: the same jobs run on a base
revision (a temporary git worktree) and on this working tree, in one run, and one table compares
them.

Jobs (``--jobs``, comma-separated):

- ``demo``: ``neural3d demo`` (held-out PSNR, steps, training seconds), base then new.
- ``demo-cold``: ``neural3d demo`` of this tree with an empty kernel build folder
  (``NEURAL3D_BUILD_DIR``), as on a fresh clone, then again with the kernel built: both must
  reach the same PSNR (the clock starts after the build).
- ``fit``: ``benchmarks/bench_fit.py --fields triplane`` (``--fit-budget`` seconds, 128 px),
  base then new.
- ``composite``: ``benchmarks/bench_composite.py`` (``--threads``), base then new: each tree's
  C++ kernel against the torch reference (fwd and fwd+bwd ms, the ratios), per layout.
- ``ssdnerf``: the toy SSDNeRF config trained ``--ssdnerf-steps`` steps on both trees at once
  (one thread each: the result depends on steps, not time), then each tree's
  ``bench_ssdnerf.py`` (generation FID/KID of 64 samples, 1-view guided reconstruction of the 8
  test cars) at once.

::

    python benchmarks/compare_revisions.py --base e829dc3 --jobs demo,demo-cold,fit,ssdnerf

Each tree runs its own code and its own benchmark scripts (``PYTHONPATH`` = the tree), with the
same interpreter, and its own kernel build folder, built before any job (two trees sharing one
would rebuild it in turn: the build records the sources' paths). Logs and outputs go under
``--out``. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


BUILD_DIRS: dict[Path, Path] = {}  # tree -> its kernel build folder


def run(tree: Path, args: list[str], log: Path, env: dict | None = None,
        wait: bool = True) -> subprocess.Popen | int:
    """``python ARGS`` with ``tree`` first on the path, in ``tree``, output to ``log``."""
    full = {**os.environ, "PYTHONPATH": str(tree), "PYTHONUNBUFFERED": "1"}
    if tree in BUILD_DIRS:
        full["NEURAL3D_BUILD_DIR"] = str(BUILD_DIRS[tree])
    full.update(env or {})
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, *args], cwd=tree, env=full, stdout=fh,
                                stderr=subprocess.STDOUT)
    if not wait:
        return proc
    rc = proc.wait()
    if rc != 0:
        raise SystemExit(f"failed ({rc}): {' '.join(args)} in {tree}; see {log}")
    return rc


def wait_all(procs: list[tuple[subprocess.Popen, Path]]) -> None:
    for proc, log in procs:
        if proc.wait() != 0:
            raise SystemExit(f"failed ({proc.returncode}); see {log}")


def demo(tree: Path, out: Path, threads: int, env: dict | None = None) -> dict:
    run(tree, ["-m", "neural3d.cli", "demo", "--out", str(out), "--quiet", "--threads",
               str(threads)], out.with_suffix(".log"), env)
    m = json.loads((out / "metrics.json").read_text())
    return {"psnr": m["psnr"], "steps": m["steps"], "train_s": m["train_seconds"]}


def fit(tree: Path, out: Path, budget: float, threads: int) -> dict:
    js = out / "bench_fit.json"
    run(tree, ["benchmarks/bench_fit.py", "--fields", "triplane", "--budget", str(budget),
               "--threads", str(threads), "--out", str(out), "--json", str(js)],
        out / "bench_fit.log")
    r = json.loads(js.read_text())[0]
    return {"psnr": r["psnr"], "steps": r["steps"], "train_s": r["train_s"], "t30": r["t30"]}


def composite(tree: Path, out: Path, threads: int) -> dict:
    log = out.with_suffix(".log")
    run(tree, ["benchmarks/bench_composite.py", "--threads", str(threads), "--json"], log)
    text = log.read_text()
    rows = json.loads(text[text.index("{"):])["rows"]
    res = {}
    for r in rows:
        if r["backend"].startswith("cpp"):
            res[f"{r['layout']} {r['backend']} f+b ms"] = r["fwd_bwd_ms"]
            res[f"{r['layout']} x torch f+b"] = r["speedup_fwd_bwd_vs_torch"]
            res[f"{r['layout']} x torch fwd"] = r["speedup_fwd_vs_torch"]
    return res


def ssdnerf(trees: dict[str, Path], out: Path, steps: int) -> dict[str, dict]:
    data = out / "data"
    run(ROOT, ["-c", "import sys; from neural3d.config import load_config; "
               "from neural3d.methods.ssdnerf import SSDNeRFConfig, ensure_data; "
               "ensure_data(load_config(SSDNeRFConfig, 'configs/ssdnerf_toycars.yaml', "
               "[f'data.root={sys.argv[1]}']).data)", str(data)], out / "data.log")
    procs = []
    for name, tree in trees.items():
        procs.append((run(tree, ["-m", "neural3d.cli", "train", "ssdnerf", "--config",
                                 "configs/ssdnerf_toycars.yaml", "--threads", "1",
                                 f"train.steps={steps}", f"train.out_dir={out / name}",
                                 f"data.root={data}", "train.progress=false"],
                          out / f"{name}_train.log", wait=False), out / f"{name}_train.log"))
    wait_all(procs)
    procs = []
    for name, tree in trees.items():
        ckpt = out / name / "checkpoints" / "last.pt"
        procs.append((run(tree, ["benchmarks/bench_ssdnerf.py", "--single", str(ckpt),
                                 "--modes", "guided_finetune", "--threads", "1",
                                 "--out", str(out / f"{name}_bench.json")],
                          out / f"{name}_bench.log", wait=False), out / f"{name}_bench.log"))
    wait_all(procs)
    res = {}
    for name in trees:
        b = json.loads((out / f"{name}_bench.json").read_text())
        final = json.loads((out / name / "run.json").read_text()).get("final", {})
        res[name] = {"fid": b["generation"]["single-stage"]["fid"],
                     "kid": b["generation"]["single-stage"]["kid"],
                     "recon_psnr": b["reconstruction"]["guided_finetune"]["psnr"],
                     "final_loss": final.get("loss")}
    return res


def table(title: str, rows: dict[str, dict]) -> None:
    keys = sorted({k for r in rows.values() for k in r})
    print(f"\n{title}")
    print("| tree | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, r in rows.items():
        cells = [f"{r[k]:.4g}" if isinstance(r.get(k), float) else str(r.get(k)) for k in keys]
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="base revision (e.g. the previous commit)")
    ap.add_argument("--jobs", default="demo,demo-cold,fit,ssdnerf")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fit-budget", type=float, default=300.0)
    ap.add_argument("--ssdnerf-steps", type=int, default=15000)
    ap.add_argument("--out", default="runs/compare_revisions")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    jobs = [j for j in args.jobs.split(",") if j]
    base = Path(tempfile.mkdtemp(prefix="neural3d-base-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(base), args.base], cwd=ROOT,
                   check=True, capture_output=True)
    trees = {f"base {args.base}": base, "new (this tree)": ROOT}
    results: dict[str, dict] = {}
    try:
        for i, tree in enumerate(trees.values()):
            BUILD_DIRS[tree] = out / f"build_{i}"
            run(tree, ["-c", "from neural3d.render import build; build.load_cpu()"],
                out / f"build_{i}.log")
        t0 = time.time()
        if "demo" in jobs:
            results["demo"] = {n: demo(t, out / f"demo_{i}", args.threads)
                               for i, (n, t) in enumerate(trees.items())}
            table("neural3d demo (held-out PSNR, dB)", results["demo"])
        if "demo-cold" in jobs:
            with tempfile.TemporaryDirectory() as empty:
                cold = demo(ROOT, out / "demo_cold", args.threads,
                            {"NEURAL3D_BUILD_DIR": empty})
            results["demo-cold"] = {"first run (kernel built inside)": cold,
                                    "second run (kernel cached)": demo(
                                        ROOT, out / "demo_warm", args.threads)}
            table("neural3d demo on a fresh build folder, then again", results["demo-cold"])
        if "fit" in jobs:
            results["fit"] = {n: fit(t, out / f"fit_{i}", args.fit_budget, args.threads)
                              for i, (n, t) in enumerate(trees.items())}
            table(f"bench_fit triplane, 128 px, {args.fit_budget:.0f} s budget", results["fit"])
        if "composite" in jobs:
            results["composite"] = {n: composite(t, out / f"composite_{i}", args.threads)
                                    for i, (n, t) in enumerate(trees.items())}
            table(f"bench_composite, {args.threads} threads (C++ kernel vs torch)",
                  results["composite"])
        if "ssdnerf" in jobs:
            results["ssdnerf"] = ssdnerf({"base": base, "new": ROOT}, out / "ssdnerf",
                                         args.ssdnerf_steps)
            table(f"toy SSDNeRF, {args.ssdnerf_steps} steps: generation FID/KID (64 samples), "
                  "1-view guided reconstruction PSNR", results["ssdnerf"])
        print(f"\n{time.time() - t0:.0f} s in all; load average {os.getloadavg()[0]:.2f}")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT,
                       capture_output=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"written: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
