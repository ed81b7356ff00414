"""Input encodings: NeRF positional encoding, real spherical harmonics of view directions, and
the multiresolution hash encoding.

The hash encoding (Müller et al. 2022, instant-NGP) has two implementations behind one
interface (:func:`make_hash_encoding`): tiny-cuda-nn when it imports and the device is CUDA,
and :class:`TorchHashGrid`, a pure-PyTorch version that always works (and is what the tests
check). Both take points in ``[0, 1]^3`` ``[N, 3]`` and return ``[N, levels * features]``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# The spatial hash primes of instant-NGP (the first one is 1, so x is not permuted).
PRIMES = (1, 2654435761, 805459861)


class PositionalEncoding(nn.Module):
    """``x -> [x, sin(2^k π x), cos(2^k π x)]`` for ``k = 0..n_freqs-1``.

    ``[..., D] -> [..., D * (include_input + 2 * n_freqs)]``.
    """

    def __init__(self, in_dim: int = 3, n_freqs: int = 10, include_input: bool = True):
        super().__init__()
        self.in_dim, self.n_freqs, self.include_input = in_dim, n_freqs, include_input
        self.register_buffer("freqs", (2.0 ** torch.arange(n_freqs)) * math.pi, persistent=False)

    @property
    def out_dim(self) -> int:
        return self.in_dim * (int(self.include_input) + 2 * self.n_freqs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xb = x[..., None, :] * self.freqs[:, None]  # [..., F, D]
        enc = torch.cat([torch.sin(xb), torch.cos(xb)], dim=-2).flatten(-2)
        return torch.cat([x, enc], dim=-1) if self.include_input else enc


def spherical_harmonics(dirs: torch.Tensor, degree: int = 4) -> torch.Tensor:
    """Real spherical harmonics of unit directions ``[..., 3]`` -> ``[..., degree**2]`` (bands
    ``l < degree``, ``degree`` in 1..4), orthonormal on the sphere (``∫ Y_i Y_j dΩ = δ_ij``), in
    the sign and order convention of instant-NGP's SH encoder (which SSDNeRF's decoder uses)."""
    if not 1 <= degree <= 4:
        raise ValueError(f"spherical_harmonics: degree must be 1..4, got {degree}")
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree > 1:
        out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
    if degree > 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [1.0925484305920792 * x * y, -1.0925484305920792 * y * z,
                0.94617469575755997 * zz - 0.31539156525251999, -1.0925484305920792 * x * z,
                0.54627421529603959 * (xx - yy)]
    if degree > 3:
        out += [0.59004358992664352 * y * (yy - 3 * xx), 2.8906114426405538 * x * y * z,
                0.45704579946446572 * y * (1 - 5 * zz), 0.3731763325901154 * z * (5 * zz - 3),
                0.45704579946446572 * x * (1 - 5 * zz), 1.4453057213202769 * z * (xx - yy),
                0.59004358992664352 * x * (3 * yy - xx)]
    return torch.stack(out, dim=-1)


def hash_coords(coords: torch.Tensor, table_size: int) -> torch.Tensor:
    """Spatial hash of integer grid coordinates ``[..., 3]`` (int64) into ``[0, table_size)``:
    ``(x·1 XOR y·2654435761 XOR z·805459861) mod table_size`` (``table_size`` a power of two)."""
    c = coords.long()
    h = c[..., 0] * PRIMES[0]
    h = torch.bitwise_xor(h, c[..., 1] * PRIMES[1])
    h = torch.bitwise_xor(h, c[..., 2] * PRIMES[2])
    return h & (table_size - 1)


class TorchHashGrid(nn.Module):
    """Multiresolution hash encoding in pure PyTorch.

    Level ``l`` has resolution ``N_l = floor(base_resolution * b^l)`` with ``b`` chosen so the
    last level has ``max_resolution``; its grid has ``N_l + 1`` vertices per axis over ``[0, 1]``.
    A level whose vertices fit in the table (``(N_l+1)^3 <= 2^log2_hashmap_size``) is dense
    (no collisions, as in instant-NGP); finer levels use :func:`hash_coords`. Values are
    trilinearly interpolated between the 8 surrounding vertices.

    Input ``x [N, 3]`` in ``[0, 1]`` (clamped), output ``[N, n_levels * n_features]``.
    """

    def __init__(self, n_levels: int = 16, n_features: int = 2, log2_hashmap_size: int = 19,
                 base_resolution: int = 16, max_resolution: int = 2048, init_scale: float = 1e-4):
        super().__init__()
        self.n_levels, self.n_features = n_levels, n_features
        self.table_size = 2 ** log2_hashmap_size
        growth = math.exp((math.log(max_resolution) - math.log(base_resolution))
                          / max(n_levels - 1, 1))
        self.resolutions = [int(math.floor(base_resolution * growth**lv)) for lv in range(n_levels)]
        self.dense = [(r + 1) ** 3 <= self.table_size for r in self.resolutions]
        self.sizes = [min((r + 1) ** 3, self.table_size) for r in self.resolutions]
        self.offsets = [0]
        for s in self.sizes:
            self.offsets.append(self.offsets[-1] + s)
        self.embeddings = nn.Parameter(
            (torch.rand(self.offsets[-1], n_features) * 2 - 1) * init_scale)
        corners = torch.tensor([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)])
        self.register_buffer("corners", corners, persistent=False)

    @property
    def out_dim(self) -> int:
        return self.n_levels * self.n_features

    def level_indices(self, level: int, vertices: torch.Tensor) -> torch.Tensor:
        """Table rows (global, offset included) of integer vertices ``[..., 3]`` at ``level``."""
        r = self.resolutions[level]
        if self.dense[level]:
            v = vertices.long()
            idx = v[..., 0] * (r + 1) ** 2 + v[..., 1] * (r + 1) + v[..., 2]
        else:
            idx = hash_coords(vertices, self.table_size)
        return idx + self.offsets[level]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.clamp(0.0, 1.0)
        outs = []
        for level, r in enumerate(self.resolutions):
            pos = x * r
            base = pos.floor().clamp(max=r - 1)
            frac = pos - base  # [N, 3]
            verts = base.long()[:, None, :] + self.corners  # [N, 8, 3]
            idx = self.level_indices(level, verts)  # [N, 8]
            vals = self.embeddings[idx]  # [N, 8, F]
            c = self.corners.to(x.dtype)  # [8, 3]
            w = (c * frac[:, None, :] + (1 - c) * (1 - frac[:, None, :])).prod(-1)  # [N, 8]
            outs.append((w[..., None] * vals).sum(1))
        return torch.cat(outs, dim=-1)


class HashGridEncoding(nn.Module):
    """One interface over tiny-cuda-nn and :class:`TorchHashGrid`; ``.backend`` says which."""

    def __init__(self, n_levels: int = 16, n_features: int = 2, log2_hashmap_size: int = 19,
                 base_resolution: int = 16, max_resolution: int = 2048,
                 backend: str = "auto", device: str | torch.device | None = None):
        super().__init__()
        self.n_levels, self.n_features = n_levels, n_features
        want_tcnn = backend == "tcnn" or (
            backend == "auto" and device is not None and torch.device(device).type == "cuda")
        self.backend, self.why = "torch", "tiny-cuda-nn only on CUDA"
        self.impl: nn.Module
        if want_tcnn:
            try:
                import tinycudann as tcnn  # type: ignore[import-not-found]

                growth = math.exp((math.log(max_resolution) - math.log(base_resolution))
                                  / max(n_levels - 1, 1))
                self.impl = tcnn.Encoding(3, {
                    "otype": "HashGrid", "n_levels": n_levels,
                    "n_features_per_level": n_features,
                    "log2_hashmap_size": log2_hashmap_size,
                    "base_resolution": base_resolution, "per_level_scale": growth})
                self.backend, self.why = "tcnn", ""
                return
            except Exception as exc:  # noqa: BLE001 - any import/build failure -> fallback
                if backend == "tcnn":
                    raise RuntimeError(f"tiny-cuda-nn requested but unavailable: {exc}") from exc
                self.why = f"tinycudann unavailable: {type(exc).__name__}: {exc}"
        self.impl = TorchHashGrid(n_levels, n_features, log2_hashmap_size, base_resolution,
                                  max_resolution)

    @property
    def out_dim(self) -> int:
        return self.n_levels * self.n_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.impl(x).to(x.dtype)


def make_hash_encoding(device: str | torch.device | None = None, **kwargs) -> HashGridEncoding:
    """Hash encoding on ``device``: tiny-cuda-nn on CUDA when it imports, torch otherwise."""
    return HashGridEncoding(device=device, **kwargs)
