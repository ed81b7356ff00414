"""GAN losses: the non-saturating logistic loss, the R1 gradient penalty and the lazy
regularisation's Adam rescaling (StyleGAN2)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``softplus(D(fake)) + softplus(-D(real))``, averaged."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss ``softplus(-D(fake))``, averaged."""
    return F.softplus(-fake_logits).mean()


def r1_penalty(D: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor) -> torch.Tensor:
    """``||grad_x D(x)||^2`` per real sample ``[B]`` (differentiable: the graph is kept so the
    penalty trains D)."""
    x = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
    return grad.square().flatten(1).sum(1)


def lazy_adam(lr: float, betas, interval: int) -> tuple[float, tuple[float, float]]:
    """Adam settings of a network regularised every ``interval`` steps (with a separate
    optimiser step): ``c = interval / (interval + 1)``, ``lr * c`` and ``beta ** c``, so that the
    ``interval + 1`` steps move as ``interval`` unregularised ones would (StyleGAN2)."""
    if interval <= 0:
        return lr, (float(betas[0]), float(betas[1]))
    c = interval / (interval + 1)
    return lr * c, (float(betas[0]) ** c, float(betas[1]) ** c)
