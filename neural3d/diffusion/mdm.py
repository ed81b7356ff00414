"""Matryoshka Diffusion (Gu et al., ICLR 2024): joint diffusion over nested resolutions.

**NestedUNet.** Resolutions ``R_0 > R_1 > ... > R_{L-1}``, each half the previous one. The
innermost level is a full :class:`~neural3d.diffusion.unet.UNet` at ``R_{L-1}``; every outer level
``l`` is a shallow U-Net shell at ``R_l`` (input conv, ResNet encoder blocks, ResNet decoder blocks
with skips) whose bottleneck *is* level ``l + 1``. Levels are joined as in ml-mdm's
``NestedUNet`` (``in_adapter`` / ``out_adapter``) through two **zero-initialised** adapters: the
``in_adapter`` (a stride-2 conv) maps the outer encoder's features onto the inner level's stem,
where they are added after its input conv; the ``out_adapter`` (nearest 2x upsampling + conv)
maps the inner level's last feature map back and adds it to the outer encoder's output before the
outer decoder. Every level reads its own noisy input and predicts its own output, so one forward
pass denoises all resolutions jointly:
``NestedUNet(xs=[x_R0, x_R1, ...], t, y) -> [pred_R0, pred_R1, ...]``.
``levels=n`` runs only the ``n`` innermost levels (progressive training: low resolution first,
then grow outwards; the inner weights carry over). Because both adapters start at zero and an
outer level gets no gradient while it is inactive, growing a level leaves the trained inner
levels' outputs exactly unchanged (tested), and the new level starts by predicting 0.

**Process** (:class:`MatryoshkaDiffusion`). The clean target at ``R_l`` is the average-pooled
image; every resolution is noised independently with the *same* ``t`` but its own shifted
schedule ``snr_l(t) = snr(t) * (R_base / R_l)^p`` (:class:`ShiftedSchedule` with
``scale = (R_l / R_base)^(p / 2)``, ``R_base`` the lowest resolution by default). The shift
power ``p`` is ml-mdm's ``schedule_shifted_power``: 2 (the default here) in its 1024 config and
simple diffusion's rule, 1 in its 256 config. The loss is ``sum_l w_l * loss_l`` with
per-resolution weights (ml-mdm's ``multi_res_weights``, e.g. 16:4:1 high to low in its
three-level 1024 config; 1:1 in its two-level 256 config). Sampling packs all resolutions into
one flat tensor with a per-element schedule (:class:`PackedSchedule`) so that every sampler of
:mod:`neural3d.diffusion.samplers` (DDPM, DDIM, DPM-Solver++) and CFG run unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from neural3d.diffusion.guidance import classifier_free_guidance
from neural3d.diffusion.parameterization import DiffusionObjective
from neural3d.diffusion.samplers import sample as run_sampler
from neural3d.diffusion.schedules import NoiseSchedule, ShiftedSchedule
from neural3d.diffusion.unet import (
    AttnBlock,
    Downsample,
    ResBlock,
    TimestepBlockSeq,
    UNet,
    Upsample,
    norm,
    zero_module,
)


class _Inner(nn.Module):
    """Innermost level: a whole UNet that also accepts outer features and returns its own."""

    def __init__(self, unet: UNet):
        super().__init__()
        self.unet = unet
        self.feature_channels = unet.feature_channels
        self.stem_channels = unet.in_conv.out_channels

    def forward(self, xs, emb, feat=None):
        h = self.unet.features(xs[0], emb, add=feat)
        return [self.unet.out(h)], h


class _Shell(nn.Module):
    """One outer level at twice the resolution of ``inner``, joined to it by zero-initialised
    adapters (see the module docstring)."""

    def __init__(self, in_channels: int, channels: int, emb_dim: int, num_blocks: int,
                 inner: nn.Module, attention: bool = False, dropout: float = 0.0):
        super().__init__()
        self.inner = inner
        self.stem_channels = channels
        self.in_conv = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.enc = nn.ModuleList()
        for i in range(num_blocks):
            blocks = [ResBlock(channels, channels, emb_dim, dropout)]
            if attention and i == num_blocks - 1:
                blocks.append(AttnBlock(channels))
            self.enc.append(TimestepBlockSeq(blocks))
        self.in_adapter = zero_module(Downsample(channels, inner.stem_channels))
        self.out_adapter = zero_module(Upsample(inner.feature_channels, channels))
        self.dec = nn.ModuleList()
        for i in range(num_blocks + 1):  # one per skip: the stem and every encoder block
            blocks = [ResBlock(2 * channels, channels, emb_dim, dropout)]
            if attention and i == num_blocks:
                blocks.append(AttnBlock(channels))
            self.dec.append(TimestepBlockSeq(blocks))
        self.feature_channels = channels
        self.out = nn.Sequential(norm(channels), nn.SiLU(),
                                 zero_module(nn.Conv2d(channels, in_channels, 3, padding=1)))

    def forward(self, xs, emb, feat=None):
        h = self.in_conv(xs[0])
        if feat is not None:
            h = h + feat
        skips = [h]
        for block in self.enc:
            h = block(h, emb)
            skips.append(h)
        outs, f = self.inner(xs[1:], emb, feat=self.in_adapter(h))
        h = h + self.out_adapter(f)
        for block in self.dec:
            h = block(torch.cat([h, skips.pop()], 1), emb)
        return [self.out(h)] + outs, h


class NestedUNet(nn.Module):
    """See the module docstring. ``resolutions`` high to low, each half the previous;
    ``shell_channels[i]`` is the width of outer level ``i``; the innermost UNet is configured by
    ``inner`` (keyword arguments of :class:`UNet`)."""

    def __init__(self, in_channels: int = 3, resolutions: Sequence[int] = (64, 32),
                 shell_channels: Sequence[int] = (32,), shell_blocks: int = 1,
                 shell_attention: Sequence[int] = (), inner: dict | None = None,
                 num_classes: int = 0, dropout: float = 0.0):
        super().__init__()
        resolutions = list(resolutions)
        if any(a != 2 * b for a, b in zip(resolutions, resolutions[1:], strict=False)):
            raise ValueError(f"resolutions must halve at each level, got {resolutions}")
        if len(shell_channels) != len(resolutions) - 1:
            raise ValueError("need one shell_channels entry per outer resolution")
        self.resolutions, self.in_channels = resolutions, in_channels
        self.num_classes, self.null_label = num_classes, num_classes
        kw = dict(channels=64, channel_mult=(1, 2, 2), num_res_blocks=2,
                  attention_resolutions=(resolutions[-1] // 2,), dropout=dropout)
        kw.update(inner or {})
        unet = UNet(in_channels=in_channels, resolution=resolutions[-1],
                    num_classes=num_classes, **kw)
        self.embed = unet.embed  # shared time/label embedding
        emb_dim = unet.embed.time[0].out_features
        level: nn.Module = _Inner(unet)
        self.levels = [level]
        for res, ch in zip(reversed(resolutions[:-1]), reversed(list(shell_channels)),
                           strict=True):
            level = _Shell(in_channels, ch, emb_dim, shell_blocks, level,
                           attention=res in shell_attention, dropout=dropout)
            self.levels.insert(0, level)
        self.root = level

    @property
    def num_levels(self) -> int:
        return len(self.resolutions)

    def forward(self, xs: Sequence[torch.Tensor], t: torch.Tensor,
                y: torch.Tensor | None = None, levels: int | None = None) -> list[torch.Tensor]:
        levels = levels or self.num_levels
        if len(xs) != levels:
            raise ValueError(f"expected {levels} inputs (high to low resolution), got {len(xs)}")
        for x, r in zip(xs, self.resolutions[self.num_levels - levels:], strict=True):
            if tuple(x.shape[-2:]) != (r, r):
                raise ValueError(f"expected a {r}x{r} input, got {tuple(x.shape[-2:])}")
        if t.ndim == 0:
            t = t.expand(xs[0].shape[0])
        emb = self.embed(t, y)
        outs, _ = self.levels[self.num_levels - levels](list(xs), emb)
        return outs


class PackedSchedule(NoiseSchedule):
    """Several schedules over one flat tensor ``[B, D]``: ``alpha_sigma(t)`` returns ``[1, D]``
    coefficients (``sizes[i]`` entries from ``schedules[i]``). Time grids come from
    ``schedules[reference]``."""

    def __init__(self, schedules: Sequence[NoiseSchedule], sizes: Sequence[int],
                 reference: int = 0):
        self.schedules, self.sizes = list(schedules), list(sizes)
        self.ref = self.schedules[reference]
        self.num_steps = self.ref.num_steps

    def log_snr(self, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        if t.ndim:
            raise ValueError("PackedSchedule takes a scalar time")
        parts = [s.log_snr(t).reshape(1, 1).expand(1, n) for s, n in
                 zip(self.schedules, self.sizes, strict=True)]
        return torch.cat(parts, 1)

    def timesteps(self, steps: int, spacing: str = "uniform") -> torch.Tensor:
        return self.ref.timesteps(steps, spacing)


def pack(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([x.flatten(1) for x in xs], 1)


def unpack(flat: torch.Tensor, shapes: Sequence[tuple[int, ...]]) -> list[torch.Tensor]:
    out, i = [], 0
    for shp in shapes:
        n = int(torch.tensor(shp).prod())
        out.append(flat[:, i:i + n].reshape(flat.shape[0], *shp))
        i += n
    return out


def pyramid(x0: torch.Tensor, resolutions: Sequence[int]) -> list[torch.Tensor]:
    """Average-pooled targets of ``x0`` at each resolution (``x0`` is at ``resolutions[0]``)."""
    return [x0 if r == x0.shape[-1] else F.adaptive_avg_pool2d(x0, r) for r in resolutions]


class MatryoshkaDiffusion(nn.Module):
    """NestedUNet + per-resolution shifted schedules + multi-resolution loss + joint sampling.

    ``shift_power`` is ``p`` of ``snr_l = snr * (R_base / R_l)^p``; ``loss_weights`` one weight
    per resolution, high to low (default all 1)."""

    def __init__(self, net: NestedUNet, schedule: NoiseSchedule, parameterization: str = "v",
                 base_resolution: int | None = None, loss_weights: Sequence[float] | None = None,
                 weighting: str = "native", min_snr_gamma: float = 5.0,
                 shift_power: float = 2.0):
        super().__init__()
        self.net, self.base = net, schedule
        self.kind, self.weighting, self.gamma = parameterization, weighting, min_snr_gamma
        self.shift_power = float(shift_power)
        self.base_resolution = base_resolution or net.resolutions[-1]
        self.loss_weights = list(loss_weights or [1.0] * net.num_levels)
        if len(self.loss_weights) != net.num_levels:
            raise ValueError("need one loss weight per resolution")

    @property
    def resolutions(self) -> list[int]:
        return self.net.resolutions

    def schedule_for(self, res: int) -> NoiseSchedule:
        scale = (res / self.base_resolution) ** (self.shift_power / 2)
        return self.base if scale == 1 else ShiftedSchedule(self.base, scale)

    def loss(self, x0: torch.Tensor, y: torch.Tensor | None = None, levels: int | None = None,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """``x0`` at the highest *active* resolution; returns (weighted loss, per-res losses)."""
        levels = levels or self.net.num_levels
        res = self.resolutions[self.net.num_levels - levels:]
        weights = self.loss_weights[self.net.num_levels - levels:]
        if x0.shape[-1] != res[0]:
            x0 = F.adaptive_avg_pool2d(x0, res[0])
        b = x0.shape[0]
        t = self.base.sample_t(b, generator=generator, device=x0.device)
        targets = pyramid(x0, res)
        xs, coeffs, noises = [], [], []
        for r, tgt in zip(res, targets, strict=True):
            a, s = self.schedule_for(r).alpha_sigma(t.double().cpu())
            a, s = a.float().to(x0.device), s.float().to(x0.device)
            eps = torch.randn(tgt.shape, generator=generator).to(tgt)
            xs.append(a[:, None, None, None] * tgt + s[:, None, None, None] * eps)
            coeffs.append((a, s))
            noises.append(eps)
        preds = self.net(xs, t, y=y, levels=levels)
        objective = DiffusionObjective(self.base, self.kind, self.weighting, self.gamma)
        total, parts = x0.new_zeros(()), {}
        for r, w, p, tgt, eps, (a, s) in zip(res, weights, preds, targets, noises, coeffs,
                                             strict=True):
            lr = objective.prediction_loss(p, tgt, eps, a, s)
            parts[f"loss_{r}"] = lr.detach()
            total = total + w * lr
        return total, parts

    def packed_model(self, levels: int | None = None):
        """A denoiser over flat packed tensors, for the generic samplers."""
        levels = levels or self.net.num_levels
        shapes = [(self.net.in_channels, r, r) for r in self.resolutions[-levels:]]

        def model(x, t, y=None):
            return pack(self.net(unpack(x, shapes), t, y=y, levels=levels))
        return model, shapes

    def packed_schedule(self, levels: int | None = None) -> PackedSchedule:
        levels = levels or self.net.num_levels
        res = self.resolutions[-levels:]
        return PackedSchedule([self.schedule_for(r) for r in res],
                              [self.net.in_channels * r * r for r in res])

    @torch.no_grad()
    def sample(self, batch: int, sampler: str = "ddim", steps: int = 50,
               y: torch.Tensor | None = None, cfg_scale: float = 1.0,
               levels: int | None = None, generator: torch.Generator | None = None,
               device=None, **kwargs) -> list[torch.Tensor]:
        """Sample all (active) resolutions jointly; returns images high to low resolution."""
        model, shapes = self.packed_model(levels)
        dim = sum(int(torch.tensor(s).prod()) for s in shapes)
        cond = {}
        if y is not None:
            cond = {"y": y}
            if cfg_scale != 1.0:
                null = torch.full_like(y, self.net.null_label)
                model = classifier_free_guidance(model, cfg_scale, {"y": null})
        flat = run_sampler(model, (batch, dim), self.packed_schedule(levels), sampler=sampler,
                           steps=steps, parameterization=self.kind, model_kwargs=cond,
                           generator=generator, device=device, **kwargs)
        return unpack(flat, shapes)


def active_levels(step: int, grow_at: Sequence[int], num_levels: int) -> int:
    """Progressive training: 1 level (lowest resolution) until ``grow_at[0]``, then 2 until
    ``grow_at[1]``, ... ; ``grow_at=[]`` trains all levels from the start."""
    if not grow_at:
        return num_levels
    return min(num_levels, 1 + sum(step >= g for g in grow_at))
