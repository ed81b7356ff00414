"""A small KL-regularised autoencoder (the first stage of latent diffusion, Rombach et al. 2022)
and an optional PatchGAN discriminator.

- :class:`KLAutoencoder`: ``encode(x [B,C,H,W]) -> (mean, logvar)`` each
  ``[B, latent_channels, H/f, W/f]`` (``f = 2**levels``), ``decode(z) -> [B,C,H,W]``. Encoder:
  input conv, per level ``blocks`` ResNet blocks then a stride-2 conv, a middle block, GroupNorm
  + SiLU + conv to ``2 * latent_channels``; the decoder mirrors it with nearest upsampling.
  Widths ``channels * 2**i`` at level ``i``. ``logvar`` is clamped to ``[-30, 20]`` as in LDM's
  ``DiagonalGaussianDistribution``.
- :func:`autoencoder_loss`: L1 reconstruction (mean over pixels) + ``kl_weight`` times the KL to
  ``N(0, I)`` summed over latent elements and divided by the number of image elements, which is
  LDM's ``sum|x - x_rec| / B + kl_weight * sum KL / B`` up to one constant factor (so LDM's
  ``kl_weight = 1e-6`` means the same here). LDM adds an LPIPS term, left out here (its weights
  are not available offline). With a discriminator: hinge loss; the generator term
  ``-disc_weight * mean D(x_rec)`` (a fixed weight; LDM/taming scale it adaptively by the
  ratio of gradient norms) reaches only the autoencoder (the discriminator's parameters are
  detached in that call) and the discriminator term ``mean relu(1 - D(x)) + mean relu(1 +
  D(x_rec.detach()))`` reaches only the discriminator, so one optimiser step on the sum trains
  both.
- :class:`PatchDiscriminator`: taming-transformers' ``NLayerDiscriminator`` layout (4x4 convs,
  LeakyReLU 0.2) with GroupNorm instead of BatchNorm; logits per patch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from neural3d.diffusion.unet import norm


class _Res(nn.Module):
    """GroupNorm-SiLU-conv twice with a (1x1 when the width changes) skip."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.body = nn.Sequential(norm(in_ch), nn.SiLU(), nn.Conv2d(in_ch, out_ch, 3, padding=1),
                                  norm(out_ch), nn.SiLU(), nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x):
        return self.skip(x) + self.body(x)


class KLAutoencoder(nn.Module):
    def __init__(self, in_channels: int = 3, latent_channels: int = 3, channels: int = 32,
                 levels: int = 2, blocks: int = 1):
        super().__init__()
        self.in_channels, self.latent_channels, self.factor = in_channels, latent_channels, \
            2 ** levels
        widths = [channels * 2 ** i for i in range(levels + 1)]
        enc: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1)]
        for i in range(levels):
            enc += [_Res(widths[i], widths[i]) for _ in range(blocks)]
            enc.append(nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1))
        enc += [_Res(widths[-1], widths[-1]), norm(widths[-1]), nn.SiLU(),
                nn.Conv2d(widths[-1], 2 * latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(latent_channels, widths[-1], 3, padding=1),
                                _Res(widths[-1], widths[-1])]
        for i in reversed(range(levels)):
            dec += [nn.Upsample(scale_factor=2.0, mode="nearest"),
                    nn.Conv2d(widths[i + 1], widths[i], 3, padding=1)]
            dec += [_Res(widths[i], widths[i]) for _ in range(blocks)]
        dec += [norm(widths[0]), nn.SiLU(), nn.Conv2d(widths[0], in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, logvar)`` of the posterior, each ``[B, latent_channels, H/f, W/f]``."""
        if x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise ValueError(f"image size {tuple(x.shape[-2:])} must be divisible by the "
                             f"autoencoder's factor {self.factor}")
        mean, logvar = self.encoder(x).chunk(2, 1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(reconstruction of a posterior sample, mean, logvar)``."""
        mean, logvar = self.encode(x)
        eps = torch.randn(mean.shape, generator=generator).to(mean)
        return self.decode(mean + (0.5 * logvar).exp() * eps), mean, logvar


class PatchDiscriminator(nn.Module):
    """``D(x [B,C,H,W]) -> logits [B, 1, h, w]`` (one per overlapping patch)."""

    def __init__(self, in_channels: int = 3, channels: int = 32, layers: int = 3):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = channels
        for i in range(1, layers + 1):
            out = channels * min(2 ** i, 8)
            stride = 2 if i < layers else 1
            mods += [nn.Conv2d(ch, out, 4, stride, 1), norm(out), nn.LeakyReLU(0.2)]
            ch = out
        mods.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def kl_to_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mean, exp(logvar)) || N(0, I))`` summed over all but the batch dim, ``[B]``."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


def autoencoder_loss(ae: KLAutoencoder, x: torch.Tensor, kl_weight: float = 1e-6,
                     disc: PatchDiscriminator | None = None, disc_weight: float = 0.5,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """See the module docstring; returns ``(loss, parts)`` (``rec``, ``kl``, and with ``disc``
    ``g``, ``d``)."""
    rec, mean, logvar = ae(x, generator)
    l1 = (rec - x).abs().mean()
    kl = kl_to_standard_normal(mean, logvar).mean() / x[0].numel()
    loss = l1 + kl_weight * kl
    parts = {"rec": l1.detach(), "kl": kl.detach()}
    if disc is not None:
        frozen = {k: p.detach() for k, p in disc.named_parameters()}
        g = -functional_call(disc, frozen, (rec,)).mean()
        d = F.relu(1 - disc(x)).mean() + F.relu(1 + disc(rec.detach())).mean()
        loss = loss + disc_weight * g + d
        parts.update(g=g.detach(), d=d.detach())
    return loss, parts
