"""The built-in toy category: procedural cars and chairs in the SRN layout.

Objects are unions of primitives (axis-aligned boxes and axis-aligned capped cylinders) with
procedural albedo textures (stripes, checker, sinusoid noise, wheel hubs, car windows). They are
rendered by exact analytic ray-primitive intersection (no volume rendering, so the toy data can
be used to test the volume renderer) with Lambertian shading under a fixed world key light, a
weak fill light and ambient, on a white background.

World frame: +z up (as SRN), object centred at the origin. **Every object lies inside the
axis-aligned box [-0.5, 0.5]^3** (:data:`TOY_AABB`; cars are about 0.75-0.97 long in x, chairs at
most 0.9 tall in z). Cameras look at the origin from radius 1.3 (:data:`TOY_RADIUS`, as SRN
cars) with SRN's intrinsics (f = 131.25 px at 128 px, fov about 52 degrees, scaled with the
resolution, principal point at the image centre). Training views are uniformly random on the
upper hemisphere (cars) or on the whole sphere (chairs), as in SRN; test views lie on an
SRN-style spiral over the upper hemisphere (:func:`neural3d.cameras.spiral_path`).

Background pixels are exactly white (255); object pixels are never pure white (shaded colours are
capped at 0.94), so ``mask = (image < 1).any(-1)`` recovers the silhouette at ``supersample=1``.

Everything is deterministic in the seed: each object and its cameras come from their own
``numpy.random.default_rng([seed, category, split, index, stream])``, so the same seed writes
byte-identical PNGs, and adding objects does not change the earlier ones.
"""

from __future__ import annotations

import colorsys
import json
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neural3d.cameras import (
    SRN_CARS_FOCAL_128,
    Cameras,
    look_at,
    random_sphere_eyes,
    spiral_path,
)
from neural3d.data.raytrace import lambert, trace_views

__all__ = [
    "TOY_AABB",
    "TOY_RADIUS",
    "CATEGORIES",
    "Primitive",
    "ToyObject",
    "make_toy_object",
    "toy_cameras",
    "render_toy_views",
    "write_toy_dataset",
    "ensure_toy_dataset",
]

#: Axis-aligned box that contains every toy object: ``(min xyz, max xyz)``.
TOY_AABB = ((-0.5, -0.5, -0.5), (0.5, 0.5, 0.5))
#: Camera distance from the origin (SRN cars use 1.3).
TOY_RADIUS = 1.3
CATEGORIES = ("cars", "chairs")
_CAT_CODE = {"cars": 0, "chairs": 1}
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
_PATTERNS = ("none", "stripes", "checker", "noise", "hub", "windows")

_EPS = 1e-9


@dataclass
class Primitive:
    """A box or a capped cylinder, axis-aligned, with a procedural texture.

    ``half`` is the half-size of the primitive's bounding box. A cylinder's axis is ``axis``
    (0 x, 1 y, 2 z); its radius is ``half`` along the other two axes (which must be equal) and its
    half-length ``half[axis]``. ``pattern`` mixes ``color`` and ``color2``: ``stripes`` (along
    ``pattern_axis``, ``freq`` cycles per unit), ``checker``, ``noise`` (sum of sinusoids drawn from
    ``seed``), ``hub`` (cylinder caps: inner disc in ``color2``), ``windows`` (box sides: upper band
    in ``color2``).
    """

    kind: str
    center: tuple[float, float, float]
    half: tuple[float, float, float]
    color: tuple[float, float, float]
    color2: tuple[float, float, float] = (0.1, 0.1, 0.1)
    axis: int = 2
    pattern: str = "none"
    freq: float = 8.0
    pattern_axis: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("box", "cylinder"):
            raise ValueError(f"Primitive.kind must be 'box' or 'cylinder', got {self.kind!r}")
        if self.pattern not in _PATTERNS:
            raise ValueError(f"Primitive.pattern must be one of {_PATTERNS}, got {self.pattern!r}")
        self.center = tuple(float(v) for v in self.center)
        self.half = tuple(float(v) for v in self.half)
        self.color = tuple(float(v) for v in self.color)
        self.color2 = tuple(float(v) for v in self.color2)
        if self.kind == "cylinder":
            u, v = (self.axis + 1) % 3, (self.axis + 2) % 3
            if abs(self.half[u] - self.half[v]) > 1e-9:
                raise ValueError("cylinder: half-sizes across the axis (the radius) must match")

    @classmethod
    def box(cls, center: Any, size: Any, color: Any, **kw: Any) -> Primitive:
        """A box of full ``size`` (x, y, z) centred at ``center``."""
        return cls("box", tuple(center), tuple(0.5 * float(s) for s in size), tuple(color), **kw)

    @classmethod
    def cylinder(cls, center: Any, radius: float, length: float, axis: int, color: Any,
                 **kw: Any) -> Primitive:
        half = [float(radius)] * 3
        half[axis] = 0.5 * float(length)
        return cls("cylinder", tuple(center), tuple(half), tuple(color), axis=axis, **kw)


@dataclass
class ToyObject:
    """A toy object: a union of :class:`Primitive` s (see :func:`make_toy_object`)."""

    primitives: list[Primitive]
    category: str = "custom"
    meta: dict = field(default_factory=dict)

    def aabb(self) -> tuple[np.ndarray, np.ndarray]:
        c = np.array([p.center for p in self.primitives])
        h = np.array([p.half for p in self.primitives])
        return (c - h).min(0), (c + h).max(0)

    def to_dict(self) -> dict:
        return {"category": self.category, "meta": self.meta,
                "primitives": [asdict(p) for p in self.primitives]}

    @classmethod
    def from_dict(cls, d: dict) -> ToyObject:
        prims = [Primitive(**{**p, "center": tuple(p["center"]), "half": tuple(p["half"]),
                              "color": tuple(p["color"]), "color2": tuple(p["color2"])})
                 for p in d["primitives"]]
        return cls(prims, d.get("category", "custom"), dict(d.get("meta", {})))


# ------------------------------------------------------------------------------ generation
def _hsv(rng: np.random.Generator, h: Any = (0.0, 1.0), s: Any = (0.4, 0.9),
         v: Any = (0.45, 0.85)) -> tuple[float, float, float]:
    return colorsys.hsv_to_rgb(rng.uniform(*h) % 1.0, rng.uniform(*s), rng.uniform(*v))


def _surface(rng: np.random.Generator, base: tuple, choices: tuple[str, ...] = (
        "stripes", "checker", "noise")) -> dict:
    pattern = str(rng.choice(choices))
    shade = rng.uniform(0.45, 0.75) if rng.random() < 0.6 else rng.uniform(1.2, 1.5)
    color2 = tuple(float(np.clip(c * shade, 0.03, 0.85)) for c in base)
    freq = {"stripes": rng.uniform(4.0, 11.0), "checker": rng.uniform(5.0, 12.0),
            "noise": rng.uniform(3.0, 8.0)}.get(pattern, 8.0)
    return {"pattern": pattern, "color2": color2, "freq": float(freq),
            "pattern_axis": int(rng.integers(0, 3)), "seed": int(rng.integers(0, 2**31 - 1))}


def _make_car(rng: np.random.Generator) -> list[Primitive]:
    L = rng.uniform(0.72, 0.95)
    W = rng.uniform(0.34, 0.46)
    r = rng.uniform(0.07, 0.105)
    tyre = rng.uniform(0.05, 0.09)
    clear = r * rng.uniform(0.55, 0.9)
    hb = rng.uniform(0.10, 0.17)
    body_col = _hsv(rng)
    prims = [Primitive.box((0.0, 0.0, clear + hb / 2), (L, W, hb), body_col,
                           **_surface(rng, body_col))]
    Lc = L * rng.uniform(0.38, 0.62)
    Wc = W * rng.uniform(0.75, 0.92)
    hc = rng.uniform(0.09, 0.15)
    xc = L * rng.uniform(-0.15, 0.08)
    glass = _hsv(rng, (0.55, 0.65), (0.2, 0.5), (0.12, 0.3))
    prims.append(Primitive.box((xc, 0.0, clear + hb + hc / 2), (Lc, Wc, hc), body_col,
                               color2=glass, pattern="windows"))
    tyre_col = (0.08, 0.08, 0.09)
    hub_col = _hsv(rng, (0.0, 1.0), (0.0, 0.15), (0.6, 0.85))
    wx = L / 2 - r * rng.uniform(1.2, 1.7)
    wy = W / 2 - tyre * 0.35
    for sx in (1.0, -1.0):
        for sy in (1.0, -1.0):
            prims.append(Primitive.cylinder((sx * wx, sy * wy, r), r, tyre, 1, tyre_col,
                                            color2=hub_col, pattern="hub"))
    if rng.random() < 0.7:  # headlights
        lamp = _hsv(rng, (0.1, 0.16), (0.1, 0.5), (0.8, 0.9))
        hl = rng.uniform(0.04, 0.07)
        for sy in (1.0, -1.0):
            prims.append(Primitive.box((L / 2, sy * (W / 2 - hl), clear + hb * 0.7),
                                       (0.02, hl, 0.03), lamp))
    if rng.random() < 0.35:  # rear spoiler
        sp_h = rng.uniform(0.02, 0.04)
        prims.append(Primitive.box((-L / 2 + 0.05, 0.0, clear + hb + sp_h / 2 + 0.03),
                                   (0.08, W * 0.9, sp_h), _hsv(rng, v=(0.1, 0.4))))
        for sy in (1.0, -1.0):
            prims.append(Primitive.box((-L / 2 + 0.05, sy * W * 0.3, clear + hb + 0.015),
                                       (0.02, 0.02, 0.03), (0.1, 0.1, 0.1)))
    return prims


def _make_chair(rng: np.random.Generator) -> list[Primitive]:
    sx = rng.uniform(0.42, 0.62)  # seat depth (x); back at -x
    sy = rng.uniform(0.42, 0.64)  # seat width (y)
    st = rng.uniform(0.04, 0.08)
    leg_len = rng.uniform(0.32, 0.45)
    if rng.random() < 0.5:
        frame = _hsv(rng, (0.04, 0.1), (0.45, 0.75), (0.3, 0.6))  # wood
    else:
        frame = _hsv(rng, (0.0, 1.0), (0.0, 0.25), (0.12, 0.55))  # metal / painted
    cushion = _hsv(rng)
    round_legs = rng.random() < 0.5
    lr = rng.uniform(0.02, 0.038)
    inset = lr + rng.uniform(0.0, 0.04)
    leg_surf = _surface(rng, frame, ("stripes", "noise"))
    prims = [Primitive.box((0.0, 0.0, leg_len + st / 2), (sx, sy, st), cushion,
                           **_surface(rng, cushion))]
    for px in (1.0, -1.0):
        for py in (1.0, -1.0):
            c = (px * (sx / 2 - inset), py * (sy / 2 - inset), leg_len / 2)
            if round_legs:
                prims.append(Primitive.cylinder(c, lr, leg_len, 2, frame, **leg_surf))
            else:
                prims.append(Primitive.box(c, (2 * lr, 2 * lr, leg_len), frame, **leg_surf))
    top = leg_len + st
    bh = min(rng.uniform(0.3, 0.5), 0.9 - top)
    bt = rng.uniform(0.035, 0.07)
    bx = -sx / 2 + bt / 2
    back_col = cushion if rng.random() < 0.5 else frame
    if rng.random() < 0.5:  # solid back
        prims.append(Primitive.box((bx, 0.0, top + bh / 2), (bt, sy, bh), back_col,
                                   **_surface(rng, back_col)))
    else:  # posts, a top rail and slats
        rail = rng.uniform(0.05, 0.1)
        pw = rng.uniform(0.03, 0.05)
        for py in (1.0, -1.0):
            prims.append(Primitive.box((bx, py * (sy / 2 - pw / 2), top + bh / 2),
                                       (bt, pw, bh), frame, **leg_surf))
        prims.append(Primitive.box((bx, 0.0, top + bh - rail / 2), (bt, sy - 2 * pw, rail),
                                   back_col, **_surface(rng, back_col)))
        n = int(rng.integers(2, 6))
        inner = sy - 2 * pw
        sw = inner / (2 * n + 1)
        for k in range(n):
            y = -inner / 2 + sw * (2 * k + 1.5)
            prims.append(Primitive.box((bx, y, top + (bh - rail) / 2), (bt * 0.7, sw, bh - rail),
                                       frame, **leg_surf))
    if rng.random() < 0.3:  # armrests
        ah = rng.uniform(0.12, 0.2)
        aw = rng.uniform(0.03, 0.05)
        for py in (1.0, -1.0):
            y = py * (sy / 2 - aw / 2)
            prims.append(Primitive.box((0.0, y, top + ah), (sx, aw, 0.03), frame))
            prims.append(Primitive.box((sx / 2 - aw, y, top + ah / 2), (aw, aw, ah), frame))
    return prims


def make_toy_object(category: str, rng: np.random.Generator | int | Iterable[int] | None = None
                    ) -> ToyObject:
    """A random toy ``"cars"`` or ``"chairs"`` object, centred so that its bounding box is
    centred at the origin and contained in :data:`TOY_AABB`."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown toy category {category!r} (choose from {CATEGORIES})")
    rng = np.random.default_rng(rng)
    prims = _make_car(rng) if category == "cars" else _make_chair(rng)
    obj = ToyObject(prims, category)
    lo, hi = obj.aabb()
    shift = -(lo + hi) / 2
    shift[:2] = 0.0  # keep x/y as built (centred by construction), centre z
    for p in prims:
        p.center = tuple(float(c + s) for c, s in zip(p.center, shift, strict=True))
    lo, hi = obj.aabb()
    assert (lo >= -0.5).all() and (hi <= 0.5).all(), (lo, hi)
    return obj


# ------------------------------------------------------------------------------- rendering
def _hit_box(o: tuple, inv: tuple, p: Primitive) -> tuple[np.ndarray, None]:
    """Entry distance of rays (structure-of-arrays ``o = (ox, oy, oz)``, ``inv = 1/d``) into an
    axis-aligned box (slab test); ``inf`` where missed or behind the origin."""
    t_in = t_out = None
    for i in range(3):
        c, h = p.center[i], p.half[i]
        t1 = (c - h - o[i]) * inv[i]
        t2 = (c + h - o[i]) * inv[i]
        lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
        t_in = lo if t_in is None else np.maximum(t_in, lo)
        t_out = hi if t_out is None else np.minimum(t_out, hi)
    hit = (t_in <= t_out) & (t_in > _EPS)
    return np.where(hit, t_in, np.inf), None


def _hit_cylinder(o: tuple, inv: tuple, p: Primitive, d: tuple
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Entry distance into a capped cylinder, and whether the entry is on a cap."""
    a = p.axis
    u, v = (a + 1) % 3, (a + 2) % 3
    r, hl = p.half[u], p.half[a]
    ou, ov, oa = o[u] - p.center[u], o[v] - p.center[v], o[a] - p.center[a]
    du, dv, da = d[u], d[v], d[a]
    A = du * du + dv * dv
    B = 2.0 * (ou * du + ov * dv)
    C = ou * ou + ov * ov - r * r
    disc = B * B - 4.0 * A * C
    ok = (disc >= 0.0) & (A > 1e-14)
    ts = (-B - np.sqrt(np.where(ok, disc, 0.0))) / (2.0 * np.where(ok, A, 1.0))
    side = ok & (ts > _EPS) & (np.abs(oa + ts * da) <= hl)
    tc = np.minimum((-hl - oa) * inv[a], (hl - oa) * inv[a])
    pu, pv = ou + tc * du, ov + tc * dv
    cap = (tc > _EPS) & (pu * pu + pv * pv <= r * r)
    ts = np.where(side, ts, np.inf)
    tc = np.where(cap, tc, np.inf)
    return np.minimum(ts, tc), tc <= ts


def _pattern(p: Primitive, q: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Mix weight in [0, 1] of ``color2`` at local points ``q [M,3]`` with normals ``n``."""
    m = q.shape[0]
    if p.pattern == "none":
        return np.zeros(m)
    if p.pattern == "stripes":
        s = np.sin(2 * np.pi * p.freq * q[:, p.pattern_axis])
        return np.clip(0.5 + 2.0 * s, 0.0, 1.0)
    if p.pattern == "checker":
        k = np.floor(p.freq * q).astype(np.int64).sum(-1)
        return (k % 2).astype(np.float64)
    if p.pattern == "noise":
        g = np.random.default_rng(p.seed)
        dirs = g.normal(size=(4, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        freqs = p.freq * g.uniform(0.5, 1.5, size=4)
        phases = g.uniform(0, 2 * np.pi, size=4)
        amps = np.array([1.0, 0.7, 0.5, 0.35])
        s = (amps * np.sin(2 * np.pi * freqs * (q @ dirs.T) + phases)).sum(-1) / amps.sum()
        return np.clip(0.5 + 1.2 * s, 0.0, 1.0)
    a = p.axis
    if p.pattern == "hub":
        u, v = (a + 1) % 3, (a + 2) % 3
        rho = np.sqrt(q[:, u] ** 2 + q[:, v] ** 2) / p.half[u]
        on_cap = np.abs(n[:, a]) > 0.5
        return (on_cap & (rho < 0.6)).astype(np.float64)
    # windows: upper band of the side faces of a box (z up)
    hz = p.half[2]
    side = np.abs(n[:, 2]) < 0.5
    band = (q[:, 2] > -0.25 * hz) & (q[:, 2] < 0.8 * hz)
    inner = (np.abs(q[:, 0]) < p.half[0] * 0.88) | (np.abs(n[:, 0]) > 0.5)
    inner &= (np.abs(q[:, 1]) < p.half[1] * 0.85) | (np.abs(n[:, 1]) > 0.5)
    return (side & band & inner).astype(np.float64)


def _trace(obj: ToyObject, o: np.ndarray, d: np.ndarray, background: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """Shade rays ``o, d [P,3]`` (float64). Returns ``(rgb [P,3], hit [P] bool)``."""
    # zero direction components would give inf * 0 = nan in the slab tests: nudge them
    safe = np.where(np.abs(d) < 1e-12, np.where(d < 0, -1e-12, 1e-12), d)
    inv = 1.0 / safe
    lo, hi = obj.aabb()
    bound = Primitive("box", tuple((lo + hi) / 2), tuple((hi - lo) / 2 + 1e-6), (0, 0, 0))
    oT, invT = tuple(o.T.copy()), tuple(inv.T.copy())
    cand = np.nonzero(np.isfinite(_hit_box(oT, invT, bound)[0]))[0]
    rgb = np.broadcast_to(background, (o.shape[0], 3)).copy()
    hit = np.zeros(o.shape[0], dtype=bool)
    if cand.size:
        rgb[cand], hit[cand] = _trace_candidates(obj, o[cand], d[cand], inv[cand], background)
    return rgb, hit


def _trace_candidates(obj: ToyObject, o: np.ndarray, d: np.ndarray, inv: np.ndarray,
                      background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    P = o.shape[0]
    oT, dT, invT = tuple(o.T.copy()), tuple(d.T.copy()), tuple(inv.T.copy())
    prims = obj.primitives
    t = np.full(P, np.inf)
    which = np.full(P, -1, dtype=np.int64)
    on_cap = np.zeros(P, dtype=bool)
    for k, p in enumerate(prims):
        if p.kind == "box":
            tk, _ = _hit_box(oT, invT, p)
        else:
            tk, cap = _hit_cylinder(oT, invT, p, dT)
        closer = tk < t
        t = np.where(closer, tk, t)
        which[closer] = k
        if p.kind == "cylinder":
            on_cap = np.where(closer, cap, on_cap)
    hit = which >= 0
    rgb = np.broadcast_to(background, (P, 3)).copy()
    for k, p in enumerate(prims):
        sel = np.nonzero(which == k)[0]
        if sel.size == 0:
            continue
        pts = o[sel] + t[sel, None] * d[sel]
        q = pts - np.asarray(p.center)
        dd = d[sel]
        n = np.zeros_like(q)
        rows = np.arange(sel.size)
        if p.kind == "box":
            ax = (np.abs(q) / np.asarray(p.half)).argmax(-1)  # the face the point lies on
            n[rows, ax] = -np.sign(dd[rows, ax])
        else:
            a = p.axis
            cap = on_cap[sel]
            n[cap, a] = -np.sign(dd[cap, a])
            radial = q[~cap].copy()
            radial[:, a] = 0.0
            n[~cap] = radial / np.maximum(np.linalg.norm(radial, axis=1, keepdims=True), 1e-12)
        w = _pattern(p, q, n)[:, None]
        albedo = (1.0 - w) * np.asarray(p.color) + w * np.asarray(p.color2)
        rgb[sel] = lambert(albedo, n)
    return rgb, hit


def render_toy_views(obj: ToyObject | dict, cameras: Cameras, background: Any = (1.0, 1.0, 1.0),
                     supersample: int = 1, return_alpha: bool = False,
                     chunk_rays: int = 1 << 16) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Render ``obj`` from every camera: images ``[V,H,W,3]`` float32 in [0, 1].

    Exact ray-primitive intersection through pixel centres (``supersample=s`` averages an
    ``s x s`` grid of sub-pixel rays). With ``return_alpha`` also returns the coverage
    ``[V,H,W]`` (the fraction of sub-pixel rays that hit the object).
    """
    if isinstance(obj, dict):
        obj = ToyObject.from_dict(obj)
    bg = np.asarray(background, dtype=np.float64)
    images, alpha = trace_views(cameras, lambda o, d: _trace(obj, o, d, bg), supersample,
                                chunk_rays)
    return (images, alpha) if return_alpha else images


# ---------------------------------------------------------------------------- the dataset
def _rng(seed: int, category: str, split: str, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _CAT_CODE[category], _SPLIT_CODE[split], index,
                                  stream])


def _toy_c2w(category: str, n_views: int, split: str, rng: Any) -> torch.Tensor:
    if split == "train":
        eyes = random_sphere_eyes(n_views, TOY_RADIUS, upper_hemisphere=category == "cars",
                                  rng=rng)
        return look_at(eyes).double()
    return spiral_path(n_views, TOY_RADIUS, dtype=torch.float64)


def toy_cameras(category: str, n_views: int, res: int, split: str = "train",
                rng: np.random.Generator | int | None = None) -> Cameras:
    """Cameras of the toy category: random on the upper hemisphere (cars) / sphere (chairs) for
    ``train``, the SRN-style spiral for ``test``; SRN intrinsics at ``res``."""
    return Cameras.srn(_toy_c2w(category, n_views, split, rng), res)


def _to_uint8(img: torch.Tensor) -> np.ndarray:
    return (img.numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)


def _write_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path, format="PNG", optimize=False, compress_level=6)


def _fmt(x: float) -> str:
    s = f"{x:.9g}"
    return "0" if s == "-0" else s


def write_toy_dataset(out: str | Path, category: str = "cars", objects: int = 64,
                      views: int = 50, test_views: int = 251, res: int = 64, seed: int = 0,
                      test_objects: int | None = None, supersample: int = 1,
                      write_masks: bool = False, progress: bool = True) -> dict:
    """Write the toy category in SRN layout under ``out``::

        out/<category>_train/<object>/{rgb/NNNNNN.png, pose/NNNNNN.txt, intrinsics.txt,
                                        toy_object.json}
        out/<category>_test/...      (disjoint objects, views on the SRN spiral)
        out/toy_dataset.json         {"aabb", "radius", "categories": {category: summary}}

    ``objects`` training objects with ``views`` views each, ``test_objects`` (default
    ``max(1, objects // 8)``) test objects with ``test_views`` views. ``write_masks`` adds
    ``mask/NNNNNN.png`` (coverage). Returns the summary that is also written to
    ``toy_dataset.json``.
    """
    from tqdm.auto import tqdm

    if category not in CATEGORIES:
        raise ValueError(f"unknown toy category {category!r} (choose from {CATEGORIES})")
    if objects < 1 or views < 1 or res < 1:
        raise ValueError("objects, views and res must be positive")
    test_objects = max(1, objects // 8) if test_objects is None else test_objects
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):  # replace an earlier toy run, never foreign data
        d = out / f"{category}_{split}"
        if d.exists():
            foreign = [p for p in d.iterdir() if not (p / "toy_object.json").is_file()]
            if foreign:
                raise FileExistsError(f"{d} exists and holds data not written by the toy "
                                      f"generator (e.g. {foreign[0].name}); choose another out")
            shutil.rmtree(d)
    f = SRN_CARS_FOCAL_128 * res / 128.0
    intr = f"{_fmt(f)} {_fmt(res / 2)} {_fmt(res / 2)} 0.\n0. 0. 0.\n1.\n{res} {res}\n"
    jobs = [("train", i, views) for i in range(objects)]
    jobs += [("test", i, test_views) for i in range(test_objects) if test_views > 0]
    ids: dict[str, list[str]] = {"train": [], "test": []}
    for split, i, nv in tqdm(jobs, desc=f"toy {category}", unit="obj", disable=not progress):
        oid = f"{category[:-1]}_{split}_{i:05d}"
        obj = make_toy_object(category, _rng(seed, category, split, i, 0))
        obj.meta = {"seed": seed, "split": split, "index": i}
        c2w64 = _toy_c2w(category, nv, split, _rng(seed, category, split, i, 1))
        cams = Cameras.srn(c2w64, res)
        imgs, alpha = render_toy_views(obj, cams, supersample=supersample, return_alpha=True)
        odir = out / f"{category}_{split}" / oid
        for sub in ("rgb", "pose") + (("mask",) if write_masks else ()):
            (odir / sub).mkdir(parents=True, exist_ok=True)
        (odir / "intrinsics.txt").write_text(intr)
        (odir / "toy_object.json").write_text(json.dumps(obj.to_dict()))
        u8 = _to_uint8(imgs)
        a8 = _to_uint8(alpha)
        c2w = c2w64.numpy()
        for v in range(nv):
            _write_png(odir / "rgb" / f"{v:06d}.png", u8[v])
            (odir / "pose" / f"{v:06d}.txt").write_text(
                " ".join(_fmt(x) for x in c2w[v].reshape(-1)) + "\n")
            if write_masks:
                _write_png(odir / "mask" / f"{v:06d}.png", a8[v])
        ids[split].append(oid)
    summary = {
        "generator": "neural3d.data.toy", "version": 1, "category": category, "seed": seed,
        "res": res, "views": views, "test_views": test_views, "supersample": supersample,
        "focal": f, "radius": TOY_RADIUS, "aabb": [list(TOY_AABB[0]), list(TOY_AABB[1])],
        "world_up": [0.0, 0.0, 1.0], "background": [1.0, 1.0, 1.0],
        "splits": {f"{category}_{k}": v for k, v in ids.items() if v},
    }
    # one file per dataset folder; several categories may share a folder
    meta_path = out / "toy_dataset.json"
    meta = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text()).get("categories", {})
        except (json.JSONDecodeError, AttributeError):
            meta = {}
    meta[category] = summary
    meta_path.write_text(json.dumps({"aabb": summary["aabb"], "radius": TOY_RADIUS,
                                     "categories": meta}, indent=2) + "\n")
    return summary


def ensure_toy_dataset(root: str | Path, category: str = "cars", log=print, **kwargs) -> Path:
    """``root``, after writing the toy ``category`` there (:func:`write_toy_dataset` with
    ``kwargs``) when it has no ``<category>_train`` folder yet. The toy configs of the methods
    call this so that a first run needs no download."""
    root = Path(root)
    if not (root / f"{category}_train").is_dir():
        log(f"writing toy {category} to {root}")
        write_toy_dataset(root, category, progress=False, **kwargs)
    return root
