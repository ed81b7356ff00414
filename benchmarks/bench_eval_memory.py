"""Peak memory of ``neural3d eval nvs`` at 8 and at 64 test objects (it must not grow with them).

    python benchmarks/bench_eval_memory.py --work outputs/bench_eval_memory [--counts 8 64]

Writes toy cars with ``--test-objects`` (64) test objects of ``--views`` views at ``--res`` px,
trains a tiny SSDNeRF for a few steps (``tiny_config``; seconds), then runs ``neural3d eval nvs``
with ``--max-objects`` each count in a fresh child process (the tiny config's 3 guidance steps,
2 fine-tuning steps; FID on unless ``--no-fid``) and reads that child's RSS high-water mark
(``os.wait4``'s ``ru_maxrss``). Prints a table and writes ``results.json`` under ``--work``.
Before streaming, every render and reference was held as float32, so the peak grew with the
number of objects.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def train_tiny(work: Path, test_objects: int, views: int, res: int) -> Path:
    from neural3d.methods.ssdnerf import train
    from neural3d.methods.ssdnerf.config import tiny_config

    ckpt = work / "run" / "checkpoints" / "last.pt"
    if not ckpt.is_file():
        cfg = tiny_config(work / "data", work / "run", steps=4)
        cfg.data.toy_test_objects, cfg.data.toy_test_views, cfg.data.toy_res = (
            test_objects, views, res)
        train(cfg)
    return ckpt


def peak_rss_mb(cmd: list[str], env: dict) -> tuple[float, float, int]:
    """``(peak RSS MB, seconds, exit status)`` of ``cmd`` run as a child process."""
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024, time.time() - t0, proc.returncode  # Linux: KiB


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="outputs/bench_eval_memory")
    ap.add_argument("--counts", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--test-objects", type=int, default=64)
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--no-fid", action="store_true")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ckpt = train_tiny(work, max(args.test_objects, *args.counts), args.views, args.res)
    env = {**os.environ, "NEURAL3D_BACKEND": os.environ.get("NEURAL3D_BACKEND", "torch")}
    rows = []
    for n in args.counts:
        cmd = [sys.executable, "-m", "neural3d.cli", "eval", "nvs", "--ckpt", str(ckpt),
               "--data", str(work / "data"), "--input-views", "0", "--max-objects", str(n),
               "--out", str(work / f"eval_{n}"), "--device", args.device, "--threads", "1",
               "--finetune-steps", "2"] + (
            ["--no-fid"] if args.no_fid else [])
        mb, sec, rc = peak_rss_mb(cmd, env)
        if rc != 0:
            print(f"eval nvs with {n} objects failed (exit {rc}): {' '.join(cmd)}",
                  file=sys.stderr)
            return 1
        rows.append({"objects": n, "peak_rss_mb": round(mb, 1), "seconds": round(sec, 1)})
        print(f"{n:4d} objects: peak RSS {mb:8.1f} MB  ({sec:.0f} s)", flush=True)
    base = rows[0]["peak_rss_mb"]
    for r in rows:
        r["vs_first"] = round(r["peak_rss_mb"] / base - 1, 4)
    print("| objects | peak RSS (MB) | vs first | s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['objects']} | {r['peak_rss_mb']} | {100 * r['vs_first']:+.1f} % | "
              f"{r['seconds']} |")
    (work / "results.json").write_text(json.dumps(
        {"rows": rows, "views": args.views, "res": args.res, "fid": not args.no_fid,
         "device": args.device}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
