"""Evaluation protocol: novel-view synthesis and unconditional generation.

NVS (``evaluate_nvs``), as SSDNeRF and pixelNeRF report SRN: for every object of the test split,
reconstruct from the input view(s) given **by index** (SRN cars: view 64 for one view, 64 and 104
for two), render every other view at the dataset resolution, and score PSNR / SSIM (scikit-image
compatible) / LPIPS-VGG against the ground truth (:mod:`neural3d.metrics`; LPIPS is ``null`` with
the reason when its backbone weights are not available offline). FID is computed between all
renders and all test-set images (Inception-v3 features with StyleGAN2-ADA preprocessing, see
:mod:`neural3d.metrics.fid`). Means are over objects (each object's mean over its views), as the
papers average.

Generation (``evaluate_generation``): ``num`` latents sampled from the prior, each rendered at the
poses of a test object (cycled), FID and KID against the test-set images.

Any registered method (:mod:`neural3d.methods.registry`) with the capabilities plugs in:
``reconstruct(images, cams, **recon_options) -> state`` and ``render(state, cams)`` for NVS,
``sample(num, seed) -> [state]`` and ``render`` for generation, and ``info() -> dict``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from neural3d.env_info import git_commit
from neural3d.export.media import write_image_rows


class EvalError(ValueError):
    """Bad evaluation input (unknown method, view index out of range, missing data)."""


# ----------------------------------------------------------------------------- methods
def load_method(method: str | None, ckpt: str | Path, device="cpu", *capabilities: str):
    """The registered method of checkpoint ``ckpt`` (:func:`neural3d.methods.load`), checked
    against ``method`` when given and for each of ``capabilities``."""
    from neural3d.methods.registry import MethodError, get_method, load

    try:
        for cap in capabilities if method is not None else ():
            get_method(method, cap)
        if not Path(ckpt).is_file():
            raise EvalError(f"checkpoint not found: {ckpt}")
        loaded = load(ckpt, device, method=method)
        for cap in capabilities:
            get_method(loaded.name, cap)
    except MethodError as exc:
        raise EvalError(str(exc)) from exc
    return loaded


# ----------------------------------------------------------------------------- helpers
def parse_views(spec: str | Sequence[int]) -> list[int]:
    """``"64"`` / ``"64,104"`` / ``[64, 104]`` -> list of view indices."""
    if isinstance(spec, str):
        try:
            views = [int(v) for v in spec.replace(" ", "").split(",") if v != ""]
        except ValueError as exc:
            raise EvalError(f"--input-views must be comma-separated integers, got {spec!r}"
                            ) from exc
    else:
        views = [int(v) for v in spec]
    if not views:
        raise EvalError("no input views given")
    if len(set(views)) != len(views):
        raise EvalError(f"input views repeat an index: {views}")
    return views




def _category(data: Path, category: str | None, split: str, adapter) -> str:
    if category:
        return category
    cat = getattr(adapter, "category", None)
    if cat and (data / f"{cat}_{split}").is_dir():
        return cat
    found = sorted(p.name[: -len(split) - 1] for p in data.glob(f"*_{split}") if p.is_dir())
    if len(found) == 1:
        return found[0]
    raise EvalError(f"{data}: cannot tell the category (found {found or 'none'} for split "
                    f"{split!r}); pass --category")


def fid_kid(renders: torch.Tensor, reals: torch.Tensor, kid: bool = False,
            inception: str | None = None) -> dict[str, Any]:
    """FID (and KID) or ``None`` + reason when the Inception weights are unavailable."""
    from neural3d.metrics import InceptionFeatures, fid_from_features, kid_from_features

    try:
        ext = InceptionFeatures(inception)
    except (FileNotFoundError, RuntimeError, OSError) as exc:
        out: dict[str, Any] = {"fid": None, "fid_reason": f"Inception weights unavailable: "
                               f"{exc}"}
        if kid:
            out["kid"] = None
        return out
    fa, fb = ext(renders), ext(reals)
    out = {"fid": fid_from_features(fa, fb), "fid_images": [int(len(fa)), int(len(fb))],
           "inception": str(ext.path)}
    if kid:
        out["kid"] = kid_from_features(fa, fb) if min(len(fa), len(fb)) >= 2 else None
    return out


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{nd}f}"
    return str(v)


def _write(out: Path, result: dict, md: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out / "results.md").write_text(md)
    result["paths"] = {"json": str(out / "results.json"), "markdown": str(out / "results.md")}
    return result


# ----------------------------------------------------------------------------- NVS
def evaluate_nvs(method: str | None, ckpt: str | Path, data: str | Path, out: str | Path,
                 split: str = "test", input_views: str | Sequence[int] = "64",
                 category: str | None = None, max_objects: int | None = None,
                 fid: bool = True, lpips_net: str = "vgg", device: str = "cpu",
                 recon_options: dict | None = None, inception: str | None = None,
                 progress: bool = False, save_renders: int = 4) -> dict[str, Any]:
    """Reconstruct each test object from ``input_views`` and score all other views (see the
    module docstring); ``recon_options`` go to the method's ``reconstruct`` (SSDNeRF: ``mode``,
    ``guidance_scale``, ...). ``method`` None: the checkpoint's. Returns the result dict also
    written to ``out/results.json``."""
    from neural3d.data import DataError, SRNCategory
    from neural3d.metrics import evaluate_views

    views = parse_views(input_views)
    if any(v < 0 for v in views):
        raise EvalError(f"view indices must be >= 0, got {views}")
    data, out = Path(data), Path(out)
    adapter = load_method(method, ckpt, device, "reconstruct", "render")
    method = adapter.name
    recon_options = dict(recon_options or {})
    cat = _category(data, category, split, adapter)
    try:
        ds = SRNCategory(data, cat, split)
    except DataError as exc:
        raise EvalError(str(exc)) from exc
    ids = ds.object_ids[:max_objects] if max_objects else ds.object_ids
    t0 = time.time()
    rows, renders, reals, grid_rows = [], [], [], []
    res = None
    n_eval = 0
    for k, oid in enumerate(ids):
        obj = ds.read(oid)
        bad = [v for v in views if v >= len(obj)]
        if bad:
            raise EvalError(f"{ds.object_path(oid)}: input view index {bad[0]} is out of range "
                            f"(object {oid} has {len(obj)} views: 0..{len(obj) - 1})")
        rest = [i for i in range(len(obj)) if i not in views]
        if not rest:
            raise EvalError(f"{ds.object_path(oid)}: no views left to evaluate")
        obs, tgt = obj.select(views), obj.select(rest)
        res = tuple(obj.images.shape[1:3])
        state = adapter.reconstruct(obs.images, obs.cameras, **recon_options)
        pred = adapter.render(state, tgt.cameras)
        m = evaluate_views(pred, tgt.images, lpips_net)
        rows.append({"object_id": oid, "views": len(rest), **m})
        renders.append(pred)
        reals.append(obj.images)
        n_eval += len(rest)
        if k < save_renders:
            sel = torch.linspace(0, len(rest) - 1, 6).round().long()
            grid_rows += [torch.cat([obs.images, tgt.images[sel]]),
                          torch.cat([torch.ones_like(obs.images), pred[sel]])]
        if progress:
            print(f"[eval nvs] {k + 1}/{len(ids)} {oid}: PSNR {m['psnr']:.2f} SSIM "
                  f"{m['ssim']:.3f}", flush=True)
    mean = {key: (sum(r[key] for r in rows) / len(rows) if all(
        isinstance(r.get(key), float) for r in rows) else None)
        for key in ("psnr", "ssim", "lpips")}
    if mean["lpips"] is None:
        mean["lpips_reason"] = next((r.get("lpips_reason") for r in rows
                                     if r.get("lpips_reason")), None)
    all_r, all_t = torch.cat(renders), torch.cat(reals)
    mean.update(fid_kid(all_r, all_t, False, inception) if fid else
                {"fid": None, "fid_reason": "disabled (--no-fid)"})
    if grid_rows:
        out.mkdir(parents=True, exist_ok=True)
        write_image_rows(out / "renders.png", grid_rows)
    result = {
        "task": "nvs", "method": method, "data": str(data), "category": cat, "split": split,
        "input_views": views, "recon_options": recon_options, "resolution": list(res),
        "num_objects": len(rows), "num_images": n_eval, "fid_reference_images": len(all_t),
        "mean": mean, "objects": rows, "metrics_impl": "neural3d.metrics",
        "lpips_net": lpips_net, "method_info": adapter.info(), "git": git_commit(),
        "seconds": time.time() - t0, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    how = ", ".join(f"{k}={v}" for k, v in recon_options.items()) or "defaults"
    md = [f"# NVS: {method} on {cat}_{split}, input views {views} ({how})", "",
          f"{len(rows)} objects, {n_eval} evaluated images at {res[1]}x{res[0]}, commit "
          f"{result['git']['commit']}{' (dirty)' if result['git']['dirty'] else ''}", "",
          "| object | views | PSNR | SSIM | LPIPS |", "|---|---|---|---|---|"]
    md += [f"| {r['object_id']} | {r['views']} | {_fmt(r['psnr'], 2)} | {_fmt(r['ssim'])} | "
           f"{_fmt(r['lpips'])} |" for r in rows]
    md += [f"| **mean** | {n_eval} | **{_fmt(mean['psnr'], 2)}** | **{_fmt(mean['ssim'])}** | "
           f"**{_fmt(mean['lpips'])}** |", "",
           f"FID (all renders vs {len(all_t)} test images): {_fmt(mean.get('fid'), 2)}"]
    for why in ("lpips_reason", "fid_reason"):
        if mean.get(why):
            md.append(f"\n{why.split('_')[0].upper()} not reported: {mean[why]}")
    return _write(out, result, "\n".join(md) + "\n")


# ----------------------------------------------------------------------------- generation
def evaluate_generation(method: str | None, ckpt: str | Path, data: str | Path,
                        out: str | Path, num: int = 64, split: str = "test",
                        category: str | None = None,
                        poses_per_sample: int = 4, seed: int = 0, device: str = "cpu",
                        inception: str | None = None, max_reference: int | None = None,
                        adapter=None, progress: bool = False,
                        sample_options: dict | None = None) -> dict[str, Any]:
    """FID/KID of ``num`` samples, each rendered at ``poses_per_sample`` evenly spaced poses of
    test object ``i % T``, against all test-set images (or ``max_reference`` of them)."""
    from neural3d.data import DataError, SRNCategory

    if num < 1:
        raise EvalError(f"--num must be >= 1, got {num}")
    data, out = Path(data), Path(out)
    adapter = adapter or load_method(method, ckpt, device, "sample", "render")
    method = adapter.name
    cat = _category(data, category, split, adapter)
    try:
        ds = SRNCategory(data, cat, split)
    except DataError as exc:
        raise EvalError(str(exc)) from exc
    t0 = time.time()
    objs = ds.load()
    reals = torch.cat([o.images for o in objs])
    if max_reference and len(reals) > max_reference:
        sel = torch.linspace(0, len(reals) - 1, max_reference).round().long()
        reals = reals[sel]
    states = adapter.sample(num, seed, **(sample_options or {}))
    renders, grid = [], []
    for i, st in enumerate(states):
        obj = objs[i % len(objs)]
        sel = torch.linspace(0, len(obj) - 1, poses_per_sample).round().long()
        img = adapter.render(st, obj.cameras[sel])
        renders.append(img)
        if i < 8:
            grid.append(img)
        if progress and (i + 1) % 8 == 0:
            print(f"[eval generation] rendered {i + 1}/{num}", flush=True)
    renders_t = torch.cat(renders)
    metrics = fid_kid(renders_t, reals, True, inception)
    out.mkdir(parents=True, exist_ok=True)
    write_image_rows(out / "samples.png", grid)
    res = list(renders_t.shape[1:3])
    result = {"task": "generation", "method": method, "data": str(data), "category": cat,
              "split": split, "num_samples": num, "poses_per_sample": poses_per_sample,
              "resolution": res, "num_images": len(renders_t), "num_reference": len(reals),
              "seed": seed, **metrics, "method_info": adapter.info(), "git": git_commit(),
              "seconds": time.time() - t0,
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    md = (f"# Generation: {method} on {cat}_{split}\n\n{num} samples x {poses_per_sample} poses "
          f"= {len(renders_t)} images at {res[1]}x{res[0]} vs {len(reals)} test images, commit "
          f"{result['git']['commit']}\n\n| FID | KID |\n|---|---|\n| {_fmt(metrics['fid'], 2)} | "
          f"{_fmt(metrics.get('kid'), 4)} |\n")
    if metrics.get("fid_reason"):
        md += f"\nFID not reported: {metrics['fid_reason']}\n"
    return _write(out, result, md)
